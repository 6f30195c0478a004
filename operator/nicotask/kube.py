"""The one Kubernetes adapter: client, error mapping, get/list/watch/patch, status writes.

Every component (operator, worker, shim, kubectl plugin, dev environment)
reaches the API server through this module:

- `new_api_client`: in-cluster config or a kubeconfig, with a User-Agent naming
  the component (and `kubeconfig_namespace`,
  `kubeconfig_server` for what a kubeconfig says);
- one mapping of API errors: 404 `NotFound`, 409 `Conflict`, 410 `Expired` (a
  watch's resourceVersion is too old), 422 `Refused`; other statuses stay
  `ApiException`. `api_errors` maps a client call's exception, `raise_for_status`
  a raw response's status;
- `Kube`: generic get/list/watch/patch of the custom resources (the hot calls
  read their answers raw, `_preload_content=False`, and parse them with
  orjson), and the task-specific writes.

Every status write in nicotask goes through `update_task_status`: it reads
the object, lets a pure function decide the new status, refuses any move out
of a terminal state, and writes with the resourceVersion it read. A conflict
means somebody else wrote in between, so it reads again and decides again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import importlib.metadata
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from nicotask import api, state
from nicotask.api import CANCEL_REQUESTED_BY, PROVIDERS, RACKS, RULES, SITES, TASKS

log = logging.getLogger(__name__)

__all__ = [
    "CANCEL_REQUESTED_BY",
    "JSON_PATCH",
    "MERGE_PATCH",
    "PROVIDERS",
    "RACKS",
    "RULES",
    "SITES",
    "TASKS",
    "ApiException",
    "Conflict",
    "Expired",
    "Kube",
    "KubeError",
    "NotFound",
    "Refused",
    "SecretData",
    "api_errors",
    "api_message",
    "kubeconfig_namespace",
    "kubeconfig_server",
    "mapped_error",
    "new_api_client",
    "raise_for_status",
    "read_json",
    "trust_env_only_if_used",
    "user_agent",
]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


# --------------------------------------------------------------------------
# Errors: one mapping of API statuses
# --------------------------------------------------------------------------


class KubeError(Exception):
    """An API error with a meaning of its own (the subclasses); `status` is its HTTP status."""

    status: int


class NotFound(KubeError):
    """The object does not exist (any more): 404."""

    status = 404


class Conflict(KubeError):
    """The object changed under us (409), or more often than we were willing to retry."""

    status = 409


class Expired(KubeError):
    """The resourceVersion of a list or watch is too old (410 Gone): list again."""

    status = 410


class Refused(KubeError):
    """The API server refused the write as invalid (422), e.g. by a CEL rule."""

    status = 422


def _body_message(body: str | bytes | None, reason: str | None) -> str:
    """The API server's `message` from an error body, else the reason."""
    try:
        return str(json.loads(body or "{}").get("message") or reason)
    except (ValueError, AttributeError):
        return str(reason)


def api_message(exc: ApiException) -> str:
    """The API server's `message` from a client exception's body, else the reason."""
    return _body_message(exc.body, exc.reason)


def mapped_error(
    status: int | None, reason: str | None, what: str, message: str | None = None
) -> Exception:
    """The exception for an API status: NotFound, Conflict, Expired, Refused or ApiException."""
    if status == 404:
        return NotFound(what)
    if status == 409:
        return Conflict(reason or "conflict")
    if status == 410:
        return Expired(message or reason or "Gone")
    if status == 422:
        return Refused(message or reason or "invalid")
    return ApiException(status=status, reason=reason)


@contextlib.contextmanager
def api_errors(what: str) -> Iterator[None]:
    """Map the ApiException of a client call (other statuses are re-raised as they are)."""
    try:
        yield
    except ApiException as exc:
        err = mapped_error(exc.status, exc.reason, what, api_message(exc))
        if isinstance(err, KubeError):
            raise err from exc
        raise


TOO_MANY_REQUESTS_ATTEMPTS = 5


def _retry_after(exc: ApiException) -> float:
    """Seconds to wait after a 429: its Retry-After header, between 0.1 and 2 s."""
    headers: Any = exc.headers or {}
    try:
        value = float(headers.get("Retry-After", 1))
    except (TypeError, ValueError):
        value = 1.0
    return min(2.0, max(0.1, value))


def raise_for_status(status: int, reason: str | None, what: str, body: bytes = b"") -> None:
    """Raise the mapped error for a raw response's non-2xx status (with the API
    server's message from `body`, as `api_errors` gives it for a parsed call)."""
    if 200 <= status <= 299:
        return
    err = mapped_error(status, reason, what, _body_message(body, reason))
    if isinstance(err, ApiException):
        err.body = body or None
    raise err


async def read_body(resp: Any, what: str) -> bytes:
    """The body of a raw response, read whole (so that its connection goes back to
    the pool) and released; a non-2xx status raises the mapped error."""
    try:
        data: bytes = await resp.read()
    finally:
        resp.release()
    raise_for_status(resp.status, resp.reason, what, data)
    return data


async def read_json(resp: Any, what: str) -> dict[str, Any]:
    """The JSON body of a raw response, parsed with orjson; the response is released."""
    data = await read_body(resp, what)
    out = orjson.loads(data)
    if not isinstance(out, dict):
        raise ApiException(status=resp.status, reason="unexpected body")
    return out


def _watch_event(event: dict[str, Any], what: str) -> dict[str, Any]:
    """A watch event as sent; an ERROR event (a Status) raises as its code maps."""
    if event.get("type") != "ERROR":
        return event
    status = event.get("object") or {}
    code = int(status.get("code") or 500)
    raise_for_status(code, status.get("reason"), what, orjson.dumps(status))
    raise ApiException(status=code, reason=str(status.get("message") or "watch error"))


# --------------------------------------------------------------------------
# Client and kubeconfig
# --------------------------------------------------------------------------


def user_agent(component: str) -> str:
    """`nicotask-<component>/<version>`. The API server takes a write's field manager
    from the User-Agent (up to the first `/`), so managedFields, audit logs and
    `apiserver_request_total` name the component that wrote, not the client library."""
    try:
        version = importlib.metadata.version("nicotask")
    except importlib.metadata.PackageNotFoundError:  # a checkout on PYTHONPATH, not installed
        version = "dev"
    return f"nicotask-{component}/{version}"


async def new_api_client(
    kubeconfig: str | None = None,
    *,
    component: str,
    context: str | None = None,
    persist_config: bool = True,
) -> client.ApiClient:
    """In-cluster config when running in a pod, else the kubeconfig (KUBECONFIG or default);
    its requests say which nicotask `component` sends them (`user_agent`)."""
    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        api_client = client.ApiClient()
    else:
        api_client = await config.new_client_from_config(
            config_file=kubeconfig or os.environ.get("KUBECONFIG"),
            context=context,
            persist_config=persist_config,
        )
    api_client.user_agent = user_agent(component)
    trust_env_only_if_used(api_client)
    return api_client


PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "WS_PROXY", "WSS_PROXY")


def trust_env_only_if_used(api_client: client.ApiClient) -> None:
    """kubernetes-asyncio's aiohttp session trusts the environment: on every request
    it looks up proxy variables and reads ~/.netrc in a worker thread (about 3% of the
    operator's time in a burst of cancels, py-spy). With neither there, nothing is
    trusted anyway: stop looking."""
    names = [*PROXY_VARIABLES, *(n.lower() for n in PROXY_VARIABLES), "NETRC"]
    if any(os.environ.get(n) for n in names) or (Path.home() / ".netrc").exists():
        return
    session = api_client.rest_client.pool_manager
    session._trust_env = False  # aiohttp has no public setter after construction


def _kubeconfig_context(path: str | Path, context: str | None) -> tuple[dict[str, Any], Any]:
    """The kubeconfig and the entry of `context` (else of its current context)."""
    cfg = yaml.safe_load(Path(path).expanduser().read_text()) or {}
    contexts = cfg.get("contexts") or []
    active = next((c for c in contexts if c.get("name") == cfg.get("current-context")), None)
    chosen = next((c for c in contexts if c.get("name") == context), active) if context else active
    return cfg, chosen


def kubeconfig_namespace(kubeconfig: str | Path, context: str | None = None) -> str:
    """The namespace of the context (else the current one), `default` when unset or unknown."""
    try:
        _, chosen = _kubeconfig_context(kubeconfig, context)
        return str(((chosen or {}).get("context") or {}).get("namespace") or "default")
    except Exception:
        return "default"


def kubeconfig_server(kubeconfig: str | Path) -> str:
    """The server URL of the current context (best effort, '' if unknown)."""
    try:
        cfg, chosen = _kubeconfig_context(kubeconfig, None)
        ctx = chosen["context"]
        cluster = next(c["cluster"] for c in cfg.get("clusters", []) if c["name"] == ctx["cluster"])
        return str(cluster.get("server", ""))
    except (OSError, StopIteration, KeyError, TypeError, AttributeError, yaml.YAMLError):
        return ""


# --------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretData:
    """A Secret's labels and decoded data."""

    labels: dict[str, str]
    data: dict[str, str]


def _what(plural: str, name: str, namespace: str | None) -> str:
    return f"{plural} {namespace or ''}/{name}"


@dataclass
class Kube:
    """The custom resources we use, on one ApiClient."""

    api_client: client.ApiClient

    @functools.cached_property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api_client)

    @functools.cached_property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api_client)

    # ---- generic reads -------------------------------------------------------

    async def get(self, plural: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        """One object (cluster-scoped when `namespace` is None), parsed with orjson."""
        if namespace is None:
            call: Any = self.custom.get_cluster_custom_object
            args: tuple[str, ...] = (api.GROUP, api.VERSION, plural, name)
        else:
            call = self.custom.get_namespaced_custom_object
            args = (api.GROUP, api.VERSION, namespace, plural, name)
        resp = await call(*args, _preload_content=False)
        return await read_json(resp, _what(plural, name, namespace))

    def _lister(self, plural: str, namespace: str | None) -> tuple[Any, tuple[Any, ...]]:
        """The LIST call and its positional arguments (cluster-wide when `namespace` is None)."""
        if namespace is None:
            return self.custom.list_cluster_custom_object, (api.GROUP, api.VERSION, plural)
        return (
            self.custom.list_namespaced_custom_object,
            (api.GROUP, api.VERSION, namespace, plural),
        )

    async def list_page(self, plural: str, namespace: str | None, **params: Any) -> dict[str, Any]:
        """One LIST call (cluster-wide when `namespace` is None); empty params are dropped."""
        kwargs = {k: v for k, v in params.items() if v}
        lister, args = self._lister(plural, namespace)
        for attempt in range(TOO_MANY_REQUESTS_ATTEMPTS):
            try:
                with api_errors(f"{plural} in {namespace or 'all namespaces'}"):
                    result = await lister(*args, **kwargs)
                return dict(result)
            except ApiException as exc:
                # 429 (priority and fairness, or a CRD's storage being (re)initialized):
                # wait as told and try again, as client-go does.
                if exc.status != 429 or attempt + 1 == TOO_MANY_REQUESTS_ATTEMPTS:
                    raise
                await asyncio.sleep(_retry_after(exc))
        raise AssertionError("unreachable")

    async def list_raw(self, plural: str, namespace: str | None, **params: Any) -> Any:
        """A LIST or WATCH as the raw aiohttp response, its status checked (mapped errors).

        The caller reads (or streams) the body and releases the response.
        """
        lister, args = self._lister(plural, namespace)
        resp = await lister(*args, _preload_content=False, **params)
        if not 200 <= resp.status <= 299:
            await read_body(resp, f"{plural} in {namespace or 'all namespaces'}")  # raises
        return resp

    async def list_objects(
        self,
        plural: str,
        namespace: str | None = None,
        field_selector: str | None = None,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        result = await self.list_page(
            plural, namespace, field_selector=field_selector, label_selector=label_selector
        )
        return list(result.get("items", []))

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
                result = await self.list_page(
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

    async def watch(
        self,
        plural: str,
        namespace: str | None,
        resource_version: str,
        timeout_seconds: int,
        **selectors: Any,
    ) -> AsyncIterator[dict[str, Any]]:
        """The events of one WATCH from `resource_version`, BOOKMARKs included, until the
        server ends it (`timeout_seconds`); an ERROR event raises: 410 as Expired.

        Bookmarks carry the current resourceVersion even when the selectors match
        nothing, so a quiet watch resumes from a recent version instead of one too
        old to watch from (410, and a LIST again). Lines are split and parsed here
        (orjson): aiohttp's readline() refuses lines over 128 KiB (a task with a
        large report is one long line), and no client model is built per event.
        """
        what = f"watch of {plural} in {namespace or 'all namespaces'}"
        resp = await self.list_raw(
            plural,
            namespace,
            **{k: v for k, v in selectors.items() if v},
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout_seconds,
            _request_timeout=timeout_seconds + 30,
        )
        buffer = bytearray()
        try:
            async for chunk in resp.content.iter_any():
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    if line.strip():
                        yield _watch_event(orjson.loads(line), what)
        finally:
            resp.release()

    # ---- generic writes --------------------------------------------------------

    async def create(
        self, plural: str, body: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        """Create an object (cluster-scoped when `namespace` is None); 409 raises Conflict."""
        what = _what(plural, str((body.get("metadata") or {}).get("name", "")), namespace)
        with api_errors(what):
            if namespace is None:
                obj = await self.custom.create_cluster_custom_object(
                    api.GROUP, api.VERSION, plural, body
                )
            else:
                obj = await self.custom.create_namespaced_custom_object(
                    api.GROUP, api.VERSION, namespace, plural, body
                )
        return dict(obj)

    async def patch(
        self,
        plural: str,
        name: str,
        body: Any,
        namespace: str,
        content_type: str = MERGE_PATCH,
        *,
        status: bool = False,
    ) -> dict[str, Any]:
        """A merge (or JSON) patch of the object, or with `status` of its status subresource.

        The answer is parsed with orjson (the client's own JSON handling was the slow
        part of the shim's cancel and of the worker's progress write).
        """
        call: Any = (
            self.custom.patch_namespaced_custom_object_status
            if status
            else self.custom.patch_namespaced_custom_object
        )
        args = (api.GROUP, api.VERSION, namespace, plural, name, body)
        resp = await call(*args, _content_type=content_type, _preload_content=False)
        return await read_json(resp, _what(plural, name, namespace))

    async def replace_status(
        self, plural: str, name: str, body: dict[str, Any], namespace: str
    ) -> dict[str, Any]:
        """PUT the status subresource; the answer parsed with orjson (the operator's
        every transition is one of these)."""
        resp = await self.custom.replace_namespaced_custom_object_status(
            api.GROUP, api.VERSION, namespace, plural, name, body, _preload_content=False
        )
        return await read_json(resp, _what(plural, name, namespace))

    async def delete(
        self, plural: str, name: str, namespace: str, uid: str | None = None
    ) -> None:
        """Delete an object; with `uid`, only if it is still that object (else Conflict)."""
        preconditions = client.V1Preconditions(uid=uid) if uid else None
        options = client.V1DeleteOptions(preconditions=preconditions)
        with api_errors(_what(plural, name, namespace)):
            await self.custom.delete_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, plural, name, body=options
            )

    # ---- NicoTasks -------------------------------------------------------------

    async def get_task(self, namespace: str, name: str) -> api.NicoTask:
        return api.NicoTask.model_validate(await self.get(TASKS, name, namespace))

    async def replace_task_status(
        self, task: api.NicoTask, status: api.NicoTaskStatus
    ) -> api.NicoTask:
        """Write the status subresource, conditional on the resourceVersion we read."""
        body = {
            "apiVersion": api.API_VERSION,
            "kind": api.TASK_RESOURCE.kind,
            "metadata": {
                "name": task.metadata.name,
                "namespace": task.metadata.namespace,
                "resourceVersion": task.metadata.resource_version,
            },
            "spec": task.spec.wire(),
            "status": status.wire(),
        }
        obj = await self.replace_status(
            TASKS, task.metadata.name, body, task.metadata.namespace or ""
        )
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

    async def delete_task(self, namespace: str, name: str, uid: str) -> None:
        """Delete a NicoTask, only if it is still the object with `uid`."""
        with contextlib.suppress(NotFound, Conflict):
            await self.delete(TASKS, name, namespace, uid)

    async def create_event(
        self,
        task: api.NicoTask,
        reason: str,
        message: str,
        *,
        warning: bool = False,
        component: str = "nicotask-operator",
    ) -> None:
        """A core/v1 Event on the task; best effort (events are advisory).

        Posted raw, its answer read but not parsed (parsing it into the generated
        models, timestamps through dateutil, was a tenth of the operator's CPU in
        a burst of starts)."""
        namespace = task.metadata.namespace or ""
        now = api.rfc3339(api.utcnow())
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{task.metadata.name}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": api.API_VERSION,
                "kind": api.TASK_RESOURCE.kind,
                "name": task.metadata.name,
                "namespace": namespace,
                "uid": task.metadata.uid,
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": component},
            "reportingComponent": component,
        }
        try:
            post: Any = self.core.create_namespaced_event  # typed for the model, takes JSON
            resp = await post(namespace, event, _preload_content=False)
            await read_body(resp, f"event on {task.metadata.name}")
        except (ApiException, KubeError) as exc:  # advisory only
            log.warning("could not record event %s on %s: %s", reason, task.metadata.name, exc)

    # ---- the worker's reads and its progress write -------------------------

    async def get_rack(self, namespace: str, name: str) -> api.NicoRack:
        return api.NicoRack.model_validate(await self.get(RACKS, name, namespace))

    async def read_secret_data(self, namespace: str, name: str) -> SecretData:
        """A Secret with its labels (the worker checks the BMC-credentials label)."""
        with api_errors(f"secret {namespace}/{name}"):
            secret = await self.core.read_namespaced_secret(name, namespace)
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
        obj = await self.patch(TASKS, name, ops, namespace, JSON_PATCH, status=True)
        return api.NicoTask.model_validate(obj)
