"""Record one OrderWorkflow history per path into tests/histories/, for the replay test.

    .venv/bin/python -m tests.record_histories

Starts a private stack (tests/stack.py) with 3-second holds and grace periods, drives each
path the way users do (HTTP, the `settle` signal, a placement that only the workflow can
refuse), waits until every workflow has closed and writes its full history as JSON.

Run it again after a deliberate change to OrderWorkflow that running orders can take (one
guarded by `workflow.patched`, say), and commit the new files next to the old ones: the
replay test (tests/test_replay.py) replays every file, so histories of earlier versions
keep proving that the current code can still finish the orders they started.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import httpx

from api.routes.orders import new_order_number
from domain import OrderLine, PlaceOrder, Settlement
from tests.http_helpers import CARD
from tests.stack import ADMIN, Customer, Stack, started_stack
from workflows.client import OrderWorkflows
from workflows.order import OrderWorkflow

HISTORIES = Path(__file__).parent / "histories"
HOLD_SECONDS = 3


class Recorder:
    def __init__(self, stack: Stack, http: httpx.AsyncClient, customer: Customer) -> None:
        self.stack, self.http, self.customer = stack, http, customer
        self.recorded: dict[str, str] = {}  # path name -> workflow ID

    async def place(self, price: str = "45.00", quantity: int = 2) -> dict:
        section = await self.stack.section(price=price)
        response = await self.http.post(
            "/orders", headers=self.customer.headers, json={"items": {section.uri: quantity}}
        )
        assert response.status_code == 201, response.text
        return response.json()

    async def signal(self, order: dict, reference: str, amount: Decimal | str) -> None:
        handle = (await self.stack.temporal_client()).get_workflow_handle(
            f"order-{order['number']}"
        )
        await handle.signal(
            OrderWorkflow.settle, Settlement(reference=reference, amount=Decimal(str(amount)))
        )

    async def path(self, name: str, drive: Callable[[], Awaitable[dict | str]]) -> None:
        order = await drive()
        number = order if isinstance(order, str) else order["number"]
        self.recorded[name] = f"order-{number}"

    async def write(self) -> None:
        client = await self.stack.temporal_client()
        HISTORIES.mkdir(exist_ok=True)
        for name, workflow_id in self.recorded.items():
            handle = client.get_workflow_handle(workflow_id)
            await asyncio.wait_for(handle.result(), 60)
            history = await handle.fetch_history()
            text = json.dumps(json.loads(history.to_json()), indent=1, sort_keys=True)
            (HISTORIES / f"{name}.json").write_text(text + "\n")
            print(f"recorded {name}: {len(history.events)} events")


async def record() -> None:
    with tempfile.TemporaryDirectory(prefix="histories-") as folder:
        async for stack in started_stack(
            Path(folder), reservation_seconds=HOLD_SECONDS, grace_seconds=HOLD_SECONDS
        ):
            customer = (await stack.customers(1))[0]
            async with stack.http() as http:
                await _drive_every_path(Recorder(stack, http, customer))


async def _drive_every_path(r: Recorder) -> None:
    http, headers = r.http, r.customer.headers

    async def settled() -> dict:
        order = await r.place()
        await r.signal(order, "psp-1", order["total"])
        return order

    async def paid_by_card() -> dict:
        order = await r.place()
        paid = await http.post(f"{order['self']}/payments", headers=headers, json=CARD)
        assert paid.json()["status"] == "Authorised", paid.text
        return order

    async def settled_over_http() -> dict:
        order = await r.place()
        key = await http.post(
            "/integration-keys", headers=ADMIN, json={"name": "psp", "level": "payments"}
        )
        settled = await http.post(
            f"{order['self']}/settlements",
            headers={"X-API-Key": key.json()["key"]},
            json={"reference": "psp-http", "amount": order["total"]},
        )
        assert settled.json()["outcome"] == "Settled", settled.text
        return order

    async def cancelled() -> dict:
        order = await r.place()
        assert (await http.delete(order["self"], headers=headers)).status_code == 200
        return order

    async def timed_out() -> dict:
        return await r.place()  # nobody pays: the hold ends

    async def free() -> dict:
        order = await r.place(price="0.00")
        assert order["status"] == "Fulfilled"
        return order

    async def rejected() -> str:
        # More than the section has: only the workflow's transaction can refuse it (the
        # API's pre-check would), so place the way the API does, straight to Temporal.
        section = await r.stack.section(capacity=1)
        workflows = OrderWorkflows(await r.stack.temporal_client(), "orders")
        number = new_order_number()
        try:
            await workflows.place(
                PlaceOrder(
                    number=number,
                    customer_number=r.customer.number,
                    lines=[
                        OrderLine(
                            event_id=section.event_id, section_id=section.section_id, quantity=2
                        )
                    ],
                    reservation_seconds=HOLD_SECONDS,
                    settlement_grace_seconds=HOLD_SECONDS,
                    max_tickets_per_section=20,
                )
            )
        except Exception as refused:  # the update fails with OrderRejected
            print(f"rejected as expected: {refused}")
        else:
            raise AssertionError("the placement was not rejected")
        return number

    async def late_settlement() -> dict:
        order = await r.place()
        assert (await http.delete(order["self"], headers=headers)).status_code == 200
        await r.signal(order, "psp-late", order["total"])
        return order

    async def wrong_amount() -> dict:
        order = await r.place()
        await r.signal(order, "psp-short", Decimal(str(order["total"])) - 1)
        await r.signal(order, "psp-exact", order["total"])
        return order

    async def duplicate() -> dict:
        order = await r.place()
        await r.signal(order, "psp-dup", order["total"])
        await r.signal(order, "psp-dup", order["total"])
        return order

    for name, drive in {
        "settled": settled,
        "paid_by_card": paid_by_card,
        "settled_over_http": settled_over_http,
        "cancelled": cancelled,
        "timed_out": timed_out,
        "free": free,
        "rejected": rejected,
        "late_settlement": late_settlement,
        "wrong_amount": wrong_amount,
        "duplicate": duplicate,
    }.items():
        await r.path(name, drive)
    await r.write()


if __name__ == "__main__":
    asyncio.run(record())
    sys.exit(0)
