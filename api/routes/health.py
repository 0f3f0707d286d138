"""Probes for orchestrators: liveness (`/healthz`) and readiness (`/readyz`).

Liveness does no I/O, so a slow database never gets a healthy process restarted.
Readiness asks both dependencies, so a load balancer stops sending orders to a replica
that could only answer them with 503s.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.errors import RETRY_AFTER_SECONDS, error_response, error_responses

router = APIRouter(tags=["Health"])
log = logging.getLogger("api.health")

PROBE_TIMEOUT_SECONDS = 2.0


class Status(BaseModel):
    status: str


async def _postgres_ready(request: Request) -> bool:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
            async with request.app.state.pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
    except Exception as error:  # any failure means "not ready", whatever its kind
        log.warning("readiness: PostgreSQL unavailable: %r", error)
        return False
    return True


async def _temporal_ready(request: Request) -> bool:
    client = request.app.state.order_workflows.client
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS + 1):
            return await client.service_client.check_health(
                timeout=timedelta(seconds=PROBE_TIMEOUT_SECONDS)
            )
    except Exception as error:
        log.warning("readiness: Temporal unavailable: %r", error)
        return False


@router.get("/healthz", response_model=Status)
async def healthz() -> Status:
    """The process is alive and serving HTTP."""
    return Status(status="ok")


@router.get(
    "/readyz",
    response_model=Status,
    responses=error_responses(503, _503="PostgreSQL or Temporal unreachable; the text names which"),
)
async def readyz(request: Request) -> Status | JSONResponse:
    """Ready when PostgreSQL answers `SELECT 1` and Temporal's health check passes."""
    postgres, temporal = await asyncio.gather(_postgres_ready(request), _temporal_ready(request))
    down = [name for name, ok in (("PostgreSQL", postgres), ("Temporal", temporal)) if not ok]
    if down:
        return error_response(
            503,
            f"Not ready: {' and '.join(down)} cannot be reached.",
            {"Retry-After": RETRY_AFTER_SECONDS},
        )
    return Status(status="ok")
