"""The status state machine, conditions, report closing and the rack queue."""

from __future__ import annotations

import datetime as dt

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

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
S = TaskStatus


@pytest.mark.parametrize(
    ("old", "new", "ok"),
    [
        (S.PENDING, S.RUNNING, True),
        (S.PENDING, S.WAITING, True),
        (S.WAITING, S.PENDING, True),
        (S.RUNNING, S.PENDING, False),
        (S.RUNNING, S.WAITING, False),
        (S.RUNNING, S.SUCCEEDED, True),
        (S.RUNNING, S.TERMINATED, True),
        (S.TERMINATED, S.RUNNING, False),
        (S.TERMINATED, S.SUCCEEDED, False),
        (S.SUCCEEDED, S.TERMINATED, False),
        (S.FAILED, S.FAILED, True),
        (S.UNKNOWN, S.PENDING, True),
    ],
)
def test_transitions_are_monotonic_and_terminal_is_final(old: S, new: S, ok: bool) -> None:
    assert lifecycle.allowed_transition(old, new) is ok


def _task(status: S = S.PENDING, **meta: object) -> NicoTask:
    return NicoTask.model_validate(
        {
            "metadata": {
                "name": meta.get("name", "t1"),
                "namespace": "ns",
                "uid": meta.get("uid", "11111111-1111-1111-1111-111111111111"),
                "generation": 1,
                "creationTimestamp": meta.get("created", "2026-01-01T00:00:00Z"),
            },
            "spec": {
                "siteId": "660e8400-e29b-41d4-a716-446655440000",
                "rackRef": "rack-1",
                "operation": "PowerOn",
            },
            "status": {"status": status.value},
        }
    )


def test_with_status_sets_timestamps_and_kstatus_conditions() -> None:
    running = lifecycle.with_status(_task(), S.RUNNING, "Running", now=T0)
    assert running.started == T0 and running.finished is None
    conds = {c.type: c.status for c in running.conditions}
    assert conds == {"Ready": "False", "Reconciling": "True", "Stalled": "False"}

    failed = lifecycle.with_status(_task(S.RUNNING), S.FAILED, "boom", now=T0)
    conds = {c.type: c.status for c in failed.conditions}
    assert failed.finished == T0
    assert conds == {"Ready": "False", "Reconciling": "False", "Stalled": "True"}

    done = lifecycle.with_status(_task(S.RUNNING), S.TERMINATED, "Cancelled by user", now=T0)
    assert {c.type: c.status for c in done.conditions}["Ready"] == "True"


def test_condition_transition_time_moves_only_on_change() -> None:
    conds = lifecycle.set_condition([], "Ready", False, "Running", now=T0)
    later = T0 + dt.timedelta(minutes=1)
    same = lifecycle.set_condition(conds, "Ready", False, "Running", "still", now=later)
    assert same[0].last_transition_time == T0
    flipped = lifecycle.set_condition(same, "Ready", True, "Succeeded", now=later)
    assert flipped[0].last_transition_time == later


def _report() -> TaskReportV1:
    def step(kind: str, status: ReportStatus) -> TaskReportV1Step:
        return TaskReportV1Step(component_type=kind, status=status, started_at=T0)

    return TaskReportV1(
        stages=[
            TaskReportV1Stage(
                number=1,
                status=ReportStatus.COMPLETED,
                steps=[step("PowerShelf", ReportStatus.COMPLETED)],
            ),
            TaskReportV1Stage(
                number=2,
                status=ReportStatus.RUNNING,
                steps=[
                    step("NVSwitch", ReportStatus.RUNNING),
                    step("Compute", ReportStatus.COMPLETED),
                ],
            ),
            TaskReportV1Stage(
                number=3,
                status=ReportStatus.PENDING,
                steps=[TaskReportV1Step(component_type="Compute", status=ReportStatus.PENDING)],
            ),
        ]
    )


def test_close_report_leaves_nothing_running() -> None:
    now = T0 + dt.timedelta(seconds=5)
    closed = lifecycle.close_report(_report(), "Cancelled by user", now)
    assert closed is not None
    s1, s2, s3 = closed.stages
    assert s1.status == ReportStatus.COMPLETED and s1.error is None
    assert s2.status == ReportStatus.FAILED and s2.error == "Cancelled by user"
    assert s2.finished_at == now
    assert [st.status for st in s2.steps] == [ReportStatus.FAILED, ReportStatus.COMPLETED]
    assert s2.steps[0].error == "Cancelled by user" and s2.steps[0].finished_at == now
    assert s3.status == ReportStatus.PENDING and s3.steps[0].status == ReportStatus.PENDING
    assert closed.error == "Cancelled by user"


def test_close_report_keeps_first_error() -> None:
    report = _report()
    report.error = "first failure"
    closed = lifecycle.close_report(report, "Cancelled by user", T0)
    assert closed is not None and closed.error == "first failure"


def _entry(name: str, minute: int, status: S = S.PENDING, wf: bool = False) -> lifecycle.QueueEntry:
    return lifecycle.QueueEntry(
        uid=f"uid-{name}",
        name=name,
        created=T0 + dt.timedelta(minutes=minute),
        status=status,
        has_workflow=wf,
    )


def test_admission_first_come_first_served() -> None:
    a, b = _entry("a", 0), _entry("b", 1)
    assert lifecycle.admission(a, [a, b], 5) is lifecycle.Admission.ADMIT
    assert lifecycle.admission(b, [a, b], 5) is lifecycle.Admission.WAIT


def test_admission_respects_a_running_holder_and_ignores_finished_tasks() -> None:
    holder = _entry("h", 5, S.RUNNING, wf=True)
    old_done = _entry("old", 0, S.SUCCEEDED, wf=True)
    me = _entry("me", 6)
    assert lifecycle.admission(me, [holder, old_done, me], 5) is lifecycle.Admission.WAIT
    assert lifecycle.admission(me, [old_done, me], 5) is lifecycle.Admission.ADMIT


def test_the_holder_itself_is_admitted_even_with_tasks_waiting_behind_it() -> None:
    # Running (the worker wrote it) without a run id (the start's status write failed,
    # then another replica took over), with a task already Waiting for it: admitted,
    # so starting it again records its execution. Queued, both waited for good (found
    # by the fault soak).
    me = _entry("me", 0, S.RUNNING, wf=False)
    behind = lifecycle.QueueEntry("uid-b", "b", T0, S.WAITING, False, queued_at=T0)
    assert lifecycle.admission(me, [me, behind], 5) is lifecycle.Admission.ADMIT
    assert lifecycle.admission(behind, [me, behind], 5) is lifecycle.Admission.WAIT
    started = _entry("s", 0, S.PENDING, wf=True)  # its run id written, still Pending
    assert lifecycle.admission(started, [started, behind], 5) is lifecycle.Admission.ADMIT


def test_admission_queue_limit() -> None:
    holder = _entry("h", 0, S.RUNNING, wf=True)
    waiting = [_entry(f"w{i}", i + 1, S.WAITING) for i in range(5)]
    sixth = _entry("late", 10)
    assert lifecycle.admission(waiting[-1], [holder, *waiting], 5) is lifecycle.Admission.WAIT
    assert lifecycle.admission(sixth, [holder, *waiting, sixth], 5) is lifecycle.Admission.REJECT


def test_queue_expiry() -> None:
    task = _task(S.WAITING)
    task.status.waiting_since = T0
    hour = dt.timedelta(hours=1)
    assert not lifecycle.queue_expired(task.status, hour, T0 + dt.timedelta(minutes=59))
    assert lifecycle.queue_expired(task.status, hour, T0 + hour)


def test_queued_tasks_keep_their_place_whatever_their_names() -> None:
    holder = _entry("h", 0, S.RUNNING, wf=True)
    # Created in the same second; "z" joined the queue first.
    z = lifecycle.QueueEntry("uid-z", "z", T0, S.WAITING, False, queued_at=T0)
    a = lifecycle.QueueEntry("uid-a", "a", T0, S.PENDING, False)
    assert lifecycle.admission(a, [holder, z, a], 1) is lifecycle.Admission.REJECT
    assert lifecycle.admission(z, [holder, z, a], 1) is lifecycle.Admission.WAIT
    assert lifecycle.admission(z, [z, a], 1) is lifecycle.Admission.ADMIT
