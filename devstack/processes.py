"""Small process helpers shared by the dev servers, the supervisor and the test fixtures."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

_PR_SET_PDEATHSIG = 1
# Looked up once in the parent: dlopen() between fork and exec could deadlock on a loader
# lock held by another thread at the moment of the fork.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A preexec_fn asking Linux to SIGKILL the child when the process that started it dies.

    Without it a supervisor or a test run killed with SIGKILL leaves a Temporal server or a
    uvicorn behind, holding its ports and a CPU core.
    """

    def arm() -> None:
        assert _prctl is not None
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the parent died before the signal was armed
            os._exit(1)

    return arm


def child_popen_kwargs() -> dict[str, object]:
    """Popen arguments for a child that we stop ourselves, in order.

    A new session keeps a terminal's Ctrl-C away from the child, so the supervisor decides
    the order of shutdown. The parent-death signal is only armed from the main thread:
    Linux sends it when the *thread* that forked exits, which would kill the child early
    if we spawned it from a short-lived helper thread.
    """
    kwargs: dict[str, object] = {"start_new_session": True}
    if _prctl is not None and threading.current_thread() is threading.main_thread():
        kwargs["preexec_fn"] = _die_with_parent(os.getpid())
    return kwargs


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, or a note that there is none (for error messages)."""
    try:
        with path.open("rb") as file:
            file.seek(0, os.SEEK_END)
            size = file.tell()
            file.seek(max(0, size - 64 * 1024))
            text = file.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def port_is_free(host: str, port: int) -> bool:
    """Whether a TCP listener could bind host:port now (checked before starting servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now, chosen by the kernel."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def terminate(
    process: subprocess.Popen[bytes],
    timeout: float,
    *,
    hurry: Callable[[], bool] = lambda: False,
) -> int:
    """SIGTERM a child, wait up to `timeout` s for a graceful exit, then SIGKILL it.

    `hurry` lets a caller cut the wait short (a second Ctrl-C). Returns the exit code.
    """
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline and not hurry():
            time.sleep(0.05)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    return process.wait()
