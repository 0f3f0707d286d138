"""Open-loop and closed-loop load, and the statistics of what came back.

Open loop: request i is due at `t0 + i / rate` whatever happened to the earlier ones, and
its latency is measured from that intended time, not from when it was actually sent. A
service that falls behind therefore shows its queueing in the figures (no coordinated
omission), and the achieved rate is what it really served.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

try:
    from tqdm import tqdm
except ImportError:  # the bench extra is not installed (the test suite): no progress bars

    class tqdm:  # type: ignore[no-redef]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def update(self, n: int = 1) -> None:
            pass

        def close(self) -> None:
            pass


# A request returns (ok, label): ok False counts as an error; the label says what it was.
Outcome = tuple[bool, str]


@dataclass
class Sample:
    at: float  # intended send time, seconds after the start of the run
    latency: float  # seconds from the intended send time to the full answer
    ok: bool
    label: str


@dataclass
class RunStats:
    offered_rate: float | None
    duration: float
    samples: list[Sample] = field(default_factory=list)
    wall: float = 0.0  # from the first intended send to the last answer

    @property
    def ok(self) -> list[Sample]:
        return [sample for sample in self.samples if sample.ok]

    @property
    def errors(self) -> int:
        return sum(not sample.ok for sample in self.samples)

    @property
    def achieved_rate(self) -> float:
        return len(self.ok) / self.wall if self.wall > 0 else 0.0

    def percentile(self, q: float) -> float:
        return percentile([sample.latency for sample in self.ok], q)

    def summary(self) -> dict[str, Any]:
        labels: dict[str, int] = {}
        for sample in self.samples:
            labels[sample.label] = labels.get(sample.label, 0) + 1
        return {
            "offered_rate": self.offered_rate,
            "requests": len(self.samples),
            "errors": self.errors,
            "achieved_rate": round(self.achieved_rate, 2),
            "p50_ms": ms(self.percentile(50)),
            "p90_ms": ms(self.percentile(90)),
            "p99_ms": ms(self.percentile(99)),
            "max_ms": ms(max((s.latency for s in self.ok), default=math.nan)),
            "outcomes": labels,
        }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1000, 1)


async def open_loop(
    rate: float,
    duration: float,
    request: Callable[[int], Awaitable[Outcome]],
    *,
    label: str,
    drain_timeout: float = 60.0,
) -> RunStats:
    """Send `rate * duration` requests on schedule; wait for the answers (bounded)."""
    count = max(1, round(rate * duration))
    stats = RunStats(offered_rate=rate, duration=duration)
    bar = tqdm(total=count, desc=label, unit="req", leave=False, mininterval=0.5)
    # time.monotonic(), not loop.time(): uvloop's clock has millisecond steps.
    clock = time.monotonic
    start = clock() + 0.05
    last_answer = start

    async def one(index: int, due: float) -> None:
        nonlocal last_answer
        try:
            ok, what = await request(index)
        except Exception as error:  # a timeout or a broken connection is an error
            ok, what = False, type(error).__name__
        now = clock()
        last_answer = max(last_answer, now)
        stats.samples.append(Sample(due - start, now - due, ok, what))
        bar.update()

    tasks: list[asyncio.Task[None]] = []
    for index in range(count):
        due = start + index / rate
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, due)))
    _, pending = await asyncio.wait(tasks, timeout=drain_timeout)
    for task in pending:
        task.cancel()
        stats.samples.append(Sample(0.0, drain_timeout, False, "unanswered"))
    bar.close()
    stats.wall = max(last_answer - start, count / rate)
    return stats


async def closed_loop(
    clients: int,
    duration: float,
    request: Callable[[int], Awaitable[Outcome]],
    *,
    label: str,
) -> RunStats:
    """`clients` loops, each sending its next request when the last one has answered."""
    stats = RunStats(offered_rate=None, duration=duration)
    bar = tqdm(desc=label, unit="req", leave=False, mininterval=0.5)
    clock = time.monotonic
    start = clock()
    end = start + duration
    counter = 0

    async def client() -> None:
        nonlocal counter
        while clock() < end:
            index, counter = counter, counter + 1
            sent = clock()
            try:
                ok, what = await request(index)
            except Exception as error:
                ok, what = False, type(error).__name__
            stats.samples.append(Sample(sent - start, clock() - sent, ok, what))
            bar.update()

    await asyncio.gather(*(client() for _ in range(clients)))
    bar.close()
    stats.wall = clock() - start
    return stats


class Clock:
    """Seconds since the clock was made, for time-to-sell-out figures."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self._start
