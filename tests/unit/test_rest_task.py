"""The REST view of a NicoTask, validated against contract/openapi.yaml (not our models)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from nicotask.api import NicoTask, TaskStatus
from nicotask.shim.rest_task import task_from_cr, task_model

OPENAPI = Path(__file__).resolve().parents[2] / "contract" / "openapi.yaml"
UID = "3f2a3c1e-8d2b-4a55-9c41-0c9f4b8f2d10"
SITE = "660e8400-e29b-41d4-a716-446655440000"
RULE = "770e8400-e29b-41d4-a716-446655440001"
RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$", re.IGNORECASE
)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    doc = yaml.safe_load(OPENAPI.read_text())
    uri = "urn:nico:openapi"
    registry: Registry[Any] = Registry().with_resource(
        uri, Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    checker = jsonschema.FormatChecker()

    @checker.checks("date-time")
    def _date_time(value: object) -> bool:
        return not isinstance(value, str) or bool(RFC3339.match(value))

    return jsonschema.Draft202012Validator(
        {"$ref": f"{uri}#/components/schemas/Task"}, registry=registry, format_checker=checker
    )


def _report(failed: bool = False) -> dict[str, Any]:
    stage2: dict[str, Any] = {
        "number": 2,
        "status": "failed" if failed else "running",
        "startedAt": "2025-06-01T10:00:05Z",
        "steps": [
            {
                "componentType": "NVLSwitch",
                "status": "failed" if failed else "running",
                "totalComponents": 2,
                "startedAt": "2025-06-01T10:00:05Z",
            }
        ],
    }
    report: dict[str, Any] = {
        "version": "1",
        "stages": [
            {
                "number": 1,
                "status": "completed",
                "startedAt": "2025-06-01T10:00:01Z",
                "finishedAt": "2025-06-01T10:00:05Z",
                "steps": [
                    {
                        "componentType": "PowerShelf",
                        "status": "completed",
                        "totalComponents": 2,
                        "startedAt": "2025-06-01T10:00:01Z",
                        "finishedAt": "2025-06-01T10:00:05Z",
                    }
                ],
            },
            stage2,
            {
                "number": 3,
                "status": "pending",
                "steps": [{"componentType": "Compute", "status": "pending", "totalComponents": 6}],
            },
        ],
    }
    if failed:
        stage2["error"] = stage2["steps"][0]["error"] = report["error"] = "BMC said no " + "ü" * 600
        stage2["finishedAt"] = stage2["steps"][0]["finishedAt"] = "2025-06-01T10:00:09Z"
    return report


def _cr(status: dict[str, Any] | None, **meta: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "nico.dev/v1alpha1",
        "kind": "NicoTask",
        "metadata": {
            "name": "power-on-rack-1",
            "namespace": "default",
            "uid": UID,
            "creationTimestamp": "2025-06-01T09:59:59Z",
            "resourceVersion": "42",
            "generation": 1,
            "managedFields": [{"manager": "kubectl"}],
            **meta,
        },
        "spec": {
            "siteId": SITE,
            "rackRef": "rack-1",
            "operation": "PowerOn",
            "description": "Power on rack-1",
            "cancel": False,
        },
    }
    if status is not None:
        obj["status"] = status
    return obj


def _status(state: TaskStatus) -> dict[str, Any]:
    status: dict[str, Any] = {
        "id": UID,
        "status": state.value,
        "message": state.value,
        "created": "2025-06-01T10:00:00Z",
        "updated": "2025-06-01T10:00:09Z",
    }
    if state in (
        TaskStatus.RUNNING,
        TaskStatus.SUCCEEDED,
        TaskStatus.FAILED,
        TaskStatus.TERMINATED,
    ):
        status["ruleId"] = RULE
        status["started"] = "2025-06-01T10:00:01Z"
        status["report"] = _report(failed=state is TaskStatus.FAILED)
        status["workflowId"] = UID
        status["runId"] = "0b7e6f0e-6c1d-4d67-9d7b-5d3e9a1b2c3d"
        status["cancelMode"] = "Graceful"
        status["cancelReason"] = "window closed"
    if state.finished:
        status["finished"] = "2025-06-01T10:00:10Z"
    if state is TaskStatus.WAITING:
        status["message"] = "Queued: waiting for rack to become available"
        status["waitingSince"] = "2025-06-01T10:00:00Z"
    return status


@pytest.mark.parametrize("state", list(TaskStatus), ids=lambda s: s.value)
@pytest.mark.parametrize("include_report", [True, False], ids=["report", "no-report"])
def test_task_view_matches_contract(
    validator: jsonschema.Draft202012Validator, state: TaskStatus, include_report: bool
) -> None:
    cr = _cr(_status(state))
    body = task_model(cr, include_report=include_report).wire()
    validator.validate(body)
    assert body["id"] == UID
    assert body["status"] == state.value
    assert body["description"] == "Power on rack-1"
    assert "ruleId" in body
    # Every time is served to the microsecond (one precision for all of them).
    assert body["created"] == "2025-06-01T10:00:00.000000Z"
    has_report = "report" in cr["status"] and include_report
    assert ("report" in body) == has_report
    if has_report:
        assert body["report"]["version"] == "1"
        assert [s["number"] for s in body["report"]["stages"]] == [1, 2, 3]
    # internal bookkeeping never leaks into the REST view
    internal = ("workflowId", "runId", "cancelMode", "cancelReason", "conditions", "waitingSince")
    for key in (*internal, "observedGeneration"):
        assert key not in body
    # the typed model gives the same view
    assert task_model(task_from_cr(cr), include_report=include_report).wire() == body


def test_no_status_yet(validator: jsonschema.Draft202012Validator) -> None:
    for cr in (_cr(None), {**_cr(None), "status": None}, _cr({})):
        body = task_model(cr).wire()
        validator.validate(body)
        assert body["status"] == "Pending"
        assert body["ruleId"] is None
        assert body["created"] == "2025-06-01T09:59:59.000000Z"  # metadata.creationTimestamp
        assert "report" not in body and "started" not in body and "finished" not in body


def test_failed_report_errors_are_truncated(validator: jsonschema.Draft202012Validator) -> None:
    body = task_model(_cr(_status(TaskStatus.FAILED))).wire()
    validator.validate(body)
    errors = [
        body["report"]["error"],
        body["report"]["stages"][1]["error"],
        body["report"]["stages"][1]["steps"][0]["error"],
    ]
    for error in errors:
        assert len(error.encode()) <= 512
        assert error.startswith("BMC said no ü")


def test_rule_id_null_until_resolved(validator: jsonschema.Draft202012Validator) -> None:
    cr = _cr(_status(TaskStatus.PENDING))
    cr["spec"]["ruleId"] = RULE  # pinned, but not yet recorded as resolved
    body = task_model(cr).wire()
    validator.validate(body)
    assert body["ruleId"] is None


def test_contract_rejects_a_broken_view(validator: jsonschema.Draft202012Validator) -> None:
    """The validator really checks: a wrong status or id is caught."""
    body = task_model(_cr(_status(TaskStatus.RUNNING))).wire()
    for key, value in (("status", "Cancelled"), ("id", "not-a-uuid"), ("created", "yesterday")):
        broken = copy.deepcopy(body)
        broken[key] = value
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(broken)


def test_task_from_cr_is_tolerant() -> None:
    task = task_from_cr(_cr(None))
    assert isinstance(task, NicoTask)
    assert task.status.status is TaskStatus.PENDING
    assert task.metadata.uid == UID
    assert task_model(task).id == UID


def test_missing_uid_is_an_error() -> None:
    cr = _cr(None)
    del cr["metadata"]["uid"]
    with pytest.raises(ValueError, match="uid"):
        task_model(cr).wire()
