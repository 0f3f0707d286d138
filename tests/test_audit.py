"""The audit (db/audit.py): it finds every kind of difference, and the CLI reports them.

Corruptions are made in a database of their own, created for this module on the session's
PostgreSQL server, so no other test ever sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from config import DEFAULT_FEE_SCHEDULE, parse_fee_schedule
from db import orders
from db.audit import Discrepancy, audit
from db.migrate import migrate
from domain import NewOrder, OrderLine, OrderStatus, PlaceOrder, Settlement
from tests import factories
from tests.conftest import ROOT

FEES = parse_fee_schedule(DEFAULT_FEE_SCHEDULE)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="module")
async def scratch_url(database_url: str) -> AsyncIterator[str]:
    """A freshly migrated database that this module may corrupt at will."""
    name = f"audit_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.InsufficientPrivilegeError:
        pytest.skip("cannot create a scratch database on this server")
    finally:
        await admin.close()
    url = _with_database(database_url, name)
    await migrate(url)
    yield url
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def conn(scratch_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(scratch_url)
    try:
        yield connection
    finally:
        await connection.close()


async def _place(
    conn: asyncpg.Connection, customer: str, section: factories.Section, quantity: int
) -> str:
    now = datetime.now(UTC)
    request = PlaceOrder(
        number=secrets.token_hex(6).upper(),
        customer_number=customer,
        lines=[
            OrderLine(event_id=section.event_id, section_id=section.section_id, quantity=quantity)
        ],
        reservation_seconds=600,
        settlement_grace_seconds=60,
        max_tickets_per_section=20,
    )
    new = NewOrder(request=request, placed=now, hold_expires=now + timedelta(minutes=10))
    return (await orders.place_order(conn, new, FEES)).number


async def _fulfil(conn: asyncpg.Connection, number: str) -> None:
    order = await orders.get_order(conn, number)
    assert order is not None
    settlement = Settlement(reference=f"ref-{number}", amount=order.total)
    _, outcome = await orders.settle_order(conn, number, f"attempt-{number}", settlement)
    assert outcome == "Settled"


async def test_rows_written_by_the_order_sql_agree_with_the_counters(conn) -> None:
    customer = await factories.create_account(conn)
    section = await factories.create_section(conn, await factories.create_event(conn))
    placed = await _place(conn, customer, section, 3)
    fulfilled = await _place(conn, customer, section, 2)
    await _fulfil(conn, fulfilled)
    cancelled = await _place(conn, customer, section, 1)
    await orders.close_order(conn, cancelled, OrderStatus.CANCELLED)
    # A hold that has ended but that nobody has swept yet still counts in `reserved`.
    await conn.execute(
        "UPDATE holds SET expires_at = now() - interval '1 second' WHERE order_number = $1",
        placed,
    )

    assert [d for d in await audit(conn) if d.subject == str(section.section_id)] == []


async def test_every_kind_of_difference_is_reported(conn) -> None:
    customer = await factories.create_account(conn)
    event = await factories.create_event(conn)
    section = await factories.create_section(conn, event, capacity=10)
    elsewhere = await factories.create_section(conn, event)
    sid, eid = str(section.section_id), str(elsewhere.section_id)
    fulfilled = await _place(conn, customer, section, 2)
    await _fulfil(conn, fulfilled)
    misplaced = await _place(conn, customer, section, 1)
    await _fulfil(conn, misplaced)
    cancelled = await _place(conn, customer, section, 3)
    await orders.close_order(conn, cancelled, OrderStatus.CANCELLED)

    # Tickets lost from a fulfilled order, one issued to a cancelled order, one moved to a
    # section its order never asked for.
    await conn.execute("DELETE FROM tickets WHERE order_number = $1", fulfilled)
    await conn.execute(
        "INSERT INTO tickets (serial, order_number, section_id, unit, owner_id)"
        " SELECT $1, $2, $3, 1, customer_id FROM orders WHERE number = $2",
        orders.new_ticket_serial(),
        cancelled,
        section.section_id,
    )
    await conn.execute(
        "UPDATE tickets SET section_id = $2 WHERE order_number = $1",
        misplaced,
        elsewhere.section_id,
    )
    # A hold of the cancelled order unreleased again, and a counter pushed past capacity
    # (which needs the table's own check out of the way first).
    await conn.execute("UPDATE holds SET released_at = NULL WHERE order_number = $1", cancelled)
    check = await conn.fetchval(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'sections'::regclass"
        " AND pg_get_constraintdef(oid) LIKE '%(sold + reserved) <= capacity%'"
    )
    await conn.execute(f'ALTER TABLE sections DROP CONSTRAINT "{check}"')
    await conn.execute("UPDATE sections SET reserved = 9 WHERE id = $1", section.section_id)

    found = {
        (d.kind, d.subject, d.check): (d.expected, d.found)
        for d in await audit(conn)
        if d.subject in (sid, eid, fulfilled, misplaced, cancelled)
    }

    assert found == {
        ("section", sid, "sold"): (1, 3),
        ("section", sid, "reserved"): (3, 9),
        ("section", sid, "sold + reserved"): ("at most 10 (capacity)", 12),
        ("section", eid, "sold"): (1, 0),
        ("order", fulfilled, "tickets of a Fulfilled order"): (2, 0),
        ("order", misplaced, f"tickets in section {eid}"): (0, 1),
        ("order", cancelled, "tickets of a Cancelled order"): (0, 1),
        ("order", cancelled, "units still held by a Cancelled order"): (0, 3),
    }


@contextlib.asynccontextmanager
async def _fresh_database(server_url: str) -> AsyncIterator[str]:
    name = f"cli_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = _with_database(server_url, name)
    try:
        await migrate(url)
        yield url
    finally:
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "db.audit", *args],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("corrupt", [False, True])
async def test_the_cli_exits_1_with_a_readable_report(scratch_url: str, corrupt: bool) -> None:
    async with _fresh_database(scratch_url) as url:
        conn = await asyncpg.connect(url)
        try:
            customer = await factories.create_account(conn)
            section = await factories.create_section(conn, await factories.create_event(conn))
            number = await _place(conn, customer, section, 2)
            late = Settlement(reference="psp-late", amount=1)
            await orders.record_payment(conn, number, "late-1", late, "Refund due")
            if corrupt:
                await conn.execute("UPDATE sections SET sold = 1 WHERE id = $1", section.section_id)
        finally:
            await conn.close()

        result = await _cli(url)

    assert f"order {number}: 1 from signal, reference psp-late" in result.stdout
    if corrupt:
        assert result.returncode == 1, result.stdout + result.stderr
        assert "AUDIT FAILED: 1 difference" in result.stdout
        assert f"section {section.section_id}: sold is 1, the rows say 0" in result.stdout
    else:
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith("audit ok")


async def test_stuck_orders_are_listed_and_can_be_timed_out_by_hand(scratch_url: str) -> None:
    async with _fresh_database(scratch_url) as url:
        conn = await asyncpg.connect(url)
        try:
            customer = await factories.create_account(conn)
            section = await factories.create_section(conn, await factories.create_event(conn))
            stuck = await _place(conn, customer, section, 2)
            live = await _place(conn, customer, section, 1)
            # Its workflow is gone and its hold ended five minutes ago.
            await conn.execute(
                "UPDATE holds SET expires_at = now() - interval '5 minutes'"
                " WHERE order_number = $1",
                stuck,
            )
            await conn.execute(
                "UPDATE orders SET hold_expires = now() - interval '5 minutes' WHERE number = $1",
                stuck,
            )

            listed = await _cli(url)
            closed = await _cli(url, "--time-out", stuck, "--time-out", live)
            again = await _cli(url, "--time-out", stuck)

            status = dict(await conn.fetch("SELECT number, status FROM orders"))
            view = await factories.section_counts(conn, section.section_id)
            counter = await conn.fetchval(
                "SELECT reserved FROM sections WHERE id = $1", section.section_id
            )
        finally:
            await conn.close()

    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "1 order(s) still Placed" in listed.stdout and f"order {stuck}:" in listed.stdout
    assert f"order {live}" not in listed.stdout
    assert f"order {stuck} is now Timed Out" in closed.stdout
    assert f"order {live} is still within its hold: nothing done" in closed.stdout
    assert "still Placed" not in closed.stdout and closed.returncode == 0
    assert f"order {stuck} is already Timed Out: nothing to do" in again.stdout
    assert status == {stuck: "Timed Out", live: "Placed"}
    assert (view["reserved"], counter) == (1, 1)


def test_a_discrepancy_reads_as_a_sentence() -> None:
    item = Discrepancy("section", "42", "reserved", 3, 5)
    assert str(item) == "section 42: reserved is 5, the rows say 3"
