"""The chart on a kind cluster that hack/kind-e2e.sh created (`make kind-e2e`).

The script passes the cluster and what it loaded into it through the environment:
KUBECONFIG, NICOTASK_KIND_IMAGE (the nicotask image in the node's containerd),
NICOTASK_KIND_TEMPORAL (Temporal's in-cluster address) and
NICOTASK_KIND_WORK (a folder for the dev token issuer's keys and the values file).

`release` installs the chart once for the whole session: every module here tests
that one release.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from tests.node.test_chart_on_node import API, CHART, RELEASE, SITE_ID, SYSTEM_NS, TASKS_NS, Kube

from nicotask_dev.shim.devissuer import issuer_config


@dataclass(frozen=True)
class KindCluster:
    kubeconfig: Path
    image: str
    temporal: str
    work: Path


@pytest.fixture(scope="session")
def cluster() -> KindCluster:
    missing = [
        v
        for v in (
            "KUBECONFIG",
            "NICOTASK_KIND_IMAGE",
            "NICOTASK_KIND_TEMPORAL",
            "NICOTASK_KIND_WORK",
        )
        if not os.environ.get(v)
    ]
    if missing:
        pytest.skip(f"not on a kind cluster from hack/kind-e2e.sh ({', '.join(missing)} unset)")
    return KindCluster(
        kubeconfig=Path(os.environ["KUBECONFIG"]),
        image=os.environ["NICOTASK_KIND_IMAGE"],
        temporal=os.environ["NICOTASK_KIND_TEMPORAL"],
        work=Path(os.environ["NICOTASK_KIND_WORK"]),
    )


@pytest.fixture(scope="session")
def kube(cluster: KindCluster, tmp_path_factory: pytest.TempPathFactory) -> Kube:
    return Kube(cluster.kubeconfig, tmp_path_factory.mktemp("helm-home"))


def kind_values(cluster: KindCluster) -> Path:
    """The loaded image (never pulled), Temporal by its Service name, two operator
    replicas, and the dev token issuer trusted by the shim."""
    repository, tag = cluster.image.rsplit(":", 1)
    issuer = issuer_config(cluster.work / "issuer").model_dump(mode="json", exclude_none=True)
    small = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}}
    values = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "temporal": {"address": cluster.temporal},
        "operator": {"replicas": 2, "reconcileIntervalSeconds": 5, "resources": small},
        "worker": {"replicas": 1, "resources": small},
        "shim": {"replicas": 1, "resources": small, "issuers": [issuer]},
    }
    path = cluster.work / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture(scope="session")
def release(kube: Kube, cluster: KindCluster) -> Iterator[Path]:
    values = kind_values(cluster)
    # A kept cluster (KEEP_CLUSTER=1) may hold the admission policy the e2e suite's run
    # against the cluster applied (same name as the chart's, not Helm's): Helm would refuse
    # to adopt it.
    kube.kubectl(
        "delete",
        "validatingadmissionpolicies,validatingadmissionpolicybindings",
        "-l",
        "app.kubernetes.io/managed-by!=Helm",
        "--field-selector",
        f"metadata.name={RELEASE}-cancel-requested-by",
        "--ignore-not-found",
    )
    try:
        kube.helm(
            "upgrade",
            "--install",
            RELEASE,
            str(CHART),
            "-n",
            SYSTEM_NS,
            "--create-namespace",
            "-f",
            str(values),
            "--wait",
            "--timeout",
            "5m",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{kube.diagnostics()}") from None
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": TASKS_NS}})
    # A kept cluster (KEEP_CLUSTER=1) may hold the tasks, rules and pods of an earlier run.
    kube.kubectl(
        "delete",
        "nicotasks,nicooperationrules,pods",
        "--all",
        "-n",
        TASKS_NS,
        "--wait",
        "--timeout=90s",
    )
    kube.kubectl(
        "apply",
        "-f",
        str(CHART.parents[1] / "samples" / "provider.yaml"),
        "-f",
        str(CHART.parents[1] / "samples" / "site.yaml"),
    )
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "bmc-credentials",
                "namespace": TASKS_NS,
                "labels": {"nico.dev/bmc-credentials": "true"},
            },
            "stringData": {"username": "admin", "password": "unused"},
        }
    )
    # Only Sleep steps run here: the BMC endpoint is never contacted.
    kube.apply(
        {
            "apiVersion": API,
            "kind": "NicoRack",
            "metadata": {"name": "rack-1", "namespace": TASKS_NS},
            "spec": {
                "siteId": SITE_ID,
                "credentials": {"name": "bmc-credentials"},
                "tls": {"allowInsecureHttp": True},
                "components": [
                    {
                        "id": "compute-0",
                        "type": "Compute",
                        "redfish": {"endpoint": "http://127.0.0.1:9", "systemId": "compute-0"},
                    }
                ],
            },
        }
    )
    yield values
