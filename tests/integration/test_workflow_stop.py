"""Stopping NicoTaskWorkflow early, on the real Temporal dev server (fake BMCs and store):
a graceful stop (Temporal's cancel request), the rule's cleanup, the task's deadline.

The fake BMCs record every reset with the time it was sent, which is the
witness here: what ran, on which component, and that nothing ran after.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from test_workflow import (
    RACK,
    Harness,
    check_timestamps,
    power_on,
    rule,
    sleep_action,
    stage_statuses,
    step,
)

from nicotask.api import (
    ActionType,
    CleanupStep,
    CleanupTargets,
    ComponentType,
    NicoOperationRuleSpec,
    PowerAction,
    PowerState,
    RetryPolicy,
    StepAction,
    StopMode,
    TaskDeadline,
    TaskStatus,
)
from nicotask.temporal.models import WorkflowOutcome
from nicotask.temporal.workflows import NicoTaskWorkflow

pytestmark = pytest.mark.asyncio(loop_scope="session")

COMPUTE = ComponentType.COMPUTE
NVSWITCH = ComponentType.NVSWITCH
SHELF = ComponentType.POWER_SHELF
COMPUTES = {t.id for t in RACK if t.type == COMPUTE}
SHELVES = {t.id for t in RACK if t.type == SHELF}


def force_off_cleanup(
    stage: int = 1,
    targets: CleanupTargets = CleanupTargets.ACTED_ON,
    timeout: float = 30.0,
    max_parallel: int = 0,
) -> CleanupStep:
    return CleanupStep(
        component_type=COMPUTE,
        stage=stage,
        targets=targets,
        max_parallel=max_parallel,
        timeout_seconds=timeout,
        retry=RetryPolicy(max_attempts=1),
        action=StepAction(
            type=ActionType.POWER_CONTROL,
            power=PowerAction.FORCE_OFF,
            expected_state=PowerState.OFF,
            poll_interval_seconds=0.1,
        ),
    )


def power_on_rule(*cleanup: CleanupStep, cleanup_timeout: float = 60.0) -> NicoOperationRuleSpec:
    """The sample PowerOn's shape, fast: shelves, switches, then computes (two at a time)."""
    spec = rule(
        step(SHELF, 1, power_on()),
        step(NVSWITCH, 2, power_on()),
        step(COMPUTE, 3, power_on(), max_parallel=2),
    )
    return spec.model_copy(
        update={"cleanup": list(cleanup), "cleanup_timeout_seconds": cleanup_timeout}
    )


async def replay(handle: WorkflowHandle[Any, Any]) -> None:
    replayer = Replayer(workflows=[NicoTaskWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(await handle.fetch_history())


async def wait_for(predicate: Any, what: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def reset_ids(h: Harness, action: PowerAction | None = None) -> list[str]:
    return [cid for cid, act in h.bmcs.resets if action is None or act == action]


def in_flight(h: Harness, ids: set[str]) -> bool:
    """A reset of one of `ids` was sent and has not returned yet."""
    with h.bmcs.lock:
        done = {cid for cid, _ in h.bmcs.resets}
        sent = {cid for cid, _, _ in h.bmcs.asked}
    return bool((sent - done) & ids)


async def stop_gracefully(h: Harness, handle: WorkflowHandle[Any, Any]) -> None:
    """As the operator does it: the task says cancel (Graceful), then Temporal is asked."""
    h.store.set_spec(cancel=True, cancel_mode=StopMode.GRACEFUL)
    await handle.cancel(reason="Cancelled by user (test)")


async def graceful_stop_while(
    h: Harness, spec: NicoOperationRuleSpec, resetting: set[str]
) -> tuple[WorkflowOutcome, float]:
    """Run `spec`; ask for a graceful stop while a reset of `resetting` is in flight.

    Returns the outcome and the monotonic time the workflow's result arrived.
    """
    async with h.worker():
        handle = await h.start(spec)
        await wait_for(lambda: in_flight(h, resetting), f"a reset of {sorted(resetting)}")
        await stop_gracefully(h, handle)
        outcome = await asyncio.wait_for(handle.result(), timeout=60)
        closed = time.monotonic()
    await replay(handle)
    return outcome, closed


async def stopped_into_the_cleanup(h: Harness, handle: WorkflowHandle[Any, Any]) -> None:
    """A graceful stop in the compute stage, until the cleanup's first ForceOff is sent."""
    await wait_for(lambda: in_flight(h, COMPUTES), "a compute reset")
    await stop_gracefully(h, handle)
    await wait_for(
        lambda: any(act == PowerAction.FORCE_OFF for _, act, _ in h.bmcs.asked),
        "the cleanup's first ForceOff",
    )


@pytest.fixture
def h(pclient: Client) -> Harness:
    harness = Harness(pclient)
    harness.bmcs.reset_delay = 0.5  # each reset takes a while: a stage can be caught running
    return harness


async def test_graceful_stop_in_stage_1_finishes_it_and_skips_the_rest(h: Harness) -> None:
    h.bmcs.reset_delay = 2.0  # longer than a progress write's coalescing (1 s)
    spec = power_on_rule(force_off_cleanup())
    outcome, _ = await graceful_stop_while(h, spec, SHELVES)

    assert outcome.status == TaskStatus.TERMINATED
    # The running stage finished: every shelf is On; nothing of a later stage was asked.
    assert all(h.bmcs.power[s] == PowerState.ON for s in SHELVES)
    assert set(reset_ids(h)) == SHELVES
    # Stage 1 completed, 2 and 3 skipped; the cleanup had nothing this task powered on.
    assert stage_statuses(outcome.report) == ["completed", "skipped", "skipped", "skipped"]
    assert [s.number for s in outcome.report.stages] == [1, 2, 3, 101]
    assert outcome.message == (
        "Stopped gracefully after stage 1, skipped stages 2, 3; cleanup had nothing to do"
    )
    check_timestamps(outcome.report)
    # The CR's last write is the final report, and it said "stopping" meanwhile.
    assert h.store.reports[-1] == outcome.report
    assert any("stopping gracefully" in (s.message or "") for s in h.store.statuses)


async def test_graceful_stop_in_the_last_stage_cleans_up_what_it_powered_on(
    h: Harness,
) -> None:
    spec = power_on_rule(force_off_cleanup())
    outcome, closed = await graceful_stop_while(h, spec, COMPUTES)

    assert outcome.status == TaskStatus.TERMINATED
    ons = reset_ids(h, PowerAction.ON)
    offs = reset_ids(h, PowerAction.FORCE_OFF)
    # Stage 3 ran to its end (every compute On before the cleanup), then the cleanup
    # forced off exactly the computes this task powered on, and nothing followed.
    assert set(ons) == SHELVES | {t.id for t in RACK if t.type == NVSWITCH} | COMPUTES
    assert sorted(offs) == sorted(COMPUTES)
    assert h.bmcs.resets[-len(offs) :] == [(c, PowerAction.FORCE_OFF) for c in offs]
    assert all(h.bmcs.power[c] == PowerState.OFF for c in COMPUTES)
    assert max(h.bmcs.request_times) <= closed
    assert stage_statuses(outcome.report) == ["completed", "completed", "completed", "completed"]
    cleanup = outcome.report.stages[-1]
    assert cleanup.number == 101 and cleanup.steps[0].total_components == len(COMPUTES)
    assert outcome.message == "Stopped gracefully after stage 3; cleanup completed"
    check_timestamps(outcome.report)


async def test_cleanup_leaves_alone_what_was_already_on(h: Harness) -> None:
    """compute-0 was On before the task: the task sent it nothing, the cleanup neither."""
    h.bmcs.power["compute-0"] = PowerState.ON
    spec = power_on_rule(force_off_cleanup())
    outcome, _ = await graceful_stop_while(h, spec, COMPUTES)
    assert outcome.status == TaskStatus.TERMINATED
    assert "compute-0" not in reset_ids(h)
    assert sorted(reset_ids(h, PowerAction.FORCE_OFF)) == sorted(COMPUTES - {"compute-0"})
    assert h.bmcs.power["compute-0"] == PowerState.ON
    assert outcome.report.stages[-1].steps[0].total_components == len(COMPUTES) - 1


async def test_a_failing_cleanup_fails_the_task_and_names_the_cleanup(h: Harness) -> None:
    spec = power_on_rule(force_off_cleanup(timeout=3.0))
    # The ForceOffs are sent but the computes never report Off: the cleanup step times out.
    async with h.worker():
        handle = await h.start(spec)
        await stopped_into_the_cleanup(h, handle)
        h.bmcs.apply_resets = False
        outcome = await asyncio.wait_for(handle.result(), timeout=90)
    await replay(handle)
    assert outcome.status == TaskStatus.FAILED
    assert outcome.message.startswith("cleanup failed: Compute compute-")
    assert outcome.message.endswith("(Stopped gracefully after stage 3; cleanup failed)")
    assert stage_statuses(outcome.report) == ["completed", "completed", "completed", "failed"]


async def test_cleanup_is_bounded_by_its_timeout(h: Harness) -> None:
    slow = CleanupStep(
        component_type=COMPUTE,
        stage=1,
        targets=CleanupTargets.ALL,
        timeout_seconds=60,
        action=sleep_action(30),
    )
    spec = power_on_rule(slow, cleanup_timeout=1.0)
    async with h.worker():
        handle = await h.start(spec)
        await wait_for(lambda: in_flight(h, SHELVES), "a shelf reset")
        await stop_gracefully(h, handle)
        outcome = await asyncio.wait_for(handle.result(), timeout=60)
    assert outcome.status == TaskStatus.FAILED
    assert outcome.message.startswith("cleanup failed: cleanup timed out after 1s")


async def test_terminate_during_cleanup_ends_it_with_the_inflight_step_last(
    h: Harness,
) -> None:
    spec = power_on_rule(force_off_cleanup(max_parallel=1))
    async with h.worker():
        handle = await h.start(spec)
        await stopped_into_the_cleanup(h, handle)
        await handle.terminate(reason="escalated")
        terminated = time.monotonic()
        await asyncio.sleep(2.0)  # anything still queued would go out now
    # Only the one ForceOff in flight (one compute at a time) went out.
    offs = [at for _, act, at in h.bmcs.asked if act == PowerAction.FORCE_OFF]
    assert len(offs) == 1
    assert [at for _, _, at in h.bmcs.asked if at > terminated] == []


async def test_a_cancel_after_the_last_stage_changes_nothing(h: Harness) -> None:
    h.bmcs.reset_delay = 0.0
    spec = power_on_rule(force_off_cleanup())
    async with h.worker():
        handle = await h.start(spec)
        outcome = await asyncio.wait_for(handle.result(), timeout=60)
        # Temporal accepts the request for a closed execution, and nothing changes.
        await stop_gracefully(h, handle)
        await asyncio.sleep(0.5)
        assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
        assert await handle.result() == outcome
    assert outcome.status == TaskStatus.SUCCEEDED
    assert reset_ids(h, PowerAction.FORCE_OFF) == []


# ---- the task's own deadline ------------------------------------------------------


def deadline(seconds: int, mode: StopMode) -> TaskDeadline:
    return TaskDeadline(active_seconds=seconds, stop=mode)


async def test_deadline_in_graceful_mode_stops_after_the_stage_and_fails(h: Harness) -> None:
    spec = rule(
        step(SHELF, 1, sleep_action(2.0)),
        step(NVSWITCH, 2, power_on()),
        step(COMPUTE, 3, power_on()),
    ).model_copy(update={"cleanup": [force_off_cleanup(targets=CleanupTargets.ALL)]})
    for compute in COMPUTES:  # On before the task: the cleanup (All) forces them off
        h.bmcs.power[compute] = PowerState.ON
    async with h.worker():
        handle = await h.start(spec, deadline=deadline(1, StopMode.GRACEFUL))
        outcome = await asyncio.wait_for(handle.result(), timeout=60)
    await replay(handle)
    assert outcome.status == TaskStatus.FAILED
    assert outcome.message == (
        "deadline ran out (activeSeconds 1): stopped gracefully after stage 1,"
        " skipped stages 2, 3; cleanup completed"
    )
    # The Sleep stage finished; no switch was powered; the cleanup reached every compute.
    assert stage_statuses(outcome.report) == ["completed", "skipped", "skipped", "completed"]
    assert reset_ids(h, PowerAction.ON) == []
    assert set(reset_ids(h, PowerAction.FORCE_OFF)) == COMPUTES


async def test_deadline_in_terminate_mode_stops_at_once_without_cleanup(h: Harness) -> None:
    spec = rule(step(SHELF, 1, sleep_action(30.0)), step(COMPUTE, 2, power_on())).model_copy(
        update={"cleanup": [force_off_cleanup(targets=CleanupTargets.ALL)]}
    )
    began = time.monotonic()
    async with h.worker():
        handle = await h.start(spec, deadline=deadline(1, StopMode.TERMINATE))
        outcome = await asyncio.wait_for(handle.result(), timeout=60)
    await replay(handle)
    assert time.monotonic() - began < 20  # not the 30 s sleep
    assert outcome.status == TaskStatus.FAILED
    assert outcome.message == ("deadline ran out (activeSeconds 1): stopped at once, no cleanup")
    assert stage_statuses(outcome.report) == ["failed", "pending"]
    assert h.bmcs.resets == []


async def test_not_after_in_the_past_at_start_stops_before_any_request(h: Harness) -> None:
    spec = power_on_rule()
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    async with h.worker():
        handle = await h.start(spec, deadline=TaskDeadline(not_after=past))
        outcome = await asyncio.wait_for(handle.result(), timeout=60)
    assert outcome.status == TaskStatus.FAILED
    assert outcome.message.startswith("deadline ran out (notAfter ")
    assert outcome.message.endswith("stopped gracefully, skipped stages 1, 2, 3")
    assert h.bmcs.asked == []


async def test_another_cancel_request_later_never_cancels_the_workflow(h: Harness) -> None:
    """A cancel request can reach the workflow again (the operator restarted before it
    recorded the first): during the cleanup, and at its final write, it changes nothing."""
    spec = power_on_rule(force_off_cleanup(max_parallel=1))
    async with h.worker():
        handle = await h.start(spec)
        await stopped_into_the_cleanup(h, handle)
        await handle.cancel(reason="again, during the cleanup")
        outcome = await asyncio.wait_for(handle.result(), timeout=90)
    await replay(handle)
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    assert outcome.status == TaskStatus.TERMINATED
    assert outcome.message == "Stopped gracefully after stage 3; cleanup completed"
