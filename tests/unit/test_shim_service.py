"""Pure parts of the shim: the cancel decision, the patch, errors as NICoAPIError."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from nicotask.kube import CANCEL_REQUESTED_BY
from nicotask.shim.app import create_app
from nicotask.shim.config import ShimSettings
from nicotask.shim.service import CancelDecision, cancel_patch, decide_cancel, task_status


def _task(status: str | None, cancel: bool = False) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "metadata": {"name": "t", "namespace": "n", "uid": "u", "resourceVersion": "7"},
        "spec": {"cancel": cancel},
    }
    if status is not None:
        obj["status"] = {"status": status}
    return obj


@pytest.mark.parametrize(
    ("status", "cancel", "decision"),
    [
        (None, False, CancelDecision.PATCH),
        ("Pending", False, CancelDecision.PATCH),
        ("Waiting", False, CancelDecision.PATCH),
        ("Running", False, CancelDecision.PATCH),
        ("Unknown", False, CancelDecision.PATCH),
        ("Running", True, CancelDecision.UNCHANGED),
        ("Terminated", False, CancelDecision.UNCHANGED),
        ("Terminated", True, CancelDecision.UNCHANGED),
        ("Succeeded", False, CancelDecision.FINISHED),
        ("Failed", True, CancelDecision.FINISHED),
    ],
)
def test_decide_cancel(status: str | None, cancel: bool, decision: CancelDecision) -> None:
    assert decide_cancel(task_status(_task(status, cancel)), cancel) == decision


def test_cancel_patch_has_precondition_and_who() -> None:
    assert cancel_patch("7", "alice") == {
        "metadata": {"resourceVersion": "7", "annotations": {CANCEL_REQUESTED_BY: "alice"}},
        # A hard terminate, which also escalates a graceful stop.
        "spec": {"cancel": True, "cancelMode": "Terminate"},
    }


async def test_unknown_route_and_wrong_method_are_nico_errors() -> None:
    app = create_app(ShimSettings())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://shim"
    ) as http:
        r = await http.get("/nope")
        assert r.status_code == 404
        assert r.json()["source"] == "nico" and set(r.json()) == {"source", "message", "data"}
        r = await http.delete("/v2/org/acme/nico/task/x/cancel")
        assert r.status_code == 405
        assert r.json()["source"] == "nico"
