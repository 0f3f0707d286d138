"""The FastAPI application: lifespan clients, error handlers and the routers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from temporalio.service import RPCError

from api.admission import PlacementAdmission
from api.errors import (
    RETRY_AFTER_SECONDS,
    UNAVAILABLE,
    ErrorBody,
    error_response,
    install_error_handlers,
)
from api.routes import accounts, events, health, integration_keys, orders, sessions
from api.security import ClientVersionMiddleware
from config import get_settings
from db import idempotency
from db.auth import ensure_integration_key
from domain import KeyLevel
from startup import StartupError, reach_postgres, reach_temporal
from workflows.client import OrderWorkflows

log = logging.getLogger("api")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Reach PostgreSQL and Temporal, or stop the process with one line saying why.

    Fail fast rather than serve 503s forever: a replica that cannot reach its dependencies at
    start is misconfigured or early, and its orchestrator restarts it. Migrations are not run
    here (replicas would race at every start); `python -m db.migrate` runs once per deploy.
    """
    settings = get_settings()  # invalid settings exit here with a message naming the variable
    app.state.settings = settings
    try:
        app.state.pool = await reach_postgres(settings)
    except StartupError as error:
        log.critical("API cannot start: %s", error)
        raise
    try:
        if settings.ticketing_admin_key:
            async with app.state.pool.acquire() as conn:
                try:
                    await ensure_integration_key(
                        conn,
                        settings.ticketing_admin_key,
                        "bootstrap",
                        KeyLevel.ADMINISTRATOR,
                    )
                except asyncpg.UndefinedTableError:
                    raise StartupError(
                        "the database has no schema yet: run `python -m db.migrate` first "
                        "(the `migrate` service in docker-compose.yml)"
                    ) from None
        client = await reach_temporal(settings)
    except StartupError as error:
        log.critical("API cannot start: %s", error)
        await app.state.pool.close()
        raise
    app.state.order_workflows = OrderWorkflows(client, settings.temporal_task_queue)
    purger = asyncio.create_task(_purge_idempotency_keys(app.state.pool))
    try:
        yield
    finally:
        purger.cancel()
        await app.state.pool.close()


async def _purge_idempotency_keys(pool: asyncpg.Pool) -> None:
    """Forget Idempotency-Keys past their retention, hourly (every replica may: it is one
    idempotent DELETE), so the table does not grow with every order ever placed."""
    while True:
        try:
            async with pool.acquire() as conn:
                purged = await idempotency.purge_expired(conn)
            if purged:
                log.info("forgot %d expired Idempotency-Keys", purged)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            log.warning("could not purge Idempotency-Keys now: %r", error)
        await asyncio.sleep(3600)


app = FastAPI(
    title="TickeTing REST API",
    version="3.0.0",
    summary="The order side of TickeTing v3: place, pay, cancel and time out orders.",
    lifespan=lifespan,
    redirect_slashes=False,  # /orders/ is a 404 in the contract's shape, not a bare 307
    responses={
        412: {"model": ErrorBody, "description": "X-Client-Version missing or below 3.0.0"},
    },
)
# Added first, so it runs inside the client version check.
app.add_middleware(PlacementAdmission, limit=get_settings().placements_in_flight)
app.add_middleware(ClientVersionMiddleware)
install_error_handlers(app)

# PostgreSQL or Temporal out of reach: 503 with Retry-After, never a 500.
_OUTAGES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.QueryCanceledError,
)


@app.exception_handler(RPCError)
async def _temporal_unavailable(_: Request, exc: RPCError) -> JSONResponse:
    log.warning("Temporal call failed: %s", exc)
    return error_response(503, UNAVAILABLE, {"Retry-After": RETRY_AFTER_SECONDS})


for _outage in _OUTAGES:

    @app.exception_handler(_outage)
    async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %r", exc)
        return error_response(503, UNAVAILABLE, {"Retry-After": RETRY_AFTER_SECONDS})


for router in (
    health.router,
    sessions.router,
    accounts.router,
    integration_keys.router,
    events.router,
    orders.router,
):
    app.include_router(router)
