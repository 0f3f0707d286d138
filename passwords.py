"""Password hashing: argon2id through argon2-cffi, kept off the event loop.

A leaf module next to `config` rather than inside `api/`: the API hashes and checks
passwords (registration, sessions) and `db/demo.py` hashes the demo accounts' passwords, and
the `db` package must not import the HTTP layer. It imports neither FastAPI nor asyncpg.

Hashing and checking cost tens of milliseconds of CPU and 64 MiB of memory each (that is the
point of a memory-hard hash), so they run on a small dedicated thread pool: the event loop
keeps serving other requests, and a burst of logins cannot use more memory than the pool
has threads.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# argon2-cffi's defaults are RFC 9106's second recommended profile for argon2id.
_hasher = PasswordHasher()
_pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="argon2")


@dataclass(frozen=True)
class Verification:
    """The outcome of a password check.

    `new_hash` is set when the password was right but the stored hash uses parameters older
    than today's: the caller stores it, so hashes strengthen as users log in.
    """

    ok: bool
    new_hash: str | None = None


def _verify(stored_hash: str, password: str) -> Verification:
    try:
        _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return Verification(ok=False)
    if _hasher.check_needs_rehash(stored_hash):
        return Verification(ok=True, new_hash=_hasher.hash(password))
    return Verification(ok=True)


async def hash_password(password: str) -> str:
    """An argon2id hash (with its own salt and parameters) to store instead of the password."""
    return await asyncio.get_running_loop().run_in_executor(_pool, _hasher.hash, password)


async def verify_password(stored_hash: str, password: str) -> Verification:
    """Check a password against a stored hash; a malformed hash counts as a mismatch."""
    return await asyncio.get_running_loop().run_in_executor(_pool, _verify, stored_hash, password)
