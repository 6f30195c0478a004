"""LIST then WATCH, for ever: the loop under the shim's caches and the operator's
watch of cancelled finished tasks.

One scope (a namespace, or the whole cluster) of one kind, with optional
selectors. `on_list(items)` gets every object a LIST found: the caller replaces
what it holds for the scope. `on_event(type, obj)` gets every ADDED, MODIFIED
and DELETED event of the WATCH that follows, started from the LIST's
resourceVersion and resumed, whenever the server ends it, from the last
version seen. Bookmarks only move that version (`Kube.watch` asks for them),
so a quiet watch still resumes from a recent version.

410 Gone (the version is too old to watch from) LISTs again at once. Any other
error (the API server unreachable, a broken stream, a callback that raised)
waits, 0.2 s doubling to 10 s (reset by a LIST or a watch that works), then
resumes the WATCH from the last version, or LISTs when there is none yet. A
scope is never LISTed more often than once a second, whatever the watch does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, NoReturn

import orjson

from .errors import Expired
from .watch import Watching

log = logging.getLogger(__name__)

__all__ = ["ListWatch"]

WATCH_TIMEOUT_SECONDS = 290
MIN_RELIST_SECONDS = 1.0
FIRST_DELAY = 0.2
MAX_DELAY = 10.0

Obj = dict[str, Any]


@dataclass
class ListWatch:
    """LIST then WATCH one scope of one kind (`run`), feeding two callbacks.

    `version` is the resourceVersion the next WATCH starts from (None: LIST
    first); `lists` counts the LISTs done; `name` names the scope in logs.
    """

    kube: Watching
    plural: str
    namespace: str | None
    _: KW_ONLY
    on_list: Callable[[list[Obj]], None]
    on_event: Callable[[str, Obj], None]
    field_selector: str | None = None
    label_selector: str | None = None
    timeout_seconds: int = WATCH_TIMEOUT_SECONDS
    name: str = ""
    version: str | None = field(default=None, init=False)
    lists: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.name = self.name or f"{self.plural} ({self.namespace or 'all namespaces'})"

    @property
    def selectors(self) -> dict[str, str]:
        given = {"field_selector": self.field_selector, "label_selector": self.label_selector}
        return {k: v for k, v in given.items() if v}

    async def run(self) -> NoReturn:
        """LIST and WATCH until cancelled."""
        loop = asyncio.get_running_loop()
        last_list = loop.time() - MIN_RELIST_SECONDS
        delay = FIRST_DELAY
        while True:
            try:
                if self.version is None:
                    await asyncio.sleep(max(0.0, last_list + MIN_RELIST_SECONDS - loop.time()))
                    last_list = loop.time()
                    await self._list()
                    delay = FIRST_DELAY
                async for _ in self._watch():
                    delay = FIRST_DELAY  # the watch works
                delay = FIRST_DELAY
            except asyncio.CancelledError:
                raise
            except Expired:
                log.info("%s: resourceVersion gone, listing again", self.name)
                self.version = None
            except Exception as exc:
                log.warning("%s: %r; again in %.1f s", self.name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_DELAY)

    async def _list(self) -> None:
        resp = await self.kube.list_raw(self.plural, self.namespace, **self.selectors)
        try:
            result = orjson.loads(await resp.read())  # parsed with orjson: no client models
        finally:
            resp.release()
        self.on_list(list(result.get("items") or []))
        self.lists += 1
        self.version = str((result.get("metadata") or {}).get("resourceVersion") or "")

    async def _watch(self) -> AsyncIterator[None]:
        """Follow one WATCH from `version` until the server ends it; yields once an event."""
        assert self.version is not None
        events = self.kube.watch(
            self.plural, self.namespace, self.version, self.timeout_seconds, **self.selectors
        )
        async for event in events:
            kind, obj = event.get("type"), event.get("object") or {}
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self.on_event(str(kind), obj)
            self.version = str((obj.get("metadata") or {}).get("resourceVersion") or self.version)
            yield
