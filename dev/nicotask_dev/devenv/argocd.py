"""Argo CD on the local control plane: redis, the repo server and the application controller.

The three run as managed processes of the run folder (`argocd-redis`,
`argocd-repo-server`, `argocd-application-controller`), so `nicotask dev down`
stops them like every other process. They are what a user's installation runs
(the same binary, argocdbuild.py), pointed at the environment's kube-apiserver
with its admin kubeconfig: ARGOCD_FAKE_IN_CLUSTER makes the controller use that
kubeconfig for the in-cluster destination `https://kubernetes.default.svc`.
Not started: the API server, the UI, Dex, the ApplicationSet and notification
controllers (nothing here needs them; the tests read the Application's status).

`install` applies Argo CD's CRDs, the `argocd` namespace, `argocd-cm` with the
chart's NicoTask health check under the key docs/gitops.md gives users, an
`argocd-secret` and the `default` AppProject (which Argo CD's API server would
create). redis is Debian's `redis-server` (installed with apt-get when missing
and we are root).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from . import argocdbuild, ports
from .env import DevEnv
from .process import log
from .system import REPO, kubectl

NAMESPACE = "argocd"
HEALTH_KEY = "resource.customizations.health.nico.dev_NicoTask"
HEALTH_LUA = REPO / "charts" / "nicotask" / "files" / "argocd-health.lua"
IN_CLUSTER = "https://kubernetes.default.svc"
# How often the controller re-reads Git for every Application without a webhook
# (argocd-cm `timeout.reconciliation`, 120 s in a default installation; its flag is
# --app-resync). Kept at that default's order: a cancel commit is made fast by a refresh.
RESYNC_SECONDS = 120


def tcp_open(port: int) -> Any:
    def check() -> bool:
        with socket.create_connection((ports.LOOPBACK, port), timeout=1):
            return True

    return check


def ensure_redis() -> str:
    """Debian's redis-server (apt-get install as root when missing)."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError("redis-server is not installed: run `apt-get install -y redis-server`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "redis-server"],
    ):
        log(" ".join(argv))
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stderr[-4000:]}")
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("apt-get installed redis-server but it is not on PATH")
    return found


def config_objects(health_lua: str) -> list[dict[str, Any]]:
    """The namespace, argocd-cm (with the NicoTask health check), argocd-secret and the
    default AppProject."""
    part_of = {"app.kubernetes.io/part-of": "argocd"}
    meta = {"namespace": NAMESPACE, "labels": part_of}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "argocd-cm", **meta},
            "data": {HEALTH_KEY: health_lua},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "argocd-secret", **meta},
            "stringData": {"server.secretkey": secrets.token_urlsafe(32)},
        },
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AppProject",
            "metadata": {"name": "default", "namespace": NAMESPACE},
            "spec": {
                "sourceRepos": ["*"],
                "destinations": [{"server": "*", "namespace": "*"}],
                "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
            },
        },
    ]


def _established(crd: dict[str, Any]) -> bool:
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def wait_established(env: DevEnv, crd: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not _established(json.loads(kubectl(env, "get", "crd", crd, "-o", "json"))):
        if time.monotonic() > deadline:
            raise RuntimeError(f"CRD {crd} not Established within {timeout:.0f}s")
        time.sleep(0.2)


def install(env: DevEnv) -> None:
    """Argo CD's CRDs (Established), then its configuration objects."""
    for crd in argocdbuild.crd_paths():
        kubectl(env, "apply", "--server-side", "--force-conflicts", "-f", str(crd))
    # Not `kubectl wait` (nor a jsonpath filter): on a CRD just created they fail
    # (".status.conditions accessor error: <nil>") instead of waiting for the status.
    for name in ("applications.argoproj.io", "appprojects.argoproj.io"):
        wait_established(env, name)
    docs = config_objects(HEALTH_LUA.read_text())
    kubectl(
        env,
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "-",
        stdin=yaml.safe_dump_all(docs),
    )


def _environ(env: DevEnv, component: str, home: Path) -> dict[str, str]:
    for sub in ("ssh", "tls", "gpg", "tmp"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "ARGOCD_BINARY_NAME": component,
        "KUBECONFIG": env.exports()["KUBECONFIG"],
        "ARGOCD_FAKE_IN_CLUSTER": "true",
        "ARGOCD_GPG_ENABLED": "false",
        "ARGOCD_SSH_DATA_PATH": str(home / "ssh"),
        "ARGOCD_TLS_DATA_PATH": str(home / "tls"),
        "ARGOCD_GNUPGHOME": str(home / "gpg"),
        "ARGOCD_ASK_PASS_SOCK": str(home / "askpass.sock"),
        "TMPDIR": str(home / "tmp"),
        "HOME": str(home),
        "PATH": f"{argocdbuild.scripts_dir()}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def start(env: DevEnv, resync_seconds: int = RESYNC_SECONDS) -> None:
    """Install Argo CD's objects and start redis, the repo server and the controller."""
    binary = str(argocdbuild.ensure_built())
    redis = ensure_redis()
    stop(env)  # left from an earlier start in this run folder: its ports are not these
    install(env)
    home = env.run_dir / "argocd"
    home.mkdir(parents=True, exist_ok=True)
    chosen = ports.pick_ports(["redis", "repo", "repo_metrics", "controller_metrics"])
    redis_addr = f"{ports.LOOPBACK}:{chosen['redis']}"
    env.start_process(
        "argocd-redis",
        [
            redis,
            "--port",
            str(chosen["redis"]),
            "--bind",
            ports.LOOPBACK,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(home),
        ],
        ready_check=tcp_open(chosen["redis"]),
    )
    env.start_process(
        "argocd-repo-server",
        [
            binary,
            "--address",
            ports.LOOPBACK,
            "--port",
            str(chosen["repo"]),
            "--metrics-address",
            ports.LOOPBACK,
            "--metrics-port",
            str(chosen["repo_metrics"]),
            "--disable-tls",
            "--client-ca-path",
            "",
            "--redis",
            redis_addr,
            "--logformat",
            "text",
        ],
        env=_environ(env, "argocd-repo-server", home / "repo-server"),
        ready_check=tcp_open(chosen["repo"]),
    )
    env.start_process(
        "argocd-application-controller",
        [
            binary,
            "--namespace",
            NAMESPACE,
            "--repo-server",
            f"{ports.LOOPBACK}:{chosen['repo']}",
            "--repo-server-plaintext",
            "--redis",
            redis_addr,
            "--metrics-port",
            str(chosen["controller_metrics"]),
            "--app-resync",
            str(resync_seconds),
            "--status-processors",
            "2",
            "--operation-processors",
            "2",
            "--persist-resource-health",
            "--logformat",
            "text",
        ],
        env=_environ(env, "argocd-application-controller", home / "controller"),
        ready_check=tcp_open(chosen["controller_metrics"]),
        url=f"http://{ports.LOOPBACK}:{chosen['controller_metrics']}/metrics",
    )


def stop(env: DevEnv) -> None:
    for name in ("argocd-application-controller", "argocd-repo-server", "argocd-redis"):
        env.stop_process(name)


def application(name: str, repo_url: str, path: str, namespace: str) -> dict[str, Any]:
    """An Application syncing `path` of the repository into `namespace`, automated with
    prune and self-heal and server-side apply (examples/argocd-application.yaml)."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "project": "default",
            "source": {"repoURL": repo_url, "targetRevision": "main", "path": path},
            "destination": {"server": IN_CLUSTER, "namespace": namespace},
            "syncPolicy": {
                "automated": {"prune": True, "selfHeal": True},
                "syncOptions": ["ServerSideApply=true"],
            },
        },
    }
