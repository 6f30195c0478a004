"""`python -m soak` (`make soak`): the fault soak.

Starts the local system (kube-apiserver + etcd, Temporal dev server, sushy-tools
behind a BMC fault proxy, worker, two operator replicas with kopf peering,
shim) in a temporary run folder, creates a mixed load over many racks, and for
--seconds cancels a random share of the tasks through every path while a fault
injector strikes; then lets everything finish and checks the invariants from
the API server, Temporal and the BMC request log. Exits 1 on any violation.

  --tasks N      tasks (default 1000)
  --seconds S    time of cancels and faults (default 600)
  --seed N       random seed (default: random, printed)
  --out PATH     the JSON report (default soak/results/latest.json; a .txt next to it)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.env import progress
from kubernetes_asyncio import config
from temporalio.client import Client

from nicotask import api
from nicotask.kube import Kube

from . import objects as o
from .bmcproxy import FaultProxy
from .check import INVARIANTS, Checker, percentile, recovery, running_workflows, temporal_records
from .env import SoakEnv
from .faults import KINDS, Injector
from .load import PATHS, Load
from .report import render, total_violations
from .watch import SoakWatch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "soak" / "results" / "latest.json"
TERMINAL = ("Succeeded", "Failed", "Terminated")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--cancel-share", type=float, default=0.35)
    p.add_argument("--redfish-racks", type=int, default=4)
    p.add_argument(
        "--drain-seconds",
        type=float,
        default=300.0,
        help="after the faults, how long tasks may take to finish (300)",
    )
    p.add_argument("--run-dir", default=None)
    p.add_argument("--keep-run-dir", action="store_true")
    args = p.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 2**31)
    if args.tasks < 10 or args.seconds < 20:
        p.error("--tasks >= 10 and --seconds >= 20")
    return args


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


async def soak(args: argparse.Namespace, senv: SoakEnv) -> dict[str, Any]:
    rng = random.Random(args.seed)
    commit = _commit()  # the code under test: read before anything can change the tree
    errors: list[str] = []
    # Restarts block a thread while they wait for readiness: six tracks, the supervisor
    # and the takeover reads must never queue behind each other in a small default pool.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=32))
    proxy = FaultProxy(senv.redfish_url, random.Random(rng.random()))
    await proxy.start()
    api_client = await config.new_client_from_config(config_file=senv.kubeconfig)
    watch_client = await config.new_client_from_config(config_file=senv.kubeconfig)
    kube = Kube(api_client)
    watch = SoakWatch(watch_client, namespace=o.NAMESPACE)
    temporal = await Client.connect(senv.temporal_address, namespace=senv.temporal_namespace)
    load = Load(senv, kube, watch, random.Random(rng.random()), proxy.url)
    # Rules scale with the run: a short soak has short tasks (they still queue).
    scale = min(1.0, max(0.3, args.seconds / 600.0))
    await load.setup(args.tasks, scale, args.redfish_racks)
    await watch.start()
    t0, t0_wall = time.monotonic(), time.time()
    until = t0 + args.seconds
    injector = Injector(senv, proxy, random.Random(rng.random()), until)
    progress(
        f"soak: seed {args.seed}; {args.tasks} tasks over {0.7 * args.seconds:.0f} s, "
        f"faults and cancels for {args.seconds:.0f} s"
    )
    inj_task = asyncio.create_task(injector.run())
    supervising = asyncio.Event()
    sup_task = asyncio.create_task(injector.supervise(supervising))

    async def status_line() -> None:
        while True:
            await asyncio.sleep(15)
            c = Counter(watch.current.values())
            progress(
                f"+{time.monotonic() - t0:.0f}s tasks {dict(c)}; faults "
                f"{len(injector.faults)}; cancels accepted "
                f"{sum(1 for x in load.cancels if x.accepted)}/{len(load.cancels)}"
            )

    status_task = asyncio.create_task(status_line())
    await load.run(args.tasks, 0.7 * args.seconds, args.cancel_share, until - 5)
    try:
        await asyncio.wait_for(inj_task, timeout=args.seconds + 300)
    except TimeoutError:
        errors.append("fault injector did not stop in time")
    progress("faults over; the cancels in flight finish, then every task")
    await load.drain(timeout=120)
    deleted = {c.task for c in load.cancels if c.path == "delete" and c.accepted}
    names = [n for n in load.created if n not in deleted]
    done = await watch.wait_for(
        names,
        TERMINAL,
        args.drain_seconds,
        "drain",
        report=lambda lbl, d, n: progress(f"{lbl}: {d}/{n} finished"),
    )
    if done < len(names):
        progress(f"drain: {done}/{len(names)} finished (deleted ones never finish)")
    # The racks: a one-second task on some of them (every Redfish rack) must run.
    sample = sorted(load.redfish_racks) + rng.sample(
        load.sleep_racks, min(20, len(load.sleep_racks))
    )
    probes = await load.probe_racks(sample, timeout=120)
    status_task.cancel()
    supervising.set()
    await asyncio.wait_for(sup_task, timeout=300)
    # ---- the witnesses -------------------------------------------------------
    final_list = await kube.list_objects(api.TASKS, o.NAMESPACE)
    final = {obj["metadata"]["name"]: obj for obj in final_list}
    uids = sorted(set(watch.uids.values()))
    progress(f"reading {len(uids)} workflows from Temporal")
    trecs = await temporal_records(temporal, uids)
    running = await running_workflows(temporal)
    await watch.stop()
    await proxy.stop()
    checker = Checker(
        t0=t0,
        t0_wall=t0_wall,
        watch=watch,
        final=final,
        trecs=trecs,
        running=running,
        bmc_log=proxy.log,
        redfish_racks=load.redfish_racks,
        task_rack=load.task_rack,
        cancels=load.cancels,
        faults=injector.faults,
        shim_answers=load.shim_answers,
        probes=probes,
    )
    violations = checker.run()
    rec = recovery(watch, load.cancels, injector.faults)
    await api_client.close()
    await watch_client.close()
    injector.takeovers()
    takeovers = [f.takeover_s for f in injector.faults if f.takeover_s is not None]
    standby = Counter(f.standby for f in injector.faults if f.kind == "stop_operator")
    by_kind = {k: {"count": 0, "errors": 0} for k in KINDS}
    for f in injector.faults:
        by_kind[f.kind]["count"] += 1
        by_kind[f.kind]["errors"] += bool(f.error)
    by_path = {p: {"planned": 0, "accepted": 0, "live": 0} for p in PATHS}
    for c in load.cancels:
        row = by_path[c.path]
        row["planned"] += 1
        row["accepted"] += c.accepted is not None
        row["live"] += c.accepted is not None and c.status_at_accept not in TERMINAL
    outcomes = Counter(
        (obj.get("status") or {}).get("status") or "none"
        for name, obj in final.items()
        if not name.startswith("probe-")
    )
    outcomes["deleted"] = len(deleted)
    shim_codes = Counter(str(a.status) for a in load.shim_answers)
    errors += load.create_errors[:20]
    errors += [f"{f.kind}: {f.error}" for f in injector.faults if f.error][:20]
    return {
        "params": {
            "seed": args.seed,
            "tasks": args.tasks,
            "seconds": args.seconds,
            "cancel_share": args.cancel_share,
            "redfish_racks": args.redfish_racks,
            "racks": len(load.sleep_racks) + len(load.redfish_racks),
        },
        "commit": commit,
        "t0_wall": t0_wall,
        "faults": {
            "by_kind": by_kind,
            "takeover_s": {
                "n": len(takeovers),
                "p50_s": percentile(takeovers, 0.5),
                "max_s": percentile(takeovers, 1.0),
                "standby": dict(standby),
            },
            "list": [f.to_json(t0) for f in injector.faults],
        },
        "cancels": {
            "by_path": by_path,
            "shim_codes": dict(shim_codes),
            "list": [c.to_json(t0) for c in load.cancels],
        },
        "outcomes": dict(sorted(outcomes.items())),
        "created": len(load.created),
        "bmc_requests": len(proxy.log),
        "bmc_power_changes": sum(r.power_change for r in proxy.log),
        "watch": {"events": watch.events, "restarts": watch.restarts},
        "invariants": {
            k: {"count": len(violations[k]), "violations": violations[k][:50]} for k in INVARIANTS
        },
        "recovery": rec,
        "crashes": injector.crashes,
        "start_failures": injector.start_failures,
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    print(f"soak seed: {args.seed}", flush=True)
    t_start = time.monotonic()
    senv = SoakEnv.create(args.run_dir, worker_activities=1000)
    assert isinstance(senv, SoakEnv)
    report: dict[str, Any] | None = None
    try:
        senv.up()
        report = asyncio.run(soak(args, senv))
    finally:
        progress("stopping the environment")
        try:
            senv.stop_all_now()
        finally:
            senv.down(
                keep_dir=args.keep_run_dir
                or report is None
                or (report is not None and total_violations(report) > 0)
            )
    report["wall_s"] = round(time.monotonic() - t_start, 1)
    report["run_dir"] = str(senv.run_dir)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    text = render(report)
    out.with_suffix(".txt").write_text(text + "\n")
    print(text, flush=True)
    print(f"report: {out} (+ .txt)", flush=True)
    return 1 if total_violations(report) or report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
