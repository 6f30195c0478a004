"""Flux's source-controller and kustomize-controller, built once from their Go modules.

Neither builds as released from the module proxy: v1.10.1 needs `github.com/fluxcd/pkg`
module zips the proxy refuses (403), and `go install module@version` refuses both
modules for their local replace of `./api`. The v1.9.6 pair builds through one
wrapper module (nicotask.local/build/flux) that requires both controllers, maps each
local `./api` replace to the published api module of the same version, keeps their
other replace directives, and pins the one dependency whose zip is refused
(PINS). One `go build` of both main packages compiles their shared packages
(Kubernetes, controller-runtime, fluxcd/pkg) once.

Next to the binaries: both modules' CRDs (config/crd/bases), which the local Flux
installs. ``python -m nicotask_dev.devenv.fluxbuild`` builds when absent and prints
the folder.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .gobuild import cache_root, go_build, go_command, module_source

VERSION = "v1.9.6"
GO_TOOLCHAIN = "go1.27.3"


@dataclass(frozen=True)
class Controller:
    name: str
    module: str
    version: str = VERSION


CONTROLLERS = (
    Controller("source-controller", "github.com/fluxcd/source-controller"),
    Controller("kustomize-controller", "github.com/fluxcd/kustomize-controller"),
)
# source-controller v1.9.6 requires pkg/artifact v0.18.3, whose zip the proxy refuses
# (403); v0.18.0 is served and differs from v0.18.2 only in its go.mod's requirements.
PINS = {"github.com/fluxcd/pkg/artifact": "v0.18.0"}
WRAPPER = "nicotask.local/build/flux"


def build_dir(version: str = VERSION) -> Path:
    return cache_root() / f"flux-{version}"


def binary_path(name: str, version: str = VERSION) -> Path:
    return build_dir(version) / name


def crd_dir(version: str = VERSION) -> Path:
    return build_dir(version) / "crds"


def timing_path(version: str = VERSION) -> Path:
    """What the first build took (wall and CPU seconds), kept for the docs and CI notes."""
    return build_dir(version) / "build-time.json"


def _log(msg: str) -> None:
    print(f"[nicotask build] {msg}", file=sys.stderr, flush=True)


_REPLACE = re.compile(r"^(\S+)(?:\s+\S+)?\s+=>\s+(\S+)(?:\s+(\S+))?$")


def replaces(gomod: str) -> dict[str, str]:
    """Each replace directive of a go.mod: module -> `./path` or `module version`."""
    out: dict[str, str] = {}
    in_block = False
    for raw in gomod.splitlines():
        line = raw.split("//")[0].strip()
        if line == "replace (":
            in_block = True
            continue
        if in_block and line == ")":
            in_block = False
            continue
        if line.startswith("replace "):
            line = line[len("replace ") :].strip()
        elif not in_block:
            continue
        m = _REPLACE.match(line)
        if m:
            old, new, version = m.groups()
            out[old] = new if version is None else f"{new} {version}"
    return out


def wrapper_gomod(gomods: dict[Controller, str], pins: dict[str, str] = PINS) -> str:
    """The wrapper module's go.mod: both controllers required, each local replace mapped
    to the published module at the controller's version, the other replaces kept (they
    must agree), and `pins` on top."""
    merged: dict[str, str] = {}
    go = "1.26.0"
    for ctl, text in gomods.items():
        m = re.search(r"^go\s+(\S+)", text, re.M)
        if m and _version_key(m.group(1)) > _version_key(go):
            go = m.group(1)
        for old, new in replaces(text).items():
            target = f"{old} {ctl.version}" if new.startswith(".") else new
            if merged.get(old, target) != target:
                raise RuntimeError(
                    f"{ctl.module} replaces {old} by {target}, another by {merged[old]}"
                )
            merged[old] = target
    for old, version in pins.items():
        merged[old] = f"{old} {version}"
    lines = [f"module {WRAPPER}", "", f"go {go}", "", "require ("]
    lines += [f"\t{ctl.module} {ctl.version}" for ctl in gomods]
    lines += [")", "", "replace ("]
    lines += [f"\t{old} => {merged[old]}" for old in sorted(merged)]
    lines.append(")")
    return "\n".join(lines) + "\n"


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def toolchain(required_go: str, local_go: str) -> str:
    """GOTOOLCHAIN: `local` when the machine's Go is new enough, else the pinned one
    (the go command fetches it from the module proxy)."""
    return "local" if _version_key(local_go) >= _version_key(required_go) else GO_TOOLCHAIN


def _installed(version: str) -> bool:
    bins = [binary_path(c.name, version) for c in CONTROLLERS]
    return all(p.exists() for p in bins) and any(crd_dir(version).glob("*.yaml"))


def crd_paths(version: str = VERSION) -> list[Path]:
    return sorted(crd_dir(version).glob("*.yaml"))


def _go(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run([go_command(), *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"go {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return proc.stdout


def _local_go(env: dict[str, str]) -> str:
    return _go(["env", "GOVERSION"], Path.cwd(), env).strip().removeprefix("go")


def ensure_built(version: str = VERSION) -> Path:
    """The folder with both cached binaries (built when absent) and the CRDs."""
    override = os.environ.get("NICOTASK_FLUX")
    if override:
        return Path(override)
    if _installed(version):
        return build_dir(version)
    out = build_dir(version)
    wrapper = out / "wrapper"
    wrapper.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    gomods: dict[Controller, str] = {}
    crds = crd_dir(version)
    crds.mkdir(exist_ok=True)
    for ctl in CONTROLLERS:
        _log(f"{ctl.name} {ctl.version}: fetching {ctl.module} (first time only)")
        source = module_source(ctl.module, ctl.version, out, env)
        gomods[ctl] = (source / "go.mod").read_text()
        for crd in sorted((source / "config" / "crd" / "bases").glob("*.yaml")):
            shutil.copyfile(crd, crds / crd.name)
            (crds / crd.name).chmod(0o644)
    gomod = wrapper_gomod(gomods)
    required = re.search(r"^go\s+(\S+)", gomod, re.M)
    env["GOTOOLCHAIN"] = toolchain(required.group(1) if required else "1.26.0", _local_go(env))
    (wrapper / "go.mod").write_text(gomod)
    (wrapper / "go.sum").unlink(missing_ok=True)
    packages = [ctl.module for ctl in CONTROLLERS]
    _log("flux: resolving the controllers' dependencies in one wrapper module")
    _go(["get", *(f"{c.module}@{c.version}" for c in CONTROLLERS)], wrapper, env)
    _log(f"flux: compiling {' and '.join(packages)} (cached afterwards)")
    staging = out / "bin.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    started, cpu = time.monotonic(), _children_cpu()
    go_build(
        ["-trimpath", "-ldflags", "-s -w", "-o", f"{staging}/", *packages], wrapper, env, "flux"
    )
    wall, cpu = time.monotonic() - started, _children_cpu() - cpu
    for ctl in CONTROLLERS:
        (staging / ctl.name).rename(binary_path(ctl.name, version))
    staging.rmdir()
    timing_path(version).write_text(
        json.dumps(
            {"wall_seconds": round(wall), "cpu_seconds": round(cpu), "cores": os.cpu_count()}
        )
        + "\n"
    )
    _log(f"flux: built in {wall:.0f}s wall, {cpu:.0f}s CPU -> {out}")
    return out


def _children_cpu() -> float:
    """CPU seconds of every waited-for descendant (go build and its compilers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    print(ensure_built())


if __name__ == "__main__":
    main()
