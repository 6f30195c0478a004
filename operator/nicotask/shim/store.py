"""The shim's Kubernetes calls on the request path: GET and merge-PATCH one NicoTask.

Everything else a request needs comes from the watch-fed caches (cache.py).
Every call is bounded by a timeout; an unreachable API server or an
unexpected API error becomes `errors.Unavailable` (503), never a 500.
404 and 409 are their own outcomes (`kube.NotFound`, `kube.Conflict`). The calls
are the adapter's raw ones (nicotask.kube): bodies parsed with orjson (the
client's own JSON handling is the slow part of a call).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from kubernetes_asyncio import client

from nicotask.kube import MERGE_PATCH, TASKS, ApiException, Expired, Kube, NotFound, Refused

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
    except (Expired, Refused) as exc:  # unexpected on a GET or a merge patch: like any other
        log.warning("kubernetes API error on %s: %s %s", what, exc.status, exc)
        raise errors.Unavailable(f"{what}: HTTP {exc.status} {exc}") from exc
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.warning("kubernetes API unreachable on %s: %r", what, exc)
        raise errors.Unavailable(f"{what}: {type(exc).__name__}") from exc


class Store:
    """GET and PATCH of NicoTasks."""

    def __init__(self, api_client: client.ApiClient, timeout: float = 20.0) -> None:
        self.kube = Kube(api_client)
        self.timeout = timeout

    async def get_task(self, namespace: str, name: str) -> dict[str, Any] | None:
        async with kube_call("get nicotask", self.timeout):
            try:
                return await self.kube.get(TASKS, name, namespace)
            except NotFound:
                return None

    async def patch_task(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge patch; metadata.resourceVersion in `patch` is a precondition (409 -> Conflict)."""
        async with kube_call("patch nicotask", self.timeout):
            return await self.kube.patch(TASKS, name, patch, namespace, MERGE_PATCH)
