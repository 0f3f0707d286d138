"""OrderWorkflow on the time-skipping test server, with its real activities and PostgreSQL.

Time skipping lets a 15-minute hold and a 24-hour grace period pass in milliseconds. Per
STACK-NOTES, timer paths use start_workflow + execute_update rather than Update-With-Start
(which does not skip time); the HTTP tests cover Update-With-Start on the dev server.
"""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.orders import OrderActivities
from config import DEFAULT_FEE_SCHEDULE, parse_fee_schedule
from domain import OrderLine, OrderStatus, PaymentOutcome, PaymentSource, PlaceOrder, Settlement
from tests import factories
from workflows.converter import data_converter
from workflows.order import ORDER_CONFLICT, OrderWorkflow

HOLD_SECONDS = 15 * 60


def _binary(name: str) -> str:
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    assert found, f"{name} not found: install the dev dependencies"
    return found


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server"), data_converter=data_converter
    )
    keyword = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    await environment.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=environment.client.namespace,
            search_attributes={
                "OrderStatus": keyword,
                "CustomerNumber": keyword,
                "OrderTotal": IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
            },
        )
    )
    yield environment
    await environment.shutdown()


@pytest.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=5) as created:
        yield created


@pytest.fixture(scope="module")
async def task_queue(env: WorkflowEnvironment, pool: asyncpg.Pool) -> AsyncIterator[str]:
    name = f"orders-{uuid.uuid4()}"
    activities = OrderActivities(pool, parse_fee_schedule(DEFAULT_FEE_SCHEDULE))
    async with Worker(
        env.client, task_queue=name, workflows=[OrderWorkflow], activities=activities.all()
    ):
        yield name


def _request(customer: str, lines: list[OrderLine]) -> PlaceOrder:
    return PlaceOrder(
        number=uuid.uuid4().hex[:12].upper(),
        customer_number=customer,
        lines=lines,
        reservation_seconds=HOLD_SECONDS,
        settlement_grace_seconds=24 * 60 * 60,
        max_tickets_per_section=20,
    )


async def _start(
    client: Client, task_queue: str, customer: str, lines: list[OrderLine]
) -> WorkflowHandle:
    request = _request(customer, lines)
    return await client.start_workflow(
        OrderWorkflow.run, request, id=f"order-{request.number}", task_queue=task_queue
    )


@pytest.fixture
async def paid_section(pool: asyncpg.Pool) -> factories.Section:
    async with pool.acquire() as conn:
        return await factories.create_section(
            conn, await factories.create_event(conn), price="45.00"
        )


@pytest.fixture
async def customer(pool: asyncpg.Pool) -> str:
    async with pool.acquire() as conn:
        return await factories.create_account(conn)


async def _placed(
    env: WorkflowEnvironment,
    task_queue: str,
    customer: str,
    section: factories.Section,
    quantity: int = 2,
) -> tuple[WorkflowHandle, str, Decimal]:
    line = OrderLine(event_id=section.event_id, section_id=section.section_id, quantity=quantity)
    handle = await _start(env.client, task_queue, customer, [line])
    order = await handle.execute_update(OrderWorkflow.place)
    assert order.status is OrderStatus.PLACED
    return handle, order.number, order.total


async def _payments(pool: asyncpg.Pool, number: str) -> list[str]:
    async with pool.acquire() as conn:
        return [
            r["outcome"]
            for r in await conn.fetch(
                "SELECT outcome FROM payments WHERE order_number = $1 ORDER BY id", number
            )
        ]


async def _tickets(pool: asyncpg.Pool, number: str) -> int:
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT count(*) FROM tickets WHERE order_number = $1", number)


async def _counts(pool: asyncpg.Pool, section: factories.Section) -> dict[str, int]:
    async with pool.acquire() as conn:
        return await factories.section_counts(conn, section.section_id)


async def test_hold_ends_and_tickets_go_back_on_sale(env, task_queue, pool, customer, paid_section):
    handle, _, total = await _placed(env, task_queue, customer, paid_section, quantity=3)
    assert total == Decimal("137.97")  # 3 x 45.00 + 3 x 0.99
    assert (await _counts(pool, paid_section))["reserved"] == 3

    final = await handle.result()  # skips the hold and the grace period

    assert final.status is OrderStatus.TIMED_OUT
    assert await _counts(pool, paid_section) == {
        "capacity": 20,
        "sold": 0,
        "reserved": 0,
        "remaining": 20,
    }


async def test_settle_signal_fulfils_once_and_a_duplicate_changes_nothing(
    env, task_queue, pool, customer, paid_section
):
    handle, number, total = await _placed(env, task_queue, customer, paid_section, quantity=2)
    settlement = Settlement(reference="pay-1", amount=total)
    await handle.signal(OrderWorkflow.settle, settlement)
    await handle.signal(OrderWorkflow.settle, settlement)

    final = await handle.result()

    assert final.status is OrderStatus.FULFILLED
    assert await _tickets(pool, number) == 2
    assert await _payments(pool, number) == [PaymentOutcome.SETTLED, PaymentOutcome.DUPLICATE]
    assert await _counts(pool, paid_section) == {
        "capacity": 20,
        "sold": 2,
        "reserved": 0,
        "remaining": 18,
    }


async def test_wrong_amount_is_refused_and_the_order_stays_placed(
    env, task_queue, pool, customer, paid_section
):
    handle, number, total = await _placed(env, task_queue, customer, paid_section)
    await handle.signal(OrderWorkflow.settle, Settlement(reference="short", amount=total - 1))
    await handle.signal(
        OrderWorkflow.settle, Settlement(reference="fraction", amount=total + Decimal("0.001"))
    )
    await env.sleep(60)
    assert (await handle.query(OrderWorkflow.order)).status is OrderStatus.PLACED

    final = await handle.result()

    assert final.status is OrderStatus.TIMED_OUT
    assert await _payments(pool, number) == [PaymentOutcome.WRONG_AMOUNT] * 2
    assert await _tickets(pool, number) == 0


async def test_cancel_then_settle_records_a_refund_due(
    env, task_queue, pool, customer, paid_section
):
    handle, number, total = await _placed(env, task_queue, customer, paid_section)
    cancelled = await handle.execute_update(OrderWorkflow.cancel)
    assert cancelled.status is OrderStatus.CANCELLED
    assert (await _counts(pool, paid_section))["reserved"] == 0

    await handle.signal(OrderWorkflow.settle, Settlement(reference="late", amount=total))
    final = await handle.result()

    assert final.status is OrderStatus.CANCELLED
    assert await _payments(pool, number) == [PaymentOutcome.REFUND_DUE]
    assert await _tickets(pool, number) == 0


async def test_cancel_after_settle_is_refused(env, task_queue, pool, customer, paid_section):
    handle, number, total = await _placed(env, task_queue, customer, paid_section)
    result = await handle.execute_update(
        OrderWorkflow.apply_payment,
        Settlement(reference="p", amount=total, source=PaymentSource.HTTP),
    )
    assert result.outcome is PaymentOutcome.SETTLED

    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(OrderWorkflow.cancel)

    assert isinstance(refused.value.cause, ApplicationError)
    assert refused.value.cause.type == ORDER_CONFLICT
    assert (await handle.result()).status is OrderStatus.FULFILLED
    assert await _tickets(pool, number) == 2


async def test_settle_at_the_moment_the_hold_ends_has_exactly_one_outcome(
    env, task_queue, pool, customer, paid_section
):
    handle, number, total = await _placed(env, task_queue, customer, paid_section)
    await env.sleep(HOLD_SECONDS)  # the timer and the signal now race
    await handle.signal(OrderWorkflow.settle, Settlement(reference="edge", amount=total))

    final = await handle.result()

    payments = await _payments(pool, number)
    tickets = await _tickets(pool, number)
    counts = await _counts(pool, paid_section)
    if final.status is OrderStatus.FULFILLED:
        assert (payments, tickets, counts["sold"]) == ([PaymentOutcome.SETTLED], 2, 2)
    else:
        assert final.status is OrderStatus.TIMED_OUT
        assert (payments, tickets, counts["sold"]) == ([PaymentOutcome.REFUND_DUE], 0, 0)
    assert counts["reserved"] == 0


async def test_rejected_placement_leaves_nothing_behind(env, task_queue, pool, customer):
    async with pool.acquire() as conn:
        tiny = await factories.create_section(conn, await factories.create_event(conn), capacity=1)
    line = OrderLine(event_id=tiny.event_id, section_id=tiny.section_id, quantity=2)
    # The 400 the caller gets is checked over HTTP (test_orders_http); here, what remains.
    handle = await _start(env.client, task_queue, customer, [line])

    assert await handle.result() is None
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval("SELECT count(*) FROM orders WHERE number = $1", handle.id[6:]) == 0
        )
    assert await _counts(pool, tiny) == {"capacity": 1, "sold": 0, "reserved": 0, "remaining": 1}


async def test_free_order_is_fulfilled_at_placement(env, task_queue, pool, customer):
    async with pool.acquire() as conn:
        free = await factories.create_section(
            conn, await factories.create_event(conn), price="0.00"
        )
    line = OrderLine(event_id=free.event_id, section_id=free.section_id, quantity=4)
    handle = await _start(env.client, task_queue, customer, [line])

    order = await handle.execute_update(OrderWorkflow.place)

    assert (order.status, order.total, order.fees) == (OrderStatus.FULFILLED, 0, 0)
    assert await _tickets(pool, order.number) == 4
    assert await _counts(pool, free) == {"capacity": 20, "sold": 4, "reserved": 0, "remaining": 16}


async def test_an_unrecordable_amount_cannot_block_the_order(
    env, task_queue, pool, customer, paid_section
):
    handle, number, total = await _placed(env, task_queue, customer, paid_section)
    # Valid JSON, but no PostgreSQL numeric: the signal is dropped, not retried forever.
    await handle.signal("settle", {"reference": "absurd", "amount": "1e-20000"})
    await handle.signal(OrderWorkflow.settle, Settlement(reference="good", amount=total))

    final = await handle.result()

    assert final.status is OrderStatus.FULFILLED
    assert await _payments(pool, number) == [PaymentOutcome.SETTLED]
