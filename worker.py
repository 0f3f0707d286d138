"""The Temporal worker: runs OrderWorkflow and its activities on task queue `orders`.

Start as many as the load needs (`python worker.py`); they share the task queue. At start it
checks its settings and reaches Temporal and PostgreSQL within STARTUP_TIMEOUT_SECONDS, or
exits non-zero with one line saying what is wrong (an orchestrator then restarts it).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from datetime import timedelta
from typing import Any

import uvloop
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.orders import OrderActivities
from config import Settings, get_settings
from startup import StartupError, reach_postgres, reach_temporal
from workflows.order import OrderWorkflow
from workflows.search_attributes import ALL_KEYS

log = logging.getLogger("worker")

# Worker options chosen by measurement (bench/results/RESULTS.md has the figures); the
# benchmark's floor worker uses the same ones, so the comparison stays fair.
WORKER_TUNING: dict[str, Any] = {
    # The sandbox re-imports the workflow module (and what it imports) for every new
    # workflow run unless modules are passed through: that was a third of the worker's CPU
    # per order. Passing every module through keeps the sandbox's runtime checks (no
    # datetime.now(), no I/O in workflow code) and skips the re-import. Safe here because
    # workflows/order.py and what it imports keep no state at module level.
    "workflow_runner": SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
    ),
    "max_concurrent_workflow_task_polls": 16,
    "nonsticky_to_sticky_poll_ratio": 1.0,
}


async def check_search_attributes(client: Client, namespace: str) -> None:
    """Fail at start, loudly, if the server lacks our search attributes: upserting an
    unknown one would fail every order's workflow task forever."""
    response = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    missing = [key.name for key in ALL_KEYS if key.name not in response.custom_attributes]
    if missing:
        raise SystemExit(
            f"Temporal namespace {namespace!r} lacks the search attributes {', '.join(missing)}. "
            "Register them, e.g. `temporal operator search-attribute create --name OrderStatus "
            "--type Keyword` (see README, Running in production)."
        )


async def run_worker(settings: Settings) -> None:
    client = await reach_temporal(settings)
    try:
        await check_search_attributes(client, settings.temporal_namespace)
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            raise StartupError(
                f"Temporal at {settings.temporal_address} has no namespace "
                f"{settings.temporal_namespace!r}: create it, or set TEMPORAL_NAMESPACE"
            ) from None
        if error.status not in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED):
            raise StartupError(f"Temporal refused to list search attributes: {error}") from None
        # Some hosted namespaces do not let a worker's key list them: go on, but say so.
        log.warning(
            "cannot list search attributes (%s); make sure %s are registered",
            error.status.name,
            ", ".join(key.name for key in ALL_KEYS),
        )
    pool = await reach_postgres(settings)
    activities = OrderActivities(pool, settings.fee_tiers)
    worker = Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=[OrderWorkflow],
        activities=activities.all(),
        graceful_shutdown_timeout=timedelta(seconds=30),
        **WORKER_TUNING,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker polling task queue %r", settings.temporal_task_queue)
    async with worker:
        await stop.wait()
        log.info("draining: finishing in-flight activities")
    await pool.close()
    log.info("worker stopped")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = get_settings()  # invalid settings exit here with a message naming the variable
    if not settings.temporal_address or not settings.database_url:
        sys.exit("TEMPORAL_ADDRESS and DATABASE_URL must be set (`make run` sets both).")
    try:
        uvloop.run(run_worker(settings))
    except StartupError as error:
        sys.exit(f"worker cannot start: {error}")


if __name__ == "__main__":
    main()
