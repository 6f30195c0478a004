"""Run one coroutine per item with bounded concurrency and an optional deadline."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from .env import progress

T = TypeVar("T")


class DeadlinePassed(Exception):
    """An item that was not started because the phase's deadline had passed."""


async def bounded(
    items: Iterable[T],
    fn: Callable[[T], Awaitable[Any]],
    concurrency: int,
    label: str = "",
    deadline: float | None = None,
) -> list[BaseException]:
    """Run fn(item) for every item, at most `concurrency` at once; return the failures.

    Items not started by `deadline` (time.monotonic()) are skipped, each counted
    as a DeadlinePassed failure, so a slow system ends the phase instead of
    hanging it. Prints a progress line every 5 s when `label` is given.
    """
    pending = list(items)
    queue: asyncio.Queue[T] = asyncio.Queue()
    for item in pending:
        queue.put_nowait(item)
    errors: list[BaseException] = []
    done = 0

    async def runner() -> None:
        nonlocal done
        while True:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if deadline is not None and time.monotonic() >= deadline:
                errors.append(DeadlinePassed(f"{label or 'phase'}: deadline passed"))
                continue
            try:
                await fn(item)
            except Exception as exc:
                errors.append(exc)
            done += 1

    async def reporter() -> None:
        while True:
            await asyncio.sleep(5)
            progress(f"{label}: {done}/{len(pending)} sent")

    rep = asyncio.create_task(reporter()) if label else None
    try:
        await asyncio.gather(*(runner() for _ in range(max(1, concurrency))))
    finally:
        if rep is not None:
            rep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rep
    return errors
