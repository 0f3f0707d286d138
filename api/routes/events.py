"""Events and their sections.

Permissions are dependencies so they are decided before the body is validated (403
before 400). Ids in the path that cannot name an event or section are 404, like ids that
name nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from api.dependencies import Database
from api.errors import (
    KEY_ERRORS,
    bad_request,
    error_responses,
    invalid_arguments,
    location_header,
    not_found,
    restricted,
)
from api.security import Caller, CallerDep, client_version_header
from api.text import RequestBody
from db import events as event_sql
from db import sections as section_sql
from db.events import EventOwnership
from domain import Event, Money, Role, Section

router = APIRouter(tags=["Events"], dependencies=[Depends(client_version_header)])

_BIGINT_MAX = 2**63 - 1
_PRICE_MAX = Decimal("9999999999.99")  # numeric(12, 2)
_CAPACITY_MAX = 2**31 - 1  # integer


def _iso_text(value: object) -> object:
    """Only ISO-8601 text: FastAPI validates parsed JSON in Python mode, where pydantic
    would also read a bare number as a Unix time."""
    if not isinstance(value, str):
        raise ValueError("not an ISO-8601 date-time")
    return value


def _in_utc(value: datetime) -> datetime:
    """In UTC; a date-time sent without an offset is read as UTC. One whose UTC time falls
    outside years 1 to 9999 (`0001-01-01T00:00+05:00`) is invalid, not a 500."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("outside the years 1 to 9999 in UTC") from None


DateTime = Annotated[datetime, BeforeValidator(_iso_text), AfterValidator(_in_utc)]


class _Body(RequestBody):
    model_config = ConfigDict(alias_generator=to_camel, extra="ignore")


class NewEvent(_Body):
    """Body of `POST /events`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "title": "Demo Night",
                    "description": "An evening of demos",
                    "start": "2026-12-03T20:00:00+00:00",
                    "end": "2026-12-03T23:00:00+00:00",
                }
            ]
        }
    )

    title: Annotated[str, Field(min_length=1, max_length=200, strict=True)]
    description: Annotated[str, Field(max_length=5000, strict=True)] = ""
    start: DateTime
    end: DateTime


class NewSection(_Body):
    """Body of `POST /events/{event}/sections`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "Front Stand",
                    "description": "Seats near the stage",
                    "basePrice": 45.0,
                    "salesStart": "2026-06-01T00:00:00+00:00",
                    "salesEnd": "2026-12-03T18:00:00+00:00",
                    "capacity": 500,
                }
            ]
        }
    )

    name: Annotated[str, Field(min_length=1, max_length=200, strict=True)]
    description: Annotated[str, Field(max_length=5000, strict=True)] = ""
    base_price: Annotated[Money, Field(le=_PRICE_MAX)]
    sales_start: DateTime
    sales_end: DateTime
    capacity: Annotated[int, Field(ge=0, le=_CAPACITY_MAX, strict=True)]
    active: Annotated[bool, Field(strict=True)] = True


def _path_id(text: str) -> int:
    """An event or section id from the path; anything else names no resource (404)."""
    if not (text.isascii() and text.isdigit() and len(text) <= 19):
        raise not_found()
    value = int(text)
    if not 1 <= value <= _BIGINT_MAX:
        raise not_found()
    return value


def event_id_param(event: Annotated[str, Path(description="Event id")]) -> int:
    return _path_id(event)


def section_id_param(section: Annotated[str, Path(description="Section id")]) -> int:
    return _path_id(section)


EventId = Annotated[int, Depends(event_id_param)]
SectionId = Annotated[int, Depends(section_id_param)]


def event_creator(caller: CallerDep) -> Caller:
    """Hosts and administrators (accounts or keys) create events."""
    if not (caller.is_administrator or caller.role is Role.HOST):
        raise restricted()
    return caller


async def event_host(caller: CallerDep, event_id: EventId, db: Database) -> EventOwnership:
    """The event's own host, or an administrator, may add sections to it."""
    if not (caller.is_administrator or caller.role is Role.HOST):
        raise restricted()
    async with db.acquire() as conn:
        event = await event_sql.get_event_ownership(conn, event_id)
    if event is None:
        raise not_found()
    if not caller.is_administrator and event.host_id != caller.account_id:
        raise restricted()
    return event


_READ_ERRORS = error_responses(
    *KEY_ERRORS, 404, _403="Key unknown or ended, or a payments key", _404="No such event"
)


@router.post(
    "/events",
    status_code=201,
    response_model=Event,
    responses={
        201: {"headers": location_header("The new event")},
        **error_responses(
            *KEY_ERRORS, 400, _403="Key unknown or ended, or neither a host nor an administrator"
        ),
    },
)
async def create_event(
    caller: Annotated[Caller, Depends(event_creator)],
    body: NewEvent,
    db: Database,
    response: Response,
) -> Event:
    """Register an event hosted by the calling account (none for an integration key)."""
    if body.end < body.start:
        raise bad_request(invalid_arguments(["end"], "An event cannot end before it starts."))
    async with db.acquire() as conn:
        event = await event_sql.create_event(
            conn,
            title=body.title,
            description=body.description,
            start=body.start,
            end=body.end,
            host_id=caller.account_id,
        )
    response.headers["Location"] = event.self_uri
    return event


@router.get("/events/{event}", response_model=Event, responses=_READ_ERRORS)
async def get_event(_: CallerDep, event_id: EventId, db: Database) -> Event:
    """An event with its sections (each `self` is the section's full URI)."""
    async with db.acquire() as conn:
        event = await event_sql.get_event(conn, event_id)
    if event is None:
        raise not_found()
    return event


@router.post(
    "/events/{event}/sections",
    status_code=201,
    response_model=Section,
    responses={
        201: {"headers": location_header("The new section")},
        **error_responses(
            *KEY_ERRORS,
            400,
            404,
            _403="Key unknown or ended, or neither the event's host nor an administrator",
            _404="No such event",
        ),
    },
)
async def create_section(
    event: Annotated[EventOwnership, Depends(event_host)],
    body: NewSection,
    db: Database,
    response: Response,
) -> Section:
    """Add a section: its price, sales window and capacity."""
    if body.sales_end < body.sales_start:
        raise bad_request(invalid_arguments(["salesEnd"], "Sales cannot end before they start."))
    async with db.acquire() as conn:
        section = await section_sql.create_section(
            conn,
            event.event_id,
            name=body.name,
            description=body.description,
            base_price=body.base_price,
            sales_start=body.sales_start,
            sales_end=body.sales_end,
            capacity=body.capacity,
            active=body.active,
        )
    response.headers["Location"] = section.self_uri
    return section


@router.get(
    "/events/{event}/sections/{section}",
    response_model=Section,
    responses=error_responses(
        *KEY_ERRORS,
        404,
        _403="Key unknown or ended, or a payments key",
        _404="No such event, or no such section in it",
    ),
)
async def get_section(
    _: CallerDep, event_id: EventId, section_id: SectionId, db: Database
) -> Section:
    """A section with `capacity`, `sold`, `reserved` (live holds) and `remaining`."""
    async with db.acquire() as conn:
        section = await section_sql.get_section(conn, event_id, section_id)
    if section is None:
        raise not_found()
    return section
