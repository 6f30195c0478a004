"""One mapping of API statuses to exceptions, and the reading of raw answers.

404 `NotFound`, 409 `Conflict`, 410 `Expired` (a watch's resourceVersion is too
old), 422 `Refused`; other statuses stay `ApiException`. `api_errors` maps a
client call's exception, `raise_for_status` a raw response's status, and
`read_body` / `read_json` read a raw answer whole (orjson) and map its status.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import orjson
from kubernetes_asyncio.client.exceptions import ApiException

__all__ = [
    "TOO_MANY_REQUESTS_ATTEMPTS",
    "ApiException",
    "Conflict",
    "Expired",
    "KubeError",
    "NotFound",
    "Refused",
    "api_errors",
    "api_message",
    "mapped_error",
    "raise_for_status",
    "read_body",
    "read_json",
    "retry_after",
]


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


def retry_after(exc: ApiException) -> float:
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
