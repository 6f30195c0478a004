"""A watch-fed cache of one custom resource kind (a small informer).

One LIST per scope (cluster-wide, or each served namespace), then a WATCH
from that list's resourceVersion with bookmarks, relisted on 410 Gone
(`nicotask.kube.listwatch`). `synced` is set once every scope has listed;
until then readers answer 503 instead of guessing.

Objects are kept without `metadata.managedFields` (the bulk of a small
object and never read). A subclass-free hook, `on_change(old, new)`, keeps
the caller's secondary indexes in step (new is None for a deletion).

Readers that miss can `await wait_until(predicate, seconds)`: it wakes on
every change, so an object created a moment ago is found as soon as the
watch delivers it, without a LIST per miss.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client

from nicotask.kube import Kube
from nicotask.kube.listwatch import ListWatch

Obj = dict[str, Any]
OnChange = Callable[[Obj | None, Obj | None], None]


def rv_int(obj: Obj | None) -> int | None:
    """resourceVersion as a number (etcd revision) when it is one; None otherwise."""
    raw = ((obj or {}).get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(raw))
    except ValueError:
        return None


def newer_or_equal(old: Obj | None, new: Obj) -> bool:
    """Whether `new` may replace `old` (never move a cached object backwards)."""
    a, b = rv_int(old), rv_int(new)
    return a is None or b is None or b >= a


def _slim(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        meta = dict(meta)
        meta.pop("managedFields", None)
        obj = {**obj, "metadata": meta}
    return obj


class Informer:
    """uid -> object for one kind, fed by list + watch."""

    def __init__(
        self,
        api_client: client.ApiClient,
        plural: str,
        namespaces: list[str] | None = None,
        on_change: OnChange | None = None,
    ) -> None:
        self.kube = Kube(api_client)
        self.plural = plural
        self.scopes: list[str | None] = list(namespaces or []) or [None]
        self.on_change = on_change or (lambda old, new: None)
        self.objects: dict[str, Obj] = {}
        self.synced = asyncio.Event()
        self.lists = 0
        self._scopes_synced: set[str | None] = set()
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # ---- reading -------------------------------------------------------------

    def get(self, uid: str) -> Obj | None:
        return self.objects.get(uid)

    async def wait_until(self, predicate: Callable[[], Any], seconds: float) -> Any:
        """The predicate's first truthy value, re-checked on every change; else its last."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            value = predicate()
            remaining = deadline - loop.time()
            if value or remaining <= 0:
                return value
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await changed.wait()

    # ---- writing ---------------------------------------------------------------

    def put(self, obj: Obj) -> bool:
        """Upsert an object (from the watch, or a write's response) unless it is older."""
        uid = (obj.get("metadata") or {}).get("uid")
        if not uid:
            return False
        old = self.objects.get(uid)
        if not newer_or_equal(old, obj):
            return False
        if old is not None and rv_int(old) is not None and rv_int(old) == rv_int(obj):
            return False  # the same version again (our own write's response, then its event)
        obj = _slim(obj)
        self.objects[uid] = obj
        self.on_change(old, obj)
        self._pulse()
        return True

    def remove(self, uid: str) -> None:
        old = self.objects.pop(uid, None)
        if old is not None:
            self.on_change(old, None)
            self._pulse()

    def _pulse(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ---- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(
                self._list_watch(scope).run(), name=f"nicotask-{self.plural}-{scope or 'all'}"
            )
            for scope in self.scopes
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

    # ---- list + watch ----------------------------------------------------------------

    def _list_watch(self, scope: str | None) -> ListWatch:
        return ListWatch(
            self.kube,
            self.plural,
            scope,
            on_list=lambda items: self._listed(scope, items),
            on_event=self._event,
            name=f"cache of {self.plural} ({scope or 'all namespaces'})",
        )

    def _listed(self, scope: str | None, items: list[Obj]) -> None:
        """Replace the scope's objects with a LIST's."""
        fresh = {o["metadata"]["uid"]: o for o in items if (o.get("metadata") or {}).get("uid")}
        for uid, old in list(self.objects.items()):
            in_scope = scope is None or (old.get("metadata") or {}).get("namespace") == scope
            if in_scope and uid not in fresh:
                self.remove(uid)
        for obj in fresh.values():
            self.put(obj)
        self.lists += 1
        self._scopes_synced.add(scope)
        if len(self._scopes_synced) >= len(self.scopes):
            self.synced.set()

    def _event(self, kind: str, obj: Obj) -> None:
        uid = (obj.get("metadata") or {}).get("uid")
        if not uid:
            return
        if kind == "DELETED":
            self.remove(uid)
        else:
            self.put(obj)
