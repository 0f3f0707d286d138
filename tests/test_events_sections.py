"""Events and sections through the running API, the section counters, and the demo seed."""

from __future__ import annotations

import json
import re
import secrets
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import asyncpg
import httpx
import pytest

from api.errors import (
    NOT_FOUND,
    RESTRICTED,
    UNAUTHENTICATED,
    UPGRADE,
    invalid_arguments,
    missing_arguments,
)
from api.routes.health import readyz
from db.demo import seed
from tests.conftest import ADMIN_KEY
from tests.http_helpers import expect_error, login, new_user

ADMIN = {"X-API-Key": ADMIN_KEY}
OFFSET_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00")


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def event_body(**overrides: Any) -> dict[str, Any]:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=60)
    return {
        "title": f"Concert {secrets.token_hex(3)}",
        "description": "Loud.",
        "start": _iso(start),
        "end": _iso(start + timedelta(hours=3)),
    } | overrides


def section_body(**overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC).replace(microsecond=0)
    return {
        "name": "Floor",
        "description": "Standing room",
        "basePrice": 45.5,
        "salesStart": _iso(now - timedelta(days=1)),
        "salesEnd": _iso(now + timedelta(days=30)),
        "capacity": 12,
    } | overrides


async def create_event(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.post("/events", json=event_body(), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def create_section(
    client: httpx.AsyncClient, event: dict[str, Any], headers: dict[str, str], **overrides: Any
) -> dict[str, Any]:
    response = await client.post(
        f"{event['self']}/sections", json=section_body(**overrides), headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()


# --- events ------------------------------------------------------------------------------


async def test_administrator_key_creates_an_event(client: httpx.AsyncClient) -> None:
    body = event_body(start="2031-06-07T20:00", end="2031-06-07T23:30:00.000Z")
    response = await client.post("/events", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    event = response.json()
    assert re.fullmatch(r"/events/[1-9][0-9]*", event["self"])
    assert response.headers["Location"] == event["self"]
    # A date-time without an offset is read as UTC; every one goes out with its offset.
    assert (event["start"], event["end"]) == (
        "2031-06-07T20:00:00+00:00",
        "2031-06-07T23:30:00+00:00",
    )
    assert (event["title"], event["description"]) == (body["title"], "Loud.")
    assert event["host"] is None
    assert event["sections"] == []

    fetched = await client.get(event["self"], headers=ADMIN)
    assert fetched.status_code == 200
    assert fetched.json() == event


async def test_hosts_and_administrators_create_events_others_may_not(
    client: httpx.AsyncClient,
) -> None:
    host, host_key = await new_user(client, role="host")
    event = await create_event(client, {"X-API-Key": host_key})
    assert event["host"] == host["self"]

    _, admin_key = await new_user(client, role="administrator")
    await create_event(client, {"X-API-Key": admin_key})

    for role in (None, "support"):
        _, key = await new_user(client, role=role)
        # 403 before the body is looked at.
        response = await client.post("/events", json={}, headers={"X-API-Key": key})
        expect_error(response, 403, RESTRICTED)


async def test_event_arguments_are_checked(client: httpx.AsyncClient) -> None:
    response = await client.post("/events", json={"title": "x"}, headers=ADMIN)
    expect_error(response, 400, missing_arguments(["start", "end"]))
    body = event_body()
    response = await client.post(
        "/events", json=body | {"end": "2000-01-01T00:00:00+00:00"}, headers=ADMIN
    )
    assert response.status_code == 400
    assert response.json()["message"].startswith(invalid_arguments(["end"]))
    response = await client.post("/events", json=body | {"start": "soon"}, headers=ADMIN)
    expect_error(response, 400, invalid_arguments(["start"]))
    # Found by the fuzzer: a date-time whose UTC time is before year 1 was a 500.
    for start in ("0001-01-01T01:37:27+05:14", "9999-12-31T23:59:59-01:00"):
        response = await client.post("/events", json=body | {"start": start}, headers=ADMIN)
        expect_error(response, 400, invalid_arguments(["start"]))


async def test_unknown_events_and_sections_are_404(client: httpx.AsyncClient) -> None:
    event = await create_event(client, ADMIN)
    section = await create_section(client, event, ADMIN)
    other = await create_event(client, ADMIN)
    section_id = section["self"].rsplit("/", 1)[1]
    for uri in (
        "/events/1",
        "/events/abc",
        "/events/99999999999999999999999",
        f"{event['self']}/sections/1",
        f"{other['self']}/sections/{section_id}",  # a section of another event
    ):
        expect_error(await client.get(uri, headers=ADMIN), 404, NOT_FOUND)
    response = await client.post("/events/1/sections", json=section_body(), headers=ADMIN)
    expect_error(response, 404, NOT_FOUND)


# --- sections ----------------------------------------------------------------------------


async def test_section_is_created_and_read_with_its_counters(client: httpx.AsyncClient) -> None:
    _, host_key = await new_user(client, role="host")
    host = {"X-API-Key": host_key}
    event = await create_event(client, host)
    body = section_body(basePrice=45.5, capacity=12)
    response = await client.post(f"{event['self']}/sections", json=body, headers=host)
    assert response.status_code == 201, response.text
    section = response.json()
    assert re.fullmatch(rf"{event['self']}/sections/[1-9][0-9]*", section["self"])
    assert response.headers["Location"] == section["self"]
    assert section == {
        "self": section["self"],
        "name": "Floor",
        "description": "Standing room",
        "price": {"base": 45.5, "current": 45.5, "expires": body["salesEnd"]},
        "salesStart": body["salesStart"],
        "salesEnd": body["salesEnd"],
        "active": True,
        "capacity": 12,
        "sold": 0,
        "reserved": 0,
        "remaining": 12,
    }

    # Any authenticated caller may read it, on its own or inside its event.
    _, customer_key = await new_user(client)
    reader = {"X-API-Key": customer_key}
    fetched = await client.get(section["self"], headers=reader)
    assert fetched.status_code == 200
    assert fetched.json() == section
    full = await client.get(event["self"], headers=reader)
    assert full.json()["sections"] == [section]

    inactive = await create_section(client, event, host, name="Later", active=False, basePrice=0)
    assert (inactive["active"], inactive["price"]["base"]) == (False, 0)


async def test_only_the_events_host_or_an_administrator_adds_sections(
    client: httpx.AsyncClient,
) -> None:
    _, host_key = await new_user(client, role="host")
    event = await create_event(client, {"X-API-Key": host_key})
    _, other_host_key = await new_user(client, role="host")
    _, customer_key = await new_user(client)
    for key in (other_host_key, customer_key):
        response = await client.post(
            f"{event['self']}/sections", json={}, headers={"X-API-Key": key}
        )
        expect_error(response, 403, RESTRICTED)
    await create_section(client, event, ADMIN)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("basePrice", 1.234),
        ("basePrice", -1),
        ("basePrice", True),
        ("capacity", -1),
        ("capacity", 2.0),
        ("capacity", "2"),
        ("salesStart", "tomorrow"),
        ("salesStart", 1700000000),
        ("salesEnd", "2000-01-01T00:00:00Z"),
        ("active", "yes"),
    ],
)
async def test_section_arguments_are_checked(
    client: httpx.AsyncClient, field: str, value: Any
) -> None:
    event = await create_event(client, ADMIN)
    response = await client.post(
        f"{event['self']}/sections", json=section_body(**{field: value}), headers=ADMIN
    )
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith(invalid_arguments([field]))


async def test_missing_section_arguments_are_named(client: httpx.AsyncClient) -> None:
    event = await create_event(client, ADMIN)
    response = await client.post(
        f"{event['self']}/sections", json={"name": "Floor", "capacity": 3}, headers=ADMIN
    )
    expect_error(response, 400, missing_arguments(["basePrice", "salesStart", "salesEnd"]))


async def test_reserved_counts_only_live_holds(
    client: httpx.AsyncClient, database_url: str
) -> None:
    """A lapsed hold that no transaction has swept yet no longer counts as reserved."""
    event = await create_event(client, ADMIN)
    section = await create_section(client, event, ADMIN, capacity=10, basePrice=10)
    section_id = int(section["self"].rsplit("/", 1)[1])
    conn = await asyncpg.connect(database_url)
    try:
        customer_id = await conn.fetchval("SELECT id FROM accounts LIMIT 1")
        now = datetime.now(UTC)
        for quantity, expires in (
            (3, now + timedelta(minutes=10)),
            (4, now - timedelta(seconds=1)),
        ):
            number = f"TEST{secrets.token_hex(6).upper()}"
            await conn.execute(
                "INSERT INTO orders (number, customer_id, status, placed_at, hold_expires,"
                " subtotal, fees, total) VALUES ($1, $2, 'Placed', $3, $4, $5, 0, $5)",
                number,
                customer_id,
                now,
                expires,
                quantity * 10,
            )
            await conn.execute(
                "INSERT INTO holds (order_number, section_id, customer_id, quantity, expires_at)"
                " VALUES ($1, $2, $3, $4, $5)",
                number,
                section_id,
                customer_id,
                quantity,
                expires,
            )
        # The counter column, as the orders code keeps it, still counts both holds.
        await conn.execute("UPDATE sections SET reserved = 7, sold = 2 WHERE id = $1", section_id)
    finally:
        await conn.close()
    response = await client.get(section["self"], headers=ADMIN)
    assert response.status_code == 200
    counts = {k: response.json()[k] for k in ("capacity", "sold", "reserved", "remaining")}
    assert counts == {"capacity": 10, "sold": 2, "reserved": 3, "remaining": 5}


# --- header rules ------------------------------------------------------------------------


async def test_header_rules(client: httpx.AsyncClient, api_url: str) -> None:
    event = await create_event(client, ADMIN)
    async with httpx.AsyncClient(base_url=api_url) as bare:
        expect_error(await bare.get(event["self"], headers=ADMIN), 412, UPGRADE)
        old = {"X-Client-Version": "2.0.0"} | ADMIN
        expect_error(await bare.get(event["self"], headers=old), 412, UPGRADE)
    expect_error(await client.get(event["self"]), 401, UNAUTHENTICATED)
    expect_error(await client.post("/events", json={}), 401, UNAUTHENTICATED)
    unknown = {"X-API-Key": secrets.token_hex(16)}
    expect_error(await client.get(event["self"], headers=unknown), 403, RESTRICTED)
    expect_error(await client.get("/events/abc", headers=unknown), 403, RESTRICTED)


# --- probes and demo data ----------------------------------------------------------------


async def test_probes_need_no_headers(api_url: str) -> None:
    async with httpx.AsyncClient(base_url=api_url) as bare:
        health = await bare.get("/healthz")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        ready = await bare.get("/readyz")
        assert (ready.status_code, ready.json()) == (200, {"status": "ok"})


class _Unreachable:
    """Stands in for the pool and the Temporal service client when they are down."""

    def acquire(self) -> Any:
        raise OSError("connection refused")

    async def check_health(self, **_: Any) -> bool:
        raise OSError("connection refused")


class _Healthy:
    async def check_health(self, **_: Any) -> bool:
        return True


@pytest.mark.parametrize(
    ("temporal", "message"),
    [
        (_Unreachable(), "Not ready: PostgreSQL and Temporal cannot be reached."),
        (_Healthy(), "Not ready: PostgreSQL cannot be reached."),
    ],
)
async def test_readyz_names_what_is_down(temporal: Any, message: str) -> None:
    state = SimpleNamespace(
        pool=_Unreachable(),
        order_workflows=SimpleNamespace(client=SimpleNamespace(service_client=temporal)),
    )
    response = await readyz(SimpleNamespace(app=SimpleNamespace(state=state)))  # type: ignore[arg-type]
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert json.loads(response.body) == {"message": message, "error": message}


async def test_demo_seed_is_idempotent_and_usable(
    client: httpx.AsyncClient, database_url: str
) -> None:
    first = await seed(database_url)
    second = await seed(database_url)
    assert first == second
    assert len(first.section_uris) == 3

    key = await login(client, first.customer_username, first.customer_password)
    sections = [
        (await client.get(uri, headers={"X-API-Key": key})).json() for uri in first.section_uris
    ]
    assert [(s["name"], s["price"]["base"], s["capacity"], s["active"]) for s in sections] == [
        ("Lawn", 0, 20, True),
        ("Stands", 45, 20, True),
        ("Box", 120, 20, True),
    ]
    admin_key = await login(client, first.admin_username, first.admin_password)
    session = await client.get("/sessions/active", headers={"X-API-Key": admin_key})
    assert session.json()["account"]["role"] == "administrator"
    assert session.json()["account"]["verified"] is True
