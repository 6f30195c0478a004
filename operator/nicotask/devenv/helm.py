"""helm, built once from its Go module (helm.sh/helm/v3) and cached by version.

Like kube-apiserver and etcd (gobuild.py) the binary lives outside the
checkout, in ``~/.cache/nicotask/helm-<version>/helm``, so fresh clones
reuse it. ``python -m nicotask.devenv.helm`` builds it when absent and prints
its path (for the Makefile and shell scripts).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from nicotask.devenv.gobuild import cache_root, go_command

HELM_VERSION = "v3.22.0"
HELM_PACKAGE = "helm.sh/helm/v3/cmd/helm"


def helm_path(version: str = HELM_VERSION) -> Path:
    return cache_root() / f"helm-{version}" / "helm"


def _ldflags(go: str, version: str, env: dict[str, str]) -> str:
    """The ldflags of helm's own Makefile: version, and the Kubernetes version that
    `helm template`/`helm lint` assume (client-go v0.X.Y -> 1.X), which a bare
    `go install` would leave at v1.20."""
    proc = subprocess.run(
        [go, "mod", "download", "-json", f"helm.sh/helm/v3@{version}"],
        env=env, capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"go mod download helm.sh/helm/v3@{version} failed:\n{proc.stderr}")
    gomod = Path(json.loads(proc.stdout)["GoMod"]).read_text()
    m = re.search(r"^\s*k8s\.io/client-go v(\d+)\.(\d+)\.", gomod, re.M)
    if m is None:
        raise RuntimeError("cannot find k8s.io/client-go in helm's go.mod")
    major, minor = int(m.group(1)) + 1, m.group(2)
    flags = ["-s", "-w", f"-X helm.sh/helm/v3/internal/version.version={version}"]
    for pkg in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
        flags += [f"-X {pkg}.k8sVersionMajor={major}", f"-X {pkg}.k8sVersionMinor={minor}"]
    return " ".join(flags)


def ensure_helm(version: str = HELM_VERSION) -> Path:
    """Return the cached helm binary, building it with `go install` when absent."""
    override = os.environ.get("NICOTASK_HELM")
    if override:
        return Path(override)
    path = helm_path(version)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / "gobin.partial"
    staging.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "GOBIN": str(staging),
        "CGO_ENABLED": "0",
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "-trimpath",
    }
    print(
        f"[nicotask build] helm {version}: go install {HELM_PACKAGE} (first time only)",
        file=sys.stderr,
        flush=True,
    )
    started = time.monotonic()
    go = go_command()
    proc = subprocess.run(
        [go, "install", "-ldflags", _ldflags(go, version, env), f"{HELM_PACKAGE}@{version}"],
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"go install {HELM_PACKAGE}@{version} failed:\n{proc.stderr[-4000:]}")
    (staging / "helm").rename(path)
    staging.rmdir()
    print(
        f"[nicotask build] helm: built in {time.monotonic() - started:.0f}s -> {path}",
        file=sys.stderr,
        flush=True,
    )
    return path


def main() -> None:
    print(ensure_helm())


if __name__ == "__main__":
    main()
