"""The local Argo CD's build and configuration (nicotask_dev.devenv.argocd*), without servers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from nicotask_dev.devenv import argocd, argocdbuild
from nicotask_dev.devenv.gitrepo import GitRepo

REPO = Path(__file__).resolve().parents[2]


def test_the_local_gitops_engine_replace_is_dropped_and_nothing_else() -> None:
    gomod = (
        "module github.com/argoproj/argo-cd/v3\n\n"
        "replace (\n\tk8s.io/api => k8s.io/api v0.37.0\n)\n\n"
        f"{argocdbuild.LOCAL_REPLACE}\n"
    )
    out = argocdbuild.without_local_replace(gomod)
    assert "./gitops-engine" not in out
    assert "k8s.io/api => k8s.io/api v0.37.0" in out


def test_a_go_mod_without_the_local_replace_fails_the_build_loudly() -> None:
    with pytest.raises(RuntimeError, match="no line"):
        argocdbuild.without_local_replace("module x\n")


def test_argocd_cm_carries_the_charts_health_check_under_the_documented_key() -> None:
    objs = {o["kind"]: o for o in argocd.config_objects(argocd.HEALTH_LUA.read_text())}
    data = objs["ConfigMap"]["data"]
    assert data[argocd.HEALTH_KEY] == (REPO / "charts/nicotask/files/argocd-health.lua").read_text()
    assert f"{argocd.HEALTH_KEY}: |" in (REPO / "docs/gitops.md").read_text()
    assert objs["ConfigMap"]["metadata"]["labels"] == {"app.kubernetes.io/part-of": "argocd"}


def test_the_application_is_automated_with_prune_and_self_heal() -> None:
    app = argocd.application("a", "file:///x/site.git", "site", "ns1")
    assert app["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    assert app["spec"]["destination"] == {"server": argocd.IN_CLUSTER, "namespace": "ns1"}


def test_git_repo_commits_reach_the_bare_repository(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    repo.write("site/a.yaml", [{"kind": "ConfigMap", "metadata": {"name": "a"}}])
    first = repo.commit("add a")
    repo.write("site/a.yaml", None)
    second = repo.commit("remove a")
    assert first != second
    assert repo.url.startswith("file:///")
    log = subprocess.run(
        ["git", "--git-dir", str(repo.bare), "log", "--format=%H %s", "main"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert log == [f"{second} remove a", f"{first} add a"]


def test_a_crd_without_status_is_not_established_yet() -> None:
    assert not argocd._established({"metadata": {"name": "x"}})
    assert not argocd._established(
        {"status": {"conditions": [{"type": "Established", "status": "False"}]}}
    )
    assert argocd._established(
        {
            "status": {
                "conditions": [
                    {"type": "NamesAccepted", "status": "True"},
                    {"type": "Established", "status": "True"},
                ]
            }
        }
    )
