"""The routes (prefix /v2/org/{org}/nico): get and list on an APIRouter, and the cancel.

GET and list are FastAPI operations on `router`: typed path and query parameters and the
dependencies of dependencies.py, declared in upstream's check order (the caller
and the org's providers, the task id, then the query and the site). The list's
query parameters are one typed model (`RackTaskQuery`); FastAPI's validation
errors become the contract's 400s (errors.py, with `QUERY_RULES`).

The cancel (`cancel_routes`) is a plain Starlette endpoint that calls the same
checks (`authorize`, `check_task_id`, `parse_cancel_body`, `OrgScope.site`) in
the same order. It is the hot path, and FastAPI's machinery would be most of
its cost. The app's CPU per repeated cancel, in process (bench/shimroutes.py
and the variants measured with it): plain route on the app's router 109 us (as
before), the same on an included APIRouter 125 us, a FastAPI operation that
takes only the Request 170 us, the checks as dependencies 326 us.

Handlers answer with the REST views the task cache encoded once per version.
The OpenAPI document is the contract's (openapi.py), not generated from these
routes; tests/unit/test_shim_openapi.py checks that both list the same
operations and parameters.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticUseDefault
from starlette.routing import Match, Route
from starlette.types import Scope

from .dependencies import (
    Member,
    QuerySite,
    SiteIdQuery,
    TaskId,
    authorize,
    check_task_id,
    parse_cancel_body,
)

PREFIX = "/v2/org/{org}/nico"
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

# The 400 message of each typed query parameter that fails validation (errors.py).
QUERY_RULES = {
    "activeOnly": "must be true or false",
    "includeReport": "must be true or false",
    "pageNumber": "must be at least 1",
    "pageSize": f"must be between 1 and {MAX_PAGE_SIZE}",
}

router = APIRouter(prefix=PREFIX)


def _json(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type="application/json", headers=headers)


# ---- cancel -----------------------------------------------------------------------------


async def cancel_task(request: Request) -> Response:
    """202 with the task (patched, or as it was when nothing had to change)."""
    scope = await authorize(
        request, request.path_params["org"], request.headers.get("authorization"), admin=True
    )
    task_id = check_task_id(request.path_params["id"])
    site_id = await scope.site(parse_cancel_body(await request.body()))  # body capped by limits
    service = scope.shim.service
    return _json(await service.cancel(task_id, site_id, scope.principal.subject), 202)


class PlainRoute(Route):
    """A Starlette route that records itself in the scope, as FastAPI's own routes do:
    the metrics label each request with its route's template."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


# Served by the app's own router (create_app), ahead of `router`: FastAPI's include
# layer would cost the cancel more than it did before and rebuild these as plain Routes.
cancel_routes = [
    PlainRoute(f"{PREFIX}/task/{{id}}/cancel", cancel_task, methods=["POST"]),
    PlainRoute(f"{PREFIX}/rack/task/{{id}}/cancel", cancel_task, methods=["POST"]),
]


# ---- get ----------------------------------------------------------------------------------


@router.get("/task/{id}")
@router.get("/rack/task/{id}")
async def get_task(scope: Member, task_id: TaskId, site_id: QuerySite) -> Response:
    """200 with the task and its report."""
    return _json((await scope.shim.service.find(task_id, site_id)).full)


# ---- list -----------------------------------------------------------------------------


def _flag(value: object) -> object:
    """true/false/1/0 in any case; empty is the default."""
    if value == "":
        raise PydanticUseDefault()
    if isinstance(value, str):
        low = value.lower()
        if low in ("true", "1"):
            return True
        if low in ("false", "0"):
            return False
        raise ValueError("must be true or false")
    return value


def _integer(value: object) -> object:
    """Python's int(); empty is the default."""
    if value == "":
        raise PydanticUseDefault()
    return int(value) if isinstance(value, str) else value


Flag = Annotated[bool, BeforeValidator(_flag)]
Integer = Annotated[int, BeforeValidator(_integer)]


class RackTaskQuery(BaseModel):
    """The list's query parameters."""

    model_config = ConfigDict(populate_by_name=True)

    site_id: SiteIdQuery
    active_only: Annotated[Flag, Field(alias="activeOnly")] = False
    include_report: Annotated[Flag, Field(alias="includeReport")] = False
    page_number: Annotated[Integer, Field(alias="pageNumber", ge=1)] = 1
    page_size: Annotated[Integer, Field(alias="pageSize", ge=1, le=MAX_PAGE_SIZE)] = (
        DEFAULT_PAGE_SIZE
    )


async def rack_query(query: Annotated[RackTaskQuery, Query()], scope: Member) -> RackTaskQuery:
    """The list's query, its site one of the org's providers' (checked after the query)."""
    await scope.site(query.site_id)
    return query


@router.get("/rack/{rackId}/task")
async def list_rack_tasks(
    rack_id: Annotated[str, Path(alias="rackId", description="Name of the Rack")],
    scope: Member,
    query: Annotated[RackTaskQuery, Depends(rack_query)],
) -> Response:
    """200 with one page of the rack's tasks in the site, newest first; X-Pagination."""
    items = scope.shim.caches.tasks.of_rack(rack_id, query.site_id)
    if query.active_only:
        items = [i for i in items if not i.finished]
    items.sort(key=lambda r: r.created_key, reverse=True)  # newest first
    start = (query.page_number - 1) * query.page_size
    page = items[start : start + query.page_size]
    body = b"[" + b",".join(r.full if query.include_report else r.brief for r in page) + b"]"
    pagination = {"pageNumber": query.page_number, "pageSize": query.page_size, "total": len(items)}
    return _json(body, headers={"X-Pagination": json.dumps(pagination)})
