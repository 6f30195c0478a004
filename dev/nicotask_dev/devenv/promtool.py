"""promtool, built once from its Go module and cached by version (like helm.py).

The chart's alerting rules are checked with `promtool check rules`. The binary
lives in ``~/.cache/nicotask/promtool-<version>/promtool``; ``python -m
nicotask_dev.devenv.promtool`` builds it when absent and prints its path.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from nicotask_dev.devenv.gobuild import cache_root, go_install_cached

# Prometheus publishes its Go module as v0.<3-digit minor>.<patch> (v0.316.0 = Prometheus 3.16.0).
PROMTOOL_VERSION = "v0.316.0"
PROMTOOL_PACKAGE = "github.com/prometheus/prometheus/cmd/promtool"


def promtool_path(version: str = PROMTOOL_VERSION) -> Path:
    return cache_root() / f"promtool-{version}" / "promtool"


def ensure_promtool(version: str = PROMTOOL_VERSION) -> Path:
    """Return the cached promtool, building it with `go install` when absent."""
    override = os.environ.get("NICOTASK_PROMTOOL")
    if override:
        return Path(override)
    return go_install_cached("promtool", PROMTOOL_PACKAGE, version, promtool_path(version))


def check_rules(*files: Path) -> subprocess.CompletedProcess[str]:
    """`promtool check rules FILE...` (exit code 0 when every rule parses and is valid)."""
    return subprocess.run(
        [str(ensure_promtool()), "check", "rules", *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_rules(test_file: Path) -> subprocess.CompletedProcess[str]:
    """`promtool test rules FILE`: alert unit tests (input series, expected alerts)."""
    return subprocess.run(
        [str(ensure_promtool()), "test", "rules", str(test_file)],
        capture_output=True,
        text=True,
        check=False,
    )


def main() -> None:
    print(ensure_promtool())


if __name__ == "__main__":
    main()
