"""crdgen: structural CRDs from the models, drift detection, the docs reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from nicotask.api import API_VERSION, UUID_PATTERN
from nicotask.cli import main as nicotask_cli
from nicotask_dev import crdgen

REPO = Path(__file__).resolve().parents[2]


def _crds() -> dict[str, dict[str, Any]]:
    return {k.kind: crdgen.crd(k) for k in crdgen.KINDS}


def _schema(kind: str) -> dict[str, Any]:
    return _crds()[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("kind", [k.kind for k in crdgen.KINDS])
def test_structural(kind: str) -> None:
    schema = _schema(kind)
    text = json.dumps(schema)
    for key in ('"$ref"', '"anyOf"', '"allOf"', '"oneOf"', '"$defs"', '"title"', '"const"'):
        assert key not in text, key
    for path, node in crdgen.iter_nodes(schema):
        assert "type" in node, path
        if node["type"] == "object" and "properties" not in node:
            assert (
                node.get("x-kubernetes-preserve-unknown-fields")
                or "additionalProperties" in node
                or path == ".metadata"
            ), path
        assert node.get("additionalProperties") is not False, path
        if isinstance(node.get("exclusiveMinimum"), bool):
            assert "minimum" in node, path
        assert node.get("default", "") is not None, path


def test_names_scope_and_versions() -> None:
    crds = _crds()
    assert set(crds) == {"NicoTask", "NicoOperationRule", "NicoRack", "NicoProvider", "NicoSite"}
    scopes = {k: c["spec"]["scope"] for k, c in crds.items()}
    assert scopes == {
        "NicoTask": "Namespaced",
        "NicoOperationRule": "Namespaced",
        "NicoRack": "Namespaced",
        "NicoProvider": "Cluster",
        "NicoSite": "Cluster",
    }
    for kind, crd in crds.items():
        names = crd["spec"]["names"]
        assert names["categories"] == ["nico"]
        assert names["shortNames"]
        assert crd["metadata"]["name"] == f"{names['plural']}.nico.dev"
        (version,) = crd["spec"]["versions"]
        assert f"nico.dev/{version['name']}" == API_VERSION
        assert version["served"] and version["storage"]
        assert ("subresources" in version) == (kind == "NicoTask")
    assert crds["NicoTask"]["spec"]["names"]["shortNames"][0] == "nt"


def test_nicotask_columns_and_selectable_fields() -> None:
    (version,) = _crds()["NicoTask"]["spec"]["versions"]
    cols = [
        (c["name"], c["jsonPath"])
        for c in version["additionalPrinterColumns"]
        if not c.get("priority")
    ]
    assert cols == [
        ("Status", ".status.status"),
        ("Operation", ".spec.operation"),
        ("Rack", ".spec.rackRef"),
        ("Site", ".spec.siteId"),
        ("Message", ".status.message"),
        ("Age", ".metadata.creationTimestamp"),
    ]
    # The operator's watch excludes finished tasks by status.status; a second, small
    # watch finds cancels of finished tasks by spec.cancel.
    assert version["selectableFields"] == [
        {"jsonPath": ".spec.rackRef"},
        {"jsonPath": ".spec.siteId"},
        {"jsonPath": ".spec.cancel"},
        {"jsonPath": ".status.status"},
    ]


def test_nicotask_schema_details() -> None:
    schema = _schema("NicoTask")
    spec = schema["properties"]["spec"]
    status = schema["properties"]["status"]
    assert spec["required"] == ["siteId", "rackRef", "operation"]
    # one meaning of UUID: the models' pattern, not the API server's laxer `uuid` format
    assert spec["properties"]["siteId"]["pattern"] == UUID_PATTERN
    assert spec["properties"]["ruleId"]["pattern"] == UUID_PATTERN
    assert "format" not in spec["properties"]["siteId"]
    assert spec["properties"]["operation"]["enum"] == [
        "PowerOn",
        "PowerOff",
        "PowerCycle",
        "ForceOff",
        "ForceCycle",
    ]
    assert spec["properties"]["cancel"]["default"] is False
    messages = {r["message"] for r in spec["x-kubernetes-validations"]}
    for field in ("siteId", "rackRef", "operation"):
        rules = spec["properties"][field]["x-kubernetes-validations"]
        assert rules == [{"rule": "self == oldSelf", "message": f"spec.{field} is immutable"}]
    assert "spec.cancel cannot be set back to false" in messages
    assert "spec.ruleId is immutable" in messages
    assert "spec.cancelMode cannot become Graceful" in " ".join(messages)
    assert "spec.cancelReason cannot change once the task is cancelled" in messages
    assert "spec.deadline is immutable" in messages
    assert spec["properties"]["cancelMode"]["enum"] == ["Terminate", "Graceful"]
    assert spec["properties"]["cancelReason"]["maxLength"] == 512
    # Nothing of an unreleased version is kept: no opaque bookkeeping field.
    assert "kopf" not in status["properties"]
    assert not any(
        p.get("x-kubernetes-preserve-unknown-fields") for p in status["properties"].values()
    )
    assert status["properties"]["created"]["format"] == "date-time"
    report = status["properties"]["report"]
    assert report["type"] == "object"
    stage = report["properties"]["stages"]["items"]
    assert stage["properties"]["number"]["minimum"] == 1
    step = stage["properties"]["steps"]["items"]
    assert step["required"] == ["componentType", "status"]
    assert report["properties"]["version"]["enum"] == ["1"]
    assert status["properties"]["conditions"]["x-kubernetes-list-type"] == "map"
    assert "x-kubernetes-validations" in status


def test_rule_and_rack_schema_details() -> None:
    rule = _schema("NicoOperationRule")["properties"]["spec"]
    step = rule["properties"]["steps"]["items"]
    assert step["properties"]["stage"]["minimum"] == 1
    assert "NVLSwitch" in step["properties"]["componentType"]["enum"]
    action_rules = {r["message"] for r in step["properties"]["action"]["x-kubernetes-validations"]}
    assert "action.power is required when action.type is PowerControl" in action_rules
    assert "action.expectedState is required when action.type is VerifyPowerStatus" in action_rules
    assert "action.durationSeconds is required when action.type is Sleep" in action_rules
    timeout = step["properties"]["timeoutSeconds"]
    assert timeout["minimum"] == 0 and timeout["exclusiveMinimum"] is True
    rack = _schema("NicoRack")["properties"]["spec"]
    comps = rack["properties"]["components"]
    assert comps["x-kubernetes-list-type"] == "map"
    assert comps["x-kubernetes-list-map-keys"] == ["id"]


def test_a_site_is_named_after_its_site_id_on_the_crds_root() -> None:
    """One siteId, one NicoSite: the rule sits on the root, where metadata.name is seen."""
    (rule,) = _schema("NicoSite")["x-kubernetes-validations"]
    assert rule["rule"] == "self.metadata.name == self.spec.siteId.lowerAscii()"
    assert rule["fieldPath"] == ".spec.siteId"
    assert "metadata.name must be spec.siteId" in rule["message"]
    for kind in ("NicoTask", "NicoRack", "NicoOperationRule", "NicoProvider"):
        assert "x-kubernetes-validations" not in _schema(kind), kind


def test_render_is_deterministic() -> None:
    assert crdgen.render() == crdgen.render()
    for name, text in crdgen.render().items():
        doc = yaml.safe_load(text)
        assert doc["kind"] == "CustomResourceDefinition", name


def test_header_names_the_module_that_defines_the_kind() -> None:
    files = crdgen.render()
    repo = Path(crdgen.__file__).resolve().parents[2]
    for kind in crdgen.KINDS:
        first = files[kind.filename].splitlines()[0]
        assert first.startswith("# Code generated by `nicotask crds` from "), first
        source = first.split(" from ", 1)[1].removesuffix(". DO NOT EDIT.")
        assert (repo / source).is_file(), source
        assert f"class {kind.kind}(" in (repo / source).read_text(), source


def test_structural_rejects_unions() -> None:
    with pytest.raises(crdgen.SchemaError):
        crdgen.structural({"anyOf": [{"type": "string"}, {"type": "integer"}]})
    with pytest.raises(crdgen.SchemaError):
        crdgen.structural({"description": "no type"})


def test_repo_crds_up_to_date() -> None:
    problems = crdgen.check(REPO / "crds", REPO / "docs" / "resource.md")
    assert problems == [], "run `nicotask crds`:\n" + "\n".join(problems)


def test_check_detects_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "crds"
    docs = tmp_path / "resource.md"
    docs.write_text("# Resource\n\nintro\n")
    assert nicotask_cli(["crds", "--check", "--dir", str(out), "--docs", str(docs)]) == 1
    assert "missing:" in capsys.readouterr().err
    assert nicotask_cli(["crds", "--dir", str(out), "--docs", str(docs)]) == 0
    assert crdgen.DOCS_BEGIN in docs.read_text() and "intro" in docs.read_text()
    assert sorted(p.name for p in out.iterdir()) == sorted(k.filename for k in crdgen.KINDS)
    assert nicotask_cli(["crds", "--check", "--dir", str(out), "--docs", str(docs)]) == 0
    capsys.readouterr()
    # edit a CRD by hand: drift
    target = out / "nico.dev_nicotasks.yaml"
    target.write_text(target.read_text().replace("- nt\n", "- xx\n"))
    (out / "nico.dev_oldkinds.yaml").write_text("stale\n")
    assert nicotask_cli(["crds", "--check", "--dir", str(out), "--docs", str(docs)]) == 1
    err = capsys.readouterr().err
    assert "differs:" in err and "nico.dev_nicotasks.yaml" in err
    assert "-    - xx" in err and "+    - nt" in err
    assert "stale:" in err
    # the docs reference drifts too
    assert nicotask_cli(["crds", "--dir", str(out), "--docs", str(docs)]) == 0
    docs.write_text(docs.read_text().replace("| `spec.siteId`", "| `spec.site`"))
    assert nicotask_cli(["crds", "--check", "--dir", str(out), "--docs", str(docs)]) == 1
    assert "generated field reference" in capsys.readouterr().err
    assert not (out / "nico.dev_oldkinds.yaml").exists()


def test_docs_contain_current_reference() -> None:
    text = (REPO / "docs" / "resource.md").read_text()
    assert crdgen.docs_block() in text
    reference = crdgen.field_reference_markdown()
    for needle in (
        "### NicoTask",
        "`spec.siteId`",
        "`status.report.stages[].steps[].error`",
        "spec.cancel cannot be set back to false",
        "### NicoSite",
    ):
        assert needle in reference, needle
