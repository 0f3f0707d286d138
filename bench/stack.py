"""The benchmark's own stack, started the way users run the service, and its process meters.

PostgreSQL (embedded, durable like `make run`), a Temporal dev server with a SQLite file on
disk (like `make run`), the real worker and API as child processes (as tests/conftest.py
starts them, with devstack's own command lines), plus the two baselines: a worker for the
floor workflow and the bare baseline app. Everything lives in a throwaway folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from config import PROJECT_ROOT, Settings
from devstack.__main__ import api_command, worker_command
from devstack.postgres import EmbeddedPostgres
from devstack.processes import child_popen_kwargs, free_port, tail, terminate
from devstack.temporal import TemporalDevServer

READY_TIMEOUT = 90.0
FLOOR_TASK_QUEUE = "bench-floor"


class StackError(RuntimeError):
    pass


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, ready_url: str | None = None, ready_pattern: str | None = None) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=PROJECT_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                **child_popen_kwargs(),  # type: ignore[arg-type]
            )
        deadline = time.monotonic() + READY_TIMEOUT
        pattern = re.compile(ready_pattern) if ready_pattern else None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StackError(
                    f"{self.name} exited with code {self.process.returncode} while starting\n"
                    f"{tail(self.log_path)}"
                )
            if ready_url is not None:
                with (
                    contextlib.suppress(OSError),
                    urllib.request.urlopen(ready_url, timeout=2) as response,
                ):
                    if response.status == 200:
                        return
            elif pattern is not None:
                if pattern.search(self.log_path.read_text(errors="replace")):
                    return
            else:
                return
            time.sleep(0.1)
        raise StackError(
            f"{self.name} not ready after {READY_TIMEOUT:.0f} s\n{tail(self.log_path)}"
        )

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process, 15.0)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


@dataclass
class OwnStack:
    """Everything the benchmark runs against, on free ports in `folder`."""

    folder: Path
    reservation_seconds: int
    lifecycle_reservation_seconds: int
    postgres: EmbeddedPostgres | None = None
    temporal: TemporalDevServer | None = None
    children: dict[str, Child] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        assert self.postgres is not None
        return self.postgres.url

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self) -> None:
        from db.migrate import migrate

        self.folder.mkdir(parents=True, exist_ok=True)
        self.postgres = EmbeddedPostgres(self.folder / "postgres", free_port())
        self.postgres.start()
        asyncio.run(migrate(self.postgres.url))
        self.temporal = TemporalDevServer(
            free_port(), None, self.folder / "temporal.db", log_dir=self.folder
        )
        self.temporal.start()
        base_env = {
            **os.environ,
            "DATABASE_URL": self.postgres.url,
            "TEMPORAL_ADDRESS": self.temporal.address,
            "TEMPORAL_NAMESPACE": self.temporal.namespace,
            "RESERVATION_SECONDS": str(self.reservation_seconds),
            # Per-key rate limits, if this version has them, would measure the limiter.
            "RATE_LIMIT_PER_MINUTE": "0",
            "PYTHONUNBUFFERED": "1",
        }
        self._start_child("worker", worker_command(), base_env, ready_pattern=r"(?i)polling")
        self._start_api("api", "api.main:app", base_env)
        lifecycle_env = base_env | {"RESERVATION_SECONDS": str(self.lifecycle_reservation_seconds)}
        self._start_api("lifecycle_api", "api.main:app", lifecycle_env)
        self._start_child(
            "floor_worker",
            [sys.executable, "-m", "bench.floor"],
            base_env,
            ready_pattern=r"(?i)polling",
        )
        self._start_api("baseline", "bench.baseline_app:app", base_env)

    def _start_api(self, name: str, app: str, env: dict[str, str]) -> None:
        port = free_port()
        self.ports[name] = port
        argv = api_command(Settings(host="127.0.0.1", port=port))
        argv[argv.index("api.main:app")] = app
        self._start_child(
            name, argv, env | {"PORT": str(port)}, ready_url=f"http://127.0.0.1:{port}/healthz"
        )

    def _start_child(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        *,
        ready_url: str | None = None,
        ready_pattern: str | None = None,
    ) -> None:
        child = Child(name, argv, env, self.folder / f"{name}.log")
        self.children[name] = child
        child.start(ready_url=ready_url, ready_pattern=ready_pattern)

    def stop(self) -> None:
        for name in ("baseline", "lifecycle_api", "api", "floor_worker", "worker"):
            if name in self.children:
                self.children[name].stop()
        if self.temporal is not None:
            self.temporal.stop()
        if self.postgres is not None:
            self.postgres.stop("fast")

    def processes(self) -> dict[str, ProcessGroup]:
        """What the meters watch, by the names the report uses."""
        groups: dict[str, ProcessGroup] = {"load generator": ProcessGroup([os.getpid()])}
        if self.temporal is not None and self.temporal.process is not None:
            groups["Temporal server"] = ProcessGroup([self.temporal.process.pid])
        if self.postgres is not None:
            postmaster = self.postgres._postmaster()
            if postmaster is not None:
                groups["PostgreSQL"] = ProcessGroup([postmaster.pid], with_children=True)
        labels = {
            "worker": "worker",
            "api": "API",
            "lifecycle_api": "API (short holds)",
            "floor_worker": "floor worker",
            "baseline": "baseline app",
        }
        for name, label in labels.items():
            if name in self.children:
                groups[label] = ProcessGroup([self.children[name].pid])
        return groups


@dataclass
class ProcessGroup:
    """One or more processes whose CPU time is added up (PostgreSQL: postmaster + backends)."""

    pids: list[int]
    with_children: bool = False

    def _processes(self) -> list[psutil.Process]:
        found: list[psutil.Process] = []
        for pid in self.pids:
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(pid)
                found.append(process)
                if self.with_children:
                    found.extend(process.children(recursive=True))
        return found

    def cpu_by_pid(self) -> dict[int, float]:
        times: dict[int, float] = {}
        for process in self._processes():
            with contextlib.suppress(psutil.Error):
                cpu = process.cpu_times()
                times[process.pid] = cpu.user + cpu.system
        return times

    def rss(self) -> int:
        total = 0
        for process in self._processes():
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
        return total


class Meters:
    """CPU seconds of each process over a scenario, and the peak memory of each.

    Peak memory is sampled every 0.2 s (and, for single processes on Linux, also read from
    VmHWM after resetting it through /proc/PID/clear_refs at the start).
    """

    def __init__(self, groups: dict[str, ProcessGroup]) -> None:
        self.groups = groups
        self._start: dict[str, dict[int, float]] = {}
        self._peak: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._began = 0.0
        self._machine = 0.0

    def start(self) -> None:
        self._began = time.monotonic()
        self._machine = _machine_busy()
        self._start = {name: group.cpu_by_pid() for name, group in self.groups.items()}
        self._peak = {name: group.rss() for name, group in self.groups.items()}
        for group in self.groups.values():
            if not group.with_children:
                for pid in group.pids:
                    if pid != os.getpid():
                        with contextlib.suppress(OSError):
                            Path(f"/proc/{pid}/clear_refs").write_text("5")
        self._task = asyncio.get_running_loop().create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            for name, group in self.groups.items():
                self._peak[name] = max(self._peak.get(name, 0), group.rss())

    async def stop(self) -> dict[str, dict[str, float]]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        elapsed = time.monotonic() - self._began
        machine = _machine_busy() - self._machine
        report: dict[str, dict[str, float]] = {}
        for name, group in self.groups.items():
            now = group.cpu_by_pid()
            before = self._start.get(name, {})
            # Processes that appeared meanwhile count from zero; vanished ones are lost.
            cpu = sum(value - before.get(pid, 0.0) for pid, value in now.items())
            peak = self._peak.get(name, 0)
            if not group.with_children and len(group.pids) == 1:
                peak = max(peak, _vm_hwm(group.pids[0]))
            report[name] = {
                "cpu_seconds": round(cpu, 2),
                "cpu_share": round(cpu / elapsed, 3) if elapsed > 0 else 0.0,
                "peak_rss_mib": round(peak / 2**20, 1),
            }
        # Whatever else ran on the machine meanwhile (other users' test runs, say): a run
        # with much of it is noisy, and the report says so.
        ours = sum(figures["cpu_seconds"] for figures in report.values())
        report["other processes"] = {
            "cpu_seconds": round(max(0.0, machine - ours), 2),
            "cpu_share": round(max(0.0, machine - ours) / elapsed, 3) if elapsed > 0 else 0.0,
            "peak_rss_mib": 0.0,
        }
        return report


def _machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores, all processes)."""
    times = psutil.cpu_times()
    parts = ("user", "nice", "system", "irq", "softirq", "steal")  # guest is within user
    return sum(getattr(times, part, 0.0) for part in parts)


def _vm_hwm(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0
