"""Settlement messages over HTTP and the `settle` signal, on the session's running service.

A duplicate changes nothing; a wrong amount is refused and the order stays Placed; a
settlement racing a cancellation or the end of the hold has exactly one outcome; money that
arrives after the order ended never fulfils it and is never dropped: it is recorded as a
refund due that staff and the payment service can see. Each test ends with the audit.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from temporalio.client import Client
from temporalio.service import RPCError

from api.routes.orders import new_order_number
from domain import OrderLine, PlaceOrder, Settlement
from tests.conftest import SETTLEMENT_GRACE_SECONDS
from tests.http_helpers import CARD, new_user
from tests.stack import audit_mark, audit_since
from tests.test_orders_http import ADMIN, counts, new_section, place
from workflows.client import OrderWorkflows
from workflows.order import OrderWorkflow


@pytest.fixture(autouse=True)
async def audited(database_url: str) -> AsyncIterator[None]:
    """The audit of every section and order the test made finds no difference."""
    conn = await asyncpg.connect(database_url)
    try:
        mark = await audit_mark(conn)
        yield
        assert await audit_since(conn, mark) == []
    finally:
        await conn.close()


@pytest.fixture
async def customer(client: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, str]]:
    account, key = await new_user(client)
    return account, {"X-API-Key": key}


@pytest.fixture(scope="module")
async def psp(api_url: str) -> dict[str, str]:
    """A payment service's integration key."""
    async with httpx.AsyncClient(base_url=api_url, headers={"X-Client-Version": "3.0.0"}) as http:
        response = await http.post(
            "/integration-keys", headers=ADMIN, json={"name": "psp", "level": "payments"}
        )
    assert response.status_code == 201, response.text
    return {"X-API-Key": response.json()["key"]}


async def _settle(
    client: httpx.AsyncClient, psp: dict[str, str], order: dict, reference: str, amount: Any
) -> httpx.Response:
    return await client.post(
        f"{order['self']}/settlements",
        headers=psp,
        json={"reference": reference, "amount": amount},
    )


async def _outcomes(client: httpx.AsyncClient, order: dict, headers: dict) -> list[str]:
    response = await client.get(f"{order['self']}/payments", headers=headers)
    assert response.status_code == 200, response.text
    return [payment["outcome"] for payment in response.json()]


async def _status(client: httpx.AsyncClient, order: dict) -> str:
    return (await client.get(order["self"], headers=ADMIN)).json()["status"]


async def _until(probe, accept, within: float = 20.0):
    deadline = time.monotonic() + within
    value = await probe()
    while not accept(value) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        value = await probe()
    return value


async def _tickets(database_url: str, number: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval("SELECT count(*) FROM tickets WHERE order_number = $1", number)
    finally:
        await conn.close()


async def test_a_duplicate_settlement_changes_nothing(
    client, customer, psp, temporal_client: Client, database_url
) -> None:
    _, headers = customer
    stands = await new_section(client)
    order = (await place(client, headers, {stands: 2})).json()

    first = await _settle(client, psp, order, "psp-dup", order["total"])
    again = await _settle(client, psp, order, "psp-dup", order["total"])
    await temporal_client.get_workflow_handle(f"order-{order['number']}").signal(
        OrderWorkflow.settle, Settlement(reference="psp-dup", amount=Decimal(str(order["total"])))
    )

    assert (first.status_code, first.json()["outcome"]) == (201, "Settled")
    assert (again.status_code, again.json()["outcome"]) == (201, "Refused: duplicate")
    outcomes = await _until(lambda: _outcomes(client, order, psp), lambda o: len(o) == 3)
    assert outcomes == ["Settled", "Refused: duplicate", "Refused: duplicate"]
    assert await _tickets(database_url, order["number"]) == 2
    assert await counts(client, stands) == {"sold": 2, "reserved": 0, "remaining": 18}


async def test_a_wrong_amount_is_refused_and_the_order_stays_placed(
    client, customer, psp, database_url
) -> None:
    _, headers = customer
    stands = await new_section(client)
    order = (await place(client, headers, {stands: 1})).json()
    total = Decimal(str(order["total"]))

    for reference, amount in (
        ("short", str(total - Decimal("0.01"))),
        ("long", str(total + Decimal("0.01"))),
        ("fraction", f"{total}1"),  # three decimals, equal to the total once rounded
    ):
        refused = await _settle(client, psp, order, reference, amount)
        assert refused.status_code == 201, refused.text
        assert refused.json()["outcome"] == "Refused: wrong amount"
        current = (await client.get(order["self"], headers=headers)).json()
        assert (current["status"], current["expires"]) == ("Placed", order["expires"])
        assert await counts(client, stands) == {"sold": 0, "reserved": 1, "remaining": 19}

    settled = await _settle(client, psp, order, "exact", str(total))
    assert settled.json()["outcome"] == "Settled"
    assert await _outcomes(client, order, headers) == ["Refused: wrong amount"] * 3 + ["Settled"]
    assert await _tickets(database_url, order["number"]) == 1


async def test_a_settlement_racing_a_cancellation_has_exactly_one_outcome(
    client, customer, psp, database_url
) -> None:
    _, headers = customer
    stands = await new_section(client)
    orders = [(await place(client, headers, {stands: 2})).json() for _ in range(6)]

    async def race(order: dict, settle_first: bool) -> tuple[httpx.Response, httpx.Response]:
        cancel = client.delete(order["self"], headers=headers)
        settle = _settle(client, psp, order, f"race-{order['number']}", order["total"])
        if settle_first:
            settled, cancelled = await asyncio.gather(settle, cancel)
        else:
            cancelled, settled = await asyncio.gather(cancel, settle)
        return cancelled, settled

    answers = await asyncio.gather(*(race(o, i % 2 == 0) for i, o in enumerate(orders)))

    fulfilled = 0
    for order, (cancelled, settled) in zip(orders, answers, strict=True):
        status = await _status(client, order)
        outcomes = await _outcomes(client, order, psp)
        tickets = await _tickets(database_url, order["number"])
        if status == "Fulfilled":
            fulfilled += 1
            assert (cancelled.status_code, settled.status_code) == (409, 201)
            assert (outcomes, tickets) == (["Settled"], 2)
        else:
            assert status == "Cancelled"
            assert (cancelled.status_code, settled.status_code) == (200, 409)
            assert (outcomes, tickets) == (["Refund due"], 0)
    assert await counts(client, stands) == {
        "sold": 2 * fulfilled,
        "reserved": 0,
        "remaining": 20 - 2 * fulfilled,
    }


async def test_a_settlement_racing_the_end_of_the_hold_has_exactly_one_outcome(
    client, customer, psp, database_url
) -> None:
    _, headers = customer
    stands = await new_section(client)
    orders = [(await place(client, headers, {stands: 1})).json() for _ in range(4)]

    async def at_the_end(order: dict, offset: float) -> httpx.Response:
        expires = datetime.fromisoformat(order["expires"]).timestamp()
        await asyncio.sleep(max(0.0, expires + offset - datetime.now(UTC).timestamp()))
        return await _settle(client, psp, order, f"edge-{order['number']}", order["total"])

    answers = await asyncio.gather(
        *(at_the_end(o, offset) for o, offset in zip(orders, (-0.3, -0.05, 0.05, 0.3), strict=True))
    )

    for order, answer in zip(orders, answers, strict=True):
        status = await _until(lambda o=order: _status(client, o), lambda s: s != "Placed")
        outcomes = await _outcomes(client, order, psp)
        tickets = await _tickets(database_url, order["number"])
        if answer.status_code == 201:
            assert (status, outcomes, tickets) == ("Fulfilled", ["Settled"], 1)
        else:
            assert answer.status_code == 409, answer.text
            assert (status, outcomes, tickets) == ("Timed Out", ["Refund due"], 0)


async def test_money_after_the_end_is_a_refund_due_that_staff_and_the_psp_see(
    client, customer, psp, temporal_client: Client
) -> None:
    _, headers = customer
    _, support_key = await new_user(client, role="support")
    stands = await new_section(client)
    timed_out = (await place(client, headers, {stands: 1})).json()
    cancelled = (await place(client, headers, {stands: 1})).json()
    assert (await client.delete(cancelled["self"], headers=headers)).status_code == 200
    assert await _until(lambda: _status(client, timed_out), lambda s: s != "Placed") == "Timed Out"

    late_http = await _settle(client, psp, timed_out, "late-http", timed_out["total"])
    await temporal_client.get_workflow_handle(f"order-{cancelled['number']}").signal(
        OrderWorkflow.settle,
        Settlement(reference="late-signal", amount=Decimal(str(cancelled["total"]))),
    )
    late_card = await client.post(f"{timed_out['self']}/payments", headers=headers, json=CARD)

    assert late_http.status_code == 409 and "refund" in late_http.json()["message"]
    assert late_card.status_code == 409  # refused before the card is even authorised
    for who in (ADMIN, {"X-API-Key": support_key}, psp, headers):
        assert await _outcomes(client, timed_out, who) == ["Refund due"]
        payments = await _until(
            lambda w=who: client.get(f"{cancelled['self']}/payments", headers=w),
            lambda r: r.json() != [],
        )
        assert [(p["outcome"], p["reference"], p["amount"]) for p in payments.json()] == [
            ("Refund due", "late-signal", cancelled["total"])
        ]
    assert (await _status(client, timed_out), await _status(client, cancelled)) == (
        "Timed Out",
        "Cancelled",
    )


async def test_money_after_the_grace_period_is_still_recorded_or_refused_loudly(
    client, customer, psp, temporal_client: Client
) -> None:
    """Once the workflow has closed, a signal fails for its sender (never silently) and the
    HTTP settlement records the refund due itself."""
    account, headers = customer
    stands = await new_section(client)
    section_id = int(stands.rsplit("/", 1)[1])
    event_id = int(stands.split("/")[2])
    workflows = OrderWorkflows(temporal_client, "orders")
    order = await workflows.place(
        PlaceOrder(
            number=new_order_number(),
            customer_number=account["number"],
            lines=[OrderLine(event_id=event_id, section_id=section_id, quantity=1)],
            reservation_seconds=60,
            settlement_grace_seconds=1,
            max_tickets_per_section=20,
        )
    )
    assert SETTLEMENT_GRACE_SECONDS > 1  # this order's grace is shorter than the service's
    self_uri = f"/orders/{order.number}"
    assert (await client.delete(self_uri, headers=headers)).status_code == 200
    handle = temporal_client.get_workflow_handle(f"order-{order.number}")
    await asyncio.wait_for(handle.result(), 30)

    with pytest.raises(RPCError):
        await handle.signal(
            OrderWorkflow.settle, Settlement(reference="too-late", amount=order.total)
        )
    late = await _settle(
        client, psp, {"self": self_uri}, f"after-grace-{secrets.token_hex(2)}", str(order.total)
    )

    assert late.status_code == 409, late.text
    assert await _outcomes(client, {"self": self_uri}, psp) == ["Refund due"]
