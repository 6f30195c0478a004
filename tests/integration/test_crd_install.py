"""`install_crds` returns once every kind is served, not only Established.

A new kind's storage in the API server starts after its CRD is Established;
until it is ready, a LIST answers 429 "storage is (re)initializing". The
operator starts right after `install_crds` (`make run`, the tests, the
bench), and kopf logged each such 429 as an ERROR. This test needs an API
server that has never seen the CRDs, so it starts a second, throwaway
environment (about 5 s).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from kubernetes_asyncio import client

from nicotask import api
from nicotask.kube import new_api_client
from nicotask_dev import crdgen
from nicotask_dev.devenv.env import DevEnv


async def test_every_kind_lists_as_soon_as_the_crds_are_installed(tmp_path: Path) -> None:
    env = DevEnv(tmp_path / "fresh", temporal_ui=False)
    try:
        await asyncio.to_thread(env.up)
        kubeconfig = Path(env.exports()["KUBECONFIG"])
        await asyncio.to_thread(crdgen.install_crds, kubeconfig)
        api_client = await new_api_client(str(kubeconfig), component="tests")
        try:
            custom = client.CustomObjectsApi(api_client)
            for kind in crdgen.KINDS:  # one LIST each, no retry: a 429 raises
                listed = await custom.list_cluster_custom_object(
                    api.GROUP, api.VERSION, kind.plural
                )
                assert listed["items"] == []
        finally:
            await api_client.close()
    finally:
        await asyncio.to_thread(env.down)
