"""Whether this replica may act now: kopf peering, read from the peering objects.

kopf pauses a replica (its watches and handlers) while a live peer of higher
or equal priority exists, but not what the operator runs itself: the work
queue and the follower. A paused standby went on reconciling from its frozen
view, and the active replica, SIGCONTed after a SIGSTOP longer than the
peering lifetime, acted at once beside the standby that had taken over. So
the queue and the follower wait for `Leadership.active()`, computed here
from the peering objects kopf keeps (one per served namespace, or the
cluster-wide one) with the rule kopf pauses by, and one rule more: a
replica whose own keep-alive has expired is not active (the others consider
it dead; one of them may be serving), nor for `settle` seconds after it is
seen alive again (the one that took over needs that long to see it and stop).

`peering_active` and `Leadership.active` decide from what was read and the
clock; `Leadership.run` reads.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from nicotask.kube import Kube

log = logging.getLogger(__name__)

KOPF_GROUP, KOPF_VERSION = "kopf.dev", "v1"
DEFAULT_LIFETIME = 60  # kopf's, for an entry without one
READ_TIMEOUT = 5.0

Peers = Mapping[str, Any]  # a peering object's status: identity -> {priority, lifetime, lastseen}
Reader = Callable[[], Awaitable[list[Peers]]]


def own_identity() -> str:
    """This replica's kopf identity: the pod's name (kopf's POD_ID), or host, pid and a token."""
    pod = os.environ.get("POD_ID")
    if pod:
        return pod
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"


# ---- decisions (pure) --------------------------------------------------------


def _alive(peer: Any, now: dt.datetime) -> bool:
    if not isinstance(peer, Mapping):
        return False
    try:
        lastseen = dt.datetime.fromisoformat(str(peer["lastseen"]))
        lifetime = dt.timedelta(seconds=int(peer.get("lifetime", DEFAULT_LIFETIME)))
    except (KeyError, TypeError, ValueError):
        return False
    if lastseen.tzinfo is None:
        lastseen = lastseen.replace(tzinfo=dt.UTC)
    return lastseen + lifetime > now


def peering_active(peers: Peers, identity: str, priority: int, now: dt.datetime) -> bool:
    """Active in one peering object: our own entry is alive and no other live peer has
    our priority or a higher one (kopf pauses for both)."""
    if not _alive(peers.get(identity), now):
        return False
    for other, peer in peers.items():
        if other == identity or not _alive(peer, now):
            continue
        try:
            if int(peer.get("priority", 0)) >= priority:
                return False
        except (TypeError, ValueError):
            return False
    return True


# ---- the gate -------------------------------------------------------------------


class Leadership:
    """`active()`: may this replica act now. Without peering it always may."""

    def __init__(
        self,
        read: Reader | None = None,
        *,
        identity: str = "",
        priority: int = 0,
        settle: float = 2.0,
        interval: float = 1.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._read = read
        self.identity = identity
        self.priority = priority
        self.settle = dt.timedelta(seconds=settle)
        self.interval = interval
        self._clock = clock
        self._peers: list[Peers] | None = None  # the last read (None: not read yet)
        self._since: dt.datetime | None = None  # active by the peering since
        self._was_active = read is None
        self.term = 0  # counts the times this replica became active

    @property
    def standalone(self) -> bool:
        return self._read is None

    def observe(self, peers: list[Peers]) -> None:
        self._peers = peers

    def active(self) -> bool:
        if self._read is None:
            return True
        now = self._clock()
        peering = self._peers is not None and all(
            peering_active(p, self.identity, self.priority, now) for p in self._peers
        )
        if not peering:
            self._since = None
        elif self._since is None:
            self._since = now
        active = peering and self._since is not None and now - self._since >= self.settle
        if active != self._was_active:
            self._was_active = active
            if active:
                self.term += 1
            log.info(
                "peering: %s (identity %s, priority %d)",
                "active, serving tasks" if active else "standby, not acting",
                self.identity,
                self.priority,
            )
        return active

    async def wait_active(self) -> None:
        # Polled, not an Event: activity also ends and begins by the clock alone
        # (a keep-alive expiring, the settle time passing), with no read in between.
        while not self.active():  # noqa: ASYNC110
            await asyncio.sleep(self.interval / 2)

    async def run(self) -> None:
        """Read the peering objects every interval (a failed read keeps the last one:
        our own entry expires in it as the clock goes on, so a replica cut off from
        the API server stops acting once its keep-alive lifetime has run out)."""
        if self._read is None:
            return
        failing = False
        while True:
            # Judged by the clock before each read too: resumed after a SIGSTOP, the
            # expired keep-alive is seen before the one kopf writes on waking up.
            self.active()
            try:
                self.observe(await self._read())
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    log.warning("peering: reading the peering objects failed: %s", exc)
                failing = True
            self.active()
            await asyncio.sleep(self.interval)


def peering_reader(kube: Kube, name: str, namespaces: list[str]) -> Reader:
    """The status of the peering object(s) kopf uses: the cluster-wide one when the
    operator serves every namespace, else one in each served namespace. A missing
    object reads as empty (no entry of ours: not active; kopf's peering is mandatory)."""

    async def read() -> list[Peers]:
        out: list[Peers] = []
        for namespace in list[str | None](namespaces) or [None]:
            try:
                if namespace is None:
                    obj = await kube.custom.get_cluster_custom_object(
                        KOPF_GROUP,
                        KOPF_VERSION,
                        "clusterkopfpeerings",
                        name,
                        _request_timeout=READ_TIMEOUT,
                    )
                else:
                    obj = await kube.custom.get_namespaced_custom_object(
                        KOPF_GROUP,
                        KOPF_VERSION,
                        namespace,
                        "kopfpeerings",
                        name,
                        _request_timeout=READ_TIMEOUT,
                    )
            except ApiException as exc:
                if exc.status != 404:
                    raise
                obj = {}
            out.append(dict(obj.get("status") or {}))
        return out

    return read
