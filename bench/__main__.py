"""`python -m bench` (`make bench`): figures of the operator and the shim, never pass/fail.

Starts a fresh local system (kube-apiserver + etcd, Temporal dev server,
sushy-tools, worker, operator with a 30 s reconcile, shim), measures, prints a
table, writes the same figures to bench/results/latest.json, and stops it all.

  --tasks N          tasks Running at once for the start and cancel figures (default 200)
  --rss-tasks M      NicoTasks present for the operator RSS figure (default 10000; 0 skips)
  --shim-cancels K   tasks cancelled through the REST shim (default 100)
  --run-dir DIR      run folder of the environment (default: a temporary folder)
  --quick            tasks 50, rss-tasks 1000, shim-cancels 30
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import traceback
from typing import Any

from .env import BenchEnv, progress
from .machine import machine_info
from .phases import Phases
from .report import LATEST, render_table, write_json

MAX_TASKS = 1000


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=None, help="N Running tasks (default 200, <= 1000)")
    p.add_argument("--rss-tasks", type=int, default=None, help="M NicoTasks (default 10000)")
    p.add_argument("--shim-cancels", type=int, default=None, help="K shim cancels (default 100)")
    p.add_argument("--run-dir", default=None, help="run folder (default: a temporary folder)")
    p.add_argument("--quick", action="store_true", help="tasks 50, rss-tasks 1000, shim 30")
    p.add_argument("--keep-run-dir", action="store_true", help="keep the temporary run folder")
    args = p.parse_args(argv)
    quick = args.quick
    if args.tasks is None:
        args.tasks = 50 if quick else 200
    if args.rss_tasks is None:
        args.rss_tasks = 1000 if quick else 10000
    if args.shim_cancels is None:
        args.shim_cancels = 30 if quick else 100
    if not 1 <= args.tasks <= MAX_TASKS:
        p.error(f"--tasks must be within 1..{MAX_TASKS}")
    if args.rss_tasks < 0 or args.shim_cancels < 0:
        p.error("--rss-tasks and --shim-cancels must be >= 0")
    return args


def _floor_line(label: str, floor: dict[str, Any]) -> None:
    progress(
        f"floor ({label}): patch p50 {floor['patch_ms']['p50']} ms + terminate p50 "
        f"{floor['terminate_ms']['p50']} ms = {floor['floor_ms']} ms"
    )


async def run_phases(ph: Phases, results: dict[str, Any]) -> None:
    await ph.open()
    try:
        await ph.setup()
        # The floor twice: on the idle system, and under the load the cancels run in.
        idle = await ph.floor("sequentially, on the idle system (before the start phase)")
        results["floor_idle"] = idle
        _floor_line("idle", idle)
        start, running = await ph.start()
        results["start"] = start
        floor = await ph.floor("sequentially, with the start phase's tasks Running")
        results["floor"] = floor
        ph.floor_patch_p50 = floor["patch_ms"]["p50"]
        _floor_line("loaded", floor)
        if running:
            results["cancel"] = await ph.cancel(running, floor["floor_ms"], idle["floor_ms"])
        if ph.shim_cancels:
            results["shim"] = await ph.shim()
        if ph.rss_tasks:
            results["rss"] = await ph.rss()
        else:
            results["rss"] = {"skipped": True}
    finally:
        await ph.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    params = {
        "tasks": args.tasks,
        "rss_tasks": args.rss_tasks,
        "shim_cancels": args.shim_cancels,
        "quick": args.quick,
    }
    results: dict[str, Any] = {"machine": machine_info(), "params": params}
    t0 = time.monotonic()
    benv = BenchEnv.create(args.run_dir, worker_activities=args.tasks + args.shim_cancels + 50)
    params["run_dir"] = str(benv.run_dir)
    ph = Phases(benv, args.tasks, args.rss_tasks, args.shim_cancels)
    rc = 0
    try:
        benv.up()
        results["machine"]["loadavg_start"] = machine_info()["loadavg"]
        asyncio.run(run_phases(ph, results))
    except KeyboardInterrupt:
        ph.errors.append("interrupted")
        rc = 130
    except Exception as exc:
        traceback.print_exc()
        ph.errors.append(f"{type(exc).__name__}: {exc}"[:500])
        rc = 1
    finally:
        results["machine"]["loadavg_end"] = machine_info()["loadavg"]
        progress("stopping the environment")
        try:
            benv.down(keep_dir=args.keep_run_dir or rc != 0)
        except Exception as exc:
            ph.errors.append(f"stopping the environment: {exc}"[:500])
    results["runtime_s"] = round(time.monotonic() - t0, 1)
    results["errors"] = ph.errors
    path = write_json(results)
    print(render_table(results))
    print(f"figures written to {path.relative_to(LATEST.parents[2])}")
    if rc != 0 and benv.owned_dir:
        print(f"run folder kept for its logs: {benv.run_dir}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
