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
import logging
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from nicotask.api import CANCEL_REQUESTED_SELECTOR, TASKS, NicoTask, TaskStatus, status_selector
from nicotask.kube import Expired, Kube

log = logging.getLogger(__name__)

WATCH_TIMEOUT = 300


async def watch_finished_cancels(
    kube: Kube,
    namespaces: list[str],
    shard: str | None,
    on_task: Callable[[NicoTask], None],
) -> None:
    """Run the watches (one per served namespace and status; `shard`: a label selector)."""
    watches = [
        _watch(
            kube, namespace, f"{CANCEL_REQUESTED_SELECTOR},{status_selector(status)}", shard,
            on_task,
        )
        for namespace in list[str | None](namespaces) or [None]
        for status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED)
    ]
    await asyncio.gather(*watches)


def _deliver(raw: dict[str, Any], on_task: Callable[[NicoTask], None]) -> None:
    with contextlib.suppress(ValidationError):
        on_task(NicoTask.model_validate(raw))


async def _watch(
    kube: Kube,
    namespace: str | None,
    selector: str,
    shard: str | None,
    on_task: Callable[[NicoTask], None],
) -> None:
    selectors: dict[str, str | None] = {"field_selector": selector, "label_selector": shard}
    version: str | None = None
    while True:
        try:
            if version is None:
                listed = await kube.list_page(TASKS, namespace, **selectors)
                for raw in listed.get("items", []):
                    _deliver(raw, on_task)
                version = listed["metadata"]["resourceVersion"]
            async for event in kube.watch(TASKS, namespace, version, WATCH_TIMEOUT, **selectors):
                raw = event["object"]
                if isinstance(raw, dict):
                    version = raw.get("metadata", {}).get("resourceVersion", version)
                    if event["type"] in ("ADDED", "MODIFIED"):
                        _deliver(raw, on_task)
        except asyncio.CancelledError:
            raise
        except Expired:
            version = None  # too old: list again
            continue
        except Exception as exc:
            log.warning("watch of cancelled finished tasks (%s): %s", selector, exc)
            await asyncio.sleep(5)
