"""The REST contract against the real API server, through both cancel paths.

The operator is not running: tests write each task's status directly
(status subresource) and assert on the resulting custom resource.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from integration_support import bearer, cached, read_task, serve_shim

from nicotask.kube import CANCEL_REQUESTED_BY, TASKS, Kube
from nicotask.shim import errors
from nicotask.shim.app import create_app
from nicotask_dev.devenv.testing import DevEnvHandle
from nicotask_dev.shim.devissuer import PUBLIC_KEY_FILE, issue_token
from nicotask_dev.shim.testing import (
    SAMPLE_REPORT,
    ServerThread,
    World,
    dev_issuer_settings,
    free_port,
    make_task,
    wait_for,
)

PATHS = ["task", "rack/task"]


# ---- fixtures -----------------------------------------------------------------


def token(key_dir: Path, org: str, roles: list[str] | None = None, **kw: Any) -> str:
    return issue_token(key_dir, org, ["PROVIDER_ADMIN"] if roles is None else roles, **kw)


async def cancel(
    http: httpx.AsyncClient, path: str, org: str, task_id: str, body: Any, tok: str | None
) -> httpx.Response:
    headers = bearer(tok) if tok else {}
    if isinstance(body, bytes):
        return await http.post(
            f"/v2/org/{org}/nico/{path}/{task_id}/cancel",
            content=body,
            headers={**headers, "Content-Type": "application/json"},
        )
    url = f"/v2/org/{org}/nico/{path}/{task_id}/cancel"
    return await http.post(url, json=body, headers=headers)


def assert_error(r: httpx.Response, status: int, message: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["source"] == "nico" and set(body) == {"source", "message", "data"}, body
    assert body["message"] == message, body


async def read(kube_api: Any, obj: dict[str, Any]) -> dict[str, Any]:
    return await read_task(kube_api, obj["metadata"]["namespace"], obj["metadata"]["name"])


# ---- 202 ------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("status", ["Pending", "Waiting", "Running"])
async def test_cancel_live_task_sets_spec_cancel(
    http: httpx.AsyncClient,
    kube_api: Any,
    namespace: str,
    world: World,
    key_dir: Path,
    path: str,
    status: str,
) -> None:
    report = SAMPLE_REPORT if status == "Running" else None
    task = await make_task(kube_api, namespace, world.site_a, status, report=report)
    uid = task["metadata"]["uid"]
    tok = token(key_dir, world.acme.name, subject="alice@example.com")
    r = await cancel(http, path, world.acme.name, uid, {"siteId": world.site_a}, tok)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["id"] == uid and body["status"] == status
    assert body["description"] == "Power on rack components"
    assert "ruleId" in body
    if report:
        assert body["report"]["stages"][1]["status"] == "running"
    after = await read(kube_api, task)
    assert after["spec"]["cancel"] is True
    assert after["metadata"]["annotations"][CANCEL_REQUESTED_BY] == "alice@example.com"
    # again: idempotent, no second patch
    rv = after["metadata"]["resourceVersion"]
    r = await cancel(http, path, world.acme.name, uid, {"siteId": world.site_a}, tok)
    assert r.status_code == 202
    assert (await read(kube_api, task))["metadata"]["resourceVersion"] == rv


@pytest.mark.parametrize("path", PATHS)
async def test_cancel_terminated_is_unchanged(
    http: httpx.AsyncClient, kube_api: Any, namespace: str, world: World, key_dir: Path, path: str
) -> None:
    task = await make_task(kube_api, namespace, world.site_a, "Terminated")
    rv = task["metadata"]["resourceVersion"]
    r = await cancel(
        http,
        path,
        world.acme.name,
        task["metadata"]["uid"],
        {"siteId": world.site_a},
        token(key_dir, world.acme.name),
    )
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "Terminated"
    after = await read(kube_api, task)
    assert after["metadata"]["resourceVersion"] == rv
    assert not after["spec"].get("cancel")


# ---- 400 ------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("status", ["Succeeded", "Failed"])
async def test_cancel_finished_is_400(
    http: httpx.AsyncClient,
    kube_api: Any,
    namespace: str,
    world: World,
    key_dir: Path,
    path: str,
    status: str,
) -> None:
    task = await make_task(kube_api, namespace, world.site_a, status)
    uid = task["metadata"]["uid"]
    r = await cancel(
        http, path, world.acme.name, uid, {"siteId": world.site_a}, token(key_dir, world.acme.name)
    )
    assert_error(r, 400, f"task {uid} cannot be cancelled (status: {status})")
    after = await read(kube_api, task)
    assert after["metadata"]["resourceVersion"] == task["metadata"]["resourceVersion"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("task_id", "body", "message"),
    [
        ("not-a-uuid", {"siteId": "x"}, errors.BAD_TASK_ID),
        ("{ID}x", {"siteId": "x"}, errors.BAD_TASK_ID),
        ("{ID}", b"{not json", errors.BAD_BODY),
        ("{ID}", b"[1, 2]", errors.BAD_BODY),
        ("{ID}", {"siteId": 42}, errors.BAD_BODY),
        ("{ID}", {}, errors.BAD_CANCEL_REQUEST),
        ("{ID}", b"", errors.BAD_CANCEL_REQUEST),
        ("{ID}", {"siteId": ""}, errors.BAD_CANCEL_REQUEST),
        ("{ID}", {"siteId": "not-a-uuid"}, errors.BAD_SITE_ID),
        ("{ID}", {"siteId": "{UNKNOWN}"}, errors.UNKNOWN_SITE),
    ],
)
async def test_cancel_bad_requests_are_400(
    http: httpx.AsyncClient,
    kube_api: Any,
    namespace: str,
    world: World,
    key_dir: Path,
    path: str,
    task_id: str,
    body: Any,
    message: str,
) -> None:
    task = await make_task(kube_api, namespace, world.site_a, "Running")
    task_id = task_id.replace("{ID}", task["metadata"]["uid"])
    if isinstance(body, dict) and body.get("siteId") == "{UNKNOWN}":
        body = {"siteId": str(uuid.uuid4())}
    r = await cancel(http, path, world.acme.name, task_id, body, token(key_dir, world.acme.name))
    assert_error(r, 400, message)
    assert not (await read(kube_api, task))["spec"].get("cancel")


@pytest.mark.parametrize("path", PATHS)
async def test_org_without_provider_is_400(
    http: httpx.AsyncClient, world: World, key_dir: Path, path: str
) -> None:
    org = world.lonely.name
    r = await cancel(http, path, org, "not-a-uuid", {"siteId": world.site_a}, token(key_dir, org))
    assert_error(r, 400, errors.NO_PROVIDER)  # provider is checked before the task id


# ---- 401 ------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", ["missing", "expired", "other-key", "alg-none", "hs256", "junk"])
async def test_bad_tokens_are_401(
    http: httpx.AsyncClient,
    kube_api: Any,
    namespace: str,
    world: World,
    key_dir: Path,
    tmp_path: Path,
    path: str,
    kind: str,
) -> None:
    task = await make_task(kube_api, namespace, world.site_a, "Running")
    good = token(key_dir, world.acme.name)
    claims = jwt.decode(good, options={"verify_signature": False})
    tok: str | None
    message = errors.TOKEN_INVALID
    if kind == "missing":
        tok = None
    elif kind == "expired":
        tok = token(key_dir, world.acme.name, ttl=-120)
        message = errors.TOKEN_EXPIRED
    elif kind == "other-key":
        tok = token(tmp_path, world.acme.name)  # same issuer name, another key
    elif kind == "alg-none":
        tok = _unsigned({"alg": "none", "typ": "JWT"}, claims) + "."
    elif kind == "hs256":
        secret = (key_dir / PUBLIC_KEY_FILE).read_bytes()
        signing = _unsigned({"alg": "HS256", "typ": "JWT"}, claims)
        tok = f"{signing}.{_b64(hmac.new(secret, signing.encode(), hashlib.sha256).digest())}"
    else:
        tok = "junk"
    # a bad task id too: 401 comes first
    r = await cancel(http, path, world.acme.name, "bad-id", {"siteId": world.site_a}, tok)
    assert_error(r, 401, message)
    r = await cancel(
        http, path, world.acme.name, task["metadata"]["uid"], {"siteId": world.site_a}, tok
    )
    assert_error(r, 401, message)
    assert not (await read(kube_api, task))["spec"].get("cancel")


# ---- 403 ------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
async def test_forbidden_cases_are_403(
    http: httpx.AsyncClient, kube_api: Any, namespace: str, world: World, key_dir: Path, path: str
) -> None:
    task = await make_task(kube_api, namespace, world.site_a, "Running")
    uid = task["metadata"]["uid"]
    acme = world.acme.name
    # member without the admin role (bad id too: the role comes first)
    viewer = token(key_dir, acme, ["VIEWER"])
    r = await cancel(http, path, acme, "bad-id", {"siteId": world.site_a}, viewer)
    assert_error(r, 403, errors.NOT_PROVIDER_ADMIN)
    # admin of another org
    other = token(key_dir, world.beta.name)
    r = await cancel(http, path, acme, uid, {"siteId": world.site_a}, other)
    assert_error(r, 403, errors.NOT_MEMBER.format(org=acme))
    # site of another provider
    r = await cancel(http, path, acme, uid, {"siteId": world.site_b}, token(key_dir, acme))
    assert_error(r, 403, errors.FOREIGN_SITE)
    # legacy role names are accepted
    for legacy in ("NICO_PROVIDER_ADMIN", "FORGE_PROVIDER_ADMIN"):
        r = await cancel(
            http, path, acme, uid, {"siteId": world.site_a}, token(key_dir, acme, [legacy])
        )
        assert r.status_code == 202, r.text
    assert (await read(kube_api, task))["spec"]["cancel"] is True


# ---- 404 ------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
async def test_unknown_task_and_other_site_are_404(
    http: httpx.AsyncClient, kube_api: Any, namespace: str, world: World, key_dir: Path, path: str
) -> None:
    tok = token(key_dir, world.acme.name)
    unknown = str(uuid.uuid4())
    r = await cancel(http, path, world.acme.name, unknown, {"siteId": world.site_a}, tok)
    assert_error(r, 404, errors.TASK_NOT_FOUND.format(id=unknown))
    task = await make_task(kube_api, namespace, world.site_a, "Running")
    uid = task["metadata"]["uid"]
    r = await cancel(http, path, world.acme.name, uid, {"siteId": world.site_a2}, tok)
    assert_error(r, 404, errors.TASK_NOT_FOUND.format(id=uid))
    assert not (await read(kube_api, task))["spec"].get("cancel")


# ---- concurrency ------------------------------------------------------------------


async def test_50_concurrent_cancels_patch_once(
    http: httpx.AsyncClient,
    kube_api: Any,
    namespace: str,
    world: World,
    key_dir: Path,
    shim_server: ServerThread,
) -> None:
    task = await make_task(kube_api, namespace, world.site_a, "Running")
    uid, name = task["metadata"]["uid"], task["metadata"]["name"]
    rv0 = task["metadata"]["resourceVersion"]
    patches_before = shim_server.shim.service.patches
    tokens = [token(key_dir, world.acme.name, subject=f"user-{i}") for i in range(50)]
    results = await asyncio.gather(
        *(
            cancel(http, PATHS[i % 2], world.acme.name, uid, {"siteId": world.site_a}, tokens[i])
            for i in range(50)
        )
    )
    bad = [r.text for r in results if r.status_code != 202]
    assert not bad, bad
    # every MODIFIED event since creation: exactly one (each request has its own subject,
    # so a second patch would show as a second modification)
    events = []
    resp = await Kube(kube_api).list_raw(
        TASKS,
        namespace,
        watch=True,
        resource_version=rv0,
        field_selector=f"metadata.name={name}",
        timeout_seconds=2,
    )
    while line := await resp.content.readline():
        events.append(json.loads(line))
    resp.release()
    modified = [e for e in events if e["type"] == "MODIFIED"]
    assert len(modified) == 1, [e["object"]["metadata"]["resourceVersion"] for e in modified]
    assert modified[0]["object"]["spec"]["cancel"] is True
    assert shim_server.shim.service.patches - patches_before == 1
    after = await read(kube_api, task)
    assert after["metadata"]["generation"] == 2
    assert after["metadata"]["annotations"][CANCEL_REQUESTED_BY].startswith("user-")


# ---- GET and list ---------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
async def test_get_task(
    http: httpx.AsyncClient,
    kube_api: Any,
    namespace: str,
    world: World,
    key_dir: Path,
    path: str,
    shim_server: ServerThread,
) -> None:
    task = await make_task(kube_api, namespace, world.site_a, "Running", report=SAMPLE_REPORT)
    await cached(shim_server, task)
    uid = task["metadata"]["uid"]
    org = world.acme.name
    viewer = bearer(token(key_dir, org, ["VIEWER"]))  # membership suffices for GET
    r = await http.get(
        f"/v2/org/{org}/nico/{path}/{uid}", params={"siteId": world.site_a}, headers=viewer
    )
    assert r.status_code == 200, r.text
    assert r.json()["id"] == uid and r.json()["report"]["version"] == "1"
    r = await http.get(f"/v2/org/{org}/nico/{path}/{uid}", headers=viewer)
    assert_error(r, 400, errors.MISSING_SITE_ID)
    r = await http.get(f"/v2/org/{org}/nico/{path}/{uid}", params={"siteId": "zz"}, headers=viewer)
    assert_error(r, 400, errors.BAD_SITE_ID)
    r = await http.get(
        f"/v2/org/{org}/nico/{path}/{uid}", params={"siteId": world.site_a2}, headers=viewer
    )
    assert r.status_code == 404
    r = await http.get(f"/v2/org/{org}/nico/{path}/{uid}", params={"siteId": world.site_a})
    assert_error(r, 401, errors.TOKEN_INVALID)
    r = await http.get(
        f"/v2/org/{org}/nico/{path}/{uid}",
        params={"siteId": world.site_a},
        headers=bearer(token(key_dir, world.beta.name)),
    )
    assert_error(r, 403, errors.NOT_MEMBER.format(org=org))


async def test_list_rack_tasks(
    http: httpx.AsyncClient,
    kube_api: Any,
    namespace: str,
    world: World,
    key_dir: Path,
    shim_server: ServerThread,
) -> None:
    rack = f"rack-{namespace}"
    made = []
    for status in ("Succeeded", "Running", "Pending", "Failed", "Waiting"):
        made.append(
            await make_task(
                kube_api, namespace, world.site_a, status, rack=rack, report=SAMPLE_REPORT
            )
        )
    await make_task(kube_api, namespace, world.site_a2, "Running", rack=rack)  # other site
    await cached(shim_server, *made)
    org = world.acme.name
    url = f"/v2/org/{org}/nico/rack/{rack}/task"
    headers = bearer(token(key_dir, org, ["VIEWER"]))
    r = await http.get(url, params={"siteId": world.site_a}, headers=headers)
    assert r.status_code == 200, r.text
    assert json.loads(r.headers["X-Pagination"]) == {"pageNumber": 1, "pageSize": 20, "total": 5}
    assert {t["id"] for t in r.json()} == {t["metadata"]["uid"] for t in made}
    assert all("report" not in t for t in r.json())
    r = await http.get(
        url,
        params={
            "siteId": world.site_a,
            "includeReport": "true",
            "activeOnly": "true",
            "pageSize": 2,
            "pageNumber": 2,
        },
        headers=headers,
    )
    assert r.status_code == 200, r.text
    assert json.loads(r.headers["X-Pagination"]) == {"pageNumber": 2, "pageSize": 2, "total": 3}
    assert len(r.json()) == 1 and r.json()[0]["report"]["version"] == "1"
    for bad in (
        {"pageSize": 101},
        {"pageSize": 0},
        {"pageNumber": 0},
        {"pageNumber": "x"},
        {"activeOnly": "maybe"},
    ):
        r = await http.get(url, params={"siteId": world.site_a, **bad}, headers=headers)
        assert r.status_code == 400 and r.json()["source"] == "nico", (bad, r.text)
    r = await http.get(url, headers=headers)
    assert_error(r, 400, errors.MISSING_SITE_ID)


# ---- index ------------------------------------------------------------------------------


async def test_index_follows_watch_and_survives_restart(
    http: httpx.AsyncClient,
    kube_api: Any,
    namespace: str,
    world: World,
    key_dir: Path,
    shim_server: ServerThread,
    devenv: DevEnvHandle,
) -> None:
    index = shim_server.shim.index
    task = await make_task(kube_api, namespace, world.site_a, "Running")
    uid = task["metadata"]["uid"]
    # the watch delivers it without a fallback list
    assert await wait_for(lambda: index.lookup(uid) is not None, 10)
    assert index.lookup(uid).name == task["metadata"]["name"]
    # a brand-new shim (a restart) finds tasks created before it started
    with serve_shim(devenv.kubeconfig, key_dir) as fresh:
        assert fresh.shim.index.lookup(uid) is not None
        async with httpx.AsyncClient(base_url=fresh.url) as c:
            r = await c.get(
                f"/v2/org/{world.acme.name}/nico/task/{uid}",
                params={"siteId": world.site_a},
                headers=bearer(token(key_dir, world.acme.name)),
            )
            assert r.status_code == 200, r.text
    # deleted tasks leave the index
    await Kube(kube_api).delete(TASKS, task["metadata"]["name"], namespace)
    assert await wait_for(lambda: index.lookup(uid) is None, 10)


# ---- 503 ----------------------------------------------------------------------------------


async def test_kubernetes_unreachable_is_503(world: World, key_dir: Path, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "dead.kubeconfig"
    port = free_port()
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "dead",
                "clusters": [
                    {
                        "name": "dead",
                        "cluster": {
                            "server": f"https://127.0.0.1:{port}",
                            "insecure-skip-tls-verify": True,
                        },
                    }
                ],
                "users": [{"name": "dead", "user": {"token": "x"}}],
                "contexts": [{"name": "dead", "context": {"cluster": "dead", "user": "dead"}}],
            }
        )
    )
    settings = dev_issuer_settings(key_dir, index_sync_seconds=0.5, kube_timeout_seconds=5)
    server = ServerThread(create_app(settings, kubeconfig=str(kubeconfig))).start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as c:
            r = await c.post(
                f"/v2/org/{world.acme.name}/nico/task/{uuid.uuid4()}/cancel",
                json={"siteId": world.site_a},
                headers=bearer(token(key_dir, world.acme.name)),
            )
            assert_error(r, 503, errors.KUBE_UNAVAILABLE)
            # a client's mistake is still a 4xx
            r = await c.post(f"/v2/org/{world.acme.name}/nico/task/x/cancel", json={})
            assert_error(r, 401, errors.TOKEN_INVALID)
    finally:
        server.stop()
