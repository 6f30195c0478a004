"""The live tasks against a fresh LIST: tasks that left the watch while nobody saw it.

kopf re-lists when a paused replica resumes, or after a watch broke, and
adds what it lists to its index, but drops nothing: a task that finished
(left the live-only watch) meanwhile stays in the index as it was, Running
on its rack for good. A rack held by such a ghost queued every later task
as Waiting, and nothing promoted them (found by the fault soak: a standby
that had missed finishes while paused took over). So, when this replica
becomes active and in every full pass, the live tasks are listed and each
ghost is handled as if its DELETED event had arrived: hidden in the live tasks,
its rack promoted, its workflow stopped if the task is gone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from nicotask import api
from nicotask.api import NicoTask
from nicotask.operator.live_tasks import resource_version

if TYPE_CHECKING:
    from nicotask.operator.controller import Controller

log = logging.getLogger(__name__)


def ghosts(live: Iterable[NicoTask], listed: set[str], list_version: int) -> list[NicoTask]:
    """The tasks of `live` that a LIST at `list_version` no longer holds.

    Only copies older than the LIST count: a task created (or changed) after it
    is simply newer than what was listed."""
    return [
        t
        for t in live
        if (t.metadata.uid or "") not in listed and resource_version(t) < list_version
    ]


async def live_tasks(controller: Controller, namespace: str | None) -> tuple[set[str], int]:
    """The uids of the live tasks this operator serves in `namespace`, and the LIST's version."""
    settings = controller.settings
    uids: set[str] = set()
    token: str | None = None
    version = 0
    while True:
        page = await controller.kube.list_page(
            api.TASKS,
            namespace,
            limit=500,
            _continue=token,
            field_selector=api.LIVE_FIELD_SELECTOR,
            label_selector=settings.site_selector,
        )
        meta = page.get("metadata") or {}
        if not version:
            try:
                version = int(meta.get("resourceVersion") or 0)
            except ValueError:
                return set(), 0  # not etcd's integers: nothing can be compared
        uids.update((item.get("metadata") or {}).get("uid", "") for item in page.get("items", []))
        token = meta.get("continue")
        if not token:
            return uids, version


async def resync(controller: Controller) -> int:
    """Handle every ghost in the live tasks; returns how many there were."""
    found = 0
    served = controller.settings.namespaces
    for namespace in list[str | None](served) or [None]:
        live = [
            t
            for t in controller.live_tasks.live()
            if namespace is None or t.metadata.namespace == namespace
        ]
        listed, version = await live_tasks(controller, namespace)
        if not version:
            continue
        for task in ghosts(live, listed, version):
            found += 1
            log.info(
                "NicoTask %s/%s left the watch unseen (kopf re-listed): dropping it",
                task.metadata.namespace,
                task.metadata.name,
            )
            controller.live_tasks.hide(task)
            controller.observe_event("DELETED", task)
    return found
