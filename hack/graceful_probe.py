"""Probe the bench's graceful phase on one Temporal: run it, then read each task's
workflow history and say where the time went (investigation tool, not a test).

  .venv/bin/python hack/graceful_probe.py --temporal server --tasks 200 [--preload N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import objects as o
from bench.env import BenchEnv, progress
from bench.graceful import graceful
from bench.phases import Phases, Settings
from temporalio.api.enums.v1 import EventType, TaskQueueKind
from temporalio.client import Client

from nicotask import api


def pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p * len(xs)))], 3)


def summary(xs: list[float]) -> dict[str, Any]:
    return {
        "n": len(xs),
        "p50": pct(xs, 0.5),
        "p90": pct(xs, 0.9),
        "max": round(max(xs), 3) if xs else None,
        "mean": round(statistics.mean(xs), 3) if xs else None,
    }


async def history_facts(tc: Client, wid: str) -> dict[str, Any]:
    h = await tc.get_workflow_handle(wid).fetch_history()
    ev = list(h.events)
    t = lambda e: e.event_time.ToDatetime().timestamp()  # noqa: E731
    facts: dict[str, Any] = {"wft": [], "timers": []}
    sched: dict[int, tuple[float, int]] = {}
    started: dict[int, float] = {}
    for e in ev:
        et = e.event_type
        if et == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            facts["start"] = t(e)
        elif et == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
            kind = e.workflow_task_scheduled_event_attributes.task_queue.kind
            sched[e.event_id] = (t(e), kind)
        elif et == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            a = e.workflow_task_started_event_attributes
            s, kind = sched[a.scheduled_event_id]
            started[e.event_id] = t(e)
            facts["wft"].append(
                {
                    "sched": s,
                    "sts": t(e) - s,
                    "sticky": kind == TaskQueueKind.TASK_QUEUE_KIND_STICKY,
                }
            )
        elif et == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            a = e.workflow_task_completed_event_attributes
            facts["wft"][-1]["stc"] = t(e) - started[a.started_event_id]
        elif et == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
            facts.setdefault("wft_timeouts", 0)
            facts["wft_timeouts"] += 1
        elif et == EventType.EVENT_TYPE_TIMER_STARTED:
            a = e.timer_started_event_attributes
            facts["timers"].append(
                {"start": t(e), "secs": a.start_to_fire_timeout.ToTimedelta().total_seconds()}
            )
        elif et == EventType.EVENT_TYPE_TIMER_FIRED:
            facts.setdefault("fired", []).append(t(e))
        elif et == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED:
            facts["cancel_requested"] = t(e)
        elif et in (
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
        ):
            facts["closed"] = t(e)
            facts["close_type"] = EventType.Name(et)
    return facts


def describe_queue(tbin: str, address: str, namespace: str, queue: str) -> str:
    out = []
    for args in (
        ["task-queue", "describe", "--task-queue", queue],
        [
            "task-queue",
            "describe",
            "--task-queue",
            queue,
            "--legacy-mode",
            "--partitions-legacy",
            "4",
        ],
    ):
        p = subprocess.run(
            [tbin, *args, "--address", address, "--namespace", namespace],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        out.append(" ".join(args) + "\n" + p.stdout + p.stderr)
    return "\n".join(out)


async def probe(ph: Phases, benv: BenchEnv, count: int, out: Path) -> None:
    await ph.open()
    await ph.setup()
    t0 = time.time()
    res = await graceful(ph, count)
    progress(f"graceful result: {json.dumps(res)}")
    tc = await Client.connect(benv.temporal_address, namespace=benv.temporal_namespace)
    offset = time.time() - time.monotonic()
    rows = []
    for i in range(count):
        name = o.task_name("graceful", i)
        obj = await ph.custom.get_namespaced_custom_object(
            api.GROUP, api.VERSION, o.NAMESPACE, api.TASKS, name
        )
        uid = obj["metadata"]["uid"]
        st = obj.get("status") or {}
        row: dict[str, Any] = {"name": name, "status": st.get("status")}
        try:
            row.update(await history_facts(tc, uid))
        except Exception as exc:
            row["history_error"] = repr(exc)
        running = ph.tw.seen_at(name, "Running")
        term = ph.tw.seen_at(name, "Terminated")
        row["running_seen"] = running + offset if running else None
        row["terminated_seen"] = term + offset if term else None
        row["cancel_requested_at"] = st.get("cancelRequestedAt")
        rows.append(row)
    (out / "rows.json").write_text(json.dumps(rows, indent=1, default=str))
    # Where the time went.
    in_stage, late = [], []
    for r in rows:
        timers = r.get("timers") or []
        if "cancel_requested" not in r:
            continue
        # Stage 2's hour timer started: the stop came after stage 1.
        (late if any(t["secs"] == 3600 for t in timers) else in_stage).append(r)
    report: dict[str, Any] = {
        "tasks": count,
        "t0": t0,
        "bench": res,
        "cancel_requested_in_stage1": len(in_stage),
        "cancel_requested_after_stage1": len(late),
        "no_cancel_requested": sum(1 for r in rows if "cancel_requested" not in r),
        "statuses": {
            s: sum(1 for r in rows if r["status"] == s) for s in {r["status"] for r in rows}
        },
    }

    def lat(rows_: list[dict[str, Any]], f: Any) -> dict[str, Any]:
        xs = []
        for r in rows_:
            try:
                v = f(r)
            except (KeyError, IndexError, TypeError):
                continue
            if v is not None:
                xs.append(v)
        return summary(xs)

    report["running_seen->cancel_requested"] = lat(
        rows, lambda r: r["cancel_requested"] - r["running_seen"]
    )
    report["wf_start->running_seen"] = lat(rows, lambda r: r["running_seen"] - r["start"])
    report["stage1_timer_start-wf_start"] = lat(
        rows, lambda r: r["timers"][0]["start"] - r["start"]
    )
    report["stage1_fired->closed"] = lat(in_stage, lambda r: r["closed"] - r["fired"][0])
    report["closed->terminated_seen"] = lat(in_stage, lambda r: r["terminated_seen"] - r["closed"])
    report["stage1_fired->terminated_seen"] = lat(
        in_stage, lambda r: r["terminated_seen"] - r["fired"][0]
    )
    allw = [w for r in rows for w in r.get("wft", [])]
    report["wft_schedule_to_start_normal"] = summary([w["sts"] for w in allw if not w["sticky"]])
    report["wft_schedule_to_start_sticky"] = summary([w["sts"] for w in allw if w["sticky"]])
    report["wft_start_to_complete"] = summary([w["stc"] for w in allw if "stc" in w])
    report["wft_timeouts"] = sum(r.get("wft_timeouts", 0) for r in rows)
    report["first_wft_sts"] = lat(rows, lambda r: r["wft"][0]["sts"])
    tbin = str(Path(sys.executable).parent / "temporal")
    report["queue"] = describe_queue(
        tbin, benv.temporal_address, benv.temporal_namespace, "nicotask"
    )
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps({k: v for k, v in report.items() if k != "queue"}, indent=1, default=str))
    print(report["queue"])
    await ph.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--temporal", default="server")
    p.add_argument("--tasks", type=int, default=200)
    p.add_argument("--out", default="/tmp/graceful-probe")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = Settings(tasks=a.tasks, phases=("graceful",))
    benv = BenchEnv.create(None, worker_activities=cfg.racks + 50, temporal_mode=a.temporal)
    ph = Phases(benv, cfg)
    try:
        benv.up()
        asyncio.run(probe(ph, benv, a.tasks, out))
    finally:
        benv.down(keep_dir=True)
        print(f"run dir {benv.run_dir}")


if __name__ == "__main__":
    main()
