"""DevEnv: the local environment in one run folder.

Everything lives in the run folder: `state.json` (ports, URLs, PIDs), one log
file per process under `logs/`, certificates under `pki/`, `kubeconfig`,
etcd's data, `temporal.db` and the Redfish emulator's config. Processes are
started in their own session and stopped by PID (SIGTERM to the process
group, then SIGKILL). Later code registers more processes (operator, worker,
shim) with `start_process`; `down` stops every recorded process in reverse
order of start.

Real infrastructure instead of the embedded one (read when `up` runs):
  NICOTASK_USE_EXISTING_CLUSTER=1   use KUBECONFIG (or ~/.kube/config) and start
                                    neither etcd nor kube-apiserver
  NICOTASK_TEMPORAL_ADDRESS=h:p     use this Temporal frontend (namespace from
                                    NICOTASK_TEMPORAL_NAMESPACE, default
                                    `default`) and start no dev server. Ignored
                                    when it came from `eval "$(nicotask dev env)"`
                                    (NICOTASK_DEV_RUN_DIR is set) unless
                                    NICOTASK_USE_EXISTING_TEMPORAL=1.
  NICOTASK_TEMPORAL=server          instead of the CLI's dev server, a Temporal
                                    server built from go.temporal.io/server on
                                    PostgreSQL (temporalserver.py); `dev` (the
                                    default) is the dev server.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import gobuild, kube, ports, redfish, temporal, temporalserver
from .pki import Pki, ensure_pki
from .process import (
    ProcessRecord,
    ReadyCheck,
    StartError,
    log,
    record_alive,
    spawn,
    stop,
    wait_ready,
)

CORE = ("etcd", "kube-apiserver", "temporal", "redfish")
TRUE = ("1", "true", "yes", "on")
STATE_FILE = "state.json"
PORT_ATTEMPTS = 3


def _flag(environ: dict[str, str] | os._Environ[str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in TRUE


def default_run_dir() -> Path:
    return Path(os.environ.get("NICOTASK_RUN_DIR") or Path.cwd() / ".run" / "dev")


class DevEnv:
    """The local control plane, Temporal and emulated BMCs for one run folder."""

    def __init__(
        self,
        run_dir: Path | str,
        *,
        redfish_systems: list[dict[str, Any]] | None = None,
        temporal_ui: bool = True,
        environ: dict[str, str] | None = None,
        with_node: bool = False,
        temporal_mode: str | None = None,
        apiserver_profiling: bool = False,
    ) -> None:
        self.run_dir = Path(run_dir).resolve()
        # kube-apiserver's /debug/pprof (`--profiling`), for the bench's profiles.
        self.apiserver_profiling = apiserver_profiling
        # A node (node.py) comes after `up`: here only the API server flags it needs.
        self.with_node = with_node
        self.redfish_systems = redfish_systems
        self.temporal_ui = temporal_ui
        self.environ: dict[str, str] = dict(os.environ if environ is None else environ)
        # `dev` (the CLI's dev server) or `server` (go.temporal.io/server on PostgreSQL).
        self.temporal_mode = temporal_mode or temporalserver.mode(self.environ)
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    # ---- paths and state -------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.run_dir / STATE_FILE

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def pki(self) -> Pki:
        return Pki(self.run_dir / "pki")

    def load_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def save_state(self, state: dict[str, Any]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=False) + "\n")
        tmp.replace(self.state_path)

    def update_state(self, **values: Any) -> dict[str, Any]:
        """Add or change top-level keys (e.g. `shim_url`) in state.json."""
        with self._lock():
            state = self.load_state()
            state.update(values)
            self.save_state(state)
            return state

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @staticmethod
    def records(state: dict[str, Any]) -> list[ProcessRecord]:
        return [ProcessRecord.from_json(p) for p in state.get("processes", [])]

    def _core_alive(self, state: dict[str, Any]) -> bool:
        if not state.get("up"):
            return False
        recs = {r.name: r for r in self.records(state)}
        external = set(state.get("external", []))
        needed = [n for n in CORE if not _external_covers(n, external)]
        if state.get("temporal_mode") == "server" and "temporal" not in external:
            needed.append("postgres")
        return all(n in recs and record_alive(recs[n]) for n in needed)

    # ---- processes ------------------------------------------------------

    def _spawn(
        self,
        state: dict[str, Any],
        name: str,
        argv: list[str],
        *,
        url: str = "",
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        extra: dict[str, Any] | None = None,
    ) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
        log(f"starting {name} ...")
        proc, rec = spawn(name, argv, self.log_dir / f"{name}.log", env=env, cwd=cwd)
        rec.url = url
        rec.extra = dict(extra or {})
        self._procs[rec.pid] = proc
        procs = [p for p in state.get("processes", []) if p.get("name") != name]
        procs.append(rec.to_json())
        state["processes"] = procs
        self.save_state(state)
        return proc, rec

    def _wait(
        self,
        proc: subprocess.Popen[bytes],
        rec: ProcessRecord,
        check: ReadyCheck | None,
        timeout: float,
    ) -> None:
        took = wait_ready(rec, check, timeout=timeout, proc=proc)
        log(f"{rec.name} ready in {took:.1f}s (pid {rec.pid}{', ' + rec.url if rec.url else ''})")

    def start_process(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        ready_check: ReadyCheck | None = None,
        *,
        timeout: float = 90.0,
        url: str = "",
        cwd: Path | None = None,
        extra: dict[str, Any] | None = None,
    ) -> ProcessRecord:
        """Start and record one more managed process (operator, worker, shim...).

        Harmless when a live process of that name is already recorded: its
        record is returned. `env` replaces the environment if given (merge
        with `os.environ` yourself). Raises StartError (and stops it) if it
        exits or `ready_check` does not return True within `timeout`.
        """
        with self._lock():
            state = self.load_state()
            for rec in self.records(state):
                if rec.name == name and record_alive(rec):
                    return rec
            proc, rec = self._spawn(state, name, argv, url=url, env=env, cwd=cwd, extra=extra)
            try:
                self._wait(proc, rec, ready_check, timeout)
            except BaseException:
                stop(rec)
                proc.poll()
                raise
            return rec

    def stop_process(self, name: str) -> bool:
        """Stop one recorded process and forget it; True if it was running."""
        with self._lock():
            state = self.load_state()
            was_running = False
            for rec in self.records(state):
                if rec.name == name:
                    was_running = stop(rec) or was_running
            state["processes"] = [p for p in state.get("processes", []) if p["name"] != name]
            self.save_state(state)
            self._settle()
            return was_running

    def record(self, name: str) -> ProcessRecord:
        for rec in self.records(self.load_state()):
            if rec.name == name:
                return rec
        raise KeyError(f"no process {name!r} recorded in {self.run_dir}")

    def kill_process(self, name: str) -> None:
        """SIGKILL one process group at once, as a crash would (tests of recovery)."""
        rec = self.record(name)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(rec.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while record_alive(rec) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._settle()

    def _ready_check_for(self, name: str) -> ReadyCheck | None:
        state = self.load_state()
        if name == "temporal":
            tbin = temporal.temporal_binary()
            address = state["temporal_address"]
            if state.get("temporal_mode") == "server":
                return lambda: temporalserver.namespace_usable(tbin, address)
            return lambda: temporal.namespace_ready(tbin, address)
        if name == "postgres":
            bindir = temporalserver.ensure_postgres()
            port = state["ports"]["postgres"]
            return lambda: temporalserver.postgres_ready(bindir, ports.LOOPBACK, port)
        return None

    @contextlib.contextmanager
    def stopped(self, name: str, timeout: float = 60.0) -> Iterator[ProcessRecord]:
        """Stop one process for the duration of the block, then start it again
        with the same command line and ports (an outage, for tests).

        Temporal keeps its history in temporal.db (the dev server) or in
        PostgreSQL (the server: stopping `temporal` leaves the database running),
        so a restarted Temporal carries on with the same workflows.
        """
        rec = self.record(name)
        place = [r.name for r in self.records(self.load_state())].index(name)
        self.stop_process(name)
        try:
            yield rec
        finally:
            self.start_process(
                name,
                rec.argv,
                ready_check=self._ready_check_for(name),
                timeout=timeout,
                url=rec.url,
                cwd=Path(rec.extra["cwd"]) if "cwd" in rec.extra else None,
                extra=rec.extra,
            )
            self._move_record(name, place)

    def _move_record(self, name: str, place: int) -> None:
        """Put a restarted process back in its place in the start order, so `down` still
        stops it where it did (PostgreSQL after the Temporal server that uses it)."""
        with self._lock():
            state = self.load_state()
            procs = state.get("processes", [])
            moved = [p for p in procs if p.get("name") == name]
            procs = [p for p in procs if p.get("name") != name]
            state["processes"] = procs[:place] + moved + procs[place:]
            self.save_state(state)

    def _settle(self) -> None:
        for pid, proc in list(self._procs.items()):
            if proc.poll() is not None:
                del self._procs[pid]

    # ---- up / down ------------------------------------------------------

    def up(self) -> dict[str, Any]:
        """Start whatever is not running; return the state. Harmless when already up."""
        with self._lock():
            state = self.load_state()
            if self._core_alive(state):
                log(f"already up in {self.run_dir}")
                return state
            if any(record_alive(r) for r in self.records(state)):
                log("found a partly running environment; stopping it first")
                self._stop_all(state)
            t0 = time.monotonic()
            for attempt in range(1, PORT_ATTEMPTS + 1):
                new_state = self._fresh_state(state)
                try:
                    self._start_all(new_state)
                    break
                except StartError as exc:
                    log("startup failed; stopping what was started")
                    self._stop_all(new_state)
                    # A free port chosen here can be taken by another program
                    # before our server binds it: choose again.
                    if attempt == PORT_ATTEMPTS or not exc.port_taken:
                        raise
                    log("a port was taken meanwhile; choosing new ports")
                    state = {k: v for k, v in new_state.items() if k != "ports"}
                except BaseException:
                    log("startup failed; stopping what was started")
                    self._stop_all(new_state)
                    raise
            new_state["up"] = True
            new_state["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            self.save_state(new_state)
            log(f"up in {time.monotonic() - t0:.1f}s; state in {self.state_path}")
            return new_state

    def _fresh_state(self, old: dict[str, Any]) -> dict[str, Any]:
        env = self.environ
        external: list[str] = []
        if _flag(env, "NICOTASK_USE_EXISTING_CLUSTER"):
            external.append("kube")
        if env.get("NICOTASK_TEMPORAL_ADDRESS") and (
            not env.get("NICOTASK_DEV_RUN_DIR") or _flag(env, "NICOTASK_USE_EXISTING_TEMPORAL")
        ):
            external.append("temporal")
        names = ["redfish"]
        if "kube" not in external:
            names += ["etcd", "etcd_peer", "apiserver"]
        server = self.temporal_mode == "server"
        if "temporal" not in external and server:
            names += list(temporalserver.PORT_NAMES)
        elif "temporal" not in external:
            names += ["temporal", "temporal_http", "temporal_metrics"]
            if self.temporal_ui:
                names.append("temporal_ui")
        chosen = ports.pick_ports(
            names,
            previous=old.get("ports"),
            low=temporalserver.LOW_PORTS if server else frozenset(),
        )
        keep = {k: v for k, v in old.items() if k not in ("processes", "up")}
        return {
            **keep,
            "run_dir": str(self.run_dir),
            "up": False,
            "external": external,
            "ports": {**old.get("ports", {}), **chosen},
            "processes": [],
            "with_node": self.with_node,
            "temporal_mode": "external" if "temporal" in external else self.temporal_mode,
        }

    def _start_all(self, state: dict[str, Any]) -> None:
        p = state["ports"]
        host = ports.LOOPBACK
        external = state["external"]
        waits: list[tuple[subprocess.Popen[bytes], ProcessRecord, ReadyCheck, float]] = []

        # Temporal and the BMC emulator do not depend on anything: start them first
        # (the server on PostgreSQL last: it starts in steps while the API server starts).
        server = state["temporal_mode"] == "server"
        if server:
            temporalserver.ensure_built()
            temporalserver.ensure_postgres()
        if "temporal" in external:
            state["temporal_address"] = self.environ["NICOTASK_TEMPORAL_ADDRESS"]
            state["temporal_namespace"] = self.environ.get(
                "NICOTASK_TEMPORAL_NAMESPACE", temporal.NAMESPACE
            )
            state.pop("temporal_ui_url", None)
            log(f"using existing Temporal at {state['temporal_address']}")
        elif server:
            pass
        else:
            tbin = temporal.temporal_binary()
            address = f"{host}:{p['temporal']}"
            ui_port = p.get("temporal_ui") if self.temporal_ui else None
            state["temporal_address"] = address
            state["temporal_namespace"] = temporal.NAMESPACE
            state["temporal_ui_url"] = f"http://{host}:{ui_port}" if ui_port else ""
            argv = temporal.server_argv(
                tbin,
                self.run_dir / "temporal.db",
                p["temporal"],
                ui_port,
                p["temporal_http"],
                p["temporal_metrics"],
                host=host,
            )
            proc, rec = self._spawn(state, "temporal", argv, url=address)
            waits.append((proc, rec, lambda: temporal.namespace_ready(tbin, address), 60.0))

        systems = self.redfish_systems or redfish.default_systems()
        redfish_url = f"http://{host}:{p['redfish']}"
        cfg = redfish.write_config(self.run_dir / "redfish", systems)
        state["redfish_url"] = redfish_url
        state["redfish_user"] = redfish.USER
        state["redfish_password"] = redfish.PASSWORD
        state["redfish_systems"] = redfish.public_systems(systems, redfish_url)
        argv = redfish.emulator_argv(redfish.emulator_binary(), cfg, p["redfish"], host=host)
        proc, rec = self._spawn(state, "redfish", argv, url=redfish_url)
        waits.append((proc, rec, lambda: kube.http_ok(f"{redfish_url}/redfish/v1/"), 30.0))

        if "kube" in external:
            kcfg = Path(
                (self.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")).split(
                    os.pathsep
                )[0]
            )
            state["kubeconfig"] = str(kcfg)
            state["api_url"] = kube.server_from_kubeconfig(kcfg)
            state.pop("etcd_url", None)
            log(f"using existing cluster from {kcfg} ({state['api_url'] or 'server unknown'})")
        else:
            etcd_bin = gobuild.ensure_built(gobuild.etcd())
            api_bin = gobuild.ensure_built(gobuild.kube_apiserver())
            pki = ensure_pki(self.run_dir / "pki")
            etcd_url = f"http://{host}:{p['etcd']}"
            state["etcd_url"] = etcd_url
            argv = kube.etcd_argv(etcd_bin, self.run_dir / "etcd", p["etcd"], p["etcd_peer"], host)
            proc, rec = self._spawn(state, "etcd", argv, url=etcd_url)
            self._wait(proc, rec, lambda: kube.etcd_ready(etcd_url), 30.0)
            api_url = f"https://{host}:{p['apiserver']}"
            kubeconfig = kube.write_kubeconfig(self.run_dir / "kubeconfig", api_url, pki)
            state["api_url"] = api_url
            state["kubeconfig"] = str(kubeconfig)
            argv = kube.apiserver_argv(
                api_bin,
                pki,
                p["apiserver"],
                etcd_url,
                host,
                with_node=self.with_node,
                profiling=self.apiserver_profiling,
            )
            proc, rec = self._spawn(state, "kube-apiserver", argv, url=api_url)
            waits.append((proc, rec, lambda: kube.apiserver_ready(api_url, pki), 90.0))

        if server:
            self._start_temporal_server(state)
        for proc, rec, check, timeout in waits:
            self._wait(proc, rec, check, timeout)

    def _start_temporal_server(self, state: dict[str, Any]) -> None:
        """PostgreSQL, its schemas, the Temporal server and the namespace, in that order."""
        p, host = state["ports"], ports.LOOPBACK
        ts = temporalserver
        server_bin, sql_tool = ts.ensure_built()
        bindir = ts.ensure_postgres()
        data = ts.init_postgres(self.run_dir, bindir)
        argv = ts.postgres_argv(bindir, data, p["postgres"], host)
        # From /, which the unprivileged user can read (the run folder's parents may not
        # be); recorded, so a restart (`stopped`) starts it there too. Stopped with
        # SIGINT, PostgreSQL's fast shutdown (as `pg_ctl stop` does): SIGTERM is its
        # smart shutdown, which waits for every client to leave.
        proc, rec = self._spawn(
            state,
            "postgres",
            argv,
            url=f"postgresql://{host}:{p['postgres']}",
            cwd=Path("/"),
            extra={"cwd": "/", "stop_signal": "SIGINT"},
        )
        self._wait(proc, rec, lambda: ts.postgres_ready(bindir, host, p["postgres"]), 60.0)
        ts.setup_schemas(sql_tool, host, p["postgres"], self.run_dir)
        address = f"{host}:{p['temporal']}"
        state["temporal_address"] = address
        state["temporal_namespace"] = ts.NAMESPACE
        state["temporal_ui_url"] = ""
        config = ts.write_config(p, host, self.run_dir)
        proc, rec = self._spawn(state, "temporal", ts.server_argv(server_bin, config), url=address)
        tbin = temporal.temporal_binary()
        self._wait(proc, rec, lambda: ts.frontend_serving(tbin, address), 90.0)
        ts.register_namespace(tbin, address)
        self._wait(proc, rec, lambda: ts.namespace_usable(tbin, address), 60.0)

    def _stop_all(self, state: dict[str, Any]) -> list[str]:
        stopped = []
        for rec in reversed(self.records(state)):
            if stop(rec):
                log(f"stopped {rec.name} (pid {rec.pid})")
                stopped.append(rec.name)
        state["processes"] = []
        state["up"] = False
        self.save_state(state)
        self._settle()
        return stopped

    def down(self, purge: bool = False) -> list[str]:
        """Stop every recorded process, last started first; return their names.

        With `purge`, also delete the run folder (etcd data, Temporal history,
        certificates, logs).
        """
        with self._lock():
            state = self.load_state()
            stopped = self._stop_all(state) if state else []
            if state.get("with_node"):
                from .node import teardown_node

                teardown_node(self.run_dir)
        if purge and self.run_dir.exists():
            shutil.rmtree(self.run_dir, ignore_errors=True)
            log(f"removed {self.run_dir}")
        return stopped

    # ---- views ----------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The state plus `up` (all core components alive) and each process's liveness."""
        state = self.load_state()
        procs = []
        for rec in self.records(state):
            procs.append({**rec.to_json(), "alive": record_alive(rec)})
        return {**state, "up": self._core_alive(state), "processes": procs}

    def exports(self) -> dict[str, str]:
        """Environment variables pointing tools at this environment."""
        state = self.load_state()
        out: dict[str, str] = {}
        if state.get("kubeconfig"):
            out["KUBECONFIG"] = state["kubeconfig"]
        if state.get("temporal_address"):
            out["NICOTASK_TEMPORAL_ADDRESS"] = state["temporal_address"]
            out["NICOTASK_TEMPORAL_NAMESPACE"] = state.get("temporal_namespace", "default")
        if state.get("redfish_url"):
            out["NICOTASK_REDFISH_URL"] = state["redfish_url"]
            out["NICOTASK_REDFISH_USERNAME"] = state.get("redfish_user", redfish.USER)
            out["NICOTASK_REDFISH_PASSWORD"] = state.get("redfish_password", redfish.PASSWORD)
        if state.get("shim_url"):
            out["NICOTASK_SHIM_URL"] = state["shim_url"]
        if state:
            out["NICOTASK_DEV_RUN_DIR"] = str(self.run_dir)
        return out


def _external_covers(name: str, external: set[str]) -> bool:
    if name in ("etcd", "kube-apiserver"):
        return "kube" in external
    return name in external
