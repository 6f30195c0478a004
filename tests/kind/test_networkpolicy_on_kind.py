"""The chart's default NetworkPolicies, enforced on the kind cluster.

By default each component's pods accept connections on the ports they serve from
anyone (networkPolicy.shimFrom and metricsFrom are empty) and open only DNS, the
API server, Temporal (operator, worker) and HTTPS (the shim's JWKS, the worker's
BMCs). So what the default policies refuse is a connection a component opens
that its policy does not list: the shim to Temporal, the operator to the shim.
kindnetd enforces them on the Docker route, kube-router's policy controller on
the offline one (nicotask_dev.devenv.kindnetpol).

Every check connects from inside a pod (`kubectl exec`, a Python socket with a 3 s
timeout). A control check deletes the shim's policy and sees the same refused
connection open, so the refusal is the policy's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.kind.conftest import KindCluster
from tests.node.test_chart_on_node import RELEASE, SYSTEM_NS, TASKS_NS, Kube, wait_for

PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print("open")
except OSError as exc:  # refused (REJECT), timed out (DROP), or a name not resolved
    print(type(exc).__name__)
"""
REFUSED = ("ConnectionRefusedError", "TimeoutError")
SHIM = (f"{RELEASE}-shim.{SYSTEM_NS}.svc.cluster.local", 8088)
CLIENT = "netpol-client"
Target = tuple[str, int]


def temporal(cluster: KindCluster) -> Target:
    host, port = cluster.temporal.rsplit(":", 1)
    return host, int(port)


def probe(kube: Kube, namespace: str, pod: str, target: Target) -> str:
    out = kube.kubectl(
        "exec",
        "-n",
        namespace,
        pod,
        "--",
        "python",
        "-c",
        PROBE,
        target[0],
        str(target[1]),
        timeout=30,
    )
    return out.strip().splitlines()[-1]


def component_pod(kube: Kube, component: str) -> str:
    return str(kube.pods(component)[0]["metadata"]["name"])


def expect(kube: Kube, namespace: str, pod: str, target: Target, opens: bool) -> None:
    """Wait (a policy change takes a sync) until the connection opens or is refused."""
    seen: list[str] = []

    def reached() -> bool:
        seen.append(probe(kube, namespace, pod, target))
        return seen[-1] == "open" if opens else seen[-1] in REFUSED

    want = "open" if opens else "refused"
    try:
        wait_for(f"{pod} -> {target[0]}:{target[1]} {want}", reached, timeout=45)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the probe said {seen[-3:]}") from None


@pytest.fixture(scope="module")
def client(kube: Kube, release: Path, cluster: KindCluster) -> Iterator[str]:
    """A pod no policy selects, from the nicotask image, that only sleeps."""
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": CLIENT, "namespace": TASKS_NS},
            "spec": {
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": 0,
                "containers": [
                    {
                        "name": "client",
                        "image": cluster.image,
                        "imagePullPolicy": "Never",
                        "command": ["python", "-c", "import time; time.sleep(3600)"],
                    }
                ],
            },
        }
    )
    kube.kubectl("wait", "--for=condition=Ready", f"pod/{CLIENT}", "-n", TASKS_NS, "--timeout=90s")
    yield CLIENT
    kube.kubectl("delete", "pod", CLIENT, "-n", TASKS_NS, "--wait=false")


def test_an_enforcer_runs_on_the_node(kube: Kube) -> None:
    pods = [
        p
        for label in ("k8s-app=kube-router", "app=kindnet")
        for p in kube.get("pods", "-n", "kube-system", "-l", label)["items"]
    ]
    assert pods, "neither kube-router nor kindnetd runs in kube-system"
    for pod in pods:
        statuses = pod["status"].get("containerStatuses") or []
        assert statuses and all(c["ready"] for c in statuses), pod["status"]


def test_connections_the_policies_do_not_list_are_refused(
    kube: Kube, release: Path, cluster: KindCluster
) -> None:
    expect(kube, SYSTEM_NS, component_pod(kube, "shim"), temporal(cluster), opens=False)
    expect(kube, SYSTEM_NS, component_pod(kube, "operator"), SHIM, opens=False)


def test_connections_the_policies_list_still_open(
    kube: Kube, release: Path, cluster: KindCluster, client: str
) -> None:
    for component in ("operator", "worker"):
        expect(kube, SYSTEM_NS, component_pod(kube, component), temporal(cluster), opens=True)
    # Pods no policy selects are unrestricted, and the shim accepts anyone.
    expect(kube, TASKS_NS, client, SHIM, opens=True)
    expect(kube, TASKS_NS, client, temporal(cluster), opens=True)


def restorable(policy: dict[str, Any]) -> dict[str, Any]:
    """The object as it can be created again (Helm's labels and annotations kept)."""
    meta = {
        k: v
        for k, v in policy["metadata"].items()
        if k not in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields")
    }
    return {**{k: v for k, v in policy.items() if k != "status"}, "metadata": meta}


def test_control_without_the_shims_policy_the_connection_opens(
    kube: Kube, release: Path, cluster: KindCluster
) -> None:
    name = f"{RELEASE}-shim"
    saved = restorable(kube.get("networkpolicy", name, "-n", SYSTEM_NS))
    shim = component_pod(kube, "shim")
    kube.kubectl("delete", "networkpolicy", name, "-n", SYSTEM_NS)
    try:
        expect(kube, SYSTEM_NS, shim, temporal(cluster), opens=True)
    finally:
        kube.kubectl("create", "-f", "-", stdin=json.dumps(saved))
    expect(kube, SYSTEM_NS, shim, temporal(cluster), opens=False)
