"""Several commands of k8s.io/kubernetes at one version, compiled by ONE `go build`.

The kind node image needs kubeadm, kubelet, kubectl, kube-apiserver,
kube-controller-manager, kube-scheduler and kube-proxy of the same release.
Built one by one, each `go build` links its own copy and on a 2-core machine a
cold kube-apiserver alone takes ~25 minutes; one invocation with several main
packages compiles every shared package once. The version is the node's kubelet
version (node.KUBELET_VERSION), so an already cached kubelet is reused, and a
kubelet built here is also put where node.py looks for it.

    python -m nicotask_dev.devenv.kubeset     # build when needed, print the folder
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from . import gobuild

VERSION = "v1.35.4"  # == node.KUBELET_VERSION (the newest kubelet that runs on cgroup v1)
COMMANDS = (
    "kubeadm",
    "kubelet",
    "kubectl",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
)


def folder(version: str = VERSION) -> Path:
    return gobuild.cache_root() / f"kubernetes-{version}"


def path(name: str, version: str = VERSION) -> Path:
    return folder(version) / name


def _log(msg: str) -> None:
    print(f"[nicotask build] {msg}", file=sys.stderr, flush=True)


def _adopt_kubelet(version: str) -> None:
    """Share the kubelet with node.py in both directions (hard link, else copy)."""
    ours, theirs = path("kubelet", version), gobuild.kubernetes_binary("kubelet", version).path
    src, dst = (theirs, ours) if theirs.exists() else (ours, theirs)
    if not src.exists() or dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def ensure_built(version: str = VERSION) -> Path:
    """Return the folder holding every command of COMMANDS, building the missing ones."""
    folder(version).mkdir(parents=True, exist_ok=True)
    _adopt_kubelet(version)
    missing = [c for c in COMMANDS if not path(c, version).exists()]
    if not missing:
        return folder(version)
    spec = gobuild.kubernetes_binary(missing[0], version)
    packages = tuple(f"k8s.io/kubernetes/cmd/{c}" for c in missing)
    workdir = gobuild.prepare_wrapper(spec, folder(version) / "wrapper", packages)
    env = gobuild.build_env()
    staging = folder(version) / "partial"
    staging.mkdir(exist_ok=True)
    _log(
        f"kubernetes {version}: compiling {', '.join(missing)} in one go build "
        "(tens of minutes on 2 cores the first time; cached afterwards)"
    )
    started = time.monotonic()
    args = ["-trimpath", "-ldflags", " ".join(spec.ldflags), "-o", str(staging) + "/", *packages]
    gobuild.go_build(args, workdir, env, f"kubernetes {version} ({', '.join(missing)})")
    for name in missing:
        (staging / name).rename(path(name, version))
    staging.rmdir()
    _adopt_kubelet(version)
    _log(
        f"kubernetes {version}: built {', '.join(missing)} in "
        f"{time.monotonic() - started:.0f}s -> {folder(version)}"
    )
    return folder(version)


def main() -> None:
    try:
        print(ensure_built())
    except RuntimeError as exc:
        print(f"nicotask kubeset build failed: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
