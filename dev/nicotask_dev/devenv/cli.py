"""`nicotask dev up | build | down | status | env | token | shim` (click)."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from .env import DevEnv, default_run_dir
from .process import StartError


def _load_systems(path: Path) -> list[dict[str, Any]]:
    from . import redfish

    raw = json.loads(path.read_text())
    out = []
    for item in raw:
        if isinstance(item, str):
            item = {"name": item}
        sysd = redfish.system(item["name"], item.get("type", ""), item.get("power_state", "Off"))
        if item.get("uuid"):
            sysd["uuid"] = item["uuid"]
        out.append(sysd)
    return out


def describe(status: dict[str, Any]) -> str:
    """Human summary: each component, URL, PID and log."""
    lines = [f"run folder: {status.get('run_dir', '?')}  ({'up' if status.get('up') else 'DOWN'})"]
    for p in status.get("processes", []):
        alive = "running" if p.get("alive", True) else "DEAD"
        lines.append(
            f"  {p['name']:<15} {alive:<8} pid {p['pid']:<8} {p.get('url', ''):<28} log {p['log']}"
        )
    for ext in status.get("external", []):
        where = status.get("api_url") if ext == "kube" else status.get("temporal_address")
        lines.append(f"  {ext:<15} external {where}")
    if status.get("kubeconfig"):
        lines.append(f"kubeconfig:       {status['kubeconfig']}")
    if status.get("temporal_address"):
        lines.append(
            f"Temporal:         {status['temporal_address']} "
            f"namespace {status.get('temporal_namespace', 'default')}"
        )
    if status.get("temporal_ui_url"):
        lines.append(f"Temporal UI:      {status['temporal_ui_url']}")
    if status.get("redfish_url"):
        systems = status.get("redfish_systems", [])
        lines.append(
            f"Redfish BMCs:     {status['redfish_url']} (user {status.get('redfish_user')}, "
            f"password {status.get('redfish_password')}), {len(systems)} systems: "
            + ", ".join(s["name"] for s in systems)
        )
    if status.get("shim_url"):
        lines.append(f"REST shim:        {status['shim_url']}")
    if status.get("node"):
        node = status["node"]
        lines.append(f"Node:             {node['name']} {node['ip']}, pods in {node['pod_cidr']}")
    return "\n".join(lines)


def export_lines(exports: dict[str, str]) -> str:
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in exports.items())


# `--run-dir` is accepted before the subcommand (`nicotask dev --run-dir D up`) and
# after it (`nicotask dev up --run-dir D`, as the Makefile and the docs write it).
RUN_DIR_HELP = "run folder for state, logs and data (default: $NICOTASK_RUN_DIR or ./.run/dev)"


def _run_dir_option(f: Any) -> Any:
    return click.option(
        "--run-dir", type=click.Path(path_type=Path), default=None, help=RUN_DIR_HELP
    )(f)


def _run_dir(run_dir: Path | None) -> Path:
    group_dir = click.get_current_context().find_root().meta.get("nicotask.dev.run_dir")
    return run_dir or group_dir or default_run_dir()


def _fail(what: str, exc: Exception) -> NoReturn:
    click.echo(f"nicotask dev {what} failed: {exc}", err=True)
    sys.exit(1)


@click.group(
    name="dev",
    no_args_is_help=True,
    help="Local kube-apiserver + etcd, Temporal dev server and emulated Redfish BMCs.",
)
@_run_dir_option
def dev(run_dir: Path | None) -> None:
    click.get_current_context().find_root().meta["nicotask.dev.run_dir"] = run_dir


@dev.command(help="Start everything not yet running (harmless when up).")
@_run_dir_option
@click.option(
    "--systems",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="JSON file with the emulated Redfish systems "
    '([{"name": "compute-0", "type": "compute"}, ...]; default: 10 systems)',
)
@click.option("--headless", is_flag=True, help="no Temporal web UI")
@click.option(
    "--temporal",
    "temporal_mode",
    type=click.Choice(["dev", "server"]),
    default=None,
    help="dev: the Temporal CLI's dev server (the default); server: a Temporal server built "
    "from go.temporal.io/server on PostgreSQL (default: $NICOTASK_TEMPORAL or dev)",
)
@click.option(
    "--with-system",
    is_flag=True,
    help="also install the CRDs, start the operator, worker and shim, and apply samples/",
)
@click.option(
    "--with-node",
    is_flag=True,
    help="also run a real node (kube-controller-manager, kube-scheduler, containerd, "
    "kubelet; root only) with the nicotask image imported; see docs/deploy.md",
)
def up(
    run_dir: Path | None,
    systems: Path | None,
    headless: bool,
    temporal_mode: str | None,
    with_system: bool,
    with_node: bool,
) -> None:
    run_dir = _run_dir(run_dir)
    try:
        env = DevEnv(
            run_dir,
            redfish_systems=_load_systems(systems) if systems else None,
            temporal_ui=not headless,
            with_node=with_node,
            temporal_mode=temporal_mode,
        )
        env.up()
        if with_node:
            from . import image, node

            node.start_node(env, images=(image.build(),))
    except (StartError, RuntimeError) as exc:
        _fail("up", exc)
    if with_system:
        from .system import start_system, usage

        try:
            start_system(env)
        except (StartError, RuntimeError) as exc:
            _fail("up", exc)
    click.echo(describe(env.status()))
    if with_system:
        click.echo(usage(env))
    else:
        click.echo(f'\nUse it:  eval "$(nicotask dev env --run-dir {run_dir})"; kubectl get ns')
    click.echo(f"Stop it: nicotask dev down --run-dir {run_dir}   (or: make stop)")


@dev.command(help="Build (once, cached by version) etcd and kube-apiserver.")
def build() -> None:
    from . import gobuild

    try:
        gobuild.main()
    except RuntimeError as exc:
        _fail("build", exc)


@dev.command(help="Stop every process of the environment.")
@_run_dir_option
@click.option("--purge", is_flag=True, help="also delete the run folder")
def down(run_dir: Path | None, purge: bool) -> None:
    stopped = DevEnv(_run_dir(run_dir)).down(purge=purge)
    click.echo(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@dev.command(help="Show what runs; exit 1 when not up.")
@_run_dir_option
@click.option("--json", "as_json", is_flag=True, help="print the state as JSON")
def status(run_dir: Path | None, as_json: bool) -> None:
    run_dir = _run_dir(run_dir)
    state = DevEnv(run_dir).status()
    if as_json:
        click.echo(json.dumps(state, indent=2))
    elif state.get("processes"):
        click.echo(describe(state))
    else:
        click.echo(f"not up ({run_dir})")
    sys.exit(0 if state["up"] else 1)


@dev.command(help='Print export lines: eval "$(nicotask dev env)".')
@_run_dir_option
def env(run_dir: Path | None) -> None:
    run_dir = _run_dir(run_dir)
    exports = DevEnv(run_dir).exports()
    if not exports:
        click.echo(f"nicotask dev env: nothing is up in {run_dir}", err=True)
        sys.exit(1)
    click.echo(export_lines(exports), nl=False)


@dev.command(help="Print a JWT from the local dev issuer (the shim of `make run` trusts it).")
@click.option("--org", required=True, help="org name")
@click.option(
    "--role",
    "roles",
    multiple=True,
    help="realm role, repeatable; bare names get the '<org>:' prefix (default: PROVIDER_ADMIN)",
)
@click.option("--sub", default="dev-user", show_default=True, help="subject")
@click.option("--ttl", type=int, default=3600, show_default=True, help="lifetime in seconds")
@click.option(
    "--run-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="folder of the issuer's key pair (default: $NICOTASK_RUN_DIR or ./.run/dev)",
)
def token(org: str, roles: tuple[str, ...], sub: str, ttl: int, run_dir: Path | None) -> None:
    from nicotask_dev.shim.devissuer import token_main

    token_main(org=org, roles=list(roles) or None, sub=sub, ttl=ttl, run_dir=_run_dir(run_dir))


@dev.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    help="Run `nicotask shim` trusting the dev token issuer of the run folder (its "
    "NICOTASK_SHIM_ISSUERS_FILE is the issuer's dev-issuers.json). Other options go to "
    "`nicotask shim`: --host, --port, --kubeconfig, --namespace, --log-level.",
)
@click.option(
    "--run-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="folder of the issuer's key pair (default: $NICOTASK_RUN_DIR or ./.run/dev)",
)
@click.argument("shim_args", nargs=-1, type=click.UNPROCESSED)
def shim(run_dir: Path | None, shim_args: tuple[str, ...]) -> None:
    from nicotask.cli import shim as runtime_shim
    from nicotask_dev.shim.devissuer import DevIssuerRefused, write_issuers_file

    try:
        issuers_file = write_issuers_file(_run_dir(run_dir))
    except DevIssuerRefused as exc:
        raise click.ClickException(str(exc)) from None
    os.environ["NICOTASK_SHIM_ISSUERS_FILE"] = str(issuers_file)
    runtime_shim.main(args=list(shim_args), prog_name="nicotask dev shim")


if __name__ == "__main__":
    dev()
