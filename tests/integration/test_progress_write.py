"""The worker's progress write against the real API server (CRD CEL rules, real Kube).

One write is one status merge patch; its safety comes from the CRD: a
terminal status is final, status.reportSequence never decreases (so a late
write never replaces a newer report), and metadata.uid in the patch keeps a
recreated namesake untouched. The activity runs in the SDK's
ActivityEnvironment (it supplies the activity context: the workflow id).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from typing import Any

import pytest
from integration_support import create_task
from kubernetes_asyncio import client as k8s
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from nicotask import api
from nicotask.api import ReportStatus, TaskReportV1, TaskReportV1Stage, TaskReportV1Step, TaskStatus
from nicotask.kube import TASKS, Kube, Refused
from nicotask.lifecycle import with_status
from nicotask.temporal.activities import TaskActivities
from nicotask.temporal.models import ProgressUpdate, TaskRef

pytestmark = pytest.mark.asyncio(loop_scope="session")


class Calls:
    """Counts API requests by wrapping the ApiClient's one entry point."""

    def __init__(self, kube_api: Any) -> None:
        self.count = 0
        original = kube_api.call_api

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await original(*args, **kwargs)

        self.api = kube_api
        self.original = original
        kube_api.call_api = counted

    def restore(self) -> None:
        self.api.call_api = self.original


def report(status: ReportStatus) -> TaskReportV1:
    step = TaskReportV1Step(component_type="Compute", status=status, total_components=1)
    return TaskReportV1(stages=[TaskReportV1Stage(number=1, status=status, steps=[step])])


def publish(acts: TaskActivities, update: ProgressUpdate) -> Any:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=update.task.uid)
    return env.run(acts.publish_progress, update)


async def test_progress_write_is_one_patch_and_never_goes_backwards(
    kube_api: Any, namespace: str, crds: None
) -> None:
    kube = Kube(kube_api)
    obj = await create_task(kube, namespace, "t")
    # The operator writes Pending before it starts the workflow.
    pending, _ = await kube.update_task_status(
        namespace, "t", lambda t: with_status(t, TaskStatus.PENDING, "Pending")
    )
    ref = TaskRef(namespace=namespace, name="t", uid=obj.metadata.uid or "")
    acts = TaskActivities(kube)
    started = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    # Each write, the first too (it also moves the kstatus conditions), is one patch.
    calls = Calls(kube_api)
    try:
        first = ProgressUpdate(task=ref, report=report(ReportStatus.PENDING), sequence=1,
                               started=started)  # fmt: skip
        assert await publish(acts, first) is True
        assert calls.count == 1
        calls.count = 0
        newer = ProgressUpdate(task=ref, report=report(ReportStatus.RUNNING), sequence=5)
        assert await publish(acts, newer) is True
        assert calls.count == 1
    finally:
        calls.restore()
    stored = await kube.get_task(namespace, "t")
    assert stored.status.status == TaskStatus.RUNNING
    assert stored.status.message == "Running"
    assert stored.status.report_sequence == 5
    assert stored.status.report == report(ReportStatus.RUNNING)
    assert stored.status.started == started
    assert [(c.type, c.status, c.reason, c.message) for c in stored.status.conditions] == [
        ("Ready", "False", "Running", "Running"),
        ("Reconciling", "True", "Running", "Running"),
        ("Stalled", "False", "Running", ""),
    ]
    # No condition changed its status, so none moved its lastTransitionTime.
    assert [c.last_transition_time for c in stored.status.conditions] == [
        c.last_transition_time for c in pending.status.conditions
    ]

    # A late write of an older report is refused by the API server: superseded.
    late = ProgressUpdate(task=ref, report=report(ReportStatus.PENDING), sequence=3)
    assert await publish(acts, late) is False
    stored = await kube.get_task(namespace, "t")
    assert stored.status.report_sequence == 5
    assert stored.status.report == report(ReportStatus.RUNNING)

    # The rule is the API server's, whoever writes.
    with pytest.raises(Refused, match="reportSequence cannot decrease"):
        await kube.json_patch_task_status(
            namespace, "t", [{"op": "add", "path": "/status/reportSequence", "value": 4}]
        )

    # Terminal is final: a progress write after the operator's Terminated changes nothing.
    await kube.update_task_status(
        namespace, "t", lambda t: with_status(t, TaskStatus.TERMINATED, "Cancelled by user")
    )
    after = ProgressUpdate(task=ref, report=report(ReportStatus.COMPLETED), sequence=9)
    assert await publish(acts, after) is False
    stored = await kube.get_task(namespace, "t")
    assert stored.status.status == TaskStatus.TERMINATED
    assert stored.status.report == report(ReportStatus.RUNNING)


async def test_progress_write_leaves_a_recreated_namesake_alone(
    kube_api: Any, namespace: str, crds: None
) -> None:
    kube = Kube(kube_api)
    old = await create_task(kube, namespace, "again")
    await kube.delete(TASKS, "again", namespace)
    for _ in range(50):  # no finalizer here (no operator): gone at once, but be patient
        try:
            await kube.get_task(namespace, "again")
        except Exception:
            break
        await asyncio.sleep(0.1)
    await create_task(kube, namespace, "again")
    ref = TaskRef(namespace=namespace, name="again", uid=old.metadata.uid or "")
    update = ProgressUpdate(task=ref, report=report(ReportStatus.RUNNING), sequence=1)
    with pytest.raises(ApplicationError, match="is gone"):
        await publish(TaskActivities(kube), update)
    stored = await kube.get_task(namespace, "again")
    assert stored.status.report is None
    assert stored.status.status == TaskStatus.PENDING
    # With a status to patch (the operator wrote Pending), still refused.
    await kube.update_task_status(
        namespace, "again", lambda t: with_status(t, TaskStatus.PENDING, "Pending")
    )
    with pytest.raises(ApplicationError, match="is gone"):
        await publish(TaskActivities(kube), update)
    stored = await kube.get_task(namespace, "again")
    assert stored.status.report is None


async def test_progress_write_on_a_task_without_status(
    kube_api: Any, namespace: str, crds: None
) -> None:
    """No status to patch yet (nobody wrote one): the whole status is written once."""
    kube = Kube(kube_api)
    obj = await create_task(kube, namespace, "bare")
    ref = TaskRef(namespace=namespace, name="bare", uid=obj.metadata.uid or "")
    update = ProgressUpdate(task=ref, report=report(ReportStatus.PENDING), sequence=2)
    assert await publish(TaskActivities(kube), update) is True
    stored = await kube.get_task(namespace, "bare")
    assert stored.status.status == TaskStatus.RUNNING
    assert stored.status.report_sequence == 2
    assert stored.status.report == report(ReportStatus.PENDING)
    reconciling = [c for c in stored.status.conditions if c.type == "Reconciling"]
    assert [(c.status, c.reason) for c in reconciling] == [("True", "Running")]


async def test_secret_reader_sees_labels(kube_api: Any, namespace: str) -> None:
    await k8s.CoreV1Api(kube_api).create_namespaced_secret(
        namespace,
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name="s", labels={api.BMC_CREDENTIALS_LABEL: "true"}),
            string_data={"username": "u"},
        ),
    )
    secret = await Kube(kube_api).read_secret_data(namespace, "s")
    assert secret.labels == {api.BMC_CREDENTIALS_LABEL: "true"}
    assert secret.data == {"username": "u"}


async def test_terminal_write_from_a_stale_copy_closes_the_newer_report(
    kube_api: Any, namespace: str, crds: None
) -> None:
    """The operator terminates from the copy it holds; the worker wrote a newer report
    meanwhile. The terminal write must close that newer report, never put back the old."""
    from nicotask.operator import decisions

    kube = Kube(kube_api)
    obj = await create_task(kube, namespace, "stale")
    ref = TaskRef(namespace=namespace, name="stale", uid=obj.metadata.uid or "")
    acts = TaskActivities(kube)
    await kube.update_task_status(
        namespace, "stale", lambda t: with_status(t, TaskStatus.PENDING, "Pending")
    )
    first = ProgressUpdate(task=ref, report=report(ReportStatus.PENDING), sequence=1)
    assert await publish(acts, first) is True
    held = await kube.get_task(namespace, "stale")  # the operator's copy (stage pending)
    newer = ProgressUpdate(task=ref, report=report(ReportStatus.RUNNING), sequence=2)
    assert await publish(acts, newer) is True  # the worker moved on after that read

    written, changed = await kube.update_task_status(
        namespace,
        "stale",
        decisions.cancelled_status("alice", api.utcnow()),
        uid=ref.uid,
        current=held,
    )
    assert changed
    stored = await kube.get_task(namespace, "stale")
    assert stored.status.status == TaskStatus.TERMINATED
    assert stored.status.report_sequence == 2  # the worker's newest, not the held copy's 1
    (stage,) = stored.status.report.stages if stored.status.report else []
    # The worker's running stage, closed as failed (cancelled); from the held copy it
    # would have stayed pending.
    assert stage.status == ReportStatus.FAILED, stage
    assert stage.error == "Cancelled by user"
    assert written.status == stored.status
