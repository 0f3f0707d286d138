"""A private copy of the whole service for tests that kill, stop and restart its parts.

The session fixtures in conftest.py serve every other test, so nothing here may touch them.
`Stack` starts its own embedded PostgreSQL, Temporal dev server (in memory, or on a SQLite
file so it survives a restart), worker and API as child processes, each of which a test may
SIGKILL, SIGTERM, stop and start again. `stack_fixture` builds a module-scoped fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
from temporalio.client import Client

from db.audit import Discrepancy, audit
from db.auth import hash_api_key, new_api_key
from db.migrate import migrate
from devstack.postgres import EmbeddedPostgres
from devstack.temporal import TemporalDevServer
from tests import factories
from tests.conftest import ADMIN_KEY, CLIENT_VERSION, ChildProcess, free_port
from workflows.converter import data_converter

T = TypeVar("T")


def api_argv(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "api.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
    ]


@dataclass
class Stack:
    """PostgreSQL, Temporal, one worker and one API of our own, under `root`."""

    root: Path
    reservation_seconds: int = 60
    grace_seconds: int = 30
    temporal_on_disk: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.postgres = EmbeddedPostgres(self.root / "pg", free_port(), durable=False)
        self.temporal = TemporalDevServer(
            free_port(),
            None,
            self.root / "temporal.db" if self.temporal_on_disk else None,
            log_dir=self.root,
        )
        self.api_port = free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": self.postgres.url,
            "TEMPORAL_ADDRESS": self.temporal.address,
            "TEMPORAL_NAMESPACE": self.temporal.namespace,
            "RESERVATION_SECONDS": str(self.reservation_seconds),
            "SETTLEMENT_GRACE_SECONDS": str(self.grace_seconds),
            "HOST": "127.0.0.1",
            "PORT": str(self.api_port),
            "TICKETING_ADMIN_KEY": ADMIN_KEY,
            "RATE_LIMIT_PER_MINUTE": "0",  # the contention test is one burst of many callers
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        self.worker = self.new_worker("worker")
        self.api = ChildProcess(
            name="api",
            argv=api_argv(self.api_port),
            env=self.env,
            log_path=self.root / "api.log",
            ready_timeout=60,
            ready_url=f"http://127.0.0.1:{self.api_port}/healthz",
        )
        self._client: Client | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def new_worker(self, name: str) -> ChildProcess:
        """Another worker process on this stack (not started)."""
        return ChildProcess(
            name=name,
            argv=[sys.executable, "worker.py"],
            env=self.env,
            log_path=self.root / f"{name}.log",
            ready_timeout=30,
            ready_pattern=r"worker polling",
        )

    async def start(self) -> None:
        self.postgres.start()
        await migrate(self.postgres.url)
        await asyncio.to_thread(self.temporal.start)
        self.worker.start()
        self.api.start()

    def stop(self) -> None:
        for part in (self.api, self.worker):
            with contextlib.suppress(Exception):
                part.stop(timeout=5)
        self.temporal.kill()
        self.postgres.stop("immediate")

    async def temporal_client(self) -> Client:
        if self._client is None:
            self._client = await Client.connect(
                self.temporal.address,
                namespace=self.temporal.namespace,
                data_converter=data_converter,
            )
        return self._client

    def http(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.api_url,
            headers={"X-Client-Version": CLIENT_VERSION},
            timeout=kwargs.pop("timeout", 60),
            **kwargs,
        )

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.postgres.url)

    async def audit(self) -> list[Discrepancy]:
        conn = await self.connect()
        try:
            return await audit(conn)
        finally:
            await conn.close()

    async def section(self, capacity: int = 20, price: str = "45.00") -> factories.Section:
        conn = await self.connect()
        try:
            return await factories.create_section(
                conn, await factories.create_event(conn), price=price, capacity=capacity
            )
        finally:
            await conn.close()

    async def customers(self, count: int) -> list[Customer]:
        """Accounts with a live session each, written straight to the database (logging in
        over HTTP would spend seconds on password hashing)."""
        conn = await self.connect()
        try:
            made: list[Customer] = []
            for _ in range(count):
                number = await factories.create_account(conn)
                key = new_api_key()
                await conn.execute(
                    "INSERT INTO sessions (account_id, key_hash)"
                    " SELECT id, $2 FROM accounts WHERE number = $1",
                    number,
                    hash_api_key(key),
                )
                made.append(Customer(number, key))
            return made
        finally:
            await conn.close()

    async def fetchval(self, sql: str, *args: Any) -> Any:
        conn = await self.connect()
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    async def order_status(self, number: str) -> str | None:
        return await self.fetchval("SELECT status FROM orders WHERE number = $1", number)


@dataclass(frozen=True)
class Customer:
    number: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}


ADMIN = {"X-API-Key": ADMIN_KEY}


async def started_stack(root: Path, **options: Any) -> AsyncIterator[Stack]:
    """Async generator for fixtures: a started stack, stopped afterwards."""
    stack = Stack(root, **options)
    try:
        await stack.start()
        yield stack
    finally:
        stack.stop()


@dataclass(frozen=True)
class AuditMark:
    """Where the rows stood before a test, to audit only what the test made."""

    section_id: int
    order_seq: int


async def audit_mark(conn: asyncpg.Connection) -> AuditMark:
    return AuditMark(
        section_id=await conn.fetchval("SELECT coalesce(max(id), 0) FROM sections"),
        order_seq=await conn.fetchval("SELECT coalesce(max(seq), 0) FROM orders"),
    )


async def audit_since(conn: asyncpg.Connection, mark: AuditMark) -> list[Discrepancy]:
    """The audit of the sections and orders created after `mark`.

    For the session database, where some older tests write rows straight to the tables
    (tickets without counters, say) to exercise other features.
    """
    newer_orders = {
        row["number"]
        for row in await conn.fetch("SELECT number FROM orders WHERE seq > $1", mark.order_seq)
    }
    return [
        item
        for item in await audit(conn)
        if (item.kind == "section" and int(item.subject) > mark.section_id)
        or (item.kind == "order" and item.subject in newer_orders)
    ]


async def eventually(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    *,
    within: float,
    interval: float = 0.2,
    what: str = "condition",
) -> T:
    """Poll `probe` until `accept(value)`; fail with the last value after `within` s."""
    deadline = time.monotonic() + within
    value = await probe()
    while not accept(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {within:.0f} s; last: {value!r}")
        await asyncio.sleep(interval)
        value = await probe()
    return value


async def lock_waiters(stack: Stack) -> int:
    """How many backends wait for a lock right now (an activity blocked by the test)."""
    return await stack.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted")


def new_key() -> str:
    return secrets.token_hex(8)
