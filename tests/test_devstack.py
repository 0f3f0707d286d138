"""The dev servers and the `make run` supervisor, against the real binaries.

PostgreSQL and Temporal must keep their data across a clean restart and across a crash;
the supervisor must print where everything is, stop everything on SIGTERM and exit non-zero
when a part dies.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest
from temporalio.api.enums.v1 import IndexedValueType, WorkflowExecutionStatus
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client

from devstack.postgres import EmbeddedPostgres
from devstack.processes import port_is_free
from devstack.temporal import TemporalDevServer
from tests.conftest import ROOT, free_port


async def _rows(url: str) -> list[str]:
    connection = await asyncpg.connect(url)
    try:
        return [row["note"] for row in await connection.fetch("SELECT note FROM probe ORDER BY id")]
    finally:
        await connection.close()


async def _insert(url: str, note: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS probe (id serial PRIMARY KEY, note text NOT NULL)"
        )
        await connection.execute("INSERT INTO probe (note) VALUES ($1)", note)
    finally:
        await connection.close()


async def test_embedded_postgres_keeps_data_across_stop_and_crash(tmp_path: Path) -> None:
    port = free_port()
    server = EmbeddedPostgres(tmp_path / "pg", port)  # durable, as `make run` uses it
    try:
        server.start()
        assert server.url == f"postgresql://postgres@127.0.0.1:{port}/ticketing"
        await _insert(server.url, "before stop")
        postmaster_pid = (tmp_path / "pg" / "postmaster.pid").read_text().split()[0]
        server.start()  # idempotent: the same server keeps running
        assert (tmp_path / "pg" / "postmaster.pid").read_text().split()[0] == postmaster_pid

        server.stop()
        assert not server.is_running()
        with pytest.raises(OSError):
            await asyncpg.connect(server.url)
        server.start()
        assert await _rows(server.url) == ["before stop"]

        await _insert(server.url, "before kill")
        server.kill()
        assert not server.is_running()
        assert (tmp_path / "pg" / "postmaster.pid").exists(), "a crash leaves its pid file"
        server.start()
        assert await _rows(server.url) == ["before stop", "before kill"]

        # After a crash and a reboot the stale pid file's PID may belong to another live
        # process; PostgreSQL alone would refuse to start then.
        # Our parent process stands in for that unrelated process.
        server.kill()
        pid_file = tmp_path / "pg" / "postmaster.pid"
        lines = pid_file.read_text().split("\n")
        pid_file.write_text("\n".join([str(os.getppid()), *lines[1:]]))
        server.start()
        assert await _rows(server.url) == ["before stop", "before kill"]
    finally:
        server.stop("immediate")
    assert not server.is_running()


async def test_temporal_dev_server_registers_search_attributes(
    temporal_server: TemporalDevServer,
) -> None:
    client = await Client.connect(temporal_server.address)
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace="default")
    )
    custom = dict(listed.custom_attributes)
    assert custom["OrderStatus"] == IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    assert custom["CustomerNumber"] == IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    assert custom["OrderTotal"] == IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE


async def test_temporal_dev_server_keeps_workflows_in_its_db_file(tmp_path: Path) -> None:
    server = TemporalDevServer(free_port(), None, tmp_path / "temporal.db", log_dir=tmp_path)
    workflow_id = f"devstack-probe-{uuid.uuid4()}"
    try:
        server.start()
        assert server.ui_url is None
        client = await Client.connect(server.address)
        # No worker serves this queue: the workflow stays open, which is all we need.
        await client.start_workflow("DevstackProbe", id=workflow_id, task_queue="devstack-probe")

        for crash in (False, True):
            if crash:
                server.kill()
                server.start()
            else:
                server.restart()
            client = await Client.connect(server.address)
            description = await client.get_workflow_handle(workflow_id).describe()
            assert description.raw_description.workflow_execution_info.status == (
                WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING
            )
    finally:
        server.stop()
    assert not server.is_running()
    assert port_is_free("127.0.0.1", server.port)


# -- the supervisor (`python -m devstack`) ----------------------------------------------------

# Runs the real Supervisor with stand-ins for the worker, the API and the database step, so
# its start order, banner and shutdown are checked whatever state the application is in.
_DRIVER = textwrap.dedent(
    """
    import json, sys
    from dataclasses import dataclass, field
    from pathlib import Path
    from config import Settings
    from devstack.__main__ import Supervisor

    @dataclass
    class Credentials:
        admin_username: str = "admin"
        admin_password: str = "admin-pw"
        customer_username: str = "demo"
        customer_password: str = "it's secret"
        event_id: int = 1
        section_uris: list[str] = field(default_factory=lambda: ["/events/1/sections/1"])

    def prepare(url):
        print("PREPARE", url, flush=True)
        return Credentials()

    ports = json.loads(sys.argv[1])
    settings = Settings(
        data_dir=Path(sys.argv[2]), port=ports["api"], temporal_ui_port=ports["ui"],
        database_url="", temporal_address="",
    )
    api = [sys.executable, "-c", sys.argv[3], str(ports["api"])]
    worker = [sys.executable, "-c", sys.argv[4]]
    supervisor = Supervisor(
        settings, worker, api, prepare=prepare,
        postgres_port=ports["postgres"], temporal_port=ports["temporal"],
    )
    sys.exit(supervisor.run())
    """
)

_FAKE_API = textwrap.dedent(
    """
    import signal, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    signal.signal(signal.SIGTERM, lambda *args: sys.exit(0))
    HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
    """
)


class _Console:
    """A supervisor run as a subprocess, its output read by a thread so waits time out."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.seen: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def until(self, marker: str, timeout: float) -> str:
        """All output so far, once a line contains `marker`; fails on exit or timeout."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if marker in line:
                return "".join(self.seen)
        self.process.kill()
        pytest.fail(f"no {marker!r} from the supervisor; output:\n{''.join(self.seen)}")

    def finish(self, timeout: float) -> str:
        """Wait for the exit (killing after `timeout`); all output."""
        try:
            self.process.wait(timeout=timeout)
        finally:
            self.process.kill()
        with contextlib.suppress(queue.Empty):  # a leftover grandchild may hold the pipe
            while (line := self._lines.get(timeout=5)) is not None:
                self.seen.append(line)
        return "".join(self.seen)


def _run_supervisor(tmp_path: Path, worker_code: str) -> tuple[_Console, dict[str, int]]:
    ports = {name: free_port() for name in ("api", "ui", "postgres", "temporal")}
    argv = [sys.executable, "-c", _DRIVER, json.dumps(ports), str(tmp_path), _FAKE_API]
    console = _Console([*argv, worker_code], {**os.environ, "PYTHONPATH": str(ROOT)})
    return console, ports


def test_supervisor_prints_banner_and_stops_everything_on_sigterm(tmp_path: Path) -> None:
    console, ports = _run_supervisor(tmp_path, "import time; time.sleep(600)")
    console.until("==========", timeout=60)  # top rule of the banner
    output = console.until("==========", timeout=10)  # bottom rule
    assert f"PREPARE postgresql://postgres@127.0.0.1:{ports['postgres']}/ticketing" in output
    assert f"http://127.0.0.1:{ports['api']}/docs" in output
    assert f"UI: http://127.0.0.1:{ports['ui']}" in output
    assert "demo / it's secret" in output
    curl = re.search(r"curl -s -X POST .*", output)
    assert curl is not None
    assert curl.group(0) == (
        f"curl -s -X POST http://127.0.0.1:{ports['api']}/sessions "
        "-H 'X-Client-Version: 3.0.0' -H 'Content-Type: application/json' "
        """-d '{"identification": "demo", "password": "it'"'"'s secret"}'"""
    )

    console.process.send_signal(signal.SIGTERM)
    output = console.finish(timeout=60)
    assert console.process.returncode == 0, output
    order = [line for line in output.splitlines() if line.startswith("Stopping")]
    assert order == [
        "Stopping the API",
        "Stopping the worker",
        "Stopping Temporal",
        "Stopping PostgreSQL",
    ]
    for name in ("api", "postgres", "temporal", "ui"):
        assert port_is_free("127.0.0.1", ports[name]), f"{name} still listens"
    assert not EmbeddedPostgres(tmp_path / "postgres", ports["postgres"]).is_running()


def test_supervisor_stops_everything_when_a_child_dies(tmp_path: Path) -> None:
    console, ports = _run_supervisor(tmp_path, "import time; time.sleep(1); raise SystemExit(3)")
    output = console.finish(timeout=90)
    assert console.process.returncode == 1, output
    assert "the worker exited unexpectedly with code 3" in output
    for name in ("api", "postgres", "temporal", "ui"):
        assert port_is_free("127.0.0.1", ports[name]), f"{name} still listens"


_CRASH_ONCE_WORKER = """
import pathlib, sys, time
marker = pathlib.Path(sys.argv[1]) / "worker-starts"
starts = int(marker.read_text()) + 1 if marker.exists() else 1
marker.write_text(str(starts))
if starts == 1:
    time.sleep(11)  # a healthy start, then a crash (as if killed)
    raise SystemExit(9)
time.sleep(600)
"""


def test_supervisor_restarts_a_worker_that_crashes_after_a_healthy_start(tmp_path: Path) -> None:
    worker = _CRASH_ONCE_WORKER.replace("sys.argv[1]", repr(str(tmp_path)))
    console, ports = _run_supervisor(tmp_path, worker)
    console.until("worker exited unexpectedly with code 9; restarting it", timeout=90)
    deadline = time.monotonic() + 30
    while (tmp_path / "worker-starts").read_text() != "2" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (tmp_path / "worker-starts").read_text() == "2"
    assert not port_is_free("127.0.0.1", ports["postgres"]), "the stack went down"

    console.process.send_signal(signal.SIGTERM)
    output = console.finish(timeout=60)
    assert console.process.returncode == 0, output


def test_a_second_make_run_on_the_same_data_leaves_the_first_alone(tmp_path: Path) -> None:
    first, ports = _run_supervisor(tmp_path, "import time; time.sleep(600)")
    first.until("==========", timeout=60)
    second, _ = _run_supervisor(tmp_path, "import time; time.sleep(600)")

    output = second.finish(timeout=60)

    assert second.process.returncode == 1, output
    assert "another `make run` is using" in output
    assert "Starting PostgreSQL" not in output
    assert first.process.poll() is None
    assert EmbeddedPostgres(tmp_path / "postgres", ports["postgres"]).is_running()
    first.process.send_signal(signal.SIGTERM)
    assert first.process.wait(timeout=60) == 0


def test_make_run_serves_the_demo_login(tmp_path: Path, temporal_server: TemporalDevServer) -> None:
    """`python -m devstack` for real: its own PostgreSQL, migrations, seed, worker, API.

    It borrows the session's Temporal server (7233 may be in use by a developer's own
    `make run`) on a task queue of its own, so its worker takes no other test's orders.
    """
    api_port, postgres_port = free_port(), free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": "",
        "EMBEDDED_POSTGRES_PORT": str(postgres_port),
        "TEMPORAL_ADDRESS": temporal_server.address,
        "TEMPORAL_TASK_QUEUE": f"devstack-{uuid.uuid4().hex[:8]}",
        "PORT": str(api_port),
    }
    console = _Console([sys.executable, "-m", "devstack"], env)
    output = console.until("Session key for the customer", timeout=90)
    login = re.search(r"Customer login\s+(\S+) / (.+)", output)
    assert login is not None, output
    response = httpx.post(
        f"http://127.0.0.1:{api_port}/sessions",
        headers={"X-Client-Version": "3.0.0"},
        json={"identification": login.group(1), "password": login.group(2).strip()},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    console.process.send_signal(signal.SIGINT)
    output = console.finish(timeout=60)
    assert console.process.returncode == 0, output
    assert port_is_free("127.0.0.1", api_port)
    assert port_is_free("127.0.0.1", postgres_port)
