"""Same-run comparison on one Temporal server: a burst of starts whose first workflow
task runs on a Python worker, per variant of the task queue's partitions and the
worker's pollers (investigation tool, not a test).

  .venv/bin/python hack/partition_probe.py --count 300 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

from bench.concurrency import bounded
from bench.env import BenchEnv, progress
from bench.rawtemporal import FirstTasks, FirstTaskWorkflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import PollerBehaviorAutoscaling, Worker


def pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p * len(xs)))], 3)


VARIANTS: dict[str, dict[str, Any]] = {
    # partitions of the queue (None: the server's default, 4), worker options
    "p4-default": {"partitions": None, "worker": {}},
    "p1-default": {"partitions": 1, "worker": {}},
    "p4-polls20": {"partitions": None, "worker": {"max_concurrent_workflow_task_polls": 20}},
    "p4-autoscale": {
        "partitions": None,
        "worker": {"workflow_task_poller_behavior": PollerBehaviorAutoscaling()},
    },
}


async def one(client: Client, queue: str, worker_kw: dict[str, Any], count: int) -> dict[str, Any]:
    counter = FirstTasks(want=count)
    handles: dict[int, Any] = {}

    async def start(i: int) -> None:
        handles[i] = await client.start_workflow(
            FirstTaskWorkflow.run,
            id=f"{queue}-{i}",
            task_queue=queue,
            execution_timeout=timedelta(hours=1),
        )

    worker = Worker(
        client,
        task_queue=queue,
        workflows=[FirstTaskWorkflow],
        activities=[counter.done],
        **worker_kw,
    )
    async with worker:
        await asyncio.sleep(2)  # pollers up
        t0 = time.monotonic()
        await bounded(range(count), start, 20, f"{queue}: start", t0 + 300)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(counter.all_seen.wait(), 300)
        wall = time.monotonic() - t0
    sts: list[float] = []
    for i in sorted(handles):
        h = await handles[i].fetch_history()
        sched = None
        for e in h.events:
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED and sched is None:
                sched = e.event_time.ToDatetime().timestamp()
            elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
                sts.append(e.event_time.ToDatetime().timestamp() - (sched or 0))
                break
    await bounded(sorted(handles), lambda i: handles[i].terminate(reason="probe"), 20)
    return {
        "first_tasks": counter.seen,
        "wall_s": round(wall, 2),
        "per_s": round(counter.seen / wall, 1),
        "first_wft_sts_p50": pct(sts, 0.5),
        "p90": pct(sts, 0.9),
        "max": pct(sts, 1.0),
        "mean": round(statistics.mean(sts), 3) if sts else None,
    }


async def probe(benv: BenchEnv, count: int, rounds: int, names: list[str]) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    queues = {n: f"probe-{n}-{tag}" for n in names}
    dyn = benv.run_dir / "temporal-server" / "dynamicconfig.yaml"
    cfg = yaml.safe_load(dyn.read_text()) or {}
    for n in names:
        parts = VARIANTS[n]["partitions"]
        if parts is None:
            continue
        for key in ("matching.numTaskqueueReadPartitions", "matching.numTaskqueueWritePartitions"):
            cfg.setdefault(key, []).append(
                {"value": parts, "constraints": {"taskQueueName": queues[n]}}
            )
    dyn.write_text(yaml.safe_dump(cfg))
    progress("dynamic config written; waiting 15 s for the server to read it")
    await asyncio.sleep(15)
    client = await Client.connect(benv.temporal_address, namespace=benv.temporal_namespace)
    out: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names:
            res = await one(client, queues[n], VARIANTS[n]["worker"], count)
            progress(f"round {r} {n}: {json.dumps(res)}")
            out[n].append(res)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--count", type=int, default=300)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--out", default="/tmp/partition-probe.json")
    a = p.parse_args()
    benv = BenchEnv.create(None, worker_activities=100, temporal_mode="server")
    try:
        benv.up()
        res = asyncio.run(probe(benv, a.count, a.rounds, a.variants.split(",")))
        Path(a.out).write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))
    finally:
        benv.down()


if __name__ == "__main__":
    main()
