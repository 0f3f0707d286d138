"""SQL of orders: placing, fulfilling, releasing and recording payments.

Every function here is one transaction and is idempotent, because the activities that call
them are retried after crashes. Two rules keep the section counters right under any
concurrency:

* Lock order. A transaction that changes holds or counters first locks the section rows it
  touches with `SELECT ... ORDER BY id FOR UPDATE`. Everybody takes the locks in the same
  order, so two orders over the same sections in opposite orders cannot deadlock.
* Conditional writes. Counters only move through `UPDATE ... WHERE <still allowed>` and
  holds are released only `WHERE released_at IS NULL`, so nothing is sold, reserved or
  released twice even if a read were stale.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal

import asyncpg

from domain import (
    AccountSummary,
    FeeTiers,
    NewOrder,
    Order,
    OrderItem,
    OrderLine,
    OrderStatus,
    PaymentOutcome,
    PaymentRecord,
    PaymentSource,
    Settlement,
    fee_per_ticket,
    section_uri,
)

_SERIAL_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class OrderRejected(Exception):
    """The order cannot be placed as asked; the text names the offending argument."""


def _random_code(length: int) -> str:
    return "".join(secrets.choice(_SERIAL_ALPHABET) for _ in range(length))


def new_ticket_serial() -> str:
    return f"{_random_code(6)}-{_random_code(12)}"


# --- Reading ----------------------------------------------------------------------------

_ORDER_SELECT = """
    SELECT o.number, o.status, o.placed_at, o.hold_expires, o.subtotal, o.fees, o.total,
           a.number AS customer_number, a.username, a.email, a.role, a.verified, a.activated,
           a.first_name, a.last_name, a.title
    FROM orders o JOIN accounts a ON a.id = o.customer_id
"""

_ITEMS_SELECT = """
    SELECT i.order_number, i.number, i.section_id, s.event_id, s.name, s.description,
           i.unit_price, i.unit_fee, i.quantity
    FROM order_items i JOIN sections s ON s.id = i.section_id
    WHERE i.order_number = ANY($1::text[])
    ORDER BY i.order_number, i.section_id
"""


def _order_from_rows(row: asyncpg.Record, items: Iterable[asyncpg.Record]) -> Order:
    return Order(
        number=row["number"],
        status=OrderStatus(row["status"]),
        placed=row["placed_at"],
        expires=row["hold_expires"] if row["status"] == OrderStatus.PLACED else None,
        subtotal=row["subtotal"],
        fees=row["fees"],
        total=row["total"],
        items=[
            OrderItem(
                number=item["number"],
                section=section_uri(item["event_id"], item["section_id"]),
                name=item["name"],
                description=item["description"],
                price=item["unit_price"],
                fee=item["unit_fee"],
                quantity=item["quantity"],
            )
            for item in items
        ],
        customer=AccountSummary(
            number=row["customer_number"],
            username=row["username"],
            email=row["email"],
            role=row["role"],
            verified=row["verified"],
            activated=row["activated"],
            first_name=row["first_name"],
            last_name=row["last_name"],
            title=row["title"],
        ),
    )


async def orders_from_rows(conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> list[Order]:
    """Build orders from `_ORDER_SELECT` rows, fetching all their items in one query."""
    if not rows:
        return []
    items_by_order: dict[str, list[asyncpg.Record]] = {row["number"]: [] for row in rows}
    for item in await conn.fetch(_ITEMS_SELECT, list(items_by_order)):
        items_by_order[item["order_number"]].append(item)
    return [_order_from_rows(row, items_by_order[row["number"]]) for row in rows]


async def get_order(conn: asyncpg.Connection, number: str) -> Order | None:
    row = await conn.fetchrow(_ORDER_SELECT + " WHERE o.number = $1", number)
    if row is None:
        return None
    return (await orders_from_rows(conn, [row]))[0]


# --- Holds and counters -----------------------------------------------------------------


async def _lock_sections(
    conn: asyncpg.Connection, section_ids: Iterable[int]
) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, event_id, name, description, base_price, sales_start, sales_end, active,"
        " capacity, sold, reserved, now() AS checked_at"
        " FROM sections WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE",
        sorted(set(section_ids)),
    )


async def _sweep_lapsed_holds(conn: asyncpg.Connection, section_ids: list[int]) -> None:
    """Release holds whose end has passed and move their units out of `reserved`.

    Availability already ignores such holds (they end on time even with no worker running);
    this keeps the counter equal to the live holds before a conditional update relies on it.
    The caller holds the section locks.
    """
    await conn.execute(
        """
        WITH lapsed AS (
            UPDATE holds SET released_at = now(), release_reason = 'expired'
            WHERE section_id = ANY($1::bigint[]) AND released_at IS NULL AND expires_at <= now()
            RETURNING section_id, quantity
        ), per_section AS (
            SELECT section_id, sum(quantity)::int AS quantity FROM lapsed GROUP BY section_id
        )
        UPDATE sections s SET reserved = s.reserved - p.quantity
        FROM per_section p WHERE s.id = p.section_id
        """,
        section_ids,
    )


async def _release_holds(conn: asyncpg.Connection, number: str, reason: str) -> None:
    """Release what the order still holds (exactly once) and give the units back."""
    await conn.execute(
        """
        WITH released AS (
            UPDATE holds SET released_at = now(), release_reason = $2
            WHERE order_number = $1 AND released_at IS NULL
            RETURNING section_id, quantity
        )
        UPDATE sections s SET reserved = s.reserved - r.quantity
        FROM released r WHERE s.id = r.section_id
        """,
        number,
        reason,
    )


async def _issue_tickets(
    conn: asyncpg.Connection, number: str, owner_id: int, quantities: dict[int, int]
) -> None:
    section_ids: list[int] = []
    units: list[int] = []
    serials: list[str] = []
    for section_id, quantity in sorted(quantities.items()):
        for unit in range(1, quantity + 1):
            section_ids.append(section_id)
            units.append(unit)
            serials.append(new_ticket_serial())
    await conn.execute(
        "INSERT INTO tickets (serial, order_number, section_id, unit, owner_id)"
        " SELECT serial, $1, section_id, unit, $2"
        " FROM unnest($3::text[], $4::bigint[], $5::int[]) AS t(serial, section_id, unit)",
        number,
        owner_id,
        serials,
        section_ids,
        units,
    )


# --- Placing ----------------------------------------------------------------------------


def line_problem(line: OrderLine, section: asyncpg.Record | None, at: datetime) -> str | None:
    """Why this section cannot be ordered at all right now, or None if it can."""
    uri = section_uri(line.event_id, line.section_id)
    if section is None or section["event_id"] != line.event_id:
        return f"There is no section {uri}."
    if not section["active"]:
        return f"Section {uri} is not on sale."
    if not section["sales_start"] <= at < section["sales_end"]:
        return f"Section {uri} is not on sale at this time."
    return None


def shortage(line: OrderLine, remaining: int) -> str:
    uri = section_uri(line.event_id, line.section_id)
    if remaining <= 0:
        return f"Section {uri} is sold out."
    tickets = "ticket" if remaining == 1 else "tickets"
    return f"Section {uri} has only {remaining} {tickets} left."


def late_payment_outcome(source: PaymentSource) -> PaymentOutcome:
    """A payment for an order that has ended: a card authorisation is voided by the API
    there and then; money from a payment service must be refunded by staff."""
    return PaymentOutcome.VOIDED if source is PaymentSource.CARD else PaymentOutcome.REFUND_DUE


def _invalid_items(reason: str) -> OrderRejected:
    return OrderRejected(f"The following arguments have invalid values: items. {reason}")


async def place_order(conn: asyncpg.Connection, new: NewOrder, fee_tiers: FeeTiers) -> Order:
    """Reserve, price and add fees in ONE transaction; a free order is fulfilled in it too.

    Raises OrderRejected (and leaves nothing behind) when any item cannot be had. Running
    it again for an order that exists returns that order unchanged.
    """
    request = new.request
    async with conn.transaction():
        existing = await get_order(conn, request.number)
        if existing is not None:
            return existing

        customer = await conn.fetchrow(
            "SELECT id, activated FROM accounts WHERE number = $1", request.customer_number
        )
        if customer is None or not customer["activated"]:
            raise OrderRejected("The following arguments have invalid values: customer.")

        sections = {
            row["id"]: row
            for row in await _lock_sections(conn, (line.section_id for line in request.lines))
        }
        lines = sorted(request.lines, key=lambda line: line.section_id)
        for line in lines:
            section = sections.get(line.section_id)
            checked_at = section["checked_at"] if section else new.placed
            problem = line_problem(line, section, checked_at)
            if problem is not None:
                raise _invalid_items(problem)

        subtotal = sum(
            (sections[line.section_id]["base_price"] * line.quantity for line in lines),
            Decimal("0.00"),
        )
        unit_fees = {
            line.section_id: fee_per_ticket(sections[line.section_id]["base_price"], fee_tiers)
            for line in lines
        }
        fees = sum((unit_fees[line.section_id] * line.quantity for line in lines), Decimal("0.00"))
        total = subtotal + fees
        free = total == 0

        section_ids = [line.section_id for line in lines]
        await _sweep_lapsed_holds(conn, section_ids)
        if not free:
            held = dict(
                await conn.fetch(
                    "SELECT section_id, sum(quantity)::int FROM holds"
                    " WHERE customer_id = $1 AND section_id = ANY($2::bigint[])"
                    " AND released_at IS NULL AND expires_at > now() GROUP BY section_id",
                    customer["id"],
                    section_ids,
                )
            )
            for line in lines:
                already = held.get(line.section_id, 0)
                if already + line.quantity > request.max_tickets_per_section:
                    raise _invalid_items(
                        f"At most {request.max_tickets_per_section} tickets of section "
                        f"{section_uri(line.event_id, line.section_id)} may be held at once; "
                        f"this account already holds {already}."
                    )

        counter = "sold" if free else "reserved"
        for line in lines:
            taken = await conn.fetchval(
                f"UPDATE sections SET {counter} = {counter} + $2"
                " WHERE id = $1 AND capacity - sold - reserved >= $2 RETURNING id",
                line.section_id,
                line.quantity,
            )
            if taken is None:
                remaining = await conn.fetchval(
                    "SELECT capacity - sold - reserved FROM sections WHERE id = $1", line.section_id
                )
                raise _invalid_items(shortage(line, remaining))

        await conn.execute(
            "INSERT INTO orders (number, customer_id, status, placed_at, hold_expires,"
            " subtotal, fees, total, closed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            request.number,
            customer["id"],
            OrderStatus.FULFILLED if free else OrderStatus.PLACED,
            new.placed,
            None if free else new.hold_expires,
            subtotal,
            fees,
            total,
            new.placed if free else None,
        )
        await conn.execute(
            "INSERT INTO order_items (order_number, section_id, number, quantity, unit_price,"
            " unit_fee) SELECT $1, section_id, $1 || '-' || row_number() OVER (), quantity,"
            " unit_price, unit_fee FROM unnest($2::bigint[], $3::int[], $4::numeric[],"
            " $5::numeric[]) AS t(section_id, quantity, unit_price, unit_fee)",
            request.number,
            section_ids,
            [line.quantity for line in lines],
            [sections[line.section_id]["base_price"] for line in lines],
            [unit_fees[line.section_id] for line in lines],
        )
        if free:
            await _issue_tickets(
                conn, request.number, customer["id"], {ln.section_id: ln.quantity for ln in lines}
            )
        else:
            await conn.execute(
                "INSERT INTO holds (order_number, section_id, customer_id, quantity, expires_at)"
                " SELECT $1, section_id, $2, quantity, $3"
                " FROM unnest($4::bigint[], $5::int[]) AS t(section_id, quantity)",
                request.number,
                customer["id"],
                new.hold_expires,
                section_ids,
                [line.quantity for line in lines],
            )
        order = await get_order(conn, request.number)
        assert order is not None
        return order


async def discard_order(conn: asyncpg.Connection, number: str) -> None:
    """Undo a placement whose answer never reached the customer (the workflow gave up).

    Only a `Placed` order is removed, with its holds released; an order that was already
    answered or fulfilled is left as it is.
    """
    async with conn.transaction():
        status = await conn.fetchval(
            "SELECT status FROM orders WHERE number = $1 FOR UPDATE", number
        )
        if status != OrderStatus.PLACED:
            return
        await _lock_sections(conn, await _order_section_ids(conn, number))
        await _release_holds(conn, number, "cancelled")
        await conn.execute("DELETE FROM holds WHERE order_number = $1", number)
        await conn.execute("DELETE FROM order_items WHERE order_number = $1", number)
        await conn.execute("DELETE FROM payments WHERE order_number = $1", number)
        await conn.execute("DELETE FROM orders WHERE number = $1", number)


async def _order_section_ids(conn: asyncpg.Connection, number: str) -> list[int]:
    return [
        row["section_id"]
        for row in await conn.fetch(
            "SELECT section_id FROM order_items WHERE order_number = $1", number
        )
    ]


# --- Leaving Placed ---------------------------------------------------------------------


async def close_order(conn: asyncpg.Connection, number: str, status: OrderStatus) -> Order:
    """Cancel or time out a `Placed` order: its tickets go back on sale at once.

    An order that has already left `Placed` is returned unchanged, so a retry is harmless.
    """
    reason = {OrderStatus.CANCELLED: "cancelled", OrderStatus.TIMED_OUT: "timed out"}[status]
    async with conn.transaction():
        current = await conn.fetchval(
            "SELECT status FROM orders WHERE number = $1 FOR UPDATE", number
        )
        if current == OrderStatus.PLACED:
            await _lock_sections(conn, await _order_section_ids(conn, number))
            await _release_holds(conn, number, reason)
            await conn.execute(
                "UPDATE orders SET status = $2, closed_at = now() WHERE number = $1",
                number,
                status,
            )
        order = await get_order(conn, number)
        assert order is not None
        return order


async def settle_order(
    conn: asyncpg.Connection, number: str, attempt_id: str, settlement: Settlement
) -> tuple[Order, PaymentOutcome]:
    """Apply a settlement whose amount the workflow has checked: fulfil the order.

    The hold decides: if it is still live, its units move from reserved to sold and one
    ticket per unit is issued. If it lapsed meanwhile (the worker was away past the end of
    the hold), the order is timed out instead and the payment recorded as a refund due (or
    voided, for a card the API is about to void). A card payment that comes after the API
    stopped waiting for it (`answer_by`) is recorded as voided and changes nothing: the API
    has voided its authorisation. A retry with the same attempt_id returns the first outcome.
    """
    async with conn.transaction():
        recorded = await conn.fetchval(
            "SELECT outcome FROM payments WHERE attempt_id = $1", attempt_id
        )
        if recorded is not None:
            order = await get_order(conn, number)
            assert order is not None
            return order, PaymentOutcome(recorded)

        row = await conn.fetchrow(
            "SELECT status, customer_id, now() > $2 AS unanswered FROM orders"
            " WHERE number = $1 FOR UPDATE",
            number,
            settlement.answer_by,
        )
        if row is None:
            raise LookupError(f"order {number} does not exist")
        late = late_payment_outcome(settlement.source)
        if row["unanswered"]:
            # The API stopped waiting and voided the authorisation: nothing was paid.
            outcome = PaymentOutcome.VOIDED
            detail = "The payment was not confirmed in time; the authorisation was voided."
        elif row["status"] != OrderStatus.PLACED:
            outcome, detail = late, f"The order was already {row['status']}."
        else:
            await _lock_sections(conn, await _order_section_ids(conn, number))
            lapsed = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM holds WHERE order_number = $1"
                " AND (released_at IS NOT NULL OR expires_at <= now()))",
                number,
            )
            if lapsed:
                await _release_holds(conn, number, "expired")
                await conn.execute(
                    "UPDATE orders SET status = 'Timed Out', closed_at = now() WHERE number = $1",
                    number,
                )
                outcome, detail = late, "The hold had ended before the payment was applied."
            else:
                sold = await conn.fetch(
                    """
                    WITH sold AS (
                        UPDATE holds SET released_at = now(), release_reason = 'sold'
                        WHERE order_number = $1 AND released_at IS NULL
                        RETURNING section_id, quantity
                    )
                    UPDATE sections s SET reserved = s.reserved - sold.quantity,
                                          sold = s.sold + sold.quantity
                    FROM sold WHERE s.id = sold.section_id
                    RETURNING s.id, sold.quantity
                    """,
                    number,
                )
                await _issue_tickets(
                    conn, number, row["customer_id"], {r["id"]: r["quantity"] for r in sold}
                )
                await conn.execute(
                    "UPDATE orders SET status = 'Fulfilled', closed_at = now() WHERE number = $1",
                    number,
                )
                outcome = (
                    PaymentOutcome.AUTHORISED
                    if settlement.source is PaymentSource.CARD
                    else PaymentOutcome.SETTLED
                )
                detail = None
        await _insert_payment(conn, number, attempt_id, settlement, outcome, detail)
        order = await get_order(conn, number)
        assert order is not None
        return order, outcome


# --- Payments ---------------------------------------------------------------------------


async def _insert_payment(
    conn: asyncpg.Connection,
    number: str,
    attempt_id: str,
    settlement: Settlement,
    outcome: PaymentOutcome,
    detail: str | None,
) -> None:
    await conn.execute(
        "INSERT INTO payments (attempt_id, order_number, reference, amount, source, outcome,"
        " card_last4, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (attempt_id) DO NOTHING",
        attempt_id,
        number,
        settlement.reference,
        settlement.amount,
        settlement.source,
        outcome,
        settlement.card_last4,
        detail,
    )


async def record_payment(
    conn: asyncpg.Connection,
    number: str,
    attempt_id: str,
    settlement: Settlement,
    outcome: PaymentOutcome,
    detail: str | None = None,
) -> None:
    """Record an attempt that changes nothing else (declined, refused, duplicate, late).

    A late payment whose reference is already owed back is a retry of the same money by
    the payment service: recorded as a duplicate, so staff never refund it twice.
    """
    async with conn.transaction():
        if outcome is PaymentOutcome.REFUND_DUE:
            # Serialise late payments of this order so two retries cannot both be "first".
            await conn.execute("SELECT 1 FROM orders WHERE number = $1 FOR UPDATE", number)
            owed = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM payments WHERE order_number = $1"
                " AND reference = $2 AND outcome = $3 AND attempt_id <> $4)",
                number,
                settlement.reference,
                PaymentOutcome.REFUND_DUE,
                attempt_id,
            )
            if owed:
                outcome = PaymentOutcome.DUPLICATE
                detail = "A refund of this reference is already due."
        await _insert_payment(conn, number, attempt_id, settlement, outcome, detail)


async def list_payments(conn: asyncpg.Connection, number: str) -> list[PaymentRecord]:
    rows = await conn.fetch(
        "SELECT reference, created_at, amount, source, outcome, card_last4, detail"
        " FROM payments WHERE order_number = $1 ORDER BY created_at, id",
        number,
    )
    return [
        PaymentRecord(
            reference=row["reference"],
            date=row["created_at"],
            amount=row["amount"],
            source=PaymentSource(row["source"]),
            outcome=PaymentOutcome(row["outcome"]),
            card_last4=row["card_last4"],
            detail=row["detail"],
        )
        for row in rows
    ]


# --- Listing and availability -------------------------------------------------------------


class InvalidPattern(Exception):
    """The `number` filter is not a usable regular expression."""


async def list_orders(
    conn: asyncpg.Connection,
    *,
    customer_number: str | None = None,
    status: OrderStatus | None = None,
    number_pattern: str | None = None,
    descending: bool = True,
    offset: int = 0,
    limit: int = 25,
) -> tuple[int, list[Order]]:
    """One page of orders, newest first unless asked otherwise, and the total count.

    The number filter is a PostgreSQL regular expression run under a short statement
    timeout, so a pathological pattern costs at most that long and then fails as invalid.
    """
    conditions: list[str] = []
    args: list[object] = []
    if customer_number is not None:
        args.append(customer_number)
        conditions.append(f"a.number = ${len(args)}")
    if status is not None:
        args.append(status.value)
        conditions.append(f"o.status = ${len(args)}")
    if number_pattern is not None:
        args.append(number_pattern)
        conditions.append(f"o.number ~ ${len(args)}")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    direction = "DESC" if descending else "ASC"
    try:
        async with conn.transaction(readonly=True):
            await conn.execute("SET LOCAL statement_timeout = '2s'")
            total = await conn.fetchval(
                "SELECT count(*) FROM orders o JOIN accounts a ON a.id = o.customer_id" + where,
                *args,
            )
            rows = await conn.fetch(
                f"{_ORDER_SELECT}{where} ORDER BY o.placed_at {direction}, o.seq {direction}"
                f" LIMIT {int(limit)} OFFSET {int(offset)}",
                *args,
            )
            return total, await orders_from_rows(conn, rows)
    except (asyncpg.InvalidRegularExpressionError, asyncpg.QueryCanceledError) as error:
        if number_pattern is None:
            raise
        raise InvalidPattern(str(error)) from None


async def section_availability(
    conn: asyncpg.Connection, section_ids: list[int]
) -> dict[int, asyncpg.Record]:
    """Sections with what is left counting only live holds: the API's fast pre-check.

    The placing transaction decides for real; this only lets an obviously impossible order
    (unknown section, sold out, not on sale) fail fast without starting a workflow.
    """
    rows = await conn.fetch(
        """
        SELECT s.id, s.event_id, s.active, s.sales_start, s.sales_end,
               s.capacity - s.sold - coalesce(live.quantity, 0) AS remaining
        FROM sections s
        LEFT JOIN LATERAL (
            SELECT sum(h.quantity)::int AS quantity FROM holds h
            WHERE h.section_id = s.id AND h.released_at IS NULL AND h.expires_at > now()
        ) live ON true
        WHERE s.id = ANY($1::bigint[])
        """,
        section_ids,
    )
    return {row["id"]: row for row in rows}
