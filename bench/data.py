"""Customers with live sessions, and events with sections, for the scenarios.

With the benchmark's own stack they are written straight to PostgreSQL through the
product's db/ functions (one argon2 hash made with passwords.py and shared by every bench
account: hashing thousands of passwords would only measure argon2). Against a running
service (`--url`) they are made through the API: accounts and sessions by self-service,
events and sections with an administrator key.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg

from bench.http import HttpClient
from domain import section_uri

CLIENT_VERSION = "3.0.0"
PASSWORD = "bench-password-1"


@dataclass(frozen=True)
class Customer:
    number: str
    key: str


@dataclass(frozen=True)
class Section:
    event_id: int
    section_id: int
    capacity: int

    @property
    def uri(self) -> str:
        return section_uri(self.event_id, self.section_id)


class Seeder:
    """Makes customers and events, through the database or through the API."""

    def __init__(self, database_url: str | None, api: HttpClient, admin_key: str | None):
        self.database_url = database_url
        self.api = api
        self.admin_key = admin_key

    async def customers(self, count: int) -> list[Customer]:
        if self.database_url:
            return await self._customers_sql(count)
        return await self._customers_http(count)

    async def event(self, title: str, sections: int, capacity: int, price: str) -> list[Section]:
        if self.database_url:
            return await self._event_sql(title, sections, capacity, Decimal(price))
        return await self._event_http(title, sections, capacity, price)

    # -- straight to PostgreSQL -------------------------------------------------------------

    async def _customers_sql(self, count: int) -> list[Customer]:
        from db.accounts import NewAccount, create_account
        from db.sessions import start_session
        from passwords import hash_password

        password_hash = await hash_password(PASSWORD)
        tag = secrets.token_hex(3)
        conn = await asyncpg.connect(self.database_url)
        customers: list[Customer] = []
        try:
            for index in range(count):
                async with conn.transaction():
                    username = f"bench_{tag}_{index}"
                    account = await create_account(
                        conn,
                        NewAccount(
                            username=username,
                            email=f"{username}@example.com",
                            password_hash=password_hash,
                            verified=True,
                        ),
                    )
                    account_id = await conn.fetchval(
                        "SELECT id FROM accounts WHERE number = $1", account.number
                    )
                    session = await start_session(conn, account_id)
                customers.append(Customer(account.number, session.key))
        finally:
            await conn.close()
        return customers

    async def _event_sql(
        self, title: str, sections: int, capacity: int, price: Decimal
    ) -> list[Section]:
        from db.events import create_event
        from db.sections import create_section

        now = datetime.now(UTC).replace(microsecond=0)
        conn = await asyncpg.connect(self.database_url)
        try:
            async with conn.transaction():
                event = await create_event(
                    conn,
                    title=title,
                    description="Benchmark event",
                    start=now + timedelta(days=30),
                    end=now + timedelta(days=30, hours=4),
                    host_id=None,
                )
                made = []
                for index in range(sections):
                    section = await create_section(
                        conn,
                        event.event_id,
                        name=f"Block {index + 1}",
                        description="Benchmark section",
                        base_price=price,
                        sales_start=now - timedelta(days=1),
                        sales_end=now + timedelta(days=10),
                        capacity=capacity,
                    )
                    made.append(Section(event.event_id, section.section_id, capacity))
        finally:
            await conn.close()
        return made

    # -- through the API --------------------------------------------------------------------

    def _headers(self, key: str | None = None) -> dict[str, str]:
        headers = {"X-Client-Version": CLIENT_VERSION}
        if key:
            headers["X-API-Key"] = key
        return headers

    async def _customers_http(self, count: int) -> list[Customer]:
        tag = secrets.token_hex(3)
        gate = asyncio.Semaphore(4)  # argon2 on the server: a few at a time

        async def one(index: int) -> Customer:
            async with gate:
                username = f"bench_{tag}_{index}"
                made = await self.api.request(
                    "POST",
                    "/accounts",
                    json_body={
                        "username": username,
                        "password": PASSWORD,
                        "email": f"{username}@example.com",
                    },
                    headers=self._headers(),
                )
                if made.status != 201:
                    raise RuntimeError(f"POST /accounts: {made.status} {made.body[:200]!r}")
                session = await self.api.request(
                    "POST",
                    "/sessions",
                    json_body={"identification": username, "password": PASSWORD},
                    headers=self._headers(),
                )
                if session.status != 201:
                    raise RuntimeError(f"POST /sessions: {session.status} {session.body[:200]!r}")
                return Customer(made.json()["number"], session.json()["key"])

        return list(await asyncio.gather(*(one(index) for index in range(count))))

    async def _event_http(
        self, title: str, sections: int, capacity: int, price: str
    ) -> list[Section]:
        if not self.admin_key:
            raise SystemExit("--url needs --admin-key (an administrator key) to create events")
        now = datetime.now(UTC).replace(microsecond=0)
        made = await self.api.request(
            "POST",
            "/events",
            json_body={
                "title": title,
                "description": "Benchmark event",
                "start": (now + timedelta(days=30)).isoformat(),
                "end": (now + timedelta(days=30, hours=4)).isoformat(),
            },
            headers=self._headers(self.admin_key),
        )
        if made.status != 201:
            raise RuntimeError(f"POST /events: {made.status} {made.body[:200]!r}")
        event_uri = made.json()["self"]
        result: list[Section] = []
        for index in range(sections):
            section = await self.api.request(
                "POST",
                f"{event_uri}/sections",
                json_body={
                    "name": f"Block {index + 1}",
                    "description": "Benchmark section",
                    "basePrice": float(price),
                    "salesStart": (now - timedelta(days=1)).isoformat(),
                    "salesEnd": (now + timedelta(days=10)).isoformat(),
                    "capacity": capacity,
                },
                headers=self._headers(self.admin_key),
            )
            if section.status != 201:
                raise RuntimeError(f"POST sections: {section.status} {section.body[:200]!r}")
            parts = section.json()["self"].strip("/").split("/")
            result.append(Section(int(parts[1]), int(parts[3]), capacity))
        return result
