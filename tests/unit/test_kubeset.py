"""One Kubernetes release, one folder: the kind node's commands, the dev control plane's
kube-apiserver and the node's kubelet are the same files."""

from __future__ import annotations

from pathlib import Path

import pytest

from nicotask_dev.devenv import gobuild, kubeset, node


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "nicotask"


def test_every_command_of_the_release_lives_in_the_sets_folder(cache: Path) -> None:
    for name in kubeset.COMMANDS:
        assert gobuild.kubernetes_binary(name).path == kubeset.path(name)
    assert kubeset.folder() == cache / f"kubernetes-{gobuild.KUBERNETES_VERSION}"


def test_the_control_plane_and_the_node_use_the_sets_release() -> None:
    assert gobuild.kube_apiserver().version == kubeset.VERSION
    assert node.kubelet().path == kubeset.path("kubelet")
    assert {b.version for b in node.control_plane_binaries()} == {kubeset.VERSION}


def test_commands_built_one_by_one_are_not_built_again(cache: Path) -> None:
    kubeset.folder().mkdir(parents=True)
    for name in ("kube-apiserver", "kubelet"):
        gobuild.kubernetes_binary(name).path.write_bytes(name.encode())
    missing = [c for c in kubeset.COMMANDS if not kubeset.path(c).exists()]
    assert "kube-apiserver" not in missing and "kubelet" not in missing
    assert "kubeadm" in missing


def test_other_modules_keep_a_folder_per_version(cache: Path) -> None:
    assert gobuild.etcd().path == cache / f"etcd-{gobuild.ETCD_VERSION}" / "etcd"
