"""The fault injector: tracks that strike at random, side by side, until the soak's end.

- operator, worker, shim: SIGKILL + restart of the active operator replica, the
  worker, the shim (one track each);
- standby: SIGSTOP of the active operator replica for longer than its peering
  lifetime, the standby's takeover timed from its log, then SIGCONT;
- infra: restart (SIGTERM, data kept) of kube-apiserver, etcd, the Temporal dev server;
- bmc: the fault proxy slow, answering 5xx, resetting connections, or reporting
  the wrong power state, for a few seconds.

Each track picks its kinds in shuffled rounds, so every kind gets about as many
strikes. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from bench.env import progress

from .bmcproxy import FaultProxy
from .env import PEERING_LIFETIME_S, SoakEnv

TRACKS: dict[str, tuple[str, ...]] = {
    "operator": ("kill_operator",),
    "worker": ("kill_worker",),
    "shim": ("kill_shim",),
    "standby": ("stop_operator",),
    "apiserver": ("restart_apiserver",),
    "etcd": ("restart_etcd",),
    "temporal": ("restart_temporal",),
    "bmc": ("bmc_slow", "bmc_5xx", "bmc_reset", "bmc_wrong_power"),
}
# Seconds between one fault of a track and its next: a component killed every few
# seconds never gets to run at all (a worker killed every 6 s replays and is gone).
GAPS: dict[str, tuple[float, float]] = {
    "operator": (8.0, 16.0),
    "worker": (8.0, 16.0),
    "shim": (8.0, 16.0),
    "apiserver": (6.0, 14.0),
    "etcd": (10.0, 20.0),
    "temporal": (10.0, 20.0),
}
KINDS = tuple(k for kinds in TRACKS.values() for k in kinds)
# Faults during which the API server cannot answer (the shim may answer 503).
API_DOWN = ("restart_apiserver", "restart_etcd")
COMPONENTS = ("operator-a", "operator-b", "worker", "shim")


@dataclass
class Fault:
    kind: str
    start: float  # time.monotonic()
    end: float = 0.0
    start_wall: float = 0.0
    detail: str = ""
    error: str = ""
    takeover_s: float | None = None
    stopped_wall: float | None = None  # SIGSTOP .. SIGCONT, time.time()
    cont_wall: float | None = None
    standby: str = ""  # at the SIGSTOP: paused (took over or not) or already active

    def to_json(self, t0: float) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "start_s": round(self.start - t0, 3),
            "end_s": round(self.end - t0, 3),
            "duration_s": round(self.end - self.start, 3),
            "detail": self.detail,
            "error": self.error,
            "takeover_s": None if self.takeover_s is None else round(self.takeover_s, 3),
            "standby": self.standby,
        }


@dataclass
class Injector:
    senv: SoakEnv
    proxy: FaultProxy
    rng: random.Random
    until: float  # time.monotonic()
    gap: tuple[float, float] = (0.5, 3.0)
    faults: list[Fault] = field(default_factory=list)

    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    crashes: list[dict[str, Any]] = field(default_factory=list)
    start_failures: int = 0

    def lock(self, name: str) -> asyncio.Lock:
        return self.locks.setdefault(name, asyncio.Lock())

    async def run(self) -> None:
        await asyncio.gather(*(self._track(name, kinds) for name, kinds in TRACKS.items()))

    async def supervise(self, stop: asyncio.Event) -> None:
        """Restart a nicotask process that died outside a fault, as kubelet would."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=2.0)
            for name in COMPONENTS:
                lock = self.lock(name)
                if lock.locked() or self.senv.alive(name):
                    continue
                async with lock:
                    if self.senv.alive(name):
                        continue
                    self.crashes.append(
                        {"process": name, "t": time.time(), "log": self.senv.log_tail(name)}
                    )
                    progress(f"{name} died outside a fault: restarting it")
                    try:
                        self.start_failures += await asyncio.to_thread(
                            self.senv.restart_component, name
                        )
                    except Exception as exc:
                        progress(f"restarting {name}: {exc}")

    async def _track(self, name: str, kinds: tuple[str, ...]) -> None:
        await asyncio.sleep(self.rng.uniform(2.0, 6.0))
        order: list[str] = []
        for _ in range(10_000):
            if time.monotonic() >= self.until:
                return
            if not order:
                order = list(kinds)
                self.rng.shuffle(order)
            kind = order.pop()
            fault = Fault(kind, time.monotonic(), start_wall=time.time())
            self.faults.append(fault)
            try:
                await asyncio.wait_for(getattr(self, kind)(fault), timeout=240)
            except Exception as exc:
                fault.error = f"{type(exc).__name__}: {exc}"[:300]
                progress(f"fault {kind} error: {fault.error}")
            fault.end = time.monotonic()
            progress(f"fault {kind} done in {fault.end - fault.start:.1f}s {fault.detail}")
            await asyncio.sleep(self.rng.uniform(*GAPS.get(name, self.gap)))

    # ---- process track ---------------------------------------------------

    async def _kill(self, name: str) -> None:
        async with self.lock(name):
            await asyncio.to_thread(self.senv.kill_process, name)
            self.start_failures += await asyncio.to_thread(self.senv.restart_component, name)

    async def kill_operator(self, f: Fault) -> None:
        f.detail = "operator-a (the preferred, active replica)"
        await self._kill("operator-a")

    async def kill_worker(self, f: Fault) -> None:
        await self._kill("worker")

    async def kill_shim(self, f: Fault) -> None:
        await self._kill("shim")

    # ---- standby track -----------------------------------------------------

    async def stop_operator(self, f: Fault) -> None:
        """SIGSTOP operator-a past its peering lifetime (takeovers() times the standby)."""
        async with self.lock("operator-a"):
            stopped_for = PEERING_LIFETIME_S + self.rng.uniform(4.0, 8.0)
            self.senv.signal_group("operator-a", signal.SIGSTOP)
            f.stopped_wall = time.time()
            try:
                await asyncio.sleep(stopped_for)
            finally:
                self.senv.signal_group("operator-a", signal.SIGCONT)
                f.cont_wall = time.time()
        f.detail = f"SIGSTOP {stopped_for:.1f}s"

    def takeovers(self) -> None:
        """From operator-b's log: was it standing by when operator-a stopped, and when
        did it start serving (operator/leadership.py logs both, to the millisecond, in
        this machine's clock: kopf's resume and the settle time after it)?"""
        try:
            text = self.senv.operator_log("operator-b").read_text(errors="replace")
        except OSError:
            return
        events: list[tuple[float, bool]] = []  # (time, active after it)
        for line in text.splitlines():
            if "nicotask.operator.leadership" not in line:
                continue
            if "peering: active" in line or "peering: standby" in line:
                try:
                    stamp = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                except ValueError:
                    continue
                t = stamp.replace(tzinfo=dt.UTC).timestamp()
                events.append((t, "peering: active" in line))
        for f in self.faults:
            if f.kind != "stop_operator" or f.stopped_wall is None:
                continue
            s, e = f.stopped_wall, f.cont_wall or f.stopped_wall
            before = [active for t, active in events if t <= s]
            if before and before[-1]:
                f.standby = "already active"
                continue
            resumed = [t for t, active in events if active and s < t <= e + 0.5]
            if resumed:
                f.standby = "took over"
                f.takeover_s = resumed[0] - s
            else:
                f.standby = "did not take over before SIGCONT"

    # ---- infra track -------------------------------------------------------

    async def _restart(self, name: str, f: Fault) -> None:
        async with self.lock(name):
            await asyncio.to_thread(self.senv.stop_infra, name)
            down = self.rng.uniform(0.5, 3.0)
            await asyncio.sleep(down)
            t = time.monotonic()
            await asyncio.to_thread(self.senv.start_infra, name)
            f.detail = f"down {down:.1f}s, ready after {time.monotonic() - t:.1f}s"

    async def restart_apiserver(self, f: Fault) -> None:
        await self._restart("kube-apiserver", f)

    async def restart_etcd(self, f: Fault) -> None:
        await self._restart("etcd", f)

    async def restart_temporal(self, f: Fault) -> None:
        await self._restart("temporal", f)

    # ---- bmc track -----------------------------------------------------------

    async def _bmc(self, mode: str, f: Fault) -> None:
        secs = self.rng.uniform(2.0, 6.0)
        self.proxy.mode = mode
        try:
            await asyncio.sleep(secs)
        finally:
            self.proxy.mode = "normal"
        f.detail = f"{secs:.1f}s"

    async def bmc_slow(self, f: Fault) -> None:
        await self._bmc("slow", f)

    async def bmc_5xx(self, f: Fault) -> None:
        await self._bmc("5xx", f)

    async def bmc_reset(self, f: Fault) -> None:
        await self._bmc("reset", f)

    async def bmc_wrong_power(self, f: Fault) -> None:
        await self._bmc("wrong_power", f)
