"""One watch on the bench namespace's NicoTasks: when each task was first seen in each status."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from typing import Any

from kubernetes_asyncio import client, watch

from nicotask import api

from .objects import GROUP, NAMESPACE, VERSION

TERMINAL = api.FINISHED_STATUS_VALUES


class TaskWatch:
    """Records, per task name, the monotonic time each status was first seen.

    A list gives the starting resourceVersion, then a watch follows from it;
    the watch is re-opened from the last resourceVersion when the server ends
    it, and re-listed when that version is too old (410).
    """

    def __init__(self, api_client: client.ApiClient, namespace: str = NAMESPACE) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.first_seen: dict[str, dict[str, float]] = {}
        self.uids: dict[str, str] = {}
        self.messages: dict[str, str] = {}  # name -> message of its first terminal status
        self.current: dict[str, str] = {}  # name -> its latest status
        # name -> {stage number: when its report first showed that stage running}
        self.stage_running: dict[str, dict[int, float]] = {}
        self.requests = 0  # lists and watch opens: the bench's own API-server requests
        self.events = 0
        self.restarts = 0
        self._task: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()

    # ---- recording -----------------------------------------------------

    def _record(self, obj: dict[str, Any], now: float) -> None:
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not name:
            return
        if meta.get("uid"):
            self.uids[name] = meta["uid"]
        st = obj.get("status") or {}
        status = st.get("status")
        seen = self.first_seen.setdefault(name, {})
        if status:
            self.current[name] = status
        if status and status not in seen:
            seen[status] = now
            if status in TERMINAL and name not in self.messages:
                self.messages[name] = f"{status}: {st.get('message') or ''}"[:300]
        for stage in (st.get("report") or {}).get("stages") or []:
            if stage.get("status") == "running" and isinstance(stage.get("number"), int):
                self.stage_running.setdefault(name, {}).setdefault(stage["number"], now)

    def stage_running_at(self, name: str, number: int) -> float | None:
        """When the task's report first showed stage `number` running."""
        return self.stage_running.get(name, {}).get(number)

    def seen_at(self, name: str, status: str) -> float | None:
        return self.first_seen.get(name, {}).get(status)

    def has_any_status(self, name: str) -> bool:
        return bool(self.first_seen.get(name))

    def count(self, names: Iterable[str], statuses: Iterable[str] | None) -> int:
        wanted = set(statuses) if statuses is not None else None
        n = 0
        for name in names:
            seen = self.first_seen.get(name, {})
            if (wanted is None and seen) or (wanted is not None and wanted & seen.keys()):
                n += 1
        return n

    # ---- running -------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bench-watch")
        await asyncio.wait_for(self._synced.wait(), timeout=60)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _list(self) -> str:
        self.requests += 1
        resp = await self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, api.TASKS, _request_timeout=120
        )
        now = time.monotonic()
        for obj in resp.get("items", []):
            self._record(obj, now)
        return str(resp["metadata"]["resourceVersion"])

    async def _run(self) -> None:
        rv: str | None = None
        while True:
            try:
                if rv is None:
                    rv = await self._list()
                    self._synced.set()
                w = watch.Watch()
                self.requests += 1
                try:
                    stream = w.stream(
                        self.custom.list_namespaced_custom_object,
                        GROUP,
                        VERSION,
                        self.namespace,
                        api.TASKS,
                        resource_version=rv,
                        allow_watch_bookmarks=True,
                        timeout_seconds=240,
                        _request_timeout=300,
                    )
                    async for event in stream:
                        now = time.monotonic()
                        self.events += 1
                        obj = event.get("raw_object") or {}
                        new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                        if new_rv:
                            rv = new_rv
                        if event.get("type") in ("ADDED", "MODIFIED"):
                            self._record(obj, now)
                finally:
                    await w.close()
                self.restarts += 1
            except asyncio.CancelledError:
                raise
            except client.ApiException as exc:
                self.restarts += 1
                if exc.status == 410:
                    rv = None  # too old: list again
                else:
                    await asyncio.sleep(0.5)
            except Exception:
                self.restarts += 1
                await asyncio.sleep(0.5)

    async def wait_for(
        self,
        names: list[str],
        statuses: Iterable[str] | None,
        timeout: float,
        label: str,
        report: Any = None,
    ) -> int:
        """Wait until every task in `names` was seen in one of `statuses` (None: any status).

        Returns how many were, when all did or when `timeout` ran out; calls
        `report(done, total)` every few seconds for progress lines.
        """
        wanted = list(statuses) if statuses is not None else None
        deadline = time.monotonic() + timeout
        last_report = time.monotonic()
        done = 0
        while True:
            done = self.count(names, wanted)
            if done >= len(names) or time.monotonic() >= deadline:
                return done
            if report is not None and time.monotonic() - last_report >= 5:
                report(label, done, len(names))
                last_report = time.monotonic()
            await asyncio.sleep(0.05)
