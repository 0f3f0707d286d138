"""Configuration and starting up: one validated Settings object, documented defaults, clear
failures, and migrations that run once per deploy.

The processes are started for real (`python worker.py`, uvicorn, `python -m db.migrate`), as
an orchestrator would, against the session's PostgreSQL and Temporal or against closed ports.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from config import PROJECT_ROOT, ConfigurationError, Settings, load_settings
from devstack.temporal import TemporalDevServer
from tests.conftest import ROOT, free_port

ENV_EXAMPLE = ROOT / ".env.example"
SETTINGS = {name.upper() for name in Settings.model_fields}
ENTRY = re.compile(r"^#\s?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")
ADMIN_KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting from the shell running the tests."""
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings(_env_file=None)


def process_env(**settings: str) -> dict[str, str]:
    """The test's environment without any setting, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    return {**env, "PYTHONUNBUFFERED": "1", **settings}


# -- .env.example: every setting, its default, nothing else ------------------------------------


def env_example_entries() -> list[tuple[str, str, bool]]:
    """(name, value, documented) for each `# NAME=value` line; documented when a comment of
    prose comes before it in the same paragraph."""
    entries = []
    documented = False
    for line in ENV_EXAMPLE.read_text().splitlines():
        if not line.strip():
            documented = False
        elif match := ENTRY.match(line):
            entries.append((match["name"], match["value"], documented))
        elif line.startswith("#") and not line.startswith("# ---"):
            documented = True
    return entries


def test_env_example_lists_every_setting_with_its_default(clean_env: None) -> None:
    entries = {name: value for name, value, _ in env_example_entries()}
    defaults = Settings(_env_file=None)
    missing = SETTINGS - set(entries)
    assert not missing, f".env.example lacks {sorted(missing)}: document them"
    for name in SETTINGS:
        default = getattr(defaults, name.lower())
        if default is None:
            assert entries[name] == "", f"{name}: leave the value empty (default: unset)"
            continue
        parsed = getattr(Settings(_env_file=None, **{name.lower(): entries[name]}), name.lower())  # type: ignore[arg-type]
        assert parsed == default, (
            f".env.example says {name}={entries[name]}; default is {default!r}"
        )


def test_env_example_explains_each_variable_once() -> None:
    entries = env_example_entries()
    names = [name for name, _, _ in entries]
    assert len(names) == len(set(names)), "a variable is listed twice"
    undocumented = [name for name, _, documented in entries if not documented]
    assert not undocumented, f"no comment explains {undocumented}"


def test_copying_env_example_to_env_changes_nothing(tmp_path: Path, clean_env: None) -> None:
    """Every line is commented out: a fresh .env from it keeps every default."""
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_EXAMPLE.read_text())
    assert load_settings(_env_file=env_file) == Settings(_env_file=None)


# -- validation: typed, at start, with the variable's name ---------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"RESERVATION_SECONDS": "abc"},
            "RESERVATION_SECONDS='abc': Input should be a valid integer",
        ),
        ({"RESERVATION_SECONDS": "0"}, "RESERVATION_SECONDS='0'"),
        ({"PORT": "70000"}, "PORT='70000'"),
        ({"TEMPORAL_TLS": "maybe"}, "TEMPORAL_TLS='maybe'"),
        ({"TEMPORAL_ADDRESS": "temporal"}, "TEMPORAL_ADDRESS must be HOST:PORT"),
        ({"TEMPORAL_ADDRESS": "http://temporal:7233"}, "TEMPORAL_ADDRESS must be HOST:PORT"),
        ({"FEE_SCHEDULE": "10.00:1.00"}, "FEE_SCHEDULE='10.00:1.00': the last fee tier"),
        ({"DATABASE_POOL_MIN": "30"}, "DATABASE_POOL_MIN (30) must not exceed DATABASE_POOL_MAX"),
        ({"TEMPORAL_TLS_CERT": "/certs/client.pem"}, "TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY"),
        ({"STARTUP_TIMEOUT_SECONDS": "0"}, "STARTUP_TIMEOUT_SECONDS='0'"),
        ({"MAX_TICKETS_PER_SECTION": "-1"}, "MAX_TICKETS_PER_SECTION='-1'"),
    ],
)
def test_a_bad_value_is_refused_with_the_variable_name(
    env: dict[str, str], expected: str, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        settings_from(env, monkeypatch)
    message = str(refused.value)
    assert message.startswith("Invalid configuration (environment or .env): ")
    assert expected in message
    assert "\n" not in message
    assert isinstance(refused.value, SystemExit)  # the process stops with it, exit code 1


def test_every_bad_variable_is_named_at_once(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        settings_from(
            {"PORT": "x", "TEMPORAL_UI_PORT": "y", "RESERVATION_SECONDS": "z"}, monkeypatch
        )
    for name in ("PORT=", "TEMPORAL_UI_PORT=", "RESERVATION_SECONDS="):
        assert name in str(refused.value)


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("DATABASE_URL", "mysql://root:hunter2@db/orders"),
        ("TICKETING_ADMIN_KEY", "NOT-HEX-hunter2"),
    ],
)
def test_secrets_are_not_echoed(
    name: str, secret: str, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        settings_from({name: secret}, monkeypatch)
    assert name in str(refused.value)
    assert "hunter2" not in str(refused.value)


def test_env_file_is_read_and_the_environment_wins(
    tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("RESERVATION_SECONDS=120\nTEMPORAL_NAMESPACE=from-file\n")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "from-environment")
    settings = load_settings(_env_file=env_file)
    assert settings.reservation_seconds == 120
    assert settings.temporal_namespace == "from-environment"
    env_file.write_text("RESERVATION_SECONDS=soon\n")
    with pytest.raises(ConfigurationError, match="RESERVATION_SECONDS='soon'"):
        load_settings(_env_file=env_file)


def test_relative_data_dir_means_the_project_folder(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings_from({"DATA_DIR": ".data"}, monkeypatch).data_dir == PROJECT_ROOT / ".data"
    assert settings_from({"DATA_DIR": "/srv/data"}, monkeypatch).data_dir == Path("/srv/data")


def test_the_worker_stops_on_a_bad_setting_naming_it() -> None:
    done = subprocess.run(
        [sys.executable, "worker.py"],
        cwd=ROOT,
        env=process_env(RESERVATION_SECONDS="abc"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "RESERVATION_SECONDS='abc'" in done.stderr
    assert "Traceback" not in done.stderr


# -- unreachable dependencies at start: a clear line and a non-zero exit, never a hang -------------


def run_until_exit(argv: list[str], env: dict[str, str], limit: float) -> tuple[int, str, float]:
    """Run a process to its end (killed after `limit` s); exit code, output, seconds taken."""
    started = time.monotonic()
    try:
        done = subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit
        )
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f"{argv} still running after {limit} s:\n{hung.stdout}\n{hung.stderr}")
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


def test_worker_exits_when_temporal_cannot_be_reached() -> None:
    """With the default STARTUP_TIMEOUT_SECONDS: gives up within 20 s, naming the address."""
    address = f"127.0.0.1:{free_port()}"
    code, output, took = run_until_exit(
        [sys.executable, "worker.py"],
        process_env(TEMPORAL_ADDRESS=address, DATABASE_URL="postgresql://u@127.0.0.1:1/db"),
        limit=30,
    )
    assert code != 0
    assert took < 20
    assert last_line(output).startswith(f"worker cannot start: cannot reach Temporal at {address}")
    assert "Traceback" not in output


async def test_worker_exits_when_postgres_cannot_be_reached_without_showing_the_password(
    temporal_server: TemporalDevServer,
) -> None:
    port = free_port()
    code, output, _ = await asyncio.to_thread(
        run_until_exit,
        [sys.executable, "worker.py"],
        process_env(
            TEMPORAL_ADDRESS=temporal_server.address,
            TEMPORAL_NAMESPACE=temporal_server.namespace,
            DATABASE_URL=f"postgresql://orders:s3cret-pw@127.0.0.1:{port}/orders",
            STARTUP_TIMEOUT_SECONDS="2",
        ),
        30,
    )
    assert code != 0
    assert f"cannot reach PostgreSQL at 127.0.0.1:{port}/orders" in last_line(output)
    assert "s3cret-pw" not in output


async def test_worker_exits_when_the_namespace_does_not_exist(
    temporal_server: TemporalDevServer,
) -> None:
    code, output, _ = await asyncio.to_thread(
        run_until_exit,
        [sys.executable, "worker.py"],
        process_env(
            TEMPORAL_ADDRESS=temporal_server.address,
            TEMPORAL_NAMESPACE="no-such-namespace",
            DATABASE_URL="postgresql://u@127.0.0.1:1/db",
            STARTUP_TIMEOUT_SECONDS="2",
        ),
        30,
    )
    assert code != 0
    assert "has no namespace 'no-such-namespace'" in last_line(output)


def api_argv() -> list[str]:
    return [sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(free_port())]


async def test_api_exits_when_temporal_cannot_be_reached(database_url: str) -> None:
    """The API fails fast too (documented in the README): an orchestrator restarts it."""
    address = f"127.0.0.1:{free_port()}"
    code, output, took = await asyncio.to_thread(
        run_until_exit,
        api_argv(),
        process_env(
            DATABASE_URL=database_url, TEMPORAL_ADDRESS=address, STARTUP_TIMEOUT_SECONDS="2"
        ),
        30,
    )
    assert code != 0
    assert took < 20
    assert f"API cannot start: cannot reach Temporal at {address}" in output


# -- migrations: versioned, once per deploy, safe to run again -------------------------------


@pytest.fixture
async def empty_database(database_url: str) -> AsyncIterator[str]:
    """A new, empty database on the session's PostgreSQL."""
    name = f"deploy_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.InsufficientPrivilegeError:
        pytest.skip("the test database's user cannot create databases")
    finally:
        await admin.close()
    yield urlsplit(database_url)._replace(path=f"/{name}").geturl()
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def migrate(url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "db.migrate"],
        cwd=ROOT,
        env=process_env(DATABASE_URL=url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def test_migrations_apply_once_even_when_started_together(empty_database: str) -> None:
    versions = sorted(path.stem for path in (ROOT / "db" / "migrations").glob("*.sql"))

    def two_at_once() -> list[tuple[int, str]]:
        runs = [migrate(empty_database), migrate(empty_database)]
        return [(run.wait(timeout=60), run.stdout.read() if run.stdout else "") for run in runs]

    results = await asyncio.to_thread(two_at_once)
    assert [code for code, _ in results] == [0, 0], results
    outputs = sorted(output.strip() for _, output in results)
    assert outputs == [f"applied: {', '.join(versions)}", "schema is up to date"]

    again = await asyncio.to_thread(lambda: migrate(empty_database).communicate(timeout=60)[0])
    assert again.strip() == "schema is up to date"
    connection = await asyncpg.connect(empty_database)
    try:
        rows = await connection.fetch("SELECT version FROM schema_migrations ORDER BY version")
    finally:
        await connection.close()
    assert [row["version"] for row in rows] == versions


async def test_api_does_not_migrate_and_says_what_to_run(
    empty_database: str, temporal_server: TemporalDevServer
) -> None:
    """On a database nobody migrated, the API stops and names the migration command."""
    code, output, _ = await asyncio.to_thread(
        run_until_exit,
        api_argv(),
        process_env(
            DATABASE_URL=empty_database,
            TEMPORAL_ADDRESS=temporal_server.address,
            TICKETING_ADMIN_KEY=ADMIN_KEY,
            STARTUP_TIMEOUT_SECONDS="2",
        ),
        30,
    )
    assert code != 0
    assert "run `python -m db.migrate` first" in output
    connection = await asyncpg.connect(empty_database)
    try:
        tables: Any = await connection.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
    finally:
        await connection.close()
    assert tables == 0
