"""promtool, built once from its Go module and cached by version (like helm.py).

The chart's alerting rules are checked with `promtool check rules`. The binary
lives in ``~/.cache/nicotask/promtool-<version>/promtool``; ``python -m
nicotask.devenv.promtool`` builds it when absent and prints its path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from nicotask.devenv.gobuild import cache_root, go_command

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
    path = promtool_path(version)
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
        f"[nicotask build] promtool {version}: go install {PROMTOOL_PACKAGE} (first time only)",
        file=sys.stderr,
        flush=True,
    )
    started = time.monotonic()
    proc = subprocess.run(
        [go_command(), "install", "-ldflags", "-s -w", f"{PROMTOOL_PACKAGE}@{version}"],
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"go install {PROMTOOL_PACKAGE}@{version} failed:\n{proc.stderr[-4000:]}"
        )
    (staging / "promtool").rename(path)
    staging.rmdir()
    print(
        f"[nicotask build] promtool: built in {time.monotonic() - started:.0f}s -> {path}",
        file=sys.stderr,
        flush=True,
    )
    return path


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
