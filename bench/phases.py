"""The bench's phases on a running system: setup, floor, start, cancel, shim, RSS."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from kubernetes_asyncio import client, config
from temporalio.client import Client

from nicotask.api import BMC_CREDENTIALS_LABEL
from nicotask.shim.devissuer import issue_token

from . import objects as o
from .env import BenchEnv, progress
from .measure import rate, ratio, summarize
from .watch import TERMINAL, TaskWatch

T = TypeVar("T")
FLOOR_SAMPLES = 30
FLOOR_WARMUP = 3
SPARE_TASK = "spare-00000"
SPARE_RACK = "bench-rack-spare"


async def bounded(
    items: Sequence[T],
    fn: Callable[[T], Awaitable[Any]],
    concurrency: int,
    label: str = "",
) -> list[BaseException]:
    """Run fn(item) for every item, at most `concurrency` at once; return the failures.

    Prints a progress line every 5 s when `label` is given.
    """
    queue: asyncio.Queue[T] = asyncio.Queue()
    for item in items:
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
            try:
                await fn(item)
            except Exception as exc:
                errors.append(exc)
            done += 1

    async def reporter() -> None:
        while True:
            await asyncio.sleep(5)
            progress(f"{label}: {done}/{len(items)} sent")

    rep = asyncio.create_task(reporter()) if label else None
    try:
        await asyncio.gather(*(runner() for _ in range(max(1, concurrency))))
    finally:
        if rep is not None:
            rep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rep
    return errors


def _report_wait(label: str, done: int, total: int) -> None:
    progress(f"{label}: {done}/{total}")


def _ms(seconds: float) -> float:
    return seconds * 1000.0


def _first_error(errors: list[BaseException]) -> str:
    return f"{len(errors)} failed, first: {type(errors[0]).__name__}: {errors[0]}"[:500]


@dataclass
class Phases:
    benv: BenchEnv
    tasks: int
    rss_tasks: int
    shim_cancels: int
    errors: list[str] = field(default_factory=list)
    api: client.ApiClient | None = None
    watch_api: client.ApiClient | None = None
    watch: TaskWatch | None = None
    floor_patch_p50: float | None = None

    # ---- plumbing ------------------------------------------------------

    @property
    def custom(self) -> client.CustomObjectsApi:
        assert self.api is not None
        return client.CustomObjectsApi(self.api)

    @property
    def tw(self) -> TaskWatch:
        assert self.watch is not None
        return self.watch

    async def open(self) -> None:
        self.api = await config.new_client_from_config(config_file=self.benv.kubeconfig)
        self.watch_api = await config.new_client_from_config(config_file=self.benv.kubeconfig)

    async def close(self) -> None:
        if self.watch is not None:
            await self.watch.stop()
        for api in (self.api, self.watch_api):
            if api is not None:
                await api.close()

    async def _create(self, plural: str, body: dict[str, Any], namespaced: bool = True) -> None:
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
        await self.custom.create_namespaced_custom_object(
            o.GROUP, o.VERSION, o.NAMESPACE, "nicotasks", body
        )

    async def _patch_task(self, name: str, patch: dict[str, Any]) -> None:
        custom: Any = self.custom  # the generated client hides **kwargs from mypy
        await custom.patch_namespaced_custom_object(
            o.GROUP,
            o.VERSION,
            o.NAMESPACE,
            "nicotasks",
            name,
            patch,
            _content_type="application/merge-patch+json",
        )

    # ---- setup ---------------------------------------------------------

    async def setup(self) -> None:
        """Namespace, BMC secret, provider and site, the Sleep rule, racks, the spare task."""
        assert self.api is not None
        core = client.CoreV1Api(self.api)
        with contextlib.suppress(client.ApiException):
            await core.create_namespace(
                client.V1Namespace(metadata=client.V1ObjectMeta(name=o.NAMESPACE))
            )
        with contextlib.suppress(client.ApiException):
            await core.create_namespaced_secret(
                o.NAMESPACE,
                client.V1Secret(
                    metadata=client.V1ObjectMeta(
                        name=o.SECRET, labels={BMC_CREDENTIALS_LABEL: "true"}
                    ),
                    string_data={
                        "username": str(self.benv.state["redfish_user"]),
                        "password": str(self.benv.state["redfish_password"]),
                    },
                ),
            )
        await self._create("nicoproviders", o.provider(), namespaced=False)
        await self._create("nicosites", o.site(), namespaced=False)
        await self._create("nicooperationrules", o.sleep_rule())
        system = self.benv.redfish_system
        url = self.benv.redfish_url
        racks = [o.rack(o.rack_name(i), url, system) for i in range(self.tasks + self.shim_cancels)]
        racks.append(o.rack(SPARE_RACK, url, system))
        progress(f"setup: creating {len(racks)} racks")
        errors = await bounded(racks, lambda r: self._create("nicoracks", r), 50, "racks")
        if errors:
            raise RuntimeError(f"creating racks: {_first_error(errors)}")
        self.watch = TaskWatch(self.watch_api or self.api)
        await self.watch.start()
        # A task that is cancelled at once: the object the floor's PATCH and GET use.
        await self._create_task(o.task(SPARE_TASK, SPARE_RACK, "spare", cancel=True))
        await self.tw.wait_for([SPARE_TASK], TERMINAL, 60, "spare task")

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
            await self.custom.get_namespaced_custom_object(
                o.GROUP, o.VERSION, o.NAMESPACE, "nicotasks", SPARE_TASK
            )
            if i >= FLOOR_WARMUP:
                get_s.append(time.perf_counter() - t)

        temporal = await Client.connect(
            self.benv.temporal_address, namespace=self.benv.temporal_namespace
        )
        queue = f"bench-floor-{uuid.uuid4().hex[:8]}"  # no worker polls it
        handles = [
            await temporal.start_workflow(
                "BenchFloorNoop", id=f"{queue}-{i}", task_queue=queue
            )
            for i in range(FLOOR_WARMUP + FLOOR_SAMPLES)
        ]
        term_s: list[float] = []
        for i, handle in enumerate(handles):
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
        self, phase: str, first_rack: int, count: int, concurrency: int = 20
    ) -> tuple[list[str], dict[str, float], list[BaseException]]:
        names = [o.task_name(phase, i) for i in range(count)]
        sent: dict[str, float] = {}

        async def create(i: int) -> None:
            sent[names[i]] = time.monotonic()
            await self._create_task(o.task(names[i], o.rack_name(first_rack + i), phase))

        errors = await bounded(range(count), create, concurrency, f"{phase}: create")
        return names, sent, errors

    async def start(self) -> tuple[dict[str, Any], list[str]]:
        """Create N tasks (20 in flight) and time each from its create to Running seen."""
        n = self.tasks
        progress(f"start: creating {n} tasks, each on its own rack (Sleep {o.SLEEP_SECONDS:.0f}s)")
        names, sent, errors = await self._start_tasks("start", 0, n)
        if errors:
            self.errors.append(f"start: create: {_first_error(errors)}")
        timeout = 120 + n * 0.6
        await self.tw.wait_for(
            names, ("Running", *TERMINAL), timeout, "start: Running", _report_wait
        )
        running = [nm for nm in names if self.tw.seen_at(nm, "Running") is not None]
        if len(running) < n:
            self.errors.append(f"start: {len(running)} of {n} Running within {timeout:.0f}s")
        lat = [self.tw.seen_at(nm, "Running") - sent[nm] for nm in running]  # type: ignore[operator]
        total = None
        if running and sent:
            last = max(self.tw.seen_at(nm, "Running") or 0.0 for nm in running)
            total = round(last - min(sent.values()), 3)
        result = {
            "tasks": n,
            "running": len(running),
            "total_s": total,
            "tasks_per_s": rate(len(running), total),
            "latency_ms": summarize(lat, 1000),
            "create_concurrency": 20,
        }
        progress(f"start: {len(running)}/{n} Running in {total}s")
        return result, running

    def _outcomes(self, names: list[str]) -> dict[str, int]:
        """How many of `names` ended in each terminal status (first seen), or none yet."""
        out: Counter[str] = Counter()
        for nm in names:
            msg = self.tw.messages.get(nm)
            out[msg.split(":", 1)[0] if msg else "not finished"] += 1
        return dict(out)

    # ---- cancel by patch -------------------------------------------------

    async def cancel(
        self, running: list[str], floor_ms: float | None, idle_floor_ms: float | None = None
    ) -> dict[str, Any]:
        """Patch spec.cancel=true on every Running task (20 in flight); time patch -> Terminated."""
        n = len(running)
        progress(f"cancel: patching spec.cancel=true on {n} Running tasks")
        sent: dict[str, float] = {}

        async def patch(name: str) -> None:
            sent[name] = time.monotonic()
            await self._patch_task(name, {"spec": {"cancel": True}})

        errors = await bounded(running, patch, 20, "cancel: patch")
        if errors:
            self.errors.append(f"cancel: patch: {_first_error(errors)}")
        timeout = 60 + n * 0.3
        await self.tw.wait_for(running, TERMINAL, timeout, "cancel: Terminated", _report_wait)
        done = [nm for nm in running if self.tw.seen_at(nm, "Terminated") is not None]
        done_set = set(done)
        other = [
            nm for nm in running
            if nm not in done_set and any(self.tw.seen_at(nm, s) for s in TERMINAL)
        ]
        if len(done) < n:
            example = self.tw.messages.get(other[0]) if other else "-"
            self.errors.append(
                f"cancel: {len(done)} of {n} Terminated within {timeout:.0f}s"
                f" ({len(other)} ended otherwise, e.g. {example})"
            )
        lat = [self.tw.seen_at(nm, "Terminated") - sent[nm] for nm in done]  # type: ignore[operator]
        wall = None
        if done and sent:
            last = max(self.tw.seen_at(nm, "Terminated") or 0.0 for nm in done)
            wall = round(last - min(sent.values()), 3)
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
            "patch_concurrency": 20,
            "outcomes": self._outcomes(running),
            "other_outcome_samples": sorted({self.tw.messages[nm] for nm in other})[:5],
        }
        progress(f"cancel: {len(done)}/{n} Terminated, p50 {summary['p50']} ms, wall {wall}s")
        return result

    # ---- shim ------------------------------------------------------------

    async def shim(self) -> dict[str, Any]:
        """K fresh Running tasks cancelled through the REST shim, then K repeated cancels."""
        k = self.shim_cancels
        progress(f"shim: creating {k} tasks on free racks")
        names, _, errors = await self._start_tasks("shim", self.tasks, k)
        if errors:
            self.errors.append(f"shim: create: {_first_error(errors)}")
        timeout = 120 + k * 0.6
        await self.tw.wait_for(
            names, ("Running", *TERMINAL), timeout, "shim: Running", _report_wait
        )
        running = [nm for nm in names if self.tw.seen_at(nm, "Running") is not None]
        if len(running) < k:
            self.errors.append(f"shim: {len(running)} of {k} Running within {timeout:.0f}s")
        token = issue_token(
            key_dir=self.benv.run_dir, org=o.ORG, roles=["PROVIDER_ADMIN"], subject="bench"
        )
        concurrency = 10
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(
            base_url=self.benv.shim_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30.0,
            limits=limits,
        ) as http:
            # Warm up the connection pool and the shim (token keys, index) with GETs.
            for nm in running[:concurrency]:
                await http.get(
                    f"/v2/org/{o.ORG}/nico/task/{self.tw.uids[nm]}", params={"siteId": o.SITE_ID}
                )
            raw = summarize(await self._time_patches(), 1000)
            progress(
                f"shim: raw PATCH p50 {raw['p50']} ms; {len(running)} fresh cancels"
                f" ({concurrency} in flight)"
            )
            sent: dict[str, float] = {}
            fresh = await self._shim_cancels(http, running, concurrency, sent)
            await self.tw.wait_for(
                running, TERMINAL, 60 + k * 0.3, "shim: Terminated", _report_wait
            )
            terminated = [nm for nm in running if self.tw.seen_at(nm, "Terminated") is not None]
            if len(terminated) < len(running):
                self.errors.append(f"shim: {len(terminated)} of {len(running)} Terminated")
            to_term = [
                self.tw.seen_at(nm, "Terminated") - sent[nm]  # type: ignore[operator]
                for nm in terminated
                if nm in sent
            ]
            progress(f"shim: {len(terminated)} repeated cancels of Terminated tasks")
            repeat = await self._shim_cancels(http, terminated, concurrency, {})
        for part in (fresh, repeat):
            part["p50_over_patch"] = ratio(part["latency_ms"]["p50"], raw["p50"])
            part["p99_over_patch"] = ratio(part["latency_ms"]["p99"], raw["p50"])
        return {
            "tasks": k,
            "running": len(running),
            "concurrency": concurrency,
            "fresh": fresh,
            "repeat": repeat,
            "outcomes": self._outcomes(running),
            "raw_patch": raw,
            "raw_patch_ms": raw["p50"],
            "floor_patch_ms": self.floor_patch_p50,
            "terminated_ms": summarize(to_term, 1000),
        }

    async def _shim_cancels(
        self,
        http: httpx.AsyncClient,
        names: list[str],
        concurrency: int,
        sent: dict[str, float],
    ) -> dict[str, Any]:
        lat: list[float] = []
        codes: Counter[str] = Counter()
        body_status: Counter[str] = Counter()
        failures: list[str] = []

        async def one(name: str) -> None:
            uid = self.tw.uids[name]
            t = time.monotonic()
            sent[name] = t
            try:
                resp = await http.post(
                    f"/v2/org/{o.ORG}/nico/task/{uid}/cancel", json={"siteId": o.SITE_ID}
                )
            except httpx.HTTPError as exc:
                codes["error"] += 1
                failures.append(f"{type(exc).__name__}: {exc}")
                return
            lat.append(time.monotonic() - t)
            codes[str(resp.status_code)] += 1
            if resp.status_code == 202:
                body_status[str(resp.json().get("status"))] += 1
            elif len(failures) < 3:
                failures.append(f"{resp.status_code}: {resp.text[:200]}")

        t0 = time.monotonic()
        await bounded(names, one, concurrency)
        wall = time.monotonic() - t0
        return {
            "requests": len(names),
            "wall_s": round(wall, 3),
            "requests_per_s": rate(len(names), wall),
            "latency_ms": summarize(lat, 1000),
            "status_codes": dict(codes),
            "response_status": dict(body_status),
            "failures": failures,
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
        custom: Any = self.custom
        await custom.patch_namespaced_custom_object_status(
            o.GROUP,
            o.VERSION,
            o.NAMESPACE,
            "nicotasks",
            name,
            {"status": {"status": "Terminated", "message": "Cancelled by user"}},
            _content_type="application/merge-patch+json",
        )

    async def rss(self) -> dict[str, Any]:
        """The operator's RSS with M more NicoTasks present, each a fresh operator process.

        Baseline: the operator restarted with the tasks of the earlier phases
        present. Then, with the operator stopped, M finished tasks are created
        (50 in flight; spec.cancel=true, the operator's finalizer, status
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
            "delta_mb": delta,
            "delta_mb_per_1000": (
                round(delta * 1000 / m, 2) if delta is not None and m else None
            ),
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
