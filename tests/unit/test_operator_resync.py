"""The live tasks against a fresh LIST (operator/resync.py).

Found by the fault soak: kopf re-lists after a pause and drops nothing from
its index, so a task that finished while a standby was paused stayed Running
in its view; when it took over, the task's rack looked busy and every task
created for it was queued as Waiting, for good.
"""

from __future__ import annotations

from typing import Any

from nicotask.api import NicoTask
from nicotask.metrics import Metrics
from nicotask.operator.controller import Controller
from nicotask.operator.resync import ghosts, resync
from nicotask.settings import Settings

GHOST = "77777777-7777-7777-7777-777777777777"
LIVE = "88888888-8888-8888-8888-888888888888"
NEW = "99999999-9999-9999-9999-999999999999"


def _task(uid: str, name: str, status: str, rv: int, run_id: str | None = None) -> NicoTask:
    return NicoTask.model_validate(
        {
            "metadata": {
                "name": name,
                "namespace": "ns",
                "uid": uid,
                "resourceVersion": str(rv),
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "spec": {
                "siteId": "660e8400-e29b-41d4-a716-446655440000",
                "rackRef": "rack-1",
                "operation": "PowerOn",
            },
            "status": {"status": status, "runId": run_id},
        }
    )


def test_a_task_missing_from_a_newer_list_is_a_ghost() -> None:
    ghost, live, new = (
        _task(GHOST, "a", "Running", 10),
        _task(LIVE, "b", "Waiting", 11),
        _task(NEW, "c", "Pending", 60),
    )
    # The LIST at version 50 holds only LIVE; NEW was created after it.
    assert ghosts([ghost, live, new], {LIVE}, 50) == [ghost]
    assert ghosts([ghost, live], {GHOST, LIVE}, 50) == []


class _Kube:
    def __init__(self, listed: list[NicoTask], version: int, current: NicoTask) -> None:
        self.listed, self.version, self.current = listed, version, current
        self.params: dict[str, Any] = {}

    async def list_page(self, plural: str, namespace: str | None, **params: Any) -> dict[str, Any]:
        self.params = params
        items = [t.model_dump(mode="json", by_alias=True) for t in self.listed]
        return {"metadata": {"resourceVersion": str(self.version)}, "items": items}

    async def get_task(self, namespace: str, name: str) -> NicoTask:
        return self.current


async def test_resync_hides_the_ghost_and_promotes_its_rack() -> None:
    ghost = _task(GHOST, "t-1", "Running", 10, run_id="r1")
    waiting = _task(LIVE, "t-2", "Waiting", 20)
    kube = _Kube([waiting], 50, current=_task(GHOST, "t-1", "Succeeded", 30, run_id="r1"))
    controller = Controller(
        kube=kube,  # type: ignore[arg-type]
        temporal=None,  # type: ignore[arg-type]
        settings=Settings(),
        metrics=Metrics(),
    )
    by_uid: dict[str, Any] = {GHOST: [ghost], LIVE: [waiting]}  # kopf's index, never pruned
    controller.live_tasks.bind(by_uid, {("ns", "rack-1"): [GHOST, LIVE]})
    assert await resync(controller) == 1
    assert kube.params["field_selector"]  # live tasks only
    assert [t.metadata.uid for t in controller.live_tasks.on_rack("ns", "rack-1")] == [LIVE]
    assert GHOST not in controller.live_tasks
    controller.queue._queued.clear()
    await controller.reconcile(GHOST, frozenset({"deleted"}))
    assert LIVE in controller.queue._queued  # the task behind it decides again
    # A newer copy of the same task (it came back to the watch) is seen again.
    by_uid[GHOST] = [_task(GHOST, "t-1", "Running", 70, run_id="r1")]
    assert GHOST in controller.live_tasks
