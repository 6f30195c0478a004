"""Thin async Kubernetes access: get, patch, and the one conditional status writer.

Every status write in nicotask goes through `update_task_status`: it reads
the object, lets a pure function decide the new status, refuses any move out
of a terminal state, and writes with the resourceVersion it read. A conflict
means somebody else wrote in between, so it reads again and decides again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from nicotask import api, state

log = logging.getLogger(__name__)

TASKS = "nicotasks"
RULES = "nicooperationrules"
RACKS = "nicoracks"
PROVIDERS = "nicoproviders"
SITES = "nicosites"

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
CANCEL_REQUESTED_BY = f"{api.GROUP}/cancel-requested-by"


class NotFound(Exception):
    """The object does not exist (any more)."""


class Conflict(Exception):
    """The object changed under us more often than we were willing to retry."""


class Refused(Exception):
    """The API server refused the write as invalid (422), e.g. by a CEL rule."""


@dataclass(frozen=True)
class SecretData:
    """A Secret's labels and decoded data."""

    labels: dict[str, str]
    data: dict[str, str]


async def new_api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """In-cluster config when running in a pod, else the kubeconfig (KUBECONFIG or default)."""
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        return client.ApiClient()
    return await config.new_client_from_config(
        config_file=kubeconfig or os.environ.get("KUBECONFIG")
    )


@dataclass
class Kube:
    """The custom resources we use, on one ApiClient."""

    api_client: client.ApiClient

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api_client)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api_client)

    # ---- reads -------------------------------------------------------------

    async def get(self, plural: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        try:
            if namespace is None:
                obj = await self.custom.get_cluster_custom_object(
                    api.GROUP, api.VERSION, plural, name
                )
            else:
                obj = await self.custom.get_namespaced_custom_object(
                    api.GROUP, api.VERSION, namespace, plural, name
                )
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound(f"{plural} {namespace or ''}/{name}") from exc
            raise
        return dict(obj)

    async def _list_page(
        self, plural: str, namespace: str | None, **params: Any
    ) -> dict[str, Any]:
        """One LIST call (cluster-wide when `namespace` is None); empty params are dropped."""
        kwargs = {k: v for k, v in params.items() if v}
        if namespace is None:
            result = await self.custom.list_cluster_custom_object(
                api.GROUP, api.VERSION, plural, **kwargs
            )
        else:
            result = await self.custom.list_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, plural, **kwargs
            )
        return dict(result)

    async def list_objects(
        self,
        plural: str,
        namespace: str | None = None,
        field_selector: str | None = None,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        result = await self._list_page(
            plural, namespace, field_selector=field_selector, label_selector=label_selector
        )
        return list(result.get("items", []))

    async def get_task(self, namespace: str, name: str) -> api.NicoTask:
        return api.NicoTask.model_validate(await self.get(TASKS, name, namespace))

    # ---- writes ------------------------------------------------------------

    async def replace_task_status(
        self, task: api.NicoTask, status: api.NicoTaskStatus
    ) -> api.NicoTask:
        """Write the status subresource, conditional on the resourceVersion we read."""
        body = {
            "apiVersion": api.API_VERSION,
            "kind": "NicoTask",
            "metadata": {
                "name": task.metadata.name,
                "namespace": task.metadata.namespace,
                "resourceVersion": task.metadata.resource_version,
            },
            "spec": task.spec.wire(),
            "status": status.wire(),
        }
        try:
            obj = await self.custom.replace_namespaced_custom_object_status(
                api.GROUP,
                api.VERSION,
                task.metadata.namespace or "",
                TASKS,
                task.metadata.name,
                body,
            )
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(str(exc.reason)) from exc
            if exc.status == 404:
                raise NotFound(f"nicotask {task.metadata.namespace}/{task.metadata.name}") from exc
            raise
        return api.NicoTask.model_validate(obj)

    async def update_task_status(
        self,
        namespace: str,
        name: str,
        decide: Callable[[api.NicoTask], api.NicoTaskStatus | None],
        *,
        uid: str | None = None,
        attempts: int = 10,
        current: api.NicoTask | None = None,
    ) -> tuple[api.NicoTask, bool]:
        """Read, decide, write conditionally; repeat on conflict.

        `decide` gets the fresh task and returns the new status, or None to
        leave it. A decision that would leave a terminal state, or move the
        status backwards, is dropped (state.allowed_transition). With `uid`,
        an object recreated under the same name is left alone. With `current`
        (a task just read), the first attempt decides on it without a GET;
        if it is stale, the write conflicts and the loop reads fresh (no sleep:
        the read is what changes the outcome).
        Returns the task as stored and whether this call wrote it.
        """
        for _ in range(attempts):
            task = current if current is not None else await self.get_task(namespace, name)
            current = None
            if uid is not None and task.metadata.uid != uid:
                raise NotFound(f"nicotask {namespace}/{name} with uid {uid}")
            new_status = decide(task)
            if new_status is None or not state.allowed_transition(
                task.status.status, new_status.status
            ):
                return task, False
            new_status.updated = api.utcnow()
            try:
                return await self.replace_task_status(task, new_status), True
            except Conflict:
                continue  # somebody wrote in between: read the newer copy, decide again
        raise Conflict(f"nicotask {namespace}/{name}: status write kept conflicting")

    async def iter_objects(
        self,
        plural: str,
        namespaces: list[str],
        field_selector: str | None = None,
        label_selector: str | None = None,
        page: int = 500,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every object (in `namespaces`, or cluster-wide when empty), listed in pages."""
        for namespace in list[str | None](namespaces) or [None]:
            token: str | None = None
            while True:
                result = await self._list_page(
                    plural,
                    namespace,
                    limit=page,
                    _continue=token,
                    field_selector=field_selector,
                    label_selector=label_selector,
                )
                for item in result.get("items", []):
                    yield item
                token = (result.get("metadata") or {}).get("continue")
                if not token:
                    break

    async def remove_finalizer(self, task: api.NicoTask, finalizer: str) -> api.NicoTask | None:
        """Drop one finalizer (a JSON patch that tests it is still where we saw it)."""
        finalizers = task.metadata.finalizers
        if finalizer not in finalizers:
            return None
        index = finalizers.index(finalizer)
        patch = [
            {"op": "test", "path": f"/metadata/finalizers/{index}", "value": finalizer},
            {"op": "remove", "path": f"/metadata/finalizers/{index}"},
        ]
        try:
            obj = await self.custom.patch_namespaced_custom_object(  # type: ignore[call-arg]
                api.GROUP,
                api.VERSION,
                task.metadata.namespace or "",
                TASKS,
                task.metadata.name,
                patch,
                _content_type="application/json-patch+json",
            )
        except ApiException as exc:
            if exc.status in (404, 409, 422):
                return None  # gone, or changed: the next event brings the new copy
            raise
        return api.NicoTask.model_validate(obj)

    async def delete_task(self, namespace: str, name: str, uid: str) -> None:
        """Delete a NicoTask, only if it is still the object with `uid`."""
        options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid))
        try:
            await self.custom.delete_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, TASKS, name, body=options
            )
        except ApiException as exc:
            if exc.status in (404, 409):
                return
            raise

    async def create_event(
        self,
        task: api.NicoTask,
        reason: str,
        message: str,
        *,
        warning: bool = False,
        component: str = "nicotask-operator",
    ) -> None:
        """A core/v1 Event on the task; best effort (events are advisory)."""
        now = api.utcnow()
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(
                generate_name=f"{task.metadata.name}.", namespace=task.metadata.namespace
            ),
            involved_object=client.V1ObjectReference(
                api_version=api.API_VERSION,
                kind="NicoTask",
                name=task.metadata.name,
                namespace=task.metadata.namespace,
                uid=task.metadata.uid,
            ),
            reason=reason,
            message=message[:1024],
            type="Warning" if warning else "Normal",
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=client.V1EventSource(component=component),
            reporting_component=component,
        )
        try:
            await self.core.create_namespaced_event(task.metadata.namespace or "", event)
        except ApiException as exc:  # pragma: no cover - advisory only
            log.warning("could not record event %s on %s: %s", reason, task.metadata.name, exc)

    # ---- the worker's reads and its progress write -------------------------

    async def get_rack(self, namespace: str, name: str) -> api.NicoRack:
        return api.NicoRack.model_validate(await self.get(RACKS, name, namespace))

    async def read_secret_data(self, namespace: str, name: str) -> SecretData:
        """A Secret with its labels (the worker checks the BMC-credentials label)."""
        import base64

        try:
            secret = await self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound(f"secret {namespace}/{name}") from exc
            raise
        data = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
        return SecretData(labels=dict(secret.metadata.labels or {}), data=data)

    async def json_patch_task_status(
        self, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> api.NicoTask:
        """Apply a JSON patch (RFC 6902) to the status subresource: one call.

        A `test` op on /metadata/uid makes it apply to that very object only
        (a merge patch cannot: the status subresource drops metadata). The
        CRD's CEL rules refuse what they forbid. Refused (422) carries the
        API server's message: a failed test, a missing path, or a rule.
        """
        try:
            obj = await self.custom.patch_namespaced_custom_object_status(  # type: ignore[call-arg]
                api.GROUP, api.VERSION, namespace, TASKS, name, ops, _content_type=JSON_PATCH
            )
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound(f"nicotask {namespace}/{name}") from exc
            if exc.status == 409:
                raise Conflict(str(exc.reason)) from exc
            if exc.status == 422:
                raise Refused(_api_message(exc)) from exc
            raise
        return api.NicoTask.model_validate(obj)


def _api_message(exc: ApiException) -> str:
    import json

    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)
