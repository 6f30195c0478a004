"""The worker's read cache: one request for concurrent readers, expiry, failures not kept."""

from __future__ import annotations

import asyncio

import pytest

from nicotask.temporal.cache import TtlCache


async def test_concurrent_reads_share_one_load() -> None:
    cache = TtlCache(ttl=60)
    loads = 0

    async def load() -> str:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.05)
        return "task"

    results = await asyncio.gather(*(cache.get("k", load) for _ in range(10)))
    assert results == ["task"] * 10
    assert loads == 1
    assert await cache.get("k", load) == "task"
    assert loads == 1
    cache.forget("k")
    await cache.get("k", load)
    assert loads == 2


async def test_expiry_and_failures() -> None:
    cache = TtlCache(ttl=0.05)
    values = iter(["a", "b"])

    async def load() -> str:
        return next(values)

    assert await cache.get("k", load) == "a"
    await asyncio.sleep(0.08)
    assert await cache.get("k", load) == "b"

    async def broken() -> str:
        raise LookupError("gone")

    with pytest.raises(LookupError):
        await cache.get("x", broken)
    with pytest.raises(LookupError):
        await cache.get("x", broken)  # not cached: asked again


async def test_size_is_bounded() -> None:
    cache = TtlCache(ttl=60, max_entries=3)

    async def load() -> int:
        return 1

    for key in range(10):
        await cache.get(key, load)
    assert len(cache._values) <= 3
