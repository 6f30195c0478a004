"""The pydantic models: aliases, spellings, truncation, nullability, rules, samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from nicotask import api
from nicotask.api import (
    ComponentType,
    NicoOperationRuleSpec,
    NicoTask,
    NicoTaskSpec,
    RackComponent,
    StepAction,
    Task,
    TaskReportV1,
    TaskReportV1Stage,
    TaskReportV1Step,
    TaskStatus,
    report_matches_rule,
    truncate_utf8,
)

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"
SITE = "660e8400-e29b-41d4-a716-446655440000"
RULE = "770e8400-e29b-41d4-a716-446655440001"
MODELS = {
    "NicoTask": api.NicoTask,
    "NicoOperationRule": api.NicoOperationRule,
    "NicoRack": api.NicoRack,
    "NicoProvider": api.NicoProvider,
    "NicoSite": api.NicoSite,
}


def test_camel_case_aliases_both_ways() -> None:
    spec = NicoTaskSpec.model_validate(
        {"siteId": SITE, "rackRef": "rack-1", "operation": "PowerOn", "ruleId": RULE}
    )
    assert spec.site_id == SITE and spec.rack_ref == "rack-1" and spec.rule_id == RULE
    assert spec.wire() == {
        "siteId": SITE,
        "rackRef": "rack-1",
        "operation": "PowerOn",
        "ruleId": RULE,
        "description": "",
        "cancel": False,
    }
    by_name = NicoTaskSpec(site_id=SITE, rack_ref="rack-1", operation=api.Operation.POWER_ON)
    assert by_name.rule_id is None


def test_unknown_spec_field_refused() -> None:
    with pytest.raises(ValidationError, match="force"):
        NicoTaskSpec.model_validate(
            {"siteId": SITE, "rackRef": "rack-1", "operation": "PowerOn", "force": True}
        )


@pytest.mark.parametrize("bad", ["site-1", "660e8400e29b41d4a716446655440000", ""])
def test_site_id_must_be_uuid(bad: str) -> None:
    with pytest.raises(ValidationError, match="siteId"):
        NicoTaskSpec.model_validate({"siteId": bad, "rackRef": "r", "operation": "PowerOn"})


def test_unknown_operation_refused() -> None:
    with pytest.raises(ValidationError, match="operation"):
        NicoTaskSpec.model_validate({"siteId": SITE, "rackRef": "r", "operation": "Reboot"})


def test_nvlswitch_is_nvswitch() -> None:
    a = RackComponent.model_validate(
        {"id": "s0", "type": "NVLSwitch", "redfish": {"endpoint": "http://x"}}
    )
    b = RackComponent.model_validate(
        {"id": "s0", "type": "NVSwitch", "redfish": {"endpoint": "http://x"}}
    )
    assert a.type is ComponentType.NVSWITCH
    assert a == b
    assert a.wire()["type"] == "NVSwitch"
    assert api.canonical_component_type("NVLSwitch") == "NVSwitch"
    with pytest.raises(ValidationError):
        RackComponent.model_validate(
            {"id": "g", "type": "GPU", "redfish": {"endpoint": "http://x"}}
        )


def test_truncation_at_multibyte_boundary() -> None:
    text = "a" + "é" * 300  # 1 + 600 bytes; byte 512 falls inside an "é"
    cut = truncate_utf8(text)
    assert len(cut.encode()) == 511
    assert cut == "a" + "é" * 255
    emoji = "€" * 200  # 3 bytes each: 510 fit, 511 and 512 would split one
    assert truncate_utf8(emoji) == "€" * 170
    assert truncate_utf8("short") == "short"
    step = TaskReportV1Step(component_type="Compute", status="failed", error=text)
    stage = TaskReportV1Stage(number=1, status="failed", steps=[step], error=text)
    report = TaskReportV1(stages=[stage], error=text)
    for value in (step.error, stage.error, report.error):
        assert value is not None
        assert len(value.encode()) <= api.ERROR_LIMIT_BYTES
        value.encode().decode("utf-8")  # still valid UTF-8


def test_first_line_error() -> None:
    assert api.first_line_error("boom\nstack trace") == "boom"
    assert api.first_line_error("") == "unknown error"


def test_rule_id_nullable_and_always_present() -> None:
    task = Task(id="a1b2c3d4-0000-4000-8000-000000000000", status=TaskStatus.PENDING)
    body = task.wire()
    assert "ruleId" in body and body["ruleId"] is None
    assert Task.model_validate({**body}).rule_id is None
    body = Task(id="a1b2c3d4-0000-4000-8000-000000000000", status="Running", rule_id=RULE).wire()
    assert body["ruleId"] == RULE


def test_report_stage_numbers_from_one() -> None:
    with pytest.raises(ValidationError, match="number"):
        TaskReportV1Stage(number=0, status="pending", steps=[])
    with pytest.raises(ValidationError, match="ascending"):
        TaskReportV1.model_validate(
            {
                "stages": [
                    {"number": 2, "status": "pending", "steps": []},
                    {"number": 1, "status": "pending", "steps": []},
                ]
            }
        )
    assert TaskReportV1().wire() == {"version": "1", "stages": []}


def _rule(**extra: Any) -> NicoOperationRuleSpec:
    steps = [
        {
            "componentType": "PowerShelf",
            "stage": 1,
            "action": {"type": "PowerControl", "power": "On", "expectedState": "On"},
        },
        {
            "componentType": "NVLSwitch",
            "stage": 2,
            "action": {"type": "PowerControl", "power": "On"},
        },
        {
            "componentType": "Compute",
            "stage": 2,
            "action": {"type": "VerifyPowerStatus", "expectedState": "On"},
        },
        {"componentType": "Compute", "stage": 3, "action": {"type": "Sleep", "durationSeconds": 1}},
    ]
    return NicoOperationRuleSpec.model_validate(
        {"ruleId": RULE, "operation": "PowerOn", "steps": steps, **extra}
    )


def test_rule_stages_grouping() -> None:
    stages = _rule().stages()
    assert list(stages) == [1, 2, 3]
    assert [s.component_type for s in stages[2]] == [ComponentType.NVSWITCH, ComponentType.COMPUTE]


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ({"type": "PowerControl"}, "action.power is required"),
        ({"type": "VerifyPowerStatus"}, "action.expectedState is required"),
        ({"type": "Sleep"}, "action.durationSeconds is required"),
        ({"type": "Sleep", "durationSeconds": 1, "power": "On"}, "action.power is only allowed"),
        ({"type": "PowerControl", "power": "On", "durationSeconds": 1}, "only allowed"),
    ],
)
def test_step_action_consistency(action: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        StepAction.model_validate(action)


def test_one_step_per_type_and_stage() -> None:
    power = {"type": "PowerControl", "power": "On"}
    sleep = {"type": "Sleep", "durationSeconds": 1}
    steps = [
        {"componentType": "NVSwitch", "stage": 1, "action": power},
        {"componentType": "NVLSwitch", "stage": 1, "action": sleep},
    ]
    body = {"ruleId": RULE, "operation": "PowerOn", "steps": steps}
    with pytest.raises(ValidationError, match="at most one step per componentType"):
        NicoOperationRuleSpec.model_validate(body)


def test_rack_component_ids_unique() -> None:
    comp = {"id": "c0", "type": "Compute", "redfish": {"endpoint": "http://x"}}
    with pytest.raises(ValidationError, match="duplicate component ids"):
        api.NicoRackSpec.model_validate(
            {"siteId": SITE, "credentials": {"name": "s"}, "components": [comp, comp]}
        )


def _step(ct: str, status: str = "pending") -> dict[str, Any]:
    return {"componentType": ct, "status": status}


def test_report_matches_rule() -> None:
    rule = _rule()
    good = TaskReportV1.model_validate(
        {
            "stages": [
                {"number": 1, "status": "completed", "steps": [_step("PowerShelf", "completed")]},
                {
                    "number": 2,
                    "status": "running",
                    "steps": [_step("NVSwitch", "running"), _step("Compute", "skipped")],
                },
                {"number": 3, "status": "pending", "steps": [_step("Compute")]},
            ]
        }
    )
    assert report_matches_rule(good, rule) == []
    # NVLSwitch in the report is the rule's NVSwitch
    partial = TaskReportV1.model_validate(
        {
            "stages": [
                {"number": 2, "status": "running", "steps": [_step("NVLSwitch"), _step("Compute")]},
            ]
        }
    )
    assert report_matches_rule(partial, rule) == []
    bad = TaskReportV1.model_validate(
        {
            "stages": [
                {"number": 1, "status": "pending", "steps": [_step("Compute")]},
                {"number": 2, "status": "pending", "steps": [_step("Compute"), _step("NVSwitch")]},
                {"number": 4, "status": "pending", "steps": []},
            ]
        }
    )
    problems = report_matches_rule(bad, rule)
    assert any("stage 1 step 0" in p for p in problems)
    assert any("stage 2 step 0" in p for p in problems)
    assert any("stage 4: the rule has no such stage" in p for p in problems)
    short = TaskReportV1.model_validate(
        {"stages": [{"number": 2, "status": "pending", "steps": [_step("NVSwitch")]}]}
    )
    assert report_matches_rule(short, rule) == ["stage 2: 1 steps, the rule has 2"]


def test_nicotask_status_default_and_timestamps() -> None:
    task = NicoTask.model_validate(
        {
            "metadata": {
                "name": "t",
                "uid": "a1b2c3d4-0000-4000-8000-000000000000",
                "creationTimestamp": "2025-01-02T03:04:05Z",
                "managedFields": [],
            },
            "spec": {"siteId": SITE, "rackRef": "rack-1", "operation": "PowerOn"},
        }
    )
    assert task.status.status is TaskStatus.PENDING
    assert task.metadata.creation_timestamp is not None
    assert task.metadata.creation_timestamp.tzinfo is not None
    assert TaskStatus.TERMINATED.finished and not TaskStatus.WAITING.finished


def _sample_docs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, doc))
    return out


def test_samples_parse_with_the_models() -> None:
    docs = _sample_docs()
    kinds = [doc["kind"] for _, doc in docs]
    assert set(MODELS) <= set(kinds)
    for name, doc in docs:
        if doc["kind"] in MODELS:
            MODELS[doc["kind"]].model_validate(doc)
        else:
            assert doc["kind"] == "Secret", name
    rack = next(api.NicoRack.model_validate(d) for _, d in docs if d["kind"] == "NicoRack")
    types = [c.type for c in rack.spec.components]
    assert len(types) >= 9
    assert set(types) == set(ComponentType)


@pytest.mark.parametrize("path", sorted((SAMPLES / "invalid").glob("*.yaml")), ids=lambda p: p.stem)
def test_invalid_samples_refused_by_the_models(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    with pytest.raises(ValidationError):
        MODELS[doc["kind"]].model_validate(doc)


@pytest.mark.parametrize(
    ("name", "site_id", "ok"),
    [
        (SITE, SITE, True),
        (SITE, SITE.upper(), True),  # the name is the siteId in lower case
        ("acme-site-1", SITE, False),
        (RULE, SITE, False),
    ],
)
def test_a_site_is_named_after_its_site_id(name: str, site_id: str, ok: bool) -> None:
    doc = {
        "apiVersion": api.API_VERSION,
        "kind": "NicoSite",
        "metadata": {"name": name},
        "spec": {"siteId": site_id, "providerRef": "acme"},
    }
    if ok:
        assert api.NicoSite.model_validate(doc).metadata.name == site_id.lower()
    else:
        with pytest.raises(ValidationError, match=r"metadata\.name must be spec\.siteId"):
            api.NicoSite.model_validate(doc)
