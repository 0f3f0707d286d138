"""OrderWorkflow: one order, from placement to its final status, then a grace period.

The HTTP API starts it with Update-With-Start and the `place` update answers as soon as the
tickets are reserved and priced. The workflow then waits durably for whichever comes first:
a settlement, a cancellation, or the end of the hold. Every message goes through one inbox
and is handled one at a time, so exactly one of them decides the order's fate and the others
are refused cleanly. After the order ends, the workflow stays open for a grace period so a
payment that arrives late is recorded as a refund due rather than dropped.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.orders import ORDER_REJECTED, OrderActivities
    from db.orders import late_payment_outcome
    from domain import (
        Closure,
        NewOrder,
        Order,
        OrderStatus,
        PaymentOutcome,
        PaymentSource,
        PlaceOrder,
        Settlement,
        SettlementAttempt,
        SettlementResult,
    )
    from workflows.search_attributes import ORDER_STATUS, ORDER_TOTAL

# Error types the API maps to HTTP statuses.
ORDER_CONFLICT = "OrderConflict"  # 409: the order is not in a state that allows this
ORDER_UNAVAILABLE = "OrderUnavailable"  # 503: the order could not be placed right now

# Placing must answer while the customer waits; past this the workflow gives up and
# discards whatever it may have written, and the API answers 503.
PLACE_TIMEOUT = timedelta(seconds=20)
PLACE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=2),
    non_retryable_error_types=[ORDER_REJECTED],
)
# After placement every step is retried until PostgreSQL answers: an outage delays an
# order but never loses or half-writes it.
STEP_TIMEOUT = timedelta(seconds=15)
STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10)
)


@dataclass
class _Command:
    """One message in the inbox: a settlement to apply, or a cancellation."""

    attempt_id: str
    settlement: Settlement | None = None  # None means cancel
    result: SettlementResult | Order | ApplicationError | None = field(default=None)


@workflow.defn
class OrderWorkflow:
    @workflow.init
    def __init__(self, request: PlaceOrder) -> None:
        self._request = request
        self._order: Order | None = None
        self._placement_error: ApplicationError | None = None
        self._inbox: list[_Command] = []
        self._cancel_pending = False
        self._applied_references: set[str] = set()

    @workflow.run
    async def run(self, request: PlaceOrder) -> Order | None:
        placed = workflow.now().replace(microsecond=0)
        new_order = NewOrder(
            request=request,
            placed=placed,
            hold_expires=placed + timedelta(seconds=request.reservation_seconds),
        )
        try:
            self._order = await workflow.execute_local_activity_method(
                OrderActivities.place_order,
                new_order,
                schedule_to_close_timeout=PLACE_TIMEOUT,
                retry_policy=PLACE_RETRY,
            )
        except (ActivityError, ApplicationError) as failure:
            await self._abandon_placement(failure)
            return None

        self._publish()
        while self._order.status is OrderStatus.PLACED:
            await self._next_decision()
        await self._record_late_settlements()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._order

    # --- Messages -------------------------------------------------------------------

    @workflow.update
    async def place(self) -> Order:
        """Answer with the placed order (Update-With-Start's early return)."""
        await workflow.wait_condition(
            lambda: self._order is not None or self._placement_error is not None
        )
        if self._placement_error is not None:
            raise self._placement_error
        assert self._order is not None
        return self._order

    @workflow.signal
    async def settle(self, settlement: Settlement) -> None:
        """A payment service reports a payment: `{"reference": str, "amount": ...}`."""
        self._inbox.append(
            _Command(
                attempt_id=str(workflow.uuid4()),
                settlement=settlement.model_copy(
                    update={"source": PaymentSource.SIGNAL, "card_last4": None, "answer_by": None}
                ),
            )
        )

    @workflow.update
    async def apply_payment(self, settlement: Settlement) -> SettlementResult:
        """Apply a card payment or an HTTP settlement and say what became of it."""
        command = _Command(attempt_id=str(workflow.uuid4()), settlement=settlement)
        self._inbox.append(command)
        await workflow.wait_condition(lambda: command.result is not None)
        assert isinstance(command.result, SettlementResult)
        return command.result

    @apply_payment.validator
    def _validate_apply_payment(self, settlement: Settlement) -> None:
        if self._order is None:
            raise ApplicationError("The order has not been placed.", type=ORDER_CONFLICT)

    @workflow.update
    async def cancel(self) -> Order:
        """Cancel the order; its tickets go back on sale at once."""
        command = _Command(attempt_id=str(workflow.uuid4()))
        self._cancel_pending = True
        self._inbox.append(command)
        await workflow.wait_condition(lambda: command.result is not None)
        if isinstance(command.result, ApplicationError):
            raise command.result
        assert isinstance(command.result, Order)
        return command.result

    @cancel.validator
    def _validate_cancel(self) -> None:
        if (
            self._order is None
            or self._order.status is not OrderStatus.PLACED
            or self._cancel_pending
            or self._hold_has_ended()
        ):
            raise ApplicationError("The order can no longer be cancelled.", type=ORDER_CONFLICT)

    @workflow.query
    def order(self) -> Order | None:
        return self._order

    # --- Steps ----------------------------------------------------------------------

    async def _abandon_placement(self, failure: ActivityError | ApplicationError) -> None:
        """Turn a failed placement into the caller's answer; leave nothing behind."""
        # A local activity's own ApplicationError may arrive unwrapped.
        cause = failure.cause if isinstance(failure, ActivityError) else failure
        workflow.upsert_search_attributes([ORDER_STATUS.value_set("Rejected")])
        if isinstance(cause, ApplicationError) and cause.type == ORDER_REJECTED:
            self._placement_error = ApplicationError(cause.message, type=ORDER_REJECTED)
        else:
            self._placement_error = ApplicationError(
                "The order could not be placed right now.", type=ORDER_UNAVAILABLE
            )
            # The transaction may have committed even though its answer was lost.
            await workflow.execute_local_activity_method(
                OrderActivities.discard_order,
                self._request.number,
                start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=STEP_RETRY,
            )
        await workflow.wait_condition(workflow.all_handlers_finished)

    def _hold_has_ended(self) -> bool:
        assert self._order is not None and self._order.expires is not None
        return workflow.now() >= self._order.expires

    async def _next_decision(self) -> None:
        """Wait for a message or the end of the hold, and act on the first to come."""
        assert self._order is not None and self._order.expires is not None
        remaining = (self._order.expires - workflow.now()).total_seconds()
        if remaining > 0 and not self._inbox:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: bool(self._inbox), timeout=remaining)
        if self._inbox:
            await self._handle(self._inbox.pop(0))
        elif self._hold_has_ended():
            await self._close(OrderStatus.TIMED_OUT)

    async def _handle(self, command: _Command) -> None:
        assert self._order is not None
        if command.settlement is None:
            if self._order.status is OrderStatus.PLACED:
                await self._close(OrderStatus.CANCELLED)
                command.result = self._order
            else:
                command.result = ApplicationError(
                    f"The order is {self._order.status}.", type=ORDER_CONFLICT
                )
            return
        command.result = await self._settle(command)

    async def _settle(self, command: _Command) -> SettlementResult:
        """Apply a settlement, or record why it changed nothing."""
        assert self._order is not None and command.settlement is not None
        settlement = command.settlement
        refusal: tuple[PaymentOutcome, str] | None = None
        if settlement.reference in self._applied_references:
            refusal = (PaymentOutcome.DUPLICATE, "This reference was already applied.")
        elif self._order.status is not OrderStatus.PLACED:
            refusal = (
                late_payment_outcome(settlement.source),
                f"The order was already {self._order.status}.",
            )
        elif not _is_exact_amount(settlement.amount, self._order.total):
            refusal = (
                PaymentOutcome.WRONG_AMOUNT,
                f"The amount must be exactly the order total, {self._order.total}.",
            )
        attempt = SettlementAttempt(
            number=self._order.number, attempt_id=command.attempt_id, settlement=settlement
        )
        if refusal is not None:
            attempt = attempt.model_copy(update={"outcome": refusal[0], "detail": refusal[1]})
            await workflow.execute_local_activity_method(
                OrderActivities.record_payment,
                attempt,
                start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=STEP_RETRY,
            )
            return SettlementResult(order=self._order, outcome=refusal[0])

        result = await workflow.execute_local_activity_method(
            OrderActivities.settle_order,
            attempt,
            start_to_close_timeout=STEP_TIMEOUT,
            retry_policy=STEP_RETRY,
        )
        if result.outcome in (PaymentOutcome.AUTHORISED, PaymentOutcome.SETTLED):
            self._applied_references.add(settlement.reference)
        self._order = result.order
        self._publish()
        return result

    async def _close(self, status: OrderStatus) -> None:
        assert self._order is not None
        self._order = await workflow.execute_local_activity_method(
            OrderActivities.close_order,
            Closure(number=self._order.number, status=status),
            start_to_close_timeout=STEP_TIMEOUT,
            retry_policy=STEP_RETRY,
        )
        self._publish()

    async def _record_late_settlements(self) -> None:
        """Keep listening for a while: late money must be recorded, never dropped."""
        deadline = workflow.now() + timedelta(seconds=self._request.settlement_grace_seconds)
        while True:
            remaining = (deadline - workflow.now()).total_seconds()
            if not self._inbox:
                if remaining <= 0:
                    return
                try:
                    await workflow.wait_condition(lambda: bool(self._inbox), timeout=remaining)
                except TimeoutError:
                    return
            await self._handle(self._inbox.pop(0))

    def _publish(self) -> None:
        """Keep the search attributes and the summary operators see in step with the order."""
        assert self._order is not None
        order = self._order
        workflow.upsert_search_attributes(
            [ORDER_STATUS.value_set(order.status.value), ORDER_TOTAL.value_set(float(order.total))]
        )
        lines = ", ".join(f"{item.quantity} x {item.name}" for item in order.items)
        workflow.set_current_details(
            f"**{order.status}**: order {order.number} for {order.customer.number}, "
            f"total {order.total} ({lines})"
        )


def _is_exact_amount(amount: Decimal, total: Decimal) -> bool:
    """Exactly the total (so at most two decimals that count): never rounded to fit."""
    return amount.is_finite() and amount == total
