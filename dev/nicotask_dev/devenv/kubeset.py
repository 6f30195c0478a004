"""Several commands of k8s.io/kubernetes at one version, compiled by ONE `go build`.

The kind node image needs kubeadm, kubelet, kubectl, kube-apiserver,
kube-controller-manager, kube-scheduler and kube-proxy of the same release.
One invocation with several main packages links them all from one compile of
the shared packages. The version is gobuild.KUBERNETES_VERSION and the folder
is where gobuild keeps every command of that release, so a kube-apiserver or
kubelet already built one by one (the dev control plane, the node) is reused
here, and Go's build cache shares the compiled packages the other way round.

    python -m nicotask_dev.devenv.kubeset     # build when needed, print the folder
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from . import gobuild

VERSION = gobuild.KUBERNETES_VERSION
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
    return gobuild.kubernetes_binary("kubelet", version).path.parent


def path(name: str, version: str = VERSION) -> Path:
    return folder(version) / name


def _log(msg: str) -> None:
    print(f"[nicotask build] {msg}", file=sys.stderr, flush=True)


def ensure_built(version: str = VERSION) -> Path:
    """Return the folder holding every command of COMMANDS, building the missing ones."""
    folder(version).mkdir(parents=True, exist_ok=True)
    missing = [c for c in COMMANDS if not path(c, version).exists()]
    if not missing:
        return folder(version)
    spec = gobuild.kubernetes_binary(missing[0], version)
    packages = tuple(f"k8s.io/kubernetes/cmd/{c}" for c in missing)
    # Its own wrapper folder: gobuild.ensure_built may resolve a single command in "wrapper".
    workdir = gobuild.prepare_wrapper(spec, folder(version) / "wrapper-set", packages)
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
