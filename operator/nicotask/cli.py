"""`nicotask operator|worker|shim|crds|dev`: one click CLI for every process.

Exit codes are the same everywhere: 0 done, 1 the command failed (a check
found drift, a start failed, nothing is up), 2 a usage error (click's).
Each command imports its module when it runs, so `nicotask --help` is fast
and a process loads only what it needs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group(
    name="nicotask",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
def cli() -> None:
    """Run and cancel NICo (NVIDIA Infra Controller) rack tasks on Kubernetes."""


@cli.command()
@click.option("--verbose", is_flag=True, help="debug logging")
def operator(verbose: bool) -> None:
    """Run the kopf operator (NicoTask lifecycle and cancellation)."""
    from nicotask.operator_main import operator_main

    sys.exit(operator_main(verbose=verbose))


@cli.command()
@click.option("--task-queue", default=None, help="override NICOTASK_TASK_QUEUE")
@click.option("--health-port", type=int, default=None, help="override the health port")
@click.option("--log-level", default="INFO", show_default=True)
def worker(task_queue: str | None, health_port: int | None, log_level: str) -> None:
    """Run the Temporal worker (operation rules against Redfish BMCs)."""
    from nicotask.temporal.worker import worker_main

    sys.exit(worker_main(task_queue=task_queue, health_port=health_port, log_level=log_level))


@cli.command()
@click.option("--host", default=None, help="listen address (default 127.0.0.1)")
@click.option("--port", type=int, default=None, help="listen port (default 8088)")
@click.option("--kubeconfig", default=None, help="kubeconfig (default KUBECONFIG/in-cluster)")
@click.option(
    "--dev-issuer-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="also trust the dev token issuer whose keys are in this folder",
)
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    help="namespace to serve (repeatable; default: all)",
)
@click.option("--log-level", default="info", show_default=True)
def shim(
    host: str | None,
    port: int | None,
    kubeconfig: str | None,
    dev_issuer_dir: Path | None,
    namespaces: tuple[str, ...],
    log_level: str,
) -> None:
    """Run the REST shim (the NICo task API on top of NicoTask)."""
    from nicotask.shim.server import shim_main

    sys.exit(
        shim_main(
            host=host,
            port=port,
            kubeconfig=kubeconfig,
            dev_issuer_dir=dev_issuer_dir,
            namespaces=list(namespaces),
            log_level=log_level,
        )
    )


@cli.command()
@click.option("--check", "check_only", is_flag=True, help="fail (exit 1) when files differ")
@click.option(
    "--dir", "crds_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="CRD directory (default: crds/)",
)  # fmt: skip
@click.option(
    "--docs", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Markdown file with the field reference (default: docs/resource.md)",
)  # fmt: skip
@click.option("--no-docs", is_flag=True, help="leave the docs alone")
@click.option(
    "--chart-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="the Helm chart's CRD directory (default: charts/nicotask/crds with the default --dir)",
)  # fmt: skip
@click.option("--no-chart", is_flag=True, help="leave the chart's CRDs alone")
def crds(
    check_only: bool,
    crds_dir: Path | None,
    docs: Path | None,
    no_docs: bool,
    chart_dir: Path | None,
    no_chart: bool,
) -> None:
    """Generate crds/*.yaml (and the chart's copy, and the field reference) from the models."""
    from nicotask import crdgen

    sys.exit(
        crdgen.crds_main(
            check_only=check_only,
            crds_dir=crds_dir or crdgen.DEFAULT_CRDS_DIR,
            docs=None if no_docs else (docs or crdgen.DEFAULT_DOCS_FILE),
            chart_dir=chart_dir,
            no_chart=no_chart,
        )
    )


def _add_dev() -> None:
    # The local environment is dev tooling: absent from an install without it.
    try:
        from nicotask.devenv.cli import dev
    except ImportError:  # pragma: no cover
        return
    cli.add_command(dev)


_add_dev()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of exiting (tests call it too)."""
    try:
        cli.main(args=argv, prog_name="nicotask", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0
