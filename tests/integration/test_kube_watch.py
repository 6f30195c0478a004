"""`Kube.watch` against the real API server: bookmarks and a too-old resourceVersion;
`ListWatch` (the shim's caches and the operator's finished-cancels watch): events
after a LIST, a relist after 410, a backoff on errors.

The operator's watch of cancelled finished tasks selects tasks that are rare,
so it can go minutes without an event. Without bookmarks it resumes, after
every server timeout, from the version of its first LIST, which on a busy
site is soon too old to watch from (410, and a LIST again).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from integration_support import create_task

from nicotask import api
from nicotask.api import TASKS, TaskStatus
from nicotask.kube import Expired, Kube
from nicotask.kube.listwatch import ListWatch
from nicotask_dev.shim.testing import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")

RARE = f"{api.CANCEL_REQUESTED_SELECTOR},{api.status_selector(TaskStatus.SUCCEEDED)}"


async def test_a_quiet_watch_still_moves_to_a_recent_version(
    kube_api: Any, crds: None, namespace: str
) -> None:
    kube = Kube(kube_api)
    listed = await kube.list_page(TASKS, namespace, field_selector=RARE)
    assert listed["items"] == []
    version = int(listed["metadata"]["resourceVersion"])

    async def change_nothing_selected() -> api.NicoTask:
        await asyncio.sleep(1.0)  # while the watch runs
        return await create_task(kube, namespace, "not-selected")

    change = asyncio.create_task(change_nothing_selected())
    # the server sends a bookmark 2 s before the watch's timeout
    events = [e async for e in kube.watch(TASKS, namespace, str(version), 5, field_selector=RARE)]
    created = await change

    # (more than one when the server's periodic bookmark falls in the window too)
    assert events and {e["type"] for e in events} == {"BOOKMARK"}, events
    bookmarked = max(int(e["object"]["metadata"]["resourceVersion"]) for e in events)
    assert bookmarked >= int(created.metadata.resource_version or 0) > version


async def test_a_version_too_old_to_watch_from_is_expired(
    kube_api: Any, crds: None, namespace: str
) -> None:
    kube = Kube(kube_api)
    with pytest.raises(Expired):
        async for _ in kube.watch(TASKS, namespace, "2", 4):
            pass


class Seen:
    """What a ListWatch delivered: its LISTs' names and its events as (type, name)."""

    def __init__(self) -> None:
        self.listed: list[list[str]] = []
        self.events: list[tuple[str, str]] = []

    def on_list(self, items: list[dict[str, Any]]) -> None:
        self.listed.append(sorted(o["metadata"]["name"] for o in items))

    def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        self.events.append((kind, obj["metadata"]["name"]))


@contextlib.asynccontextmanager
async def running(watch: ListWatch) -> AsyncIterator[ListWatch]:
    task = asyncio.create_task(watch.run())
    try:
        yield watch
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


SELECTED = {"labels": {"listwatch": "yes"}}


async def test_list_watch_lists_then_follows_the_selected_events(
    kube_api: Any, crds: None, namespace: str
) -> None:
    kube = Kube(kube_api)
    await create_task(kube, namespace, "before", metadata=SELECTED)
    await create_task(kube, namespace, "other-before")
    seen = Seen()
    watch = ListWatch(kube, TASKS, namespace, on_list=seen.on_list, on_event=seen.on_event,
                      label_selector="listwatch=yes")  # fmt: skip
    async with running(watch):
        assert await wait_for(lambda: seen.listed, 10)
        assert seen.listed == [["before"]]
        await create_task(kube, namespace, "other-after")
        await create_task(kube, namespace, "after", metadata=SELECTED)
        await kube.patch(TASKS, "before", {"metadata": {"annotations": {"a": "b"}}}, namespace)
        await kube.delete(TASKS, "after", namespace)
        expected = [("ADDED", "after"), ("MODIFIED", "before"), ("DELETED", "after")]
        assert await wait_for(lambda: len(seen.events) >= 3, 10), seen.events
        assert seen.events == expected
        assert watch.lists == 1
        assert int(watch.version or 0) > 0


async def test_list_watch_lists_again_when_its_version_is_gone(
    kube_api: Any, crds: None, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    kube = Kube(kube_api)
    await create_task(kube, namespace, "there")
    seen = Seen()
    watch = ListWatch(kube, TASKS, namespace, on_list=seen.on_list, on_event=seen.on_event)
    watch.version = "2"  # long compacted: the WATCH answers 410
    with caplog.at_level(logging.INFO, logger="nicotask.kube.listwatch"):
        async with running(watch):
            assert await wait_for(lambda: seen.listed, 10)
            await create_task(kube, namespace, "then")
            assert await wait_for(lambda: seen.events, 10)
    assert seen.listed == [["there"]]
    assert seen.events == [("ADDED", "then")]
    assert watch.lists == 1
    assert any("resourceVersion gone, listing again" in r.getMessage() for r in caplog.records)


async def test_list_watch_backs_off_on_errors(
    kube_api: Any, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A LIST that fails (here a kind the API server does not serve) is tried again after
    0.2 s, doubling, and never more often than once a second."""
    seen = Seen()
    watch = ListWatch(Kube(kube_api), "nosuchthings", namespace,
                      on_list=seen.on_list, on_event=seen.on_event)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="nicotask.kube.listwatch"):
        async with running(watch):
            await asyncio.sleep(3.5)
    failures = [r for r in caplog.records if r.name == "nicotask.kube.listwatch"]
    found = (re.search(r"again in ([\d.]+) s", r.getMessage()) for r in failures)
    delays = [float(m.group(1)) for m in found if m]
    assert delays[:4] == [0.2, 0.4, 0.8, 1.6], delays
    assert all("NotFound" in r.getMessage() for r in failures)
    times = [r.created for r in failures]
    assert all(b - a >= 0.95 for a, b in itertools.pairwise(times)), times
    assert (watch.lists, watch.version, seen.listed) == (0, None, [])
