"""SQL of integration keys: keys that belong to no account, made by an administrator."""

from __future__ import annotations

import asyncpg

from db.auth import hash_api_key, new_api_key
from domain import IntegrationKey, KeyLevel


async def create_integration_key(
    conn: asyncpg.Connection, name: str, level: KeyLevel
) -> IntegrationKey:
    """Mint a key; the representation carries it this once, the table only its SHA-256."""
    key = new_api_key()
    row = await conn.fetchrow(
        "INSERT INTO integration_keys (name, level, key_hash) VALUES ($1, $2, $3)"
        " RETURNING id, created_at",
        name,
        level.value,
        hash_api_key(key),
    )
    return IntegrationKey(id=row["id"], name=name, level=level, key=key, created=row["created_at"])
