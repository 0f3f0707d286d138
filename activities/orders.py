"""Order activities: thin adapters from Temporal to the order SQL in db/orders.py.

Each one is a single idempotent transaction, so Temporal may retry it after a crash or a
lost connection without holding, releasing or issuing anything twice.
"""

from __future__ import annotations

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db import orders
from domain import Closure, FeeTiers, NewOrder, Order, SettlementAttempt, SettlementResult

ORDER_REJECTED = "OrderRejected"


class OrderActivities:
    """Activities bound to the worker's connection pool and fee schedule."""

    def __init__(self, pool: asyncpg.Pool, fee_tiers: FeeTiers) -> None:
        self._pool = pool
        self._fee_tiers = fee_tiers

    @activity.defn
    async def place_order(self, new: NewOrder) -> Order:
        """Reserve, price and add fees; fulfil at once when the order is free."""
        try:
            async with self._pool.acquire() as conn:
                return await orders.place_order(conn, new, self._fee_tiers)
        except orders.OrderRejected as rejection:
            raise ApplicationError(
                str(rejection), type=ORDER_REJECTED, non_retryable=True
            ) from None

    @activity.defn
    async def discard_order(self, number: str) -> None:
        """Remove a placement that was never answered, releasing anything it held."""
        async with self._pool.acquire() as conn:
            await orders.discard_order(conn, number)

    @activity.defn
    async def close_order(self, closure: Closure) -> Order:
        """Cancel or time out the order and put its tickets back on sale."""
        async with self._pool.acquire() as conn:
            return await orders.close_order(conn, closure.number, closure.status)

    @activity.defn
    async def settle_order(self, attempt: SettlementAttempt) -> SettlementResult:
        """Fulfil the order with a settlement whose amount the workflow has checked."""
        async with self._pool.acquire() as conn:
            order, outcome = await orders.settle_order(
                conn, attempt.number, attempt.attempt_id, attempt.settlement
            )
        return SettlementResult(order=order, outcome=outcome)

    @activity.defn
    async def record_payment(self, attempt: SettlementAttempt) -> None:
        """Record a settlement that changes nothing (refused, duplicate, or late)."""
        assert attempt.outcome is not None
        async with self._pool.acquire() as conn:
            await orders.record_payment(
                conn,
                attempt.number,
                attempt.attempt_id,
                attempt.settlement,
                attempt.outcome,
                attempt.detail,
            )

    def all(self) -> list:
        """Every activity of this class, for registering with a worker."""
        return [
            self.place_order,
            self.discard_order,
            self.close_order,
            self.settle_order,
            self.record_payment,
        ]
