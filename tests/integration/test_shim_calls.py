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
from integration_support import admin_auth, cached, read_task
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from nicotask.kube import CANCEL_REQUESTED_BY, TASKS, Kube
from nicotask.shim import errors
from nicotask.shim.cache import record_of
from nicotask_dev.shim.testing import ServerThread, World, create_site, make_task


@pytest.fixture
def server(shim_server: ServerThread) -> ServerThread:
    """The shared shim (conftest); its ApiClient's requests are counted per test."""
    return shim_server


class Calls:
    """Every non-watch request the shim's ApiClient sends (method, path)."""

    def __init__(self, server: ServerThread) -> None:
        self.seen: list[tuple[str, str]] = []
        rest = server.shim.store.kube.api_client.rest_client
        self._rest, self._orig = rest, rest.request

        async def counting(
            method: str, url: str, query_params: Any = None, *a: Any, **kw: Any
        ) -> Any:
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


async def test_fresh_cancel_is_one_patch_and_repeats_are_free(
    server: ServerThread,
    http: httpx.AsyncClient,
    kube_api: Any,
    namespace: str,
    world: World,
    key_dir: Path,
) -> None:
    org, site = world.acme.name, world.site_a
    task = await make_task(kube_api, namespace, site, "Running", rack="rack-calls")
    done = await make_task(kube_api, namespace, site, "Succeeded", rack="rack-calls")
    gone = await make_task(kube_api, namespace, site, "Terminated", rack="rack-calls")
    uid = task["metadata"]["uid"]
    await cached(server, task, done, gone)
    headers = admin_auth(key_dir, org)
    await http.get(f"/v2/org/{org}/nico/task/{uid}", params={"siteId": site}, headers=headers)

    with counted(server) as calls:
        r = await http.post(
            f"/v2/org/{org}/nico/task/{uid}/cancel", json={"siteId": site}, headers=headers
        )
    assert r.status_code == 202, r.text
    assert calls.seen == [
        ("PATCH", f"nico.dev/v1alpha1/namespaces/{namespace}/nicotasks/{task['metadata']['name']}")
    ]
    after = await read_task(kube_api, namespace, task["metadata"]["name"])
    assert after["spec"]["cancel"] is True
    assert after["metadata"]["annotations"][CANCEL_REQUESTED_BY] == "alice"

    with counted(server) as calls:
        for _ in range(3):  # repeated cancel: from the cache
            r = await http.post(
                f"/v2/org/{org}/nico/task/{uid}/cancel", json={"siteId": site}, headers=headers
            )
            assert r.status_code == 202, r.text
        r = await http.post(
            f"/v2/org/{org}/nico/task/{gone['metadata']['uid']}/cancel",
            json={"siteId": site},
            headers=headers,
        )
        assert r.status_code == 202 and r.json()["status"] == "Terminated"
        r = await http.post(
            f"/v2/org/{org}/nico/task/{done['metadata']['uid']}/cancel",
            json={"siteId": site},
            headers=headers,
        )
        assert r.status_code == 400, r.text
        r = await http.get(
            f"/v2/org/{org}/nico/task/{uid}", params={"siteId": site}, headers=headers
        )
        assert r.status_code == 200 and r.json()["id"] == uid
        r = await http.get(
            f"/v2/org/{org}/nico/rack/rack-calls/task", params={"siteId": site}, headers=headers
        )
        assert r.status_code == 200 and len(r.json()) == 3
        # A flood of unknown ids is answered from the synced index: 404s, no API call.
        answers = await asyncio.gather(
            *(
                http.post(
                    f"/v2/org/{org}/nico/task/{uuid.uuid4()}/cancel",
                    json={"siteId": site},
                    headers=headers,
                )
                for _ in range(100)
            )
        )
        assert {a.status_code for a in answers} == {404}, answers[0].text
    assert calls.seen == []
    assert (await read_task(kube_api, namespace, task["metadata"]["name"]))["metadata"][
        "resourceVersion"
    ] == after["metadata"]["resourceVersion"]


async def test_recreated_task_is_never_patched_from_a_stale_entry(
    server: ServerThread,
    kube_api: Any,
    namespace: str,
    world: World,
) -> None:
    old = await make_task(kube_api, namespace, world.site_a, "Running", name="same-name")
    stale = record_of(old)
    assert stale is not None
    await Kube(kube_api).delete(TASKS, "same-name", namespace)
    new = await make_task(kube_api, namespace, world.site_a, "Running", name="same-name")
    service = server.shim.service
    future = asyncio.run_coroutine_threadsafe(service._patch(stale, "mallory"), server.loop)
    with pytest.raises(errors.APIError) as exc:
        await asyncio.wrap_future(future)
    assert exc.value.status == 404
    now = await read_task(kube_api, namespace, "same-name")
    assert now["metadata"]["uid"] == new["metadata"]["uid"]
    assert not now["spec"].get("cancel")
    assert CANCEL_REQUESTED_BY not in (now["metadata"].get("annotations") or {})


async def test_stale_entry_of_the_same_task_costs_one_read_then_patches(
    server: ServerThread,
    kube_api: Any,
    namespace: str,
    world: World,
) -> None:
    task = await make_task(kube_api, namespace, world.site_a, "Pending")
    stale = record_of(task)
    assert stale is not None
    obj = await read_task(kube_api, namespace, task["metadata"]["name"])
    obj["status"]["status"] = "Running"
    await Kube(kube_api).replace_status(
        TASKS, task["metadata"]["name"], obj, namespace
    )  # the stale record's resourceVersion is now outdated
    with counted(server) as calls:
        future = asyncio.run_coroutine_threadsafe(
            server.shim.service._patch(stale, "bob"), server.loop
        )
        body = await asyncio.wrap_future(future)
    assert [m for m, _ in calls.seen] == ["PATCH", "GET", "PATCH"]
    assert b'"status":"Running"' in body
    after = await read_task(kube_api, namespace, task["metadata"]["name"])
    assert after["spec"]["cancel"] is True
    assert after["metadata"]["annotations"][CANCEL_REQUESTED_BY] == "bob"


async def test_a_second_site_for_a_site_id_is_refused_and_its_owner_keeps_it(
    server: ServerThread,
    http: httpx.AsyncClient,
    kube_api: Any,
    namespace: str,
    world: World,
    key_dir: Path,
) -> None:
    """The attack: beta creates a NicoSite claiming acme's siteId with beta's provider.
    The API server refuses it under any name and in any case (a NicoSite is named after
    its siteId); acme's users keep their site, beta's get no access to it."""
    task = await make_task(kube_api, namespace, world.site_a2, "Running")
    uid = task["metadata"]["uid"]
    await cached(server, task, versions=False)
    custom = client.CustomObjectsApi(kube_api)
    assert world.beta.provider
    evil = f"evil-{secrets.token_hex(3)}"
    for name, site_id in ((evil, world.site_a2), (None, world.site_a2.upper())):
        with pytest.raises(ApiException) as refused:
            await create_site(custom, site_id, world.beta.provider, name=name)
        if name is None:  # the same name: it exists
            assert refused.value.status == 409, refused.value.body
        else:
            assert refused.value.status == 422, refused.value.body
            assert "spec.siteId" in refused.value.body
            assert "metadata.name must be spec.siteId" in refused.value.body
    assert server.shim.caches.sites.site(world.site_a2).provider_ref == world.acme.provider
    r = await http.get(
        f"/v2/org/{world.beta.name}/nico/task/{uid}",
        params={"siteId": world.site_a2.upper()},
        headers=admin_auth(key_dir, world.beta.name),
    )
    assert r.status_code == 403 and r.json()["message"] == errors.FOREIGN_SITE, r.text
    r = await http.post(
        f"/v2/org/{world.acme.name}/nico/task/{uid}/cancel",
        json={"siteId": world.site_a2},
        headers=admin_auth(key_dir, world.acme.name),
    )
    assert r.status_code == 202, r.text


async def test_bad_bodies_are_4xx(
    server: ServerThread,
    http: httpx.AsyncClient,
    kube_api: Any,
    namespace: str,
    world: World,
    key_dir: Path,
) -> None:
    org, site = world.acme.name, world.site_a
    task = await make_task(kube_api, namespace, site, "Running")
    uid = task["metadata"]["uid"]
    await cached(server, task, versions=False)
    url = f"/v2/org/{org}/nico/task/{uid}/cancel"
    headers = {**admin_auth(key_dir, org), "Content-Type": "application/json"}
    big = b'{"siteId": "' + site.encode() + b'", "pad": "' + b"x" * (10 << 20) + b'"}'
    r = await http.post(url, content=big, headers=headers)
    assert r.status_code == 413 and r.json()["source"] == "nico", r.text

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        yield big[: 1 << 20]
        yield big[1 << 20 :]

    r = await http.post(url, content=chunks(), headers=headers)
    assert r.status_code == 413 and r.json()["source"] == "nico", r.text
    for body in (
        b"[" * 20000 + b"]" * 20000,
        b'{"a":' * 5000 + b"1" + b"}" * 5000,
        b"\xff\xfe",
        b'{"siteId": "\xed\xa0\x80"}',
        b"NaN",
    ):
        r = await http.post(url, content=body, headers=headers)
        assert r.status_code == 400 and r.json()["message"] == errors.BAD_BODY, (body[:20], r.text)
    deep_token = "e" + "y" * 10 + "." + "W" * 40000 + ".x"
    r = await http.post(
        url, json={"siteId": site}, headers={"Authorization": f"Bearer {deep_token}"}
    )
    assert r.status_code == 401, r.text
    after = await read_task(kube_api, namespace, task["metadata"]["name"])
    assert not after["spec"].get("cancel")
