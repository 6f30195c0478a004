"""A short-lived, single-flight cache for the worker's Kubernetes reads.

A step starts one activity per component at once; without this each would
GET the same NicoTask, NicoRack and Secret. Values live `ttl` seconds (a few
seconds: an edit, a deletion or a recreation is seen that much later, while
the workflow run guard still gates every BMC reset). Failures are not
cached, and concurrent loads of one key share one request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any


class TtlCache:
    def __init__(self, ttl: float, *, max_entries: int = 4096) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._values: dict[Hashable, tuple[float, Any]] = {}
        self._loading: dict[Hashable, asyncio.Future[Any]] = {}

    async def get(self, key: Hashable, load: Callable[[], Awaitable[Any]]) -> Any:
        now = time.monotonic()
        hit = self._values.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            value = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        else:
            future.set_result(value)
            if self.ttl > 0:
                if len(self._values) >= self.max_entries:
                    self._evict(now)
                self._values[key] = (time.monotonic() + self.ttl, value)
            return value
        finally:
            del self._loading[key]

    def forget(self, key: Hashable) -> None:
        self._values.pop(key, None)

    def _evict(self, now: float) -> None:
        for key in [k for k, (expiry, _) in self._values.items() if expiry <= now]:
            del self._values[key]
        while len(self._values) >= self.max_entries:
            self._values.pop(next(iter(self._values)))
