"""`nicotask shim [--host H] [--port P] [--dev-issuer-dir DIR] [--kubeconfig F]`: serve the app."""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from nicotask.logs import configure_logging, uvicorn_log_config
from nicotask.settings import get_settings

from .app import create_app
from .config import ShimSettings


def shim_main(argv: list[str]) -> int:
    base = get_settings()
    p = argparse.ArgumentParser(prog="nicotask shim", description="Serve the NICo task REST API.")
    p.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="listen port (default 8088)")
    p.add_argument("--kubeconfig", default=None, help="kubeconfig (default KUBECONFIG/in-cluster)")
    p.add_argument(
        "--dev-issuer-dir", type=Path, default=None,
        help="also trust the dev token issuer whose keys are in this folder",
    )
    p.add_argument(
        "--namespace", action="append", default=None,
        help="namespace to serve (repeatable; default: all)",
    )
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    settings = ShimSettings()
    if args.dev_issuer_dir:
        settings.dev_issuer_dir = args.dev_issuer_dir
    if args.namespace:
        settings.namespaces = list(args.namespace)
    if not settings.all_issuers():
        print("nicotask shim: no token issuer configured (NICOTASK_SHIM_ISSUERS, "
              "NICOTASK_SHIM_ISSUERS_FILE or --dev-issuer-dir); every request will get 401")
    configure_logging(base.json_logs, level=args.log_level)
    app = create_app(settings, kubeconfig=args.kubeconfig or base.kubeconfig)
    uvicorn.run(
        app,
        host=args.host or settings.host or base.shim_host,
        port=args.port or settings.port or base.shim_port,
        log_level=args.log_level,
        proxy_headers=True,
        log_config=uvicorn_log_config(),
    )
    return 0
