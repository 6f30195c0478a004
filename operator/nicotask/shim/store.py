"""The shim's Kubernetes access: NicoTasks (get, list, merge patch), providers and sites.

Every call is bounded by a timeout; an unreachable API server or an
unexpected API error becomes `errors.Unavailable` (503), never a 500.
Not found and conflicts are returned / raised as their own outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from nicotask import api
from nicotask.kube import MERGE_PATCH, PROVIDERS, SITES, TASKS, Conflict

from . import errors

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def kube_call(what: str, seconds: float) -> AsyncIterator[None]:
    """Map transport failures and unexpected API errors to a 503."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except ApiException as exc:
        log.warning("kubernetes API error on %s: %s %s", what, exc.status, exc.reason)
        raise errors.Unavailable(f"{what}: HTTP {exc.status} {exc.reason}") from exc
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.warning("kubernetes API unreachable on %s: %r", what, exc)
        raise errors.Unavailable(f"{what}: {type(exc).__name__}") from exc


def escape_field_value(value: str) -> str:
    """Escape a field selector value as the API server does (backslash, comma, equals)."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


class Store:
    """NicoTasks in the served namespaces (all when empty), and the cluster's providers/sites."""

    def __init__(
        self, api_client: client.ApiClient, namespaces: list[str], timeout: float = 20.0
    ) -> None:
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.namespaces = list(namespaces)
        self.timeout = timeout

    def serves(self, namespace: str | None) -> bool:
        return not self.namespaces or namespace in self.namespaces

    async def get_task(self, namespace: str, name: str) -> dict[str, Any] | None:
        async with kube_call("get nicotask", self.timeout):
            try:
                obj = await self.custom.get_namespaced_custom_object(
                    api.GROUP, api.VERSION, namespace, TASKS, name
                )
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
        return dict(obj)

    async def patch_task(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge patch; metadata.resourceVersion in `patch` is a precondition (409 -> Conflict)."""
        async with kube_call("patch nicotask", self.timeout):
            try:
                obj = await self.custom.patch_namespaced_custom_object(  # type: ignore[call-arg]
                    api.GROUP, api.VERSION, namespace, TASKS, name, patch,
                    _content_type=MERGE_PATCH,
                )
            except ApiException as exc:
                if exc.status in (404, 409):
                    # 404: deleted since we read it; both mean "read again".
                    raise Conflict(str(exc.reason)) from exc
                raise
        return dict(obj)

    async def list_tasks(self, field_selector: str | None = None) -> list[dict[str, Any]]:
        """One LIST per served scope (one call when serving all namespaces)."""
        kwargs: dict[str, Any] = {"field_selector": field_selector} if field_selector else {}
        items: list[dict[str, Any]] = []
        async with kube_call("list nicotasks", self.timeout):
            if not self.namespaces:
                result = await self.custom.list_cluster_custom_object(
                    api.GROUP, api.VERSION, TASKS, **kwargs
                )
                items += result.get("items", [])
            else:
                for ns in self.namespaces:
                    result = await self.custom.list_namespaced_custom_object(
                        api.GROUP, api.VERSION, ns, TASKS, **kwargs
                    )
                    items += result.get("items", [])
        return items

    async def providers_of_org(self, org: str) -> list[dict[str, Any]]:
        """NicoProviders with spec.org == org (a selectable field of the CRD)."""
        async with kube_call("list nicoproviders", self.timeout):
            result = await self.custom.list_cluster_custom_object(
                api.GROUP, api.VERSION, PROVIDERS,
                field_selector=f"spec.org={escape_field_value(org)}",
            )
        return [p for p in result.get("items", []) if p.get("spec", {}).get("org") == org]

    async def site(self, site_id: str) -> dict[str, Any] | None:
        """The NicoSite with spec.siteId == site_id (a selectable field of the CRD).

        `site_id` must be a UUID (checked by the caller); it is tried as given,
        then lower-cased.
        """
        for value in dict.fromkeys((site_id, site_id.lower())):
            async with kube_call("list nicosites", self.timeout):
                result = await self.custom.list_cluster_custom_object(
                    api.GROUP, api.VERSION, SITES, field_selector=f"spec.siteId={value}"
                )
            items = [s for s in result.get("items", []) if s.get("spec", {}).get("siteId") == value]
            if items:
                return dict(sorted(items, key=lambda s: s["metadata"]["name"])[0])
        return None
