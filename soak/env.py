"""The system under the soak: the bench's environment with two operator replicas (kopf
peering) and restartable infrastructure (kube-apiserver, etcd, Temporal dev server)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from bench.env import BenchEnv, progress

from nicotask_dev.devenv import kube, system, temporal
from nicotask_dev.devenv.process import record_alive, stop

REPO = Path(__file__).resolve().parents[1]
PEERING_CRDS = REPO / "charts" / "nicotask" / "crds" / "kopf.dev_peerings.yaml"
PEERING = "nicotask-soak"
# The standby takes over this long after the active replica stops touching the peering.
PEERING_LIFETIME_S = 10
# operator-a is preferred (active whenever it lives); operator-b is the standby.
OPERATORS = {"operator-a": "200", "operator-b": "100"}
OPERATOR_SETTINGS = {
    "NICOTASK_RECONCILE_INTERVAL_SECONDS": "10",
    "NICOTASK_QUEUE_LIMIT": "5",
    "NICOTASK_QUEUE_TIMEOUT_SECONDS": "3600",
    "NICOTASK_PEERING": PEERING,
    "NICOTASK_PEERING_LIFETIME_SECONDS": str(PEERING_LIFETIME_S),
}


class SoakEnv(BenchEnv):
    """BenchEnv (its start-up) with two operators instead of one, and fault actions."""

    def up(self) -> None:
        for key in [k for k in os.environ if k.startswith("NICOTASK_") or k == "KUBECONFIG"]:
            del os.environ[key]
        progress(f"starting the environment in {self.run_dir}")
        self.state = self.env.up()
        system.install_crds(self.env)
        system.kubectl(self.env, "apply", "-f", str(PEERING_CRDS))
        system.kubectl(self.env, "wait", "--for=condition=Established", "--timeout=60s",
                       "crd/clusterkopfpeerings.kopf.dev")
        system.kubectl(
            self.env, "apply", "-f", "-",
            stdin=f"apiVersion: kopf.dev/v1\nkind: ClusterKopfPeering\nmetadata:\n"
                  f"  name: {PEERING}\n",
        )
        system.start_worker(
            self.env, NICOTASK_WORKER_MAX_CONCURRENT_ACTIVITIES=str(self.worker_activities)
        )
        for name in OPERATORS:
            self.start_operator_named(name)
        self.shim_url = system.start_shim(self.env)
        progress("environment up: apiserver, etcd, Temporal, BMCs, worker, 2 operators, shim")

    def start_operator_named(self, name: str) -> None:
        system.start_operator(
            self.env, name=name, NICOTASK_PEERING_PRIORITY=OPERATORS[name], **OPERATOR_SETTINGS
        )

    # ---- faults ------------------------------------------------------------

    def pid_of(self, name: str) -> int:
        return self.env.record(name).pid

    def kill_restart(self, name: str) -> None:
        """SIGKILL the process group, then start it again (new ports for the nicotask ones)."""
        self.env.kill_process(name)
        if name in OPERATORS:
            self.start_operator_named(name)
        elif name == "worker":
            system.start_worker(
                self.env, NICOTASK_WORKER_MAX_CONCURRENT_ACTIVITIES=str(self.worker_activities)
            )
        elif name == "shim":
            self.shim_url = system.start_shim(self.env)
        else:
            raise ValueError(name)

    def signal_group(self, name: str, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid_of(name), sig)

    def stop_infra(self, name: str) -> dict[str, object]:
        """Stop kube-apiserver, etcd or temporal (SIGTERM, data kept); return its record."""
        rec = self.env.record(name)
        self.env.stop_process(name)
        return {"argv": rec.argv, "url": rec.url, "extra": rec.extra}

    def start_infra(self, name: str, saved: dict[str, object], timeout: float = 120) -> None:
        """Start it again with the same command line (ports, etcd data dir, temporal.db)."""
        state = self.env.load_state()
        check = None
        if name == "temporal":
            tbin = temporal.temporal_binary()
            address = str(state["temporal_address"])
            check = lambda: temporal.namespace_ready(tbin, address)  # noqa: E731
        elif name == "etcd":
            url = str(state["etcd_url"])
            check = lambda: kube.etcd_ready(url)  # noqa: E731
        elif name == "kube-apiserver":
            api_url, pki = str(state["api_url"]), self.env.pki
            check = lambda: kube.apiserver_ready(api_url, pki)  # noqa: E731
        argv = list(saved["argv"])  # type: ignore[call-overload]
        last: Exception | None = None
        for _ in range(3):  # a port of ours may linger in TIME_WAIT for a moment
            try:
                self.env.start_process(
                    name, argv, ready_check=check, timeout=timeout,
                    url=str(saved["url"]), extra=dict(saved["extra"]),  # type: ignore[call-overload]
                )
                return
            except Exception as exc:
                last = exc
                time.sleep(1)
        raise RuntimeError(f"restarting {name}: {last}")

    def alive(self, name: str) -> bool:
        try:
            return record_alive(self.env.record(name))
        except KeyError:
            return False

    def stop_all_now(self) -> None:
        for rec in self.env.records(self.env.load_state()):
            with contextlib.suppress(Exception):
                os.killpg(rec.pid, signal.SIGCONT)
            stop(rec, grace=3)

    def operator_log(self, name: str) -> Path:
        return self.env.log_dir / f"{name}.log"
