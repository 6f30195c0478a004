"""A rack's queue moves on when a task finished by another writer leaves the watch.

Found by the fault soak: the standby replica, paused by kopf peering,
still wrote Succeeded for a task whose workflow completed; the active replica saw
the task leave its watch of live tasks, found it still there (finished) and did
nothing, so the task queued behind it on its rack stayed Waiting until the queue
timeout (an hour by default).
"""

from __future__ import annotations

from typing import Any

from nicotask.api import NicoTask, TaskStatus
from nicotask.metrics import Metrics
from nicotask.operator import decisions
from nicotask.operator.controller import Controller
from nicotask.settings import Settings

FINISHED = "55555555-5555-5555-5555-555555555555"
QUEUED = "66666666-6666-6666-6666-666666666666"


def _task(uid: str, name: str, status: str, rv: str) -> NicoTask:
    return NicoTask.model_validate(
        {
            "metadata": {
                "name": name,
                "namespace": "ns",
                "uid": uid,
                "resourceVersion": rv,
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "spec": {
                "siteId": "660e8400-e29b-41d4-a716-446655440000",
                "rackRef": "rack-1",
                "operation": "PowerOn",
            },
            "status": {"status": status},
        }
    )


class _Kube:
    def __init__(self, task: NicoTask) -> None:
        self.task = task

    async def get_task(self, namespace: str, name: str) -> NicoTask:
        return self.task


async def test_a_task_finished_elsewhere_frees_its_rack() -> None:
    running = _task(FINISHED, "t-1", "Running", "10")
    waiting = _task(QUEUED, "t-2", "Waiting", "11")
    controller = Controller(
        kube=_Kube(_task(FINISHED, "t-1", "Succeeded", "12")),  # type: ignore[arg-type]
        temporal=None,  # type: ignore[arg-type]
        settings=Settings(),
        metrics=Metrics(),
    )
    by_uid: dict[str, Any] = {QUEUED: [waiting]}
    controller.live_tasks.bind(by_uid, {("ns", "rack-1"): [QUEUED]})
    # The watch of live tasks drops t-1 with its last live body (it was finished by
    # the other replica, so this one holds no terminal copy of its own).
    controller.observe_event("DELETED", running)
    assert FINISHED in controller.queue._queued
    controller.queue._queued.clear()
    await controller.reconcile(FINISHED, frozenset({"deleted"}))
    assert QUEUED in controller.queue._queued  # the task behind it decides again


class _KubeNoReads:
    async def get_task(self, namespace: str, name: str) -> NicoTask:
        raise AssertionError("no read expected")


async def test_a_task_our_own_write_finished_leaves_without_a_read() -> None:
    # A burst of cancels: the watch's event (the task leaves the live tasks at the
    # resourceVersion of our Terminated write) comes before the write's answer.
    running = _task(FINISHED, "t-1", "Running", "12")
    waiting = _task(QUEUED, "t-2", "Waiting", "11")
    controller = Controller(
        kube=_KubeNoReads(),  # type: ignore[arg-type]
        temporal=None,  # type: ignore[arg-type]
        settings=Settings(),
        metrics=Metrics(),
    )
    by_uid: dict[str, Any] = {QUEUED: [waiting]}
    controller.live_tasks.bind(by_uid, {("ns", "rack-1"): [QUEUED]})
    controller.observe_event("DELETED", running)
    assert FINISHED in controller.queue._queued
    controller.queue._queued.clear()
    controller.live_tasks.remember(_task(FINISHED, "t-1", "Terminated", "12"))  # the answer
    await controller.reconcile(FINISHED, frozenset({"deleted"}))
    assert QUEUED in controller.queue._queued  # the task behind it decides again
    assert controller.live_tasks.get(FINISHED) is None  # and it is no live task any more


async def test_a_newer_event_than_our_write_is_still_read() -> None:
    # Our terminal copy is older than the body that left the watch: somebody wrote
    # after us, so the task is read as before.
    controller = Controller(
        kube=_Kube(_task(FINISHED, "t-1", "Succeeded", "14")),  # type: ignore[arg-type]
        temporal=None,  # type: ignore[arg-type]
        settings=Settings(),
        metrics=Metrics(),
    )
    reads: list[str] = []
    get_task = controller.kube.get_task

    async def counted(namespace: str, name: str) -> NicoTask:
        reads.append(name)
        return await get_task(namespace, name)

    controller.kube.get_task = counted  # type: ignore[method-assign]
    controller.live_tasks.bind({}, {})
    controller.observe_event("DELETED", _task(FINISHED, "t-1", "Running", "14"))
    controller.live_tasks.remember(_task(FINISHED, "t-1", "Terminated", "12"))
    await controller.reconcile(FINISHED, frozenset({"deleted"}))
    assert reads == ["t-1"]


class _KubeFinishedElsewhere:
    """A conditional write that finds the task already finished (by another replica)."""

    def __init__(self, fresh: NicoTask) -> None:
        self.fresh = fresh

    async def update_task_status(
        self, namespace: str, name: str, decide: Any, **_: Any
    ) -> tuple[NicoTask, bool]:
        return self.fresh, decide(self.fresh) is not None


async def test_a_write_that_finds_the_task_finished_elsewhere_frees_its_rack() -> None:
    # The view held t-1 live (a copy kopf's re-list left behind); reading its outcome
    # and writing it found it Succeeded already: nothing written, yet the rack is free.
    stale = _task(FINISHED, "t-1", "Running", "10")
    waiting = _task(QUEUED, "t-2", "Waiting", "11")
    controller = Controller(
        kube=_KubeFinishedElsewhere(_task(FINISHED, "t-1", "Succeeded", "12")),  # type: ignore[arg-type]
        temporal=None,  # type: ignore[arg-type]
        settings=Settings(),
        metrics=Metrics(),
    )
    by_uid: dict[str, Any] = {FINISHED: [stale], QUEUED: [waiting]}
    controller.live_tasks.bind(by_uid, {("ns", "rack-1"): [FINISHED, QUEUED]})
    written, changed = await controller._write(stale, decisions.move(TaskStatus.SUCCEEDED, "done"))
    assert not changed and written.status.status == TaskStatus.SUCCEEDED
    assert QUEUED in controller.queue._queued  # the task behind it decides again
    assert controller.live_tasks.get(FINISHED) is written  # and the live tasks know it finished


def test_finished_elsewhere_only_when_our_copy_was_live() -> None:
    live, done = _task(FINISHED, "t-1", "Running", "10"), _task(FINISHED, "t-1", "Failed", "12")
    assert decisions.finished_elsewhere(live, done, changed=False)
    assert not decisions.finished_elsewhere(live, done, changed=True)  # we finished it
    assert not decisions.finished_elsewhere(done, done, changed=False)  # we knew
    assert not decisions.finished_elsewhere(live, live, changed=False)  # still live
