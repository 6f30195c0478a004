"""The Helm chart on a kind cluster, the way a user would run it.

In order (one release for the session, conftest.py): the node is Ready with cluster DNS and
kube-proxy; `helm install` with two operator replicas -> operator, worker and shim
Ready; a NicoTask is cancelled from a pod in the cluster through the shim's Service
by its cluster DNS name (CoreDNS -> kube-proxy -> shim pod); `helm test` passes
(it reaches every component's Service by name). The e2e tests hack/kind-e2e.sh runs
afterwards use this release's CRDs and shim.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.kind.conftest import KindCluster
from tests.node.test_chart_on_node import (
    COMPONENTS,
    RELEASE,
    SITE_ID,
    SYSTEM_NS,
    TASKS_NS,
    Kube,
    rule,
    stages,
    start_task,
    status_of,
    wait_for,
)

from nicotask_dev.shim.devissuer import issue_token

SHIM_URL = f"http://{RELEASE}-shim.{SYSTEM_NS}.svc.cluster.local:8088"


def ready(pod: dict[str, Any]) -> bool:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return bool(statuses) and all(c.get("ready") for c in statuses)


def test_node_ready_with_cluster_dns_and_kube_proxy(kube: Kube) -> None:
    (node,) = kube.get("nodes")["items"]
    conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conditions["Ready"] == "True", conditions
    for label in ("k8s-app=kube-dns", "k8s-app=kube-proxy"):
        pods = kube.get("pods", "-n", "kube-system", "-l", label)["items"]
        assert pods and all(ready(p) for p in pods), (label, [p["status"] for p in pods])


def test_release_ready_with_two_operator_replicas(
    kube: Kube, release: Path, cluster: KindCluster
) -> None:
    for component in COMPONENTS:
        pods = wait_for(
            f"{component} pods ready",
            lambda c=component: (ps := kube.pods(c)) and all(ready(p) for p in ps) and ps,
            timeout=120,
        )
        assert len(pods) == (2 if component == "operator" else 1), component
        for pod in pods:
            (container,) = pod["spec"]["containers"]
            assert container["image"] == cluster.image


def client_pod(name: str, image: str, script: str, env: dict[str, str]) -> dict[str, Any]:
    """A one-shot pod running `python -c script` from the nicotask image."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": TASKS_NS},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "client",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", script],
                    "env": [{"name": k, "value": v} for k, v in env.items()],
                }
            ],
        },
    }


CANCEL_SCRIPT = """
import json, os, urllib.error, urllib.request
req = urllib.request.Request(os.environ["URL"], method="POST",
    data=json.dumps({"siteId": os.environ["SITE"]}).encode(),
    headers={"Authorization": "Bearer " + os.environ["TOKEN"],
             "Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=30) as r:
        print(json.dumps({"status": r.status, "body": json.loads(r.read())}))
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code, "body": e.read().decode()}))
"""


def test_cancel_through_shim_service_by_dns_name(
    kube: Kube, release: Path, cluster: KindCluster
) -> None:
    uid = start_task(kube, "long-wait", rule("wait-long", False, 900))
    wait_for("Running", lambda: status_of(kube.task("long-wait")) == "Running", timeout=180)
    token = issue_token(cluster.work / "issuer", "acme", ["acme:PROVIDER_ADMIN"], subject="alice")
    url = f"{SHIM_URL}/v2/org/acme/nico/task/{uid}/cancel"
    kube.apply(
        client_pod(
            "cancel-by-dns",
            cluster.image,
            CANCEL_SCRIPT,
            {"URL": url, "SITE": SITE_ID, "TOKEN": token},
        )
    )
    phase = wait_for(
        "the client pod finished",
        lambda: (
            (
                kube.get("pod", "cancel-by-dns", "-n", TASKS_NS)["status"].get("phase")
                in ("Succeeded", "Failed")
            )
            and kube.get("pod", "cancel-by-dns", "-n", TASKS_NS)["status"]["phase"]
        ),
        timeout=120,
    )
    log = kube.kubectl("logs", "-n", TASKS_NS, "cancel-by-dns")
    assert phase == "Succeeded", log
    answer = json.loads(log.strip().splitlines()[-1])
    assert answer["status"] == 202, answer
    assert answer["body"]["id"] == uid
    done = wait_for(
        "Terminated",
        lambda: (
            (t := kube.task("long-wait"))
            and status_of(t) in ("Terminated", "Failed", "Succeeded")
            and t
        ),
        timeout=90,
    )
    assert status_of(done) == "Terminated", done["status"]
    assert done["status"]["cancelRequestedBy"] == "alice"
    assert stages(done) == ["failed"]


def test_helm_test_passes(kube: Kube, release: Path) -> None:
    # The test pod is deleted when it succeeds (hook-succeeded), so no --logs.
    out = kube.helm("test", RELEASE, "-n", SYSTEM_NS, "--timeout", "3m")
    assert re.search(r"Phase:\s+Succeeded", out), out
    assert not re.search(r"Phase:\s+Failed", out), out
