"""SQL of events. Their sections' SQL is in db/sections.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from db.sections import list_sections
from domain import Event, Section


@dataclass(frozen=True)
class EventOwnership:
    """Who hosts an event: what a permission check needs, without its sections."""

    event_id: int
    host_id: int | None


async def create_event(
    conn: asyncpg.Connection,
    *,
    title: str,
    description: str,
    start: datetime,
    end: datetime,
    host_id: int | None,
) -> Event:
    """Register an event hosted by `host_id` (None when an integration key creates it)."""
    row = await conn.fetchrow(
        "WITH e AS (INSERT INTO events (title, description, starts_at, ends_at, host_id)"
        " VALUES ($1, $2, $3, $4, $5) RETURNING *)"
        " SELECT e.id, e.title, e.description, e.starts_at, e.ends_at, a.number AS host_number"
        " FROM e LEFT JOIN accounts a ON a.id = e.host_id",
        title,
        description,
        start,
        end,
        host_id,
    )
    return _event_from_row(row, [])


def _event_from_row(row: asyncpg.Record, sections: list[Section]) -> Event:
    return Event(
        event_id=row["id"],
        title=row["title"],
        description=row["description"],
        start=row["starts_at"],
        end=row["ends_at"],
        host_number=row["host_number"],
        sections=sections,
    )


async def get_event(conn: asyncpg.Connection, event_id: int) -> Event | None:
    """The event with all its sections and their live counters."""
    row = await conn.fetchrow(
        "SELECT e.id, e.title, e.description, e.starts_at, e.ends_at, a.number AS host_number"
        " FROM events e LEFT JOIN accounts a ON a.id = e.host_id WHERE e.id = $1",
        event_id,
    )
    if row is None:
        return None
    return _event_from_row(row, await list_sections(conn, event_id))


async def get_event_ownership(conn: asyncpg.Connection, event_id: int) -> EventOwnership | None:
    row = await conn.fetchrow("SELECT id, host_id FROM events WHERE id = $1", event_id)
    return EventOwnership(event_id=row["id"], host_id=row["host_id"]) if row is not None else None
