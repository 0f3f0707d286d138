"""Rows the order tests need, written straight to PostgreSQL.

Tests that exercise accounts and events do so through the HTTP API; tests of orders only
need some to exist, so they create them here with plain SQL and random names.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg

from domain import section_uri


@dataclass(frozen=True)
class Section:
    event_id: int
    section_id: int
    price: Decimal
    capacity: int

    @property
    def uri(self) -> str:
        return section_uri(self.event_id, self.section_id)


def _code(length: int) -> str:
    return "".join(secrets.choice("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(length))


async def create_account(
    conn: asyncpg.Connection, role: str = "customer", activated: bool = True
) -> str:
    """A fresh account; returns its number. Its password hash is not a usable hash."""
    number = f"{_code(2)}-{_code(8)}"
    name = f"user_{secrets.token_hex(6)}"
    await conn.execute(
        "INSERT INTO accounts (number, username, email, password_hash, role, activated)"
        " VALUES ($1, $2, $3, 'not-a-hash', $4, $5)",
        number,
        name,
        f"{name}@example.com",
        role,
        activated,
    )
    return number


async def create_event(conn: asyncpg.Connection) -> int:
    now = datetime.now(UTC)
    return await conn.fetchval(
        "INSERT INTO events (title, starts_at, ends_at) VALUES ($1, $2, $3) RETURNING id",
        f"Event {secrets.token_hex(4)}",
        now + timedelta(days=30),
        now + timedelta(days=30, hours=3),
    )


async def create_section(
    conn: asyncpg.Connection,
    event_id: int,
    *,
    price: str = "45.00",
    capacity: int = 20,
    active: bool = True,
    sales_start: datetime | None = None,
    sales_end: datetime | None = None,
) -> Section:
    now = datetime.now(UTC)
    section_id = await conn.fetchval(
        "INSERT INTO sections (event_id, name, description, base_price, sales_start, sales_end,"
        " active, capacity) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        event_id,
        f"Section {secrets.token_hex(3)}",
        "Seats with a view",
        Decimal(price),
        sales_start or now - timedelta(days=1),
        sales_end or now + timedelta(days=365),
        active,
        capacity,
    )
    return Section(event_id, section_id, Decimal(price), capacity)


async def section_counts(conn: asyncpg.Connection, section_id: int) -> dict[str, int]:
    """Sold, reserved (live holds only) and remaining, as a customer would see them."""
    row = await conn.fetchrow(
        "SELECT s.capacity, s.sold, coalesce((SELECT sum(quantity) FROM holds h"
        " WHERE h.section_id = s.id AND h.released_at IS NULL AND h.expires_at > now()), 0)::int"
        " AS reserved FROM sections s WHERE s.id = $1",
        section_id,
    )
    return {
        "capacity": row["capacity"],
        "sold": row["sold"],
        "reserved": row["reserved"],
        "remaining": row["capacity"] - row["sold"] - row["reserved"],
    }
