"""The chart on a kind cluster that hack/kind-e2e.sh created (`make kind-e2e`).

The script passes the cluster and what it loaded into it through the environment:
KUBECONFIG, NICOTASK_KIND_IMAGE (the nicotask image in the node's containerd),
NICOTASK_KIND_TEMPORAL (Temporal's in-cluster address) and
NICOTASK_KIND_WORK (a folder for the dev token issuer's keys and the values file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest


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
