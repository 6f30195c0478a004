"""The shim's request path in process, two versions side by side (`python -m bench.shimroutes`).

What the routing layer costs a cancel, without Kubernetes, sockets or a second
process in the way: the app of this tree and the app of a git revision
(`--baseline`, default `main`: its `nicotask/shim` package, loaded from git as a
package of its own) are served the same watch-fed state (a provider, a site,
Running and Terminated tasks; the Kubernetes PATCH answered in process) through
httpx's ASGI transport, in alternating rounds in one process:

- repeated cancels: POSTs of Terminated tasks (202 from the cache, no API call),
  one at a time: p50 / p99 of each request, and the process's CPU per request
  (client included; on a shared machine the steadier figure);
- GETs of the same tasks, one at a time: the process's CPU per request;
- fresh cancels: one POST per Running task, `--concurrency` in flight:
  cancels/s (each is one PATCH, answered in process).

With `--http`, each version's app is served instead by uvicorn (uvloop,
httptools, as `nicotask shim`) in a process of its own, both at once, and
bench/shimload.py sends the cancels over loopback HTTP, 32 in flight, to one
then the other in alternating rounds: repeated cancels (10 per Terminated task)
and fresh cancels, requests/s and p50/p99 of each. The same machine load falls
on both versions, which the bench's HTTP phase (one version per run) cannot
promise on a shared machine.

It prints one JSON document: per version, the median over rounds of each
figure, and the figures of every round. Compare the two versions of one run,
not figures across runs or with the bench's HTTP phase (that one has sockets,
uvicorn and a real API server in it).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import importlib
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
import types
import uuid
from pathlib import Path
from typing import Any

import httpx

from nicotask import api
from nicotask_dev.shim.devissuer import issue_token
from nicotask_dev.shim.testing import dev_issuer_settings

REPO = Path(__file__).resolve().parents[1]
SHIM_DIR = "operator/nicotask/shim"
ORG = "acme"
SITE_ID = "660e8400-e29b-41d4-a716-446655440000"


def load_baseline(rev: str) -> types.ModuleType:
    """The shim package of `rev` as the package `nicotask_shim_baseline` (its `app` module)."""
    files = subprocess.run(
        ["git", "-C", str(REPO), "ls-tree", "--name-only", f"{rev}:{SHIM_DIR}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    folder = Path(tempfile.mkdtemp(prefix="shim-baseline-"))
    for name in files:
        if name.endswith(".py"):
            text = subprocess.run(
                ["git", "-C", str(REPO), "show", f"{rev}:{SHIM_DIR}/{name}"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            (folder / name).write_text(text)
    name = "nicotask_shim_baseline"
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return importlib.import_module(f"{name}.app")


def _obj(kind: str, name: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": kind,
        "metadata": {
            "name": name,
            "uid": str(uuid.uuid4()),
            "resourceVersion": "1",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            **meta,
        },
        "spec": spec,
    }


def task_object(status: str) -> dict[str, Any]:
    obj = _obj(
        "NicoTask",
        f"t-{uuid.uuid4().hex[:8]}",
        {
            "siteId": SITE_ID,
            "rackRef": "rack-1",
            "operation": "PowerOn",
            "description": "Power on rack components",
        },
        namespace="bench",
    )
    now = "2026-01-01T00:00:01.000000Z"
    obj["status"] = {
        "id": obj["metadata"]["uid"],
        "status": status,
        "message": status,
        "created": now,
        "updated": now,
        "started": now,
    }
    if status == "Terminated":
        obj["status"]["finished"] = now
    return obj


class InProcessStore:
    """The Kubernetes PATCH and GET, answered from a dict."""

    def __init__(self, objects: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.objects = objects

    async def get_task(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((namespace, name))

    async def patch_task(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(self.objects[(namespace, name)])
        meta = obj["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        meta.setdefault("annotations", {}).update(patch["metadata"]["annotations"])
        obj["spec"].update(patch["spec"])
        self.objects[(namespace, name)] = obj
        return obj


def build(app_module: types.ModuleType, key_dir: Path, tasks: list[dict[str, Any]]) -> Any:
    """The shim app of `app_module` with its state in place (no lifespan, no Kubernetes)."""
    pkg = sys.modules[app_module.__name__.rsplit(".", 1)[0]]
    cache = importlib.import_module(f"{pkg.__name__}.cache")
    service = importlib.import_module(f"{pkg.__name__}.service")
    settings = dev_issuer_settings(key_dir, miss_wait_seconds=0)
    app = app_module.create_app(settings)
    caches = cache.Caches(None, [], 0)
    caches.providers.informer.put(_obj("NicoProvider", ORG, {"org": ORG, "providerId": SITE_ID}))
    caches.sites.informer.put(_obj("NicoSite", SITE_ID, {"siteId": SITE_ID, "providerRef": ORG}))
    for obj in tasks:
        caches.tasks.informer.put(obj)
    for c in caches.all:
        c.informer.synced.set()
    store = InProcessStore({(t["metadata"]["namespace"], t["metadata"]["name"]): t for t in tasks})
    verifier = app_module.verifier_of(settings)
    svc = service.TaskService(store, caches.tasks, settings.cancel_attempts)
    app.state.shim = app_module.Shim(settings, verifier, store, caches, svc)
    return app


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


async def one_round(
    app: Any,
    token: str,
    terminated: list[str],
    running: list[str],
    repeats: int,
    concurrency: int,
) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {token}"}
    body = {"siteId": SITE_ID}
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shim") as http:
        url = f"/v2/org/{ORG}/nico/task/{{}}/cancel"
        for uid in terminated[:20]:  # warm: token cache, route matching
            assert (await http.post(url.format(uid), json=body, headers=headers)).status_code == 202
        latencies = []
        cpu0 = time.process_time()
        for i in range(repeats):
            uid = terminated[i % len(terminated)]
            t0 = time.perf_counter()
            r = await http.post(url.format(uid), json=body, headers=headers)
            latencies.append(time.perf_counter() - t0)
            assert r.status_code == 202, r.text
        repeat_cpu = time.process_time() - cpu0
        cpu0 = time.process_time()
        for i in range(repeats):
            uid = terminated[i % len(terminated)]
            r = await http.get(f"/v2/org/{ORG}/nico/task/{uid}", params=body, headers=headers)
            assert r.status_code == 200, r.text
        get_cpu = time.process_time() - cpu0
        queue = list(running)

        async def worker() -> None:
            while queue:
                uid = queue.pop()
                r = await http.post(url.format(uid), json=body, headers=headers)
                assert r.status_code == 202, r.text

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        fresh_s = time.perf_counter() - t0
    return {
        "repeat_p50_ms": _ms(latencies, 0.50),
        "repeat_p99_ms": _ms(latencies, 0.99),
        "repeat_cpu_us": round(1e6 * repeat_cpu / repeats, 1),
        "get_cpu_us": round(1e6 * get_cpu / repeats, 1),
        "fresh_per_s": round(len(running) / fresh_s, 1),
    }


def serve(args: argparse.Namespace) -> None:
    """`--serve`: this tree's app (or the baseline's) on 127.0.0.1:`--port`, state from
    `--tasks-file`, no lifespan (no Kubernetes)."""
    import uvicorn

    from nicotask.shim import app as current

    module = load_baseline(args.baseline) if args.serve == "baseline" else current
    tasks = json.loads(Path(args.tasks_file).read_text())
    app = build(module, Path(args.key_dir), tasks)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        lifespan="off",
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


def _start_server(
    label: str, port: int, key_dir: Path, tasks_file: Path, baseline: str
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.shimroutes",
            "--serve",
            label,
            "--port",
            str(port),
            "--key-dir",
            str(key_dir),
            "--tasks-file",
            str(tasks_file),
            "--baseline",
            baseline,
        ],
        cwd=REPO,
    )


def _load(job: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.shimload"],
        input=json.dumps(job),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    codes = result["status_codes"]
    assert set(codes) == {"202"}, (codes, result["failures"])
    return result


async def http_rounds(args: argparse.Namespace) -> dict[str, Any]:
    import socket

    from nicotask_dev.shim.testing import free_port

    key_dir = Path(tempfile.mkdtemp(prefix="shim-bench-keys-"))
    token = issue_token(key_dir, ORG, ["PROVIDER_ADMIN"], subject="bench")
    labels = ["current"] + (["baseline"] if args.baseline else [])
    servers: dict[str, tuple[subprocess.Popen[bytes], str, list[str], list[str]]] = {}
    try:
        for label in labels:
            terminated = [task_object("Terminated") for _ in range(100)]
            running = [task_object("Running") for _ in range(args.fresh * args.rounds)]
            tasks_file = key_dir / f"{label}-tasks.json"
            tasks_file.write_text(json.dumps(terminated + running))
            port = free_port()
            proc = _start_server(label, port, key_dir, tasks_file, args.baseline or "main")
            servers[label] = (
                proc,
                f"http://127.0.0.1:{port}",
                [t["metadata"]["uid"] for t in terminated],
                [t["metadata"]["uid"] for t in running],
            )
            deadline = time.monotonic() + 60
            while True:
                with socket.socket() as sock:
                    if sock.connect_ex(("127.0.0.1", port)) == 0:
                        break
                assert proc.poll() is None and time.monotonic() < deadline, f"{label} did not start"
                await asyncio.sleep(0.1)
        rounds: dict[str, list[dict[str, float]]] = {v: [] for v in labels}
        for i in range(args.rounds):
            for label in labels if i % 2 == 0 else labels[::-1]:
                _, url, terminated_uids, running_uids = servers[label]
                job = {
                    "base_url": url,
                    "token": token,
                    "site_id": SITE_ID,
                    "org": ORG,
                    "concurrency": args.concurrency,
                }
                repeat = _load({**job, "tasks": [[u, u] for u in terminated_uids] * 10})
                fresh_uids = running_uids[i * args.fresh : (i + 1) * args.fresh]
                fresh = _load({**job, "tasks": [[u, u] for u in fresh_uids]})
                rounds[label].append(
                    {
                        "repeat_per_s": round(len(repeat["latencies_s"]) / repeat["wall_s"], 1),
                        "repeat_p50_ms": _ms(repeat["latencies_s"], 0.50),
                        "repeat_p99_ms": _ms(repeat["latencies_s"], 0.99),
                        "fresh_per_s": round(len(fresh["latencies_s"]) / fresh["wall_s"], 1),
                        "fresh_p99_ms": _ms(fresh["latencies_s"], 0.99),
                    }
                )
    finally:
        for proc, *_ in servers.values():
            proc.terminate()
            proc.wait(timeout=10)
    return {
        "parameters": vars(args),
        "median_over_rounds": {
            label: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            for label, rs in rounds.items()
        },
        "rounds": rounds,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from nicotask.shim import app as current

    versions = {"current": current}
    if args.baseline:
        versions = {f"baseline ({args.baseline})": load_baseline(args.baseline), **versions}
    key_dir = Path(tempfile.mkdtemp(prefix="shim-bench-keys-"))
    token = issue_token(key_dir, ORG, ["PROVIDER_ADMIN"], subject="bench")
    rounds: dict[str, list[dict[str, float]]] = {v: [] for v in versions}
    for _ in range(args.rounds):
        for label, module in versions.items():
            terminated = [task_object("Terminated") for _ in range(100)]
            running = [task_object("Running") for _ in range(args.fresh)]
            app = build(module, key_dir, terminated + running)
            rounds[label].append(
                await one_round(
                    app,
                    token,
                    [t["metadata"]["uid"] for t in terminated],
                    [t["metadata"]["uid"] for t in running],
                    args.repeats,
                    args.concurrency,
                )
            )
    summary = {
        label: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        for label, rs in rounds.items()
    }
    return {
        "parameters": vars(args),
        "median_over_rounds": summary,
        "rounds": rounds,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.shimroutes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--baseline", default="main", help="git revision to compare ('' for none)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds per version (5)")
    p.add_argument("--repeats", type=int, default=2000, help="repeated cancels per round (2000)")
    p.add_argument("--fresh", type=int, default=500, help="fresh cancels per round (500)")
    p.add_argument("--concurrency", type=int, default=32, help="fresh cancels in flight (32)")
    p.add_argument("--http", action="store_true", help="over HTTP: uvicorn, one per version")
    p.add_argument("--serve", help=argparse.SUPPRESS)  # internal: one --http server
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--key-dir", help=argparse.SUPPRESS)
    p.add_argument("--tasks-file", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(args)
        return
    run = http_rounds if args.http else main_async
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
