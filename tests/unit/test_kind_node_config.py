"""The offline kind node image's configuration: what kind, kubeadm and containerd get."""

from __future__ import annotations

import ipaddress
import tomllib

import yaml

from nicotask_dev.devenv import gobuild, kindcomponents, kindimage


def patches() -> dict[str, dict[str, object]]:
    docs = [yaml.safe_load(p) for p in kindimage.kind_config()["kubeadmConfigPatches"]]
    return {d["kind"]: d for d in docs}


def test_cluster_has_no_default_cni_and_one_control_plane() -> None:
    config = kindimage.kind_config()
    assert config["networking"] == {"disableDefaultCNI": True}
    assert config["nodes"] == [{"role": "control-plane"}]


def test_cgroup_v1_is_allowed_for_kubelet_and_kubeadm() -> None:
    p = patches()
    assert p["KubeletConfiguration"]["failCgroupV1"] is False
    assert p["InitConfiguration"]["nodeRegistration"] == {
        "ignorePreflightErrors": ["SystemVerification"]
    }


def test_kubeadm_runs_the_dev_environments_etcd_by_its_own_version() -> None:
    tag = patches()["ClusterConfiguration"]["etcd"]["local"]["imageTag"]  # type: ignore[index]
    assert tag == gobuild.ETCD_VERSION.removeprefix("v") + "-0" == kindcomponents.ETCD_IMAGE_TAG


def test_cni_subnet_is_inside_kinds_pod_subnet() -> None:
    (ptp, portmap) = kindimage.cni_config()["plugins"]  # type: ignore[misc]
    (subnet,) = [r["subnet"] for r in ptp["ipam"]["ranges"][0]]
    assert ipaddress.ip_network(subnet).subnet_of(ipaddress.ip_network("10.244.0.0/16"))
    assert ptp["type"] == "ptp" and portmap["type"] == "portmap"


def test_containerd_uses_the_pause_image_kubeadm_names_and_debians_cni_plugins() -> None:
    cri = tomllib.loads(kindimage.containerd_config())["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == "registry.k8s.io/pause:3.10.1"
    assert cri["cni"]["bin_dir"] == "/usr/lib/cni"
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
