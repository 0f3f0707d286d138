"""The two baselines as a bare HTTP app, so the same load generator drives them like the API.

* `POST /floor/orders`: Update-With-Start of the floor workflow (bench/floor.py), with the
  same start options the product's client uses. No database at all.
* `POST /direct/orders`: reserve, price and fees as ONE PostgreSQL transaction, by calling
  the product's own `db.orders.place_order`, with no Temporal: the no-orchestration limit.

Both take `{"customer": "<account number>", "items": {"<section URI>": n}}`, parse the
items with the API's parser and answer 201 with the order, 400 when it cannot be placed.
No authentication, no pre-check: these are limits, not products. Served by uvicorn with
devstack's flags (uvloop, httptools), one process, like the API.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from temporalio.client import WithStartWorkflowOperation
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

from api.errors import ApiError
from api.order_requests import parse_items
from bench.floor import TASK_QUEUE, FloorWorkflow
from config import get_settings
from db import orders as order_db
from db.pool import create_pool
from domain import NewOrder, Order, PlaceOrder
from workflows.client import ANSWER_TIMEOUT, connect_temporal
from workflows.search_attributes import CUSTOMER_NUMBER, ORDER_STATUS, ORDER_TOTAL

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    app.state.settings = settings
    app.state.pool = await create_pool(settings)
    app.state.temporal = await connect_temporal(settings)
    try:
        yield
    finally:
        await app.state.pool.close()


app = FastAPI(title="TickeTing benchmark baselines", lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _placement(request: Request) -> PlaceOrder:
    body: dict[str, Any] = await request.json()
    settings = request.app.state.settings
    lines = parse_items(
        body.get("items"), settings.max_tickets_per_section, settings.max_sections_per_order
    )
    return PlaceOrder(
        number="".join(secrets.choice(_ALPHABET) for _ in range(12)),
        customer_number=body["customer"],
        lines=lines,
        reservation_seconds=settings.reservation_seconds,
        settlement_grace_seconds=settings.settlement_grace_seconds,
        max_tickets_per_section=settings.max_tickets_per_section,
    )


def _created(order: Order) -> JSONResponse:
    return JSONResponse(order.model_dump(mode="json", by_alias=True), status_code=201)


@app.post("/floor/orders")
async def floor_order(request: Request) -> JSONResponse:
    try:
        placement = await _placement(request)
    except ApiError as error:
        return JSONResponse({"message": str(error)}, status_code=400)
    start = WithStartWorkflowOperation(
        FloorWorkflow.run,
        placement,
        id=f"floor-{placement.number}",
        task_queue=TASK_QUEUE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(CUSTOMER_NUMBER, placement.customer_number),
                SearchAttributePair(ORDER_STATUS, "Placing"),
                SearchAttributePair(ORDER_TOTAL, 0.0),
            ]
        ),
        static_summary=f"Order {placement.number} for customer {placement.customer_number}",
    )
    order = await request.app.state.temporal.execute_update_with_start_workflow(
        FloorWorkflow.place,
        start_workflow_operation=start,
        id="place",
        rpc_timeout=ANSWER_TIMEOUT,
    )
    return _created(order)


@app.post("/direct/orders")
async def direct_order(request: Request) -> JSONResponse:
    try:
        placement = await _placement(request)
    except ApiError as error:
        return JSONResponse({"message": str(error)}, status_code=400)
    settings = request.app.state.settings
    placed = datetime.now(UTC).replace(microsecond=0)
    new = NewOrder(
        request=placement,
        placed=placed,
        hold_expires=placed + timedelta(seconds=placement.reservation_seconds),
    )
    try:
        async with request.app.state.pool.acquire() as conn:
            order = await order_db.place_order(conn, new, settings.fee_tiers)
    except order_db.OrderRejected as rejection:
        return JSONResponse({"message": str(rejection)}, status_code=400)
    return _created(order)
