"""Reads and writes of objects: get/list/create/patch/delete of the custom resources
(cluster-scoped when `namespace` is None), a task's and a rack's typed reads, a
Secret's data.

The hot calls (get, patch, the status PUT) read their answers raw
(`_preload_content=False`) and parse them with orjson: the client's own path
parses with the standard library and builds the generated models.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client

from nicotask import api
from nicotask.api import RACKS, TASKS

from .errors import (
    TOO_MANY_REQUESTS_ATTEMPTS,
    ApiException,
    Conflict,
    NotFound,
    api_errors,
    read_body,
    read_json,
    retry_after,
)

__all__ = ["JSON_PATCH", "MERGE_PATCH", "Objects", "SecretData"]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


@dataclass(frozen=True)
class SecretData:
    """A Secret's labels and decoded data."""

    labels: dict[str, str]
    data: dict[str, str]


def what(plural: str, name: str, namespace: str | None) -> str:
    """How an object is named in an error."""
    return f"{plural} {namespace or ''}/{name}"


@dataclass
class Objects:
    """Reads and writes of the custom resources we use, on one ApiClient."""

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
        return await read_json(resp, what(plural, name, namespace))

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
                await asyncio.sleep(retry_after(exc))
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

    # ---- generic writes --------------------------------------------------------

    async def create(
        self, plural: str, body: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        """Create an object (cluster-scoped when `namespace` is None); 409 raises Conflict."""
        named = what(plural, str((body.get("metadata") or {}).get("name", "")), namespace)
        with api_errors(named):
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
        resp = await self._patch_call(plural, name, body, namespace, content_type, status)
        return await read_json(resp, what(plural, name, namespace))

    async def patch_unread(
        self,
        plural: str,
        name: str,
        body: Any,
        namespace: str,
        content_type: str = MERGE_PATCH,
        *,
        status: bool = False,
    ) -> None:
        """`patch` for a caller that needs only whether it applied: the answer (the whole
        object) is read but not parsed."""
        resp = await self._patch_call(plural, name, body, namespace, content_type, status)
        await read_body(resp, what(plural, name, namespace))

    async def _patch_call(
        self, plural: str, name: str, body: Any, namespace: str, content_type: str, status: bool
    ) -> Any:
        call: Any = (
            self.custom.patch_namespaced_custom_object_status
            if status
            else self.custom.patch_namespaced_custom_object
        )
        args = (api.GROUP, api.VERSION, namespace, plural, name, body)
        return await call(*args, _content_type=content_type, _preload_content=False)

    async def replace_status(
        self, plural: str, name: str, body: dict[str, Any], namespace: str
    ) -> dict[str, Any]:
        """PUT the status subresource; the answer parsed with orjson (the operator's
        every transition is one of these)."""
        resp = await self.custom.replace_namespaced_custom_object_status(
            api.GROUP, api.VERSION, namespace, plural, name, body, _preload_content=False
        )
        return await read_json(resp, what(plural, name, namespace))

    async def delete(self, plural: str, name: str, namespace: str, uid: str | None = None) -> None:
        """Delete an object; with `uid`, only if it is still that object (else Conflict)."""
        preconditions = client.V1Preconditions(uid=uid) if uid else None
        options = client.V1DeleteOptions(preconditions=preconditions)
        with api_errors(what(plural, name, namespace)):
            await self.custom.delete_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, plural, name, body=options
            )

    # ---- typed reads, and a task's delete ----------------------------------------

    async def get_task(self, namespace: str, name: str) -> api.NicoTask:
        return api.NicoTask.model_validate(await self.get(TASKS, name, namespace))

    async def get_rack(self, namespace: str, name: str) -> api.NicoRack:
        return api.NicoRack.model_validate(await self.get(RACKS, name, namespace))

    async def read_secret_data(self, namespace: str, name: str) -> SecretData:
        """A Secret with its labels (the worker checks the BMC-credentials label)."""
        with api_errors(f"secret {namespace}/{name}"):
            secret = await self.core.read_namespaced_secret(name, namespace)
        data = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
        return SecretData(labels=dict(secret.metadata.labels or {}), data=data)

    async def delete_task(self, namespace: str, name: str, uid: str) -> None:
        """Delete a NicoTask, only if it is still the object with `uid`."""
        with contextlib.suppress(NotFound, Conflict):
            await self.delete(TASKS, name, namespace, uid)
