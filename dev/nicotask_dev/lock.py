"""The lock files: every Python package an install gets, pinned with its hashes.

pyproject.toml and dev/pyproject.toml pin the direct dependencies; requirements/
pins everything, resolved by uv for every platform and every Python the project
supports (`uv pip compile --universal --generate-hashes`):

    requirements/dev.txt      nicotask[server,dev] and nicotask-dev: what `make venv` installs
    requirements/build.txt    the build backend ([build-system] requires): the image's wheel
    requirements/runtime.txt  nicotask[server]: what the image installs
    requirements/kubectl-nico.txt  nicotask without extras: `kubectl nico` on a laptop

The others are resolved within dev.txt's pins: the image and the plugin get the
versions the tests ran with.

`make venv`, `.ci/run` (through `make test`) and the Dockerfile install only from
these files, with `pip install --require-hashes`, so one commit always gets the same
packages. Each lock file's first line records a digest of the inputs it was resolved
from (the dependency tables of both pyproject files and the resolver's options):

    python -m nicotask_dev.lock             resolve again (make lock); pins already in the
                                            files are kept unless an input asks otherwise
    python -m nicotask_dev.lock --upgrade   resolve everything to the newest versions
    python -m nicotask_dev.lock --check     exit 1 when an input changed without relocking,
                                            or a direct requirement is not met by its lock

`--check` reads files only (no network), so `make test` runs it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
LOCK_DIR = REPO / "requirements"
PYPROJECTS = ("pyproject.toml", "dev/pyproject.toml")
# The oldest Python the project supports; --universal adds markers for the newer ones.
PYTHON_VERSION = "3.11"
UV_ARGS = (
    "--universal",
    "--python-version",
    PYTHON_VERSION,
    "--generate-hashes",
    "--custom-compile-command",
    "make lock",
)
DIGEST_PREFIX = "# inputs: sha256:"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


@dataclass(frozen=True)
class Lock:
    name: str
    # What uv resolves: a pyproject (with extras) or a requirements file that make lock writes.
    source: str
    # The requirement tables the lock must satisfy: "build" ([build-system] requires),
    # "base" (nicotask's dependencies), an extra of nicotask, or "nicotask-dev".
    covers: tuple[str, ...]
    extras: tuple[str, ...] = ()
    generated_input: str | None = None
    no_emit: tuple[str, ...] = ()
    # Resolved within another lock's pins, so what the image gets is what the tests ran.
    constraint: str | None = None

    @property
    def path(self) -> Path:
        return LOCK_DIR / f"{self.name}.txt"


def _pyproject(name: str) -> dict[str, Any]:
    return tomllib.loads((REPO / name).read_text())


def build_requires() -> list[str]:
    """The build backend's requirements, the same for both distributions."""
    found = {tuple(_pyproject(p)["build-system"]["requires"]) for p in PYPROJECTS}
    if len(found) != 1:
        raise SystemExit(f"the [build-system] requires of {' and '.join(PYPROJECTS)} differ")
    return list(found.pop())


def locks() -> tuple[Lock, ...]:
    header = "# Written by `make lock` (nicotask_dev.lock): the input of requirements/{}.txt.\n"
    return (  # in the order they are resolved: dev first, the others within its pins
        Lock(
            "dev",
            "requirements/dev.in",
            covers=("base", "server", "dev", "nicotask-dev"),
            generated_input=header.format("dev") + "-e .[server,dev]\n-e ./dev\n",
            no_emit=("nicotask", "nicotask-dev"),
        ),
        Lock(
            "build",
            "requirements/build.in",
            covers=("build",),
            generated_input=header.format("build") + "".join(f"{r}\n" for r in build_requires()),
            constraint="requirements/dev.txt",
        ),
        Lock(
            "runtime",
            "pyproject.toml",
            covers=("base", "server"),
            extras=("server",),
            constraint="requirements/dev.txt",
        ),
        Lock("kubectl-nico", "pyproject.toml", covers=("base",), constraint="requirements/dev.txt"),
    )


def inputs_digest() -> str:
    """A digest of what the locks are resolved from: the dependency tables, not the whole files
    (a change to the ruff or pytest settings needs no relock)."""
    tables: dict[str, Any] = {}
    for name in PYPROJECTS:
        data = _pyproject(name)
        project = data["project"]
        tables[name] = {
            "build-system": data["build-system"]["requires"],
            "requires-python": project.get("requires-python"),
            "dependencies": project.get("dependencies", []),
            "optional-dependencies": project.get("optional-dependencies", {}),
        }
    tables["uv"] = list(UV_ARGS)
    text = json.dumps(tables, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def pins(text: str) -> dict[str, set[str]]:
    """Canonical package name -> the versions a lock file pins (several with markers)."""
    out: dict[str, set[str]] = {}
    for line in text.splitlines():
        m = _PIN.match(line)
        if m:
            out.setdefault(canonicalize_name(m.group(1)), set()).add(m.group(2))
    return out


def direct_requirements(covers: tuple[str, ...]) -> list[Requirement]:
    """The requirements of these tables (nicotask and nicotask-dev themselves left out)."""
    root = _pyproject("pyproject.toml")["project"]
    names: list[str] = []
    for table in covers:
        if table == "build":
            names += build_requires()
        elif table == "base":
            names += root["dependencies"]
        elif table == "nicotask-dev":
            names += _pyproject("dev/pyproject.toml")["project"]["dependencies"]
        else:
            names += root["optional-dependencies"][table]
    own = {"nicotask", "nicotask-dev"}
    return [r for r in map(Requirement, names) if canonicalize_name(r.name) not in own]


def check(digest: str | None = None) -> list[str]:
    """What is wrong with the lock files (empty: they match their inputs)."""
    digest = digest or inputs_digest()
    problems = []
    for lock in locks():
        rel = lock.path.relative_to(REPO)
        if not lock.path.is_file():
            problems.append(f"{rel} is missing")
            continue
        text = lock.path.read_text()
        first = text.splitlines()[0] if text else ""
        if first != DIGEST_PREFIX + digest:
            problems.append(
                f"{rel} was resolved from other inputs than {' and '.join(PYPROJECTS)} now declare"
            )
        if lock.generated_input is not None:
            source = REPO / lock.source
            if not source.is_file() or source.read_text() != lock.generated_input:
                problems.append(f"{lock.source} is not the input `make lock` writes")
        pinned = pins(text)
        if lock.constraint and (REPO / lock.constraint).is_file():
            within = pins((REPO / lock.constraint).read_text())
            for name in sorted(set(pinned) & set(within)):
                if pinned[name] != within[name]:
                    problems.append(
                        f"{rel} pins {name} to {', '.join(sorted(pinned[name]))}, "
                        f"{lock.constraint} to {', '.join(sorted(within[name]))}"
                    )
        for req in direct_requirements(lock.covers):
            versions = pinned.get(canonicalize_name(req.name), set())
            if not any(req.specifier.contains(v, prereleases=True) for v in versions):
                got = ", ".join(sorted(versions)) or "nothing"
                problems.append(f"{rel} pins {req.name} to {got}, not {req.specifier or 'any'}")
    return problems


def declared(*tables: str) -> set[str]:
    """Canonical names of the distributions these tables declare; `nicotask[x]` in a table
    stands for nicotask's base dependencies and those of its extra x."""
    out: set[str] = set()
    for req in direct_requirements(tables):
        out.add(canonicalize_name(req.name))
    for table in tables:
        if table != "nicotask-dev":
            continue
        for name in _pyproject("dev/pyproject.toml")["project"]["dependencies"]:
            req = Requirement(name)
            if canonicalize_name(req.name) == "nicotask":
                out |= declared("base", *sorted(req.extras))
    return out


def modules_of(distributions: set[str]) -> set[str]:
    """The top-level modules the installed distributions provide."""
    from importlib.metadata import packages_distributions

    return {
        module
        for module, dists in packages_distributions().items()
        if {canonicalize_name(d) for d in dists} & distributions
    }


SITECUSTOMIZE = '''"""From nicotask_dev.lock.write_import_blocker: these modules are hidden."""
import importlib.abc
import sys

BLOCKED = {blocked!r}


class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
'''


def write_import_blocker(directory: Path, modules: set[str]) -> Path:
    """A sitecustomize.py in `directory` that makes `modules` unimportable: with `directory` on
    PYTHONPATH, a process behaves as on an install without them."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "sitecustomize.py"
    path.write_text(SITECUSTOMIZE.format(blocked=sorted(modules)))
    return path


def server_only_modules() -> set[str]:
    """The modules of the distributions the `server` extra adds to the base install."""
    return modules_of(declared("server") - declared("base"))


def uv_binary() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if not found:
        raise SystemExit("uv not found: `make venv` installs it (nicotask-dev depends on it)")
    return found


def uv_env() -> dict[str, str]:
    """uv trusts the CA bundle pip is told to trust (a TLS-intercepting mirror or proxy)."""
    env = dict(os.environ)
    cert = env.get("PIP_CERT")
    if cert and "SSL_CERT_FILE" not in env:
        env["SSL_CERT_FILE"] = cert
    if env.get("PIP_INDEX_URL") and "UV_INDEX_URL" not in env:
        env["UV_INDEX_URL"] = env["PIP_INDEX_URL"]
    return env


def compile_all(extra_args: list[str]) -> None:
    LOCK_DIR.mkdir(exist_ok=True)
    digest = inputs_digest()
    for lock in locks():
        if lock.generated_input is not None:
            (REPO / lock.source).write_text(lock.generated_input)
        args = [
            uv_binary(),
            "pip",
            "compile",
            lock.source,
            *UV_ARGS,
            "--quiet",
            "-o",
            str(lock.path.relative_to(REPO)),
        ]
        args += [a for extra in lock.extras for a in ("--extra", extra)]
        args += [a for pkg in lock.no_emit for a in ("--no-emit-package", pkg)]
        args += ["--constraint", lock.constraint] if lock.constraint else []
        proc = subprocess.run(
            [*args, *extra_args],
            cwd=REPO,
            env=uv_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(args[1:4])} failed:\n{proc.stdout}{proc.stderr}")
        text = lock.path.read_text()
        lock.path.write_text(f"{DIGEST_PREFIX}{digest}\n{text}")
        print(f"wrote {lock.path.relative_to(REPO)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nicotask_dev.lock",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--check", action="store_true", help="fail when a lock is out of date")
    parser.add_argument("--upgrade", action="store_true", help="newest versions of everything")
    parser.add_argument(
        "--upgrade-package",
        action="append",
        default=[],
        metavar="NAME",
        help="newest version of this package only (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for problem in problems:
            print(f"lock: {problem}", file=sys.stderr)
        if problems:
            print("lock: run `make lock` and commit requirements/", file=sys.stderr)
            return 1
        print(f"lock: requirements/ matches {' and '.join(PYPROJECTS)}")
        return 0
    extra = ["--upgrade"] if args.upgrade else []
    extra += [a for pkg in args.upgrade_package for a in ("--upgrade-package", pkg)]
    compile_all(extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
