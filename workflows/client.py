"""The client side of OrderWorkflow: connect, place, pay, settle and cancel.

The API talks to Temporal only through this module, so the workflow ID scheme, the task
queue and the message names live in one place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from temporalio.client import (
    Client,
    TLSConfig,
    WithStartWorkflowOperation,
    WorkflowHandle,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

from config import Settings
from domain import (
    Order,
    PaymentSource,
    PlaceOrder,
    Settlement,
    SettlementResult,
    order_workflow_id,
)
from workflows.converter import data_converter
from workflows.order import OrderWorkflow
from workflows.search_attributes import CUSTOMER_NUMBER, ORDER_STATUS, ORDER_TOTAL

T = TypeVar("T")

# How long an HTTP caller waits on the workflow before it is told to retry (503).
ANSWER_TIMEOUT = timedelta(seconds=25)
# A card payment must be applied this long before the API gives up on it (and voids the
# authorisation), leaving time for the answer to travel back and for clock skew.
ANSWER_MARGIN = timedelta(seconds=5)


async def _within_answer_timeout(call: Awaitable[T]) -> T:
    """Await an update call for at most ANSWER_TIMEOUT in all.

    `rpc_timeout` bounds each RPC, not the call: while no worker picks the update up, the
    server answers each long poll with "not accepted yet" before that deadline and the SDK
    asks again, forever. A cut-off caller must hear "retry" instead of hanging.
    """
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT.total_seconds()):
            return await call
    except TimeoutError:
        raise WorkflowUpdateRPCTimeoutOrCancelledError() from None


async def connect_temporal(settings: Settings) -> Client:
    """Connect with TLS or an API key when configured (Temporal Cloud), plain otherwise."""
    tls: bool | TLSConfig = settings.temporal_tls or bool(settings.temporal_api_key)
    if settings.temporal_tls_cert:
        tls = TLSConfig(
            client_cert=Path(settings.temporal_tls_cert).read_bytes(),  # noqa: ASYNC240
            client_private_key=Path(settings.temporal_tls_key).read_bytes(),  # noqa: ASYNC240
        )
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=settings.temporal_api_key or None,
        tls=tls,
        data_converter=data_converter,
    )


class OrderWorkflows:
    """Starts and messages order workflows on one task queue."""

    def __init__(self, client: Client, task_queue: str) -> None:
        self.client = client
        self._task_queue = task_queue

    def _handle(self, number: str) -> WorkflowHandle[OrderWorkflow, Order | None]:
        return self.client.get_workflow_handle_for(OrderWorkflow.run, order_workflow_id(number))

    async def place(self, request: PlaceOrder) -> Order:
        """Start the order's workflow and wait for its `place` update: one round trip.

        A repeat with the same order number attaches to the running workflow and gets the
        same answer (the update ID is fixed), so a retried placement never holds twice.
        """
        start = WithStartWorkflowOperation(
            OrderWorkflow.run,
            request,
            id=order_workflow_id(request.number),
            task_queue=self._task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(CUSTOMER_NUMBER, request.customer_number),
                    SearchAttributePair(ORDER_STATUS, "Placing"),
                    SearchAttributePair(ORDER_TOTAL, 0.0),
                ]
            ),
            static_summary=f"Order {request.number} for customer {request.customer_number}",
        )
        return await _within_answer_timeout(
            self.client.execute_update_with_start_workflow(
                OrderWorkflow.place,
                start_workflow_operation=start,
                id="place",
                rpc_timeout=ANSWER_TIMEOUT,
            )
        )

    async def apply_payment(self, number: str, settlement: Settlement) -> SettlementResult:
        """Apply a card payment or an HTTP settlement and wait for its outcome.

        A card payment carries the moment its caller stops waiting: the update stays queued
        in Temporal when no worker takes it in time, and the API then voids the card, so
        applying it later would issue tickets for money never taken.
        """
        if settlement.source is PaymentSource.CARD:
            answer_by = datetime.now(UTC) + ANSWER_TIMEOUT - ANSWER_MARGIN
            settlement = settlement.model_copy(update={"answer_by": answer_by})
        return await _within_answer_timeout(
            self._handle(number).execute_update(
                OrderWorkflow.apply_payment, settlement, rpc_timeout=ANSWER_TIMEOUT
            )
        )

    async def cancel(self, number: str) -> Order:
        return await _within_answer_timeout(
            self._handle(number).execute_update(OrderWorkflow.cancel, rpc_timeout=ANSWER_TIMEOUT)
        )

    async def signal_settle(self, number: str, settlement: Settlement) -> None:
        """What a payment service does: send the `settle` signal (used by tests and docs)."""
        await self._handle(number).signal(OrderWorkflow.settle, settlement)
