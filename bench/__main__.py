"""`python -m bench`: benchmark the on-sale (see the README's Performance section).

By default it starts its own stack in a throwaway folder (PostgreSQL, Temporal dev server
on a SQLite file, worker, API, and the two baselines), runs the scenarios, and writes
bench/results/latest.json, latency.png and the generated part of RESULTS.md. With `--url`
it drives an already running service instead (baselines and process meters then need the
servers' addresses, so they are left out).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report, scenarios
from bench.data import Seeder
from bench.http import HttpClient
from bench.stack import OwnStack, ProcessGroup
from config import PROJECT_ROOT

SCENARIOS = ("latency", "ramp", "lifecycle", "contention", "stadium")
MAIN_HOLD_SECONDS = 4 * 60 * 60  # nothing of the ramp or stadium times out mid-run
LIFECYCLE_HOLD_SECONDS = 20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmark the on-sale of the TickeTing orders API."
    )
    parser.add_argument(
        "--scenario",
        default="all",
        help=f"all, or one or more (comma-separated) of {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--quick", action="store_true", help="short steps, small stadium")
    parser.add_argument("--url", help="drive a running service instead of starting one")
    parser.add_argument("--admin-key", default=os.environ.get("TICKETING_ADMIN_KEY"))
    parser.add_argument(
        "--database-url", help="with --url: read oversell checks from this database"
    )
    parser.add_argument(
        "--hold-seconds",
        type=int,
        default=None,
        help="with --url: the service's RESERVATION_SECONDS (timeouts measured if <= 120)",
    )
    parser.add_argument("--customers", type=int, default=None)
    parser.add_argument(
        "--stadium-tickets",
        type=int,
        default=None,
        help="tickets of the stadium (default 12,000, --quick 2,400; the real one: 60000)",
    )
    parser.add_argument("--stadium-buyers", type=int, default=24)
    parser.add_argument(
        "--ramp-targets",
        default="product,floor,direct",
        help="which of product, floor, direct the ramp measures (for tuning runs)",
    )
    parser.add_argument("--step-seconds", type=float, default=None)
    parser.add_argument("--out", type=Path, default=report.RESULTS_DIR)
    parser.add_argument("--keep", action="store_true", help="keep the stack's data folder")
    return parser.parse_args(argv)


def _commit() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit


async def run(args: argparse.Namespace, stack: OwnStack | None) -> dict[str, Any]:
    chosen = SCENARIOS if args.scenario == "all" else tuple(args.scenario.split(","))
    if stack is not None:
        api = HttpClient(stack.url("api"))
        lifecycle_api = HttpClient(stack.url("lifecycle_api"))
        baseline: HttpClient | None = HttpClient(stack.url("baseline"))
        database_url: str | None = stack.database_url
        groups = stack.processes()
        hold: int | None = LIFECYCLE_HOLD_SECONDS
    else:
        api = lifecycle_api = HttpClient(args.url)
        baseline = None
        database_url = args.database_url
        groups = {"load generator": ProcessGroup([os.getpid()])}
        hold = args.hold_seconds
    seeder = Seeder(database_url, api, args.admin_key)
    customers_wanted = args.customers or (1000 if database_url else 100)
    print(f"Making {customers_wanted} customers with sessions...", flush=True)
    customers = await seeder.customers(customers_wanted)
    bench = scenarios.Bench(
        api=api,
        lifecycle_api=lifecycle_api,
        baseline=baseline,
        seeder=seeder,
        customers=customers,
        database_url=database_url,
        lifecycle_hold=hold,
        quick=args.quick,
        groups=groups,
        step_seconds=args.step_seconds or (6.0 if args.quick else 12.0),
        stadium_tickets=args.stadium_tickets or (2_400 if args.quick else 12_000),
        stadium_buyers=args.stadium_buyers,
        ramp_targets=tuple(args.ramp_targets.split(",")),
    )
    results: dict[str, Any] = {}
    for name in chosen:
        print(f"\n== {name} ==", flush=True)
        began = time.monotonic()
        waited = await scenarios.quiesce(bench)
        print(f"   (servers idle after {waited} s)", flush=True)
        results[name] = await getattr(scenarios, name)(bench)
        print(f"   {name} took {time.monotonic() - began:.0f} s", flush=True)
    for client in {id(c): c for c in (api, lifecycle_api, baseline) if c}.values():
        await client.close()
    return {"scenarios": results, "series": bench.series}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    unknown = set(args.scenario.split(",")) - {*SCENARIOS, "all"}
    if unknown:
        sys.exit(f"unknown scenario {', '.join(sorted(unknown))}; choose from {SCENARIOS}")
    command = "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:])
    stack: OwnStack | None = None
    folder: Path | None = None
    began = time.monotonic()
    try:
        if args.url is None:
            folder = Path(tempfile.mkdtemp(prefix="bench-"))
            print(f"Starting the benchmark's own stack in {folder} ...", flush=True)
            stack = OwnStack(folder, MAIN_HOLD_SECONDS, LIFECYCLE_HOLD_SECONDS)
            stack.start()
        import uvloop

        outcome = uvloop.run(run(args, stack))
    finally:
        if stack is not None:
            print("Stopping the stack...", flush=True)
            stack.stop()
        if folder is not None and not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    result = {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": _commit(),
            "command": command.strip(),
            "mode": "own stack" if args.url is None else f"running service at {args.url}",
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "quick": args.quick,
            "total_seconds": round(time.monotonic() - began, 0),
        },
        "scenarios": outcome["scenarios"],
    }
    report.write(result, outcome["series"], args.out)
    print()
    print(report.markdown(result))
    files = ("latest.json", "latency.png", "RESULTS.md")
    written = ", ".join(str(args.out / name) for name in files)
    print(f"\nWrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
