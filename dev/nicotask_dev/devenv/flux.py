"""Flux on the local control plane: source-controller, kustomize-controller and a Git server.

The controllers are what a Flux installation runs (fluxbuild.py builds them), here
managed processes of the run folder (`flux-source-controller`,
`flux-kustomize-controller`, `flux-git-http`), pointed at the environment's
kube-apiserver with its admin kubeconfig and watching only the `flux-system`
namespace (RUNTIME_NAMESPACE), as `flux install` sets them up. source-controller
serves its artifacts on loopback (--storage-adv-addr), where kustomize-controller
fetches them. No leader election (one replica), no notification-controller (nothing
here reads events), no helm- or image-automation controllers.

Git is served by `git http-backend` (githttp.py): Flux clones http(s) and ssh only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml

from . import fluxbuild, ports
from .argocd import tcp_open, wait_established
from .env import DevEnv
from .kube import http_ok
from .system import kubectl

NAMESPACE = "flux-system"
SOURCE_API = "source.toolkit.fluxcd.io/v1"
KUSTOMIZE_API = "kustomize.toolkit.fluxcd.io/v1"
# Applied before every other object of a Kustomization (after CRDs and namespaces), like
# Argo CD's earlier sync wave: with one stage, kustomize-controller applies concurrently
# and a task can reach the operator before its rack (docs/gitops.md).
STAGE_KINDS = ("nico.dev/NicoRack", "nico.dev/NicoOperationRule")
# A new source revision interrupts a running health check (opt-in in kustomize-controller
# v1.9): without it, a cancel commit waits until the check of the previous revision ends,
# which for a running task is the Kustomization's `timeout` (docs/gitops.md).
FEATURE_GATES = "CancelHealthCheckOnNewRevision=true"
COMPONENTS = ("flux-kustomize-controller", "flux-source-controller", "flux-git-http")


def install(env: DevEnv) -> None:
    """Flux's CRDs (Established) and the flux-system namespace."""
    for crd in fluxbuild.crd_paths():
        kubectl(env, "apply", "--server-side", "--force-conflicts", "-f", str(crd))
    for crd in fluxbuild.crd_paths():
        wait_established(env, yaml.safe_load(crd.read_text())["metadata"]["name"])
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    kubectl(env, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(ns))


def _environ(env: DevEnv, home: Path) -> dict[str, str]:
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "KUBECONFIG": env.exports()["KUBECONFIG"],
        "RUNTIME_NAMESPACE": NAMESPACE,
        "HOME": str(home),
        "TMPDIR": str(home / "tmp"),
        "NO_PROXY": f"{ports.LOOPBACK},localhost",
    }


def _common(chosen: dict[str, int], prefix: str) -> list[str]:
    return [
        "--watch-all-namespaces=false",
        "--enable-leader-election=false",
        f"--metrics-addr={ports.LOOPBACK}:{chosen[prefix + '_metrics']}",
        f"--health-addr={ports.LOOPBACK}:{chosen[prefix + '_health']}",
        "--log-encoding=console",
    ]


def _ready(port: int) -> Any:
    return lambda: http_ok(f"http://{ports.LOOPBACK}:{port}/readyz")


def start(env: DevEnv, git_root: Path) -> str:
    """Install Flux's objects, serve the bare repositories under `git_root` over HTTP and
    start both controllers; the base URL of the repositories (`<url>/<name>.git`)."""
    built = fluxbuild.ensure_built()
    stop(env)  # left from an earlier start in this run folder: its ports are not these
    install(env)
    home = env.run_dir / "flux"
    (home / "storage").mkdir(parents=True, exist_ok=True)  # source-controller wants it made
    names = ["git", "storage", "sc_metrics", "sc_health", "kc_metrics", "kc_health"]
    chosen = ports.pick_ports(names)
    env.start_process(
        "flux-git-http",
        [
            sys.executable,
            "-m",
            "nicotask_dev.devenv.githttp",
            "--root",
            str(git_root),
            "--port",
            str(chosen["git"]),
        ],
        ready_check=tcp_open(chosen["git"]),
    )
    storage = f"{ports.LOOPBACK}:{chosen['storage']}"
    env.start_process(
        "flux-source-controller",
        [
            str(built / "source-controller"),
            *_common(chosen, "sc"),
            f"--storage-path={home / 'storage'}",
            f"--storage-addr={storage}",
            f"--storage-adv-addr={storage}",
        ],
        env=_environ(env, home / "source-controller"),
        ready_check=_ready(chosen["sc_health"]),
        url=f"http://{storage}/",
    )
    env.start_process(
        "flux-kustomize-controller",
        [
            str(built / "kustomize-controller"),
            *_common(chosen, "kc"),
            "--no-remote-bases=true",
            f"--custom-apply-stage-kinds={','.join(STAGE_KINDS)}",
            f"--feature-gates={FEATURE_GATES}",
        ],
        env=_environ(env, home / "kustomize-controller"),
        ready_check=_ready(chosen["kc_health"]),
    )
    return f"http://{ports.LOOPBACK}:{chosen['git']}"


def stop(env: DevEnv) -> None:
    for name in COMPONENTS:
        env.stop_process(name)


def git_repository(name: str, url: str, interval: str = "10m") -> dict[str, Any]:
    """A GitRepository on branch main. The interval is long: the tests (and a user with
    a webhook receiver) ask for a fetch by the requestedAt annotation after each push."""
    return {
        "apiVersion": SOURCE_API,
        "kind": "GitRepository",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"interval": interval, "url": url, "ref": {"branch": "main"}},
    }


# kstatus alone reads a NicoTask the operator has not written a status to yet (no
# conditions) as Current, so `wait: true` made the Kustomization Ready at once while its
# new task was still Pending (seen in the e2e run). With these CEL checks only a finished
# task is Current; a task without status makes the expression fail, which Flux counts as
# Unknown and keeps waiting. kstatus's observedGeneration check still runs first.
TASK_HEALTH = {
    "apiVersion": "nico.dev/v1alpha1",
    "kind": "NicoTask",
    "current": "status.status in ['Succeeded', 'Terminated']",
    "failed": "status.status == 'Failed'",
}


def kustomization(
    name: str, source: str, path: str, namespace: str, timeout: str = "2m"
) -> dict[str, Any]:
    """A Kustomization applying `path` into `namespace` with prune and wait
    (samples/gitops/flux-kustomization.yaml)."""
    return {
        "apiVersion": KUSTOMIZE_API,
        "kind": "Kustomization",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "interval": "10m",
            "retryInterval": "30s",
            "sourceRef": {"kind": "GitRepository", "name": source},
            "path": f"./{path}",
            "targetNamespace": namespace,
            "prune": True,
            "wait": True,
            "timeout": timeout,
            "healthCheckExprs": [TASK_HEALTH],
        },
    }
