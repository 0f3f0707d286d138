"""SQL of Idempotency-Key records: claim a key, remember its response, forget old ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

# A request that has been `running` this long was cut off (its API process died): a
# retry may take it over, keeping the same token so it resumes the same work.
STALE_AFTER_SECONDS = 60
# Kept at least this long (the contract asks for 24 hours).
RETENTION_HOURS = 48


@dataclass(frozen=True)
class KeyRecord:
    fingerprint: bytes
    token: str
    state: str
    response_status: int | None
    response_body: Any
    response_headers: dict[str, str] | None
    claimed: bool  # True when this call now owns the key and must run the request


async def claim(
    conn: asyncpg.Connection, caller: str, key: str, fingerprint: bytes, token: str
) -> KeyRecord:
    """Take the key for this request, or return what it already holds.

    The caller owns the key when it is new, was left `retryable` by a failed attempt, or
    was abandoned while `running`. Only one concurrent caller can win that UPDATE.
    """
    row = await conn.fetchrow(
        """
        INSERT INTO idempotency_keys (caller, key, fingerprint, token, state)
        VALUES ($1, $2, $3, $4, 'running')
        ON CONFLICT (caller, key) DO UPDATE SET state = 'running', updated_at = now()
            WHERE idempotency_keys.fingerprint = EXCLUDED.fingerprint
              AND (idempotency_keys.state = 'retryable'
                   OR (idempotency_keys.state = 'running'
                       AND idempotency_keys.updated_at < now() - make_interval(secs => $5)))
        RETURNING fingerprint, token, state, response_status, response_body, response_headers
        """,
        caller,
        key,
        fingerprint,
        token,
        float(STALE_AFTER_SECONDS),
    )
    if row is not None:
        return KeyRecord(**dict(row), claimed=True)
    row = await conn.fetchrow(
        "SELECT fingerprint, token, state, response_status, response_body, response_headers"
        " FROM idempotency_keys WHERE caller = $1 AND key = $2",
        caller,
        key,
    )
    assert row is not None
    return KeyRecord(**dict(row), claimed=False)


async def complete(
    conn: asyncpg.Connection,
    caller: str,
    key: str,
    status: int,
    body: Any,
    headers: dict[str, str],
) -> None:
    await conn.execute(
        "UPDATE idempotency_keys SET state = 'done', response_status = $3, response_body = $4,"
        " response_headers = $5, updated_at = now() WHERE caller = $1 AND key = $2",
        caller,
        key,
        status,
        body,
        headers,
    )


async def release(conn: asyncpg.Connection, caller: str, key: str) -> None:
    """The attempt failed for a reason worth retrying (503): let a retry run it again."""
    await conn.execute(
        "UPDATE idempotency_keys SET state = 'retryable', updated_at = now()"
        " WHERE caller = $1 AND key = $2",
        caller,
        key,
    )


async def purge_expired(conn: asyncpg.Connection) -> int:
    result = await conn.execute(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(hours => $1)",
        RETENTION_HOURS,
    )
    return int(result.split()[-1])
