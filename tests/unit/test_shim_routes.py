"""The routes in process (state from bench/shimroutes.py, no Kubernetes): the contract's
check order across the dependencies, FastAPI's validation errors as the contract's 400s,
and the router and the served OpenAPI document listing the same operations."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bench.shimroutes import ORG, SITE_ID, build, task_object
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from nicotask.shim import app as shim_app
from nicotask.shim import errors, routes
from nicotask_dev.shim.devissuer import issue_token

LIST = f"/v2/org/{ORG}/nico/rack/rack-1/task"


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def tasks() -> list[dict[str, Any]]:
    return [task_object("Running"), task_object("Terminated")]


@pytest.fixture
async def http(key_dir: Path, tasks: list[dict[str, Any]]) -> AsyncIterator[httpx.AsyncClient]:
    app = build(shim_app, key_dir, tasks)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://s") as c:
        yield c


def auth(key_dir: Path, roles: list[str] | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(key_dir, ORG, roles or ['PROVIDER_ADMIN'])}"}


def assert_error(r: httpx.Response, status: int, message: str) -> None:
    assert r.status_code == status, r.text
    assert r.json() == {"source": "nico", "message": message, "data": None}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, errors.MISSING_SITE_ID),
        ({"siteId": ""}, errors.MISSING_SITE_ID),
        # a missing site beats a bad page; a bad query beats a bad site
        ({"pageSize": "0"}, errors.MISSING_SITE_ID),
        (
            {"siteId": "zz", "pageSize": "101"},
            "Invalid value for query parameter 'pageSize': must be between 1 and 100",
        ),
        (
            {"siteId": SITE_ID, "pageNumber": "x"},
            "Invalid value for query parameter 'pageNumber': must be at least 1",
        ),
        (
            {"siteId": SITE_ID, "pageNumber": "0", "activeOnly": "maybe"},
            "Invalid value for query parameter 'activeOnly': must be true or false",
        ),
        (
            {"siteId": SITE_ID, "includeReport": "yes"},
            "Invalid value for query parameter 'includeReport': must be true or false",
        ),
        ({"siteId": "zz"}, errors.BAD_SITE_ID),
        ({"siteId": str(uuid.uuid4())}, errors.UNKNOWN_SITE),
    ],
)
async def test_list_query_errors_are_the_contracts_400s(
    http: httpx.AsyncClient, key_dir: Path, params: dict[str, str], message: str
) -> None:
    r = await http.get(LIST, params=params, headers=auth(key_dir, ["VIEWER"]))
    assert_error(r, 400, message)


async def test_list_query_values(
    http: httpx.AsyncClient, key_dir: Path, tasks: list[dict[str, Any]]
) -> None:
    headers = auth(key_dir, ["VIEWER"])
    r = await http.get(
        LIST, params={"siteId": SITE_ID.upper(), "pageSize": "", "activeOnly": ""}, headers=headers
    )
    assert r.status_code == 200, r.text
    assert r.headers["X-Pagination"] == '{"pageNumber": 1, "pageSize": 20, "total": 2}'
    assert all("report" not in t for t in r.json())
    r = await http.get(
        LIST,
        params={"siteId": SITE_ID, "activeOnly": "TRUE", "pageSize": "1", "includeReport": "1"},
        headers=headers,
    )
    assert [t["id"] for t in r.json()] == [tasks[0]["metadata"]["uid"]]
    assert r.headers["X-Pagination"] == '{"pageNumber": 1, "pageSize": 1, "total": 1}'


async def test_checks_run_in_the_contracts_order(
    http: httpx.AsyncClient, key_dir: Path, tasks: list[dict[str, Any]]
) -> None:
    uid = tasks[0]["metadata"]["uid"]
    admin, viewer = auth(key_dir), auth(key_dir, ["VIEWER"])
    cancel = f"/v2/org/{ORG}/nico/task/{{}}/cancel"
    # the token before a garbled body and a bad id
    r = await http.post(cancel.format("bad"), content=b"{garbled")
    assert_error(r, 401, errors.TOKEN_INVALID)
    r = await http.get(f"/v2/org/{ORG}/nico/task/bad")
    assert_error(r, 401, errors.TOKEN_INVALID)
    # the role before the id; the org's membership before the role
    assert_error(
        await http.post(cancel.format("bad"), headers=viewer), 403, errors.NOT_PROVIDER_ADMIN
    )
    r = await http.post(f"/v2/org/beta/nico/task/{uid}/cancel", headers=admin)
    assert_error(r, 403, errors.NOT_MEMBER.format(org="beta"))
    # the id before the body, the query and the site
    assert_error(
        await http.post(cancel.format("bad"), content=b"{garbled", headers=admin),
        400,
        errors.BAD_TASK_ID,
    )
    r = await http.get(f"/v2/org/{ORG}/nico/task/bad", params={"siteId": "zz"}, headers=viewer)
    assert_error(r, 400, errors.BAD_TASK_ID)
    r = await http.get(f"/v2/org/{ORG}/nico/task/{uid}", headers=viewer)
    assert_error(r, 400, errors.MISSING_SITE_ID)
    # the body before the site
    assert_error(
        await http.post(cancel.format(uid), json={"siteId": 1}, headers=admin), 400, errors.BAD_BODY
    )
    assert_error(
        await http.post(cancel.format(uid), json={"siteId": "zz"}, headers=admin),
        400,
        errors.BAD_SITE_ID,
    )


async def test_cancel_body_is_json_whatever_the_content_type(
    http: httpx.AsyncClient, key_dir: Path, tasks: list[dict[str, Any]]
) -> None:
    """`curl -d` sends application/x-www-form-urlencoded: the body is still read as JSON."""
    uid = tasks[1]["metadata"]["uid"]
    r = await http.post(
        f"/v2/org/{ORG}/nico/rack/task/{uid}/cancel",
        content=f'{{"siteId": "{SITE_ID}"}}',
        headers={**auth(key_dir), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "Terminated"


def test_router_and_document_list_the_same_operations() -> None:
    """The served document is the contract's, written apart from the routes: both must
    name the same paths, methods and path / query parameters."""
    app = shim_app.create_app()
    served = app.openapi()["paths"]
    generated = get_openapi(title="t", version="0", routes=routes.router.routes)["paths"]

    def params(op: dict[str, Any]) -> set[tuple[str, str]]:
        return {(p["in"], p["name"]) for p in op.get("parameters", []) if p["in"] != "header"}

    operations = {(path, m) for path, ops in served.items() for m in ops}
    plain = {(r.path, m.lower()) for r in routes.cancel_routes for m in r.methods or ()}
    assert operations == {(p, m) for p, ops in generated.items() for m in ops} | plain
    for path, ops in generated.items():
        for method, op in ops.items():
            assert params(op) == params(served[path][method]), (path, method)
    for path, method in plain:
        assert {("path", "org"), ("path", "id")} == params(served[path][method])
    assert all(isinstance(r, APIRoute) for r in routes.router.routes)
