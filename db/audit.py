"""Audit: recount every section from the order, hold and ticket rows and compare.

The section counters (`sold`, `reserved`) are changed only by conditional UPDATEs in the
same transaction as the rows they summarise, so at every commit they must equal a recount:

* `sold` = tickets issued in the section;
* `reserved` = units of unreleased holds (a hold whose end has passed but that no
  transaction has swept yet still counts: the counter includes it until the sweep);
* `sold + reserved <= capacity`.

And per order: a `Fulfilled` order has exactly one ticket per unit ordered, no other order
has tickets, and only a `Placed` order may still have unreleased holds.

Everything is read in one REPEATABLE READ snapshot, so the audit is exact while orders
are being placed and settled. Run it any time: `python -m db.audit` (DATABASE_URL from the
environment or `.env`) prints a report and exits 1 when anything differs, 0 otherwise. The
report also lists the payments to refund and the orders still `Placed` well after their hold
ended (no worker has closed them); `python -m db.audit --time-out NUMBER` closes such an
order the way its workflow would, for when that workflow is gone (terminated by hand, say).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass

import asyncpg

from db import orders
from domain import OrderStatus

# A Placed order this long past the end of its hold counts as stuck: its workflow should
# have closed it within seconds.
STUCK_AFTER_SECONDS = 60


@dataclass(frozen=True)
class Discrepancy:
    """One thing the rows and the counters disagree on."""

    kind: str  # "section" or "order"
    subject: str  # the section id or the order number
    check: str  # what was compared, e.g. "sold", "tickets", "unreleased holds"
    expected: int | str  # what the rows say
    found: int | str  # what is recorded

    def __str__(self) -> str:
        return (
            f"{self.kind} {self.subject}: {self.check} is {self.found}, "
            f"the rows say {self.expected}"
        )


@dataclass(frozen=True)
class RefundDue:
    """A payment that arrived after its order ended: staff must refund it."""

    order_number: str
    reference: str | None
    amount: str
    source: str
    recorded: str


@dataclass(frozen=True)
class StuckOrder:
    """An order still `Placed` well after its hold ended: no worker has closed it."""

    number: str
    expired: str
    overdue_seconds: int


_SECTIONS = """
    SELECT s.id, s.capacity, s.sold, s.reserved,
           coalesce(t.issued, 0) AS issued, coalesce(h.held, 0) AS held
    FROM sections s
    LEFT JOIN (SELECT section_id, count(*)::int AS issued FROM tickets GROUP BY section_id) t
           ON t.section_id = s.id
    LEFT JOIN (SELECT section_id, sum(quantity)::int AS held FROM holds
               WHERE released_at IS NULL GROUP BY section_id) h
           ON h.section_id = s.id
    WHERE s.sold <> coalesce(t.issued, 0)
       OR s.reserved <> coalesce(h.held, 0)
       OR s.sold + s.reserved > s.capacity
    ORDER BY s.id
"""

# Orders whose tickets do not match their status: Fulfilled needs one per unit ordered,
# every other status none.
_ORDER_TICKETS = """
    SELECT o.number, o.status, coalesce(i.units, 0) AS units, coalesce(t.issued, 0) AS issued
    FROM orders o
    LEFT JOIN (SELECT order_number, sum(quantity)::int AS units FROM order_items
               GROUP BY order_number) i ON i.order_number = o.number
    LEFT JOIN (SELECT order_number, count(*)::int AS issued FROM tickets
               GROUP BY order_number) t ON t.order_number = o.number
    WHERE (o.status = 'Fulfilled' AND coalesce(t.issued, 0) <> coalesce(i.units, 0))
       OR (o.status <> 'Fulfilled' AND coalesce(t.issued, 0) <> 0)
    ORDER BY o.number
"""

# Tickets of a fulfilled order in a section it did not ask for, or more than it asked for
# there (other orders must have none at all, which the check above covers).
_ITEM_TICKETS = """
    SELECT t.order_number, t.section_id, count(*)::int AS issued,
           coalesce(max(i.quantity), 0) AS quantity
    FROM tickets t
    JOIN orders o ON o.number = t.order_number AND o.status = 'Fulfilled'
    LEFT JOIN order_items i ON i.order_number = t.order_number AND i.section_id = t.section_id
    GROUP BY t.order_number, t.section_id
    HAVING count(*) <> coalesce(max(i.quantity), 0)
    ORDER BY t.order_number, t.section_id
"""

_HOLDS_AFTER_THE_END = """
    SELECT o.number, o.status, sum(h.quantity)::int AS held
    FROM holds h JOIN orders o ON o.number = h.order_number
    WHERE h.released_at IS NULL AND o.status <> 'Placed'
    GROUP BY o.number, o.status
    ORDER BY o.number
"""


async def audit(conn: asyncpg.Connection) -> list[Discrepancy]:
    """Every difference between the counters and the rows; an empty list when all agree."""
    found: list[Discrepancy] = []
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        for row in await conn.fetch(_SECTIONS):
            subject = str(row["id"])
            if row["sold"] != row["issued"]:
                found.append(Discrepancy("section", subject, "sold", row["issued"], row["sold"]))
            if row["reserved"] != row["held"]:
                found.append(
                    Discrepancy("section", subject, "reserved", row["held"], row["reserved"])
                )
            if row["sold"] + row["reserved"] > row["capacity"]:
                found.append(
                    Discrepancy(
                        "section",
                        subject,
                        "sold + reserved",
                        f"at most {row['capacity']} (capacity)",
                        row["sold"] + row["reserved"],
                    )
                )
        for row in await conn.fetch(_ORDER_TICKETS):
            expected = row["units"] if row["status"] == "Fulfilled" else 0
            found.append(
                Discrepancy(
                    "order",
                    row["number"],
                    f"tickets of a {row['status']} order",
                    expected,
                    row["issued"],
                )
            )
        for row in await conn.fetch(_ITEM_TICKETS):
            found.append(
                Discrepancy(
                    "order",
                    row["order_number"],
                    f"tickets in section {row['section_id']}",
                    row["quantity"],
                    row["issued"],
                )
            )
        for row in await conn.fetch(_HOLDS_AFTER_THE_END):
            found.append(
                Discrepancy(
                    "order",
                    row["number"],
                    f"units still held by a {row['status']} order",
                    0,
                    row["held"],
                )
            )
    return found


async def refunds_due(conn: asyncpg.Connection) -> list[RefundDue]:
    """Payments recorded as `Refund due`: money that arrived after its order ended."""
    rows = await conn.fetch(
        "SELECT order_number, reference, amount, source, created_at FROM payments"
        " WHERE outcome = 'Refund due' ORDER BY created_at, id"
    )
    return [
        RefundDue(
            order_number=row["order_number"],
            reference=row["reference"],
            amount=str(row["amount"]),
            source=row["source"],
            recorded=row["created_at"].isoformat(timespec="seconds"),
        )
        for row in rows
    ]


async def stuck_orders(
    conn: asyncpg.Connection, after_seconds: int = STUCK_AFTER_SECONDS
) -> list[StuckOrder]:
    """Orders still `Placed` more than `after_seconds` after their hold ended."""
    rows = await conn.fetch(
        "SELECT number, hold_expires, extract(epoch FROM now() - hold_expires)::int AS overdue"
        " FROM orders WHERE status = 'Placed'"
        " AND hold_expires < now() - make_interval(secs => $1) ORDER BY hold_expires",
        float(after_seconds),
    )
    return [
        StuckOrder(
            number=row["number"],
            expired=row["hold_expires"].isoformat(timespec="seconds"),
            overdue_seconds=row["overdue"],
        )
        for row in rows
    ]


async def time_out(conn: asyncpg.Connection, number: str) -> str:
    """Close an order whose hold has ended as `Timed Out`, as its workflow would.

    For an order whose workflow is gone. Safe beside a live workflow too: closing releases
    only what is still held, and the workflow then finds the order already closed.
    """
    row = await conn.fetchrow(
        "SELECT status, hold_expires <= now() AS ended FROM orders WHERE number = $1", number
    )
    if row is None:
        return f"order {number} does not exist"
    if row["status"] != OrderStatus.PLACED:
        return f"order {number} is already {row['status']}: nothing to do"
    if not row["ended"]:
        return f"order {number} is still within its hold: nothing done (cancel it instead)"
    order = await orders.close_order(conn, number, OrderStatus.TIMED_OUT)
    return f"order {number} is now {order.status}; its tickets are back on sale"


def report(
    discrepancies: list[Discrepancy],
    refunds: list[RefundDue],
    stuck: list[StuckOrder] | None = None,
) -> str:
    """The readable report the CLI prints."""
    lines: list[str] = []
    if discrepancies:
        lines.append(f"AUDIT FAILED: {len(discrepancies)} difference(s) between rows and counters")
        lines.extend(f"  - {item}" for item in discrepancies)
    else:
        lines.append("audit ok: every section's counters match its holds and tickets")
    if refunds:
        lines.append(f"{len(refunds)} payment(s) to refund (arrived after the order ended):")
        lines.extend(
            f"  - order {r.order_number}: {r.amount} from {r.source}, reference {r.reference}, "
            f"recorded {r.recorded}"
            for r in refunds
        )
    if stuck:
        lines.append(
            f"{len(stuck)} order(s) still Placed over {STUCK_AFTER_SECONDS} s after their hold"
            " ended (is a worker running? see README, When something goes wrong):"
        )
        lines.extend(
            f"  - order {o.number}: hold ended {o.expired}, {o.overdue_seconds} s ago"
            for o in stuck
        )
    return "\n".join(lines)


async def run(database_url: str, time_out_numbers: list[str] | None = None) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        for number in time_out_numbers or []:
            print(await time_out(conn, number))
        discrepancies = await audit(conn)
        refunds = await refunds_due(conn)
        stuck = await stuck_orders(conn)
    finally:
        await conn.close()
    print(report(discrepancies, refunds, stuck))
    return 1 if discrepancies else 0


def main() -> None:
    from config import get_settings

    parser = argparse.ArgumentParser(
        prog="python -m db.audit",
        description="Recount every section from its holds and tickets; exit 1 on a difference.",
    )
    parser.add_argument(
        "--time-out",
        metavar="NUMBER",
        action="append",
        default=[],
        help="first close this Placed order whose hold has ended (its workflow is gone)",
    )
    arguments = parser.parse_args()
    url = get_settings().database_url
    if not url:
        sys.exit("DATABASE_URL is not set: nothing to audit")
    sys.exit(asyncio.run(run(url, arguments.time_out)))


if __name__ == "__main__":
    main()
