"""The Argo CD health check (charts/nicotask/files/argocd-health.lua), executed by a real Lua
runtime (lupa) on statuses built by the operator's own state functions."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import lupa
import pytest

from nicotask import api, lifecycle

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "charts" / "nicotask" / "files" / "argocd-health.lua"
T0 = dt.datetime(2025, 6, 1, 10, 0, 0, tzinfo=dt.UTC)


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """Run the script as Argo CD does: the resource in the global `obj`, a table back."""
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPT.read_text())
    return result["status"], result["message"]


def at(seconds: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def make_task(cancel: bool = False) -> api.NicoTask:
    return api.NicoTask(
        metadata=api.ObjectMeta(
            name="t",
            namespace="default",
            generation=2 if cancel else 1,
            uid="3f2a3c1e-8d2b-4a55-9c41-0c9f4b8f2d10",
            creation_timestamp=T0,
        ),
        spec=api.NicoTaskSpec(
            site_id="660e8400-e29b-41d4-a716-446655440000",
            rack_ref="rack-1",
            operation=api.Operation.POWER_ON,
            cancel=cancel,
        ),
    )


def report(running_stage: int | None) -> api.TaskReportV1:
    stages = []
    for n, kind in ((1, "PowerShelf"), (2, "NVSwitch"), (3, "Compute")):
        if running_stage is None or n < running_stage:
            st = "completed"
        elif n == running_stage:
            st = "running"
        else:
            st = "pending"
        stages.append(
            api.TaskReportV1Stage(
                number=n,
                status=st,
                steps=[api.TaskReportV1Step(component_type=kind, status=st, total_components=2)],
            )
        )
    return api.TaskReportV1(stages=stages)


def obj(task: api.NicoTask, status: api.NicoTaskStatus | None) -> dict[str, Any]:
    out = task.model_dump(mode="json", by_alias=True, exclude_none=True)
    if status is None:
        out.pop("status", None)
    else:
        out["status"] = status.wire()
    return out


def test_no_status() -> None:
    assert health(obj(make_task(), None)) == (
        "Progressing",
        "Waiting for the nicotask operator to pick up the task",
    )
    assert health(obj(make_task(), None) | {"status": {}})[0] == "Progressing"


def test_pending() -> None:
    task = make_task()
    status = lifecycle.with_status(task, api.TaskStatus.PENDING, "Starting", now=at(0))
    assert health(obj(task, status)) == ("Progressing", "Pending: Starting")


def test_waiting_mentions_the_queue() -> None:
    task = make_task()
    waiting = api.TaskStatus.WAITING
    status = lifecycle.with_status(task, waiting, lifecycle.QUEUED_MESSAGE, now=at(0))
    assert health(obj(task, status)) == ("Progressing", lifecycle.QUEUED_MESSAGE)
    status = lifecycle.with_status(task, api.TaskStatus.WAITING, "behind task x", now=at(0))
    assert health(obj(task, status)) == ("Progressing", "Waiting in the rack queue: behind task x")


def test_running_shows_the_stage() -> None:
    task = make_task()
    status = lifecycle.with_status(
        task, api.TaskStatus.RUNNING, "Running", now=at(1), report=report(2)
    )
    assert health(obj(task, status)) == ("Progressing", "Running (stage 2 of 3)")
    status = lifecycle.with_status(task, api.TaskStatus.RUNNING, "Running", now=at(1))
    assert health(obj(task, status)) == ("Progressing", "Running")


def test_running_with_cancel_requested() -> None:
    task = make_task(cancel=True)
    status = lifecycle.with_status(
        task, api.TaskStatus.RUNNING, "Running", now=at(1), report=report(1)
    )
    assert health(obj(task, status)) == ("Progressing", "Running (stage 1 of 3) (cancel requested)")


def test_cancel_pending_condition() -> None:
    task = make_task(cancel=True)
    status = lifecycle.with_status(
        task, api.TaskStatus.RUNNING, "Running", now=at(1), report=report(2)
    )
    status.conditions = lifecycle.set_condition(
        status.conditions,
        lifecycle.CANCEL_PENDING,
        True,
        "TemporalUnavailable",
        "terminate not confirmed: Temporal unreachable, retrying",
        2,
        at(3),
    )
    assert health(obj(task, status)) == (
        "Progressing",
        "Cancel pending: terminate not confirmed: Temporal unreachable, retrying",
    )


def test_succeeded() -> None:
    task = make_task()
    status = lifecycle.with_status(
        task, api.TaskStatus.SUCCEEDED, "Completed", now=at(9), report=report(None)
    )
    assert health(obj(task, status)) == ("Healthy", "Completed")


def test_succeeded_with_cancel_ignored() -> None:
    task = make_task(cancel=True)
    status = lifecycle.with_status(
        task, api.TaskStatus.SUCCEEDED, "Completed", now=at(9), report=report(None)
    )
    status.conditions = lifecycle.set_condition(
        status.conditions,
        lifecycle.CANCEL_IGNORED,
        True,
        "AlreadyFinished",
        "cancel ignored: the task had already succeeded",
        2,
        at(10),
    )
    assert health(obj(task, status)) == (
        "Healthy",
        "Completed; cancel ignored: the task had already succeeded",
    )


def test_terminated_is_healthy() -> None:
    task = make_task(cancel=True)
    closed = lifecycle.close_report(report(2), lifecycle.CANCELLED_BY_USER, at(5))
    status = lifecycle.with_status(
        task, api.TaskStatus.TERMINATED, "Cancelled by user (alice)", now=at(5), report=closed
    )
    assert health(obj(task, status)) == ("Healthy", "Terminated: Cancelled by user (alice)")
    expired = lifecycle.with_status(
        make_task(), api.TaskStatus.TERMINATED, lifecycle.EXPIRED_MESSAGE, now=at(5)
    )
    assert health(obj(make_task(), expired)) == (
        "Healthy",
        f"Terminated: {lifecycle.EXPIRED_MESSAGE}",
    )


def test_failed_is_degraded() -> None:
    task = make_task()
    status = lifecycle.with_status(
        task, api.TaskStatus.FAILED, "stage 2 NVSwitch: BMC unreachable", now=at(5)
    )
    assert health(obj(task, status)) == ("Degraded", "stage 2 NVSwitch: BMC unreachable")
    status = lifecycle.with_status(task, api.TaskStatus.FAILED, None, now=at(5))
    assert health(obj(task, status)) == ("Degraded", "Failed")


@pytest.mark.parametrize("status", list(api.TaskStatus))
def test_every_status_has_a_verdict(status: api.TaskStatus) -> None:
    task = make_task()
    st = lifecycle.with_status(task, status, None, now=at(1))
    verdict, message = health(obj(task, st))
    expected = {"Succeeded": "Healthy", "Terminated": "Healthy", "Failed": "Degraded"}
    assert verdict == expected.get(status.value, "Progressing")
    assert message


def test_docs_show_the_shipped_script() -> None:
    docs = (REPO / "docs" / "gitops.md").read_text()
    body = SCRIPT.read_text()
    indented = "\n".join(("    " + line) if line else "" for line in body.splitlines())
    assert indented in docs, "docs/gitops.md must embed files/argocd-health.lua verbatim"
