"""One lazily connected Temporal client for the operator, reconnecting while Temporal is down."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from temporalio.client import Client

from nicotask.settings import Settings
from nicotask.temporal.client import connect


def temporal_factory(settings: Settings) -> Callable[[], Awaitable[Client]]:
    lock = asyncio.Lock()
    holder: dict[str, Client] = {}

    async def get() -> Client:
        async with lock:
            if "client" not in holder:
                holder["client"] = await connect(settings, lazy=True)
            return holder["client"]

    return get
