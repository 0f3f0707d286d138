"""`make run`: the whole service in the foreground, with data kept in `settings.data_dir`.

Starts what is not configured (PostgreSQL when DATABASE_URL is empty, a Temporal dev server
with its Web UI when TEMPORAL_ADDRESS is empty), migrates and seeds the database, then runs
the worker and the API as children and prints where everything is. Ctrl-C or SIGTERM stops
them in dependency order: API, worker, Temporal, PostgreSQL. A second Ctrl-C cuts the
graceful waits short. If any part dies on its own, everything stops and the exit is non-zero.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from config import PROJECT_ROOT, Settings, get_settings
from devstack.postgres import EmbeddedPostgres, PostgresError
from devstack.processes import child_popen_kwargs, port_is_free, terminate
from devstack.temporal import TemporalDevServer, TemporalStartError

DEFAULT_POSTGRES_PORT = 54329
TEMPORAL_PORT = 7233
CLIENT_VERSION = "3.0.0"
API_STOP_TIMEOUT = 15.0
WORKER_STOP_TIMEOUT = 30.0
API_READY_TIMEOUT = 60.0
# A worker or API that dies after running this long is restarted; sooner, it is broken.
RESTART_AFTER_SECONDS = 10.0


class StartupError(RuntimeError):
    """Something could not start; the message says what to do about it."""


class ChildDied(RuntimeError):
    """A part of the service exited without being asked to."""


def worker_command() -> list[str]:
    """The worker's command line (run from the repository root)."""
    return [sys.executable, "worker.py"]


def api_command(settings: Settings) -> list[str]:
    """The API's command line: uvicorn with the fast event loop and HTTP parser."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "api.main:app",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
    ]


def prepare_database(database_url: str) -> Any:
    """Migrate, then seed the demo data; returns the demo credentials (`DemoCredentials`).

    Imported here, not at the top: the supervisor must not drag the application's modules
    into its own process before it needs them.
    """
    from db import demo, migrate

    asyncio.run(migrate.migrate(database_url))
    return asyncio.run(demo.seed(database_url))


@dataclass
class Child:
    """A worker or API process the supervisor started."""

    name: str
    process: subprocess.Popen[bytes]
    stop_timeout: float
    argv: list[str] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)


@dataclass
class Supervisor:
    """Starts the parts in order, watches them, and stops them in reverse order.

    The commands and the database step are fields so a test can run the real supervisor
    with stand-in children.
    """

    settings: Settings
    worker_argv: list[str]
    api_argv: list[str]
    prepare: Callable[[str], Any] = prepare_database
    postgres_port: int = DEFAULT_POSTGRES_PORT
    temporal_port: int = TEMPORAL_PORT
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    postgres: EmbeddedPostgres | None = None
    temporal: TemporalDevServer | None = None
    children: list[Child] = field(default_factory=list)
    stopping: bool = False
    hurry: bool = False

    @property
    def api_url(self) -> str:
        return f"http://{_reachable_host(self.settings.host)}:{self.settings.port}"

    def run(self) -> int:
        """Start everything, watch it, stop it all; returns the exit code for the shell."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        code = 0
        try:
            with ExitStack() as stack:  # unwinding it stops what was started, in reverse
                try:
                    self._start_all(stack)
                    while True:
                        self._check_children()
                        time.sleep(0.5)
                except KeyboardInterrupt:
                    print("\nShutting down.", flush=True)
                except ChildDied as died:
                    print(f"\n{died}; shutting everything down.", file=sys.stderr, flush=True)
                    code = 1
                except (StartupError, PostgresError, TemporalStartError) as error:
                    print(f"\nCannot start: {error}", file=sys.stderr, flush=True)
                    code = 1
                finally:
                    self.stopping = True
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        print("Stopped.", flush=True)
        return code

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """First signal: stop (as KeyboardInterrupt, so startup steps unwind too).
        Later signals, while stopping: skip the remaining graceful waits."""
        if not self.stopping:
            raise KeyboardInterrupt
        if not self.hurry:
            print("\nStopping now, without waiting for graceful exits.", flush=True)
        self.hurry = True

    def _start_all(self, stack: ExitStack) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self._claim_data_dir(stack)
        _require_free_port(self.settings.port, "PORT", "the API", self.settings.host)
        if not self.settings.temporal_address:
            _require_free_port(self.temporal_port, None, "Temporal")
            _require_free_port(
                self.settings.temporal_ui_port, "TEMPORAL_UI_PORT", "the Temporal UI"
            )
        database_url = self._start_postgres(stack)
        temporal_address = self._start_temporal(stack)
        self.env["DATABASE_URL"] = database_url
        self.env["TEMPORAL_ADDRESS"] = temporal_address
        credentials = self.prepare(database_url)
        self._start_child(stack, "worker", self.worker_argv, WORKER_STOP_TIMEOUT)
        self._start_child(stack, "API", self.api_argv, API_STOP_TIMEOUT)
        if not self._wait_for_api():
            print(f"Warning: {self.api_url}/healthz has not answered 200 yet.", flush=True)
        print(banner(self, database_url, temporal_address, credentials), flush=True)

    def _claim_data_dir(self, stack: ExitStack) -> None:
        """One `make run` per data folder: a second one must not reuse (and then stop) the
        first one's PostgreSQL. The lock dies with the process, so a killed run leaves none."""
        lock_file = open(self.settings.data_dir / "make-run.lock", "a+")  # noqa: SIM115
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise StartupError(
                f"another `make run` is using {self.settings.data_dir}; stop it first, or give "
                "this one its own DATA_DIR, PORT, TEMPORAL_UI_PORT and EMBEDDED_POSTGRES_PORT"
            ) from None
        stack.callback(lock_file.close)

    def _start_postgres(self, stack: ExitStack) -> str:
        """The database URL: DATABASE_URL if set, else our embedded server's."""
        if self.settings.database_url:
            return self.settings.database_url
        port = self.postgres_port
        self.postgres = EmbeddedPostgres(self.settings.data_dir / "postgres", port=port)
        if not self.postgres.is_running():  # one left by a killed run is simply reused
            _require_free_port(port, "EMBEDDED_POSTGRES_PORT", "PostgreSQL")
        stack.callback(self._stop_postgres, self.postgres)
        print(f"Starting PostgreSQL on 127.0.0.1:{port} (log: {self.postgres.log_path})")
        self.postgres.start()
        return self.postgres.url

    def _stop_postgres(self, postgres: EmbeddedPostgres) -> None:
        print("Stopping PostgreSQL", flush=True)
        postgres.stop("immediate" if self.hurry else "fast")

    def _start_temporal(self, stack: ExitStack) -> str:
        """The Temporal address: TEMPORAL_ADDRESS if set, else our dev server's."""
        if self.settings.temporal_address:
            return self.settings.temporal_address
        ui_port = self.settings.temporal_ui_port
        self.temporal = TemporalDevServer(
            self.temporal_port,
            ui_port,
            self.settings.data_dir / "temporal.db",
            self.settings.temporal_namespace,
            log_dir=self.settings.data_dir,
        )
        stack.callback(self._stop_temporal, self.temporal)
        print(f"Starting Temporal on {self.temporal.address} (log: {self.temporal.log_path})")
        self.temporal.start()
        return self.temporal.address

    def _stop_temporal(self, temporal: TemporalDevServer) -> None:
        print("Stopping Temporal", flush=True)
        if self.hurry:
            temporal.kill()
        else:
            temporal.stop()

    def _start_child(self, stack: ExitStack, name: str, argv: list[str], timeout: float) -> None:
        """Start the worker or the API with the exported environment; its output is ours."""
        print(f"Starting the {name}", flush=True)
        child = Child(name, self._spawn(argv), timeout, argv)
        self.children.append(child)
        stack.callback(self._stop_child, child)

    def _spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        """A worker or API process with the exported environment; its output is ours."""
        return subprocess.Popen(
            argv,
            cwd=PROJECT_ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            **child_popen_kwargs(),  # type: ignore[arg-type]
        )

    def _stop_child(self, child: Child) -> None:
        if child.process.poll() is None:
            print(f"Stopping the {child.name}", flush=True)
        terminate(child.process, child.stop_timeout, hurry=lambda: self.hurry)

    def _wait_for_api(self) -> bool:
        """Poll /healthz so the banner comes when its URLs work; False after the timeout."""
        deadline = time.monotonic() + API_READY_TIMEOUT
        while time.monotonic() < deadline:
            self._check_children()
            try:
                with urllib.request.urlopen(f"{self.api_url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return True
            except OSError:  # URLError and HTTPError are OSErrors
                pass
            time.sleep(0.2)
        return False

    def _check_children(self) -> None:
        """Raise ChildDied when a part we started has exited on its own."""
        for child in self.children:
            code = child.process.poll()
            if code is None:
                continue
            if time.monotonic() - child.started_at < RESTART_AFTER_SECONDS:
                raise ChildDied(f"the {child.name} exited unexpectedly with code {code}")
            # A crash after a healthy start: bring it back, as an orchestrator would.
            print(
                f"\nThe {child.name} exited unexpectedly with code {code}; restarting it.",
                file=sys.stderr,
                flush=True,
            )
            child.process = self._spawn(child.argv)
            child.started_at = time.monotonic()
        if self.temporal is not None and not self.temporal.is_running():
            raise ChildDied(f"the Temporal server exited unexpectedly ({self.temporal.log_path})")
        if self.postgres is not None and not self.postgres.is_running():
            raise ChildDied(f"PostgreSQL stopped unexpectedly ({self.postgres.log_path})")


def _reachable_host(host: str) -> str:
    """Where a client on this machine reaches a server bound to `host`."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _require_free_port(port: int, variable: str | None, what: str, host: str = "127.0.0.1") -> None:
    """Fail early with advice, rather than with a bind error deep in some server's log."""
    if port_is_free(_reachable_host(host), port):
        return
    hint = f", or set {variable} to another port" if variable else ""
    raise StartupError(
        f"port {port} for {what} is taken. Is another `make run` still running? Stop it{hint}."
    )


def session_curl(api_url: str, identification: str, password: str) -> str:
    """A copy-pasteable curl that logs in and prints the session key."""
    body = json.dumps({"identification": identification, "password": password})
    return (
        f"curl -s -X POST {api_url}/sessions -H 'X-Client-Version: {CLIENT_VERSION}' "
        f"-H 'Content-Type: application/json' -d {shlex.quote(body)}"
    )


def banner(
    supervisor: Supervisor, database_url: str, temporal_address: str, credentials: Any
) -> str:
    """What is where, printed at every start."""
    api_url = supervisor.api_url
    ui_url = supervisor.temporal.ui_url if supervisor.temporal is not None else None
    customer, password = credentials.customer_username, credentials.customer_password
    lines = [
        "",
        "=" * 78,
        "TickeTing orders is running. Ctrl-C stops everything.",
        f"  API             {api_url}    docs: {api_url}/docs",
        f"  Temporal        {temporal_address}" + (f"    UI: {ui_url}" if ui_url else ""),
        f"  PostgreSQL      {database_url}",
        f"  Data folder     {supervisor.settings.data_dir}",
        f"  Admin login     {credentials.admin_username} / {credentials.admin_password}",
        f"  Customer login  {customer} / {password}",
        f"  Demo event      {credentials.event_id}: {', '.join(credentials.section_uris)}",
        "  Session key for the customer:",
        f"    {session_curl(api_url, customer, password)}",
        "=" * 78,
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    settings = get_settings()
    supervisor = Supervisor(
        settings,
        worker_command(),
        api_command(settings),
        postgres_port=settings.embedded_postgres_port,
    )
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
