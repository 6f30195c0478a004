"""The shim's Kubernetes calls on the request path: GET and merge-PATCH one NicoTask.

Everything else a request needs comes from the watch-fed caches (cache.py).
Every call is bounded by a timeout; an unreachable API server or an
unexpected API error becomes `errors.Unavailable` (503), never a 500.
404 and 409 are their own outcomes (`Gone`, `Conflict`). Bodies are parsed
with orjson (the client's own JSON handling is the slow part of a call).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from nicotask import api
from nicotask.kube import MERGE_PATCH, TASKS, Conflict

from . import errors

log = logging.getLogger(__name__)


PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                   "all_proxy")


def skip_env_lookups(api_client: client.ApiClient) -> bool:
    """Turn off aiohttp's per-request ~/.netrc read and proxy lookup when no proxy is set.

    kubernetes_asyncio opens its session with trust_env=True, which costs two thread-pool
    hops per request (the pool has a handful of threads, so 32 requests in flight queue
    there): the biggest cost of a PATCH in the shim's profile. Returns whether it did.
    """
    if any(os.environ.get(v) for v in PROXY_VARIABLES):
        return False
    session = getattr(api_client.rest_client, "pool_manager", None)
    if session is None or not hasattr(session, "_trust_env"):
        return False
    session._trust_env = False
    return True


class Gone(Exception):
    """The object does not exist (any more)."""


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


async def _body(resp: Any) -> dict[str, Any]:
    """The JSON body of a raw response; 404 -> Gone, 409 -> Conflict, other errors raise."""
    try:
        data = await resp.read()
    finally:
        resp.release()
    if resp.status == 404:
        raise Gone()
    if resp.status == 409:
        raise Conflict(resp.reason or "conflict")
    if not 200 <= resp.status <= 299:
        raise ApiException(status=resp.status, reason=resp.reason)
    out = orjson.loads(data)
    if not isinstance(out, dict):
        raise ApiException(status=resp.status, reason="unexpected body")
    return out


class Store:
    """GET and PATCH of NicoTasks."""

    def __init__(self, api_client: client.ApiClient, timeout: float = 20.0) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.timeout = timeout

    async def get_task(self, namespace: str, name: str) -> dict[str, Any] | None:
        async with kube_call("get nicotask", self.timeout):
            resp = await self.custom.get_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, TASKS, name, _preload_content=False
            )
            try:
                return await _body(resp)
            except Gone:
                return None

    async def patch_task(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge patch; metadata.resourceVersion in `patch` is a precondition (409 -> Conflict)."""
        async with kube_call("patch nicotask", self.timeout):
            resp = await self.custom.patch_namespaced_custom_object(  # type: ignore[call-arg]
                api.GROUP, api.VERSION, namespace, TASKS, name, patch,
                _content_type=MERGE_PATCH, _preload_content=False,
            )
            return await _body(resp)
