"""`nicotask shim [--host H] [--port P] [--dev-issuer-dir DIR] [--kubeconfig F]`: serve the app."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import uvicorn

from nicotask.settings import get_settings

from .app import create_app, verifier_of
from .config import ShimSettings
from .devissuer import DevIssuerRefused


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
    logging.basicConfig(level=args.log_level.upper())
    try:
        issuers = settings.all_issuers()
    except DevIssuerRefused as exc:
        print(f"nicotask shim: {exc}", file=sys.stderr)
        return 2
    if not issuers:
        print("nicotask shim: no token issuer configured (NICOTASK_SHIM_ISSUERS, "
              "NICOTASK_SHIM_ISSUERS_FILE or --dev-issuer-dir); every request will get 401")
    app = create_app(
        settings, kubeconfig=args.kubeconfig or base.kubeconfig,
        verifier=verifier_of(settings, issuers),
    )
    uvicorn.run(
        app,
        host=args.host or settings.host or base.shim_host,
        port=args.port or settings.port or base.shim_port,
        log_level=args.log_level,
        proxy_headers=True,
        # uvloop and httptools (pinned dependencies): most of a cached answer's cost
        # is the event loop and HTTP parsing.
        loop="uvloop",
        http="httptools",
        access_log=False,
    )
    return 0
