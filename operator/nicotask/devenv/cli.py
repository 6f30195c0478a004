"""`nicotask dev up | down | status | env`."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from .env import DevEnv, default_run_dir
from .process import StartError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nicotask dev",
        description="Local kube-apiserver + etcd, Temporal dev server and emulated Redfish BMCs.",
    )
    p.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="run folder for state, logs and data (default: $NICOTASK_RUN_DIR or ./.run/dev)",
    )
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start everything not yet running (harmless when up)")
    up.add_argument(
        "--systems",
        type=Path,
        default=None,
        help="JSON file with the emulated Redfish systems "
        '([{"name": "compute-0", "type": "compute"}, ...]; default: 10 systems)',
    )
    up.add_argument("--headless", action="store_true", help="no Temporal web UI")
    up.add_argument(
        "--with-system",
        action="store_true",
        help="also install the CRDs, start the operator, worker and shim, and apply samples/",
    )
    up.add_argument(
        "--with-node",
        action="store_true",
        help="also run a real node (kube-controller-manager, kube-scheduler, containerd, "
        "kubelet; root only) with the nicotask image imported; see docs/deploy.md",
    )
    sub.add_parser("build", help="build (once, cached by version) etcd and kube-apiserver")
    down = sub.add_parser("down", help="stop every process of the environment")
    down.add_argument("--purge", action="store_true", help="also delete the run folder")
    st = sub.add_parser("status", help="show what runs; exit 1 when not up")
    st.add_argument("--json", action="store_true", help="print the state as JSON")
    env = sub.add_parser("env", help='print export lines: eval "$(nicotask dev env)"')
    for s in (up, down, st, env):
        s.add_argument("--run-dir", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return p


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


def dev_main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    run_dir = args.run_dir or default_run_dir()
    if args.command == "build":
        from . import gobuild

        try:
            gobuild.main()
        except RuntimeError as exc:
            print(f"nicotask dev build failed: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "up":
        systems = _load_systems(args.systems) if args.systems else None
        env = DevEnv(run_dir, redfish_systems=systems, temporal_ui=not args.headless,
                     with_node=args.with_node)
        try:
            env.up()
            if args.with_node:
                from . import image, node

                node.start_node(env, images=(image.build(),))
        except (StartError, RuntimeError) as exc:
            print(f"nicotask dev up failed: {exc}", file=sys.stderr)
            return 1
        if args.with_system:
            from .system import start_system, usage

            try:
                start_system(env)
            except (StartError, RuntimeError) as exc:
                print(f"nicotask dev up failed: {exc}", file=sys.stderr)
                return 1
        print(describe(env.status()))
        if args.with_system:
            print(usage(env))
        else:
            print(f'\nUse it:  eval "$(nicotask dev env --run-dir {run_dir})"; kubectl get ns')
        print(f"Stop it: nicotask dev down --run-dir {run_dir}   (or: make stop)")
        return 0
    env = DevEnv(run_dir)
    if args.command == "down":
        stopped = env.down(purge=args.purge)
        print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
        return 0
    if args.command == "status":
        status = env.status()
        if args.json:
            print(json.dumps(status, indent=2))
        elif status.get("processes"):
            print(describe(status))
        else:
            print(f"not up ({run_dir})")
        return 0 if status["up"] else 1
    if args.command == "env":
        exports = env.exports()
        if not exports:
            print(f"nicotask dev env: nothing is up in {run_dir}", file=sys.stderr)
            return 1
        sys.stdout.write(export_lines(exports))
        return 0
    return 2


def main() -> None:
    sys.exit(dev_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
