"""SQL of sessions: finding who logs in, throttling password guesses, starting and ending.

Guessing is throttled per account. Before a password is checked, `begin_login` counts the
account's failures in the window and, if there is room, records this attempt as a failure
up front, all under a lock on the account row. Concurrent guesses therefore queue on that
lock and no more than the limit ever get to the password check, however many arrive at
once. A right password then clears the account's failures (this attempt's included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from db.accounts import ACCOUNT_COLUMNS, account_from_row
from db.auth import hash_api_key, new_api_key
from domain import Session

LOGIN_FAILURE_LIMIT = 5
LOGIN_FAILURE_WINDOW = timedelta(minutes=15)


@dataclass(frozen=True)
class LoginAccount:
    """What a login needs to know about the account named by its identification."""

    id: int
    password_hash: str
    activated: bool


async def find_login(conn: asyncpg.Connection, identification: str) -> LoginAccount | None:
    """The account whose username or email (either, any case) is `identification`.

    Usernames cannot contain `@` and emails must, so at most one account matches.
    """
    row = await conn.fetchrow(
        "SELECT id, password_hash, activated FROM accounts"
        " WHERE lower(username) = lower($1) OR lower(email) = lower($1) LIMIT 1",
        identification,
    )
    if row is None:
        return None
    return LoginAccount(
        id=row["id"], password_hash=row["password_hash"], activated=row["activated"]
    )


async def begin_login(
    conn: asyncpg.Connection,
    account_id: int,
    *,
    limit: int = LOGIN_FAILURE_LIMIT,
    window: timedelta = LOGIN_FAILURE_WINDOW,
) -> int | None:
    """Let a password check go ahead (None) or say how many seconds to wait first.

    When the account has `limit` failures inside the window the answer is the wait until
    enough of them leave it for one more try; the password is then not checked at all.
    """
    async with conn.transaction():
        await conn.execute("SELECT 1 FROM accounts WHERE id = $1 FOR NO KEY UPDATE", account_id)
        await conn.execute(
            "DELETE FROM login_failures"
            " WHERE account_id = $1 AND failed_at <= now() - $2::interval",
            account_id,
            window,
        )
        # The limit-th newest failure is the one whose leaving makes room for another try.
        recent: list[datetime] = [
            row["failed_at"]
            for row in await conn.fetch(
                "SELECT failed_at FROM login_failures WHERE account_id = $1"
                " ORDER BY failed_at DESC LIMIT $2",
                account_id,
                limit,
            )
        ]
        if len(recent) >= limit:
            now: datetime = await conn.fetchval("SELECT now()")
            wait = (recent[-1] + window - now).total_seconds()
            return max(1, math.ceil(wait))
        await conn.execute("INSERT INTO login_failures (account_id) VALUES ($1)", account_id)
        return None


async def clear_login_failures(conn: asyncpg.Connection, account_id: int) -> None:
    """Forget the account's failures: the right password was given."""
    await conn.execute("DELETE FROM login_failures WHERE account_id = $1", account_id)


async def start_session(
    conn: asyncpg.Connection, account_id: int, *, new_password_hash: str | None = None
) -> Session:
    """After a right password: clear the failures, open a session and mint its key.

    The key is returned in this one representation and stored only as its SHA-256.
    `new_password_hash` upgrades a hash made with outdated parameters.
    """
    key = new_api_key()
    async with conn.transaction():
        await clear_login_failures(conn, account_id)
        if new_password_hash is not None:
            await conn.execute(
                "UPDATE accounts SET password_hash = $2 WHERE id = $1",
                account_id,
                new_password_hash,
            )
        row = await conn.fetchrow(
            "INSERT INTO sessions (account_id, key_hash) VALUES ($1, $2) RETURNING id, started_at",
            account_id,
            hash_api_key(key),
        )
        account = await conn.fetchrow(
            f"SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.id = $1", account_id
        )
    return Session(
        id=row["id"],
        open=True,
        started=row["started_at"],
        key=key,
        account=account_from_row(account),
    )


async def get_session(conn: asyncpg.Connection, session_id: int, key: str) -> Session | None:
    """The open session `session_id`, shown with the key the caller presented."""
    row = await conn.fetchrow(
        f"SELECT s.id, s.started_at, {ACCOUNT_COLUMNS}"
        " FROM sessions s JOIN accounts a ON a.id = s.account_id"
        " WHERE s.id = $1 AND s.ended_at IS NULL",
        session_id,
    )
    if row is None:
        return None
    return Session(
        id=row["id"], open=True, started=row["started_at"], key=key, account=account_from_row(row)
    )


async def end_session(conn: asyncpg.Connection, session_id: int) -> bool:
    """End the session; False when it had already ended. Its key is refused from now on."""
    ended = await conn.fetchval(
        "UPDATE sessions SET ended_at = now() WHERE id = $1 AND ended_at IS NULL RETURNING id",
        session_id,
    )
    return ended is not None
