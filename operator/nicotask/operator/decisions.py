"""The operator's decisions, as pure functions of a task (and what Temporal said).

`next_action` picks what one reconcile of a task does; the `*_status`
functions compute the status a write puts on the freshest copy of the task
(None: leave it). Kube.update_task_status applies them, so after a conflict
the same decision is simply taken again on the newer copy.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable

from nicotask import api, state
from nicotask.api import NicoTask, NicoTaskStatus, TaskStatus
from nicotask.temporal.control import Observed

Decide = Callable[[NicoTask], NicoTaskStatus | None]

CANCEL_REQUESTED_BY = api.CANCEL_REQUESTED_BY
LEGACY_FINALIZER = f"{api.GROUP}/finalizer"

# Hints a reconcile can carry (see Controller.reconcile).
CLOSED = "closed"  # Temporal may have closed the task's workflow: read its outcome


class Action(enum.Enum):
    NOTHING = "nothing"
    DROP_FINALIZER = "drop-finalizer"  # a finalizer of nicotask <= 0.1 (no longer used)
    CANCEL_IGNORED = "cancel-ignored"
    CANCEL = "cancel"
    FINISH = "finish"
    EXPIRE = "expire"
    ADMIT = "admit"


def next_action(
    task: NicoTask, hints: frozenset[str], queue_timeout: dt.timedelta, now: dt.datetime
) -> Action:
    """What to do for a task now; the same answer for the same task, so retries converge."""
    if LEGACY_FINALIZER in task.metadata.finalizers:
        return Action.DROP_FINALIZER
    status = task.status
    if state.is_terminal(status.status):
        if task.spec.cancel and needs_cancel_ignored(task):
            return Action.CANCEL_IGNORED
        return Action.NOTHING
    if task.spec.cancel:
        return Action.CANCEL
    if CLOSED in hints:
        return Action.FINISH
    if state.queue_expired(status, queue_timeout, now):
        return Action.EXPIRE
    if status.run_id is None:
        return Action.ADMIT
    return Action.NOTHING


def needs_cancel_ignored(task: NicoTask) -> bool:
    """A finished task (not Terminated) whose cancel was not yet answered."""
    if task.status.status == TaskStatus.TERMINATED:
        return False
    return not any(c.type == state.CANCEL_IGNORED for c in task.status.conditions)


def cancel_reason(task: NicoTask) -> str:
    by = requested_by(task)
    return state.CANCELLED_BY_USER + (f" ({by})" if by else "")


def requested_by(task: NicoTask) -> str | None:
    return task.metadata.annotations.get(CANCEL_REQUESTED_BY)


# ---- status decisions ---------------------------------------------------------


def move(
    status: TaskStatus,
    message: str | None,
    *,
    report: api.TaskReportV1 | None = None,
    extra: Callable[[NicoTaskStatus], None] | None = None,
) -> Decide:
    """Move to `status` when the state machine allows it; a finished task is left alone
    (terminal states are final, and writing one again would repeat its Event)."""

    def decide(task: NicoTask) -> NicoTaskStatus | None:
        current = task.status.status
        if state.is_terminal(current) or not state.allowed_transition(current, status):
            return None
        new = state.with_status(task, status, message, report=report)
        if extra is not None:
            extra(new)
        if state.is_terminal(status) and new.started is not None and new.finished is not None:
            new.finished = max(new.finished, new.started)
        return new

    return decide


def waiting_status(rule_id: str) -> Decide:
    def keep_rule(s: NicoTaskStatus) -> None:
        s.rule_id = rule_id

    return move(TaskStatus.WAITING, state.QUEUED_MESSAGE, extra=keep_rule)


def started_status(rule_id: str, run_id: str) -> Decide:
    """Pending with the workflow's ids; Running stays Running (the worker may be first)."""

    def decide(task: NicoTask) -> NicoTaskStatus | None:
        current = task.status.status
        if state.is_terminal(current):
            return None
        running = current == TaskStatus.RUNNING
        target = TaskStatus.RUNNING if running else TaskStatus.PENDING
        new = state.with_status(task, target, task.status.message if running else "Pending")
        new.rule_id = rule_id
        new.workflow_id = task.metadata.uid
        new.run_id = run_id
        return new

    return decide


def temporal_waiting_status(message: str) -> Decide:
    """Pending, saying why the workflow has not started yet (Temporal unreachable)."""

    def decide(task: NicoTask) -> NicoTaskStatus | None:
        if task.status.status != TaskStatus.PENDING or task.status.message == message:
            return None
        return state.with_status(task, TaskStatus.PENDING, message)

    return decide


def cancelled_status(by: str | None, requested_at: dt.datetime | None) -> Decide:
    """Terminated by the user: the report of the freshest copy, closed."""

    def decide(task: NicoTask) -> NicoTaskStatus | None:
        now = api.utcnow()
        report = state.close_report(task.status.report, state.CANCELLED_BY_USER, now)

        def who_and_when(s: NicoTaskStatus) -> None:
            s.cancel_requested_at = s.cancel_requested_at or requested_at
            s.cancel_requested_by = s.cancel_requested_by or by

        return move(
            TaskStatus.TERMINATED, state.CANCELLED_BY_USER, report=report, extra=who_and_when
        )(task)

    return decide


def outcome_message(observed: Observed) -> tuple[TaskStatus, str]:
    status = observed.status or TaskStatus.FAILED
    message = observed.message or status.value
    if status == TaskStatus.TERMINATED:
        message = f"Terminated outside nicotask: {message}"
    return status, message


def outcome_status(observed: Observed, *, cancel_ignored: bool = False) -> Decide:
    """What Temporal recorded (Succeeded, Failed, or terminated by someone else).

    With `cancel_ignored` (a cancel that lost the race to completion) the same
    write carries the CancelIgnored condition.
    """
    status, message = outcome_message(observed)

    def decide(task: NicoTask) -> NicoTaskStatus | None:
        now = api.utcnow()
        report = observed.outcome.report if observed.outcome else task.status.report
        report = state.close_report(report, message if status != TaskStatus.SUCCEEDED else "", now)

        def stamp(s: NicoTaskStatus) -> None:
            outcome = observed.outcome
            if outcome is not None:
                s.started = s.started or outcome.started
                s.finished = outcome.finished or s.finished
                if outcome.report_sequence is not None:
                    # The final report is the newest: its version, never a lower one.
                    s.report_sequence = max(s.report_sequence or 0, outcome.report_sequence)
            if cancel_ignored:
                s.conditions = _cancel_ignored_conditions(task, s)

        return move(status, message, report=report, extra=stamp)(task)

    return decide


def cancel_pending_status(by: str | None, requested_at: dt.datetime, message: str) -> Decide:
    def decide(task: NicoTask) -> NicoTaskStatus | None:
        if state.is_terminal(task.status.status):
            return None
        new = task.status.model_copy(deep=True)
        new.cancel_requested_at = new.cancel_requested_at or requested_at
        new.cancel_requested_by = by
        new.conditions = state.set_condition(
            new.conditions,
            state.CANCEL_PENDING,
            True,
            "Terminating",
            message,
            task.metadata.generation,
        )
        return new

    return decide


def cancel_ignored_message(task: NicoTask, status: TaskStatus) -> str:
    return "cancel ignored: " + state.cannot_cancel_message(task.metadata.uid or "", status)


def _cancel_ignored_conditions(task: NicoTask, new: NicoTaskStatus) -> list[api.Condition]:
    return state.set_condition(
        new.conditions,
        state.CANCEL_IGNORED,
        True,
        "TaskFinished",
        cancel_ignored_message(task, new.status),
        task.metadata.generation,
    )


def cancel_ignored_status(task: NicoTask) -> NicoTaskStatus | None:
    """A cancel of a finished task changes nothing but says so, once."""
    if not state.is_terminal(task.status.status) or not needs_cancel_ignored(task):
        return None
    new = task.status.model_copy(deep=True)
    new.conditions = _cancel_ignored_conditions(task, new)
    return new
