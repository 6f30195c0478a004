"""The cancel fields of a NicoTask against the real kube-apiserver: one-way escalation,
a reason that is one printable line (refused with a message that names the field, and
nothing stored), an immutable deadline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_crds import SITE_ID, Result, _task, kubectl

from nicotask import api

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def created(devenv: Any, crds: None, namespace: str) -> str:
    res = await kubectl(devenv.kubeconfig, "create", "-n", namespace, "-f", "-", stdin=_task("t"))
    assert res.rc == 0, res.err
    return "t"


async def patch(devenv: Any, namespace: str, spec: dict[str, Any]) -> Result:
    body = json.dumps({"spec": spec})
    return await kubectl(
        devenv.kubeconfig, "patch", "-n", namespace, "nt", "t", "--type=merge", "-p", body
    )


async def spec_of(devenv: Any, namespace: str) -> dict[str, Any]:
    res = await kubectl(devenv.kubeconfig, "get", "-n", namespace, "nt", "t", "-o", "json")
    assert res.rc == 0, res.err
    spec: dict[str, Any] = json.loads(res.out)["spec"]
    return spec


async def test_graceful_escalates_to_terminate_never_back(
    devenv: Any, namespace: str, created: str
) -> None:
    assert (await patch(devenv, namespace, {"cancel": True, "cancelMode": "Graceful"})).rc == 0
    res = await patch(devenv, namespace, {"cancelMode": "Terminate"})
    assert res.rc == 0, res.err
    res = await patch(devenv, namespace, {"cancelMode": "Graceful"})
    assert res.rc != 0
    assert "spec.cancelMode" in res.err and "never the reverse" in res.err, res.err
    # Unset mode is Terminate: removing it is allowed, and Graceful after it is not.
    assert (await patch(devenv, namespace, {"cancelMode": None})).rc == 0
    res = await patch(devenv, namespace, {"cancelMode": "Graceful"})
    assert res.rc != 0 and "spec.cancelMode" in res.err, res.err
    assert (await spec_of(devenv, namespace)).get("cancelMode") is None


async def test_mode_is_free_until_the_cancel(devenv: Any, namespace: str, created: str) -> None:
    for mode in ("Terminate", "Graceful", "Terminate", "Graceful"):
        res = await patch(devenv, namespace, {"cancelMode": mode})
        assert res.rc == 0, res.err


@pytest.mark.parametrize(
    ("reason", "expect"),
    [
        ("x" * 10240, "spec.cancelReason: Too long: may not be more than 512"),
        ("two\nlines", "spec.cancelReason must be one line of printable text"),
        ("bell\x07", "spec.cancelReason must be one line of printable text"),
        ("c1\u0085", "spec.cancelReason must be one line of printable text"),
    ],
    ids=["10KiB", "newline", "control", "c1-control"],
)
async def test_bad_reason_refused_and_nothing_stored(
    devenv: Any, namespace: str, created: str, reason: str, expect: str
) -> None:
    res = await patch(devenv, namespace, {"cancel": True, "cancelReason": reason})
    assert res.rc != 0
    assert expect in res.err, res.err
    spec = await spec_of(devenv, namespace)
    assert spec["cancel"] is False and "cancelReason" not in spec  # the whole patch refused
    # The same as pydantic says (the shim and the plugin check before sending).
    with pytest.raises(ValueError):
        api.NicoTaskSpec.model_validate(
            {"siteId": SITE_ID, "rackRef": "r", "operation": "PowerOn", "cancelReason": reason}
        )


async def test_reason_with_invalid_utf8_is_refused(
    devenv: Any, crds: None, namespace: str, tmp_path: Path
) -> None:
    """Raw bytes on the wire: the API server decodes them to U+FFFD, which the rule refuses."""
    body = _task("raw").replace('"spec": {', '"spec": {"cancelReason": "bad \\u0000",', 1)
    raw = body.encode().replace(b"bad \\u0000", b"bad \xff\xfe")
    path = tmp_path / "task.json"
    path.write_bytes(raw)
    url = f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{namespace}/{api.TASKS}"
    res = await kubectl(devenv.kubeconfig, "create", "--raw", url, "-f", str(path))
    assert res.rc != 0, res.out
    assert "spec.cancelReason must be one line of printable text" in res.err, res.err
    res = await kubectl(devenv.kubeconfig, "get", "-n", namespace, "nt", "raw")
    assert res.rc != 0 and "NotFound" in res.err


async def test_reason_is_fixed_once_cancelled(devenv: Any, namespace: str, created: str) -> None:
    assert (await patch(devenv, namespace, {"cancelReason": "first"})).rc == 0
    assert (await patch(devenv, namespace, {"cancelReason": "second"})).rc == 0  # not yet
    res = await patch(devenv, namespace, {"cancel": True, "cancelReason": "window closed"})
    assert res.rc == 0, res.err
    res = await patch(devenv, namespace, {"cancelReason": "something else"})
    assert res.rc != 0
    assert "spec.cancelReason cannot change once the task is cancelled" in res.err, res.err
    assert (await spec_of(devenv, namespace))["cancelReason"] == "window closed"


async def test_deadline_needs_a_bound_and_is_immutable(
    devenv: Any, crds: None, namespace: str
) -> None:
    res = await kubectl(
        devenv.kubeconfig, "create", "-n", namespace, "-f", "-",
        stdin=_task("d0", deadline={"stop": "Terminate"}),
    )  # fmt: skip
    assert res.rc != 0
    assert "spec.deadline needs activeSeconds, notAfter or both" in res.err, res.err
    res = await kubectl(
        devenv.kubeconfig, "create", "-n", namespace, "-f", "-",
        stdin=_task("d1", deadline={"activeSeconds": 60}),
    )  # fmt: skip
    assert res.rc == 0, res.err
    res = await kubectl(
        devenv.kubeconfig, "patch", "-n", namespace, "nt", "d1", "--type=merge",
        "-p", json.dumps({"spec": {"deadline": {"activeSeconds": 600}}}),
    )  # fmt: skip
    assert res.rc != 0 and "spec.deadline is immutable" in res.err, res.err
    res = await kubectl(
        devenv.kubeconfig, "get", "-n", namespace, "nt", "d1", "-o", "jsonpath={.spec.deadline}"
    )
    assert json.loads(res.out) == {"activeSeconds": 60, "stop": "Graceful"}
