"""`Kube.watch` against the real API server: bookmarks and a too-old resourceVersion.

The operator's watch of cancelled finished tasks selects tasks that are rare,
so it can go minutes without an event. Without bookmarks it resumes, after
every server timeout, from the version of its first LIST, which on a busy
site is soon too old to watch from (410, and a LIST again).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from integration_support import create_task

from nicotask import api
from nicotask.api import TASKS, TaskStatus
from nicotask.kube import Expired, Kube

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
