"""promtool, for checking and unit-testing the chart's alerting rules.

Debian's `prometheus` package ships promtool: when apt knows the package, its
.deb is downloaded (no root, nothing installed, no service started) and
promtool is taken out of it into ``~/.cache/nicotask/promtool-debian-<version>/``,
in seconds. Elsewhere promtool is built once from its Go module (about 600
CPU-seconds, which a cold CI run cannot spare) into
``~/.cache/nicotask/promtool-<version>/``. ``NICOTASK_PROMTOOL`` names another
binary. ``python -m nicotask_dev.devenv.promtool`` prints the path.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from nicotask_dev.devenv.gobuild import cache_root, go_install_cached

# Prometheus publishes its Go module as v0.<3-digit minor>.<patch> (v0.316.0 = Prometheus 3.16.0).
PROMTOOL_VERSION = "v0.316.0"
PROMTOOL_PACKAGE = "github.com/prometheus/prometheus/cmd/promtool"
DEBIAN_PACKAGE = "prometheus"


def promtool_path(version: str = PROMTOOL_VERSION) -> Path:
    return cache_root() / f"promtool-{version}" / "promtool"


def debian_promtool_path(version: str) -> Path:
    return cache_root() / f"promtool-debian-{version}" / "promtool"


def debian_version() -> str | None:
    """The version of `prometheus` apt would install, or None when apt does not know it."""
    if not shutil.which("apt-cache") or not shutil.which("dpkg-deb"):
        return None
    proc = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", DEBIAN_PACKAGE],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"^Version: (\S+)$", proc.stdout, re.MULTILINE)
    return found.group(1) if proc.returncode == 0 and found else None


def _run(args: list[str], cwd: str) -> None:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{(proc.stdout + proc.stderr)[-2000:]}")


def from_debian(version: str) -> Path:
    """promtool out of the `prometheus` .deb of `version`, cached."""
    path = debian_promtool_path(version)
    if path.exists():
        return path
    print(f"[nicotask build] promtool: from Debian's {DEBIAN_PACKAGE} {version}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # apt-get download as root hands the fetch to the `_apt` user
        _run(["apt-get", "download", "-q", f"{DEBIAN_PACKAGE}={version}"], tmp)
        deb = next(Path(tmp).glob("*.deb"))
        _run(["dpkg-deb", "-x", str(deb), "root"], tmp)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        shutil.copy2(Path(tmp) / "root" / "usr" / "bin" / "promtool", partial)
        partial.rename(path)
    return path


def ensure_promtool(version: str = PROMTOOL_VERSION) -> Path:
    """Return a promtool: NICOTASK_PROMTOOL, else Debian's, else one built from Go."""
    override = os.environ.get("NICOTASK_PROMTOOL")
    if override:
        return Path(override)
    debian = debian_version()
    if debian:
        try:
            return from_debian(debian)
        except (RuntimeError, StopIteration, OSError) as exc:
            print(
                f"[nicotask build] promtool: Debian's package failed ({exc}); building",
                file=sys.stderr,
            )
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
