"""The routes (prefix /v2/org/{org}/nico). Each handler follows upstream's check order:

401 token -> 403 membership -> 403 role (cancel only) -> 400 provider ->
400 task id -> 400 body / query -> 400 site id / unknown site -> 403 foreign
site -> 404 task -> decision.

Handlers read path, query and body themselves (plain Starlette routes: no
FastAPI parameter validation or dependency solving on the hot path), so every
message and its order is ours; the OpenAPI document is built separately in
openapi.py.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import auth, errors, orgs
from .auth import Principal

PREFIX = "/v2/org/{org}/nico"
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100



def _shim(request: Request) -> Any:
    return request.app.state.shim


async def _authenticate(request: Request, org: str, *, admin: bool) -> Principal:
    shim = _shim(request)
    principal: Principal = await shim.verifier.verify_header(request.headers.get("authorization"))
    auth.require_member(principal, org)
    if admin:
        auth.require_provider_admin(principal, org)
    return principal


def _task_id(raw: str) -> str:
    if not orgs.is_uuid(raw):
        raise errors.APIError(400, errors.BAD_TASK_ID)
    return raw.lower()


def _site_query(request: Request) -> str:
    site_id = request.query_params.get("siteId")
    if site_id is None or site_id == "":
        raise errors.APIError(400, errors.MISSING_SITE_ID)
    return site_id


def _flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return False
    low = raw.lower()
    if low in ("true", "1"):
        return True
    if low in ("false", "0"):
        return False
    raise errors.APIError(400, f"Invalid value for query parameter '{name}': must be true or false")


def _int(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise errors.APIError(400, f"Invalid value for query parameter '{name}': must be {bound}")
    return value


def _json(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type="application/json", headers=headers)


async def _cancel_site_id(request: Request) -> str:
    raw = await request.body()  # capped by limits.BodyLimit
    try:
        # orjson: strict UTF-8, and nesting deeper than 1024 is a parse error (not a 500)
        body = orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError as exc:
        raise errors.APIError(400, errors.BAD_BODY) from exc
    if not isinstance(body, dict):
        raise errors.APIError(400, errors.BAD_BODY if raw.strip() else errors.BAD_CANCEL_REQUEST)
    site_id = body.get("siteId")
    if site_id is not None and not isinstance(site_id, str):
        raise errors.APIError(400, errors.BAD_BODY)
    if not site_id:
        raise errors.APIError(400, errors.BAD_CANCEL_REQUEST)
    return site_id


async def cancel_task(request: Request) -> Response:
    org, id = request.path_params["org"], request.path_params["id"]
    shim = _shim(request)
    principal = await _authenticate(request, org, admin=True)
    providers = await orgs.provider_names(shim.caches.providers, org)
    task_id = _task_id(id)
    site_id = await _cancel_site_id(request)
    await orgs.check_site(shim.caches.sites, providers, site_id)
    return _json(await shim.service.cancel(task_id, site_id, principal.subject), 202)


async def get_task(request: Request) -> Response:
    org, id = request.path_params["org"], request.path_params["id"]
    shim = _shim(request)
    await _authenticate(request, org, admin=False)
    providers = await orgs.provider_names(shim.caches.providers, org)
    task_id = _task_id(id)
    site_id = _site_query(request)
    await orgs.check_site(shim.caches.sites, providers, site_id)
    return _json((await shim.service.find(task_id, site_id)).full)


async def list_rack_tasks(request: Request) -> Response:
    org, rack_id = request.path_params["org"], request.path_params["rackId"]
    shim = _shim(request)
    await _authenticate(request, org, admin=False)
    providers = await orgs.provider_names(shim.caches.providers, org)
    site_id = _site_query(request)
    active_only = _flag(request, "activeOnly")
    include_report = _flag(request, "includeReport")
    page_number = _int(request, "pageNumber", 1, 1, None)
    page_size = _int(request, "pageSize", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    await orgs.check_site(shim.caches.sites, providers, site_id)
    items = shim.caches.tasks.of_rack(rack_id, site_id)
    if active_only:
        items = [i for i in items if not i.finished]
    items.sort(key=lambda r: r.created_key, reverse=True)  # newest first
    start = (page_number - 1) * page_size
    page = items[start : start + page_size]
    body = b"[" + b",".join(r.full if include_report else r.brief for r in page) + b"]"
    pagination = {"pageNumber": page_number, "pageSize": page_size, "total": len(items)}
    return _json(body, headers={"X-Pagination": json.dumps(pagination)})


ROUTES = [
    Route(f"{PREFIX}/task/{{id}}/cancel", cancel_task, methods=["POST"]),
    Route(f"{PREFIX}/rack/task/{{id}}/cancel", cancel_task, methods=["POST"]),
    Route(f"{PREFIX}/task/{{id}}", get_task, methods=["GET"]),
    Route(f"{PREFIX}/rack/task/{{id}}", get_task, methods=["GET"]),
    Route(f"{PREFIX}/rack/{{rackId}}/task", list_rack_tasks, methods=["GET"]),
]
