"""The `graceful` phase: graceful stops next to the burst's hard ones.

Runs after the burst cancel (and `plugin-cancel`), on racks they freed: G tasks
(min(N, 200)) of the rule `bench-graceful`: stage 1 sleeps GRACEFUL_STAGE_S,
stage 2 sleeps an hour, and its cleanup one Sleep of CLEANUP_S on every
component. Each is stopped with `spec.cancel: true, cancelMode: Graceful` as
soon as the bench's watch sees it Running (its first stage running), 20
patches in flight: the running stage finishes, stage 2 is skipped, the cleanup
runs, and the task ends Terminated. A task whose stop reaches its workflow
only after stage 1 ended (the patch, the operator or Temporal too slow for the
10 s stage) runs stage 2, its hour, by design: its report shows stage 2
running, and it is counted as `late`, not waited for and not measured. A Sleep
sends no BMC request, so the time is measured up to the task's end as the
bench's watch sees it:

- `latency_ms`: patch sent -> Terminated seen; it includes what was left of the
  running stage, by design (up to GRACEFUL_STAGE_S);
- `after_stage_ms`: the running stage's end (its `finishedAt` in the final
  report) -> Terminated seen: what a graceful stop adds once the stage is done
  (skip the rest, run the cleanup, publish, the operator's write), to compare
  with the burst's hard `cancel.latency_ms` (patch -> Terminated);
- `as_expected`: every task stopped in stage 1 should end Terminated with stage 2
  skipped and the cleanup completed;
- `late`: stopped tasks whose stage 2 started (stop too late to skip it), and
  `patch_after_running_ms`: Running seen -> patch sent, the bench's own part of
  the delay.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import TYPE_CHECKING, Any

from nicotask import api

from . import objects as o
from .concurrency import bounded
from .env import progress
from .measure import summarize
from .watch import TERMINAL, TaskWatch

if TYPE_CHECKING:
    from .phases import Phases

RULE_NAME = "bench-graceful"
RULE_ID = "7a11c0de-0000-4000-8000-00000000b0b1"
GRACEFUL_STAGE_S = 10.0
CLEANUP_S = 0.1
PATCH = {"spec": {"cancel": True, "cancelMode": "Graceful", "cancelReason": "bench"}}


def graceful_rule() -> dict[str, Any]:
    def sleep(stage: int, seconds: float) -> dict[str, Any]:
        return {
            "componentType": "Compute",
            "stage": stage,
            "timeoutSeconds": 7200,
            "retry": {"maxAttempts": 1},
            "action": {"type": "Sleep", "durationSeconds": seconds},
        }

    return api.RULE_RESOURCE.manifest(
        RULE_NAME,
        {
            "ruleId": RULE_ID,
            "operation": "PowerOn",
            "workflowTimeoutSeconds": 7200,
            "steps": [sleep(1, GRACEFUL_STAGE_S), sleep(2, 3600)],
            "cleanup": [{**sleep(1, CLEANUP_S), "targets": "All"}],
        },
    )


def _stage_end(obj: dict[str, Any] | None) -> float | None:
    """The wall-clock end of stage 1 in the task's final report (epoch seconds)."""
    stages = (((obj or {}).get("status") or {}).get("report") or {}).get("stages") or []
    end = stages[0].get("finishedAt") if stages else None
    if not end:
        return None
    return dt.datetime.fromisoformat(str(end).replace("Z", "+00:00")).timestamp()


def _as_expected(obj: dict[str, Any] | None) -> bool:
    status = (obj or {}).get("status") or {}
    stages = [s.get("status") for s in (status.get("report") or {}).get("stages") or []]
    return status.get("status") == "Terminated" and stages == ["completed", "skipped", "completed"]


async def graceful(ph: Phases, count: int) -> dict[str, Any]:
    from .phases import _first_error

    await ph._create(api.RULES, graceful_rule())
    timeout = ph.cfg.extra_timeout(count)
    progress(f"graceful: starting {count} tasks on the burst's racks, at most {timeout:.0f}s")
    deadline = time.monotonic() + timeout
    names = [o.task_name("graceful", i) for i in range(count)]

    async def create(i: int) -> None:
        body = o.task(names[i], o.rack_name(i), "graceful", rule_id=RULE_ID)
        await ph._create_task(body)

    sent: dict[str, float] = {}
    sent_wall: dict[str, float] = {}
    gate = asyncio.Semaphore(ph.cfg.concurrency)
    failures: list[BaseException] = []

    async def stop(name: str) -> None:
        async with gate:
            sent[name], sent_wall[name] = time.monotonic(), time.time()
            try:
                await ph._patch_task(name, PATCH)
            except Exception as exc:
                failures.append(exc)

    async def stop_each_once_running() -> list[str]:
        """Patch each task as soon as the watch sees it Running, while the rest start."""
        stops: list[asyncio.Task[None]] = []
        while time.monotonic() < deadline:
            for name in names:
                if name not in sent and ph.tw.seen_at(name, "Running") is not None:
                    sent[name] = time.monotonic()  # claimed; stop() stamps it again
                    stops.append(asyncio.create_task(stop(name)))
            if len(sent) == len(names):
                break
            await asyncio.sleep(0.05)
        await asyncio.gather(*stops)
        return [nm for nm in names if nm in sent]

    stopper = asyncio.create_task(stop_each_once_running())
    errors = await bounded(range(count), create, ph.cfg.concurrency, "graceful: create", deadline)
    if errors:
        ph.errors.append(f"graceful: create: {_first_error(errors)}")
    running = await stopper
    progress(f"graceful: {len(running)} tasks stopped gracefully once Running")
    if failures:
        ph.errors.append(f"graceful: patch: {_first_error(failures)}")
    budget = ph.cfg.burst_timeout() + GRACEFUL_STAGE_S
    await wait_settled(ph.tw, running, budget)
    late = [nm for nm in running if is_late(ph.tw, nm)]
    in_stage = [nm for nm in running if nm not in late]
    progress(f"graceful: {len(late)} stopped only after stage 1 (stage 2 running): late")
    # The watch's monotonic times, put on the wall clock the reports' times use.
    offset = time.time() - time.monotonic()
    latency, after_stage, expected = [], [], 0
    patch_lag = [
        sent[nm] - seen for nm in running if (seen := ph.tw.seen_at(nm, "Running")) is not None
    ]
    for name in in_stage:
        seen = ph.tw.seen_at(name, "Terminated")
        if seen is None or name not in sent:
            continue
        latency.append(seen - sent[name])
        final = await ph.custom.get_namespaced_custom_object(
            api.GROUP, api.VERSION, o.NAMESPACE, api.TASKS, name
        )
        expected += _as_expected(final)
        end = _stage_end(final)
        if end is not None:
            after_stage.append(seen + offset - max(end, sent_wall[name]))
    if len(latency) < len(in_stage):
        ph.errors.append(
            f"graceful: {len(latency)} of {len(in_stage)} stopped in stage 1 Terminated"
        )
    result = {
        "tasks": count,
        "running": len(running),
        "late": len(late),
        "in_stage": len(in_stage),
        "terminated": len(latency),
        "as_expected": expected,
        "stage_s": GRACEFUL_STAGE_S,
        "latency_ms": summarize(latency, 1000),
        "after_stage_ms": summarize(after_stage, 1000),
        "patch_after_running_ms": summarize(patch_lag, 1000),
    }
    progress(
        f"graceful: {len(latency)} of {len(in_stage)} Terminated ({expected} as expected),"
        f" {len(late)} late; after the stage p50 {result['after_stage_ms']['p50']} ms"
    )
    return result


def is_late(tw: TaskWatch, name: str) -> bool:
    """Its stage 2 started: the stop reached the workflow after stage 1, too late to skip
    stage 2 (a stop in stage 1 leaves it skipped, never running)."""
    return tw.stage_running_at(name, 2) is not None and tw.current.get(name) not in TERMINAL


def unsettled(tw: TaskWatch, names: list[str]) -> list[str]:
    """The stopped tasks neither finished nor late."""
    return [
        nm
        for nm in names
        if not any(tw.seen_at(nm, s) is not None for s in TERMINAL) and not is_late(tw, nm)
    ]


async def wait_settled(tw: TaskWatch, names: list[str], timeout: float) -> None:
    """Until every stopped task finished or is late (no use waiting out stage 2's hour)."""
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    while (left := unsettled(tw, names)) and time.monotonic() < deadline:
        if time.monotonic() - last >= 5:
            progress(
                f"graceful: Terminated: {tw.count(names, ['Terminated'])}/{len(names)},"
                f" late {sum(is_late(tw, nm) for nm in names)}, waiting for {len(left)}"
            )
            last = time.monotonic()
        await asyncio.sleep(0.05)
