"""`nicotask shim [--host H] [--port P] [--kubeconfig F] [--namespace NS]`: serve the app."""

from __future__ import annotations

import os

import uvicorn

from nicotask.logs import configure_logging, uvicorn_log_config
from nicotask.settings import get_settings

from .app import create_app, verifier_of
from .config import ShimSettings


def shim_main(
    *,
    host: str | None = None,
    port: int | None = None,
    kubeconfig: str | None = None,
    namespaces: list[str] | None = None,
    log_level: str = "info",
) -> int:
    base = get_settings()
    settings = ShimSettings()
    if namespaces:
        settings.namespaces = list(namespaces)
    configure_logging(base.json_logs, level=log_level)
    if os.environ.get("NICOTASK_SHIM_DEV_ISSUER_DIR"):
        print(
            "nicotask shim: NICOTASK_SHIM_DEV_ISSUER_DIR is not read any more: the dev token "
            "issuer is dev tooling (nicotask-dev); `nicotask dev shim` trusts it"
        )
    issuers = settings.all_issuers()
    if not issuers:
        print(
            "nicotask shim: no token issuer configured (NICOTASK_SHIM_ISSUERS or "
            "NICOTASK_SHIM_ISSUERS_FILE); every request will get 401"
        )
    app = create_app(
        settings,
        kubeconfig=kubeconfig or base.kubeconfig,
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
