"""Every error the shim answers is a NICoAPIError body {"source": "nico", "message", "data"}.

Handlers and dependencies raise `APIError(status, message)`; FastAPI's own
errors (unknown route, wrong method, request validation) are mapped to the same
shape and the contract's codes (a refused query parameter is a 400 with the
contract's message, never a 422), so no client ever sees FastAPI's default
`{"detail": ...}`.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from nicotask.api import NICoAPIError

log = logging.getLogger(__name__)

# Messages (upstream's wording where upstream has one; see docs/rest-api.md).
TOKEN_EXPIRED = "Authorization token in request has expired"
TOKEN_INVALID = "Invalid authorization token in request"
NOT_MEMBER = "Failed to validate membership for org: {org}"
NOT_PROVIDER_ADMIN = "User does not have Provider Admin role with org"
NO_PROVIDER = "Failed to retrieve Infrastructure Provider for org"
BAD_TASK_ID = "Invalid Task ID specified in URL"
BAD_BODY = "Failed to parse request data"
BAD_CANCEL_REQUEST = "Failed to validate cancel task request data"
BAD_SITE_ID = "Failed to validate Site specified in request: invalid ID"
MISSING_SITE_ID = "Site ID must be specified in query parameter 'siteId'"
UNKNOWN_SITE = "Site specified in request does not exist"
FOREIGN_SITE = "Site specified in request doesn't belong to current org's Provider"
TASK_NOT_FOUND = "Task not found: {id}"
KUBE_UNAVAILABLE = "Task store (Kubernetes API) is unavailable, retry later"
KEYS_UNAVAILABLE = "Token issuer keys are unavailable, retry later"
BODY_TOO_LARGE = "Request body is too large (at most {limit} bytes)"
INTERNAL = "Internal error"


class APIError(Exception):
    """An error answered as a NICoAPIError with `status`."""

    def __init__(self, status: int, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.data = data


class Unavailable(APIError):
    """The Kubernetes API could not be reached or answered unexpectedly: 503."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(503, KUBE_UNAVAILABLE, {"detail": detail[:512]} if detail else None)


def error_response(
    status: int,
    message: str,
    data: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = NICoAPIError(message=message, data=data).wire()
    return JSONResponse(body, status_code=status, headers=headers)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if exc.status == 503:
        headers = {"Retry-After": "1"}
    return error_response(exc.status, exc.message, exc.data, headers)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 404:
        message = "The requested resource was not found"
    elif status == 405:
        message = "Method not allowed for this resource"
    else:
        message = str(exc.detail)
    headers = dict(exc.headers) if exc.headers else None
    return error_response(status, message, None, headers)


INVALID_QUERY = "Invalid value for query parameter '{name}': {rule}"


def validation_message(loc: tuple[Any, ...], query_rules: dict[str, str]) -> str | None:
    """The contract's message for a request parameter FastAPI refused, if it has one."""
    if len(loc) < 2 or loc[0] != "query":
        return None
    name = str(loc[1])
    if name == "siteId":
        return MISSING_SITE_ID
    if name in query_rules:
        return INVALID_QUERY.format(name=name, rule=query_rules[name])
    return None


def _validation_error(query_rules: dict[str, str]) -> Any:
    async def handler(_: Request, exc: Exception) -> JSONResponse:
        """400, as the routes' own checks: the first refused parameter in declaration
        order (the order the old hand-written checks ran in) names the message."""
        assert isinstance(exc, RequestValidationError)
        found = exc.errors()
        for e in found:
            message = validation_message(tuple(e.get("loc", ())), query_rules)
            if message is not None:
                return error_response(400, message)
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in found
        ]
        return error_response(400, "Failed to validate request data", {"errors": errors})

    return handler


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - bugs
    log.exception("unexpected error", exc_info=exc)
    return error_response(500, INTERNAL)


def install(app: FastAPI, query_rules: dict[str, str] | None = None) -> None:
    """Register the handlers that turn every error into a NICoAPIError body;
    `query_rules` (query parameter -> "must be ...") words FastAPI's validation errors."""
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error(query_rules or {}))
    app.add_exception_handler(Exception, _unexpected)
