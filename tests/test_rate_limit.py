"""The per-caller rate limit: the token bucket itself, and 429 + Retry-After over HTTP.

The HTTP tests run their own API process with a low limit, so the API the other tests
share is never throttled.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from api.rate_limit import RateLimiter
from api.security import TOO_MANY_REQUESTS
from tests.conftest import (
    ADMIN_KEY,
    API_READY_TIMEOUT,
    CLIENT_VERSION,
    ChildProcess,
    free_port,
)
from tests.http_helpers import expect_error, login, new_user, register

UVICORN = [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1"]
PER_MINUTE = 6  # one token every 10 s: nothing refills during a test
BURST = 3


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the bucket --------------------------------------------------------------------------


def test_a_burst_then_one_request_per_refill() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    assert [limiter.take("a", 60, 3) for _ in range(3)] == [None, None, None]
    assert limiter.take("a", 60, 3) == 1  # 60/min: one token a second
    clock.now += 0.5
    assert limiter.take("a", 60, 3) == 1  # half a token: still wait (rounded up, >= 1)
    clock.now += 0.5
    assert limiter.take("a", 60, 3) is None
    assert limiter.take("a", 60, 3) == 1


def test_retry_after_is_the_whole_seconds_until_the_next_token() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    assert limiter.take("a", 6, 1) is None
    assert limiter.take("a", 6, 1) == 10  # 6/min: a token every 10 s
    clock.now += 7.5
    assert limiter.take("a", 6, 1) == 3  # 2.5 s left, rounded up


def test_callers_have_separate_buckets_and_the_burst_defaults_to_a_minute() -> None:
    limiter = RateLimiter(FakeClock())
    assert all(limiter.take("a", 5) is None for _ in range(5))
    assert limiter.take("a", 5) is not None
    assert limiter.take("b", 5) is None


def test_zero_disables_the_limit() -> None:
    limiter = RateLimiter(FakeClock())
    assert all(limiter.take("a", 0, 1) is None for _ in range(1000))
    assert len(limiter) == 0


def test_full_buckets_are_forgotten() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, sweep_every=10)
    for caller in range(9):
        limiter.take(f"c{caller}", 60, 10)
    assert len(limiter) == 9
    clock.now += 11  # every bucket is full again: nothing worth keeping
    limiter.take("late", 60, 10)
    assert len(limiter) == 1


# --- over HTTP ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def throttled_api(settings_env: dict[str, str], devstack_dir: Path, api_url: str) -> Iterator[str]:
    """A second API process on the session's servers, with a low rate limit."""
    port = str(free_port())
    api = ChildProcess(
        name="api-throttled",
        argv=[*UVICORN, "--port", port],
        env=settings_env
        | {
            "PORT": port,
            "RATE_LIMIT_PER_MINUTE": str(PER_MINUTE),
            "RATE_LIMIT_BURST": str(BURST),
        },
        log_path=devstack_dir / "api-throttled.log",
        ready_timeout=API_READY_TIMEOUT,
        ready_url=f"http://127.0.0.1:{port}/healthz",
    )
    try:
        api.start()
        yield f"http://127.0.0.1:{port}"
    finally:
        api.stop()


@pytest.fixture
async def throttled(throttled_api: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=throttled_api, headers={"X-Client-Version": CLIENT_VERSION}, timeout=30
    ) as http:
        yield http


async def test_beyond_the_limit_a_caller_gets_429_with_retry_after(
    throttled: httpx.AsyncClient,
) -> None:
    account, key = await new_user(throttled)  # registration and login need no key
    own = {"X-API-Key": key}
    uri = f"/accounts/{account['number']}"

    for _ in range(BURST):
        assert (await throttled.get(uri, headers=own)).status_code == 200
    response = await throttled.get(uri, headers=own)
    expect_error(response, 429, TOO_MANY_REQUESTS)
    assert 1 <= int(response.headers["Retry-After"]) <= 60 // PER_MINUTE

    # Every endpoint that takes a key counts against the same bucket.
    expect_error(await throttled.get("/orders", headers=own), 429, TOO_MANY_REQUESTS)
    # Another caller has a bucket of its own.
    other, other_key = await new_user(throttled)
    response = await throttled.get(f"/accounts/{other['number']}", headers={"X-API-Key": other_key})
    assert response.status_code == 200, response.text


async def test_the_limit_is_per_account_not_per_session(throttled: httpx.AsyncClient) -> None:
    """Logging in again gives a new key but not a new allowance."""
    account, password = await register(throttled)
    first = {"X-API-Key": await login(throttled, account["username"], password)}
    for _ in range(BURST):
        assert (await throttled.get("/sessions/active", headers=first)).status_code == 200
    second = {"X-API-Key": await login(throttled, account["username"], password)}
    expect_error(await throttled.get("/sessions/active", headers=second), 429, TOO_MANY_REQUESTS)


async def test_concurrent_requests_get_no_more_than_the_burst(
    throttled: httpx.AsyncClient,
) -> None:
    _, key = await new_user(throttled)
    answers = await asyncio.gather(
        *(throttled.get("/sessions/active", headers={"X-API-Key": key}) for _ in range(12))
    )
    assert sorted(a.status_code for a in answers) == [200] * BURST + [429] * (12 - BURST)


async def test_missing_and_unknown_keys_are_refused_before_the_limit(
    throttled: httpx.AsyncClient,
) -> None:
    """Only a valid key has a bucket: others keep their 401/403, and cannot use up the
    allowance of a real caller."""
    for _ in range(BURST + 2):
        response = await throttled.get("/orders", headers={"X-API-Key": "0" * 32})
        assert response.status_code == 403
        assert (await throttled.get("/orders")).status_code == 401
    # An integration key is limited like any caller (the shared API's admin key is not
    # used here: this process's buckets are its own).
    for _ in range(BURST):
        response = await throttled.get("/orders", headers={"X-API-Key": ADMIN_KEY})
        assert response.status_code == 200, response.text
    expect_error(
        await throttled.get("/orders", headers={"X-API-Key": ADMIN_KEY}), 429, TOO_MANY_REQUESTS
    )
