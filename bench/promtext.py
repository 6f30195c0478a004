"""Prometheus counters from /metrics text: parse one counter, subtract two scrapes, group.

The parsing is prometheus_client's; the pre-filter only keeps the lines of the
wanted metric so a multi-megabyte kube-apiserver scrape stays cheap to parse.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
Samples = dict[Labels, float]


def _base(name: str) -> str:
    return name[: -len("_total")] if name.endswith("_total") else name


def counter_samples(text: str, name: str) -> Samples:
    """Every label set of counter `name` (with or without `_total`) and its value."""
    want = _base(name)
    lines = [
        ln
        for ln in text.splitlines()
        if ln.startswith(want) or (ln.startswith("# TYPE ") and want in ln)
    ]
    out: Samples = {}
    for family in text_string_to_metric_families("\n".join(lines) + "\n"):
        for sample in family.samples:
            if _base(sample.name) != want:
                continue
            key = tuple(sorted(sample.labels.items()))
            out[key] = out.get(key, 0.0) + float(sample.value)
    return out


def counter_delta(before: Samples, after: Samples) -> Samples:
    """after - before per label set; a label set whose counter went down (the process
    restarted) counts its whole `after` value. Label sets that did not move are left out."""
    out: Samples = {}
    for key, value in after.items():
        prev = before.get(key, 0.0)
        delta = value - prev if value >= prev else value
        if delta:
            out[key] = delta
    return out


def group(
    samples: Mapping[Labels, float],
    key: Callable[[dict[str, str]], str | None],
) -> dict[str, float]:
    """Sum samples by key(labels); samples whose key is None are dropped."""
    out: dict[str, float] = {}
    for labels, value in samples.items():
        k = key(dict(labels))
        if k is not None:
            out[k] = out.get(k, 0.0) + value
    return out


def apiserver_key(labels: dict[str, str]) -> str | None:
    """'VERB resource[/subresource]' of an apiserver_request_total sample; None for
    non-resource URLs (/metrics, /healthz, /readyz: probes and the bench's own scrapes)."""
    resource = labels.get("resource", "")
    if not resource:
        return None
    sub = labels.get("subresource", "")
    return f"{labels.get('verb', '?')} {resource}{'/' + sub if sub else ''}"


def temporal_frontend_key(
    exclude_namespaces: Iterable[str],
) -> Callable[[dict[str, str]], str | None]:
    """The operation of a Temporal `service_requests` sample served by the frontend
    (the RPCs clients make), None for internal services and excluded namespaces.

    The server writes label values the Prometheus way (`nicotask-bench` becomes
    `nicotask_bench`), so both spellings are excluded.
    """
    excluded = _excluded(exclude_namespaces)

    def key(labels: dict[str, str]) -> str | None:
        if labels.get("service_name") != "frontend":
            return None
        if labels.get("namespace") in excluded:
            return None
        return labels.get("operation", "?")

    return key


def persistence_key(
    exclude_namespaces: Iterable[str],
) -> Callable[[dict[str, str]], str | None]:
    """The operation of a Temporal persistence sample (`visibility <op>` for the
    visibility store's), None for excluded namespaces (shard-wide operations carry
    no namespace and are kept)."""
    excluded = _excluded(exclude_namespaces)

    def key(labels: dict[str, str]) -> str | None:
        if labels.get("namespace") in excluded:
            return None
        op = labels.get("operation", "?")
        return f"visibility {op}" if labels.get("store") == "visibility" else op

    return key


def _excluded(namespaces: Iterable[str]) -> set[str]:
    """Namespaces as given and as the server writes them in labels."""
    names = list(namespaces)
    return set(names) | {_prom_name(n) for n in names}


def _prom_name(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def per_item(
    grouped: Mapping[str, float], own: float, items: int, top: int = 12
) -> dict[str, object]:
    """Calls per item: (sum - own) / items, and the largest groups per item."""
    total = sum(grouped.values())
    if items <= 0:
        return {"total": total, "own": own, "items": items, "per_item": None, "by_kind": {}}
    ranked = sorted(grouped.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return {
        "total": round(total, 1),
        "own": own,
        "items": items,
        "per_item": round(max(0.0, total - own) / items, 2),
        "by_kind": {k: round(v / items, 2) for k, v in ranked},
    }
