"""Reaching PostgreSQL and Temporal when the API or the worker starts.

Each process keeps trying for STARTUP_TIMEOUT_SECONDS, so dependencies that start at the same
time get a moment to come up, then gives up with a `StartupError` whose one-line message
names what could not be reached and where. The process exits non-zero with it instead of
hanging; the orchestrator restarts it, and the operator reads the cause in the log. Outages
after the start are another matter: `/readyz` reports them and requests answer 503.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

import asyncpg
from temporalio.client import Client

from config import Settings
from db.pool import create_pool
from workflows.client import connect_temporal

log = logging.getLogger("startup")

T = TypeVar("T")

RETRY_PAUSE_SECONDS = 1.0

# Retrying cannot fix these: say so at once rather than after the whole timeout.
_POSTGRES_PERMANENT: tuple[type[BaseException], ...] = (
    asyncpg.InvalidAuthorizationSpecificationError,  # unknown role, wrong password
    asyncpg.InvalidCatalogNameError,  # no such database
    ValueError,  # a URL asyncpg cannot parse
)
_TEMPORAL_PERMANENT: tuple[type[BaseException], ...] = (
    FileNotFoundError,  # TEMPORAL_TLS_CERT / TEMPORAL_TLS_KEY point nowhere
    IsADirectoryError,
    ValueError,
)


class StartupError(RuntimeError):
    """A dependency could not be reached at start; the message says which, where and why."""


def postgres_location(database_url: str) -> str:
    """`host:port/database` of a DATABASE_URL, without the user or the password."""
    try:
        parts = urlsplit(database_url)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
    except ValueError:
        return "(unparsable DATABASE_URL)"
    return f"{host}:{port}{parts.path or ''}"


def _reason(error: BaseException | None) -> str:
    if error is None or isinstance(error, TimeoutError):
        return "no answer"
    text = " ".join(str(error).split()) or "no detail"
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(error).__name__}: {text}"


async def retry_until_deadline(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    seconds: float,
    *,
    hint: str,
    permanent: tuple[type[BaseException], ...] = (),
) -> T:
    """Await `attempt()` until it succeeds, retrying for `seconds` in all.

    Each try is cut off at the deadline too, so an address that swallows packets cannot make
    the process hang. Raises StartupError naming `what`, the last error and `hint`.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    last_error: BaseException | None = None
    tries = 0
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        tries += 1
        try:
            async with asyncio.timeout(remaining):
                return await attempt()
        except permanent as error:
            last_error = error
            break
        except Exception as error:  # refused, reset, DNS, timeout: worth another try
            last_error = error
            if tries == 1:
                log.warning("%s not reachable yet (%s); retrying for %g s", what, error, seconds)
        await asyncio.sleep(min(RETRY_PAUSE_SECONDS, max(0.0, deadline - loop.time())))
    raise StartupError(
        f"cannot reach {what} (tried {tries}x in {seconds:g} s): {_reason(last_error)}. {hint}"
    )


async def reach_postgres(settings: Settings) -> asyncpg.Pool:
    """The connection pool, once PostgreSQL at DATABASE_URL answers."""
    if not settings.database_url:
        raise StartupError("DATABASE_URL is not set (`make run` and docker-compose.yml set it)")
    return await retry_until_deadline(
        f"PostgreSQL at {postgres_location(settings.database_url)}",
        lambda: create_pool(settings),
        settings.startup_timeout_seconds,
        hint="Check DATABASE_URL and that the server is up.",
        permanent=_POSTGRES_PERMANENT,
    )


async def reach_temporal(settings: Settings) -> Client:
    """A Temporal client, once the frontend at TEMPORAL_ADDRESS answers."""
    if not settings.temporal_address:
        raise StartupError("TEMPORAL_ADDRESS is not set (`make run` and docker-compose.yml set it)")
    return await retry_until_deadline(
        f"Temporal at {settings.temporal_address} (namespace {settings.temporal_namespace!r})",
        lambda: connect_temporal(settings),
        settings.startup_timeout_seconds,
        hint="Check TEMPORAL_ADDRESS, and TEMPORAL_API_KEY or TEMPORAL_TLS* for Temporal Cloud.",
        permanent=_TEMPORAL_PERMANENT,
    )
