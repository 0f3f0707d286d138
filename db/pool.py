"""The asyncpg connection pool, created once per process."""

from __future__ import annotations

import json

import asyncpg

from config import Settings


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(settings: Settings, *, max_size: int | None = None) -> asyncpg.Pool:
    """Open the pool. Statement timeouts keep one slow query from holding a connection
    (and the section rows it locked) for long during an on-sale."""
    return await asyncpg.create_pool(
        settings.database_url,
        min_size=min(settings.database_pool_min, max_size or settings.database_pool_max),
        max_size=max_size or settings.database_pool_max,
        init=_init_connection,
        command_timeout=30,
        server_settings={"statement_timeout": "15000", "lock_timeout": "10000"},
    )
