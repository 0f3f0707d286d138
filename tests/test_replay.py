"""Running orders must survive a change of the workflow code: replay recorded histories.

tests/histories/ holds one complete OrderWorkflow history per path (settled by signal, by
card and over HTTP, cancelled, timed out, free, rejected, a late settlement, a wrong
amount, a duplicate), recorded from the real service by `python -m tests.record_histories`
(see that module). Every one must replay against the current OrderWorkflow without a
non-determinism error; and a deliberately reordered variant must fail, which shows the
test would catch such a change.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from domain import Closure, Order, OrderStatus, PlaceOrder
from worker import WORKER_TUNING
from workflows.converter import data_converter
from workflows.order import STEP_RETRY, STEP_TIMEOUT, OrderActivities, OrderWorkflow

HISTORIES = Path(__file__).parent / "histories"
PATHS = {
    "settled",
    "paid_by_card",
    "settled_over_http",
    "cancelled",
    "timed_out",
    "free",
    "rejected",
    "late_settlement",
    "wrong_amount",
    "duplicate",
}


def _histories() -> list[WorkflowHistory]:
    histories = []
    for path in sorted(HISTORIES.glob("*.json")):
        events = json.loads(path.read_text())
        histories.append(WorkflowHistory.from_json(f"recorded-{path.stem}", events))
    return histories


def _replayer(*workflows: type) -> Replayer:
    """A replayer set up like the production worker (same workflow runner)."""
    runner = WORKER_TUNING.get("workflow_runner")
    options = {"workflow_runner": runner} if runner is not None else {}
    return Replayer(workflows=list(workflows), data_converter=data_converter, **options)


def test_a_history_is_recorded_for_every_path() -> None:
    assert {path.stem for path in HISTORIES.glob("*.json")} == PATHS


async def test_every_recorded_history_replays_on_the_current_workflow() -> None:
    histories = _histories()

    async def each() -> AsyncIterator[WorkflowHistory]:
        for history in histories:
            yield history

    results = await _replayer(OrderWorkflow).replay_workflows(each(), raise_on_replay_failure=False)

    assert len(histories) == len(PATHS)
    assert dict(results.replay_failures) == {}


@workflow.defn(name="OrderWorkflow")
class ReorderedOrderWorkflow(OrderWorkflow):
    """A plausible edit: tell the Temporal UI about a closing order before closing it."""

    @workflow.run
    async def run(self, request: PlaceOrder) -> Order | None:
        return await super().run(request)

    async def _close(self, status: OrderStatus) -> None:
        assert self._order is not None
        self._publish()  # moved up: the search attributes are now written before the close
        self._order = await workflow.execute_local_activity_method(
            OrderActivities.close_order,
            Closure(number=self._order.number, status=status),
            start_to_close_timeout=STEP_TIMEOUT,
            retry_policy=STEP_RETRY,
        )
        self._publish()


@pytest.mark.parametrize("path", ["cancelled", "timed_out", "late_settlement"])
async def test_a_reordered_step_fails_the_replay(path: str) -> None:
    history = WorkflowHistory.from_json(
        f"recorded-{path}", json.loads((HISTORIES / f"{path}.json").read_text())
    )

    with pytest.raises(workflow.NondeterminismError):
        await _replayer(ReorderedOrderWorkflow).replay_workflow(history)
