"""The routes' checks: who calls in which org (one auth block), the task id, the site scope.

`authorize` is the one auth block: the token (401), membership of the org
(403), the provider admin role when asked (403), the org's providers (400).
The GET routes take it as a dependency (`Member`), with `TaskId` and
`QuerySite`; the cancel route calls it directly (routes.py says why). A route
lists its dependencies in upstream's check order, since FastAPI solves them in
the order they are declared (each one's own dependencies first, each at most once
per request) and a check fails by raising `errors.APIError`, which ends the
request at once:

    401 token -> 403 membership -> 403 role (cancel) -> 400 provider ->
    400 task id -> 400 body / query -> 400 site id / unknown site -> 403 foreign site

A typed query parameter that fails FastAPI's validation does not raise: its
error is collected, and answered (as the contract's 400, errors.py) once the
dependencies that need it were skipped; so a site check *depends on* the query
it reads, and a bad query is answered before the site is looked at.

Every dependency is `async def`: FastAPI runs a plain `def` in a thread pool.
The cancel body is never a FastAPI body: FastAPI would parse it before any
check runs (a garbled body would beat a missing token), only when the
Content-Type says JSON (`curl -d` says otherwise), and with the standard
library's parser (NaN, unbounded nesting); `parse_cancel_body` keeps the
contract's order and orjson's strictness.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import Depends, Header, Path, Query, Request

from . import auth, errors, orgs
from .auth import Principal, Verifier
from .cache import Caches
from .config import ShimSettings
from .service import TaskService
from .store import Store


@dataclass
class Shim:
    """What the routes use: settings, token verifier, Kubernetes store, caches, cancel
    service (app.state.shim, set by the app's lifespan)."""

    settings: ShimSettings
    verifier: Verifier
    store: Store
    caches: Caches
    service: TaskService

    @property
    def index(self) -> Any:
        """The task cache (kept under its old name for tests and tools)."""
        return self.caches.tasks


Org = Annotated[str, Path(description="Name of the Org")]
Authorization = Annotated[str | None, Header(include_in_schema=False)]


@dataclass(frozen=True)
class OrgScope:
    """A verified caller in `org`, and the org's NicoProviders."""

    shim: Shim
    org: str
    principal: Principal
    providers: set[str]

    async def site(self, site_id: str) -> str:
        """`site_id`, a known site of one of the org's providers (400 / 403)."""
        await orgs.check_site(self.shim.caches.sites, self.providers, site_id)
        return site_id


async def authorize(
    request: Request, org: str, authorization: str | None, *, admin: bool
) -> OrgScope:
    """The one auth block: the token (401), membership of `org` (403), with `admin` the
    provider admin role (403), then the org's providers (400)."""
    shim: Shim = request.app.state.shim
    principal = await shim.verifier.verify_header(authorization)  # 401
    auth.require_member(principal, org)  # 403
    if admin:
        auth.require_provider_admin(principal, org)  # 403
    providers = await orgs.provider_names(shim.caches.providers, org)  # 400
    return OrgScope(shim, org, principal, providers)


async def member_scope(request: Request, org: Org, authorization: Authorization = None) -> OrgScope:
    """A member of `org` (any `<org>:` role), and the org's providers."""
    return await authorize(request, org, authorization, admin=False)


Member = Annotated[OrgScope, Depends(member_scope)]


def check_task_id(raw: str) -> str:
    """A task id from the path, a UUID (400), lower case."""
    if not orgs.is_uuid(raw):
        raise errors.APIError(400, errors.BAD_TASK_ID)
    return raw.lower()


async def task_id(id: Annotated[str, Path(description="UUID of the Task")]) -> str:
    """The `{id}` of the path, a UUID (400), lower case."""
    return check_task_id(id)


TaskId = Annotated[str, Depends(task_id)]


def parse_cancel_body(raw: bytes) -> str:
    """The siteId of a cancel body (400 when it is not JSON, not an object, or has none)."""
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


SiteIdQuery = Annotated[
    str, Query(alias="siteId", min_length=1, description="ID of the Site that owns the task")
]


async def query_site(site_id: SiteIdQuery, scope: Member) -> str:
    """The `siteId` query parameter (400 when missing), a site of the org's providers."""
    return await scope.site(site_id)


QuerySite = Annotated[str, Depends(query_site)]
