"""SQL of event sections: creating them and reading them with exact counters.

Readers never show the `sections.reserved` column: it may still count holds whose end has
passed but that no transaction has swept yet. `reserved` is instead the sum of the LIVE
holds, selected in the same statement as `capacity` and `sold`, so the three come from one
snapshot and `remaining = capacity - sold - reserved` is exact at every moment, with or
without a worker running.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import asyncpg

from domain import Section

SECTION_SELECT = """
    SELECT s.id AS section_id, s.event_id, s.name, s.description, s.base_price,
           s.sales_start, s.sales_end, s.active, s.capacity, s.sold,
           (SELECT coalesce(sum(h.quantity), 0) FROM holds h
            WHERE h.section_id = s.id AND h.released_at IS NULL AND h.expires_at > now()
           )::int AS reserved
    FROM sections s
"""


def section_from_row(row: asyncpg.Record) -> Section:
    return Section(
        event_id=row["event_id"],
        section_id=row["section_id"],
        name=row["name"],
        description=row["description"],
        base_price=row["base_price"],
        sales_start=row["sales_start"],
        sales_end=row["sales_end"],
        active=row["active"],
        capacity=row["capacity"],
        sold=row["sold"],
        reserved=row["reserved"],
    )


async def get_section(conn: asyncpg.Connection, event_id: int, section_id: int) -> Section | None:
    """The section with its live counters; None unless it belongs to that event."""
    row = await conn.fetchrow(
        SECTION_SELECT + " WHERE s.id = $1 AND s.event_id = $2", section_id, event_id
    )
    return section_from_row(row) if row is not None else None


async def list_sections(conn: asyncpg.Connection, event_id: int) -> list[Section]:
    """Every section of an event, oldest first, counters from one snapshot."""
    rows = await conn.fetch(SECTION_SELECT + " WHERE s.event_id = $1 ORDER BY s.id", event_id)
    return [section_from_row(row) for row in rows]


async def create_section(
    conn: asyncpg.Connection,
    event_id: int,
    *,
    name: str,
    description: str,
    base_price: Decimal,
    sales_start: datetime,
    sales_end: datetime,
    capacity: int,
    active: bool = True,
) -> Section:
    """Add a section to an event; nothing is sold or held in it yet."""
    row = await conn.fetchrow(
        "INSERT INTO sections (event_id, name, description, base_price, sales_start, sales_end,"
        " capacity, active) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " RETURNING id AS section_id, event_id, name, description, base_price, sales_start,"
        " sales_end, active, capacity, sold, 0 AS reserved",
        event_id,
        name,
        description,
        base_price,
        sales_start,
        sales_end,
        capacity,
        active,
    )
    return section_from_row(row)
