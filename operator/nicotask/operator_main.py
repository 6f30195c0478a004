"""`nicotask operator`: kopf, configured so the operator writes no spec and no metadata
but its finalizer (progress and diff-base live in status.kopf)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import kopf
from prometheus_client import start_http_server
from temporalio.client import Client

from nicotask import handlers
from nicotask.kube import Kube, new_api_client
from nicotask.lifecycle import Controller
from nicotask.metrics import Metrics
from nicotask.settings import Settings, get_settings
from nicotask.temporal.client import connect

log = logging.getLogger("nicotask.operator")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return json.dumps(body)


def configure_logging(json_logs: bool, verbose: bool = False) -> None:
    handler = logging.StreamHandler()
    if json_logs:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("kopf.objects").setLevel(logging.WARNING if not verbose else logging.DEBUG)
    logging.getLogger("kubernetes_asyncio").setLevel(logging.WARNING)


def temporal_factory(settings: Settings) -> Any:
    """One lazily connected client, reconnecting while Temporal is down."""
    lock = asyncio.Lock()
    holder: dict[str, Client] = {}

    async def get() -> Client:
        async with lock:
            if "client" not in holder:
                holder["client"] = await connect(settings, lazy=True)
            return holder["client"]

    return get


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    ours = get_settings()
    settings.persistence.finalizer = handlers.FINALIZER
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(
        field="status.kopf.last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 30
    if ours.peering:
        settings.peering.name = ours.peering
        settings.peering.mandatory = True
    else:
        settings.peering.standalone = True
    kube = Kube(await new_api_client())
    memo["controller"] = Controller(
        kube=kube,
        temporal=temporal_factory(ours),
        settings=ours,
        metrics=memo["metrics"],
    )


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod: the ServiceAccount; elsewhere: KUBECONFIG (no extra client library)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    controller: Controller | None = memo.get("controller")
    if controller is not None:
        await controller.kube.api_client.close()


def operator_main(*, verbose: bool = False) -> int:
    """`nicotask operator [--verbose]`: run kopf until it stops."""
    settings = get_settings()
    configure_logging(settings.json_logs, verbose)
    metrics = Metrics()
    start_http_server(settings.metrics_port, addr="0.0.0.0", registry=metrics.registry)
    memo = kopf.Memo(metrics=metrics)
    log.info(
        "operator starting: namespaces=%s selector=%s temporal=%s queue=%s",
        settings.namespaces or "(cluster-wide)",
        settings.site_selector,
        settings.temporal_address,
        settings.task_queue,
    )
    kopf.run(
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
        memo=memo,
        standalone=not settings.peering,
        peering_name=settings.peering,
    )
    return 0
