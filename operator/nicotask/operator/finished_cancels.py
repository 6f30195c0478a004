"""Cancels of tasks that had already finished.

The operator does not watch finished tasks, so a `spec.cancel: true` set on
a Succeeded or Failed task would go unanswered. Two small watches, on the
selectable fields spec.cancel=true and status.status=Succeeded|Failed, bring
exactly those tasks; the controller answers each once with a CancelIgnored
condition and Event. Nothing is kept in memory. The watches ask for bookmarks
(`Kube.watch`), so when their next watch starts, it starts from a recent
version, not from the LIST's (too old on a busy site: a LIST again).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from nicotask.api import CANCEL_REQUESTED_SELECTOR, TASKS, NicoTask, TaskStatus, status_selector
from nicotask.kube import Kube
from nicotask.kube.listwatch import ListWatch

WATCH_TIMEOUT = 300


async def watch_finished_cancels(
    kube: Kube,
    namespaces: list[str],
    shard: str | None,
    on_task: Callable[[NicoTask], None],
) -> None:
    """Run the watches (one per served namespace and status; `shard`: a label selector)."""

    def deliver(raw: dict[str, Any]) -> None:
        with contextlib.suppress(ValidationError):
            on_task(NicoTask.model_validate(raw))

    def on_list(items: list[dict[str, Any]]) -> None:
        for raw in items:
            deliver(raw)

    def on_event(kind: str, raw: dict[str, Any]) -> None:
        if kind != "DELETED":
            deliver(raw)

    watches = []
    for namespace in list[str | None](namespaces) or [None]:
        for status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED):
            selector = f"{CANCEL_REQUESTED_SELECTOR},{status_selector(status)}"
            watch = ListWatch(
                kube,
                TASKS,
                namespace,
                on_list=on_list,
                on_event=on_event,
                field_selector=selector,
                label_selector=shard,
                timeout_seconds=WATCH_TIMEOUT,
                name=f"watch of cancelled finished tasks ({selector})",
            )
            watches.append(watch.run())
    await asyncio.gather(*watches)
