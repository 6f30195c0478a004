"""Whether a replica may act (operator/leadership.py), and its work queue's gate.

Found by the fault soak: kopf pauses a standby's watches and handlers, not the
operator's own work queue and follower, which went on acting from a frozen view;
and the active replica, SIGCONTed after a SIGSTOP longer than the peering
lifetime, acted at once beside the standby that had taken over.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from nicotask.operator.leadership import Leadership, peering_active
from nicotask.operator.workqueue import WorkQueue

NOW = dt.datetime(2026, 12, 6, 12, 0, 0, tzinfo=dt.UTC)
ME, OTHER = "operator-a/1/abc", "operator-b/2/def"


def _peer(priority: int, seen_ago: float, lifetime: int = 10) -> dict[str, Any]:
    lastseen = NOW - dt.timedelta(seconds=seen_ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": lastseen.isoformat()}


def test_alone_and_alive_is_active() -> None:
    assert peering_active({ME: _peer(200, 1)}, ME, 200, NOW)


def test_a_live_peer_of_higher_or_equal_priority_pauses_us() -> None:
    assert not peering_active({ME: _peer(100, 1), OTHER: _peer(200, 1)}, ME, 100, NOW)
    assert not peering_active({ME: _peer(100, 1), OTHER: _peer(100, 1)}, ME, 100, NOW)


def test_a_dead_or_lower_peer_does_not() -> None:
    assert peering_active({ME: _peer(100, 1), OTHER: _peer(200, 11)}, ME, 100, NOW)
    assert peering_active({ME: _peer(200, 1), OTHER: _peer(100, 1)}, ME, 200, NOW)


def test_our_own_expired_keepalive_means_not_active() -> None:
    # SIGCONTed after a SIGSTOP longer than the lifetime: the others think us dead.
    assert not peering_active({ME: _peer(200, 15), OTHER: _peer(100, 1)}, ME, 200, NOW)
    assert not peering_active({OTHER: _peer(100, 1)}, ME, 200, NOW)  # no entry at all
    assert not peering_active({ME: {"priority": 200, "lastseen": "garbage"}}, ME, 200, NOW)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


async def _never_read() -> list[Any]:
    raise AssertionError("not read in these tests")


def test_standalone_is_always_active() -> None:
    assert Leadership().active()


def test_active_only_after_settling_and_not_once_the_keepalive_expired() -> None:
    clock = Clock()
    lead = Leadership(_never_read, identity=ME, priority=200, settle=2, clock=clock)
    assert not lead.active()  # nothing read yet
    lead.observe([{ME: _peer(200, 0), OTHER: _peer(100, 0)}])
    assert not lead.active()  # alive, but the other may still be acting
    clock.advance(2.5)
    assert lead.active() and lead.term == 1
    # Frozen (SIGSTOP): nothing is read; when the clock goes past our lifetime, the
    # very first check says no, before any new read.
    clock.advance(10)
    assert not lead.active()
    # Our keep-alive lands again: active after the settle time, a new term.
    lead.observe([{ME: _peer(200, -12.5), OTHER: _peer(100, -12.5)}])
    assert not lead.active()
    clock.advance(2.5)
    assert lead.active() and lead.term == 2


def test_a_higher_peer_appearing_pauses_at_once() -> None:
    clock = Clock()
    lead = Leadership(_never_read, identity=OTHER, priority=100, settle=0, clock=clock)
    lead.observe([{OTHER: _peer(100, 0)}])
    assert lead.active()
    lead.observe([{OTHER: _peer(100, 0), ME: _peer(200, 0)}])
    assert not lead.active()


async def test_the_work_queue_takes_no_key_while_its_gate_is_closed() -> None:
    clock = Clock()
    lead = Leadership(_never_read, identity=ME, priority=200, settle=0, interval=0.02, clock=clock)
    done: list[str] = []

    async def handler(key: str, hints: frozenset[str]) -> None:
        done.append(key)

    queue: WorkQueue[str] = WorkQueue(handler, 2, gate=lead.wait_active)
    queue.start()
    try:
        queue.add("t-1")
        await asyncio.sleep(0.1)
        assert done == [] and len(queue) == 1  # paused: the key waits
        lead.observe([{ME: _peer(200, 0)}])
        for _ in range(50):
            if done:
                break
            await asyncio.sleep(0.02)
        assert done == ["t-1"]
        # Paused again (a higher peer): the next key waits again.
        lead.observe([{ME: _peer(200, 0), OTHER: _peer(300, 0)}])
        await asyncio.sleep(0.05)
        queue.add("t-2")
        await asyncio.sleep(0.1)
        assert done == ["t-1"] and len(queue) == 1
    finally:
        await queue.stop()
