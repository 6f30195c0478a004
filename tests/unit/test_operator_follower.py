"""The follower's full pass: which live tasks it sends to a `closed` reconcile."""

from __future__ import annotations

from typing import Any

import pytest

from nicotask.api import NicoTask, TaskStatus
from nicotask.metrics import Metrics
from nicotask.operator import follower as follower_module
from nicotask.operator.controller import Controller
from nicotask.operator.decisions import CLOSED
from nicotask.operator.follower import Follower
from nicotask.settings import Settings
from nicotask.temporal.control import Execution

STARTED = "11111111-1111-1111-1111-111111111111"
LATE_IN_VISIBILITY = "22222222-2222-2222-2222-222222222222"
NOT_STARTED = "33333333-3333-3333-3333-333333333333"
RUNNING_WITHOUT_RUN_ID = "55555555-5555-5555-5555-555555555555"


def _task(uid: str, run_id: str | None) -> NicoTask:
    status: dict[str, Any] = {"status": TaskStatus.RUNNING.value if run_id else "Pending"}
    if run_id:
        status["runId"] = run_id
    return NicoTask.model_validate(
        {
            "metadata": {
                "name": f"t-{uid[:4]}",
                "namespace": "ns",
                "uid": uid,
                "resourceVersion": "10",
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "spec": {
                "siteId": "660e8400-e29b-41d4-a716-446655440000",
                "rackRef": f"rack-{uid[:4]}",
                "operation": "PowerOn",
            },
            "status": status,
        }
    )


def _running(uid: str) -> Execution:
    return Execution(workflow_id=uid, run_id="run", close_time=None, raw=None)  # type: ignore[arg-type]


async def test_full_pass_queues_a_started_task_only_when_two_listings_miss_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    controller = Controller(
        kube=None,  # type: ignore[arg-type]  # the full pass makes no API call here
        temporal=None,  # type: ignore[arg-type]
        settings=Settings(),
        metrics=Metrics(),
    )
    lost_run_id = _task(RUNNING_WITHOUT_RUN_ID, None)  # the worker wrote Running; the id was lost
    lost_run_id.status.status = TaskStatus.RUNNING
    tasks = [
        _task(STARTED, "run"),
        _task(LATE_IN_VISIBILITY, "run"),
        _task(NOT_STARTED, None),
        lost_run_id,
    ]
    controller.live_tasks.bind({t.metadata.uid: [t] for t in tasks}, {})
    # Visibility trails the starts: the first listing has neither started task.
    listings = [[], [_running(LATE_IN_VISIBILITY)], [_running(LATE_IN_VISIBILITY)]]

    async def running(client: Any, task_queue: str) -> list[Execution]:
        return listings.pop(0)

    monkeypatch.setattr(follower_module, "running", running)
    follower = Follower(controller, temporal=None)  # type: ignore[arg-type]

    await follower.full_pass(None)  # type: ignore[arg-type]
    assert len(controller.queue) == 0  # missing once: no DescribeWorkflowExecution yet
    await follower.full_pass(None)  # type: ignore[arg-type]
    expected = {STARTED: {CLOSED}, RUNNING_WITHOUT_RUN_ID: {CLOSED}}
    assert dict(controller.queue._queued) == expected
    controller.queue._queued.clear()
    await follower.full_pass(None)  # type: ignore[arg-type]
    assert dict(controller.queue._queued) == expected  # still missing: again


FINISHED = "44444444-4444-4444-4444-444444444444"


class _Memo:
    async def memo(self) -> dict[str, str]:
        return {"namespace": "ns", "name": "t-4444"}


class _Kube:
    def __init__(self, task: NicoTask) -> None:
        self.task = task

    async def get_task(self, namespace: str, name: str) -> NicoTask:
        return self.task


@pytest.mark.parametrize("status", ["Terminated", "Succeeded", "Running"])
async def test_a_workflow_that_runs_for_a_finished_task_is_terminated(
    monkeypatch: pytest.MonkeyPatch, status: str
) -> None:
    """Found by the fault soak: a standby replica, paused by kopf, still
    started the workflow of a task that the active replica had just cancelled while it
    was Waiting. The task stayed Terminated (its status write was refused) and the
    workflow ran its rule to the end: the full pass let it run because its task
    existed. A running execution whose task is finished is now terminated."""
    task = _task(FINISHED, None)
    task = task.model_copy(update={"status": task.status.model_copy(update={"status": status})})
    controller = Controller(
        kube=_Kube(task),  # type: ignore[arg-type]
        temporal=None,  # type: ignore[arg-type]
        settings=Settings(),
        metrics=Metrics(),
    )
    controller.live_tasks.bind({}, {})  # a finished task is not in the view (live tasks only)
    execution = Execution(
        workflow_id=FINISHED,
        run_id="run",
        close_time=None,
        raw=_Memo(),  # type: ignore[arg-type]
    )

    async def running(client: Any, task_queue: str) -> list[Execution]:
        return [execution]

    terminated: list[tuple[str, str]] = []

    async def terminate(client: Any, workflow_id: str, run_id: Any, reason: str) -> Any:
        terminated.append((workflow_id, reason))

    monkeypatch.setattr(follower_module, "running", running)
    monkeypatch.setattr(follower_module, "terminate", terminate)
    follower = Follower(controller, temporal=None)  # type: ignore[arg-type]
    await follower.full_pass(None)  # type: ignore[arg-type]
    assert terminated == []  # once is not enough: visibility may trail a close
    await follower.full_pass(None)  # type: ignore[arg-type]
    if status == "Running":
        assert terminated == []  # a live task of another shard: not ours to stop
    else:
        assert terminated == [(FINISHED, f"NicoTask already {status}")]


def test_after_a_standby_closes_are_reread_back_to_the_start_up_look_back_at_most() -> None:
    import datetime as dt

    from nicotask.operator.follower import STARTUP_LOOKBACK, resume_watermark

    now = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
    hours_ago = now - dt.timedelta(hours=5)  # a standby for hours
    assert resume_watermark(hours_ago, now) == now - STARTUP_LOOKBACK
    recent = now - dt.timedelta(seconds=20)  # paused for a moment: nothing skipped
    assert resume_watermark(recent, now) == recent
