"""Argo CD, built once from its Go module (github.com/argoproj/argo-cd/v3) and cached by version.

`go install module/cmd@version` refuses the module: its go.mod replaces
`github.com/argoproj/argo-cd/gitops-engine/v3` with the local folder
`./gitops-engine`. That module is published at the same version, so the build
copies the module's source out of Go's module cache, drops that one replace
directive and runs `go build ./cmd` in the copy: one `argocd` binary that is
every Argo CD component (it picks one by ARGOCD_BINARY_NAME or its own name).
The module's go.mod asks for a newer Go than the machine's, so the build sets
GOTOOLCHAIN (the go command fetches that toolchain from the module proxy).

Next to the binary: the module's CRDs (manifests/crds), which the local Argo CD
installs, and the scripts the image puts on PATH (hack/*-wrapper.sh).
``python -m nicotask_dev.devenv.argocdbuild`` builds when absent and prints the
binary's path.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from .gobuild import cache_root, go_build, module_source

VERSION = "v3.6.2"
MODULE = "github.com/argoproj/argo-cd/v3"
GO_TOOLCHAIN = "go1.27.3"
LOCAL_REPLACE = "replace github.com/argoproj/argo-cd/gitops-engine/v3 => ./gitops-engine"
CRD_FILES = ("application-crd.yaml", "appproject-crd.yaml")
# Scripts the image puts on PATH (its Dockerfile copies them to /usr/local/bin): the repo
# server runs git-verify-wrapper.sh on every revision it renders (and fails the render
# with "permission denied" when it is missing).
SCRIPTS = ("git-verify-wrapper.sh", "gpg-wrapper.sh")


def build_dir(version: str = VERSION) -> Path:
    return cache_root() / f"argocd-{version}"


def binary_path(version: str = VERSION) -> Path:
    return build_dir(version) / "argocd"


def crd_paths(version: str = VERSION) -> list[Path]:
    return [build_dir(version) / "crds" / name for name in CRD_FILES]


def scripts_dir(version: str = VERSION) -> Path:
    """The folder of the image's helper scripts, for the repo server's PATH."""
    return build_dir(version) / "bin"


def _installed(version: str) -> bool:
    files = [*crd_paths(version), *(scripts_dir(version) / n for n in SCRIPTS)]
    return all(p.exists() for p in files)


def _log(msg: str) -> None:
    print(f"[nicotask build] {msg}", file=sys.stderr, flush=True)


def without_local_replace(gomod: str) -> str:
    """The go.mod with its replace of gitops-engine by the local folder removed."""
    lines = [line for line in gomod.splitlines() if line.strip() != LOCAL_REPLACE]
    if len(lines) == len(gomod.splitlines()):
        raise RuntimeError(f"{MODULE}'s go.mod has no line {LOCAL_REPLACE!r}: check the build")
    return "\n".join(lines) + "\n"


def _environ() -> dict[str, str]:
    return {
        **os.environ,
        "GOTOOLCHAIN": GO_TOOLCHAIN,
        "GOFLAGS": "-mod=mod",
        "CGO_ENABLED": "0",
    }


def ensure_built(version: str = VERSION) -> Path:
    """The cached `argocd` binary (built when absent), with the CRDs and scripts next to it."""
    override = os.environ.get("NICOTASK_ARGOCD")
    if override:
        return Path(override)
    path = binary_path(version)
    if path.exists() and _installed(version):
        return path
    build_dir(version).mkdir(parents=True, exist_ok=True)
    env = _environ()
    _log(f"argocd {version}: fetching {MODULE} (first time only)")
    module_dir = module_source(MODULE, version, build_dir(version), env)
    crds = build_dir(version) / "crds"
    crds.mkdir(exist_ok=True)
    for name in CRD_FILES:
        shutil.copyfile(module_dir / "manifests" / "crds" / name, crds / name)
        (crds / name).chmod(0o644)
    scripts_dir(version).mkdir(exist_ok=True)
    for name in SCRIPTS:
        shutil.copyfile(module_dir / "hack" / name, scripts_dir(version) / name)
        (scripts_dir(version) / name).chmod(0o755)
    if path.exists():
        return path
    src = build_dir(version) / "src"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(module_dir, src)
    for p in [src, *src.rglob("*")]:  # Go's module cache is read-only
        if not p.is_symlink():
            p.chmod(0o755 if p.is_dir() else 0o644)
    gomod = src / "go.mod"
    gomod.write_text(without_local_replace(gomod.read_text()))
    _log(
        f"argocd {version}: compiling ./cmd (271 s on 2 idle cores; 57 min measured on "
        "2 cores shared with three other Go builds; cached afterwards)"
    )
    started = time.monotonic()
    tmp = path.with_suffix(".partial")
    ldflags = f"-s -w -X {MODULE}/common.version={version.lstrip('v')}"
    go_build(["-trimpath", "-ldflags", ldflags, "-o", str(tmp), "./cmd"], src, env, "argocd")
    tmp.rename(path)
    shutil.rmtree(src, ignore_errors=True)
    _log(f"argocd: built in {time.monotonic() - started:.0f}s -> {path}")
    return path


def main() -> None:
    print(ensure_built())


if __name__ == "__main__":
    main()
