"""Who is calling: the client version check and the API key, in the contract's order.

Checks run as: client version (412), key present (401), key valid and allowed (403), then
the request itself. The version check is middleware so it precedes everything, including
404s for unknown paths; the key is a dependency that routes declare.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header
from starlette.types import ASGIApp, Receive, Scope, Send

from api.dependencies import Database, SettingsDep
from api.errors import UPGRADE, error_response, restricted, unauthenticated
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


async def require_caller(
    db: Database,
    settings: SettingsDep,
    x_api_key: Annotated[str | None, Header(description="Session or integration key")] = None,
) -> Caller:
    if not x_api_key:
        raise unauthenticated()
    if not re.fullmatch(r"[0-9a-f]{32}", x_api_key):
        raise restricted()
    async with db.acquire() as conn:
        row = await find_key_owner(conn, hash_api_key(x_api_key), settings.session_idle_seconds)
    if row is None or not row["activated"]:
        raise restricted()
    return Caller(
        key_id=row["id"],
        kind=row["kind"],
        account_id=row["account_id"],
        account_number=row["account_number"],
        role=Role(row["role"]) if row["role"] else None,
        level=KeyLevel(row["level"]) if row["level"] else None,
    )


CallerDep = Annotated[Caller, Depends(require_caller)]


def require_staff(caller: CallerDep) -> Caller:
    if not caller.is_staff:
        raise restricted()
    return caller


StaffDep = Annotated[Caller, Depends(require_staff)]
