"""A real node for the chart's pods: one environment per session.

kube-apiserver + etcd + kube-controller-manager + kube-scheduler, containerd
and a kubelet (nicotask_dev.devenv.node), Temporal and the sushy-tools BMC
emulator, with the nicotask image built by podman and imported into
containerd. Needs root (CI runs as root); `make node-e2e`. Temporal is the dev
server, or with NICOTASK_TEMPORAL=server the Temporal server on PostgreSQL
(`make node-e2e-server`, the tests marked temporal_server); the pods reach
either through the node's bridge.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nicotask_dev.devenv import image, node
from nicotask_dev.devenv.env import DevEnv
from nicotask_dev.devenv.testing import DevEnvHandle, session_run_dir


@pytest.fixture(scope="session")
def image_tag() -> str:
    return image.build()


@pytest.fixture(scope="session")
def node_env(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest, image_tag: str
) -> Iterator[DevEnvHandle]:
    if os.geteuid() != 0:
        pytest.fail("the node tests need root (containerd, kubelet, a bridge, NAT rules)")
    reuse = os.environ.get("NICOTASK_TEST_RUN_DIR")
    with contextlib.ExitStack() as stack:
        if reuse:
            run_dir = Path(reuse)
        else:
            run_dir = stack.enter_context(session_run_dir(tmp_path_factory, request, "node-env"))
        env = DevEnv(run_dir, temporal_ui=False, with_node=True)
        if not reuse:
            stack.callback(env.down)
        env.up()
        state = node.start_node(env, images=(image_tag,))
        yield DevEnvHandle.from_state(env, state)
