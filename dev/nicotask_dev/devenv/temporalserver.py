"""A production-shaped Temporal: the server from its Go module, on PostgreSQL.

`NICOTASK_TEMPORAL=server` (or `nicotask dev up --temporal server`) starts this
instead of the CLI's dev server (temporal.py). What it is made of:

- `temporal-server` and `temporal-sql-tool`, built once with `go install
  go.temporal.io/server/cmd/server@VERSION` and `.../cmd/tools/sql@VERSION`
  (like helm and promtool, gobuild.py) into ``~/.cache/nicotask/temporal-server-
  VERSION/``, keyed by version. The module's go.mod asks for a newer Go than
  Debian or most machines have, so the build sets GOTOOLCHAIN itself (the go
  command fetches that toolchain from the module proxy). The module's
  PostgreSQL schemas and its development-postgres12.yaml are copied next to the
  binaries at build time.
- PostgreSQL (Debian's `postgresql` package; installed with apt-get when
  missing and we are root): `initdb` into ``RUN_DIR/postgres/data`` and
  `postgres` on a free loopback port, both as an unprivileged user (ourselves,
  or the package's `postgres` user when we are root: PostgreSQL refuses root).
- The schemas applied with the server's own SQL tool (`create-database`,
  `setup-schema -v 0.0`, `update-schema -d schema/postgresql/v12/...`), for the
  store (`temporal`) and for visibility (`temporal_visibility`): PostgreSQL is
  both, as in the module's development-postgres12.yaml.
- The server (frontend, history, matching, worker and internal-frontend services
  in one process) from a config derived from that file: every port a free
  loopback port, the database's port and user ours, logs at warn.
- The nicotask namespace registered with a retention by the `temporal` CLI
  (`operator namespace create --retention 72h`).

`temporal-server` and `postgres` are two managed processes of the run folder
(`temporal` and `postgres`), so `nicotask dev down` and `make stop` stop them
like every other process, and a test's outage (`DevEnv.stopped("temporal")`)
stops the server only, not its database.
"""

from __future__ import annotations

import copy
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from .gobuild import cache_root, go_install_cached, module_source

VERSION = "v1.32.2"
MODULE = "go.temporal.io/server"
# The module's go.mod says `go 1.26.10`; the go command fetches this toolchain
# (golang.org/toolchain, from the module proxy) when the machine's Go is older.
GO_TOOLCHAIN = "go1.27.3"
SCHEMA_VERSION_DIR = "schema/postgresql/v12"
BASE_CONFIG = "config/development-postgres12.yaml"

# The namespace the local environment registers, and its retention.
NAMESPACE = "default"
RETENTION = "72h"
DB_USER = "temporal"
DB_PASSWORD = "temporal"
STORE_DB = "temporal"
VISIBILITY_DB = "temporal_visibility"
# Connections per service and store, at least (PostgreSQL allows 200 in all: 5 services
# x (the store's 20 + visibility's 10) fit).
MIN_CONNS_PER_STORE = 10

MODE_ENV = "NICOTASK_TEMPORAL"
MODES = ("dev", "server")

# Ports of the server, one free loopback port each (the frontend's gRPC port is
# the address clients use).
PORT_NAMES = (
    "temporal",  # frontend gRPC
    "temporal_frontend_membership",
    "temporal_frontend_http",
    "temporal_history",
    "temporal_history_membership",
    "temporal_matching",
    "temporal_matching_membership",
    "temporal_worker",
    "temporal_worker_membership",
    "temporal_metrics",
    "postgres",
)
# The server keeps membership ports in a smallint column: they must be below 32768.
LOW_PORTS = frozenset(n for n in PORT_NAMES if n.endswith("_membership"))


def mode(environ: dict[str, str] | os._Environ[str]) -> str:
    """`dev` (the CLI's dev server, the default) or `server` (this module)."""
    value = environ.get(MODE_ENV, "").strip().lower() or "dev"
    if value not in MODES:
        raise RuntimeError(f"{MODE_ENV}={value!r}: expected one of {', '.join(MODES)}")
    return value


def _log(msg: str) -> None:
    print(f"[nicotask temporal] {msg}", file=sys.stderr, flush=True)


# ---- build ------------------------------------------------------------------


def build_dir(version: str = VERSION) -> Path:
    return cache_root() / f"temporal-server-{version}"


def server_path(version: str = VERSION) -> Path:
    return build_dir(version) / "temporal-server"


def sql_tool_path(version: str = VERSION) -> Path:
    return build_dir(version) / "temporal-sql-tool"


def _copy_module_files(version: str) -> None:
    """The schemas and the base config, from the module source in Go's module cache."""
    done = build_dir(version) / BASE_CONFIG
    if done.exists():
        return
    env = {**os.environ, "GOTOOLCHAIN": GO_TOOLCHAIN, "GOFLAGS": "-mod=mod"}
    src = module_source(MODULE, version, build_dir(version), env)
    dest = build_dir(version)
    shutil.copytree(src / SCHEMA_VERSION_DIR, dest / SCHEMA_VERSION_DIR, dirs_exist_ok=True)
    # Go's module cache is read-only; the copies need not be.
    for path in (dest / "schema").rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    tmp = done.with_suffix(".partial")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / BASE_CONFIG, tmp)
    tmp.chmod(0o644)
    tmp.rename(done)


def ensure_built(version: str = VERSION) -> tuple[Path, Path]:
    """The cached server and SQL tool (built when absent), with the module's files."""
    override = os.environ.get("NICOTASK_TEMPORAL_SERVER")
    if override:  # a prebuilt server; its SQL tool and files next to it
        return Path(override), Path(override).parent / "temporal-sql-tool"
    build_dir(version).mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    fresh = not (server_path(version).exists() and sql_tool_path(version).exists())
    server = go_install_cached(
        "temporal-server",
        f"{MODULE}/cmd/server",
        version,
        server_path(version),
        toolchain=GO_TOOLCHAIN,
    )
    tool = go_install_cached(
        "temporal-sql-tool",
        f"{MODULE}/cmd/tools/sql",
        version,
        sql_tool_path(version),
        toolchain=GO_TOOLCHAIN,
    )
    _copy_module_files(version)
    if fresh:
        _log(f"Temporal server {version} built in {time.monotonic() - started:.0f}s")
    return server, tool


# ---- PostgreSQL ------------------------------------------------------------------


def _pg_bin_dirs() -> list[Path]:
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    return sorted(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


def ensure_postgres() -> Path:
    """The bin folder of Debian's PostgreSQL (initdb, postgres, pg_isready); installs the
    `postgresql` package with apt-get when it is missing and we are root."""
    dirs = _pg_bin_dirs()
    if dirs:
        return dirs[-1]
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
            "run `apt-get install -y postgresql` as root"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"],
    ):
        _log(" ".join(argv))
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stderr[-4000:]}")
    dirs = _pg_bin_dirs()
    if not dirs:
        raise RuntimeError("apt-get installed postgresql but no /usr/lib/postgresql/*/bin/initdb")
    return dirs[-1]


def pg_user() -> pwd.struct_passwd | None:
    """Whom PostgreSQL runs as: None for ourselves; as root (which it refuses), the
    package's unprivileged `postgres` user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError as exc:
        raise RuntimeError(
            "running as root, and PostgreSQL refuses root: no `postgres` user to run it as "
            "(the Debian postgresql package creates it)"
        ) from exc


def as_user(user: pwd.struct_passwd | None, argv: list[str]) -> list[str]:
    if user is None:
        return argv
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    return [
        setpriv,
        f"--reuid={user.pw_uid}",
        f"--regid={user.pw_gid}",
        "--init-groups",
        "--",
        *argv,
    ]


def _grant_traverse(path: Path) -> None:
    """Let another user reach `path`: search (x) permission on each ancestor we own that
    lacks it (pytest's base temp folder is 0700). Listing stays forbidden."""
    uid = os.geteuid()
    for folder in [path, *path.parents]:
        st = folder.stat()
        if st.st_uid == uid and not st.st_mode & 0o001:
            folder.chmod((st.st_mode & 0o7777) | 0o011)


def pg_dir(run_dir: Path) -> Path:
    return run_dir / "postgres"


def init_postgres(run_dir: Path, bindir: Path) -> Path:
    """`initdb` once into RUN_DIR/postgres/data (superuser `temporal`, password auth on
    TCP); returns the data folder."""
    base = pg_dir(run_dir)
    data = base / "data"
    if (data / "PG_VERSION").exists():
        return data
    user = pg_user()
    base.mkdir(parents=True, exist_ok=True)
    pwfile = base / "pwfile"
    pwfile.write_text(DB_PASSWORD + "\n")
    if user is not None:
        _grant_traverse(run_dir)
        os.chown(base, user.pw_uid, user.pw_gid)
        os.chown(pwfile, user.pw_uid, user.pw_gid)
    base.chmod(0o700)
    pwfile.chmod(0o600)
    argv = as_user(
        user,
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            DB_USER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
        ],
    )
    _log(f"initdb {data}")
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd="/")
    if proc.returncode != 0:
        raise RuntimeError(f"initdb failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    pwfile.unlink()
    return data


def postgres_argv(bindir: Path, data: Path, port: int, host: str) -> list[str]:
    return as_user(
        pg_user(),
        [
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-c",
            f"listen_addresses={host}",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
            "-c",
            "log_min_messages=warning",
        ],
    )


def postgres_ready(bindir: Path, host: str, port: int) -> bool:
    proc = subprocess.run(
        [str(bindir / "pg_isready"), "-q", "-h", host, "-p", str(port), "-U", DB_USER],
        capture_output=True,
        timeout=10,
        check=False,
    )
    return proc.returncode == 0


def setup_schemas(tool: Path, host: str, port: int, run_dir: Path) -> None:
    """Both databases and their schemas at the module's latest version, once, with the
    server's own SQL tool."""
    marker = pg_dir(run_dir) / f"schemas-{VERSION}"
    if marker.exists():
        return
    base = [
        str(tool),
        "--plugin",
        "postgres12",
        "--ep",
        host,
        "--port",
        str(port),
        "--user",
        DB_USER,
        "--password",
        DB_PASSWORD,
    ]
    for db, folder in ((STORE_DB, "temporal"), (VISIBILITY_DB, "visibility")):
        versioned = build_dir() / SCHEMA_VERSION_DIR / folder / "versioned"
        steps = [
            ["--db", db, "create-database"],
            ["--db", db, "setup-schema", "-v", "0.0"],
            ["--db", db, "update-schema", "-d", str(versioned)],
        ]
        for step in steps:
            proc = subprocess.run(base + step, capture_output=True, text=True, check=False)
            # A database left by an interrupted first start is fine; anything else is not.
            if proc.returncode != 0 and "already exists" not in proc.stdout + proc.stderr:
                raise RuntimeError(
                    f"temporal-sql-tool {' '.join(step)} failed:\n"
                    f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
                )
    _log(f"schemas of {STORE_DB} and {VISIBILITY_DB} set up")
    marker.write_text(VERSION + "\n")


# ---- the server ------------------------------------------------------------------


def server_config(
    base: dict[str, Any], ports: dict[str, int], host: str, run_dir: Path
) -> dict[str, Any]:
    """`base` (the module's development-postgres12.yaml) with our ports, database and
    log level."""
    cfg = copy.deepcopy(base)
    cfg["log"] = {"stdout": True, "level": "warn"}
    for store in cfg["persistence"]["datastores"].values():
        sql = store["sql"]
        sql["connectAddr"] = f"{host}:{ports['postgres']}"
        sql["user"], sql["password"] = DB_USER, DB_PASSWORD
        # The module's file gives visibility 2 connections per service: one slow write
        # (a lagging or locked record) would hold up every other visibility write.
        sql["maxConns"] = max(int(sql.get("maxConns") or 0), MIN_CONNS_PER_STORE)
        sql["maxIdleConns"] = max(int(sql.get("maxIdleConns") or 0), MIN_CONNS_PER_STORE)
    glob = cfg["global"]
    glob["membership"]["broadcastAddress"] = host
    glob.pop("pprof", None)
    glob["metrics"]["prometheus"]["listenAddress"] = f"{host}:{ports['temporal_metrics']}"
    services = cfg["services"]
    for name, key in (
        ("frontend", "temporal"),
        ("history", "temporal_history"),
        ("matching", "temporal_matching"),
        ("worker", "temporal_worker"),
    ):
        rpc = services[name]["rpc"]
        rpc["grpcPort"] = ports[key]
        rpc["membershipPort"] = ports[
            f"{key}_membership" if name != "frontend" else "temporal_frontend_membership"
        ]
        rpc["bindOnLocalHost"] = False
        rpc["bindOnIP"] = host
    services["frontend"]["rpc"]["httpPort"] = ports["temporal_frontend_http"]
    info = cfg["clusterMetadata"]["clusterInformation"]
    for cluster in info.values():
        cluster["rpcAddress"] = f"{host}:{ports['temporal']}"
        cluster["httpAddress"] = f"{host}:{ports['temporal_frontend_http']}"
    # No archival: the module's file stores write under /tmp.
    cfg["archival"] = {"history": {"state": "disabled"}, "visibility": {"state": "disabled"}}
    cfg.pop("namespaceDefaults", None)
    dynamic = run_dir / "temporal-server" / "dynamicconfig.yaml"
    cfg["dynamicConfigClient"] = {"filepath": str(dynamic), "pollInterval": "10s"}
    return cfg


DYNAMIC_CONFIG = {
    # Workflow ids are task uids (36 characters); the module's development value.
    "limit.maxIDLength": [{"value": 255, "constraints": {}}],
}


def write_config(ports: dict[str, int], host: str, run_dir: Path) -> Path:
    folder = run_dir / "temporal-server"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dynamicconfig.yaml").write_text(yaml.safe_dump(DYNAMIC_CONFIG))
    path = folder / "config.yaml"
    base = yaml.safe_load((build_dir() / BASE_CONFIG).read_text())
    path.write_text(yaml.safe_dump(server_config(base, ports, host, run_dir), sort_keys=False))
    return path


def server_argv(server: Path, config: Path) -> list[str]:
    return [str(server), "--config-file", str(config), "--allow-no-auth", "start"]


def _cli(tbin: Path, *args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tbin), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def frontend_serving(tbin: Path, address: str) -> bool:
    try:
        return _cli(tbin, "operator", "cluster", "health", "--address", address).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def register_namespace(tbin: Path, address: str, namespace: str = NAMESPACE) -> None:
    """The namespace with a retention, unless it exists (a restart keeps it)."""
    described = _cli(tbin, "operator", "namespace", "describe", namespace, "--address", address)
    if described.returncode == 0:
        return
    created = _cli(
        tbin,
        "operator",
        "namespace",
        "create",
        namespace,
        "--retention",
        RETENTION,
        "--address",
        address,
    )
    if created.returncode != 0 and "already" not in created.stderr.lower():
        raise RuntimeError(
            f"temporal operator namespace create {namespace} failed: {created.stderr.strip()}"
        )
    _log(f"namespace {namespace} registered (retention {RETENTION})")


def namespace_usable(tbin: Path, address: str, namespace: str = NAMESPACE) -> bool:
    """True once the frontend serves the namespace: its registry is refreshed from the
    database every few seconds, so a new namespace is described before it can be used."""
    try:
        proc = _cli(
            tbin, "workflow", "list", "--namespace", namespace, "--limit", "1", "--address", address
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def main() -> None:
    server, tool = ensure_built()
    print(server)
    print(tool)


if __name__ == "__main__":
    main()
