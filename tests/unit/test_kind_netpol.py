"""The offline kind node's NetworkPolicy enforcer: kube-router's policy controller."""

from __future__ import annotations

import re

import yaml

from nicotask_dev.devenv import kindcomponents, kindimage, kindnetpol


def docs() -> dict[str, dict[str, object]]:
    return {d["kind"]: d for d in yaml.safe_load_all(kindnetpol.manifest())}


def test_daemonset_runs_only_the_firewall_on_the_nodes_network_privileged() -> None:
    spec = docs()["DaemonSet"]["spec"]["template"]["spec"]  # type: ignore[index]
    (container,) = spec["containers"]
    assert spec["hostNetwork"] is True
    assert container["securityContext"] == {"privileged": True}
    assert container["args"][:3] == [
        "--run-router=false",
        "--run-firewall=true",
        "--run-service-proxy=false",
    ]
    assert container["image"] == kindnetpol.IMAGE and container["imagePullPolicy"] == "Never"
    port = container["readinessProbe"]["httpGet"]["port"]
    assert f"--health-port={port}" in container["args"]
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in (
        container["env"]
    )


def test_rbac_binds_the_daemonsets_account_to_what_the_controller_reads() -> None:
    d = docs()
    account = d["ServiceAccount"]["metadata"]  # type: ignore[index]
    spec = d["DaemonSet"]["spec"]["template"]["spec"]  # type: ignore[index]
    assert spec["serviceAccountName"] == account["name"]
    (subject,) = d["ClusterRoleBinding"]["subjects"]  # type: ignore[index]
    assert (subject["name"], subject["namespace"]) == (account["name"], account["namespace"])
    granted = {
        (r, v)
        for rule in d["ClusterRole"]["rules"]  # type: ignore[index]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    for resource in ("pods", "namespaces", "networkpolicies"):
        assert {(resource, "list"), (resource, "watch")} <= granted
    assert ("nodes", "get") in granted  # the controller looks up its own node


def test_wrapper_links_only_kube_routers_policy_controller() -> None:
    assert f"require {kindnetpol.MODULE} {kindnetpol.VERSION}" in kindnetpol.wrapper_gomod()
    used = set(
        re.findall(
            r'"github.com/cloudnativelabs/kube-router/v2/(pkg/[^"]+)"', kindnetpol.WRAPPER_MAIN
        )
    )
    assert used == {"pkg/controllers/netpol", "pkg/healthcheck", "pkg/options", "pkg/version"}
    assert f"version.Version={kindnetpol.VERSION}" in kindnetpol.ldflags()
    assert "-s -w" in kindnetpol.ldflags()


def test_image_sits_on_the_node_rootfs_that_has_iptables_and_ipset() -> None:
    assert kindnetpol.containerfile("localhost/rootfs:x").startswith("FROM localhost/rootfs:x\n")
    assert {"iptables", "ipset"} <= set(kindimage.ROOTFS_PACKAGES)


def test_archive_key_is_the_image_id_or_a_hash_of_several() -> None:
    a, b = "a" * 64, "b" * 64
    assert kindcomponents.archive_key([a]) == a[:16]
    both = kindcomponents.archive_key([a, b])
    assert len(both) == 16 and both not in (a[:16], b[:16])
    assert both == kindcomponents.archive_key([a, b]) != kindcomponents.archive_key([b, a])
