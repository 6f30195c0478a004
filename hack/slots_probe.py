"""Same-run comparison: the bench's graceful phase, once per worker setting of workflow
task slots (NICOTASK_WORKER_MAX_CONCURRENT_WORKFLOWS), the worker restarted between
rounds, each round on racks of its own (investigation tool, not a test).

  .venv/bin/python hack/slots_probe.py --temporal server --slots 200,20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bench import graceful as g
from bench import objects as o
from bench.env import BenchEnv, progress
from bench.phases import Phases, Settings
from nicotask_dev.devenv import system

COUNT = 200
START = False  # --phase start: the start burst instead of the graceful stops


async def timeouts(tc: Client, uids: list[str]) -> dict[str, int]:
    out = {"wft_timed_out": 0, "wft_completed": 0}
    for uid in uids:
        async for e in tc.get_workflow_handle(uid).fetch_history_events():
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
                out["wft_timed_out"] += 1
            elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                out["wft_completed"] += 1
    return out


async def probe(ph: Phases, benv: BenchEnv, slots: list[int]) -> list[dict[str, Any]]:
    await ph.open()
    await ph.setup()
    tc = await Client.connect(benv.temporal_address, namespace=benv.temporal_namespace)
    orig_task, orig_rack = o.task_name, o.rack_name
    results = []
    for r, n in enumerate(slots):
        benv.env.stop_process("worker")
        system.start_worker(
            benv.env,
            NICOTASK_WORKER_MAX_CONCURRENT_ACTIVITIES=str(benv.worker_activities),
            NICOTASK_WORKER_MAX_CONCURRENT_WORKFLOWS=str(n),
        )
        o.task_name = lambda phase, i, r=r: orig_task(f"{phase}{r}", i)  # type: ignore[misc]
        o.rack_name = lambda i, r=r: orig_rack(i + r * COUNT)  # type: ignore[misc]
        progress(f"round {r}: worker workflow task slots {n}")
        if START:
            res, running, _ = await ph.start()
            names = [o.task_name("start", i) for i in range(COUNT)]
            await ph.cancel(running, None)
        else:
            res = await g.graceful(ph, COUNT)
            names = [o.task_name("graceful", i) for i in range(COUNT)]
        uids = [ph.tw.uids[nm] for nm in names if nm in ph.tw.uids]
        res["slots"] = n
        res.update(await timeouts(tc, uids))
        progress(f"round {r}: {json.dumps(res)}")
        results.append(res)
    await ph.close()
    return results


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--temporal", default="server")
    p.add_argument("--slots", default="200,20")
    p.add_argument("--out", default="/tmp/slots-probe.json")
    p.add_argument("--phase", default="graceful", choices=("graceful", "start"))
    a = p.parse_args()
    global START
    START = a.phase == "start"
    slots = [int(x) for x in a.slots.split(",")]

    class Cfg(Settings):
        @property
        def racks(self) -> int:  # racks of their own for each round
            return COUNT * len(slots)

    cfg = Cfg(tasks=COUNT, phases=("start", "cancel", "graceful"))
    benv = BenchEnv.create(None, worker_activities=COUNT + 50, temporal_mode=a.temporal)
    ph = Phases(benv, cfg)
    try:
        benv.up()
        res = asyncio.run(probe(ph, benv, slots))
        Path(a.out).write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))
    finally:
        benv.down(keep_dir=True)
        print(f"run dir {benv.run_dir}")


if __name__ == "__main__":
    main()
