"""How many Kubernetes API calls each REST request costs, against the real API server.

The shim's own ApiClient is wrapped by a counter (every request it sends to
kube-apiserver, watches excluded): a fresh cancel is exactly one PATCH; a
repeated cancel, a cancel of a finished task, a GET, a list and an unknown id
make no call at all. The resourceVersion precondition is shown on the real
server: a task deleted and re-created under the same name is never patched
from a stale cache entry, and a stale-but-same task is patched after one read.
Also here: the duplicate-siteId attack, the body cap and deep nesting.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from nicotask import api
from nicotask.kube import CANCEL_REQUESTED_BY, SITES, TASKS
from nicotask.shim import errors
from nicotask.shim.app import create_app
from nicotask.shim.cache import record_of
from nicotask_dev.crdgen import install_crds
from nicotask_dev.devenv.testing import DevEnvHandle
from nicotask_dev.shim.devissuer import issue_token
from nicotask_dev.shim.testing import (
    ServerThread,
    World,
    create_site,
    dev_issuer_settings,
    make_task,
    make_world,
    wait_for,
)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(kube_api: Any, devenv: DevEnvHandle) -> World:
    await asyncio.to_thread(install_crds, devenv.kubeconfig)
    return await make_world(kube_api)


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("issuer")


@pytest.fixture(scope="module")
def server(devenv: DevEnvHandle, world: World, key_dir: Path) -> Iterator[ServerThread]:
    s = ServerThread(create_app(dev_issuer_settings(key_dir),
                                kubeconfig=str(devenv.kubeconfig))).start()
    try:
        yield s
    finally:
        s.stop()


class Calls:
    """Every non-watch request the shim's ApiClient sends (method, path)."""

    def __init__(self, server: ServerThread) -> None:
        self.seen: list[tuple[str, str]] = []
        rest = server.shim.store.custom.api_client.rest_client
        self._rest, self._orig = rest, rest.request

        async def counting(method: str, url: str, query_params: Any = None, *a: Any,
                           **kw: Any) -> Any:
            if not any(k == "watch" for k, _ in (query_params or [])):
                self.seen.append((method, url.split("/apis/", 1)[-1]))
            return await self._orig(method, url, query_params, *a, **kw)

        rest.request = counting

    def close(self) -> None:
        self._rest.request = self._orig


@contextlib.contextmanager
def counted(server: ServerThread) -> Iterator[Calls]:
    calls = Calls(server)
    try:
        yield calls
    finally:
        calls.close()


@pytest_asyncio.fixture(loop_scope="session")
async def http(server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        yield c


def _auth(key_dir: Path, org: str, sub: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(key_dir, org, ['PROVIDER_ADMIN'], sub)}"}


async def _cached(server: ServerThread, uid: str, rv: str | None = None) -> None:
    """Wait until the shim's cache holds the task (at `rv` when given)."""
    tasks = server.shim.caches.tasks
    assert await wait_for(
        lambda: (r := tasks.lookup(uid)) is not None and (rv is None or r.resource_version == rv),
        10,
    )


async def _read(kube_api: Any, namespace: str, name: str) -> dict[str, Any]:
    return dict(await client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, TASKS, name
    ))


async def test_fresh_cancel_is_one_patch_and_repeats_are_free(
    server: ServerThread, http: httpx.AsyncClient, kube_api: Any, namespace: str,
    world: World, key_dir: Path,
) -> None:
    org, site = world.acme.name, world.site_a
    task = await make_task(kube_api, namespace, site, "Running", rack="rack-calls")
    done = await make_task(kube_api, namespace, site, "Succeeded", rack="rack-calls")
    gone = await make_task(kube_api, namespace, site, "Terminated", rack="rack-calls")
    uid = task["metadata"]["uid"]
    await _cached(server, uid, task["metadata"]["resourceVersion"])
    await _cached(server, done["metadata"]["uid"], done["metadata"]["resourceVersion"])
    await _cached(server, gone["metadata"]["uid"], gone["metadata"]["resourceVersion"])
    headers = _auth(key_dir, org)
    await http.get(f"/v2/org/{org}/nico/task/{uid}", params={"siteId": site}, headers=headers)

    with counted(server) as calls:
        r = await http.post(f"/v2/org/{org}/nico/task/{uid}/cancel", json={"siteId": site},
                            headers=headers)
    assert r.status_code == 202, r.text
    assert calls.seen == [
        ("PATCH", f"nico.dev/v1alpha1/namespaces/{namespace}/nicotasks/{task['metadata']['name']}")
    ]
    after = await _read(kube_api, namespace, task["metadata"]["name"])
    assert after["spec"]["cancel"] is True
    assert after["metadata"]["annotations"][CANCEL_REQUESTED_BY] == "alice"

    with counted(server) as calls:
        for _ in range(3):  # repeated cancel: from the cache
            r = await http.post(f"/v2/org/{org}/nico/task/{uid}/cancel", json={"siteId": site},
                                headers=headers)
            assert r.status_code == 202, r.text
        r = await http.post(f"/v2/org/{org}/nico/task/{gone['metadata']['uid']}/cancel",
                            json={"siteId": site}, headers=headers)
        assert r.status_code == 202 and r.json()["status"] == "Terminated"
        r = await http.post(f"/v2/org/{org}/nico/task/{done['metadata']['uid']}/cancel",
                            json={"siteId": site}, headers=headers)
        assert r.status_code == 400, r.text
        r = await http.get(f"/v2/org/{org}/nico/task/{uid}", params={"siteId": site},
                           headers=headers)
        assert r.status_code == 200 and r.json()["id"] == uid
        r = await http.get(f"/v2/org/{org}/nico/rack/rack-calls/task", params={"siteId": site},
                           headers=headers)
        assert r.status_code == 200 and len(r.json()) == 3
        unknown = str(uuid.uuid4())
        r = await http.post(f"/v2/org/{org}/nico/task/{unknown}/cancel", json={"siteId": site},
                            headers=headers)
        assert r.status_code == 404, r.text
    assert calls.seen == []
    assert (await _read(kube_api, namespace, task["metadata"]["name"]))["metadata"][
        "resourceVersion"] == after["metadata"]["resourceVersion"]


async def test_recreated_task_is_never_patched_from_a_stale_entry(
    server: ServerThread, kube_api: Any, namespace: str, world: World,
) -> None:
    custom = client.CustomObjectsApi(kube_api)
    old = await make_task(kube_api, namespace, world.site_a, "Running", name="same-name")
    stale = record_of(old)
    assert stale is not None
    await custom.delete_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, TASKS, "same-name"
    )
    new = await make_task(kube_api, namespace, world.site_a, "Running", name="same-name")
    service = server.shim.service
    future = asyncio.run_coroutine_threadsafe(service._patch(stale, "mallory"), server.loop)
    with pytest.raises(errors.APIError) as exc:
        await asyncio.wrap_future(future)
    assert exc.value.status == 404
    now = await _read(kube_api, namespace, "same-name")
    assert now["metadata"]["uid"] == new["metadata"]["uid"]
    assert not now["spec"].get("cancel")
    assert CANCEL_REQUESTED_BY not in (now["metadata"].get("annotations") or {})


async def test_stale_entry_of_the_same_task_costs_one_read_then_patches(
    server: ServerThread, kube_api: Any, namespace: str, world: World,
) -> None:
    task = await make_task(kube_api, namespace, world.site_a, "Pending")
    stale = record_of(task)
    assert stale is not None
    obj = await _read(kube_api, namespace, task["metadata"]["name"])
    obj["status"]["status"] = "Running"
    await client.CustomObjectsApi(kube_api).replace_namespaced_custom_object_status(
        api.GROUP, api.VERSION, namespace, TASKS, task["metadata"]["name"], obj
    )  # the stale record's resourceVersion is now outdated
    with counted(server) as calls:
        future = asyncio.run_coroutine_threadsafe(
            server.shim.service._patch(stale, "bob"), server.loop
        )
        body = await asyncio.wrap_future(future)
    assert [m for m, _ in calls.seen] == ["PATCH", "GET", "PATCH"]
    assert b'"status":"Running"' in body
    after = await _read(kube_api, namespace, task["metadata"]["name"])
    assert after["spec"]["cancel"] is True
    assert after["metadata"]["annotations"][CANCEL_REQUESTED_BY] == "bob"


async def test_second_site_with_same_site_id_refuses_instead_of_202(
    server: ServerThread, http: httpx.AsyncClient, kube_api: Any, namespace: str,
    world: World, key_dir: Path,
) -> None:
    """The attack: beta creates a NicoSite claiming acme's siteId with beta's provider."""
    task = await make_task(kube_api, namespace, world.site_a2, "Running")
    uid = task["metadata"]["uid"]
    await _cached(server, uid)
    custom = client.CustomObjectsApi(kube_api)
    evil = f"evil-{secrets.token_hex(3)}"
    assert world.beta.provider
    await create_site(custom, evil, world.site_a2, world.beta.provider)
    sites = server.shim.caches.sites
    try:
        assert await wait_for(lambda: len(sites.claims(world.site_a2)) == 2, 10)
        for org in (world.beta.name, world.acme.name):
            r = await http.post(f"/v2/org/{org}/nico/task/{uid}/cancel",
                                json={"siteId": world.site_a2}, headers=_auth(key_dir, org))
            assert r.status_code == 403, r.text
            assert r.json()["message"] == errors.AMBIGUOUS_SITE
            r = await http.get(f"/v2/org/{org}/nico/task/{uid}",
                               params={"siteId": world.site_a2.upper()},
                               headers=_auth(key_dir, org))
            assert r.status_code == 403, r.text
        assert not (await _read(kube_api, namespace, task["metadata"]["name"]))["spec"].get(
            "cancel")
    finally:
        await custom.delete_cluster_custom_object(api.GROUP, api.VERSION, SITES, evil)
    assert await wait_for(lambda: len(sites.claims(world.site_a2)) == 1, 10)
    r = await http.post(f"/v2/org/{world.acme.name}/nico/task/{uid}/cancel",
                        json={"siteId": world.site_a2}, headers=_auth(key_dir, world.acme.name))
    assert r.status_code == 202, r.text


async def test_bad_bodies_are_4xx(
    server: ServerThread, http: httpx.AsyncClient, kube_api: Any, namespace: str,
    world: World, key_dir: Path,
) -> None:
    org, site = world.acme.name, world.site_a
    task = await make_task(kube_api, namespace, site, "Running")
    uid = task["metadata"]["uid"]
    await _cached(server, uid)
    url = f"/v2/org/{org}/nico/task/{uid}/cancel"
    headers = {**_auth(key_dir, org), "Content-Type": "application/json"}
    big = b'{"siteId": "' + site.encode() + b'", "pad": "' + b"x" * (10 << 20) + b'"}'
    r = await http.post(url, content=big, headers=headers)
    assert r.status_code == 413 and r.json()["source"] == "nico", r.text

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        yield big[: 1 << 20]
        yield big[1 << 20 :]

    r = await http.post(url, content=chunks(), headers=headers)
    assert r.status_code == 413 and r.json()["source"] == "nico", r.text
    for body in (b"[" * 20000 + b"]" * 20000, b'{"a":' * 5000 + b"1" + b"}" * 5000,
                 b"\xff\xfe", b'{"siteId": "\xed\xa0\x80"}', b"NaN"):
        r = await http.post(url, content=body, headers=headers)
        assert r.status_code == 400 and r.json()["message"] == errors.BAD_BODY, (body[:20], r.text)
    deep_token = "e" + "y" * 10 + "." + "W" * 40000 + ".x"
    r = await http.post(url, json={"siteId": site},
                        headers={"Authorization": f"Bearer {deep_token}"})
    assert r.status_code == 401, r.text
    assert not (await _read(kube_api, namespace, task["metadata"]["name"]))["spec"].get("cancel")
