"""The Temporal floor: an order-shaped workflow that does no I/O, and the worker that runs it.

Same input (`PlaceOrder`) and output (`Order`) as OrderWorkflow, started the same way
(Update-With-Start with the same options and search attributes, see bench/baseline_app.py),
and the same Temporal-side steps for a placed order: the `place` update answers with the
order, the search attributes and summary are published, and a timer waits for the end of
the hold. What it leaves out is everything that touches PostgreSQL: no activities at all,
the order is made up in memory. Its throughput is the most any order workflow can reach on
these servers; the product's ratio to it says what the product's own work costs.

Run by `python -m bench.floor` (the benchmark starts it) on task queue `bench-floor`, with
the product worker's own Worker options.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from datetime import timedelta
from decimal import Decimal

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from domain import AccountSummary, Order, OrderItem, OrderStatus, PlaceOrder, section_uri
    from workflows.search_attributes import ORDER_STATUS, ORDER_TOTAL

TASK_QUEUE = "bench-floor"
_PRICE = Decimal("45.00")
_FEE = Decimal("0.99")


@workflow.defn(name="BenchFloorWorkflow")
class FloorWorkflow:
    @workflow.init
    def __init__(self, request: PlaceOrder) -> None:
        self._order: Order | None = None

    @workflow.run
    async def run(self, request: PlaceOrder) -> Order | None:
        placed = workflow.now().replace(microsecond=0)
        quantity = sum(line.quantity for line in request.lines)
        self._order = Order(
            number=request.number,
            status=OrderStatus.PLACED,
            placed=placed,
            expires=placed + timedelta(seconds=request.reservation_seconds),
            subtotal=_PRICE * quantity,
            fees=_FEE * quantity,
            total=(_PRICE + _FEE) * quantity,
            items=[
                OrderItem(
                    number=f"{request.number}-{index}",
                    section=section_uri(line.event_id, line.section_id),
                    name="Section",
                    description="",
                    price=_PRICE,
                    fee=_FEE,
                    quantity=line.quantity,
                )
                for index, line in enumerate(request.lines, 1)
            ],
            customer=AccountSummary(
                number=request.customer_number,
                username="bench",
                email="bench@example.com",
                role="customer",
                verified=True,
                activated=True,
            ),
        )
        workflow.upsert_search_attributes(
            [
                ORDER_STATUS.value_set(self._order.status.value),
                ORDER_TOTAL.value_set(float(self._order.total)),
            ]
        )
        workflow.set_current_details(f"**Placed**: order {request.number}")
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(lambda: False, timeout=request.reservation_seconds)
        return self._order

    @workflow.update
    async def place(self) -> Order:
        await workflow.wait_condition(lambda: self._order is not None)
        assert self._order is not None
        return self._order


async def _run_worker() -> None:
    from temporalio.worker import Worker

    # Under `python -m` this file is __main__; the worker must register the class from
    # the importable module, which the sandbox can find by name.
    from bench.floor import FloorWorkflow as Registered
    from config import get_settings
    from worker import WORKER_TUNING
    from workflows.client import connect_temporal

    settings = get_settings()
    client = await connect_temporal(settings)
    worker = Worker(
        client,
        task_queue=TASK_QUEUE,
        workflows=[Registered],
        graceful_shutdown_timeout=timedelta(seconds=5),
        **WORKER_TUNING,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    logging.getLogger("bench.floor").info("floor worker polling task queue %r", TASK_QUEUE)
    async with worker:
        await stop.wait()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import uvloop

    uvloop.run(_run_worker())


if __name__ == "__main__":
    main()
