"""Crashes, restarts and outages on a private stack: nothing is sold twice or lost.

Every test here kills, stops or restarts a part of the service, so they run on a stack of
their own (tests/stack.py), never on the session's servers. The Temporal dev server keeps
its data in a SQLite file so that it can be restarted with orders pending. Each test ends
with the audit (db/audit.py): the section counters must match the rows exactly.

To stop an activity at a chosen point the test takes a row lock the activity needs (the
section row for a placement, the order row for a settlement) and waits until PostgreSQL
shows the activity's backend waiting for it.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import httpx
import pytest

from api.routes.orders import new_order_number
from domain import Order, OrderLine, PlaceOrder, Settlement
from tests import factories
from tests.http_helpers import CARD
from tests.stack import ADMIN, Customer, Stack, eventually, lock_waiters, new_key, started_stack
from workflows.client import ANSWER_TIMEOUT, OrderWorkflows

FINAL = ("Fulfilled", "Cancelled", "Timed Out")
# A worker killed in the middle of a workflow task leaves it to the task's timeout (10 s)
# before another worker gets it; allow that plus the retries.
RECOVERY = 40.0


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async for started in started_stack(
        tmp_path_factory.mktemp("resilience"), reservation_seconds=60, temporal_on_disk=True
    ):
        yield started


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with stack.http(timeout=ANSWER_TIMEOUT.total_seconds() + 30) as client:
        yield client


@pytest.fixture(autouse=True)
async def audited(stack: Stack) -> AsyncIterator[None]:
    """Every test leaves a running stack whose counters match the rows exactly."""
    yield
    for part in (stack.worker, stack.api):
        if not part.is_running():
            part.start()
    if not stack.postgres.is_running():
        stack.postgres.start()
    assert await stack.audit() == []


@pytest.fixture
async def customer(stack: Stack) -> Customer:
    return (await stack.customers(1))[0]


@pytest.fixture
async def payments_key(http: httpx.AsyncClient) -> dict[str, str]:
    response = await http.post(
        "/integration-keys", headers=ADMIN, json={"name": "psp", "level": "payments"}
    )
    assert response.status_code == 201, response.text
    return {"X-API-Key": response.json()["key"]}


class RowLock:
    """An open transaction holding a row lock that an activity will queue behind."""

    def __init__(self, stack: Stack, sql: str, *args: object) -> None:
        self._stack, self._sql, self._args = stack, sql, args
        self._conn: asyncpg.Connection | None = None
        self._tx: asyncpg.transaction.Transaction | None = None

    async def __aenter__(self) -> RowLock:
        self._conn = await self._stack.connect()
        self._tx = self._conn.transaction()
        await self._tx.start()
        await self._conn.execute(self._sql, *self._args)
        return self

    async def release(self) -> None:
        conn, tx = self._conn, self._tx
        self._conn = self._tx = None
        if conn is None or tx is None:
            return
        try:
            await tx.rollback()
            await conn.close()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            conn.terminate()  # the server ended the session: nothing left to roll back

    async def __aexit__(self, *exc: object) -> None:
        await self.release()

    async def until_waited_on(self) -> None:
        await eventually(
            lambda: lock_waiters(self._stack), lambda n: n >= 1, within=20, what="a lock waiter"
        )


def section_lock(stack: Stack, section: factories.Section) -> RowLock:
    return RowLock(stack, "SELECT 1 FROM sections WHERE id = $1 FOR UPDATE", section.section_id)


def order_lock(stack: Stack, number: str) -> RowLock:
    return RowLock(stack, "SELECT 1 FROM orders WHERE number = $1 FOR UPDATE", number)


async def place_http(
    http: httpx.AsyncClient, customer: Customer, items: dict[str, int], key: str | None = None
) -> httpx.Response:
    headers = customer.headers | ({"Idempotency-Key": key} if key else {})
    return await http.post("/orders", headers=headers, json={"items": items})


async def place_direct(
    stack: Stack,
    customer: Customer,
    section: factories.Section,
    quantity: int,
    *,
    hold_seconds: int,
    grace_seconds: int = 30,
) -> Order:
    """Place as the API does (Update-With-Start), with a hold length of the test's choosing."""
    workflows = OrderWorkflows(await stack.temporal_client(), "orders")
    return await workflows.place(
        PlaceOrder(
            number=new_order_number(),
            customer_number=customer.number,
            lines=[
                OrderLine(
                    event_id=section.event_id, section_id=section.section_id, quantity=quantity
                )
            ],
            reservation_seconds=hold_seconds,
            settlement_grace_seconds=grace_seconds,
            max_tickets_per_section=20,
        )
    )


async def settle_signal(stack: Stack, number: str, reference: str, amount: Decimal) -> None:
    workflows = OrderWorkflows(await stack.temporal_client(), "orders")
    await workflows.signal_settle(number, Settlement(reference=reference, amount=amount))


async def status_of(stack: Stack, number: str, accept: tuple[str, ...], within: float) -> str:
    return await eventually(
        lambda: stack.order_status(number),
        lambda status: status in accept,
        within=within,
        what=f"order {number} in {accept}",
    )


async def facts(stack: Stack, number: str) -> dict[str, object]:
    """What the database says about an order: status, tickets, holds, payments."""
    conn = await stack.connect()
    try:
        return {
            "status": await conn.fetchval("SELECT status FROM orders WHERE number = $1", number),
            "tickets": await conn.fetchval(
                "SELECT count(*) FROM tickets WHERE order_number = $1", number
            ),
            "unreleased": await conn.fetchval(
                "SELECT count(*) FROM holds WHERE order_number = $1 AND released_at IS NULL",
                number,
            ),
            "payments": [
                row["outcome"]
                for row in await conn.fetch(
                    "SELECT outcome FROM payments WHERE order_number = $1 ORDER BY id", number
                )
            ],
        }
    finally:
        await conn.close()


async def section_view(http: httpx.AsyncClient, section: factories.Section) -> dict[str, int]:
    body = (await http.get(section.uri, headers=ADMIN)).json()
    return {key: body[key] for key in ("sold", "reserved", "remaining")}


# --- 2. A worker killed with SIGKILL --------------------------------------------------------


async def test_worker_killed_during_placement_still_answers_and_places_once(
    stack: Stack, http: httpx.AsyncClient, customer: Customer
) -> None:
    section = await stack.section()
    key = new_key()
    async with section_lock(stack, section) as lock:
        answer = asyncio.create_task(place_http(http, customer, {section.uri: 3}, key))
        await lock.until_waited_on()  # the placing transaction is inside PostgreSQL
        stack.worker.kill()
        await lock.release()  # its connection is gone: PostgreSQL rolls it back
        stack.worker.start()
        response = await asyncio.wait_for(answer, RECOVERY)

    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "Placed"
    again = await place_http(http, customer, {section.uri: 3}, key)
    assert again.status_code == 201 and again.json()["number"] == order["number"]
    assert await section_view(http, section) == {"sold": 0, "reserved": 3, "remaining": 17}
    assert (
        await stack.fetchval(
            "SELECT count(*) FROM orders o JOIN accounts a ON a.id = o.customer_id"
            " WHERE a.number = $1",
            customer.number,
        )
        == 1
    )


async def test_callers_cut_off_by_a_dead_worker_get_a_clear_answer_not_a_hang(
    stack: Stack, http: httpx.AsyncClient, customer: Customer
) -> None:
    """No worker at all for longer than the API waits: a placement answers 503 "retry with
    the same Idempotency-Key" (and the retry gets the order), and a card payment answers 503
    after voiding the authorisation, so that payment must never fulfil the order later."""
    section = await stack.section()
    payer = (await stack.customers(1))[0]
    unpaid = (await place_http(http, payer, {section.uri: 1})).json()
    key = new_key()
    stack.worker.kill()

    started = time.monotonic()
    cut_off, card = await asyncio.gather(
        place_http(http, customer, {section.uri: 2}, key),
        http.post(f"{unpaid['self']}/payments", headers=payer.headers, json=CARD),
    )
    waited = time.monotonic() - started

    assert waited < ANSWER_TIMEOUT.total_seconds() + 5, f"answered only after {waited:.1f} s"
    assert cut_off.status_code == 503, cut_off.text
    assert "Idempotency-Key" in cut_off.json()["message"]
    assert int(cut_off.headers["Retry-After"]) > 0
    assert card.status_code == 503, card.text

    stack.worker.start()
    retried = await place_http(http, customer, {section.uri: 2}, key)
    assert retried.status_code == 201, retried.text
    replayed = await place_http(http, customer, {section.uri: 2}, key)
    assert replayed.json()["number"] == retried.json()["number"]

    # The voided authorisation reaches the workflow once a worker is back: recorded, and
    # the order is still waiting for a payment that counts.
    await eventually(
        lambda: facts(stack, unpaid["number"]),
        lambda f: f["payments"] != [],
        within=RECOVERY,
        what="the late card payment recorded",
    )
    assert await facts(stack, unpaid["number"]) == {
        "status": "Placed",
        "tickets": 0,
        "unreleased": 1,
        "payments": ["Voided"],
    }
    paid = await http.post(f"{unpaid['self']}/payments", headers=payer.headers, json=CARD)
    assert paid.status_code == 201 and paid.json()["status"] == "Authorised", paid.text
    assert (await facts(stack, unpaid["number"]))["status"] == "Fulfilled"
    assert await section_view(http, section) == {"sold": 1, "reserved": 2, "remaining": 17}


async def test_worker_killed_between_accepted_settlement_and_fulfilment(
    stack: Stack, http: httpx.AsyncClient, payments_key: dict[str, str]
) -> None:
    """A settle signal, an HTTP settlement and a card payment are each accepted by the
    workflow, then the worker dies inside the fulfilling transaction. After a restart each
    order is fulfilled exactly once and the HTTP callers get their answer."""
    section = await stack.section()
    by_signal, by_http, by_card = await stack.customers(3)
    orders = {}
    for who in (by_signal, by_http, by_card):
        response = await place_http(http, who, {section.uri: 2})
        assert response.status_code == 201, response.text
        orders[who] = response.json()

    locks = [order_lock(stack, orders[who]["number"]) for who in orders]
    for lock in locks:
        await lock.__aenter__()
    try:
        await settle_signal(
            stack,
            orders[by_signal]["number"],
            "psp-signal",
            Decimal(str(orders[by_signal]["total"])),
        )
        settled = asyncio.create_task(
            http.post(
                f"{orders[by_http]['self']}/settlements",
                headers=payments_key,
                json={"reference": "psp-http", "amount": orders[by_http]["total"]},
            )
        )
        paid = asyncio.create_task(
            http.post(f"{orders[by_card]['self']}/payments", headers=by_card.headers, json=CARD)
        )
        await eventually(
            lambda: lock_waiters(stack), lambda n: n >= 3, within=20, what="three settlements"
        )
        stack.worker.kill()
    finally:
        for lock in locks:
            await lock.release()
    stack.worker.start()

    settled_answer, paid_answer = await asyncio.wait_for(asyncio.gather(settled, paid), RECOVERY)
    assert settled_answer.status_code == 201, settled_answer.text
    assert settled_answer.json()["outcome"] == "Settled"
    assert paid_answer.status_code == 201, paid_answer.text
    assert paid_answer.json()["status"] == "Authorised"
    await status_of(stack, orders[by_signal]["number"], FINAL, RECOVERY)
    outcomes = {by_signal: "Settled", by_http: "Settled", by_card: "Authorised"}
    for who, order in orders.items():
        assert await facts(stack, order["number"]) == {
            "status": "Fulfilled",
            "tickets": 2,
            "unreleased": 0,
            "payments": [outcomes[who]],
        }
    assert await section_view(http, section) == {"sold": 6, "reserved": 0, "remaining": 14}


async def test_a_fulfilment_committed_but_never_reported_is_not_done_twice(
    stack: Stack, http: httpx.AsyncClient, customer: Customer
) -> None:
    """The worst moment to die: the fulfilling transaction has committed, but Temporal never
    heard of it (the server is down and then the worker dies). The next worker runs the
    step again, which must find it done: one payment, one set of tickets."""
    section = await stack.section()
    order = (await place_http(http, customer, {section.uri: 2})).json()
    async with order_lock(stack, order["number"]) as lock:
        await settle_signal(stack, order["number"], "psp-once", Decimal(str(order["total"])))
        await lock.until_waited_on()
        stack.temporal.kill()
    await status_of(stack, order["number"], FINAL, 20)  # committed, reported to nobody
    stack.worker.kill()
    await asyncio.to_thread(stack.temporal.start)
    stack.worker.start()

    client = await stack.temporal_client()
    handle = client.get_workflow_handle(f"order-{order['number']}")
    await eventually(
        lambda: handle.describe(),
        lambda d: d.raw_description.pending_workflow_task.SerializeToString() == b"",
        within=RECOVERY,
        what="the workflow to have caught up",
    )
    history = await handle.fetch_history()
    markers = [e for e in history.events if e.HasField("marker_recorded_event_attributes")]
    assert len(markers) == 2  # place, then settle (run again, once recorded)
    assert await facts(stack, order["number"]) == {
        "status": "Fulfilled",
        "tickets": 2,
        "unreleased": 0,
        "payments": ["Settled"],
    }
    assert await section_view(http, section) == {"sold": 2, "reserved": 0, "remaining": 18}


# --- 5. No worker at all while holds end ----------------------------------------------------


async def test_holds_end_while_no_worker_runs_and_orders_time_out_when_one_returns(
    stack: Stack, http: httpx.AsyncClient, customer: Customer
) -> None:
    section = await stack.section(capacity=5)
    quiet = await place_direct(stack, customer, section, 2, hold_seconds=3)
    paid_late = await place_direct(stack, customer, section, 3, hold_seconds=3)
    assert await section_view(http, section) == {"sold": 0, "reserved": 5, "remaining": 0}
    # And one that was cancelled and whose grace period ends while no worker runs.
    other_section = await stack.section()
    ending = await place_direct(stack, customer, other_section, 1, hold_seconds=60, grace_seconds=2)
    cancelled = await http.delete(f"/orders/{ending.number}", headers=customer.headers)
    assert cancelled.status_code == 200, cancelled.text
    stack.worker.kill()

    # The holds end on time with nobody to act on them: the tickets are on sale again.
    back = await eventually(
        lambda: section_view(http, section), lambda v: v["remaining"] == 5, within=10
    )
    assert back == {"sold": 0, "reserved": 0, "remaining": 5}
    # A payment service settles after the end of the hold, before any worker is back; and
    # another one after the grace period of a cancelled order ran out.
    await settle_signal(stack, paid_late.number, "psp-late", paid_late.total)
    await settle_signal(stack, ending.number, "psp-after-grace", ending.total)
    assert await stack.order_status(quiet.number) == "Placed"  # nobody has closed it yet

    stack.worker.start()
    await status_of(stack, quiet.number, FINAL, RECOVERY)
    await status_of(stack, paid_late.number, FINAL, RECOVERY)
    assert await facts(stack, quiet.number) == {
        "status": "Timed Out",
        "tickets": 0,
        "unreleased": 0,
        "payments": [],
    }
    assert await facts(stack, paid_late.number) == {
        "status": "Timed Out",
        "tickets": 0,
        "unreleased": 0,
        "payments": ["Refund due"],
    }
    # The timer that ends the grace period and the payment reach the workflow together:
    # the payment is recorded, never dropped.
    await eventually(
        lambda: facts(stack, ending.number),
        lambda f: f["payments"] != [],
        within=RECOVERY,
        what="the payment after the grace period recorded",
    )
    assert await facts(stack, ending.number) == {
        "status": "Cancelled",
        "tickets": 0,
        "unreleased": 0,
        "payments": ["Refund due"],
    }
    # The section sells normally afterwards: all five tickets, exactly.
    other = (await stack.customers(1))[0]
    full = await place_http(http, other, {section.uri: 5})
    assert full.status_code == 201, full.text
    assert await section_view(http, section) == {"sold": 0, "reserved": 5, "remaining": 0}


# --- 3. The Temporal server restarted with orders pending ------------------------------------


async def test_temporal_restart_with_pending_orders_ends_their_holds(
    stack: Stack, http: httpx.AsyncClient, customer: Customer
) -> None:
    section = await stack.section()
    during = await place_direct(stack, customer, section, 2, hold_seconds=3)
    after = await place_direct(stack, customer, section, 1, hold_seconds=14)
    assert after.expires is not None

    stack.temporal.kill()  # a crash: its SQLite file is all that is left
    # Reads and the tickets coming back on sale need only PostgreSQL.
    await eventually(
        lambda: section_view(http, section),
        lambda v: v == {"sold": 0, "reserved": 1, "remaining": 19},
        within=10,
    )
    await asyncio.to_thread(stack.temporal.start)

    # The hold that ended while the server was down: closed as soon as it is back.
    await status_of(stack, during.number, FINAL, RECOVERY)
    assert (await facts(stack, during.number))["status"] == "Timed Out"
    # The other one at the right time: not before its end, soon after it.
    assert await stack.order_status(after.number) == "Placed"
    await status_of(stack, after.number, FINAL, RECOVERY)
    closed = await stack.fetchval("SELECT closed_at FROM orders WHERE number = $1", after.number)
    assert closed >= after.expires
    assert (closed - after.expires).total_seconds() < 15
    assert stack.worker.is_running(), "the worker must ride out a Temporal restart"
    assert await section_view(http, section) == {"sold": 0, "reserved": 0, "remaining": 20}


# --- 4. PostgreSQL unreachable for a while --------------------------------------------------


async def test_postgres_outage_is_a_503_and_workflows_resume(
    stack: Stack, http: httpx.AsyncClient, customer: Customer
) -> None:
    section, busy = await stack.section(), await stack.section()
    response = await place_http(http, customer, {section.uri: 2})
    assert response.status_code == 201, response.text
    paid = response.json()
    lapsing = await place_direct(stack, customer, section, 1, hold_seconds=3)
    assert lapsing.expires is not None
    # A placement caught inside its transaction when the database goes away.
    lock = section_lock(stack, busy)
    await lock.__aenter__()
    in_flight = asyncio.create_task(place_http(http, customer, {busy.uri: 3}))
    await lock.until_waited_on()

    stack.postgres.stop("fast")  # ends every session: the lock's and the placement's
    await lock.release()
    try:
        for answer in (
            await http.get(paid["self"], headers=customer.headers),
            await place_http(http, customer, {section.uri: 1}),
            await http.delete(paid["self"], headers=customer.headers),
            await http.get(section.uri, headers=ADMIN),
            await http.get("/readyz"),
        ):
            assert answer.status_code == 503, answer.text
            assert int(answer.headers["Retry-After"]) > 0
            assert answer.json()["message"] == answer.json()["error"]
        # A payment service settles meanwhile; the workflow has to wait for the database.
        await settle_signal(stack, paid["number"], "psp-outage", Decimal(str(paid["total"])))
        # Stay down until the short hold has ended.
        await asyncio.sleep(max(0.0, lapsing.expires.timestamp() + 0.5 - time.time()))
    finally:
        stack.postgres.start()

    placed = await asyncio.wait_for(in_flight, RECOVERY)
    assert placed.status_code == 201, placed.text  # its activity retried until it got through
    await status_of(stack, paid["number"], FINAL, RECOVERY)
    await status_of(stack, lapsing.number, FINAL, RECOVERY)
    assert await facts(stack, paid["number"]) == {
        "status": "Fulfilled",
        "tickets": 2,
        "unreleased": 0,
        "payments": ["Settled"],
    }
    assert (await facts(stack, lapsing.number))["status"] == "Timed Out"
    assert (await http.get("/readyz")).status_code == 200
    again = await place_http(http, customer, {section.uri: 1})
    assert again.status_code == 201, again.text
    assert await section_view(http, section) == {"sold": 2, "reserved": 1, "remaining": 17}
    assert await section_view(http, busy) == {"sold": 0, "reserved": 3, "remaining": 17}


# --- 8. SIGTERM drains ------------------------------------------------------------------------


async def test_sigterm_lets_the_worker_finish_its_activity(
    stack: Stack, http: httpx.AsyncClient, customer: Customer
) -> None:
    section = await stack.section()
    order = (await place_http(http, customer, {section.uri: 2})).json()
    async with order_lock(stack, order["number"]) as lock:
        await settle_signal(stack, order["number"], "psp-drain", Decimal(str(order["total"])))
        await lock.until_waited_on()
        assert stack.worker.process is not None
        stack.worker.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(1)
        assert stack.worker.is_running(), "the worker left with an activity in flight"
    code = await asyncio.to_thread(stack.worker.process.wait, 30)

    assert code == 0
    # Finished by the draining worker itself: no other worker has run since.
    assert await facts(stack, order["number"]) == {
        "status": "Fulfilled",
        "tickets": 2,
        "unreleased": 0,
        "payments": ["Settled"],
    }


async def test_sigterm_lets_the_api_finish_its_requests(
    stack: Stack, http: httpx.AsyncClient, customer: Customer
) -> None:
    section = await stack.section()
    async with section_lock(stack, section) as lock:
        answer = asyncio.create_task(place_http(http, customer, {section.uri: 2}))
        await lock.until_waited_on()
        assert stack.api.process is not None
        log_offset = stack.api.log_path.stat().st_size
        stack.api.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(1)
        assert stack.api.is_running(), "the API left with a request in flight"
    response = await asyncio.wait_for(answer, 30)
    code = await asyncio.to_thread(stack.api.process.wait, 30)

    assert response.status_code == 201, response.text
    # uvicorn re-raises the signal once it has shut down cleanly, so -15 is a clean exit.
    assert code in (0, -signal.SIGTERM)
    with stack.api.log_path.open() as log:
        log.seek(log_offset)
        assert "Finished server process" in log.read()
    stack.api.start()
    assert await section_view(http, section) == {"sold": 0, "reserved": 2, "remaining": 18}
