"""Real servers for the whole test session: PostgreSQL, Temporal, the worker and the API.

Nothing is mocked: fixtures start an embedded PostgreSQL and a Temporal dev server on free
ports with throwaway data, then the real worker and uvicorn as child processes configured
through the environment, exactly as in production. Every one of them is stopped at the end
of the session, also when tests fail, on Ctrl-C and on SIGTERM; and failed tests report
where each child's log is.

Set TEST_DATABASE_URL to run against an existing PostgreSQL instead of an embedded one
(tests that stop the database are then skipped).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import httpx
import pytest
from temporalio.client import Client
from temporalio.converter import DataConverter

from devstack.postgres import EmbeddedPostgres
from devstack.processes import child_popen_kwargs, tail, terminate
from devstack.processes import free_port as _free_port
from devstack.temporal import TemporalDevServer

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "5e1f0c0ffee0ddba11c0de0000000001"  # TICKETING_ADMIN_KEY of the test API
CLIENT_VERSION = "3.0.0"
RESERVATION_SECONDS = 4  # short holds, so expiry tests wait seconds, not minutes
SETTLEMENT_GRACE_SECONDS = 30
API_READY_TIMEOUT = 60.0
WORKER_READY_TIMEOUT = 2.0  # the worker polls soon; tests tolerate a late first poll
CHILD_STOP_TIMEOUT = 10.0

# name -> log file of every server and child started in this session, for failure reports.
_LOGS: dict[str, Path] = {}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    return _free_port()


# -- child processes -------------------------------------------------------------------------


@dataclass
class ChildProcess:
    """The worker or the API as a child process, which tests may stop, kill and restart.

    Output (stdout and stderr) is appended to `log_path` across restarts. `start()` returns
    when `ready_url` answers 200 (failing with the log's tail after `ready_timeout`), or when
    `ready_pattern` shows up in the log or `ready_timeout` passes.
    """

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready_timeout: float
    ready_url: str | None = None
    ready_pattern: str | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the process (no-op when running) and wait until it is ready."""
        if self.is_running():
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                **child_popen_kwargs(),  # type: ignore[arg-type]
            )
        if self.ready_url is not None:
            self._wait_for_url(self.ready_url)
        elif self.ready_pattern is not None:
            self._wait_for_log(re.compile(self.ready_pattern), offset)

    def stop(self, timeout: float = CHILD_STOP_TIMEOUT) -> int | None:
        """SIGTERM, wait up to `timeout` s for a graceful exit, then SIGKILL. The exit code."""
        if self.process is None:
            return None
        return terminate(self.process, timeout)

    def kill(self) -> None:
        """SIGKILL, like a crash of the process or its machine."""
        if self.is_running():
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def _fail(self, why: str) -> NoReturn:
        self.kill()
        pytest.fail(
            f"{self.name} {why}\n--- tail of {self.log_path} ---\n{tail(self.log_path, 60)}",
            pytrace=False,
        )

    def _check_alive(self) -> None:
        code = self.process.poll() if self.process is not None else None
        if code is not None:
            self._fail(f"exited with code {code} while starting")

    def _wait_for_url(self, url: str) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self._fail(f"did not answer 200 on {url} within {self.ready_timeout:.0f} s")

    def _wait_for_log(self, pattern: re.Pattern[str], offset: int) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            self._check_alive()
            with self.log_path.open("rb") as log:
                log.seek(offset)
                if pattern.search(log.read().decode("utf-8", errors="replace")):
                    return
            time.sleep(0.05)


@dataclass
class ExternalPostgres:
    """TEST_DATABASE_URL's server: usable, but not ours to stop, so outage tests skip."""

    url: str

    def start(self) -> None:
        """Nothing to do: the server is someone else's and assumed to be running."""

    def stop(self, mode: str = "fast") -> None:
        pytest.skip("TEST_DATABASE_URL is set: the database cannot be stopped by tests")

    def kill(self) -> None:
        pytest.skip("TEST_DATABASE_URL is set: the database cannot be killed by tests")

    def is_running(self) -> bool:
        return True


# -- servers ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def devstack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Throwaway folder for the session's data and logs (short, for Unix socket paths)."""
    return tmp_path_factory.mktemp("devstack")


@pytest.fixture(scope="session")
def postgres(devstack_dir: Path) -> Iterator[EmbeddedPostgres | ExternalPostgres]:
    """The session's PostgreSQL: embedded, non-durable for speed, on a free port."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield ExternalPostgres(external)
        return
    server = EmbeddedPostgres(devstack_dir / "postgres", free_port(), durable=False)
    _LOGS["postgres"] = server.log_path
    try:
        server.start()
        yield server
    finally:
        server.stop("immediate")  # throwaway data: no shutdown checkpoint needed


@pytest.fixture(scope="session")
async def database_url(postgres: EmbeddedPostgres | ExternalPostgres) -> str:
    """The application database URL, migrated to the current schema."""
    from db.migrate import migrate

    await migrate(postgres.url)
    return postgres.url


@pytest.fixture(scope="session")
def temporal_server(devstack_dir: Path) -> Iterator[TemporalDevServer]:
    """A headless, in-memory Temporal dev server with our search attributes."""
    server = TemporalDevServer(free_port(), None, None, log_dir=devstack_dir)
    _LOGS["temporal"] = server.log_path
    try:
        server.start()
        yield server
    finally:
        server.kill()  # in memory: nothing to flush, no reason to wait


@pytest.fixture(scope="session")
def settings_env(database_url: str, temporal_server: TemporalDevServer) -> dict[str, str]:
    """Environment for the worker and API children: real servers, short holds."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "TEMPORAL_ADDRESS": temporal_server.address,
        "TEMPORAL_NAMESPACE": temporal_server.namespace,
        "RESERVATION_SECONDS": str(RESERVATION_SECONDS),
        "SETTLEMENT_GRACE_SECONDS": str(SETTLEMENT_GRACE_SECONDS),
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "TICKETING_ADMIN_KEY": ADMIN_KEY,
        "PYTHONUNBUFFERED": "1",  # logs reach the files as they happen
    }


@pytest.fixture(scope="session")
def worker_process(settings_env: dict[str, str], devstack_dir: Path) -> Iterator[ChildProcess]:
    """The real worker (`python worker.py`) against the session's servers."""
    worker = ChildProcess(
        name="worker",
        argv=[sys.executable, "worker.py"],
        env=settings_env,
        log_path=devstack_dir / "worker.log",
        ready_timeout=WORKER_READY_TIMEOUT,
        ready_pattern=r"(?i)polling",
    )
    _LOGS["worker"] = worker.log_path
    try:
        worker.start()
        yield worker
    finally:
        worker.stop()


@pytest.fixture(scope="session")
def api_process(settings_env: dict[str, str], devstack_dir: Path) -> Iterator[ChildProcess]:
    """The real API under uvicorn, as `make run` starts it, ready when /healthz says 200."""
    port = settings_env["PORT"]
    api = ChildProcess(
        name="api",
        argv=[
            sys.executable,
            "-m",
            "uvicorn",
            "api.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            port,
            "--loop",
            "uvloop",
            "--http",
            "httptools",
        ],
        env=settings_env,
        log_path=devstack_dir / "api.log",
        ready_timeout=API_READY_TIMEOUT,
        ready_url=f"http://127.0.0.1:{port}/healthz",
    )
    _LOGS["api"] = api.log_path
    try:
        api.start()
        yield api
    finally:
        api.stop()


@pytest.fixture(scope="session")
def api_url(api_process: ChildProcess, worker_process: ChildProcess) -> str:
    """Base URL of the running service: the API answers and a worker serves its orders."""
    return f"http://127.0.0.1:{api_process.env['PORT']}"


@pytest.fixture
async def client(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the API that sends the current client version."""
    async with httpx.AsyncClient(
        base_url=api_url, headers={"X-Client-Version": CLIENT_VERSION}, timeout=30
    ) as http:
        yield http


@pytest.fixture(scope="session")
async def temporal_client(temporal_server: TemporalDevServer) -> Client:
    """A Temporal client with the application's data converter (default until it exists)."""
    try:
        from workflows.converter import data_converter
    except ModuleNotFoundError as missing:
        if missing.name not in ("workflows", "workflows.converter"):
            raise
        data_converter = DataConverter.default
    return await Client.connect(
        temporal_server.address, namespace=temporal_server.namespace, data_converter=data_converter
    )


# -- reporting, interruption and the exit code ------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach where each child's log is (and the tail of the worker's and API's) to a
    failure, since the cause of an HTTP 500 is usually only in those logs."""
    report = yield
    if report.failed and _LOGS:
        parts = [f"{name}: {path}" for name, path in _LOGS.items()]
        for name in ("worker", "api"):
            if name in _LOGS:
                parts.append(f"--- tail of {name} log ---\n{tail(_LOGS[name], 15)}")
        report.sections.append(("devstack logs", "\n".join(parts)))
    return report


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int) -> None:
    if exitstatus != 0 and _LOGS:
        terminalreporter.section("devstack logs")
        for name, path in _LOGS.items():
            terminalreporter.write_line(f"{name:>9}: {path}")


_session: pytest.Session | None = None


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _exit_with_pytest_status() -> None:
    """Last atexit step: end the process with pytest's own status, now.

    The Temporal SDK's native threads can abort the interpreter while it finalizes (exit
    134, STACK-NOTES), which would turn a green run red. Everything pytest writes is done
    by now, so flush and leave before finalization.
    """
    if _session is None:  # pytest stopped before running tests: let it exit normally
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()
    os._exit(int(_session.exitstatus))


def pytest_configure(config: pytest.Config) -> None:
    # Registered first, so it runs after every other atexit handler.
    atexit.register(_exit_with_pytest_status)
    # CI stops a run with SIGTERM: unwind as for Ctrl-C, so fixtures stop their servers.
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    ):
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _session
    _session = session
