"""The `nicotask` CLI (click): subcommands, help and exit codes are consistent, and
every command line the Makefile and the docs print still parses."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

import nicotask.cli as cli_module
from nicotask.cli import cli, main

REPO = Path(__file__).resolve().parents[2]
COMMANDS = ["operator", "worker", "shim", "crds", "dev"]
DEV_COMMANDS = ["up", "build", "down", "status", "env", "token", "shim"]


def test_no_command_prints_help_and_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    out = capsys.readouterr()
    assert all(c in out.out + out.err for c in COMMANDS)


@pytest.mark.parametrize("argv", [["--help"], ["-h"], *[[c, "--help"] for c in COMMANDS]])
def test_help_exits_zero(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    assert "Usage: nicotask" in capsys.readouterr().out


@pytest.mark.parametrize("sub", DEV_COMMANDS)
def test_dev_help_exits_zero(sub: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dev", sub, "--help"]) == 0
    assert f"Usage: nicotask dev {sub}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [["bogus"], ["dev", "bogus"], ["dev", "up", "--bogus"], ["worker", "--health-port", "x"],
     ["dev", "token"]],  # token: --org is required
)  # fmt: skip
def test_usage_errors_exit_two(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "Error:" in capsys.readouterr().err


def test_failures_exit_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = str(tmp_path / "nothing")
    assert main(["dev", "status", "--run-dir", empty]) == 1
    assert "not up" in capsys.readouterr().out
    assert main(["dev", "env", "--run-dir", empty]) == 1
    assert "nothing is up" in capsys.readouterr().err
    # --run-dir before the subcommand means the same
    assert main(["dev", "--run-dir", empty, "env"]) == 1
    assert empty in capsys.readouterr().err


def test_crds_check_passes_on_the_repository(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crds", "--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def _documented_command_lines() -> list[str]:
    """`nicotask dev|crds ...` lines of the Makefile, README and docs (variables filled in)."""
    lines = []
    for path in [REPO / "Makefile", REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = path.read_text().replace("$(RUN_DIR)", "/tmp/x").replace("$(BIN)/", "")
        for m in re.finditer(r"\bnicotask ((?:dev|crds)\b[^`|)\n\"#]*)", text):
            lines.append(m.group(1).strip())
    return sorted(set(lines))


def test_documented_command_lines_parse(capsys: pytest.CaptureFixture[str]) -> None:
    lines = _documented_command_lines()
    assert "dev up --run-dir /tmp/x --with-system" in lines  # make run
    for line in lines:
        argv = [a.strip("'") for a in line.split() if "..." not in a]
        assert main([*argv, "--help"]) == 0, line
    capsys.readouterr()


def test_python_dash_m_runs_the_same_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "nicotask", "shim", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "--namespace" in proc.stdout


def test_dev_and_crds_come_from_nicotask_dev() -> None:
    # registered as `nicotask.cli` entry points by dev/pyproject.toml, absent from the image
    assert cli.commands["dev"].callback.__module__ == "nicotask_dev.devenv.cli"  # type: ignore[union-attr]
    assert cli.commands["crds"].callback.__module__ == "nicotask_dev.cli"  # type: ignore[union-attr]
    assert {"operator", "worker", "shim"} <= set(cli.commands)


def test_a_broken_plugin_is_skipped_not_fatal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = EntryPoint("broken", "nicotask_dev.no_such_module:cmd", cli_module.PLUGIN_GROUP)
    monkeypatch.setattr(cli_module, "entry_points", lambda group: [broken])
    cli_module._add_plugin_commands()
    assert "skipped command 'broken'" in capsys.readouterr().err
    assert "broken" not in cli.commands
    assert main(["worker", "--help"]) == 0


def test_dev_shim_runs_the_shim_trusting_the_dev_issuer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nicotask.shim import server
    from nicotask.shim.config import ShimSettings
    from nicotask_dev.shim.devissuer import issuer_config

    calls: list[dict[str, Any]] = []

    def shim_main(**kwargs: Any) -> int:
        calls.append({**kwargs, "issuers": ShimSettings().all_issuers()})
        return 0

    monkeypatch.setattr(server, "shim_main", shim_main)
    monkeypatch.setenv("NICOTASK_SHIM_ISSUERS_FILE", "restored after the test")
    assert main(["dev", "shim", "--run-dir", str(tmp_path), "--port", "9999"]) == 0
    (call,) = calls
    assert call["port"] == 9999
    assert call["issuers"] == [issuer_config(tmp_path)]
