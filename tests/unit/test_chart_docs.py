"""docs/deploy.md's configuration table matches values.yaml; the scripts and the image are sane."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from nicotask_dev.devenv import helm

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "nicotask"


def test_deploy_doc_table_matches_values() -> None:
    doc = (REPO / "docs" / "deploy.md").read_text()
    assert helm.values_block() in doc, (
        "docs/deploy.md is out of date: "
        "python -m nicotask_dev.devenv.helm --write-docs docs/deploy.md"
    )


def _leaves(node: Any, path: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        out = []
        for key, value in node.items():
            out += _leaves(value, f"{path}.{key}" if path else key)
        return out
    return [path]


def test_every_value_is_documented() -> None:
    text = (CHART / "values.yaml").read_text()
    documented = {key for key, _ in helm.documented_values(text)}
    for leaf in _leaves(yaml.safe_load(text)):
        parts = leaf.split(".")
        prefixes = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        assert prefixes & documented, f"values.yaml: {leaf} has no `# --` description"


def test_documented_values_parser() -> None:
    text = "a:\n  # -- the b\n  b: 1\n  c:\n    # -- the d\n    d: [x]\n# -- the e\ne: {}\n"
    assert helm.documented_values(text) == [("a.b", "the b"), ("a.c.d", "the d"), ("e", "the e")]


def test_kind_e2e_script_parses() -> None:
    script = REPO / "hack" / "kind-e2e.sh"
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = script.read_text()
    for needle in (
        "load docker-image",  # the Docker route
        "load image-archive",  # the offline podman route
        "start-dev",
        "tests/kind",  # the chart installed, cancelled through its Service, helm test
        "NICOTASK_USE_EXISTING_CLUSTER=1",
        "NICOTASK_TEMPORAL_ADDRESS",
    ):
        assert needle in text


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_kind_e2e_dry_run() -> None:
    proc = subprocess.run(["make", "-n", "kind-e2e"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "hack/kind-e2e.sh" in proc.stdout


def test_dockerfile() -> None:
    text = (REPO / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(froms) == 2, "multi-stage: build and runtime"
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert re.search(r"^USER 10001(:10001)?$", text, re.M)
    assert 'ENTRYPOINT ["nicotask"]' in text
    assert "COPY --from=build /opt/nicotask /opt/nicotask" in text
    # Everything the build copies is in the repository and not excluded by .dockerignore.
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for line in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for src in line.split():
            assert (REPO / src).exists(), src
            assert src not in ignored, src
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == 10001


def test_gitops_samples() -> None:
    doc = (REPO / "docs" / "gitops.md").read_text()
    app = (REPO / "samples" / "gitops" / "argocd-application.yaml").read_text()
    flux = (REPO / "samples" / "gitops" / "flux-kustomization.yaml").read_text()
    assert app.rstrip() in doc and flux.rstrip() in doc
    (application,) = list(yaml.safe_load_all(app))
    assert application["kind"] == "Application"
    assert "ignoreDifferences" not in application["spec"]
    kinds = [d["kind"] for d in yaml.safe_load_all(flux)]
    assert kinds == ["GitRepository", "Kustomization"]
    assert "resource.customizations.health.nico.dev_NicoTask" in doc
