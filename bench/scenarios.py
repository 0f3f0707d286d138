"""The scenarios: closed-loop latency, rate ramp (product and baselines), lifecycle,
contention and the stadium. Each returns a JSON-ready dict, plus raw series for the plot."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from tqdm import tqdm

from bench.data import CLIENT_VERSION, Customer, Section, Seeder
from bench.http import HttpClient, Response
from bench.loadgen import Outcome, RunStats, closed_loop, ms, open_loop, percentile
from bench.stack import Meters, ProcessGroup

# A step passes when p99 <= 500 ms, nothing failed, and >= 95 % of the offered rate came back.
P99_LIMIT = 0.5
ACHIEVED_SHARE = 0.95
RAMP_RATES = [10, 20, 30, 35, 40, 45, 50, 55, 60, 70, 80, 90, 100, 120, 150, 200, 300, 400, 600]
QUICK_RAMP_RATES = [10, 20, 30, 40, 50, 60, 80, 100, 150, 200, 300, 400, 600]
FLOW_RATES = [10, 15, 20, 25, 30, 35, 40, 45, 50, 60, 70, 80]
QUICK_FLOW_RATES = [10, 20, 30, 40, 50]
CARD = {
    "number": "4242424242424242",
    "cvv": "123",
    "expiryDate": "12/39",
    "name": "Bench Buyer",
    "email": "buyer@example.com",
    "phone": "+1 555 0100",
    "address1": "1 Main Street",
    "city": "Kingston",
    "district": "St Andrew",
    "country": "Jamaica",
}
_LEFT = re.compile(r"has only (\d+) tickets? left")


@dataclass
class Bench:
    """What every scenario needs: the clients, the customers, the meters."""

    api: HttpClient
    lifecycle_api: HttpClient
    baseline: HttpClient | None
    seeder: Seeder
    customers: list[Customer]
    database_url: str | None
    lifecycle_hold: int | None  # seconds of the short-hold API's holds, None if unknown
    quick: bool
    groups: dict[str, ProcessGroup]
    step_seconds: float
    stadium_tickets: int
    stadium_buyers: int
    ramp_targets: tuple[str, ...] = ("product", "floor", "direct")
    series: dict[str, Any] = field(default_factory=dict)  # raw data for the plot

    def headers(self, customer: Customer) -> dict[str, str]:
        return {"X-Client-Version": CLIENT_VERSION, "X-API-Key": customer.key}

    async def metered(self, body: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        meters = Meters(self.groups)
        meters.start()
        began = time.monotonic()
        result = await body()
        result["seconds"] = round(time.monotonic() - began, 1)
        result["processes"] = await meters.stop()
        return result

    async def db(self) -> asyncpg.Connection | None:
        return await asyncpg.connect(self.database_url) if self.database_url else None


# -- requests ------------------------------------------------------------------------------


def _items(sections: list[Section], rng: random.Random, most: int = 2) -> dict[str, int]:
    return {rng.choice(sections).uri: rng.randint(1, most)}


def order_request(bench: Bench, client: HttpClient, sections: list[Section], seed: int):
    """POST /orders for customer i (keys rotate, so per-key limits never bind)."""
    rng = random.Random(seed)

    async def request(index: int) -> Outcome:
        customer = bench.customers[index % len(bench.customers)]
        response = await client.request(
            "POST",
            "/orders",
            json_body={"items": _items(sections, rng)},
            headers=bench.headers(customer),
        )
        return response.status == 201, str(response.status)

    return request


def baseline_request(bench: Bench, path: str, sections: list[Section], seed: int):
    assert bench.baseline is not None
    rng = random.Random(seed)
    client = bench.baseline

    async def request(index: int) -> Outcome:
        customer = bench.customers[index % len(bench.customers)]
        response = await client.request(
            "POST", path, json_body={"customer": customer.number, "items": _items(sections, rng)}
        )
        return response.status == 201, str(response.status)

    return request


def step_passes(stats: RunStats, p99_limit: float = P99_LIMIT) -> bool:
    assert stats.offered_rate is not None
    return (
        stats.errors == 0
        and stats.percentile(99) <= p99_limit
        and stats.achieved_rate >= ACHIEVED_SHARE * stats.offered_rate
    )


async def _pause(seconds: float = 2.0) -> None:
    """A short breath between steps that went well."""
    await asyncio.sleep(seconds)


async def quiesce(bench: Bench, *, limit: float = 60.0) -> float:
    """Wait until the servers are idle again (under 0.2 cores together, load generator
    aside), so a step that overloaded them does not slow the next one. Returns the wait."""
    began = time.monotonic()
    servers = [group for name, group in bench.groups.items() if name != "load generator"]

    def total() -> float:
        return sum(sum(group.cpu_by_pid().values()) for group in servers)

    await asyncio.sleep(1.0)
    while time.monotonic() - began < limit:
        before = total()
        await asyncio.sleep(1.0)
        if total() - before < 0.2:
            break
    return round(time.monotonic() - began, 1)


# -- closed-loop latency -------------------------------------------------------------------


async def latency(bench: Bench) -> dict[str, Any]:
    """POST /orders with 1 and with 16 clients, each sending as soon as answered."""
    sections = await bench.seeder.event("Bench latency", 20, 1_000_000, "45.00")
    seconds = 6.0 if bench.quick else 20.0
    result: dict[str, Any] = {"seconds_each": seconds}
    for clients in (1, 16):
        request = order_request(bench, bench.api, sections, seed=clients)

        async def run(clients: int = clients, request=request) -> dict[str, Any]:
            stats = await closed_loop(
                clients, seconds, request, label=f"closed loop, {clients} clients"
            )
            return {"clients": clients, **stats.summary(), "throughput": stats.achieved_rate}

        result[f"clients_{clients}"] = await bench.metered(run)
        await _pause()
    return result


# -- ramp ----------------------------------------------------------------------------------


async def _ramp(
    bench: Bench, name: str, request: Callable[[int], Awaitable[Outcome]]
) -> dict[str, Any]:
    rates = QUICK_RAMP_RATES if bench.quick else RAMP_RATES
    steps: list[dict[str, Any]] = []
    best: float = 0.0
    samples: list[tuple[float, float, float]] = []  # (offered rate, intended at, latency)

    async def run() -> dict[str, Any]:
        nonlocal best
        for rate in rates:
            stats = await open_loop(
                rate, bench.step_seconds, request, label=f"ramp {name} @ {rate}/s"
            )
            passed = step_passes(stats)
            steps.append({**stats.summary(), "passed": passed})
            samples.extend((rate, s.at, s.latency) for s in stats.samples if s.ok)
            tqdm.write(
                f"  ramp {name:<8} {rate:>4}/s  achieved {stats.achieved_rate:6.1f}/s  "
                f"p50 {ms(stats.percentile(50))} ms  p99 {ms(stats.percentile(99))} ms  "
                f"errors {stats.errors}  {'pass' if passed else 'FAIL'}"
            )
            if not passed:
                break
            best = rate
            await _pause()
        return {"max_rate": best, "steps": steps}

    result = await bench.metered(run)
    ok_requests = sum(step["requests"] - step["errors"] for step in steps)
    result["cpu_ms_per_order"] = {
        process: round(1000 * figures["cpu_seconds"] / ok_requests, 2) if ok_requests else None
        for process, figures in result["processes"].items()
    }
    bench.series[f"ramp_{name}"] = {"steps": steps, "samples": samples}
    return result


async def _fixed_rate(
    bench: Bench, name: str, rate: float, request: Callable[[int], Awaitable[Outcome]]
) -> dict[str, Any]:
    seconds = 8.0 if bench.quick else 20.0

    async def run() -> dict[str, Any]:
        stats = await open_loop(rate, seconds, request, label=f"{name} @ {rate:g}/s")
        return stats.summary()

    result = await bench.metered(run)
    await _pause()
    return result


async def ramp(bench: Bench) -> dict[str, Any]:
    """Highest offered rate meeting the limits, for the product and both baselines; then
    all three at half the product's maximum, for latencies under the same load."""
    result: dict[str, Any] = {
        "criteria": {
            "p99_ms": P99_LIMIT * 1000,
            "errors": 0,
            "achieved_share": ACHIEVED_SHARE,
            "step_seconds": bench.step_seconds,
        }
    }
    targets: dict[str, Callable[[list[Section]], Callable[[int], Awaitable[Outcome]]]] = {
        "product": lambda sections: order_request(bench, bench.api, sections, seed=1),
    }
    if bench.baseline is not None:
        targets["floor"] = lambda sections: baseline_request(bench, "/floor/orders", sections, 2)
        targets["direct"] = lambda sections: baseline_request(bench, "/direct/orders", sections, 3)
    targets = {name: make for name, make in targets.items() if name in bench.ramp_targets}
    half = 0.0
    for name, make in targets.items():
        sections = await bench.seeder.event(f"Bench ramp {name}", 20, 1_000_000, "45.00")
        request = make(sections)
        result[name] = await _ramp(bench, name, request)
        await quiesce(bench)
        if "half_rate" not in result:  # the product's, or the first target's
            half = max(5.0, result[name]["max_rate"] / 2)
            result["half_rate"] = {"rate": half}
        # Every target at the same offered rate, on idle servers: latencies compare.
        result["half_rate"][name] = await _fixed_rate(bench, f"half-rate {name}", half, request)
        tqdm.write(
            f"  half-rate {name:<8} {half:g}/s  p50 {result['half_rate'][name]['p50_ms']} ms  "
            f"p99 {result['half_rate'][name]['p99_ms']} ms"
        )
        await quiesce(bench)
    return result


# -- lifecycle -----------------------------------------------------------------------------


async def _place(bench: Bench, client: HttpClient, customer: Customer, items: dict[str, int]):
    return await client.request(
        "POST", "/orders", json_body={"items": items}, headers=bench.headers(customer)
    )


async def _pay(bench: Bench, client: HttpClient, customer: Customer, number: str) -> Response:
    return await client.request(
        "POST", f"/orders/{number}/payments", json_body=CARD, headers=bench.headers(customer)
    )


async def lifecycle(bench: Bench) -> dict[str, Any]:
    """Place-and-pay throughput, then a mix of paid, cancelled and abandoned orders."""
    client = bench.lifecycle_api
    sections = await bench.seeder.event("Bench lifecycle", 20, 1_000_000, "45.00")
    rng = random.Random(7)
    place_latency: list[float] = []
    pay_latency: list[float] = []

    async def flow(index: int) -> Outcome:
        customer = bench.customers[index % len(bench.customers)]
        began = time.monotonic()
        placed = await _place(bench, client, customer, _items(sections, rng))
        place_latency.append(time.monotonic() - began)
        if placed.status != 201:
            return False, f"place {placed.status}"
        began = time.monotonic()
        paid = await _pay(bench, client, customer, placed.json()["number"])
        pay_latency.append(time.monotonic() - began)
        if paid.status != 201 or paid.json().get("status") != "Authorised":
            return False, f"pay {paid.status}"
        return True, "paid"

    rates = QUICK_FLOW_RATES if bench.quick else FLOW_RATES
    steps: list[dict[str, Any]] = []
    best = 0.0

    async def run_ramp() -> dict[str, Any]:
        nonlocal best
        for rate in rates:
            place_latency.clear()
            pay_latency.clear()
            stats = await open_loop(rate, bench.step_seconds, flow, label=f"place+pay @ {rate}/s")
            # Two requests per flow, each held to the ramp's 500 ms: 1 s for the pair.
            passed = step_passes(stats, p99_limit=2 * P99_LIMIT)
            steps.append(
                {
                    **stats.summary(),
                    "place_p99_ms": ms(percentile(place_latency, 99)),
                    "pay_p99_ms": ms(percentile(pay_latency, 99)),
                    "passed": passed,
                }
            )
            tqdm.write(
                f"  place+pay {rate:>4}/s  achieved {stats.achieved_rate:6.1f}/s  "
                f"flow p99 {ms(stats.percentile(99))} ms  errors {stats.errors}  "
                f"{'pass' if passed else 'FAIL'}"
            )
            if not passed:
                break
            best = rate
            await _pause()
        return {"max_flow_rate": best, "steps": steps}

    result: dict[str, Any] = {"throughput": await bench.metered(run_ramp)}
    await quiesce(bench)
    result["mix"] = await bench.metered(lambda: _mix(bench, sections, max(5.0, best / 2)))
    return result


async def _mix(bench: Bench, sections: list[Section], rate: float) -> dict[str, Any]:
    """60 % paid, 20 % cancelled, 20 % left to time out; what each costs and how long."""
    client = bench.lifecycle_api
    rng = random.Random(11)
    seconds = 10.0 if bench.quick else 30.0
    paid_sent: dict[str, float] = {}  # order number -> wall time the payment was sent
    abandoned: list[str] = []
    latencies: dict[str, list[float]] = {"place": [], "pay": [], "cancel": []}
    failures: dict[str, int] = {}

    def fail(what: str) -> Outcome:
        failures[what] = failures.get(what, 0) + 1
        return False, what

    async def buyer(index: int) -> Outcome:
        customer = bench.customers[index % len(bench.customers)]
        began = time.monotonic()
        placed = await _place(bench, client, customer, _items(sections, rng))
        latencies["place"].append(time.monotonic() - began)
        if placed.status != 201:
            return fail(f"place {placed.status}")
        number = placed.json()["number"]
        fate = index % 10
        await asyncio.sleep(0.2)  # the buyer reads the page before paying or cancelling
        began = time.monotonic()
        if fate < 6:
            paid_sent[number] = time.time()
            paid = await _pay(bench, client, customer, number)
            latencies["pay"].append(time.monotonic() - began)
            if paid.status != 201:
                return fail(f"pay {paid.status}")
            return True, "paid"
        if fate < 8:
            cancelled = await client.request(
                "DELETE", f"/orders/{number}", headers=bench.headers(customer)
            )
            latencies["cancel"].append(time.monotonic() - began)
            if cancelled.status != 200:
                return fail(f"cancel {cancelled.status}")
            return True, "cancelled"
        abandoned.append(number)
        return True, "left"

    # Waiting for holds to end makes sense only when they are short (our own stack's).
    timeouts = bench.lifecycle_hold is not None and bench.lifecycle_hold <= 120
    probe = asyncio.create_task(_back_on_sale_probe(bench)) if timeouts else None
    stats = await open_loop(rate, seconds, buyer, label=f"lifecycle mix @ {rate:g}/s")
    result: dict[str, Any] = {
        "rate": rate,
        **stats.summary(),
        "failures": failures,
        "place_p50_ms": ms(percentile(latencies["place"], 50)),
        "place_p99_ms": ms(percentile(latencies["place"], 99)),
        "pay_p50_ms": ms(percentile(latencies["pay"], 50)),
        "pay_p99_ms": ms(percentile(latencies["pay"], 99)),
        "cancel_p50_ms": ms(percentile(latencies["cancel"], 50)),
        "cancel_p99_ms": ms(percentile(latencies["cancel"], 99)),
    }
    if probe is not None:
        result["back_on_sale"] = await probe
    else:
        abandoned.clear()
        result["note"] = "holds too long to wait for: timeouts not measured (--hold-seconds)"
    conn = await bench.db()
    if conn is None:
        result["note"] = "no database access (--url): payment -> Fulfilled is the pay latency"
        return result
    try:
        result.update(await _lifecycle_from_db(conn, paid_sent, abandoned, bench.lifecycle_hold))
    finally:
        await conn.close()
    return result


async def _lifecycle_from_db(
    conn: asyncpg.Connection,
    paid_sent: dict[str, float],
    abandoned: list[str],
    hold: int | None,
) -> dict[str, Any]:
    """Payment -> Fulfilled and hold end -> Timed Out, from the rows' own timestamps."""
    deadline = time.monotonic() + (hold or 60) + 90
    rows: list[asyncpg.Record] = []
    with tqdm(total=len(abandoned), desc="waiting for holds to end", leave=False) as bar:
        while time.monotonic() < deadline:
            rows = await conn.fetch(
                "SELECT number, status, placed_at, closed_at,"
                " placed_at + make_interval(secs => $2) AS hold_end"
                " FROM orders WHERE number = ANY($1::text[])",
                abandoned,
                float(hold or 0),
            )
            done = sum(row["status"] != "Placed" for row in rows)
            bar.n = done
            bar.refresh()
            if done == len(abandoned):
                break
            await asyncio.sleep(1.0)
    late = [
        (row["closed_at"] - row["hold_end"]).total_seconds()
        for row in rows
        if row["status"] == "Timed Out" and row["closed_at"] is not None
    ]
    fulfilled = await conn.fetch(
        "SELECT number, status, closed_at FROM orders WHERE number = ANY($1::text[])",
        list(paid_sent),
    )
    to_fulfilled = [
        row["closed_at"].timestamp() - paid_sent[row["number"]]
        for row in fulfilled
        if row["status"] == "Fulfilled" and row["closed_at"] is not None
    ]
    return {
        "payment_to_fulfilled_p50_ms": ms(percentile(to_fulfilled, 50)),
        "payment_to_fulfilled_p99_ms": ms(percentile(to_fulfilled, 99)),
        "fulfilled": len(to_fulfilled),
        "timed_out": len(late),
        "left_to_time_out": len(abandoned),
        "hold_end_to_timed_out_p50_ms": ms(percentile(late, 50)),
        "hold_end_to_timed_out_p99_ms": ms(percentile(late, 99)),
        "hold_end_to_timed_out_max_ms": ms(max(late, default=float("nan"))),
    }


async def _back_on_sale_probe(bench: Bench) -> dict[str, Any]:
    """Hold all 4 tickets of a section, walk away, and time when a buyer can see them again."""
    client = bench.lifecycle_api
    (section,) = await bench.seeder.event("Bench hold probe", 1, 4, "45.00")
    customer = bench.customers[-1]
    placed = await _place(bench, client, customer, {section.uri: 4})
    if placed.status != 201:
        return {"error": f"probe order: {placed.status}"}
    expires = datetime.fromisoformat(placed.json()["expires"]).timestamp()
    path = f"/events/{section.event_id}/sections/{section.section_id}"
    deadline = expires + 120
    while time.time() < deadline:
        response = await client.request("GET", path, headers=bench.headers(customer))
        if response.status == 200 and response.json().get("remaining") == 4:
            seen = time.time()
            return {
                "hold_end_to_back_on_sale_ms": round((seen - expires) * 1000, 1),
                "poll_interval_ms": 50,
            }
        await asyncio.sleep(0.05 if time.time() > expires - 1 else 0.5)
    return {"error": "tickets not back on sale within 120 s of the hold's end"}


# -- contention ----------------------------------------------------------------------------


async def contention(bench: Bench) -> dict[str, Any]:
    buyers = 1000
    tickets = 100
    (section,) = await bench.seeder.event("Bench contention", 1, tickets, "45.00")
    if len(bench.customers) < buyers:
        tqdm.write(f"  note: {len(bench.customers)} customers share the {buyers} buyers")

    async def run() -> dict[str, Any]:
        clock = time.monotonic
        start = clock()
        held_at: list[float] = []
        paid_at: list[float] = []
        answered_at: list[float] = []
        outcomes: dict[str, int] = {}
        bar = tqdm(total=buyers, desc="1000 buyers, 100 tickets", leave=False)

        def count(what: str) -> None:
            outcomes[what] = outcomes.get(what, 0) + 1

        async def buyer(index: int) -> None:
            customer = bench.customers[index % len(bench.customers)]
            try:
                placed = await _place(bench, bench.api, customer, {section.uri: 1})
                answered_at.append(clock() - start)
                if placed.status == 400:
                    text = placed.json().get("message", "")
                    count("sold out" if "sold out" in text or "left" in text else "other 400")
                    return
                if placed.status != 201:
                    count(f"place {placed.status}")
                    return
                held_at.append(clock() - start)
                paid = await _pay(bench, bench.api, customer, placed.json()["number"])
                if paid.status == 201:
                    paid_at.append(clock() - start)
                    count("bought")
                else:
                    count(f"pay {paid.status}")
            except Exception as error:
                count(type(error).__name__)
            finally:
                bar.update()

        await asyncio.gather(*(buyer(index) for index in range(buyers)))
        bar.close()
        return {
            "buyers": buyers,
            "tickets": tickets,
            "outcomes": outcomes,
            "errors": sum(n for what, n in outcomes.items() if what not in ("bought", "sold out")),
            "all_held_s": round(max(held_at), 2) if len(held_at) >= tickets else None,
            "sold_out_s": round(max(paid_at), 2) if len(paid_at) >= tickets else None,
            "all_answered_s": round(max(answered_at, default=0.0), 2),
            "first_answer_p50_ms": ms(percentile(answered_at, 50)),
        }

    result = await bench.metered(run)
    result["check"] = await _check_sections(bench, [section])
    return result


async def _check_sections(bench: Bench, sections: list[Section]) -> dict[str, Any]:
    """Oversell and finality, from the database when we have it, else from the API."""
    capacity = sum(section.capacity for section in sections)
    conn = await bench.db()
    if conn is None:
        sold = reserved = 0
        customer = bench.customers[0]
        for section in sections:
            response = await bench.api.request(
                "GET",
                f"/events/{section.event_id}/sections/{section.section_id}",
                headers=bench.headers(customer),
            )
            body = response.json()
            sold += body["sold"]
            reserved += body["reserved"]
        return {
            "capacity": capacity,
            "sold": sold,
            "reserved": reserved,
            "oversold": max(0, sold + reserved - capacity),
            "source": "API",
        }
    ids = [section.section_id for section in sections]
    try:
        counters = await conn.fetchrow(
            "SELECT sum(sold)::int AS sold, sum(reserved)::int AS reserved"
            " FROM sections WHERE id = ANY($1::bigint[])",
            ids,
        )
        tickets = await conn.fetchval(
            "SELECT count(*) FROM tickets WHERE section_id = ANY($1::bigint[])", ids
        )
        live = await conn.fetchval(
            "SELECT coalesce(sum(quantity), 0)::int FROM holds WHERE section_id = ANY($1::bigint[])"
            " AND released_at IS NULL AND expires_at > now()",
            ids,
        )
        statuses = {
            row["status"]: row["n"]
            for row in await conn.fetch(
                "SELECT o.status, count(DISTINCT o.number)::int AS n FROM orders o"
                " JOIN order_items i ON i.order_number = o.number"
                " WHERE i.section_id = ANY($1::bigint[]) GROUP BY o.status",
                ids,
            )
        }
    finally:
        await conn.close()
    return {
        "capacity": capacity,
        "sold": counters["sold"],
        "tickets_issued": tickets,
        "reserved_counter": counters["reserved"],
        "live_holds": live,
        "oversold": max(0, tickets - capacity, counters["sold"] + live - capacity),
        "orders_by_status": statuses,
        "all_orders_final": statuses.get("Placed", 0) == 0,
        "source": "database",
    }


# -- the stadium ---------------------------------------------------------------------------


async def stadium(bench: Bench) -> dict[str, Any]:
    """Sell every ticket of a big event in orders of 1-4, each paid at once, as fast as the
    service allows (a fixed number of buyers, each starting again when done)."""
    blocks = 24
    per_block = max(1, bench.stadium_tickets // blocks)
    total = per_block * blocks
    sections = await bench.seeder.event("Bench stadium", blocks, per_block, "85.00")
    rng = random.Random(60_000)
    open_sections = list(range(blocks))
    sold_curve: list[tuple[float, int]] = [(0.0, 0)]
    counts = {"orders": 0, "tickets": 0, "errors": 0, "retries": 0, "rejections": 0}
    error_kinds: dict[str, int] = {}
    bar = tqdm(total=total, desc=f"stadium {total} tickets", unit="ticket", leave=False)
    clock = time.monotonic
    start = clock()

    def error(what: str) -> None:
        counts["errors"] += 1
        error_kinds[what] = error_kinds.get(what, 0) + 1

    async def pay(customer: Customer, number: str) -> bool:
        for _ in range(5):
            try:
                paid = await _pay(bench, bench.api, customer, number)
            except Exception as failure:
                error(type(failure).__name__)
                continue
            if paid.status == 201:
                return True
            error(f"pay {paid.status}")
            if paid.status == 409:  # already fulfilled by a retry that did get through
                return True
            await asyncio.sleep(0.5)
        return False

    async def buyer(seat: int) -> None:
        while open_sections:
            index = rng.choice(open_sections)
            quantity = rng.randint(1, 4)
            customer = bench.customers[rng.randrange(len(bench.customers))]
            while quantity > 0:
                try:
                    placed = await _place(
                        bench, bench.api, customer, {sections[index].uri: quantity}
                    )
                except Exception as failure:
                    error(type(failure).__name__)
                    break
                if placed.status == 201:
                    if await pay(customer, placed.json()["number"]):
                        counts["orders"] += 1
                        counts["tickets"] += quantity
                        sold_curve.append((clock() - start, counts["tickets"]))
                        bar.update(quantity)
                    break
                if placed.status == 400:
                    counts["rejections"] += 1
                    text = placed.json().get("message", "")
                    left = _LEFT.search(text)
                    if left:
                        quantity = int(left.group(1))
                        counts["retries"] += 1
                        continue
                    if "sold out" in text:
                        with contextlib.suppress(ValueError):
                            open_sections.remove(index)
                        break
                error(f"place {placed.status}")
                await asyncio.sleep(0.2)
                break

    async def run() -> dict[str, Any]:
        for _ in range(3):  # a last round picks up tickets freed by failed payments
            await asyncio.gather(*(buyer(seat) for seat in range(bench.stadium_buyers)))
            check = await _check_sections(bench, sections)
            if check["sold"] >= total:
                break
            open_sections.extend(range(blocks))
            await asyncio.sleep(1.0)
        bar.close()
        sell_out = sold_curve[-1][0]
        orders_per_s = counts["orders"] / sell_out if sell_out else 0.0
        tickets_per_s = counts["tickets"] / sell_out if sell_out else 0.0
        return {
            "tickets": total,
            "sections": blocks,
            "buyers": bench.stadium_buyers,
            "sell_out_s": round(sell_out, 1),
            "orders_per_s": round(orders_per_s, 2),
            "tickets_per_s": round(tickets_per_s, 2),
            **counts,
            "error_kinds": error_kinds,
            "check": check,
        }

    result = await bench.metered(run)
    bench.series["stadium"] = sold_curve
    # What 60,000 tickets would take at the measured pace, and what 10 minutes would need.
    full = 60_000
    if result["tickets_per_s"]:
        result["projected_60000_s"] = round(full / result["tickets_per_s"], 0)
    avg = result["tickets"] / result["orders"] if result["orders"] else 2.5
    result["needed_for_10_min"] = {
        "tickets_per_s": round(full / 600, 1),
        "orders_per_s": round(full / 600 / avg, 1),
    }
    return result
