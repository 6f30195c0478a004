"""The operator's pure decisions: what a reconcile does, and the status each write puts."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from nicotask import lifecycle
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
            "annotations": extra.pop("annotations", {}),
        },
        "spec": {
            "siteId": "660e8400-e29b-41d4-a716-446655440000",
            "rackRef": "rack-1",
            "operation": "PowerOn",
            "cancel": cancel,
            **({"cancelMode": extra.pop("mode")} if "mode" in extra else {}),
            **({"cancelReason": extra.pop("reason")} if "reason" in extra else {}),
            **({"deadline": extra.pop("deadline")} if "deadline" in extra else {}),
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


def _settled_report() -> TaskReportV1:
    report = _running_report()
    report.stages[0].status = ReportStatus.COMPLETED
    report.stages[0].finished_at = NOW
    report.stages[0].steps[0].status = ReportStatus.COMPLETED
    report.stages[0].steps[0].finished_at = NOW
    return report


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
        # A graceful stop: CANCEL until Temporal has the request, then the workflow ends
        # by itself (FINISH on its close); escalating to Terminate cancels again.
        (_task(S.RUNNING, runId="r1", cancel=True, mode="Graceful"), set(), Action.CANCEL),
        (
            _task(S.RUNNING, runId="r1", cancel=True, mode="Graceful", cancelMode="Graceful"),
            set(),
            Action.NOTHING,
        ),
        (
            _task(S.RUNNING, runId="r1", cancel=True, mode="Graceful", cancelMode="Graceful"),
            {decisions.CLOSED},
            Action.FINISH,
        ),
        (
            _task(S.RUNNING, runId="r1", cancel=True, mode="Terminate", cancelMode="Graceful"),
            set(),
            Action.CANCEL,
        ),
        # Its final report (nothing pending or running) is written just before its close.
        (
            _task(
                S.RUNNING,
                runId="r1",
                cancel=True,
                mode="Graceful",
                cancelMode="Graceful",
                report=_settled_report().wire(),
            ),
            set(),
            Action.FINISH,
        ),
        # So is a workflow's that ends by itself: its close need not wait for visibility.
        (_task(S.RUNNING, runId="r1", report=_settled_report().wire()), set(), Action.FINISH),
        # A graceful stop of a run whose id was never recorded (the start's status write
        # was lost): its final report still finishes it (found by the fault soak).
        (
            _task(
                S.RUNNING,
                cancel=True,
                mode="Graceful",
                cancelMode="Graceful",
                report=_settled_report().wire(),
            ),
            set(),
            Action.FINISH,
        ),
        (_task(S.RUNNING, runId="r1", report=_running_report().wire()), set(), Action.NOTHING),
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
    assert new.status == S.TERMINATED and new.message == lifecycle.CANCELLED_BY_USER
    assert new.cancel_requested_by == "alice" and new.cancel_requested_at == NOW
    assert new.report is not None
    (stage,) = new.report.stages
    assert stage.status == ReportStatus.FAILED and stage.error == lifecycle.CANCELLED_BY_USER
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
    assert any(c.type == lifecycle.CANCEL_IGNORED for c in new.conditions)
    assert "cannot be cancelled (status: Succeeded)" in next(
        c.message for c in new.conditions if c.type == lifecycle.CANCEL_IGNORED
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
    conditions = pending.conditions
    assert any(c.type == lifecycle.CANCEL_PENDING and c.status == "True" for c in conditions)
    assert decide(_task(S.SUCCEEDED)) is None


def test_cancel_reason_names_who_asked() -> None:
    task = _task(S.RUNNING, annotations={decisions.CANCEL_REQUESTED_BY: "alice"})
    assert decisions.cancel_reason(task) == "Cancelled by user (alice)"
    assert decisions.cancel_reason(_task(S.RUNNING)) == "Cancelled by user"


# ---- graceful stop, reason, escalation, deadline ------------------------------------

ALICE = {decisions.CANCEL_REQUESTED_BY: "alice"}


def _graceful_outcome(status: S, message: str) -> Observed:
    outcome = WorkflowOutcome(
        status=status, message=message, report=TaskReportV1(), started=NOW, finished=NOW
    )
    return Observed(running=False, status=status, message=message, outcome=outcome)


def test_reason_goes_to_temporal_and_the_message_keeps_the_contracts_words() -> None:
    task = _task(S.RUNNING, runId="r1", cancel=True, reason="window closed", annotations=ALICE)
    assert decisions.cancel_reason(task) == "Cancelled by user (alice): window closed"
    new = decisions.cancelled_status("alice", NOW)(task)
    assert new is not None and new.message == "Cancelled by user: window closed"
    assert new.cancel_reason == "window closed" and new.cancel_mode == "Terminate"
    # No reason: exactly the REST contract's message, whoever asked.
    plain = decisions.cancelled_status("alice", NOW)(
        _task(S.RUNNING, cancel=True, annotations=ALICE)
    )
    assert plain is not None and plain.message == lifecycle.CANCELLED_BY_USER


def test_stopping_status_keeps_running_and_records_the_graceful_request() -> None:
    task = _task(S.RUNNING, runId="r1", cancel=True, mode="Graceful", reason="oops")
    new = decisions.stopping_status("alice", NOW)(task)
    assert new is not None and new.status == S.RUNNING
    assert new.cancel_mode == "Graceful" and new.cancel_reason == "oops"
    assert new.cancel_requested_by == "alice" and new.cancel_requested_at == NOW
    (pending,) = [c for c in new.conditions if c.type == lifecycle.CANCEL_PENDING]
    assert pending.status == "True" and pending.reason == "StoppingGracefully"
    assert "oops" in pending.message and "running stage finishes" in pending.message
    assert decisions.stopping_status("alice", NOW)(_task(S.TERMINATED, cancel=True)) is None


def test_graceful_outcome_is_terminated_with_who_why_and_what_ran() -> None:
    task = _task(
        S.RUNNING, runId="r1", cancel=True, mode="Graceful", cancelMode="Graceful", reason="r"
    )
    observed = _graceful_outcome(S.TERMINATED, "Stopped gracefully after stage 1")
    new = decisions.outcome_status(observed)(task)
    assert new is not None and new.status == S.TERMINATED
    assert new.message == "Cancelled by user: r; Stopped gracefully after stage 1"
    assert not any(c.type == lifecycle.CANCEL_IGNORED for c in new.conditions)
    assert not any(c.type == lifecycle.CANCEL_PENDING for c in new.conditions)


def test_graceful_stop_that_came_after_the_last_stage_is_a_cancel_ignored() -> None:
    task = _task(S.RUNNING, runId="r1", cancel=True, mode="Graceful", cancelMode="Graceful")
    new = decisions.outcome_status(_graceful_outcome(S.SUCCEEDED, "Succeeded"))(task)
    assert new is not None and new.status == S.SUCCEEDED and new.message == "Succeeded"
    assert any(c.type == lifecycle.CANCEL_IGNORED for c in new.conditions)


def test_failed_cleanup_is_failed_and_names_the_cleanup() -> None:
    task = _task(S.RUNNING, runId="r1", cancel=True, mode="Graceful", cancelMode="Graceful")
    observed = _graceful_outcome(S.FAILED, "cleanup failed: Compute c-0: BMC unreachable")
    new = decisions.outcome_status(observed)(task)
    assert new is not None and new.status == S.FAILED
    assert new.message == "Cancelled by user; cleanup failed: Compute c-0: BMC unreachable"


def test_escalation_says_the_graceful_stop_was_escalated() -> None:
    task = _task(S.RUNNING, runId="r1", cancel=True, mode="Terminate", cancelMode="Graceful")
    new = decisions.cancelled_status("bob", NOW)(task)
    assert new is not None and new.status == S.TERMINATED and new.cancel_mode == "Terminate"
    assert new.message == "Cancelled by user (graceful stop escalated to Terminate)"


def test_a_task_past_its_not_after_never_starts() -> None:
    past = {"notAfter": (NOW - HOUR).isoformat()}
    future = {"notAfter": (NOW + HOUR).isoformat(), "stop": "Terminate"}
    assert decisions.next_action(_task(None, deadline=past), frozenset(), HOUR, NOW) is (
        Action.DEADLINE
    )
    assert decisions.next_action(_task(S.WAITING, deadline=past), frozenset(), 2 * HOUR, NOW) is (
        Action.DEADLINE
    )
    assert decisions.next_action(_task(None, deadline=future), frozenset(), HOUR, NOW) is (
        Action.ADMIT
    )
    # Started: the workflow's own timer stops it, not the operator.
    started = _task(S.RUNNING, runId="r1", deadline=past)
    assert decisions.next_action(started, frozenset(), HOUR, NOW) is Action.NOTHING
    new = decisions.deadline_passed_status("deadline ran out")(_task(S.WAITING, deadline=past))
    assert new is not None and new.status == S.FAILED and new.message == "deadline ran out"
    assert decisions.deadline_passed_status("x")(started) is None


def test_escalation_closes_the_workflows_own_report_when_it_is_newer() -> None:
    """The cleanup stage the workflow runs may not have reached the CR yet."""
    task = _task(
        S.RUNNING, runId="r1", cancel=True, mode="Terminate", cancelMode="Graceful",
        report=_running_report().wire(),
    )  # fmt: skip
    newer = _running_report()
    newer.stages[0].status = ReportStatus.COMPLETED
    newer.stages[0].steps[0].status = ReportStatus.COMPLETED
    newer.stages[0].finished_at = newer.stages[0].steps[0].finished_at = NOW
    cleanup = newer.stages[0].model_copy(deep=True)
    cleanup.number, cleanup.status = 101, ReportStatus.RUNNING
    cleanup.finished_at = None
    cleanup.steps[0].status, cleanup.steps[0].finished_at = ReportStatus.RUNNING, None
    newer.stages.append(cleanup)
    new = decisions.cancelled_status("bob", NOW, newer)(task)
    assert new is not None and new.report is not None
    assert [(s.number, s.status) for s in new.report.stages] == [
        (1, ReportStatus.COMPLETED),
        (101, ReportStatus.FAILED),
    ]
    # Without it, the CR's own report is closed, as before.
    plain = decisions.cancelled_status("bob", NOW)(task)
    assert plain is not None and plain.report is not None
    assert [s.number for s in plain.report.stages] == [1]


def test_the_cancelled_event_names_who_asked_why_and_an_escalation() -> None:
    task = _task(S.RUNNING, runId="r1", cancel=True, reason="r", annotations=ALICE)
    written = task.model_copy(update={"status": decisions.cancelled_status("alice", NOW)(task)})
    assert decisions.cancelled_event_message(written) == "Cancelled by user (alice): r"
    escalated = _task(
        S.RUNNING, runId="r1", cancel=True, mode="Terminate", cancelMode="Graceful",
        annotations=ALICE,
    )  # fmt: skip
    done = decisions.cancelled_status("alice", NOW)(escalated)
    written = escalated.model_copy(update={"status": done})
    assert decisions.cancelled_event_message(written) == (
        "Cancelled by user (alice) (graceful stop escalated to Terminate)"
    )
