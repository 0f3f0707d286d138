"""Who is calling: the client version check and the API key, in the contract's order.

Checks run as: client version (412), key present (401), key valid and allowed (403), the
caller's rate limit (429), then the request itself. The version check is middleware so it
precedes everything, including 404s for unknown paths; the key is a dependency that routes
declare: `CallerDep` (any valid key but a `payments` key) or `AnyCallerDep` (payments keys
too, for the few routes they may use).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Depends, Header, Security
from fastapi.security import APIKeyHeader
from starlette.types import ASGIApp, Receive, Scope, Send

from api.dependencies import Database, SettingsDep
from api.errors import UPGRADE, ApiError, error_response, restricted, unauthenticated
from api.rate_limit import RateLimiter
from config import Settings
from db.auth import find_key_owner, hash_api_key
from domain import STAFF_ROLES, KeyLevel, Role

MINIMUM_CLIENT_VERSION = (3, 0, 0)
# Paths that need neither header: probes, docs and metrics.
OPEN_PATHS = frozenset(
    {"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/metrics", "/redoc"}
)
_VERSION = re.compile(r"\s*(\d+)\.(\d+)(?:\.(\d+))?\s*")


def client_version_ok(header: str | None) -> bool:
    match = _VERSION.fullmatch(header or "")
    if match is None:
        return False
    major, minor, patch = (int(part or 0) for part in match.groups())
    return (major, minor, patch) >= MINIMUM_CLIENT_VERSION


class ClientVersionMiddleware:
    """412 for a missing, unparsable or too old `X-Client-Version` (pure ASGI: cheap)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            header = next(
                (v.decode("latin-1") for k, v in scope["headers"] if k == b"x-client-version"),
                None,
            )
            if not client_version_ok(header):
                await error_response(412, UPGRADE)(scope, receive, send)
                return
        await self.app(scope, receive, send)


@dataclass(frozen=True)
class Caller:
    """The authenticated caller: an account's session, or an integration key."""

    key_id: int
    kind: str  # "session" or "integration"
    account_id: int | None = None
    account_number: str | None = None
    role: Role | None = None
    level: KeyLevel | None = None

    @property
    def is_staff(self) -> bool:
        """Support, administrators and administrator keys read and act on everything."""
        return self.role in STAFF_ROLES or self.level is KeyLevel.ADMINISTRATOR

    @property
    def is_administrator(self) -> bool:
        return self.role is Role.ADMINISTRATOR or self.level is KeyLevel.ADMINISTRATOR

    @property
    def is_payments(self) -> bool:
        return self.level is KeyLevel.PAYMENTS

    @property
    def identity(self) -> str:
        """A stable name for the caller (idempotency keys and rate limits are per caller)."""
        return f"account:{self.account_number}" if self.account_number else f"key:{self.key_id}"

    def owns(self, account_number: str) -> bool:
        return self.account_number is not None and self.account_number == account_number


# Documents the key in the OpenAPI document as the `SessionKey` scheme (the vendor's name);
# `auto_error=False` so a missing key reaches `authenticate` and gets the contract's 401.
api_key_header = APIKeyHeader(
    name="X-API-Key",
    scheme_name="SessionKey",
    description=(
        "A session key (`POST /sessions`) or an integration key (`POST /integration-keys`): "
        "32 lowercase hex characters. Missing: 401. Unknown, ended or not allowed: 403."
    ),
    auto_error=False,
)
ApiKeyHeader = Annotated[str | None, Security(api_key_header)]

rate_limiter = RateLimiter()
TOO_MANY_REQUESTS = (
    "Too many requests were made with this key. Try again after the number of seconds in "
    "the Retry-After header."
)


async def authenticate(db: asyncpg.Pool, settings: Settings, x_api_key: str | None) -> Caller:
    """The caller behind a key: 401 without one, 403 for an unknown or ended one, 429 past
    the caller's rate limit. Any valid key, payments keys included."""
    if not x_api_key:
        raise unauthenticated()
    if not re.fullmatch(r"[0-9a-f]{32}", x_api_key):
        raise restricted()
    async with db.acquire() as conn:
        row = await find_key_owner(conn, hash_api_key(x_api_key), settings.session_idle_seconds)
    if row is None or not row["activated"]:
        raise restricted()
    caller = Caller(
        key_id=row["id"],
        kind=row["kind"],
        account_id=row["account_id"],
        account_number=row["account_number"],
        role=Role(row["role"]) if row["role"] else None,
        level=KeyLevel(row["level"]) if row["level"] else None,
    )
    wait = rate_limiter.take(
        caller.identity, settings.rate_limit_per_minute, settings.rate_limit_burst
    )
    if wait is not None:
        raise ApiError(429, TOO_MANY_REQUESTS, {"Retry-After": str(wait)})
    return caller


async def require_key(db: Database, settings: SettingsDep, x_api_key: ApiKeyHeader) -> Caller:
    """Any valid key, `payments` keys included: only for what payments keys may do."""
    return await authenticate(db, settings, x_api_key)


def require_caller(caller: Annotated[Caller, Depends(require_key)]) -> Caller:
    """Every endpoint's default: a valid key that is not a `payments` key.

    A payments key reads and settles orders and does nothing else, so it is let in only
    where a route asks for `AnyCallerDep` (and the route then checks what it may do).
    """
    if caller.is_payments:
        raise restricted()
    return caller


CallerDep = Annotated[Caller, Depends(require_caller)]
AnyCallerDep = Annotated[Caller, Depends(require_key)]


def require_staff(caller: CallerDep) -> Caller:
    if not caller.is_staff:
        raise restricted()
    return caller


StaffDep = Annotated[Caller, Depends(require_staff)]


def client_version_header(
    x_client_version: Annotated[
        str,
        Header(
            alias="X-Client-Version",
            description=(
                "The API version the client targets, `3.0.0` or later. Missing, unparsable "
                "or lower: 412. (Checked by middleware before anything else; declared here "
                "so the OpenAPI document shows it.)"
            ),
            examples=["3.0.0"],
        ),
    ],
) -> None:
    """Documents `X-Client-Version` on a router's operations (the middleware enforces it)."""
