"""The FastAPI app: routes, error handlers, the OpenAPI document and the lifespan.

The lifespan opens the Kubernetes client (unless one is given), starts the
task index (list + watch) and waits briefly for its first list.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from kubernetes_asyncio import client

from nicotask import kube

from . import errors, metrics, routes
from .auth import Verifier
from .config import ShimSettings
from .index import TaskIndex
from .openapi import build_document
from .service import TaskService
from .store import Store

log = logging.getLogger(__name__)


@dataclass
class Shim:
    """What the handlers use (app.state.shim)."""

    settings: ShimSettings
    verifier: Verifier
    store: Store
    index: TaskIndex
    service: TaskService


def create_app(
    settings: ShimSettings | None = None,
    *,
    api_client: client.ApiClient | None = None,
    kubeconfig: str | None = None,
    verifier: Verifier | None = None,
) -> FastAPI:
    """The shim app. Without `api_client`, the lifespan opens one from `kubeconfig`
    (or KUBECONFIG / in-cluster) and closes it at shutdown."""
    settings = settings or ShimSettings()
    verifier = verifier or Verifier(settings.all_issuers(), leeway=settings.leeway_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = api_client is None
        ac = api_client if api_client is not None else await kube.new_api_client(kubeconfig)
        store = Store(ac, settings.namespaces, timeout=settings.kube_timeout_seconds)
        index = TaskIndex(store)
        app.state.shim = Shim(
            settings, verifier, store, index, TaskService(store, index, settings.cancel_attempts)
        )
        index.start()
        if not await index.wait_synced(settings.index_sync_seconds):
            log.warning(
                "task index not synced after %.0fs; serving anyway", settings.index_sync_seconds
            )
        try:
            yield
        finally:
            await index.stop()
            if owned:
                await ac.close()

    app = FastAPI(
        title="nicotask shim",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    errors.install(app)
    metrics.install(app)  # request metrics by route template and GET /metrics
    app.include_router(routes.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, Any]:
        shim: Shim = app.state.shim
        return {"ok": True, "indexSynced": shim.index.synced.is_set()}

    document = build_document()

    def openapi() -> dict[str, Any]:
        return document

    app.openapi = openapi  # type: ignore[method-assign]
    return app
