"""`nicotask shim [--host H] [--port P] [--dev-issuer-dir DIR] [--kubeconfig F]`: serve the app."""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn

from nicotask.logs import configure_logging, uvicorn_log_config
from nicotask.settings import get_settings

from .app import create_app, verifier_of
from .config import ShimSettings
from .devissuer import DevIssuerRefused


def shim_main(
    *,
    host: str | None = None,
    port: int | None = None,
    kubeconfig: str | None = None,
    dev_issuer_dir: Path | None = None,
    namespaces: list[str] | None = None,
    log_level: str = "info",
) -> int:
    base = get_settings()
    settings = ShimSettings()
    if dev_issuer_dir:
        settings.dev_issuer_dir = dev_issuer_dir
    if namespaces:
        settings.namespaces = list(namespaces)
    configure_logging(base.json_logs, level=log_level)
    try:
        issuers = settings.all_issuers()
    except DevIssuerRefused as exc:
        print(f"nicotask shim: {exc}", file=sys.stderr)
        return 2
    if not issuers:
        print("nicotask shim: no token issuer configured (NICOTASK_SHIM_ISSUERS, "
              "NICOTASK_SHIM_ISSUERS_FILE or --dev-issuer-dir); every request will get 401")
    app = create_app(
        settings, kubeconfig=kubeconfig or base.kubeconfig,
        verifier=verifier_of(settings, issuers),
    )
    uvicorn.run(
        app,
        host=host or settings.host or base.shim_host,
        port=port or settings.port or base.shim_port,
        log_level=log_level,
        proxy_headers=True,
        # uvloop and httptools (pinned dependencies): most of a cached answer's cost
        # is the event loop and HTTP parsing.
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=uvicorn_log_config(),
    )
    return 0
