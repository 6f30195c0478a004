"""The image built from the Dockerfile (make image): non-root, read-only, runtime only."""

from __future__ import annotations

import subprocess

import pytest

from nicotask_dev.devenv.image import PODMAN_RUN_FLAGS


def run(tag: str, *args: str, entrypoint: str | None = None) -> str:
    argv = ["podman", "run", "--rm", *PODMAN_RUN_FLAGS, "--read-only", "--network", "none"]
    argv += ["--entrypoint", entrypoint] if entrypoint else []
    proc = subprocess.run(
        [*argv, tag, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.parametrize("command", ["operator", "worker", "shim"])
def test_each_command_starts_read_only(image_tag: str, command: str) -> None:
    assert run(image_tag, command, "--help").lower().startswith(f"usage: nicotask {command}")


def python_lines(tag: str, *statements: str) -> list[str]:
    """Run Python statements in the image; one output line per print."""
    return run(tag, "-c", ";".join(statements), entrypoint="python").splitlines()


def test_runs_as_non_root_with_runtime_only(image_tag: str) -> None:
    assert run(image_tag, "-u", entrypoint="id").strip() == "10001"
    dev_modules, test_code = python_lines(
        image_tag,
        "import importlib.util as u, pathlib",
        "print(sorted(m for m in ('pytest', 'ruff', 'mypy', 'sushy_tools', 'schemathesis', 'pip')"
        " if u.find_spec(m)))",
        "site = next(pathlib.Path('/opt/nicotask/lib').glob('python*/site-packages'))",
        "print(sorted(str(p) for p in [*site.glob('tests'), *site.glob('nicotask/**/test_*.py'),"
        " *site.glob('bench')]))",
    )
    assert dev_modules == "[]"
    assert test_code == "[]"


def test_has_no_dev_tooling(image_tag: str) -> None:
    # nicotask-dev (dev/) is not installed, and nothing of it is left in the runtime package
    dev_modules, plugins = python_lines(
        image_tag,
        "import importlib.util as u, importlib.metadata as m",
        "print(sorted(n for n in ('nicotask_dev', 'nicotask.devenv', 'nicotask.crdgen',"
        " 'nicotask.admission', 'nicotask.shim.devissuer', 'nicotask.shim.testing')"
        " if u.find_spec(n)))",
        "print(sorted(e.name for e in m.entry_points(group='nicotask.cli')))",
    )
    assert dev_modules == "[]"
    assert plugins == "[]"
    commands = run(image_tag, "--help").split("Commands:")[1].split()
    assert "dev" not in commands and "crds" not in commands and "shim" in commands
