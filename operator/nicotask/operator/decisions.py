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

from nicotask import api, lifecycle
from nicotask.api import NicoTask, NicoTaskStatus, StopMode, TaskStatus
from nicotask.temporal.control import Observed

Decide = Callable[[NicoTask], NicoTaskStatus | None]

CANCEL_REQUESTED_BY = api.CANCEL_REQUESTED_BY

# Hints a reconcile can carry (see Controller.reconcile).
CLOSED = "closed"  # Temporal may have closed the task's workflow: read its outcome
ESCALATED = " (graceful stop escalated to Terminate)"


class Action(enum.Enum):
    NOTHING = "nothing"
    CANCEL_IGNORED = "cancel-ignored"
    CANCEL = "cancel"
    FINISH = "finish"
    EXPIRE = "expire"
    DEADLINE = "deadline"  # spec.deadline ran out before the task started
    ADMIT = "admit"


def next_action(
    task: NicoTask, hints: frozenset[str], queue_timeout: dt.timedelta, now: dt.datetime
) -> Action:
    """What to do for a task now; the same answer for the same task, so retries converge."""
    status = task.status
    if lifecycle.is_terminal(status.status):
        if task.spec.cancel and needs_cancel_ignored(task):
            return Action.CANCEL_IGNORED
        return Action.NOTHING
    if task.spec.cancel and not graceful_stop_delivered(task):
        return Action.CANCEL
    if CLOSED in hints:
        return Action.FINISH
    if lifecycle.report_settled(status.report):
        # The workflow ends by itself (its rule done, failed, or stopped gracefully):
        # its last progress write (the final report: nothing pending or running) comes
        # just before its close, so read the outcome then rather than wait for the
        # follower, whose visibility may show the close late. Only a workflow writes a
        # report, so this holds without a recorded run id too (a start whose status
        # write was lost, then cancelled gracefully: the follower would never look).
        return Action.FINISH
    if task.spec.cancel:
        return Action.NOTHING  # stopping gracefully: the workflow ends by itself
    if lifecycle.queue_expired(status, queue_timeout, now):
        return Action.EXPIRE
    if status.run_id is None:
        if lifecycle.start_deadline_passed(task, now):
            return Action.DEADLINE
        return Action.ADMIT
    return Action.NOTHING


def graceful_stop_delivered(task: NicoTask) -> bool:
    """The user asks for a graceful stop and Temporal already has the request."""
    return (
        task.spec.stop_mode() == StopMode.GRACEFUL and task.status.cancel_mode == StopMode.GRACEFUL
    )


def needs_cancel_ignored(task: NicoTask) -> bool:
    """A finished task (not Terminated) whose cancel was not yet answered."""
    if task.status.status == TaskStatus.TERMINATED:
        return False
    return not any(c.type == lifecycle.CANCEL_IGNORED for c in task.status.conditions)


def cancel_reason(task: NicoTask) -> str:
    """Who cancelled and why, in one line: Temporal's reason, and the Events'."""
    by = requested_by(task)
    text = lifecycle.CANCELLED_BY_USER + (f" ({by})" if by else "")
    if task.spec.cancel_reason:
        text += f": {task.spec.cancel_reason}"
    return text


def cancelled_event_message(task: NicoTask) -> str:
    """The Cancelled Event: who asked, why, and whether a graceful stop was escalated."""
    text = cancel_reason(task)
    if (task.status.message or "").endswith(ESCALATED):
        text += ESCALATED
    return text


def cancel_message(task: NicoTask) -> str:
    """status.message of a cancelled task: the contract's fixed "Cancelled by user",
    and the reason when one was given (who asked is in status.cancelRequestedBy)."""
    reason = task.spec.cancel_reason
    return lifecycle.CANCELLED_BY_USER + (f": {reason}" if reason else "")


def requested_by(task: NicoTask) -> str | None:
    return task.metadata.annotations.get(CANCEL_REQUESTED_BY)


def finished_elsewhere(ours: NicoTask, fresh: NicoTask, changed: bool) -> bool:
    """A write found the task finished by another writer: our copy had it live."""
    return (
        not changed
        and lifecycle.is_terminal(fresh.status.status)
        and not lifecycle.is_terminal(ours.status.status)
    )


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
        if lifecycle.is_terminal(current) or not lifecycle.allowed_transition(current, status):
            return None
        new = lifecycle.with_status(task, status, message, report=report)
        if extra is not None:
            extra(new)
        if lifecycle.is_terminal(status) and new.started is not None and new.finished is not None:
            new.finished = max(new.finished, new.started)
        return new

    return decide


def waiting_status(rule_id: str) -> Decide:
    def keep_rule(s: NicoTaskStatus) -> None:
        s.rule_id = rule_id

    return move(TaskStatus.WAITING, lifecycle.QUEUED_MESSAGE, extra=keep_rule)


def started_status(rule_id: str, run_id: str) -> Decide:
    """Pending with the workflow's ids; Running stays Running (the worker may be first)."""

    def decide(task: NicoTask) -> NicoTaskStatus | None:
        current = task.status.status
        if lifecycle.is_terminal(current):
            return None
        running = current == TaskStatus.RUNNING
        target = TaskStatus.RUNNING if running else TaskStatus.PENDING
        new = lifecycle.with_status(task, target, task.status.message if running else "Pending")
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
        return lifecycle.with_status(task, TaskStatus.PENDING, message)

    return decide


def _record_cancel(
    task: NicoTask, by: str | None, requested_at: dt.datetime | None, mode: StopMode
) -> Callable[[NicoTaskStatus], None]:
    """Who asked, when, why and how, as the status keeps them."""

    def record(s: NicoTaskStatus) -> None:
        s.cancel_requested_at = s.cancel_requested_at or requested_at
        s.cancel_requested_by = s.cancel_requested_by or by
        s.cancel_reason = s.cancel_reason or task.spec.cancel_reason
        s.cancel_mode = mode

    return record


def cancelled_status(
    by: str | None,
    requested_at: dt.datetime | None,
    workflow_report: api.TaskReportV1 | None = None,
) -> Decide:
    """Terminated by the user: the report of the freshest copy (or the workflow's own,
    read just before the terminate, when it has more stages), closed."""

    def decide(task: NicoTask) -> NicoTaskStatus | None:
        now = api.utcnow()
        report = task.status.report
        if workflow_report is not None and (
            report is None or len(workflow_report.stages) >= len(report.stages)
        ):
            report = workflow_report
        report = lifecycle.close_report(report, lifecycle.CANCELLED_BY_USER, now)
        message = cancel_message(task)
        if task.status.cancel_mode == StopMode.GRACEFUL:
            message += ESCALATED
        return move(
            TaskStatus.TERMINATED,
            api.first_line_error(message),
            report=report,
            extra=_record_cancel(task, by, requested_at, StopMode.TERMINATE),
        )(task)

    return decide


def stopping_status(by: str | None, requested_at: dt.datetime) -> Decide:
    """The graceful stop reached Temporal: the task keeps running until its workflow
    ends by itself; a CancelPending condition says what happens meanwhile."""

    def decide(task: NicoTask) -> NicoTaskStatus | None:
        if lifecycle.is_terminal(task.status.status):
            return None
        new = task.status.model_copy(deep=True)
        _record_cancel(task, by, requested_at, StopMode.GRACEFUL)(new)
        new.conditions = lifecycle.set_condition(
            new.conditions,
            lifecycle.CANCEL_PENDING,
            True,
            "StoppingGracefully",
            api.first_line_error(f"{cancel_reason(task)}; {lifecycle.STOPPING_MESSAGE}"),
            task.metadata.generation,
        )
        return new

    return decide


def deadline_passed_status(message: str) -> Decide:
    """A task whose deadline ran out before it started: Failed, never started."""

    def decide(task: NicoTask) -> NicoTaskStatus | None:
        if task.status.run_id is not None or task.spec.cancel:
            return None
        return move(TaskStatus.FAILED, message)(task)

    return decide


def outcome_message(observed: Observed, task: NicoTask | None = None) -> tuple[TaskStatus, str]:
    """The terminal status and message of what Temporal recorded.

    A workflow that stopped gracefully returns its own outcome; the message
    then starts with who cancelled and why.
    """
    status = observed.status or TaskStatus.FAILED
    message = observed.message or status.value
    if status == TaskStatus.TERMINATED and observed.outcome is None:
        message = f"Terminated outside nicotask: {message}"
    elif task is not None and graceful_stop_delivered(task) and status != TaskStatus.SUCCEEDED:
        message = f"{cancel_message(task)}; {message}"
    return status, api.first_line_error(message)


def outcome_status(observed: Observed, *, cancel_ignored: bool = False) -> Decide:
    """What Temporal recorded (Succeeded, Failed, Terminated by a graceful stop, or
    terminated by someone else).

    With `cancel_ignored` (a cancel that lost the race to completion) the same
    write carries the CancelIgnored condition.
    """

    def decide(task: NicoTask) -> NicoTaskStatus | None:
        status, message = outcome_message(observed, task)
        now = api.utcnow()
        report = observed.outcome.report if observed.outcome else task.status.report
        closing = message if status != TaskStatus.SUCCEEDED else ""
        report = lifecycle.close_report(report, closing, now)

        def stamp(s: NicoTaskStatus) -> None:
            outcome = observed.outcome
            if outcome is not None:
                s.started = s.started or outcome.started
                s.finished = outcome.finished or s.finished
                if outcome.report_sequence is not None:
                    # The final report is the newest: its version, never a lower one.
                    s.report_sequence = max(s.report_sequence or 0, outcome.report_sequence)
            late_graceful = graceful_stop_delivered(task) and status == TaskStatus.SUCCEEDED
            if cancel_ignored or late_graceful:
                s.conditions = _cancel_ignored_conditions(task, s)

        return move(status, message, report=report, extra=stamp)(task)

    return decide


def cancel_pending_status(by: str | None, requested_at: dt.datetime, message: str) -> Decide:
    def decide(task: NicoTask) -> NicoTaskStatus | None:
        if lifecycle.is_terminal(task.status.status):
            return None
        new = task.status.model_copy(deep=True)
        new.cancel_requested_at = new.cancel_requested_at or requested_at
        new.cancel_requested_by = by
        new.conditions = lifecycle.set_condition(
            new.conditions,
            lifecycle.CANCEL_PENDING,
            True,
            "Terminating",
            message,
            task.metadata.generation,
        )
        return new

    return decide


def cancel_ignored_message(task: NicoTask, status: TaskStatus) -> str:
    return "cancel ignored: " + lifecycle.cannot_cancel_message(task.metadata.uid or "", status)


def _cancel_ignored_conditions(task: NicoTask, new: NicoTaskStatus) -> list[api.Condition]:
    return lifecycle.set_condition(
        new.conditions,
        lifecycle.CANCEL_IGNORED,
        True,
        "TaskFinished",
        cancel_ignored_message(task, new.status),
        task.metadata.generation,
    )


def cancel_ignored_status(task: NicoTask) -> NicoTaskStatus | None:
    """A cancel of a finished task changes nothing but says so, once."""
    if not lifecycle.is_terminal(task.status.status) or not needs_cancel_ignored(task):
        return None
    new = task.status.model_copy(deep=True)
    new.conditions = _cancel_ignored_conditions(task, new)
    return new
