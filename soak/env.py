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
from nicotask_dev.devenv.process import ReadyCheck, record_alive, stop, tail, wait_ready
from nicotask_dev.shim.devissuer import write_issuers_file

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
        system.kubectl(
            self.env,
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/clusterkopfpeerings.kopf.dev",
        )
        system.kubectl(
            self.env,
            "apply",
            "-f",
            "-",
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

    def _respawn(
        self,
        name: str,
        environ: dict[str, str] | None,
        check: ReadyCheck | None,
        timeout: float,
    ) -> None:
        """Start a recorded process again with its command line, URL and ports.

        DevEnv.start_process holds the run folder's lock while it waits for
        readiness; a shim that waits for the API server would then keep the API
        server's own restart out. Only the spawn is done under the lock here.
        """
        rec = self.env.record(name)
        with self.env._lock():
            state = self.env.load_state()
            proc, new = self.env._spawn(
                state, name, rec.argv, url=rec.url, env=environ, extra=rec.extra
            )
        try:
            wait_ready(new, check, timeout=timeout, proc=proc)
        except BaseException:
            stop(new)
            raise

    def _component_environ(self, name: str) -> tuple[dict[str, str], ReadyCheck]:
        rec = self.env.record(name)
        if name == "shim":
            port = rec.url.rsplit(":", 1)[1]
            environ = system.system_environ(
                self.env,
                {
                    "NICOTASK_SHIM_HOST": "127.0.0.1",
                    "NICOTASK_SHIM_PORT": port,
                    "NICOTASK_SHIM_ISSUERS_FILE": str(write_issuers_file(self.env.run_dir)),
                },
            )
            return environ, system._http_ok(f"{rec.url}/readyz")
        health, metrics = str(rec.extra["health_port"]), str(rec.extra["metrics_port"])
        if name in OPERATORS:
            extra = {
                "NICOTASK_HEALTH_PORT": health,
                "NICOTASK_METRICS_PORT": metrics,
                "NICOTASK_PEERING_PRIORITY": OPERATORS[name],
                **OPERATOR_SETTINGS,
            }
        elif name == "worker":
            extra = {
                "NICOTASK_WORKER_HEALTH_PORT": health,
                "NICOTASK_WORKER_METRICS_PORT": metrics,
                "NICOTASK_WORKER_MAX_CONCURRENT_ACTIVITIES": str(self.worker_activities),
            }
        else:
            raise ValueError(name)
        return (
            system.system_environ(self.env, extra),
            system._http_ok(f"http://127.0.0.1:{health}/healthz"),
        )

    def kill_restart(self, name: str) -> None:
        """SIGKILL the process group, then start it again on the same ports."""
        self.env.kill_process(name)
        self.restart_component(name)

    def restart_component(self, name: str, budget: float = 240) -> int:
        """Start a nicotask process again, as kubelet would: a start that exits (the
        worker exits when Temporal is unreachable at start-up) is retried with backoff.
        Returns the failed starts."""
        environ, check = self._component_environ(name)
        deadline = time.monotonic() + budget
        failed, delay = 0, 1.0
        while True:
            try:
                self._respawn(name, environ, check, timeout=max(10.0, deadline - time.monotonic()))
                return failed
            except Exception:
                failed += 1
                if time.monotonic() + delay >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def signal_group(self, name: str, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid_of(name), sig)

    def stop_infra(self, name: str) -> None:
        """Stop kube-apiserver, etcd or temporal (SIGTERM to its group; data kept)."""
        stop(self.env.record(name))

    def start_infra(self, name: str, timeout: float = 120) -> None:
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
        last: Exception | None = None
        for _ in range(3):  # a port of ours may linger in TIME_WAIT for a moment
            try:
                self._respawn(name, None, check, timeout)
                return
            except Exception as exc:
                last = exc
                time.sleep(1)
        raise RuntimeError(f"restarting {name}: {last}")

    def kill_process(self, name: str) -> None:
        self.env.kill_process(name)

    def log_tail(self, name: str, lines: int = 15) -> str:
        return tail(self.env.log_dir / f"{name}.log", lines)[-3000:]

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
