"""`nicotask operator`: kopf, configured so the operator writes no spec and no metadata
but its finalizer (progress and diff-base live in status.kopf)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

import kopf
from prometheus_client import start_http_server
from temporalio.client import Client

from nicotask import handlers
from nicotask.kube import Kube, new_api_client
from nicotask.lifecycle import Controller
from nicotask.logs import configure_logging
from nicotask.metrics import Metrics
from nicotask.settings import Settings, get_settings
from nicotask.temporal.client import connect
from nicotask.temporal.metrics import health_check, probe_reachability

log = logging.getLogger("nicotask.operator")


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


async def probe_operator_reachability(settings: Settings, metrics: Metrics) -> None:
    client = await connect(settings, lazy=True)
    await probe_reachability(
        health_check(client), lambda ok: metrics.temporal_reachable.set(int(ok))
    )


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
    # nicotask_temporal_reachable, kept by a health check loop (cancelled at cleanup).
    memo["probe"] = asyncio.create_task(probe_operator_reachability(ours, memo["metrics"]))
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
    if memo.get("probe") is not None:
        memo["probe"].cancel()
    controller: Controller | None = memo.get("controller")
    if controller is not None:
        await controller.kube.api_client.close()


def operator_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="nicotask operator")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging(settings.json_logs, args.verbose)
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
