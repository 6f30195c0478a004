"""The one Kubernetes adapter: its error mapping and kubeconfig reading (no server)."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import kubernetes_asyncio.client
import pytest
import yaml

from nicotask import api, kube
from nicotask.kube import (
    ApiException,
    Conflict,
    Expired,
    NotFound,
    Refused,
    api_errors,
    kubeconfig_namespace,
    kubeconfig_server,
    mapped_error,
    raise_for_status,
)


@pytest.mark.parametrize(
    ("status", "kind"),
    [(404, NotFound), (409, Conflict), (410, Expired), (422, Refused), (500, ApiException)],
)
def test_one_mapping_of_api_statuses(status: int, kind: type[Exception]) -> None:
    err = mapped_error(status, "Reason", "nicotasks ns/t")
    assert type(err) is kind
    if isinstance(err, kube.KubeError):
        assert err.status == status
    with pytest.raises(kind):
        raise_for_status(status, "Reason", "nicotasks ns/t")
    raise_for_status(200, "OK", "nicotasks ns/t")


def test_a_raw_answer_keeps_the_server_message_too() -> None:
    body = json.dumps({"message": "status.status is terminal"}).encode()
    with pytest.raises(Refused, match=r"status\.status is terminal"):
        raise_for_status(422, "Unprocessable Entity", "x", body)
    with pytest.raises(ApiException) as info:
        raise_for_status(500, "Internal Server Error", "x", b'{"message": "etcd down"}')
    assert kube.api_message(info.value) == "etcd down"


def test_api_errors_maps_a_client_exception_and_keeps_the_server_message() -> None:
    exc = ApiException(status=422, reason="Unprocessable Entity")
    exc.body = json.dumps({"message": "status.status is terminal"})
    with pytest.raises(Refused, match=r"status\.status is terminal") as info, api_errors("x"):
        raise exc
    assert info.value.__cause__ is exc
    # unmapped statuses pass through unchanged
    with pytest.raises(ApiException), api_errors("x"):
        raise ApiException(status=403, reason="Forbidden")


def _kubeconfig(path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "a",
        "clusters": [{"name": "ca", "cluster": {"server": "https://a:6443"}},
                     {"name": "cb", "cluster": {"server": "https://b:6443"}}],
        "users": [{"name": "u", "user": {"token": "x"}}],
        "contexts": [{"name": "a", "context": {"cluster": "ca", "user": "u", "namespace": "n1"}},
                     {"name": "b", "context": {"cluster": "cb", "user": "u"}}],
    }))  # fmt: skip
    return path


def test_kubeconfig_namespace_and_server(tmp_path: Path) -> None:
    path = _kubeconfig(tmp_path / "config")
    assert kubeconfig_namespace(path) == "n1"
    assert kubeconfig_namespace(path, "b") == "default"
    assert kubeconfig_namespace(path, "no-such-context") == "n1"  # the current one
    assert kubeconfig_namespace(tmp_path / "missing") == "default"
    assert kubeconfig_server(path) == "https://a:6443"
    assert kubeconfig_server(tmp_path / "missing") == ""


def test_plurals_kinds_and_finished_statuses_are_defined_once() -> None:
    assert [k.plural for k in api.KINDS] == [
        api.TASKS,
        api.RULES,
        api.RACKS,
        api.PROVIDERS,
        api.SITES,
    ]
    assert kube.TASKS is api.TASKS and kube.CANCEL_REQUESTED_BY is api.CANCEL_REQUESTED_BY
    assert api.FINISHED_STATUS_VALUES == ("Succeeded", "Failed", "Terminated")
    assert set(api.FINISHED_STATUS_VALUES) == {s.value for s in api.FINISHED_STATUSES}
    assert api.TERMINAL_STATUS_CEL == "['Succeeded', 'Failed', 'Terminated']"
    assert api.LIVE_FIELD_SELECTOR == (
        "status.status!=Failed,status.status!=Succeeded,status.status!=Terminated"
    )
    body = api.TASK_RESOURCE.manifest("t", {"cancel": True}, labels={"a": "b"})
    assert body == {
        "apiVersion": api.API_VERSION, "kind": "NicoTask",
        "metadata": {"name": "t", "labels": {"a": "b"}}, "spec": {"cancel": True},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("env", "netrc", "trusted"),
    [
        ({}, False, False),  # nothing to trust: no proxy lookups, no ~/.netrc reads
        ({"HTTPS_PROXY": "http://proxy:3128"}, False, True),
        ({"no_proxy": "x", "http_proxy": "http://proxy:3128"}, False, True),
        ({"NETRC": "/somewhere/netrc"}, False, True),
        ({}, True, True),
    ],
)
async def test_the_environment_is_trusted_only_when_it_says_something(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], netrc: bool, trusted: bool
) -> None:
    for name in [*kube.PROXY_VARIABLES, *(n.lower() for n in kube.PROXY_VARIABLES), "NETRC"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HOME", str(tmp_path))
    if netrc:
        (tmp_path / ".netrc").write_text("machine example login u password p\n")
    api_client = kubernetes_asyncio.client.ApiClient()
    connector = api_client.rest_client.pool_manager.connector
    try:
        kube.trust_env_only_if_used(api_client)
        session = api_client.rest_client.pool_manager
        kube.trust_env_only_if_used(api_client)  # a second call (the shim's) changes nothing
        assert api_client.rest_client.pool_manager is session
        assert session.trust_env is trusted
        assert session.connector is connector and not session.closed  # same TLS and pool
    finally:
        await api_client.close()
    assert connector.closed  # closing the client still closes its connections


async def test_list_page_waits_out_429_as_told() -> None:
    """A CRD's storage being (re)initialized answers 429 with Retry-After: LIST again."""
    from kubernetes_asyncio.client.exceptions import ApiException

    from nicotask import kube as kube_mod

    calls = 0

    async def lister(*args: object, **kwargs: object) -> dict[str, object]:
        nonlocal calls
        calls += 1
        if calls < 3:
            exc = ApiException(status=429, reason="TooManyRequests")
            exc.headers = {"Retry-After": "0"}
            raise exc
        return {"items": []}

    k = kube_mod.Kube.__new__(kube_mod.Kube)
    k._lister = lambda plural, namespace: (lister, ())  # type: ignore[method-assign]
    assert await k.list_page(kube_mod.RULES, "ns") == {"items": []}
    assert calls == 3


async def test_list_page_gives_up_after_a_few_429s() -> None:
    from kubernetes_asyncio.client.exceptions import ApiException

    from nicotask import kube as kube_mod

    async def lister(*args: object, **kwargs: object) -> dict[str, object]:
        exc = ApiException(status=429, reason="TooManyRequests")
        exc.headers = {"Retry-After": "0"}
        raise exc

    k = kube_mod.Kube.__new__(kube_mod.Kube)
    k._lister = lambda plural, namespace: (lister, ())  # type: ignore[method-assign]
    with pytest.raises(ApiException):
        await k.list_page(kube_mod.RULES, "ns")


async def test_requests_name_the_component_that_sends_them(tmp_path: Path) -> None:
    """The API server takes the field manager from the User-Agent: managedFields and
    audit logs then say `nicotask-worker`, not the client library's `OpenAPI-Generator`."""
    api_client = await kube.new_api_client(
        str(_kubeconfig(tmp_path / "config")), component="worker"
    )
    try:
        version = importlib.metadata.version("nicotask")
        assert api_client.user_agent == f"nicotask-worker/{version}"
        assert kube.user_agent("operator").split("/")[0] == "nicotask-operator"
    finally:
        await api_client.close()


def test_a_watch_error_event_raises_as_its_status_maps() -> None:
    bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "7"}}}
    assert kube._watch_event(bookmark, "watch") is bookmark
    gone = {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "code": 410,
            "reason": "Expired",
            "message": "too old resource version: 1 (5)",
        },
    }
    with pytest.raises(Expired, match="too old resource version"):
        kube._watch_event(gone, "watch of nicotasks")
    broken = {"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "boom"}}
    with pytest.raises(ApiException) as err:
        kube._watch_event(broken, "watch of nicotasks")
    assert err.value.status == 500
