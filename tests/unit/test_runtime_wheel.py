"""The runtime wheel (what the image installs) has the runtime and none of the dev tooling.

The wheel is built the way the Dockerfile builds it (`pip wheel` of pyproject.toml,
README.md and operator/), offline, from a copy of those inputs in a temporary folder,
so nothing stale in build/ can hide or add a module.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEV_PACKAGE = REPO / "dev" / "nicotask_dev"

# One module of each runtime part, and the files the console scripts need.
RUNTIME_FILES = [
    "nicotask/__main__.py",
    "nicotask/cli.py",
    "nicotask/api/__init__.py",
    "nicotask/api/task.py",
    "nicotask/kube/__init__.py",
    "nicotask/settings.py",
    "nicotask/operator_main.py",
    "nicotask/operator/controller.py",
    "nicotask/operator/handlers.py",
    "nicotask/temporal/worker.py",
    "nicotask/temporal/workflows.py",
    "nicotask/temporal/activities.py",
    "nicotask/shim/server.py",
    "nicotask/shim/app.py",
    "nicotask/shim/config.py",
    "nicotask/shim/jwks.py",
    "nicotask/kubectl_nico/cli.py",
    "nicotask/healthcheck.py",
    "nicotask/redfish.py",
    "nicotask/py.typed",
]
# Dev-only names, wherever in the wheel they would turn up again.
DEV_NAMES = {"devenv", "devissuer.py", "testing.py", "crdgen.py", "admission.py", "nicotask_dev"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(REPO / "operator", src / "operator", ignore=ignore)
    out = tmp_path_factory.mktemp("wheels")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--quiet", "--wheel-dir", str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = out.glob("nicotask-*.whl")
    return zipfile.ZipFile(built)


def _modules(wheel: zipfile.ZipFile) -> list[str]:
    return [n for n in wheel.namelist() if ".dist-info/" not in n]


def test_the_runtime_modules_are_in_it(wheel: zipfile.ZipFile) -> None:
    missing = sorted(set(RUNTIME_FILES) - set(_modules(wheel)))
    assert not missing, f"the runtime wheel lacks {missing}"


def test_no_dev_module_is_in_it(wheel: zipfile.ZipFile) -> None:
    modules = _modules(wheel)
    assert not [n for n in modules if DEV_NAMES & set(n.split("/"))]
    # Every module of nicotask-dev at the place it had in the runtime package (but
    # nicotask_dev/cli.py, `nicotask crds`, which is not nicotask/cli.py).
    dev_paths = {
        "nicotask/" + p.relative_to(DEV_PACKAGE).as_posix()
        for p in DEV_PACKAGE.rglob("*.py")
        if p.name != "__init__.py" and "__pycache__" not in p.parts
    } - {"nicotask/cli.py"}
    assert len(dev_paths) > 15  # the check is real: devenv/*, crdgen, devissuer, ...
    assert not dev_paths & set(modules)


def test_no_runtime_module_imports_dev_code(wheel: zipfile.ZipFile) -> None:
    importers = []
    for name in _modules(wheel):
        if not name.endswith(".py"):
            continue
        for node in ast.walk(ast.parse(wheel.read(name), filename=name)):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            else:
                continue
            for target in targets:
                parts = set(target.split("."))
                if "nicotask_dev" in parts or parts & {"devenv", "devissuer", "crdgen"}:
                    importers.append(f"{name}: {target}")
    assert not importers


def test_it_registers_no_cli_plugin(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "nicotask = nicotask.__main__:main" in text
    assert "kubectl-nico = nicotask.kubectl_nico:main" in text
    assert "[nicotask.cli]" not in text  # `nicotask dev` and `crds` come from nicotask-dev
