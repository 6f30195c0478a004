"""What the system asks of kube-apiserver and Temporal during a window, per item.

Two scrapes (kube-apiserver's `apiserver_request_total`, the Temporal dev
server's frontend `service_requests` and its store's `persistence_requests`)
bracket a window; the deltas, minus the bench's own requests in that window,
divided by the items (tasks started or cancelled), are the calls per item.
The bench's own Temporal calls go to a namespace of their own, which is left
out; its own API-server requests are counted by the bench and subtracted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .env import BenchEnv
from .promtext import (
    Samples,
    apiserver_key,
    counter_delta,
    counter_samples,
    group,
    per_item,
    persistence_key,
    temporal_frontend_key,
)
from .rawtemporal import BENCH_NAMESPACE

APISERVER_COUNTER = "apiserver_request_total"
TEMPORAL_COUNTER = "service_requests"
# The dev server keeps everything in one SQLite database behind one connection:
# its persistence requests are done one at a time, so their count per task is
# what bounds Temporal's rate (a bare StartWorkflow costs 3 writes: the execution,
# the task-queue backlog, the visibility record).
PERSISTENCE_COUNTER = "persistence_requests"
VISIBILITY_COUNTER = "visibility_persistence_requests"
WRITE_PREFIXES = ("Create", "Update", "Upsert", "Record", "Complete", "RangeComplete", "Delete")
# Temporal's own housekeeping namespace and the bench's.
TEMPORAL_EXCLUDED = ("temporal_system", BENCH_NAMESPACE)


@dataclass
class Scrape:
    at: float
    own_api: int  # the bench's own API-server requests so far
    api: Samples | None
    temporal: Samples | None
    persistence: Samples | None = None


async def scrape(benv: BenchEnv, own_api: int) -> Scrape:
    api_text = await benv.apiserver_metrics()
    temporal_text = await benv.temporal_metrics()
    return Scrape(
        at=time.monotonic(),
        own_api=own_api,
        api=None if api_text is None else counter_samples(api_text, APISERVER_COUNTER),
        temporal=(
            None if temporal_text is None else counter_samples(temporal_text, TEMPORAL_COUNTER)
        ),
        persistence=None if temporal_text is None else _stored(temporal_text),
    )


def _stored(temporal_text: str) -> Samples:
    """Persistence requests of both stores, the visibility store's marked as such."""
    out = counter_samples(temporal_text, PERSISTENCE_COUNTER)
    for labels, value in counter_samples(temporal_text, VISIBILITY_COUNTER).items():
        out[(*labels, ("store", "visibility"))] = value
    return out


def window(before: Scrape, after: Scrape) -> tuple[dict[str, float], dict[str, float]]:
    """API-server requests by 'VERB resource' and Temporal RPCs by operation in the window."""
    api: dict[str, float] = {}
    temporal: dict[str, float] = {}
    if before.api is not None and after.api is not None:
        api = group(counter_delta(before.api, after.api), apiserver_key)
    if before.temporal is not None and after.temporal is not None:
        temporal = group(
            counter_delta(before.temporal, after.temporal),
            temporal_frontend_key(TEMPORAL_EXCLUDED),
        )
    return api, temporal


def persistence(
    before: Scrape, after: Scrape, exclude: tuple[str, ...] = TEMPORAL_EXCLUDED
) -> dict[str, float]:
    """Temporal persistence requests by operation in the window (by default the bench's
    namespace left out)."""
    if before.persistence is None or after.persistence is None:
        return {}
    return group(counter_delta(before.persistence, after.persistence), persistence_key(exclude))


def writes(stored: dict[str, float]) -> float:
    """The persistence requests among `stored` that write (in either store)."""
    return sum(
        n for op, n in stored.items() if op.removeprefix("visibility ").startswith(WRITE_PREFIXES)
    )


def stored_per_item(stored: dict[str, float], items: int) -> dict[str, Any] | None:
    """Persistence requests per item, with the writes among them counted apart."""
    if not stored or items <= 0:
        return None
    out = per_item(stored, 0, items, top=16)
    out["writes_per_item"] = round(writes(stored) / items, 2)
    return out


def per_task(before: Scrape, after: Scrape, items: int) -> dict[str, Any]:
    """The `calls.per_start` / `calls.per_cancel` figures of one window."""
    api, temporal = window(before, after)
    own = after.own_api - before.own_api
    a = per_item(api, own, items) if before.api is not None and after.api is not None else None
    t = (
        per_item(temporal, 0, items)
        if before.temporal is not None and after.temporal is not None
        else None
    )
    p = stored_per_item(persistence(before, after), items)
    return {
        "tasks": items,
        "window_s": round(after.at - before.at, 3),
        "apiserver": None if a is None else a["per_item"],
        "temporal": None if t is None else t["per_item"],
        "temporal_persistence": None if p is None else p["per_item"],
        "temporal_writes": None if p is None else p["writes_per_item"],
        "apiserver_detail": a,
        "temporal_detail": t,
        "temporal_persistence_detail": p,
    }


def per_second(before: Scrape, after: Scrape) -> dict[str, Any]:
    """Requests per second of the window (for the steady, idle system)."""
    seconds = after.at - before.at
    api, temporal = window(before, after)
    own = after.own_api - before.own_api

    def rates(d: dict[str, float], minus: float) -> dict[str, Any]:
        ranked = sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))[:12]
        return {
            "per_s": round(max(0.0, sum(d.values()) - minus) / seconds, 2),
            "by_kind_per_s": {k: round(v / seconds, 2) for k, v in ranked},
        }

    return {
        "window_s": round(seconds, 3),
        "apiserver": rates(api, own) if before.api is not None else None,
        "temporal": rates(temporal, 0) if before.temporal is not None else None,
    }
