"""Integration keys: keys that belong to no account (payment services, back offices)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import ConfigDict, Field

from api.dependencies import Database
from api.errors import KEY_ERRORS, error_responses, location_header, restricted
from api.security import Caller, CallerDep, client_version_header
from api.text import RequestBody
from db.integration_keys import create_integration_key
from domain import IntegrationKey, KeyLevel

router = APIRouter(tags=["Integration keys"], dependencies=[Depends(client_version_header)])


class NewIntegrationKey(RequestBody):
    """Body of `POST /integration-keys`."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "payment service", "level": "payments"}]}
    )

    name: Annotated[
        str,
        Field(min_length=1, max_length=200, strict=True, description="What the key is for"),
    ]
    level: Annotated[KeyLevel, Field(description="`administrator` or `payments`")]


def administrator(caller: CallerDep) -> Caller:
    """Administrators (accounts or keys) only; checked before the body is looked at."""
    if not caller.is_administrator:
        raise restricted()
    return caller


@router.post(
    "/integration-keys",
    status_code=201,
    response_model=IntegrationKey,
    responses={
        201: {"headers": location_header("The new key")},
        **error_responses(
            *KEY_ERRORS,
            400,
            _400="name or level missing or invalid",
            _403="Key unknown or ended, or not an administrator",
        ),
    },
)
async def create_key(
    _: Annotated[Caller, Depends(administrator)],
    body: NewIntegrationKey,
    db: Database,
    response: Response,
) -> IntegrationKey:
    """Create a key. It is shown in this answer only; the service keeps just its hash."""
    async with db.acquire() as conn:
        key = await create_integration_key(conn, body.name, body.level)
    response.headers["Location"] = key.self_uri
    return key
