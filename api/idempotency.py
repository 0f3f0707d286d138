"""Idempotency-Key for unsafe requests, after the IETF httpapi idempotency-key draft.

Same key and same request: the first response again (same order, no second hold, no second
charge), marked `Idempotent-Replayed: true`. Same key, other request: 422. A duplicate that
arrives while the first is still running waits for it, then gets its response (or 409 if
it takes too long). Keys are per caller, kept in PostgreSQL, and survive restarts.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import asyncpg
from fastapi import Header
from fastapi.responses import JSONResponse

from api.errors import ApiError, conflict, error_response
from api.security import Caller
from db import idempotency

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Any unique string; a retry with the same key and body replays the answer.",
    ),
]
# An answer: status, JSON body, extra headers.
Answer = tuple[int, Any, dict[str, str]]

_DUPLICATE_WAIT_SECONDS = 15.0


def fingerprint(method: str, path: str, body: Any) -> bytes:
    """What makes two requests "the same": method, path and the body's JSON value."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).digest()


def _replay(record: idempotency.KeyRecord) -> JSONResponse:
    headers = dict(record.response_headers or {}) | {"Idempotent-Replayed": "true"}
    return JSONResponse(record.response_body, record.response_status or 200, headers=headers)


async def respond_once(
    db: asyncpg.Pool,
    caller: Caller,
    key: str | None,
    request_fingerprint: bytes,
    new_token: Callable[[], str],
    produce: Callable[[str], Awaitable[Answer]],
) -> JSONResponse:
    """Run `produce(token)` at most once per (caller, key) and remember its answer.

    `token` is fixed when the key is first seen, so a retry after a cut-off attempt resumes
    the same work (for an order: the same workflow). 5xx answers are not remembered.
    """
    if key is None:
        return _as_response(await _answer(produce, new_token()))

    waited = 0.0
    while True:
        async with db.acquire() as conn:
            record = await idempotency.claim(
                conn, caller.identity, key, request_fingerprint, new_token()
            )
        if record.claimed:
            break
        if record.fingerprint != request_fingerprint:
            raise ApiError(422, "This Idempotency-Key was already used with a different request.")
        if record.state == "done":
            return _replay(record)
        if waited >= _DUPLICATE_WAIT_SECONDS:
            raise conflict("A request with this Idempotency-Key is still being processed.")
        await asyncio.sleep(0.05)
        waited += 0.05

    try:
        answer = await _answer(produce, record.token)
    except BaseException:
        async with db.acquire() as conn:
            await idempotency.release(conn, caller.identity, key)
        raise
    status, body, headers = answer
    async with db.acquire() as conn:
        if status >= 500:
            await idempotency.release(conn, caller.identity, key)
        else:
            await idempotency.complete(conn, caller.identity, key, status, body, headers)
    return _as_response(answer)


async def _answer(produce: Callable[[str], Awaitable[Answer]], token: str) -> Answer:
    try:
        return await produce(token)
    except ApiError as error:
        return error.status, {"message": error.message, "error": error.message}, error.headers


def _as_response(answer: Answer) -> JSONResponse:
    status, body, headers = answer
    if status >= 400:
        return error_response(status, body["message"], headers)
    return JSONResponse(body, status, headers=headers)
