"""A task's lifecycle: the status state machine, its conditions, the rack queue.

These are the rules any writer of a task's status obeys (operator, worker, shim);
what the operator does next is operator/decisions.py. Nothing here does I/O, so
every rule is unit-tested directly and every handler that uses it can be
repeated after a crash with the same outcome.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable
from dataclasses import dataclass

from nicotask.api import (
    FINISHED_STATUSES,
    Condition,
    NicoTask,
    NicoTaskStatus,
    ReportStatus,
    TaskReportV1,
    TaskStatus,
    utcnow,
)

CANCELLED_BY_USER = "Cancelled by user"
QUEUED_MESSAGE = "Queued: waiting for rack to become available"
EXPIRED_MESSAGE = "Expired: queue timeout reached"
STOPPING_MESSAGE = (
    "stopping gracefully: the running stage finishes, later stages are skipped,"
    " then the rule's cleanup runs"
)
DEADLINE_BEFORE_START_MESSAGE = "deadline ran out before the task started (notAfter {})"


def conflict_message(rack: str) -> str:
    return f"rack {rack} already has a conflicting task"


def cannot_cancel_message(task_id: str, status: TaskStatus) -> str:
    return f"task {task_id} cannot be cancelled (status: {status.value})"


# Rank of each status: a write may keep or raise the rank, never lower it.
_RANK = {
    TaskStatus.UNKNOWN: 0,
    TaskStatus.PENDING: 1,
    TaskStatus.WAITING: 1,
    TaskStatus.RUNNING: 2,
    TaskStatus.SUCCEEDED: 3,
    TaskStatus.FAILED: 3,
    TaskStatus.TERMINATED: 3,
}


def is_terminal(status: TaskStatus) -> bool:
    return status in FINISHED_STATUSES


def allowed_transition(old: TaskStatus, new: TaskStatus) -> bool:
    """Monotonic: terminal states are final, and no status moves backwards.

    Pending and Waiting share a rank (a queued task is promoted to Pending).
    Writing a terminal state again with the same status is allowed so that
    conditions or the report can be completed after the fact.
    """
    if is_terminal(old):
        return new == old
    return _RANK[new] >= _RANK[old]


# --------------------------------------------------------------------------
# Conditions (kstatus: Ready, Reconciling, Stalled; plus our own)
# --------------------------------------------------------------------------

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
CANCEL_PENDING = "CancelPending"
CANCEL_IGNORED = "CancelIgnored"


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: bool | None,
    reason: str,
    message: str = "",
    generation: int | None = None,
    now: dt.datetime | None = None,
) -> list[Condition]:
    """Return conditions with `type_` set; lastTransitionTime moves only on a status change."""
    value = "Unknown" if status is None else ("True" if status else "False")
    now = now or utcnow()
    previous = next((c for c in conditions if c.type == type_), None)
    changed = previous is None or previous.status != value
    updated = Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=now if changed or previous is None else previous.last_transition_time,
        observed_generation=generation,
    )
    if previous is None:
        return [*conditions, updated]
    return [updated if c.type == type_ else c for c in conditions]


def remove_condition(conditions: list[Condition], type_: str) -> list[Condition]:
    return [c for c in conditions if c.type != type_]


def health_conditions(
    status: NicoTaskStatus, generation: int | None, now: dt.datetime | None = None
) -> list[Condition]:
    """kstatus view of a status: Ready once finished well, Stalled once failed, else Reconciling.

    Flux's kstatus reads Reconciling=True as InProgress, Stalled=True as Failed,
    Ready=True as Current. Argo CD's health script reads the same fields.
    """
    conds = status.conditions
    s = status.status
    msg = status.message or s.value
    if s == TaskStatus.SUCCEEDED:
        conds = set_condition(conds, READY, True, "Succeeded", msg, generation, now)
        conds = set_condition(conds, RECONCILING, False, "Succeeded", "", generation, now)
        conds = set_condition(conds, STALLED, False, "Succeeded", "", generation, now)
    elif s == TaskStatus.FAILED:
        conds = set_condition(conds, READY, False, "Failed", msg, generation, now)
        conds = set_condition(conds, RECONCILING, False, "Failed", "", generation, now)
        conds = set_condition(conds, STALLED, True, "Failed", msg, generation, now)
    elif s == TaskStatus.TERMINATED:
        # A cancelled task did what its owner asked: it is finished, not broken.
        conds = set_condition(conds, READY, True, "Terminated", msg, generation, now)
        conds = set_condition(conds, RECONCILING, False, "Terminated", "", generation, now)
        conds = set_condition(conds, STALLED, False, "Terminated", "", generation, now)
    else:
        conds = set_condition(conds, READY, False, s.value, msg, generation, now)
        conds = set_condition(conds, RECONCILING, True, s.value, msg, generation, now)
        conds = set_condition(conds, STALLED, False, s.value, "", generation, now)
    return conds


def with_status(
    task: NicoTask,
    status: TaskStatus,
    message: str | None,
    *,
    now: dt.datetime | None = None,
    report: TaskReportV1 | None = None,
) -> NicoTaskStatus:
    """A copy of the task's status moved to `status`, with timestamps and conditions."""
    now = now or utcnow()
    new = task.status.model_copy(deep=True)
    new.status = status
    new.message = message
    new.observed_generation = task.metadata.generation
    if new.id is None:
        new.id = task.metadata.uid
    if new.created is None:
        new.created = task.metadata.creation_timestamp or now
    if status == TaskStatus.RUNNING and new.started is None:
        new.started = now
    if is_terminal(status):
        new.finished = new.finished or now
        new.conditions = remove_condition(new.conditions, CANCEL_PENDING)
    if status == TaskStatus.WAITING and new.waiting_since is None:
        # Full precision: the queue is ordered by it.
        new.waiting_since = dt.datetime.now(dt.UTC)
    if report is not None:
        new.report = report
    new.conditions = health_conditions(new, task.metadata.generation, now)
    return new


# --------------------------------------------------------------------------
# Report at a terminal state
# --------------------------------------------------------------------------


def report_settled(report: TaskReportV1 | None) -> bool:
    """Nothing in the report will run any more: no stage pending or running."""
    if report is None or not report.stages:
        return False
    return all(s.status not in (ReportStatus.PENDING, ReportStatus.RUNNING) for s in report.stages)


def close_report(report: TaskReportV1 | None, error: str, now: dt.datetime) -> TaskReportV1 | None:
    """Leave nothing `running` in a finished task.

    In-flight stages and steps become failed with `error` and finishedAt;
    pending ones stay pending; report.error keeps the first failure.
    (Upstream leaves the last snapshot, with stages running forever.)
    """
    if report is None:
        return None
    out = report.model_copy(deep=True)
    for stage in out.stages:
        for step in stage.steps:
            if step.status == ReportStatus.RUNNING:
                step.status = ReportStatus.FAILED
                step.error = step.error or error
                step.finished_at = step.finished_at or now
        if stage.status == ReportStatus.RUNNING:
            stage.status = ReportStatus.FAILED
            stage.error = stage.error or error
            stage.finished_at = stage.finished_at or now
            if out.error is None:
                out.error = error
    return out


# --------------------------------------------------------------------------
# One active task per rack
# --------------------------------------------------------------------------


class Admission(enum.Enum):
    ADMIT = "admit"
    WAIT = "wait"
    REJECT = "reject"


@dataclass(frozen=True)
class QueueEntry:
    uid: str
    name: str
    created: dt.datetime
    status: TaskStatus
    has_workflow: bool
    queued_at: dt.datetime | None = None

    @classmethod
    def of(cls, task: NicoTask) -> QueueEntry:
        return cls(
            uid=task.metadata.uid or "",
            name=task.metadata.name,
            created=task.metadata.creation_timestamp or utcnow(),
            status=task.status.status,
            has_workflow=task.status.run_id is not None,
            queued_at=task.status.waiting_since
            if task.status.status == TaskStatus.WAITING
            else None,
        )

    def queue_key(self) -> tuple[int, dt.datetime, dt.datetime, str, str]:
        """Tasks already queued keep their place (by when they joined, to the
        microsecond); the rest follow by creation time, whose one-second
        granularity needs name and uid to break ties."""
        if self.queued_at is not None:
            return (0, self.queued_at, self.created, self.name, self.uid)
        return (1, self.created, self.created, self.name, self.uid)


def admission(me: QueueEntry, rack_tasks: Iterable[QueueEntry], queue_limit: int) -> Admission:
    """Decide, from all tasks on the rack, whether `me` may start now.

    The holder is the non-terminal task whose workflow exists (or is Running).
    The others queue FIFO: tasks already Waiting in the order they joined,
    then the rest by creation time (name, then uid break ties), so every
    operator replica and every retry decides the same way.
    """
    if me.has_workflow or me.status == TaskStatus.RUNNING:
        # `me` holds the rack: its workflow runs, though its run id was never written
        # (the start's status write failed, the worker wrote Running first). Starting
        # it again attaches to that execution and records it; queueing it behind the
        # tasks that wait for it left both waiting for good (found by the fault soak).
        return Admission.ADMIT
    live = [e for e in rack_tasks if not is_terminal(e.status) and e.uid != me.uid]
    holder = any(e.has_workflow or e.status == TaskStatus.RUNNING for e in live)
    queue = sorted(
        [e for e in live if not (e.has_workflow or e.status == TaskStatus.RUNNING)] + [me],
        key=QueueEntry.queue_key,
    )
    rank = queue.index(me) + (1 if holder else 0)
    if rank == 0:
        return Admission.ADMIT
    if rank <= queue_limit:
        return Admission.WAIT
    return Admission.REJECT


def start_deadline_passed(task: NicoTask, now: dt.datetime) -> bool:
    """The task has not started and its deadline's notAfter is past: it never will."""
    deadline = task.spec.deadline
    return (
        task.status.run_id is None
        and deadline is not None
        and deadline.not_after is not None
        and now >= deadline.not_after
    )


def queue_expired(status: NicoTaskStatus, timeout: dt.timedelta, now: dt.datetime) -> bool:
    return (
        status.status == TaskStatus.WAITING
        and status.waiting_since is not None
        and now - status.waiting_since >= timeout
    )
