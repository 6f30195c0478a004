"""The FastAPI app: the router, error handlers, the OpenAPI document and the lifespan.

The lifespan opens the Kubernetes client (unless one is given), starts the
watch-fed caches (providers, sites, tasks) and waits briefly for their first
lists. `/readyz` is 200 only once every cache has synced; `/healthz` is the
liveness answer.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from kubernetes_asyncio import client

from nicotask import kube

from . import errors, metrics, routes
from .auth import JwksSettings, Verifier
from .cache import Caches
from .config import IssuerConfig, ShimSettings
from .dependencies import Shim
from .limits import BodyLimit
from .openapi import build_document
from .service import TaskService
from .store import Store

log = logging.getLogger(__name__)


def verifier_of(settings: ShimSettings, issuers: list[IssuerConfig] | None = None) -> Verifier:
    return Verifier(
        settings.all_issuers() if issuers is None else issuers,
        leeway=settings.leeway_seconds,
        token_cache_size=settings.token_cache_size,
        jwks=JwksSettings(
            lifespan=settings.jwks_cache_seconds,
            min_interval=settings.jwks_min_refetch_seconds,
            timeout=settings.jwks_timeout_seconds,
        ),
    )


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
    verifier = verifier or verifier_of(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = api_client is None
        ac = api_client
        if ac is None:
            ac = await kube.new_api_client(kubeconfig, component="shim")
        kube.trust_env_only_if_used(ac)  # also for a client given to create_app
        store = Store(ac, timeout=settings.kube_timeout_seconds)
        caches = Caches(ac, settings.namespaces, settings.miss_wait_seconds)
        service = TaskService(store, caches.tasks, settings.cancel_attempts)
        app.state.shim = Shim(settings, verifier, store, caches, service)
        caches.start()
        if not await caches.wait_synced(settings.index_sync_seconds):
            log.warning(
                "caches not synced after %.0fs; answering 503 until they are",
                settings.index_sync_seconds,
            )
        try:
            yield
        finally:
            await caches.stop()
            await verifier.aclose()
            if owned:
                await ac.close()

    app = FastAPI(
        title="nicotask shim",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    errors.install(app, routes.QUERY_RULES)
    app.router.routes.extend(routes.cancel_routes)  # plain routes, first: see routes.py
    app.include_router(routes.router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    metrics.install(app)  # request metrics by route template and GET /metrics

    def _synced(shim: Shim) -> dict[str, bool]:
        c = shim.caches
        return {
            "providers": c.providers.informer.synced.is_set(),
            "sites": c.sites.informer.synced.is_set(),
            "tasks": c.tasks.informer.synced.is_set(),
        }

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, Any]:
        shim: Shim = app.state.shim
        return {"ok": True, "indexSynced": shim.caches.synced, "synced": _synced(shim)}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        shim: Shim = app.state.shim
        ready = shim.caches.synced
        return JSONResponse({"ready": ready, "synced": _synced(shim)}, 200 if ready else 503)

    document = build_document()

    def openapi() -> dict[str, Any]:
        return document

    app.openapi = openapi  # type: ignore[method-assign]
    return app
