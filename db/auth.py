"""SQL of API keys: who is behind a key (session or integration key).

Keys are 128-bit random values shown once; only their SHA-256 is stored. A slow hash would
add nothing against guessing a 128-bit secret and would cost on every request.
"""

from __future__ import annotations

import hashlib
import secrets

import asyncpg


def new_api_key() -> str:
    """32 lowercase hex characters, as TickeTing keys look."""
    return secrets.token_hex(16)


def hash_api_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


async def find_key_owner(
    conn: asyncpg.Connection, key_hash: bytes, session_idle_seconds: int
) -> asyncpg.Record | None:
    """The live session or integration key with this hash, in one round trip.

    Columns: kind ('session' | 'integration'), id, account_id, account_number, role,
    activated, level. A session idle for longer than the limit counts as ended.
    """
    return await conn.fetchrow(
        """
        WITH live AS (
            SELECT id, account_id, last_used_at FROM sessions
            WHERE key_hash = $1 AND ended_at IS NULL
              AND last_used_at > now() - make_interval(secs => $2)
        ), touched AS (
            -- Record use at most once a minute: no write on every request of a busy key.
            UPDATE sessions s SET last_used_at = now() FROM live
            WHERE s.id = live.id AND live.last_used_at < now() - interval '1 minute'
        )
        SELECT 'session' AS kind, l.id, a.id AS account_id, a.number AS account_number,
               a.role, a.activated, NULL::text AS level
        FROM live l JOIN accounts a ON a.id = l.account_id
        UNION ALL
        SELECT 'integration', k.id, NULL, NULL, NULL, true, k.level
        FROM integration_keys k WHERE k.key_hash = $1 AND k.revoked_at IS NULL
        """,
        key_hash,
        float(session_idle_seconds),
    )


async def ensure_integration_key(conn: asyncpg.Connection, key: str, name: str, level: str) -> None:
    """Make sure an integration key with this value exists (bootstrap of the admin key)."""
    await conn.execute(
        "INSERT INTO integration_keys (name, level, key_hash) VALUES ($1, $2, $3)"
        " ON CONFLICT (key_hash) DO NOTHING",
        name,
        level,
        hash_api_key(key),
    )
