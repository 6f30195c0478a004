"""One WATCH: its events, bookmarks included, split and parsed here; an ERROR event
raises as its status maps (410 as `Expired`). `listwatch.ListWatch` keeps one
going for ever (LIST, WATCH, relist on 410, backoff on errors)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from .errors import ApiException, raise_for_status
from .objects import Objects

__all__ = ["Watching", "watch_event"]


def watch_event(event: dict[str, Any], what: str) -> dict[str, Any]:
    """A watch event as sent; an ERROR event (a Status) raises as its code maps."""
    if event.get("type") != "ERROR":
        return event
    status = event.get("object") or {}
    code = int(status.get("code") or 500)
    raise_for_status(code, status.get("reason"), what, orjson.dumps(status))
    raise ApiException(status=code, reason=str(status.get("message") or "watch error"))


class Watching(Objects):
    """`watch`: the events of one WATCH of a custom resource."""

    async def watch(
        self,
        plural: str,
        namespace: str | None,
        resource_version: str,
        timeout_seconds: int,
        **selectors: Any,
    ) -> AsyncIterator[dict[str, Any]]:
        """The events of one WATCH from `resource_version`, BOOKMARKs included, until the
        server ends it (`timeout_seconds`); an ERROR event raises: 410 as Expired.

        Bookmarks carry the current resourceVersion even when the selectors match
        nothing, so a quiet watch resumes from a recent version instead of one too
        old to watch from (410, and a LIST again). Lines are split and parsed here
        (orjson): aiohttp's readline() refuses lines over 128 KiB (a task with a
        large report is one long line), and no client model is built per event.
        """
        what = f"watch of {plural} in {namespace or 'all namespaces'}"
        resp = await self.list_raw(
            plural,
            namespace,
            **{k: v for k, v in selectors.items() if v},
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout_seconds,
            _request_timeout=timeout_seconds + 30,
        )
        buffer = bytearray()
        try:
            async for chunk in resp.content.iter_any():
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    if line.strip():
                        yield watch_event(orjson.loads(line), what)
        finally:
            resp.release()
