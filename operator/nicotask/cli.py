"""`nicotask operator|worker|shim`: one click CLI for every process.

With nicotask-dev installed (dev/, `make venv`), `nicotask dev` and `nicotask crds`
join them through the `nicotask.cli` entry point group.

Exit codes are the same everywhere: 0 done, 1 the command failed (a check
found drift, a start failed, nothing is up), 2 a usage error (click's).
Each command imports its module when it runs, so `nicotask --help` is fast
and a process loads only what it needs.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points

import click

PLUGIN_GROUP = "nicotask.cli"


@click.group(
    name="nicotask",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
def cli() -> None:
    """Run and cancel NICo (NVIDIA Infra Controller) rack tasks on Kubernetes."""


@contextmanager
def _server_extra(command: str) -> Iterator[None]:
    """The operator, worker and shim need the `server` extra, which a laptop install of
    `kubectl nico` (`pip install nicotask`) leaves out: say so instead of a traceback."""
    try:
        yield
    except ModuleNotFoundError as exc:
        raise click.ClickException(
            f"`nicotask {command}` needs the server extra (no module {exc.name!r}): "
            "pip install 'nicotask[server]'"
        ) from exc


@cli.command()
@click.option("--verbose", is_flag=True, help="debug logging")
def operator(verbose: bool) -> None:
    """Run the kopf operator (NicoTask lifecycle and cancellation)."""
    with _server_extra("operator"):
        from nicotask.operator_main import operator_main

    sys.exit(operator_main(verbose=verbose))


@cli.command()
@click.option("--task-queue", default=None, help="override NICOTASK_TASK_QUEUE")
@click.option("--health-port", type=int, default=None, help="override the health port")
@click.option("--log-level", default="INFO", show_default=True)
def worker(task_queue: str | None, health_port: int | None, log_level: str) -> None:
    """Run the Temporal worker (operation rules against Redfish BMCs)."""
    with _server_extra("worker"):
        from nicotask.temporal.worker import worker_main

    sys.exit(worker_main(task_queue=task_queue, health_port=health_port, log_level=log_level))


@cli.command()
@click.option("--host", default=None, help="listen address (default 127.0.0.1)")
@click.option("--port", type=int, default=None, help="listen port (default 8088)")
@click.option("--kubeconfig", default=None, help="kubeconfig (default KUBECONFIG/in-cluster)")
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
    namespaces: tuple[str, ...],
    log_level: str,
) -> None:
    """Run the REST shim (the NICo task API on top of NicoTask)."""
    with _server_extra("shim"):
        from nicotask.shim.server import shim_main

    sys.exit(
        shim_main(
            host=host,
            port=port,
            kubeconfig=kubeconfig,
            namespaces=list(namespaces),
            log_level=log_level,
        )
    )


def _add_plugin_commands() -> None:
    """Commands that other installed distributions register in the `nicotask.cli` entry
    point group: nicotask-dev (dev/) adds `dev` and `crds`; the image installs neither."""
    for entry in entry_points(group=PLUGIN_GROUP):
        try:
            command = entry.load()
        except Exception as exc:  # a broken dev install must not stop `nicotask operator`
            click.echo(f"nicotask: skipped command {entry.name!r} ({entry.value}): {exc}", err=True)
            continue
        cli.add_command(command, entry.name)


_add_plugin_commands()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of exiting (tests call it too)."""
    try:
        cli.main(args=argv, prog_name="nicotask", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0
