"""The FastAPI application: lifespan clients, error handlers and the routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from temporalio.service import RPCError

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
from db.auth import ensure_integration_key
from db.pool import create_pool
from domain import KeyLevel
from workflows.client import OrderWorkflows, connect_temporal

log = logging.getLogger("api")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    app.state.settings = settings
    app.state.pool = await create_pool(settings)
    if settings.ticketing_admin_key:
        async with app.state.pool.acquire() as conn:
            await ensure_integration_key(
                conn,
                settings.ticketing_admin_key,
                "bootstrap",
                KeyLevel.ADMINISTRATOR,
            )
    client = await connect_temporal(settings)
    app.state.order_workflows = OrderWorkflows(client, settings.temporal_task_queue)
    try:
        yield
    finally:
        await app.state.pool.close()


app = FastAPI(
    title="TickeTing REST API",
    version="3.0.0",
    summary="The order side of TickeTing v3: place, pay, cancel and time out orders.",
    lifespan=lifespan,
    responses={
        412: {"model": ErrorBody, "description": "X-Client-Version missing or below 3.0.0"},
    },
)
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
