"""The command line: flags, one Invocation per call, exit codes."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from typing import Any, NoReturn

import click

from . import bulk, commands
from .common import PluginError, normalize_for, parse_timeout


@dataclass(frozen=True)
class Invocation:
    """One parsed command line: what to do, to which tasks, where."""

    command: str  # cancel | rerun | report | wait
    task: str = ""
    namespace: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    output: str = "table"
    for_: str = "finished"
    timeout: str = "60s"
    # cancel
    tasks: tuple[str, ...] = ()
    selector: str | None = None
    rack: str | None = None
    all: bool = False
    all_namespaces: bool = False
    mode: str = bulk.TERMINATE
    reason: str | None = None
    dry_run: bool = False
    yes: bool = False
    concurrency: int = bulk.DEFAULT_CONCURRENCY


def _common_options(f: Any) -> Any:
    """-n/--kubeconfig/--context, accepted before and after the subcommand."""
    for option in reversed(
        [
            click.option("-n", "--namespace", default=None, help="namespace of the task"),
            click.option("--kubeconfig", default=None, help="path to the kubeconfig file"),
            click.option("--context", default=None, help="kubeconfig context to use"),
        ]
    ):
        f = option(f)
    return f


def _invoke(command: str, task: str = "", **kw: Any) -> NoReturn:
    # A flag given after the subcommand wins over the same flag given before it.
    before: dict[str, Any] = click.get_current_context().meta.get("kubectl_nico.flags", {})
    flags: dict[str, Any] = {
        k: kw.pop(k) or before.get(k) for k in ("namespace", "kubeconfig", "context")
    }
    sys.exit(execute(Invocation(command, task, **flags, **kw)))


@click.group(
    name="kubectl nico",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@_common_options
def plugin(namespace: str | None, kubeconfig: str | None, context: str | None) -> None:
    """Cancel, rerun, report and wait for NicoTasks (nico.dev/v1alpha1)."""
    flags = {"namespace": namespace, "kubeconfig": kubeconfig, "context": context}
    click.get_current_context().meta["kubectl_nico.flags"] = flags


@plugin.command()
@click.argument("tasks", nargs=-1)
@_common_options
@click.option("-l", "--selector", default=None, help="label selector, e.g. team=infra")
@click.option("--rack", default=None, help="the tasks of this NicoRack (spec.rackRef)")
@click.option("--all", "all_", is_flag=True, help="every task in the namespace")
@click.option(
    "-A", "--all-namespaces", is_flag=True, help="select in every namespace (with -l/--rack/--all)"
)
@click.option(
    "--mode",
    type=click.Choice(bulk.MODES, case_sensitive=False),
    metavar="Terminate|Graceful",
    default=bulk.TERMINATE,
    show_default=True,
    help="Terminate: stop at once; Graceful: finish the running stage, then the rule's cleanup",
)
@click.option("--reason", default=None, help="why: one line, at most 512 characters")
@click.option("--dry-run", is_flag=True, help="list what would be cancelled; change nothing")
@click.option("-y", "--yes", is_flag=True, help="do not ask for confirmation")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=bulk.DEFAULT_CONCURRENCY,
    show_default=True,
    help="patches in flight",
)
def cancel(
    tasks: tuple[str, ...],
    selector: str | None,
    rack: str | None,
    all_: bool,
    all_namespaces: bool,
    mode: str,
    **kw: Any,
) -> None:
    """Cancel tasks: TASK..., or a selection (-l, --rack, --all; -A for every namespace).

    Sets spec.cancel (and cancelMode, cancelReason) and records the caller in
    nico.dev/cancel-requested-by. A selection asks for confirmation first (--yes to
    skip); --dry-run lists it. A task cancelled Graceful is escalated by --mode
    Terminate. Exit 1 when any task was refused or not found.
    """
    canonical = next(m for m in bulk.MODES if m.lower() == mode.lower())
    _invoke(
        "cancel",
        tasks=tasks,
        selector=selector,
        rack=rack,
        all=all_,
        all_namespaces=all_namespaces,
        mode=canonical,
        **kw,
    )


@plugin.command()
@click.argument("task")
@_common_options
def rerun(task: str, **flags: Any) -> None:
    """Create a new task from a finished one (named TASK-rerun-N), linked to it."""
    _invoke("rerun", task, **flags)


@plugin.command()
@click.argument("task")
@_common_options
@click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def report(task: str, output: str, **flags: Any) -> None:
    """Print the stages and steps."""
    _invoke("report", task, output=output, **flags)


@plugin.command()
@click.argument("task")
@_common_options
@click.option(
    "--for",
    "for_",
    default="finished",
    help="finished (default) or a status: Pending, Waiting, Running, Succeeded, Failed, Terminated",
)
@click.option("--timeout", default="60s", help="e.g. 30s, 5m (default 60s)")
def wait(task: str, for_: str, timeout: str, **flags: Any) -> None:
    """Wait for a status."""
    _invoke("wait", task, for_=for_, timeout=timeout, **flags)


async def _run(inv: Invocation) -> int:
    from nicotask.kube import Kube

    kubeconfig = commands.kubeconfig_path(inv.kubeconfig)
    namespace = inv.namespace or commands.current_namespace(kubeconfig, inv.context)
    wanted = normalize_for(inv.for_) if inv.command == "wait" else ""
    timeout = parse_timeout(inv.timeout) if inv.command == "wait" else 0.0
    sel = None
    if inv.command == "cancel":  # usage errors before any request
        sel = bulk.selection(inv.tasks, inv.selector, inv.rack, inv.all, inv.all_namespaces)
        bulk.validate_reason(inv.reason)
    api_client = await commands.new_client(kubeconfig, inv.context)
    try:
        kube = Kube(api_client)
        if sel is not None:
            opts = commands.CancelOptions(
                inv.mode, inv.reason, inv.dry_run, inv.yes, inv.concurrency
            )
            who = None if inv.dry_run else await commands.whoami(api_client)
            return await commands.cmd_cancel(kube, namespace, sel, opts, who)
        if inv.command == "rerun":
            return await commands.cmd_rerun(kube, namespace, inv.task)
        if inv.command == "report":
            return await commands.cmd_report(kube, namespace, inv.task, inv.output)
        return await commands.cmd_wait(kube, namespace, inv.task, wanted, timeout)
    finally:
        await api_client.close()


def execute(inv: Invocation) -> int:
    """Run one invocation; a PluginError is a clear message and exit code 2."""
    try:
        return asyncio.run(_run(inv))
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    """The `kubectl-nico` console script; returns the exit code."""
    try:
        plugin.main(args=argv, prog_name="kubectl nico")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
