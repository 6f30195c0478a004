"""A real node for the chart's pods: one environment per session.

kube-apiserver + etcd + kube-controller-manager + kube-scheduler, containerd
and a kubelet (nicotask_dev.devenv.node), the Temporal dev server and the
sushy-tools BMC emulator, with the nicotask image built by podman and
imported into containerd. Needs root (CI runs as root); `make node-e2e`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nicotask_dev.devenv import image, node
from nicotask_dev.devenv.env import DevEnv
from nicotask_dev.devenv.testing import DevEnvHandle


@pytest.fixture(scope="session")
def image_tag() -> str:
    return image.build()


@pytest.fixture(scope="session")
def node_env(tmp_path_factory: pytest.TempPathFactory, image_tag: str) -> Iterator[DevEnvHandle]:
    if os.geteuid() != 0:
        pytest.fail("the node tests need root (containerd, kubelet, a bridge, NAT rules)")
    reuse = os.environ.get("NICOTASK_TEST_RUN_DIR")
    run_dir = Path(reuse) if reuse else tmp_path_factory.mktemp("node-env")
    env = DevEnv(run_dir, temporal_ui=False, with_node=True)
    try:
        env.up()
        state = node.start_node(env, images=(image_tag,))
        yield DevEnvHandle.from_state(env, state)
    finally:
        if not reuse:
            env.down()
