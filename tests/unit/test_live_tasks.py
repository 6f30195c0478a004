"""The operator's LiveTasks and the copy a reconcile decides from."""

from __future__ import annotations

from typing import Any

from nicotask.api import NicoTask, TaskStatus
from nicotask.metrics import Metrics
from nicotask.operator.controller import Controller
from nicotask.operator.live_tasks import LiveTasks, newest
from nicotask.settings import Settings

UID = "22222222-2222-2222-2222-222222222222"


def _task(rv: int, status: TaskStatus, *, cancel: bool = False) -> NicoTask:
    return NicoTask.model_validate(
        {
            "metadata": {
                "name": "t1",
                "namespace": "ns",
                "uid": UID,
                "generation": 2 if cancel else 1,
                "resourceVersion": str(rv),
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "spec": {
                "siteId": "660e8400-e29b-41d4-a716-446655440000",
                "rackRef": "rack-1",
                "operation": "PowerOn",
                "cancel": cancel,
            },
            "status": {"status": status.value},
        }
    )


def test_newest_picks_the_highest_resource_version() -> None:
    old, new = _task(10, TaskStatus.RUNNING), _task(11, TaskStatus.SUCCEEDED)
    assert newest(old, new) is new
    assert newest(new, old) is new
    assert newest(None, old) is old
    assert newest(None, None) is None


def test_view_prefers_a_newer_own_write_until_the_index_catches_up() -> None:
    live = LiveTasks()
    by_uid: dict[str, Any] = {UID: [_task(10, TaskStatus.PENDING)]}
    live.bind(by_uid, {("ns", "rack-1"): [UID]})
    written = _task(11, TaskStatus.RUNNING)
    live.remember(written)
    assert live.get(UID) is written
    by_uid[UID] = [_task(12, TaskStatus.RUNNING)]
    assert live.get(UID) is by_uid[UID][0]
    live.prune()
    by_uid.clear()
    assert live.get(UID) is None


async def test_cancel_of_a_finished_task_is_answered_despite_a_stale_own_write() -> None:
    """The watch dropped the task (finished) before our terminal write was remembered;
    the later cancel, seen by the finished-cancels watch, must still be answered."""
    controller = _controller()
    controller.live_tasks.remember(_task(20, TaskStatus.SUCCEEDED))  # stale: no cancel
    answered: list[NicoTask] = []

    async def cancel_ignored(task: NicoTask) -> None:
        answered.append(task)

    controller._cancel_ignored = cancel_ignored  # type: ignore[method-assign]
    controller.observe_finished_cancel(_task(21, TaskStatus.SUCCEEDED, cancel=True))
    await controller.reconcile(UID, frozenset())
    assert [t.metadata.resource_version for t in answered] == ["21"]


def _controller() -> Controller:
    return Controller(
        kube=None,  # type: ignore[arg-type]  # these paths make no API call
        temporal=None,  # type: ignore[arg-type]
        settings=Settings(),
        metrics=Metrics(),
    )


def test_a_task_we_finished_leaves_the_watch_without_a_read() -> None:
    controller = _controller()
    controller.live_tasks.remember(_task(30, TaskStatus.TERMINATED, cancel=True))
    # The watch's DELETED carries the last matching (Running) body at the new rv.
    controller.observe_event("DELETED", _task(30, TaskStatus.RUNNING, cancel=True))
    assert UID not in controller._deleted
    assert len(controller.queue) == 0


def test_a_live_task_leaving_the_watch_is_checked() -> None:
    controller = _controller()
    controller.observe_event("DELETED", _task(30, TaskStatus.RUNNING))
    assert UID in controller._deleted


def test_a_cancelled_task_leaving_the_watch_forgets_when_its_cancel_was_seen() -> None:
    controller = _controller()
    controller.observe_event("MODIFIED", _task(30, TaskStatus.RUNNING, cancel=True))
    assert UID in controller._cancel_seen
    controller.observe_event("DELETED", _task(31, TaskStatus.RUNNING, cancel=True))
    assert UID not in controller._cancel_seen  # nothing kept per task once it is gone
