"""`nicotask operator`: the kopf operator (handlers in nicotask/operator/handlers.py).

It writes no spec and no metadata: status through the conditional writer,
Events, and deletions of finished tasks past their TTL.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import kopf
from prometheus_client import start_http_server

from nicotask.logs import configure_logging
from nicotask.metrics import Metrics
from nicotask.operator import handlers
from nicotask.operator.leadership import own_identity
from nicotask.settings import get_settings

log = logging.getLogger("nicotask.operator")


def operator_main(*, verbose: bool = False) -> int:
    """`nicotask operator [--verbose]`: run kopf until it stops."""
    settings = get_settings()
    configure_logging(settings.json_logs, verbose)
    metrics = Metrics()
    start_http_server(settings.metrics_port, addr="0.0.0.0", registry=metrics.registry)
    # kopf's peering identity, known to us too: the work queue and the follower act only
    # while the peering says this replica is the active one (operator/leadership.py).
    identity = own_identity()
    memo = kopf.Memo(metrics=metrics, identity=identity)
    assert handlers.TASKS  # the import registers the handlers with kopf
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
        identity=cast(Any, identity),  # kopf's Identity (a NewType of str, not exported)
    )
    return 0
