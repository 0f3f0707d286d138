"""Versioned schema migrations, safe to run again and from several processes at once.

Run once at deploy time (`python -m db.migrate`); `make run` and the tests call it too.
Each file in db/migrations is applied once, in name order, inside a transaction that holds
an advisory lock, so replicas starting together cannot apply the same file twice.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_LOCK_ID = 0x7469636B  # any constant shared by every migrator of this schema


async def migrate(database_url: str) -> list[str]:
    """Apply the pending migrations; return the versions applied now."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            applied: list[str] = []
            for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
                version = path.stem
                if version in done:
                    continue
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
                applied.append(version)
            return applied
    finally:
        await conn.close()


def main() -> None:
    from config import get_settings

    url = get_settings().database_url
    if not url:
        sys.exit("DATABASE_URL is not set: nothing to migrate")
    applied = asyncio.run(migrate(url))
    print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")


if __name__ == "__main__":
    main()
