"""The image's content tag and the node's generated configuration (no servers)."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

from nicotask_dev.devenv import image, node
from nicotask_dev.devenv.pki import ensure_pki

REPO = Path(__file__).resolve().parents[2]


def copy_inputs(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in image.BUILD_INPUTS:
        src = REPO / name
        if src.is_dir():
            skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(src, dest / name, ignore=skip)
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest / name)
    return dest


def test_image_tag_follows_the_build_inputs_only(tmp_path: Path) -> None:
    tree = copy_inputs(tmp_path)
    tag = image.content_tag(tree, base="b")
    assert tag.startswith("localhost/nicotask:") and tag == image.content_tag(tree, base="b")
    (tree / "tests").mkdir()
    (tree / "tests" / "test_x.py").write_text("x = 1\n")  # not in the image: same tag
    assert image.content_tag(tree, base="b") == tag
    (tree / "operator" / "nicotask" / "api" / "task.py").write_text("# changed\n")
    assert image.content_tag(tree, base="b") != tag
    changed = image.content_tag(tree, base="b")
    with (tree / "requirements" / "runtime.txt").open("a") as lock:  # a relock: another image
        lock.write("# relocked\n")
    assert image.content_tag(tree, base="b") != changed
    assert image.content_tag(copy_inputs(tmp_path / "again"), base="other") != tag


def test_kubelet_config_allows_cgroup_v1_and_trusts_the_cluster_ca(tmp_path: Path) -> None:
    paths = node.NodePaths(tmp_path)
    pki = ensure_pki(tmp_path / "pki")
    cfg = node.kubelet_config(paths, pki, 10250, 10248)
    assert cfg["failCgroupV1"] is False
    assert cfg["containerRuntimeEndpoint"] == f"unix://{paths.socket}"
    assert cfg["authentication"]["anonymous"]["enabled"] is False
    assert cfg["authentication"]["x509"]["clientCAFile"] == str(pki.ca_cert)
    assert cfg["address"] == node.NODE_IP and cfg["podCIDR"] == node.POD_CIDR
    assert len(str(paths.socket)) < 100  # unix socket path limit


def test_containerd_config_uses_the_local_sandbox_image_and_cni(tmp_path: Path) -> None:
    paths = node.NodePaths(tmp_path)
    cfg = tomllib.loads(node.containerd_config(paths, "localhost/nicotask-pause:x"))
    cri = cfg["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == "localhost/nicotask-pause:x"
    assert cri["restrict_oom_score_adj"] is True
    assert cri["cni"]["conf_dir"] == str(paths.cni_conf_dir)
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    assert cfg["grpc"]["address"] == str(paths.socket)
    bridge = node.cni_config(paths)["plugins"][0]
    assert bridge["bridge"] == node.BRIDGE
    assert bridge["ipam"]["ranges"] == [[{"subnet": node.POD_CIDR, "gateway": node.NODE_IP}]]
