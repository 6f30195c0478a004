"""The bench's phases on a running system.

raw Temporal -> floor (idle) -> start -> steady CPU -> floor (loaded) -> extra
tasks -> steady cancels -> shim -> burst cancel -> RSS. Every wait is bounded:
a slow system ends a phase with partial figures and an entry in `errors`.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any

import orjson
from kubernetes_asyncio import client, config
from temporalio.client import Client

from nicotask import api
from nicotask_dev.shim.devissuer import issue_token

from . import calls, rawtemporal
from . import objects as o
from .concurrency import bounded
from .cpu import clock_ticks_per_second, component_ticks, cores_used, snapshot
from .env import BenchEnv, progress
from .measure import rate, ratio, summarize
from .profiling import Profiler
from .watch import TERMINAL, TaskWatch

REPO = Path(__file__).resolve().parents[1]
FLOOR_SAMPLES = 30
REPEAT_ROUNDS = 10  # the shim's repeated cancels: this many per Terminated task
FLOOR_WARMUP = 3
SPARE_TASK = "spare-00000"
SPARE_RACK = "bench-rack-spare"
EXTRA_MAX_S = 180.0
# The raw Temporal measurements' deadlines: a fixed part and a part per workflow
# (a start that runs takes its worker longer than a bare StartWorkflow).
RAW_S = 60.0
RAW_EACH_S = 0.1
FIRST_TASK_EACH_S = 0.2
CALLS_SETTLE_S = 3.0  # after a window's last status: late writes (events, progress) still count
# The steady figure's components, in table order (every other recorded process is in `total`).
CPU_COMPONENTS = ("operator", "worker", "temporal", "kube-apiserver", "etcd", "shim", "redfish")
PHASES = (
    "raw", "start", "steady", "steady-cancel", "shim", "cancel", "plugin-cancel", "graceful", "rss"
)  # fmt: skip
# Tasks the graceful phase stops (at most; never more than N).
GRACEFUL_TASKS = 200


@dataclass
class Settings:
    """The run's parameters (the command-line flags)."""

    tasks: int = 200
    rss_tasks: int = 10000
    shim_cancels: int = 100
    concurrency: int = 20  # creates, patches and raw Temporal calls in flight
    shim_concurrency: int = 32
    raw_workflows: int = 200
    steady_settle_s: float = 10.0
    steady_s: float = 60.0
    steady_cancel_rate: float = 5.0
    steady_cancel_s: float = 20.0
    phases: tuple[str, ...] = PHASES

    @property
    def steady_cancels(self) -> int:
        if "steady-cancel" not in self.phases:
            return 0
        return max(1, round(self.steady_cancel_rate * self.steady_cancel_s))

    @property
    def shim_tasks(self) -> int:
        return self.shim_cancels if "shim" in self.phases else 0

    @property
    def racks(self) -> int:
        return self.tasks + self.steady_cancels + self.shim_tasks

    def start_timeout(self) -> float:
        return 60 + self.tasks * 0.24

    def extra_timeout(self, count: int, start_rate: float | None = None) -> float:
        base = 60 + count * 0.3
        if start_rate:
            base = max(base, 1.5 * count / start_rate)
        return min(base, EXTRA_MAX_S)

    def burst_timeout(self) -> float:
        return 60 + self.tasks * 0.12


def _report_wait(label: str, done: int, total: int) -> None:
    progress(f"{label}: {done}/{total}")


def _first_error(errors: list[BaseException]) -> str:
    return f"{len(errors)} failed, first: {type(errors[0]).__name__}: {errors[0]}"[:500]


def _latency(tw: TaskWatch, names: list[str], status: str, sent: dict[str, float]) -> list[float]:
    out = []
    for nm in names:
        seen = tw.seen_at(nm, status)
        if seen is not None and nm in sent:
            out.append(seen - sent[nm])
    return out


@dataclass
class Phases:
    benv: BenchEnv
    cfg: Settings
    errors: list[str] = field(default_factory=list)
    api: client.ApiClient | None = None
    watch_api: client.ApiClient | None = None
    watch: TaskWatch | None = None
    floor_patch_p50: float | None = None
    own_api: int = 0  # the bench's own API-server requests (left out of calls.*)
    temporal: Client | None = None  # connected to the bench's own namespace
    profiler: Profiler | None = None  # --profile: the start and burst-cancel phases

    @property
    def tasks(self) -> int:
        return self.cfg.tasks

    @property
    def rss_tasks(self) -> int:
        return self.cfg.rss_tasks

    @property
    def shim_cancels(self) -> int:
        return self.cfg.shim_cancels

    # ---- plumbing ------------------------------------------------------

    @property
    def custom(self) -> client.CustomObjectsApi:
        assert self.api is not None
        return client.CustomObjectsApi(self.api)

    @property
    def tw(self) -> TaskWatch:
        assert self.watch is not None
        return self.watch

    def own_requests(self) -> int:
        """Every API-server request the bench made so far (its watch's lists and opens too)."""
        return self.own_api + (self.watch.requests if self.watch is not None else 0)

    async def scrape(self) -> calls.Scrape:
        return await calls.scrape(self.benv, self.own_requests())

    async def open(self) -> None:
        self.api = await config.new_client_from_config(config_file=self.benv.kubeconfig)
        self.watch_api = await config.new_client_from_config(config_file=self.benv.kubeconfig)

    async def close(self) -> None:
        if self.profiler is not None:
            try:
                await self.profiler.close()
            except Exception as exc:  # the figures matter more than the profile
                self.errors.append(f"profile: {type(exc).__name__}: {exc}"[:500])
        if self.watch is not None:
            await self.watch.stop()
        for ac in (self.api, self.watch_api):
            if ac is not None:
                await ac.close()

    async def _create(self, plural: str, body: dict[str, Any], namespaced: bool = True) -> None:
        self.own_api += 1
        try:
            if namespaced:
                await self.custom.create_namespaced_custom_object(
                    o.GROUP, o.VERSION, o.NAMESPACE, plural, body
                )
            else:
                await self.custom.create_cluster_custom_object(o.GROUP, o.VERSION, plural, body)
        except client.ApiException as exc:
            if exc.status != 409:
                raise

    async def _create_task(self, body: dict[str, Any]) -> None:
        self.own_api += 1
        await self.custom.create_namespaced_custom_object(
            o.GROUP, o.VERSION, o.NAMESPACE, api.TASKS, body
        )

    async def _patch_task(self, name: str, patch: dict[str, Any]) -> None:
        self.own_api += 1
        custom: Any = self.custom  # the generated client hides **kwargs from mypy
        await custom.patch_namespaced_custom_object(
            o.GROUP,
            o.VERSION,
            o.NAMESPACE,
            api.TASKS,
            name,
            patch,
            _content_type="application/merge-patch+json",
        )

    # ---- setup ---------------------------------------------------------

    async def setup(self) -> None:
        """Namespace, BMC secret, provider and site, the Sleep rule, racks, the spare task,
        and the bench's own Temporal namespace."""
        assert self.api is not None
        register = asyncio.create_task(rawtemporal.register_namespace(self.benv.temporal_address))
        await self.benv.seed_namespace(client.CoreV1Api(self.api), o.NAMESPACE, o.SECRET)
        await self._create(api.PROVIDERS, o.provider(), namespaced=False)
        await self._create(api.SITES, o.site(), namespaced=False)
        await self._create(api.RULES, o.sleep_rule())
        system = self.benv.redfish_system
        url = self.benv.redfish_url
        racks = [o.rack(o.rack_name(i), url, system) for i in range(self.cfg.racks)]
        racks.append(o.rack(SPARE_RACK, url, system))
        progress(f"setup: creating {len(racks)} racks")
        errors = await bounded(racks, lambda r: self._create(api.RACKS, r), 50, "racks")
        if errors:
            raise RuntimeError(f"creating racks: {_first_error(errors)}")
        self.watch = TaskWatch(self.watch_api or self.api)
        await self.watch.start()
        # A task that is cancelled at once: the object the floor's PATCH and GET use.
        await self._create_task(o.task(SPARE_TASK, SPARE_RACK, "spare", cancel=True))
        await self.tw.wait_for([SPARE_TASK], TERMINAL, 60, "spare task")
        await register
        self.temporal = await rawtemporal.connect(self.benv.temporal_address)

    # ---- raw Temporal ----------------------------------------------------

    def raw_budget(self) -> float:
        """Both raw measurements' deadlines, and as long again for their terminates."""
        n = self.cfg.raw_workflows
        return 2 * (2 * RAW_S + n * (RAW_EACH_S + FIRST_TASK_EACH_S))

    async def raw(self) -> dict[str, Any]:
        """StartWorkflow and TerminateWorkflow straight to Temporal, the bench's concurrency."""
        n, c = self.cfg.raw_workflows, self.cfg.concurrency
        progress(f"raw: {n} StartWorkflow then {n} TerminateWorkflow, {c} in flight")
        assert self.temporal is not None
        before = await self.scrape()
        result = await rawtemporal.throughput(self.temporal, n, c, timeout=RAW_S + n * RAW_EACH_S)
        # Its own namespace counted in: one StartWorkflow and one Terminate per workflow.
        stored = calls.persistence(before, await self.scrape(), exclude=())
        result["persistence_per_workflow"] = calls.stored_per_item(stored, n)
        # Temporal's ceiling for a start that runs (see rawtemporal.first_task_throughput).
        first = await rawtemporal.first_task_throughput(
            self.temporal, n, c, timeout=RAW_S + n * FIRST_TASK_EACH_S
        )
        result["first_task"] = first
        result["first_task_per_s"] = first["per_s"]
        progress(
            f"raw: {result['start_per_s']} starts/s, {result['terminate_per_s']} terminates/s,"
            f" {result['first_task_per_s']} starts + first workflow task/s"
        )
        return result

    # ---- floor -----------------------------------------------------------

    async def _time_patches(self) -> list[float]:
        """Seconds of FLOOR_SAMPLES sequential merge-patches of an annotation on the spare task."""
        out: list[float] = []
        for i in range(FLOOR_WARMUP + FLOOR_SAMPLES):
            t = time.perf_counter()
            await self._patch_task(
                SPARE_TASK, {"metadata": {"annotations": {"bench.nico.dev/floor": str(i)}}}
            )
            if i >= FLOOR_WARMUP:
                out.append(time.perf_counter() - t)
        return out

    async def floor(self, measured: str) -> dict[str, Any]:
        """One merge-patch, one GET and one Temporal TerminateWorkflow round trip, each timed
        sequentially FLOOR_SAMPLES times (after FLOOR_WARMUP untimed calls)."""
        patch_s = await self._time_patches()
        get_s: list[float] = []
        for i in range(FLOOR_WARMUP + FLOOR_SAMPLES):
            t = time.perf_counter()
            self.own_api += 1
            await self.custom.get_namespaced_custom_object(
                o.GROUP, o.VERSION, o.NAMESPACE, api.TASKS, SPARE_TASK
            )
            if i >= FLOOR_WARMUP:
                get_s.append(time.perf_counter() - t)

        assert self.temporal is not None
        queue = f"bench-floor-{uuid.uuid4().hex[:8]}"  # no worker polls it
        temporal = self.temporal
        handles: dict[int, Any] = {}

        async def start(i: int) -> None:  # untimed: only the terminates are the floor's
            handles[i] = await temporal.start_workflow(
                rawtemporal.NOOP_WORKFLOW, id=f"{queue}-{i}", task_queue=queue
            )

        errors = await bounded(range(FLOOR_WARMUP + FLOOR_SAMPLES), start, self.cfg.concurrency)
        if errors:
            raise RuntimeError(f"floor: StartWorkflow: {_first_error(errors)}")
        term_s: list[float] = []
        for i, handle in sorted(handles.items()):
            t = time.perf_counter()
            await handle.terminate(reason="bench floor")
            if i >= FLOOR_WARMUP:
                term_s.append(time.perf_counter() - t)
        patch = summarize(patch_s, 1000)
        term = summarize(term_s, 1000)
        return {
            "samples": FLOOR_SAMPLES,
            "patch_ms": patch,
            "terminate_ms": term,
            "get_ms": summarize(get_s, 1000),
            "floor_ms": round(patch["p50"] + term["p50"], 3),
            "measured": measured,
        }

    # ---- start -----------------------------------------------------------

    async def _start_tasks(
        self, phase: str, first_rack: int, count: int, deadline: float
    ) -> tuple[list[str], dict[str, float], list[BaseException]]:
        names = [o.task_name(phase, i) for i in range(count)]
        sent: dict[str, float] = {}

        async def create(i: int) -> None:
            sent[names[i]] = time.monotonic()
            await self._create_task(o.task(names[i], o.rack_name(first_rack + i), phase))

        errors = await bounded(
            range(count), create, self.cfg.concurrency, f"{phase}: create", deadline
        )
        return names, sent, errors

    async def _wait_running(self, label: str, names: list[str], deadline: float) -> list[str]:
        await self.tw.wait_for(
            names,
            ("Running", *TERMINAL),
            max(1.0, deadline - time.monotonic()),
            f"{label}: Running",
            _report_wait,
        )
        return [nm for nm in names if self.tw.seen_at(nm, "Running") is not None]

    async def _arrivals(
        self, names: list[str], status: str, sent: dict[str, float], before: calls.Scrape, n: int
    ) -> tuple[list[float], float | None, dict[str, Any]]:
        """Each task's latency from its send to `status` seen, the wall time from the first
        send to the last arrival, and the calls per task of the window (once they settle)."""
        lat = _latency(self.tw, names, status, sent)
        wall = None
        if names and sent:
            last = max(self.tw.seen_at(nm, status) or 0.0 for nm in names)
            wall = round(last - min(sent.values()), 3)
        await asyncio.sleep(CALLS_SETTLE_S)
        return lat, wall, calls.per_task(before, await self.scrape(), len(names) or n)

    async def start(self) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
        """Create N tasks (the bench's concurrency) and time each from its create to Running
        seen; the API-server and Temporal calls of the window per task."""
        n = self.tasks
        timeout = self.cfg.start_timeout()
        progress(
            f"start: creating {n} tasks, each on its own rack (Sleep {o.SLEEP_SECONDS:.0f}s),"
            f" {self.cfg.concurrency} in flight, at most {timeout:.0f}s"
        )
        before = await self.scrape()
        await self._profile_begin("start")
        mark = self._cpu_mark()
        deadline = time.monotonic() + timeout
        names, sent, errors = await self._start_tasks("start", 0, n, deadline)
        if errors:
            self.errors.append(f"start: create: {_first_error(errors)}")
        running = await self._wait_running("start", names, deadline)
        cpu_ms = self._cpu_ms_per_task(mark, len(running))
        await self._profile_end(len(running), cpu_ms)
        if len(running) < n:
            self.errors.append(f"start: {len(running)} of {n} Running within {timeout:.0f}s")
        lat, total, per_start = await self._arrivals(running, "Running", sent, before, n)
        result = {
            "tasks": n,
            "running": len(running),
            "total_s": total,
            "tasks_per_s": rate(len(running), total),
            "latency_ms": summarize(lat, 1000),
            "create_concurrency": self.cfg.concurrency,
            "timeout_s": round(timeout),
            "cpu_ms_per_task": cpu_ms,
        }
        progress(f"start: CPU ms per task: {cpu_ms}")
        progress(
            f"start: {len(running)}/{n} Running in {total}s; per task:"
            f" {per_start['apiserver']} API-server calls, {per_start['temporal']} Temporal RPCs"
        )
        return result, running, per_start

    async def _profile_begin(self, phase: str) -> None:
        if self.profiler is not None:
            await self.profiler.begin(phase)

    async def _profile_end(self, tasks: int, cpu_ms: dict[str, float | None]) -> None:
        if self.profiler is not None:
            await self.profiler.end(tasks, cpu_ms)

    def _cpu_mark(self) -> tuple[dict[str, Any], float, float]:
        """Where a phase's CPU count starts: every component's ticks, the clock, our own CPU."""
        own = os.times()
        return (
            component_ticks(snapshot(), self.benv.process_roots()),
            time.monotonic(),
            (own.user + own.system),
        )

    def _cpu_ms_per_task(
        self, mark: tuple[dict[str, Any], float, float], tasks: int
    ) -> dict[str, float | None]:
        """CPU each component spent since `mark`, in ms per task (where a task's cost goes
        on a saturated machine); `bench` (this process, left out of the total) competes
        for the same cores."""
        before, t0, own_before = mark
        seconds = time.monotonic() - t0
        after = component_ticks(snapshot(), self.benv.process_roots())
        own = os.times()
        names = list(CPU_COMPONENTS) + sorted(set(after) - set(CPU_COMPONENTS))
        cores = cores_used(before, after, seconds, clock_ticks_per_second(), names)
        per_task = 1000 / max(1, tasks)
        out: dict[str, float | None] = {
            name: None if c is None else round(c * seconds * per_task, 1)
            for name, c in cores.items()
        }
        out["bench"] = round((own.user + own.system - own_before) * per_task, 1)
        return out

    # ---- steady: N idle Running tasks --------------------------------------

    async def steady(self, running: list[str]) -> dict[str, Any]:
        """CPU of every component (from /proc) and the request rates over a window in which
        the N tasks are Running and only wait (their step sleeps)."""
        settle, seconds = self.cfg.steady_settle_s, self.cfg.steady_s
        progress(
            f"steady: {len(running)} Running; settling {settle:.0f}s, measuring {seconds:.0f}s"
        )
        await asyncio.sleep(settle)
        first = await self.scrape()
        before = component_ticks(snapshot(), self.benv.process_roots())
        bench_before = os.times()
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        after = component_ticks(snapshot(), self.benv.process_roots())
        t1 = time.monotonic()
        bench_after = os.times()
        last = await self.scrape()
        names = list(CPU_COMPONENTS) + sorted(set(after) - set(CPU_COMPONENTS))
        cores = cores_used(before, after, t1 - t0, clock_ticks_per_second(), names)
        bench_cpu = (bench_after.user + bench_after.system) - (
            bench_before.user + bench_before.system
        )
        still = sum(1 for nm in running if self.tw.current.get(nm) == "Running")
        if still < len(running):
            self.errors.append(
                f"steady: {len(running) - still} of {len(running)} tasks were no longer Running"
                " at the end of the window"
            )
        result = {
            "tasks_running": still,
            "window_s": round(t1 - t0, 3),
            "settle_s": settle,
            "cpu_cores": cores,
            "bench_cpu_cores": round(bench_cpu / (t1 - t0), 3),
            "requests": calls.per_second(first, last),
        }
        progress(f"steady: {cores.get('total')} cores in total ({still} tasks Running)")
        return result

    # ---- extra Running tasks for the steady cancels and the shim ----------------

    async def extra_tasks(self, start_rate: float | None = None) -> tuple[list[str], list[str]]:
        """The steady cancels' and the shim's own Running tasks, on racks after the N.

        They are only the next phases' material: their budget also follows the
        start rate just measured (1.5x the time that rate needs), at most EXTRA_MAX_S.
        """
        s, k = self.cfg.steady_cancels, self.cfg.shim_tasks
        if not s + k:
            return [], []
        timeout = self.cfg.extra_timeout(s + k, start_rate)
        progress(
            f"extra: creating {s} tasks for the steady cancels and {k} for the shim,"
            f" at most {timeout:.0f}s"
        )
        deadline = time.monotonic() + timeout
        steady_names = [o.task_name("steady", i) for i in range(s)]
        shim_names = [o.task_name("shim", i) for i in range(k)]
        # Interleaved, so that a slow system still gives both phases some Running tasks.
        order = [nm for pair in zip_longest(steady_names, shim_names) for nm in pair if nm]
        rack_of = {nm: self.tasks + i for i, nm in enumerate(steady_names + shim_names)}

        async def create(name: str) -> None:
            phase = name.split("-", 1)[0]
            await self._create_task(o.task(name, o.rack_name(rack_of[name]), phase))

        errors = await bounded(order, create, self.cfg.concurrency, "extra: create", deadline)
        if errors:
            self.errors.append(f"extra: create: {_first_error(errors)}")
        running = set(await self._wait_running("extra", order, deadline))
        steady = [nm for nm in steady_names if nm in running]
        shim = [nm for nm in shim_names if nm in running]
        if len(running) < s + k:
            self.errors.append(f"extra: {len(running)} of {s + k} Running within {timeout:.0f}s")
        return steady, shim

    # ---- steady cancels -------------------------------------------------------

    async def steady_cancel(self, victims: list[str], floor_ms: float | None) -> dict[str, Any]:
        """One cancel patch every 1/rate s (each on its own, not waiting for the previous)
        while the other tasks keep running; patch sent -> Terminated seen."""
        rate_s = self.cfg.steady_cancel_rate
        progress(f"steady cancel: {len(victims)} single cancels at {rate_s}/s")
        sent: dict[str, float] = {}
        failures: list[BaseException] = []

        async def patch(name: str) -> None:
            sent[name] = time.monotonic()
            try:
                await self._patch_task(name, {"spec": {"cancel": True}})
            except Exception as exc:
                failures.append(exc)

        before = await self.scrape()
        t0 = time.monotonic()
        pending = []
        for i, name in enumerate(victims):
            await asyncio.sleep(max(0.0, t0 + i / rate_s - time.monotonic()))
            pending.append(asyncio.create_task(patch(name)))
        await asyncio.gather(*pending)
        if failures:
            self.errors.append(f"steady cancel: patch: {_first_error(failures)}")
        await self.tw.wait_for(victims, TERMINAL, 30, "steady cancel: Terminated", _report_wait)
        done = [nm for nm in victims if self.tw.seen_at(nm, "Terminated") is not None]
        if len(done) < len(victims):
            self.errors.append(f"steady cancel: {len(done)} of {len(victims)} Terminated")
        await asyncio.sleep(CALLS_SETTLE_S)
        window = calls.per_task(before, await self.scrape(), len(done) or 1)
        summary = summarize(_latency(self.tw, done, "Terminated", sent), 1000)
        progress(f"steady cancel: p50 {summary['p50']} ms, p99 {summary['p99']} ms")
        return {
            "cancels": len(victims),
            "terminated": len(done),
            "rate_per_s": rate_s,
            "latency_ms": summary,
            "floor_ms": floor_ms,
            "p50_over_floor": ratio(summary["p50"], floor_ms),
            "calls_per_cancel": {k: window[k] for k in ("apiserver", "temporal", "window_s")},
        }

    def _outcomes(self, names: list[str]) -> dict[str, int]:
        """How many of `names` ended in each terminal status (first seen), or none yet."""
        out: Counter[str] = Counter()
        for nm in names:
            msg = self.tw.messages.get(nm)
            out[msg.split(":", 1)[0] if msg else "not finished"] += 1
        return dict(out)

    # ---- burst cancel by patch ---------------------------------------------

    async def cancel(
        self, running: list[str], floor_ms: float | None, idle_floor_ms: float | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Patch spec.cancel=true on every Running task (the bench's concurrency); time patch
        -> Terminated; the API-server and Temporal calls of the window per cancel."""
        n = len(running)
        c = self.cfg.concurrency
        timeout = self.cfg.burst_timeout()
        progress(f"cancel: patching spec.cancel=true on {n} Running tasks, {c} in flight")
        sent: dict[str, float] = {}

        async def patch(name: str) -> None:
            sent[name] = time.monotonic()
            await self._patch_task(name, {"spec": {"cancel": True}})

        before = await self.scrape()
        await self._profile_begin("cancel")
        mark = self._cpu_mark()
        deadline = time.monotonic() + timeout
        errors = await bounded(running, patch, c, "cancel: patch", deadline)
        if errors:
            self.errors.append(f"cancel: patch: {_first_error(errors)}")
        await self.tw.wait_for(
            running,
            TERMINAL,
            max(1.0, deadline - time.monotonic()),
            "cancel: Terminated",
            _report_wait,
        )
        done = [nm for nm in running if self.tw.seen_at(nm, "Terminated") is not None]
        cpu_ms = self._cpu_ms_per_task(mark, len(done))
        await self._profile_end(len(done), cpu_ms)
        done_set = set(done)
        other = [
            nm
            for nm in running
            if nm not in done_set and any(self.tw.seen_at(nm, s) for s in TERMINAL)
        ]
        if len(done) < n:
            example = self.tw.messages.get(other[0]) if other else "-"
            self.errors.append(
                f"cancel: {len(done)} of {n} Terminated within {timeout:.0f}s"
                f" ({len(other)} ended otherwise, e.g. {example})"
            )
        lat, wall, per_cancel = await self._arrivals(done, "Terminated", sent, before, n)
        summary = summarize(lat, 1000)
        result = {
            "tasks": n,
            "terminated": len(done),
            "latency_ms": summary,
            "wall_s": wall,
            "cancels_per_s": rate(len(done), wall),
            "floor_ms": floor_ms,
            "p50_over_floor": ratio(summary["p50"], floor_ms),
            "idle_floor_ms": idle_floor_ms,
            "p50_over_idle_floor": ratio(summary["p50"], idle_floor_ms),
            "patch_concurrency": c,
            "timeout_s": round(timeout),
            "outcomes": self._outcomes(running),
            "other_outcome_samples": sorted({self.tw.messages[nm] for nm in other})[:5],
            "cpu_ms_per_task": cpu_ms,
        }
        progress(f"cancel: CPU ms per cancel: {cpu_ms}")
        progress(
            f"cancel: {len(done)}/{n} Terminated, p50 {summary['p50']} ms, wall {wall}s; per"
            f" cancel: {per_cancel['apiserver']} API-server calls,"
            f" {per_cancel['temporal']} Temporal RPCs"
        )
        return result, per_cancel

    # ---- shim ------------------------------------------------------------

    async def shim(self, running: list[str]) -> dict[str, Any]:
        """The shim's Running tasks cancelled through the REST API (`shim_concurrency` in
        flight) while the N tasks run, then the same cancels again (now Terminated)."""
        k = self.shim_cancels
        if len(running) < k:
            self.errors.append(f"shim: {len(running)} of {k} tasks Running to cancel")
        token = issue_token(
            key_dir=self.benv.run_dir, org=o.ORG, roles=["PROVIDER_ADMIN"], subject="bench"
        )
        concurrency = self.cfg.shim_concurrency
        raw = summarize(await self._time_patches(), 1000)
        # The same tasks patched straight to the API server (an annotation), as many
        # in flight as the shim's cancels: the fair baseline for their latency.
        raw_concurrent = await self._concurrent_patches(running, concurrency)
        progress(
            f"shim: raw PATCH p50 {raw['p50']} ms alone,"
            f" {raw_concurrent['latency_ms']['p50']} ms with {concurrency} in flight"
            f" ({raw_concurrent['requests_per_s']}/s); {len(running)} fresh cancels"
        )
        sent: dict[str, float] = {}
        fresh = await self._shim_cancels(token, running, concurrency, sent)
        await self.tw.wait_for(running, TERMINAL, 60 + k * 0.3, "shim: Terminated", _report_wait)
        terminated = [nm for nm in running if self.tw.seen_at(nm, "Terminated") is not None]
        if len(terminated) < len(running):
            self.errors.append(f"shim: {len(terminated)} of {len(running)} Terminated")
        to_term = _latency(self.tw, terminated, "Terminated", sent)
        progress(f"shim: {len(terminated) * REPEAT_ROUNDS} repeated cancels of Terminated tasks")
        # Each Terminated task cancelled REPEAT_ROUNDS times: enough requests for a p99.
        repeat = await self._shim_cancels(token, terminated * REPEAT_ROUNDS, concurrency, {})
        concurrent_p50 = raw_concurrent["latency_ms"]["p50"]
        for part in (fresh, repeat):
            part["p50_over_patch"] = ratio(part["latency_ms"]["p50"], concurrent_p50)
            part["p99_over_patch"] = ratio(part["latency_ms"]["p99"], concurrent_p50)
            part["p50_over_sequential_patch"] = ratio(part["latency_ms"]["p50"], raw["p50"])
        progress(
            f"shim: fresh {fresh['requests_per_s']} req/s, p50 {fresh['latency_ms']['p50']} ms;"
            f" repeat p99 {repeat['latency_ms']['p99']} ms"
        )
        return {
            "tasks": k,
            "running": len(running),
            "concurrency": concurrency,
            "fresh": fresh,
            "repeat": repeat,
            "outcomes": self._outcomes(running),
            "raw_patch": raw,
            "raw_patch_ms": raw["p50"],
            "raw_patch_concurrent": raw_concurrent,
            "floor_patch_ms": self.floor_patch_p50,
            "terminated_ms": summarize(to_term, 1000),
        }

    async def _concurrent_patches(self, names: list[str], concurrency: int) -> dict[str, Any]:
        """One merge-patch (an annotation) of each task, `concurrency` in flight."""
        lat: list[float] = []

        async def one(name: str) -> None:
            t = time.perf_counter()
            await self._patch_task(name, {"metadata": {"annotations": {"bench.nico.dev/raw": "1"}}})
            lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        errors = await bounded(names, one, concurrency)
        wall = time.perf_counter() - t0
        if errors:
            self.errors.append(f"shim: raw PATCH: {_first_error(errors)}")
        return {
            "requests": len(names),
            "requests_per_s": rate(len(lat), wall),
            "latency_ms": summarize(lat, 1000),
        }

    async def _shim_cancels(
        self, token: str, names: list[str], concurrency: int, sent: dict[str, float]
    ) -> dict[str, Any]:
        """The cancels of `names` through the shim, sent by bench.shimload in a process of
        its own (aiohttp, `concurrency` in flight); `sent` gets when each was sent."""
        job = {
            "base_url": self.benv.shim_url,
            "token": token,
            "org": o.ORG,
            "site_id": o.SITE_ID,
            "concurrency": concurrency,
            "tasks": [[nm, self.tw.uids[nm]] for nm in names],
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.shimload",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=str(REPO),
        )
        out, err = await proc.communicate(orjson.dumps(job))
        if proc.returncode != 0:
            raise RuntimeError(f"bench.shimload exited {proc.returncode}: {err.decode()[-500:]}")
        result = orjson.loads(out)
        sent.update(result["sent"])
        return {
            "requests": len(names),
            "wall_s": round(result["wall_s"], 3),
            "requests_per_s": rate(len(names), result["wall_s"]),
            "latency_ms": summarize(result["latencies_s"], 1000),
            "status_codes": result["status_codes"],
            "response_status": result["response_status"],
            "failures": result["failures"],
            "load": "bench.shimload (aiohttp, its own process)",
        }

    # ---- operator RSS ------------------------------------------------------

    async def _settled_operator(self, total: int, timeout: float) -> dict[str, Any]:
        """Wait until the operator counts `total` tasks in its metrics and its CPU is idle."""
        deadline = time.monotonic() + timeout
        seen = 0
        last_report = time.monotonic()
        while time.monotonic() < deadline:
            seen = await self.benv.operator_task_count()
            if seen >= total:
                break
            if time.monotonic() - last_report >= 5:
                progress(f"rss: operator has seen {seen}/{total} tasks")
                last_report = time.monotonic()
            await asyncio.sleep(0.5)
        seen_at = time.monotonic()
        idle = await self.benv.wait_operator_idle(max(5.0, deadline - time.monotonic()))
        return {"seen": seen, "seen_at": seen_at, "idle": idle, "idle_at": time.monotonic()}

    async def _write_terminated(self, name: str) -> None:
        self.own_api += 1
        custom: Any = self.custom
        await custom.patch_namespaced_custom_object_status(
            o.GROUP,
            o.VERSION,
            o.NAMESPACE,
            api.TASKS,
            name,
            {"status": {"status": "Terminated", "message": "Cancelled by user"}},
            _content_type="application/merge-patch+json",
        )

    def rss_live(self) -> dict[str, Any]:
        """The running operator's RSS with the tasks of the earlier phases present
        (`--rss-tasks 0`: no restart, no extra tasks)."""
        live = self.benv.operator_rss_kb()
        present = len(self.tw.first_seen)
        mb = _mb(live["rss_kb"])
        progress(f"rss: live operator RSS {mb} MB with {present} tasks present")
        return {
            "live": True,
            "operator_mb": mb,
            "tasks": present,
            "hwm_mb": _mb(live["hwm_kb"]),
            "operator_pid": live["pid"],
            "how": "the live operator after the earlier phases, without a restart",
        }

    async def rss(self) -> dict[str, Any]:
        """The operator's RSS with M more NicoTasks present, each a fresh operator process.

        Baseline: the operator restarted with the tasks of the earlier phases
        present. Then, with the operator stopped, M finished tasks are created
        (50 in flight; spec.cancel=true, status
        Terminated written through the status subresource) and the operator is
        started again: its RSS once it has seen every task and gone idle.
        """
        m = self.rss_tasks
        live = self.benv.operator_rss_kb()
        present = len(self.tw.first_seen)
        progress(f"rss: restarting the operator for a baseline with {present} tasks present")
        self.benv.restart_operator()
        # The operator watches live tasks only: it "sees" none of the finished ones.
        base = await self._settled_operator(0, 120)
        before = self.benv.operator_rss_kb()
        progress(f"rss: baseline RSS {_mb(before['rss_kb'])} MB; stopping the operator")
        self.benv.stop_operator()
        names = [o.task_name("rss", i) for i in range(m)]
        t0 = time.monotonic()

        async def create(name: str) -> None:
            body = o.task(name, SPARE_RACK, "rss", rule_id=None, cancel=True)
            await self._create_task(body)
            await self._write_terminated(name)

        errors = await bounded(names, create, 50, "rss: create + status")
        create_s = time.monotonic() - t0
        if errors:
            self.errors.append(f"rss: create: {_first_error(errors)}")
        await self.tw.wait_for(names, None, 60, "rss: statuses seen", _report_wait)
        total = len(self.tw.first_seen)
        progress(f"rss: {m} created in {create_s:.1f}s; starting the operator ({total} tasks)")
        t1 = time.monotonic()
        self.benv.start_operator()
        timeout = 180 + m * 0.06
        after_state = await self._settled_operator(0, timeout)
        after = self.benv.operator_rss_kb()
        base_mb, rss_mb = _mb(before["rss_kb"]), _mb(after["rss_kb"])
        delta = None if base_mb is None or rss_mb is None else round(rss_mb - base_mb, 1)
        result = {
            "created": m,
            "processed": m,
            "tasks_present": total,
            "baseline_tasks_present": present,
            "operator_pid": after["pid"],
            "baseline_mb": base_mb,
            "rss_mb": rss_mb,
            "operator_mb": rss_mb,
            "tasks": total,
            "delta_mb": delta,
            "delta_mb_per_1000": (round(delta * 1000 / m, 2) if delta is not None and m else None),
            "hwm_mb": _mb(after["hwm_kb"]),
            "baseline_hwm_mb": _mb(before["hwm_kb"]),
            "live_operator_mb_before_restart": _mb(live["rss_kb"]),
            "baseline_idle": base["idle"],
            "idle": after_state["idle"],
            "create_s": round(create_s, 3),
            "process_s": round(after_state["idle_at"] - t1, 3),
            "seen_all_s": round(after_state["seen_at"] - t1, 3),
            "create_concurrency": 50,
            "how": (
                "operator stopped; tasks created with spec.cancel=true and status Terminated;"
                " RSS of the restarted operator once its CPU went idle (it lists finished tasks"
                " once, for their TTL), next to a restarted operator with the earlier phases'"
                " tasks"
            ),
        }
        progress(f"rss: operator RSS {rss_mb} MB with {total} tasks (baseline {base_mb} MB)")
        return result


def _mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)
