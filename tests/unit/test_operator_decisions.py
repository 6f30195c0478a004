"""The operator's pure decisions: what a reconcile does, and the status each write puts."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from nicotask import state
from nicotask.api import (
    NicoTask,
    ReportStatus,
    TaskReportV1,
    TaskReportV1Stage,
    TaskReportV1Step,
    TaskStatus,
)
from nicotask.operator import decisions
from nicotask.operator.decisions import Action
from nicotask.temporal.control import Observed
from nicotask.temporal.models import WorkflowOutcome

S = TaskStatus
UID = "11111111-1111-1111-1111-111111111111"
NOW = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def _task(status: S | None = S.PENDING, *, cancel: bool = False, **extra: Any) -> NicoTask:
    body: dict[str, Any] = {
        "metadata": {
            "name": "t1",
            "namespace": "ns",
            "uid": UID,
            "generation": 1,
            "resourceVersion": "10",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "finalizers": extra.pop("finalizers", []),
            "annotations": extra.pop("annotations", {}),
        },
        "spec": {
            "siteId": "660e8400-e29b-41d4-a716-446655440000",
            "rackRef": "rack-1",
            "operation": "PowerOn",
            "cancel": cancel,
        },
        "status": {"status": status.value, **extra} if status else {},
    }
    return NicoTask.model_validate(body)


def _running_report() -> TaskReportV1:
    step = TaskReportV1Step(
        component_type="Compute", status=ReportStatus.RUNNING, started_at=NOW - HOUR
    )
    return TaskReportV1(
        stages=[
            TaskReportV1Stage(
                number=1, status=ReportStatus.RUNNING, started_at=NOW - HOUR, steps=[step]
            )
        ]
    )


@pytest.mark.parametrize(
    ("task", "hints", "action"),
    [
        (_task(None), set(), Action.ADMIT),
        (_task(S.WAITING), set(), Action.ADMIT),
        (_task(S.PENDING, runId="r1"), set(), Action.NOTHING),
        (_task(S.RUNNING, runId="r1"), set(), Action.NOTHING),
        (_task(S.RUNNING, runId="r1"), {decisions.CLOSED}, Action.FINISH),
        # A crash between StartWorkflow and the status write: the close still counts.
        (_task(S.PENDING), {decisions.CLOSED}, Action.FINISH),
        (_task(S.RUNNING, runId="r1", cancel=True), {decisions.CLOSED}, Action.CANCEL),
        (_task(None, cancel=True), set(), Action.CANCEL),
        (_task(S.WAITING, cancel=True), set(), Action.CANCEL),
        (_task(S.SUCCEEDED), set(), Action.NOTHING),
        (_task(S.SUCCEEDED, cancel=True), set(), Action.CANCEL_IGNORED),
        (_task(S.FAILED, cancel=True), set(), Action.CANCEL_IGNORED),
        (_task(S.TERMINATED, cancel=True), set(), Action.NOTHING),
        (_task(S.RUNNING, finalizers=[decisions.LEGACY_FINALIZER]), set(), Action.DROP_FINALIZER),
    ],
)
def test_next_action(task: NicoTask, hints: set[str], action: Action) -> None:
    assert decisions.next_action(task, frozenset(hints), HOUR, NOW) is action


def test_waiting_task_expires_after_the_queue_timeout() -> None:
    joined = (NOW - HOUR).isoformat()
    task = _task(S.WAITING, waitingSince=joined)
    assert decisions.next_action(task, frozenset(), HOUR, NOW) is Action.EXPIRE
    assert decisions.next_action(task, frozenset(), 2 * HOUR, NOW) is Action.ADMIT


def test_cancel_ignored_is_answered_once() -> None:
    task = _task(S.SUCCEEDED, cancel=True)
    new = decisions.cancel_ignored_status(task)
    assert new is not None and new.status == S.SUCCEEDED
    answered = task.model_copy(update={"status": new})
    assert decisions.next_action(answered, frozenset(), HOUR, NOW) is Action.NOTHING
    assert decisions.cancel_ignored_status(answered) is None


def test_started_status_keeps_running_when_the_worker_was_first() -> None:
    decide = decisions.started_status("rule-1", "run-1")
    pending = decide(_task(None))
    assert pending is not None and pending.status == S.PENDING and pending.run_id == "run-1"
    assert pending.workflow_id == UID and pending.id == UID
    running = decide(_task(S.RUNNING, message="Running"))
    assert running is not None and running.status == S.RUNNING and running.run_id == "run-1"
    assert decide(_task(S.TERMINATED)) is None


def test_cancelled_status_closes_the_freshest_report_and_records_who() -> None:
    task = _task(S.RUNNING, runId="r1", report=_running_report().wire())
    new = decisions.cancelled_status("alice", NOW)(task)
    assert new is not None
    assert new.status == S.TERMINATED and new.message == state.CANCELLED_BY_USER
    assert new.cancel_requested_by == "alice" and new.cancel_requested_at == NOW
    assert new.report is not None
    (stage,) = new.report.stages
    assert stage.status == ReportStatus.FAILED and stage.error == state.CANCELLED_BY_USER
    assert stage.steps[0].status == ReportStatus.FAILED
    assert (new.finished is not None and new.started is None) or new.finished >= new.started
    # Terminal is final: a second decision on the written copy changes nothing.
    assert decisions.cancelled_status("bob", NOW)(task.model_copy(update={"status": new})) is None


def test_terminal_write_never_finishes_before_it_started() -> None:
    future = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    task = _task(S.RUNNING, runId="r1", started=future.isoformat())
    new = decisions.cancelled_status(None, NOW)(task)
    assert new is not None and new.started == future and new.finished is not None
    assert new.finished >= new.started


def test_outcome_with_cancel_ignored_is_one_write() -> None:
    outcome = WorkflowOutcome(
        status=S.SUCCEEDED, message="Succeeded", report=TaskReportV1(), started=NOW, finished=NOW
    )
    observed = Observed(running=False, status=S.SUCCEEDED, message="Succeeded", outcome=outcome)
    new = decisions.outcome_status(observed, cancel_ignored=True)(_task(S.RUNNING, runId="r"))
    assert new is not None and new.status == S.SUCCEEDED
    assert any(c.type == state.CANCEL_IGNORED for c in new.conditions)
    assert "cannot be cancelled (status: Succeeded)" in next(
        c.message for c in new.conditions if c.type == state.CANCEL_IGNORED
    )


def test_terminated_outside_nicotask_says_so() -> None:
    observed = Observed(running=False, status=S.TERMINATED, message="operator on call")
    new = decisions.outcome_status(observed)(_task(S.RUNNING, runId="r"))
    assert new is not None and new.status == S.TERMINATED
    assert new.message == "Terminated outside nicotask: operator on call"


def test_cancel_pending_never_touches_a_terminal_task() -> None:
    decide = decisions.cancel_pending_status("alice", NOW, "Temporal unreachable")
    pending = decide(_task(S.RUNNING, runId="r"))
    assert pending is not None and pending.status == S.RUNNING
    assert any(c.type == state.CANCEL_PENDING and c.status == "True" for c in pending.conditions)
    assert decide(_task(S.SUCCEEDED)) is None


def test_cancel_reason_names_who_asked() -> None:
    task = _task(S.RUNNING, annotations={decisions.CANCEL_REQUESTED_BY: "alice"})
    assert decisions.cancel_reason(task) == "Cancelled by user (alice)"
    assert decisions.cancel_reason(_task(S.RUNNING)) == "Cancelled by user"
