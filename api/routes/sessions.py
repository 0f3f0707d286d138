"""Sessions: log in with a username or email and a password, look at or end the session.

The session's `self` is `/sessions/active`, the one URI that serves it (to its own key).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from api.dependencies import Database
from api.errors import (
    KEY_ERRORS,
    ApiError,
    error_responses,
    location_header,
    not_found,
    restricted,
)
from api.routes.accounts import ACCOUNT_NOT_FOUND
from api.security import Caller, CallerDep, client_version_header
from api.text import RequestBody
from db import sessions as session_sql
from domain import Session
from passwords import verify_password

router = APIRouter(tags=["Sessions"], dependencies=[Depends(client_version_header)])

WRONG_PASSWORD = "A session cannot be started with the given password."
TOO_MANY_ATTEMPTS = (
    "Too many wrong passwords were given for this account. Try again after the time in "
    "the Retry-After header."
)
SESSION_ENDED = "The session has been ended."


class Login(RequestBody):
    """Body of `POST /sessions`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"identification": "ada", "password": "correct horse battery"}]
        }
    )

    identification: Annotated[
        str,
        Field(min_length=1, max_length=254, strict=True, description="Username or email"),
    ]
    password: Annotated[str, Field(min_length=1, max_length=1024, strict=True)]


class Message(BaseModel):
    message: str


def session_caller(caller: CallerDep) -> Caller:
    """Only a session key has a session; an integration key here is 403."""
    if caller.kind != "session":
        raise restricted()
    return caller


SessionCaller = Annotated[Caller, Depends(session_caller)]

_KEY_ERRORS = error_responses(
    *KEY_ERRORS, _403="Key unknown or ended, or an integration key (which has no session)"
)


@router.post(
    "/sessions",
    status_code=201,
    response_model=Session,
    responses={
        201: {"headers": location_header("The session (`/sessions/active`, with its key)")},
        **error_responses(
            400,
            401,
            403,
            404,
            412,
            429,
            503,
            _400="identification or password missing or invalid",
            _401="Wrong password",
            _403="The account is deactivated",
            _404="No account has that username or email",
            _429="Too many wrong passwords for this account; wait for Retry-After seconds",
        ),
    },
    # No key is needed (any key sent is ignored).
    openapi_extra={"security": []},
)
async def start_session(body: Login, db: Database, response: Response) -> Session:
    """Start a session; its key (shown only here) authenticates later requests.

    Repeated wrong passwords for one account are throttled: while the limit is reached
    the password is not even checked, so guessing gains nothing.
    """
    async with db.acquire() as conn:
        login = await session_sql.find_login(conn, body.identification)
        if login is None:
            raise not_found(ACCOUNT_NOT_FOUND)
        wait = await session_sql.begin_login(conn, login.id)
    if wait is not None:
        raise ApiError(429, TOO_MANY_ATTEMPTS, {"Retry-After": str(wait)})
    # No connection is held while the (deliberately slow) hash is checked.
    check = await verify_password(login.password_hash, body.password)
    if not check.ok:
        raise ApiError(401, WRONG_PASSWORD)
    async with db.acquire() as conn:
        if not login.activated:
            await session_sql.clear_login_failures(conn, login.id)
            raise restricted()
        session = await session_sql.start_session(conn, login.id, new_password_hash=check.new_hash)
    response.headers["Location"] = session.self_uri
    return session


@router.get("/sessions/active", response_model=Session, responses=_KEY_ERRORS)
async def get_active_session(caller: SessionCaller, request: Request, db: Database) -> Session:
    """The session behind the request's key."""
    async with db.acquire() as conn:
        session = await session_sql.get_session(conn, caller.key_id, request.headers["x-api-key"])
    if session is None:  # ended by a concurrent request since the key was checked
        raise restricted()
    return session


@router.delete("/sessions/active", response_model=Message, responses=_KEY_ERRORS)
async def end_active_session(caller: SessionCaller, db: Database) -> Message:
    """End the session behind the request's key; the key is refused from then on."""
    async with db.acquire() as conn:
        if not await session_sql.end_session(conn, caller.key_id):
            raise restricted()
    return Message(message=SESSION_ENDED)
