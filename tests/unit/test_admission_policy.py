"""The chart's ValidatingAdmissionPolicy is admission.py's (the local environment's)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from nicotask_dev import admission
from nicotask_dev.devenv.helm import ensure_helm

CHART = Path(__file__).resolve().parents[2] / "charts" / "nicotask"


def _render(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [
            str(ensure_helm()),
            "template",
            "rel",
            str(CHART),
            "--namespace",
            "nico-sys",
            "--show-only",
            "templates/admission-policy.yaml",
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        if "could not find template" in out.stderr:
            return []  # rendered nothing (disabled)
        raise AssertionError(out.stderr)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _comparable(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for doc in docs:
        doc = json.loads(json.dumps(doc))
        doc["metadata"].pop("labels", None)
        doc["metadata"]["name"] = "NAME"  # the chart's carries the release name
        doc["spec"].pop("policyName", None)
        for var in doc["spec"].get("variables", []):
            if var["name"] == "delegates":
                var["expression"] = sorted(json.loads(var["expression"]))
        out.append(doc)
    return out


def test_chart_policy_is_the_module_policy() -> None:
    rendered = _render("--set", "cancelRequestedByPolicy.delegates={argocd}")
    expected = admission.policy(["system:serviceaccount:nico-sys:rel-nicotask-shim", "argocd"])
    assert _comparable(rendered) == _comparable(expected)


def test_chart_policy_name_and_namespaces_follow_the_release() -> None:
    policy, binding = _render("--set-json", 'watchNamespaces=["a","b"]')
    assert policy["metadata"]["name"] == "rel-nicotask-cancel-requested-by"
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"] == [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["a", "b"]}
    ]
    _, cluster_wide = _render()
    assert "matchResources" not in cluster_wide["spec"]


def test_chart_policy_without_shim_and_disabled() -> None:
    rendered = _render("--set", "shim.enabled=false")
    assert _comparable(rendered) == _comparable(admission.policy([]))
    assert _render("--set", "cancelRequestedByPolicy.enabled=false") == []


@pytest.mark.parametrize("delegates", [[], ["a", "b", "a"]])
def test_delegates_variable_is_a_cel_list(delegates: list[str]) -> None:
    var = admission.delegates_variable(delegates)
    assert json.loads(var["expression"]) == sorted(set(delegates))
