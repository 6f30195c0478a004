"""A watch-backed index of NicoTasks: uid -> (namespace, name, siteId).

The REST task id is metadata.uid, which is not a selectable field, so a
lookup by id would otherwise need a LIST of every task. The index keeps a
pointer per task: one initial LIST per served scope (cluster-wide, or each
served namespace), then a WATCH from that list's resourceVersion (with
bookmarks), re-LISTing on 410 Gone or any stream error. It runs as a
background task from the app's lifespan.

The index is only a pointer: handlers GET the object fresh and check its
uid. When the index has no entry (a task created a moment ago, before the
watch delivered it), `refresh()` does one fresh LIST and upserts every
entry; that costs O(tasks) and only happens for ids the watch has not seen
(unknown ids, mostly). Entries whose object is gone are dropped on use.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from nicotask import api
from nicotask.kube import TASKS

from .store import Store

log = logging.getLogger(__name__)

WATCH_TIMEOUT_SECONDS = 290


@dataclass(frozen=True)
class Entry:
    namespace: str
    name: str
    site_id: str | None
    rack_ref: str | None


def entry_of(obj: dict[str, Any]) -> tuple[str, Entry] | None:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    uid, name = meta.get("uid"), meta.get("name")
    if not uid or not name:
        return None
    return uid, Entry(meta.get("namespace", ""), name, spec.get("siteId"), spec.get("rackRef"))


class _Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


class TaskIndex:
    """uid -> Entry for every NicoTask in the served namespaces."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.custom = client.CustomObjectsApi(store.api_client)
        self.entries: dict[str, Entry] = {}
        self.synced = asyncio.Event()
        self._scopes_synced: set[str | None] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self.relists = 0
        self.fallback_lists = 0

    # ---- queries ---------------------------------------------------------

    def lookup(self, uid: str) -> Entry | None:
        return self.entries.get(uid)

    def forget(self, uid: str, entry: Entry | None = None) -> None:
        if entry is None or self.entries.get(uid) == entry:
            self.entries.pop(uid, None)

    async def refresh(self) -> None:
        """One fresh LIST of all served tasks; upserts entries (the miss path)."""
        self.fallback_lists += 1
        for obj in await self.store.list_tasks():
            found = entry_of(obj)
            if found:
                self.entries[found[0]] = found[1]

    # ---- lifecycle -------------------------------------------------------

    def start(self) -> None:
        scopes: list[str | None] = list(self.store.namespaces) or [None]
        self._tasks = [
            asyncio.create_task(self._run(scope), name=f"nicotask-index-{scope or 'all'}")
            for scope in scopes
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    async def wait_synced(self, seconds: float) -> bool:
        try:
            async with asyncio.timeout(seconds):
                await self.synced.wait()
        except TimeoutError:
            return False
        return True

    # ---- list + watch ------------------------------------------------------

    def _in_scope(self, entry: Entry, scope: str | None) -> bool:
        return scope is None or entry.namespace == scope

    async def _list(self, scope: str | None) -> str:
        if scope is None:
            result = await self.custom.list_cluster_custom_object(api.GROUP, api.VERSION, TASKS)
        else:
            result = await self.custom.list_namespaced_custom_object(
                api.GROUP, api.VERSION, scope, TASKS
            )
        fresh: dict[str, Entry] = {}
        for obj in result.get("items", []):
            found = entry_of(obj)
            if found:
                fresh[found[0]] = found[1]
        for uid, entry in list(self.entries.items()):
            if self._in_scope(entry, scope) and uid not in fresh:
                del self.entries[uid]
        self.entries.update(fresh)
        self.relists += 1
        self._scopes_synced.add(scope)
        if len(self._scopes_synced) >= max(1, len(self.store.namespaces)):
            self.synced.set()
        return str(result.get("metadata", {}).get("resourceVersion", ""))

    async def _watch(self, scope: str | None, rv: str) -> str:
        kwargs: dict[str, Any] = {
            "watch": True,
            "resource_version": rv,
            "allow_watch_bookmarks": True,
            "timeout_seconds": WATCH_TIMEOUT_SECONDS,
            "_preload_content": False,
            "_request_timeout": WATCH_TIMEOUT_SECONDS + 30,
        }
        if scope is None:
            resp = await self.custom.list_cluster_custom_object(
                api.GROUP, api.VERSION, TASKS, **kwargs
            )
        else:
            resp = await self.custom.list_namespaced_custom_object(
                api.GROUP, api.VERSION, scope, TASKS, **kwargs
            )
        try:
            while True:
                line = await resp.content.readline()
                if not line:
                    return rv  # server closed the stream (timeout): watch again from rv
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone()
                    raise RuntimeError(f"watch error: {obj.get('message')}")
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                if kind == "BOOKMARK":
                    continue
                found = entry_of(obj)
                if not found:
                    continue
                uid, entry = found
                if kind == "DELETED":
                    self.entries.pop(uid, None)
                else:
                    self.entries[uid] = entry
        finally:
            resp.release()

    async def _run(self, scope: str | None) -> None:
        delay = 0.2
        while True:
            try:
                rv = await self._list(scope)
                delay = 0.2
                while True:
                    rv = await self._watch(scope, rv)
            except asyncio.CancelledError:
                raise
            except _Gone:
                log.info("task index (%s): resourceVersion gone, listing again", scope or "all")
            except ApiException as exc:
                if exc.status != 410:
                    log.warning("task index (%s): %s %s", scope or "all", exc.status, exc.reason)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
            except Exception as exc:
                log.warning("task index (%s): %r; listing again", scope or "all", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
