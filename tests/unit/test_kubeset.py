"""The kind node's Kubernetes commands share the kubelet with node.py, both ways."""

from __future__ import annotations

from pathlib import Path

import pytest

from nicotask_dev.devenv import gobuild, kubeset


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "nicotask"


def node_kubelet() -> Path:
    return gobuild.kubernetes_binary("kubelet", kubeset.VERSION).path


def test_a_kubelet_built_for_the_node_is_not_built_again(cache: Path) -> None:
    node_kubelet().parent.mkdir(parents=True)
    node_kubelet().write_bytes(b"kubelet")
    kubeset._adopt_kubelet(kubeset.VERSION)
    assert kubeset.path("kubelet").read_bytes() == b"kubelet"
    assert "kubelet" not in [c for c in kubeset.COMMANDS if not kubeset.path(c).exists()]


def test_a_kubelet_built_with_the_set_is_where_the_node_looks(cache: Path) -> None:
    kubeset.folder().mkdir(parents=True)
    kubeset.path("kubelet").write_bytes(b"from the set")
    kubeset._adopt_kubelet(kubeset.VERSION)
    assert node_kubelet().read_bytes() == b"from the set"


def test_the_set_is_at_the_nodes_kubelet_version() -> None:
    from nicotask_dev.devenv import node

    assert kubeset.VERSION == node.KUBELET_VERSION
