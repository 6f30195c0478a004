"""kopf handlers only: indexes of what the operator reads, and one event handler that
queues a task's reconcile (operator/controller.py does the work).

kopf writes nothing itself here (no finalizer, no progress in status): every
handler is an index or an event handler. Only live tasks are watched: the
watch excludes finished ones server-side (a selectable field on
status.status), so memory and events scale with live tasks only.
"""

# kopf's callback protocols list every kwarg; ours take the few they use and **_.
# mypy: disable-error-code="arg-type"

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Iterable
from typing import Any, TypeVar

import kopf
from pydantic import BaseModel, ValidationError

from nicotask import api
from nicotask.kube import Kube, new_api_client
from nicotask.metrics import cancel_pending_since
from nicotask.operator.controller import Controller
from nicotask.operator.finished_cancels import watch_finished_cancels
from nicotask.operator.follower import Follower
from nicotask.operator.leadership import Leadership, peering_reader
from nicotask.operator.temporal_check import wait_until_usable
from nicotask.settings import Settings, get_settings
from nicotask.temporal.connection import lazy_client
from nicotask.temporal.metrics import health_check, probe_reachability

TASKS = (api.GROUP, api.VERSION, api.TASKS)
RACKS = (api.GROUP, api.VERSION, api.RACKS)
RULES = (api.GROUP, api.VERSION, api.RULES)
LIVE_ONLY = api.LIVE_FIELD_SELECTOR

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], body: kopf.Body, logger: Any) -> M | None:
    """One object that does not parse never blocks the others: it is skipped, and said so."""
    try:
        return model.model_validate(dict(body))
    except ValidationError as exc:
        reason = api.first_line_error(str(exc))
        logger.warning("skipped: not a valid %s: %s", model.__name__, reason)
        return None


# ---- indexes (filled before any other handler runs) -----------------------------
# Every handler here is `async def` although none awaits: kopf runs a plain `def`
# in a thread pool, and the hand-offs (submit, future, wake-up of the loop) for
# three handlers on every watch event were about a sixth of the operator's CPU.


@kopf.index(*TASKS)
async def task_by_uid(body: kopf.Body, uid: str, logger: Any, **_: Any) -> dict[str, api.NicoTask]:
    task = parse(api.NicoTask, body, logger)
    return {uid: task} if task is not None else {}


@kopf.index(*TASKS)
async def task_by_rack(namespace: str, uid: str, spec: kopf.Spec, **_: Any) -> dict[Any, str]:
    return {(namespace, spec.get("rackRef")): uid}


@kopf.index(*RACKS)
async def rack_by_name(
    body: kopf.Body, namespace: str, name: str, logger: Any, **_: Any
) -> dict[Any, str]:
    """Each rack as its validated JSON: a site has thousands of racks, and a model
    of each (every component a pydantic object) would cost several times more."""
    rack = parse(api.NicoRack, body, logger)
    return {(namespace, name): rack.model_dump_json(by_alias=True)} if rack is not None else {}


@kopf.index(*RULES)
async def rules_by_namespace(
    body: kopf.Body, namespace: str, logger: Any, **_: Any
) -> dict[str, api.NicoOperationRule]:
    rule = parse(api.NicoOperationRule, body, logger)
    return {namespace: rule} if rule is not None else {}


# ---- the one event handler --------------------------------------------------------


@kopf.on.event(*TASKS)
async def task_event(
    event: kopf.RawEvent, uid: str, body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any
) -> None:
    controller: Controller = memo["controller"]
    kind = event.get("type")
    live = controller.live_tasks
    task = live.get(uid) if kind != "DELETED" else parse(api.NicoTask, body, logger)
    if task is None:
        return
    deleted = kind == "DELETED"
    controller.metrics.observe_task(uid, None if deleted else task.status.status)
    controller.metrics.observe_cancel_pending(uid, None if deleted else cancel_pending_since(body))
    controller.observe_event(kind, task)


# ---- start-up and clean-up -----------------------------------------------------------


class NoDiffBase(kopf.DiffBaseStorage):
    """An empty diff-base for every object, and nothing stored.

    kopf builds a diff-base on every watch event (a deep copy of the whole object,
    status and report included, then trimmed) for its change-detecting handlers:
    on.create/update/resume/field, daemons and timers. This operator has none, only
    indexes and one event handler, so that copy was thrown away each time: about a
    fifteenth of the operator's CPU per start and per cancel (py-spy, bench/README.md).
    A change-detecting handler added here needs kopf's default storage back.
    """

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[kopf.FieldSpec] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return kopf.BodyEssence()

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def configure_watching(settings: kopf.OperatorSettings, ours: Settings) -> None:
    """Which tasks the watch brings (live ones, of this shard), and no diff-base."""
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 30
    settings.watching.field_selectors[TASKS[0], TASKS[2]] = LIVE_ONLY
    if ours.site_selector:
        settings.watching.label_selectors[TASKS[0], TASKS[2]] = ours.site_selector
    settings.persistence.diffbase_storage = NoDiffBase()


def configure_peering(settings: kopf.OperatorSettings, ours: Settings) -> None:
    """kopf peering: one replica active, the others standby.

    kopf pauses every replica when it sees another one of the same priority,
    so replicas that all kept kopf's default priority (0) would all pause and
    none would run. Each replica gets its own priority (random unless
    NICOTASK_PEERING_PRIORITY sets it): the highest one is active and a standby
    takes over once the active one's keep-alive lifetime runs out.
    """
    if not ours.peering:
        settings.peering.standalone = True
        return
    settings.peering.name = ours.peering
    settings.peering.mandatory = True
    settings.peering.lifetime = ours.peering_lifetime_seconds
    settings.peering.priority = (
        ours.peering_priority
        if ours.peering_priority is not None
        else secrets.randbelow(2**31 - 2) + 1
    )


@kopf.on.startup()
async def configure(
    settings: kopf.OperatorSettings,
    memo: kopf.Memo,
    task_by_uid: kopf.Index[str, api.NicoTask],
    task_by_rack: kopf.Index[Any, str],
    rack_by_name: kopf.Index[Any, str],
    rules_by_namespace: kopf.Index[str, api.NicoOperationRule],
    **_: Any,
) -> None:
    ours = get_settings()
    settings.posting.level = logging.WARNING
    configure_watching(settings, ours)
    configure_peering(settings, ours)

    temporal = lazy_client(ours)
    # Unready (no /healthz) until Temporal answers what the follower needs: a wrong
    # address, namespace or visibility store is one error line naming the setting.
    await wait_until_usable(ours, temporal)
    kube_client = Kube(await new_api_client(component="operator"))
    leadership = (
        Leadership(
            peering_reader(kube_client, ours.peering, ours.namespaces),
            identity=memo["identity"],
            priority=settings.peering.priority,
            interval=min(1.0, ours.peering_lifetime_seconds / 4),
        )
        if ours.peering
        else Leadership()
    )
    controller = Controller(
        kube=kube_client,
        temporal=temporal,
        settings=ours,
        metrics=memo["metrics"],
        leadership=leadership,
    )
    controller.live_tasks.bind(task_by_uid, task_by_rack)
    controller.racks, controller.rules = rack_by_name, rules_by_namespace
    follower = Follower(
        controller,
        temporal,
        interval=ours.follow_interval_seconds,
        full_interval=ours.reconcile_interval_seconds,
    )
    controller.queue.start()
    controller.events.start()
    memo["controller"] = controller
    memo["background"] = [
        asyncio.create_task(leadership.run(), name="leadership"),
        asyncio.create_task(follower.run(), name="follower"),
        asyncio.create_task(_retention(controller), name="retention"),
        asyncio.create_task(_reachability(controller), name="temporal-reachability"),
        asyncio.create_task(
            watch_finished_cancels(
                kube_client, ours.namespaces, ours.site_selector, controller.observe_finished_cancel
            ),
            name="finished-cancels",
        ),
    ]


async def _retention(controller: Controller) -> None:
    try:
        settings = controller.settings
        await controller.retention.sweep_finished(settings.namespaces, settings.site_selector)
    except Exception:
        log.exception("start-up sweep of finished tasks failed")
    await controller.retention.run()


async def _reachability(controller: Controller) -> None:
    """nicotask_temporal_reachable, from Temporal's health check every 15 s."""
    client = await controller.temporal()
    await probe_reachability(
        health_check(client), lambda ok: controller.metrics.temporal_reachable.set(int(ok))
    )


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod: the ServiceAccount; elsewhere: KUBECONFIG (no extra client library)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    for task in memo.get("background", []):
        task.cancel()
    for task in memo.get("background", []):
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    controller: Controller | None = memo.get("controller")
    if controller is not None:
        await controller.queue.stop()
        await controller.events.drain()
        await controller.kube.api_client.close()
