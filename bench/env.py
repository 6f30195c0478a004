"""The system under test: a DevEnv plus worker, operator and shim, started for one run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from nicotask_dev.devenv import system
from nicotask_dev.devenv.env import DevEnv
from nicotask_dev.devenv.kube import admin_ssl_context

from .measure import cpu_ticks, metric_sum, proc_status_kb, python_pid_in_group

# The operator's settings for the bench: a 30 s reconcile so long-polls do not dominate.
OPERATOR_SETTINGS = {
    "NICOTASK_RECONCILE_INTERVAL_SECONDS": "30",
    "NICOTASK_QUEUE_LIMIT": "5",
}


_T0 = time.monotonic()


def progress(msg: str) -> None:
    print(f"[bench +{time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def _clean_environ() -> dict[str, str]:
    """os.environ without anything that would point the DevEnv at outside infrastructure."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith("NICOTASK_") and k != "KUBECONFIG"
    }


@dataclass
class BenchEnv:
    run_dir: Path
    owned_dir: bool
    worker_activities: int
    # `dev` (the Temporal CLI's dev server, SQLite) or `server` (go.temporal.io/server on
    # PostgreSQL; its `temporal` and `postgres` processes are counted like every other).
    temporal_mode: str = "dev"
    # kube-apiserver with --profiling (its /debug/pprof), for `--profile`.
    apiserver_profiling: bool = False
    env: DevEnv = field(init=False)
    state: dict[str, Any] = field(default_factory=dict)
    shim_url: str = ""

    @classmethod
    def create(
        cls,
        run_dir: str | None,
        worker_activities: int,
        temporal_mode: str = "dev",
        apiserver_profiling: bool = False,
    ) -> BenchEnv:
        if run_dir:
            path, owned = Path(run_dir).resolve(), False
            path.mkdir(parents=True, exist_ok=True)
        else:
            path, owned = Path(tempfile.mkdtemp(prefix="nicotask-bench-")), True
        return cls(path, owned, worker_activities, temporal_mode, apiserver_profiling)

    def __post_init__(self) -> None:
        self.env = DevEnv(
            self.run_dir,
            temporal_ui=False,
            environ=_clean_environ(),
            temporal_mode=self.temporal_mode,
            apiserver_profiling=self.apiserver_profiling,
        )

    async def seed_namespace(self, core: Any, namespace: str, secret: str) -> None:
        """The namespace and the emulator's BMC credentials Secret (kept where they exist)."""
        from kubernetes_asyncio import client

        from nicotask.api import BMC_CREDENTIALS_LABEL

        with contextlib.suppress(client.ApiException):
            await core.create_namespace(
                client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace))
            )
        with contextlib.suppress(client.ApiException):
            await core.create_namespaced_secret(
                namespace,
                client.V1Secret(
                    metadata=client.V1ObjectMeta(
                        name=secret, labels={BMC_CREDENTIALS_LABEL: "true"}
                    ),
                    string_data={
                        "username": str(self.state["redfish_user"]),
                        "password": str(self.state["redfish_password"]),
                    },
                ),
            )

    def up(self) -> None:
        # The processes started below inherit os.environ (system_environ): keep it clean too.
        for key in [k for k in os.environ if k.startswith("NICOTASK_") or k == "KUBECONFIG"]:
            del os.environ[key]
        progress(f"starting the environment in {self.run_dir} (Temporal: {self.temporal_mode})")
        self.state = self.env.up()
        system.install_crds(self.env)
        system.start_worker(
            self.env,
            NICOTASK_WORKER_MAX_CONCURRENT_ACTIVITIES=str(self.worker_activities),
        )
        system.start_operator(self.env, **OPERATOR_SETTINGS)
        self.shim_url = system.start_shim(self.env)
        progress("environment up: apiserver, etcd, Temporal, sushy-tools, worker, operator, shim")

    def down(self, keep_dir: bool = False) -> None:
        try:
            self.env.down()
        finally:
            if self.owned_dir and not keep_dir:
                shutil.rmtree(self.run_dir, ignore_errors=True)

    @property
    def kubeconfig(self) -> str:
        return str(self.state["kubeconfig"])

    @property
    def temporal_address(self) -> str:
        return str(self.state["temporal_address"])

    @property
    def temporal_namespace(self) -> str:
        return str(self.state.get("temporal_namespace", "default"))

    @property
    def redfish_url(self) -> str:
        return str(self.state["redfish_url"])

    @property
    def redfish_system(self) -> dict[str, Any]:
        """The first emulated compute system (every bench rack has this one component)."""
        systems = list(self.state.get("redfish_systems", []))
        for s in systems:
            if s.get("type") == "compute":
                return dict(s)
        return dict(systems[0])

    def stop_operator(self) -> None:
        self.env.stop_process("operator")

    def start_operator(self) -> None:
        system.start_operator(self.env, **OPERATOR_SETTINGS)

    def restart_operator(self) -> None:
        self.stop_operator()
        self.start_operator()

    async def operator_task_count(self) -> int:
        """The sum of the operator's nicotask_tasks gauge (tasks it has seen), 0 if unknown."""
        url = self.env.record("operator").url
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                text = (await http.get(url)).text
        except httpx.HTTPError:
            return 0
        return metric_sum(text, "nicotask_tasks")

    async def wait_operator_idle(self, timeout: float, window: float = 3.0) -> bool:
        """Wait until the operator used under 5% of a core over `window` seconds."""
        deadline = time.monotonic() + timeout
        tick = os.sysconf("SC_CLK_TCK")
        while time.monotonic() < deadline:
            pid = self.operator_pid()
            a = cpu_ticks(pid)
            await asyncio.sleep(window)
            b = cpu_ticks(pid)
            if a is not None and b is not None and (b - a) / tick / window < 0.05:
                return True
        return False

    # ---- what the steady and calls figures read ---------------------------

    def process_roots(self) -> dict[str, int]:
        """Recorded process name -> pid (its session holds the rest of its tree)."""
        return {rec.name: rec.pid for rec in self.env.records(self.env.load_state())}

    @property
    def temporal_metrics_url(self) -> str | None:
        """Temporal's Prometheus endpoint (the dev server's `--metrics-port`, the server's
        `global.metrics.prometheus`), None for an external one."""
        if "temporal" in self.state.get("external", []):
            return None
        port = self.state.get("ports", {}).get("temporal_metrics")
        return f"http://127.0.0.1:{port}/metrics" if port else None

    async def temporal_metrics(self) -> str | None:
        url = self.temporal_metrics_url
        if url is None:
            return None
        try:
            async with httpx.AsyncClient(timeout=20) as http:
                resp = await http.get(url)
                resp.raise_for_status()
                return resp.text
        except httpx.HTTPError as exc:
            progress(f"temporal metrics: {type(exc).__name__}: {exc}")
            return None

    async def apiserver_metrics(self) -> str | None:
        """kube-apiserver's /metrics, read with the admin client certificate."""
        api_url = self.state.get("api_url")
        if not api_url or "kube" in self.state.get("external", []):
            return None
        try:
            ctx = admin_ssl_context(self.env.pki)
            async with httpx.AsyncClient(timeout=30, verify=ctx) as http:
                resp = await http.get(f"{api_url}/metrics")
                resp.raise_for_status()
                return resp.text
        except (httpx.HTTPError, OSError) as exc:
            progress(f"apiserver metrics: {type(exc).__name__}: {exc}")
            return None

    def operator_pid(self) -> int:
        return python_pid_in_group(self.env.record("operator").pid)

    def operator_rss_kb(self) -> dict[str, int | None]:
        pid = self.operator_pid()
        return {
            "pid": pid,
            "rss_kb": proc_status_kb(pid, "VmRSS"),
            "hwm_kb": proc_status_kb(pid, "VmHWM"),
        }
