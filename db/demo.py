"""Demo data for `make run`: two accounts and an event with three sections on sale.

`seed` is idempotent: rows it made before are found (by username and event title) and left
as they are, so every start prints the same credentials and ids. It runs in one
transaction under an advisory lock, so two processes seeding at once make one set of rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg

from db.accounts import NewAccount, create_account
from db.events import create_event
from db.sections import create_section
from domain import Role, section_uri
from passwords import hash_password

ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "admin-password-1"
CUSTOMER_USERNAME = "demo"
CUSTOMER_PASSWORD = "demo-password-1"
EVENT_TITLE = "Demo Night"
SECTIONS = (
    ("Lawn", "Bring a blanket: open lawn, free entry.", Decimal("0.00")),
    ("Stands", "Covered seating with a view of the whole stage.", Decimal("45.00")),
    ("Box", "Private box with table service.", Decimal("120.00")),
)
SECTION_CAPACITY = 20
_LOCK_ID = 0x64656D6F  # "demo"; distinct from the migrator's lock


@dataclass(frozen=True)
class DemoCredentials:
    """What `make run` prints so a person can try the API at once."""

    admin_username: str
    admin_password: str
    customer_username: str
    customer_password: str
    event_id: int
    section_uris: list[str]


async def _ensure_account(
    conn: asyncpg.Connection, username: str, password: str, role: Role
) -> int:
    account_id = await conn.fetchval(
        "SELECT id FROM accounts WHERE lower(username) = lower($1)", username
    )
    if account_id is not None:
        return account_id
    await create_account(
        conn,
        NewAccount(
            username=username,
            email=f"{username}@example.com",
            password_hash=await hash_password(password),
            role=role,
            verified=True,
            activated=True,
            first_name=username.capitalize(),
            last_name="Demo",
        ),
    )
    return await conn.fetchval(
        "SELECT id FROM accounts WHERE lower(username) = lower($1)", username
    )


async def _ensure_event(conn: asyncpg.Connection, host_id: int) -> tuple[int, list[str]]:
    event_id = await conn.fetchval(
        "SELECT id FROM events WHERE title = $1 ORDER BY id LIMIT 1", EVENT_TITLE
    )
    if event_id is None:
        now = datetime.now(UTC).replace(microsecond=0)
        event = await create_event(
            conn,
            title=EVENT_TITLE,
            description="An evening of live music to try the TickeTing API with.",
            start=now + timedelta(days=30),
            end=now + timedelta(days=30, hours=4),
            host_id=host_id,
        )
        event_id = event.event_id
        for name, description, price in SECTIONS:
            await create_section(
                conn,
                event_id,
                name=name,
                description=description,
                base_price=price,
                sales_start=now - timedelta(days=1),
                sales_end=now + timedelta(days=365),
                capacity=SECTION_CAPACITY,
                active=True,
            )
    section_ids = await conn.fetch(
        "SELECT id FROM sections WHERE event_id = $1 ORDER BY id", event_id
    )
    return event_id, [section_uri(event_id, row["id"]) for row in section_ids]


async def seed(database_url: str) -> DemoCredentials:
    """Create the demo accounts and event unless they exist; return how to use them."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
            admin_id = await _ensure_account(
                conn, ADMIN_USERNAME, ADMIN_PASSWORD, Role.ADMINISTRATOR
            )
            await _ensure_account(conn, CUSTOMER_USERNAME, CUSTOMER_PASSWORD, Role.CUSTOMER)
            event_id, section_uris = await _ensure_event(conn, admin_id)
    finally:
        await conn.close()
    return DemoCredentials(
        admin_username=ADMIN_USERNAME,
        admin_password=ADMIN_PASSWORD,
        customer_username=CUSTOMER_USERNAME,
        customer_password=CUSTOMER_PASSWORD,
        event_id=event_id,
        section_uris=section_uris,
    )
