"""kopf handlers only: each one hands its object to the Controller (lifecycle.py)."""

# kopf's callback protocols list every kwarg; ours take the few they use and **_.
# mypy: disable-error-code="arg-type"

from __future__ import annotations

import logging
from typing import Any

import kopf

from nicotask import api
from nicotask.lifecycle import Controller, RetryLater
from nicotask.settings import get_settings

RESOURCE = (api.GROUP, api.VERSION, "nicotasks")
FINALIZER = f"{api.GROUP}/finalizer"
_TERMINAL = {s.value for s in api.FINISHED_STATUSES}

log = logging.getLogger(__name__)


def parse_selector(selector: str | None) -> dict[str, str]:
    """`k=v,k2=v2` -> dict; the operator's shard (equality selectors only)."""
    out: dict[str, str] = {}
    for part in (selector or "").split(","):
        if part.strip():
            key, _, value = part.partition("=")
            out[key.strip()] = value.strip()
    return out


def in_shard(labels: kopf.Labels, **_: Any) -> bool:
    wanted = parse_selector(get_settings().site_selector)
    return all(labels.get(k) == v for k, v in wanted.items())


def is_live(status: kopf.Status, labels: kopf.Labels, **_: Any) -> bool:
    return in_shard(labels) and status.get("status") not in _TERMINAL


def _controller(memo: kopf.Memo) -> Controller:
    controller: Controller = memo["controller"]
    return controller


async def _run(coro: Any) -> None:
    try:
        await coro
    except RetryLater as exc:
        raise kopf.TemporaryError(str(exc), delay=exc.delay) from exc


# Unexpected errors (an API server hiccup) are retried after BACKOFF seconds,
# not kopf's default 60: every handler is idempotent.
BACKOFF = 5.0


@kopf.on.create(*RESOURCE, when=in_shard, backoff=BACKOFF)
@kopf.on.resume(*RESOURCE, when=in_shard, backoff=BACKOFF)
async def start_task(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    await _run(_controller(memo).start(namespace, name))


@kopf.on.field(*RESOURCE, field="spec.cancel", new=True, when=in_shard, backoff=BACKOFF)
async def cancel_task(namespace: str, name: str, uid: str, memo: kopf.Memo, **_: Any) -> None:
    await _run(_controller(memo).cancel(namespace, name, uid))


@kopf.daemon(*RESOURCE, when=is_live, cancellation_timeout=5.0, backoff=BACKOFF)
async def follow_task(
    namespace: str, name: str, stopped: kopf.DaemonStopped, memo: kopf.Memo, **_: Any
) -> None:
    await _controller(memo).follow(namespace, name, lambda: bool(stopped))


@kopf.on.delete(*RESOURCE, when=in_shard, backoff=BACKOFF)
async def delete_task(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    task = api.NicoTask.model_validate(dict(body))
    await _run(_controller(memo).finalize(task))


@kopf.on.event(*RESOURCE)
def count_task(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    obj = event.get("object") or {}
    uid = (obj.get("metadata") or {}).get("uid")
    if not uid:
        return
    if event.get("type") == "DELETED":
        _controller(memo).metrics.observe_task(uid, None)
        return
    raw = (obj.get("status") or {}).get("status") or api.TaskStatus.PENDING.value
    _controller(memo).metrics.observe_task(uid, api.TaskStatus(raw))
