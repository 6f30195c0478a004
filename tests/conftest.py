"""Shared test setup.

The environment fixtures live in nicotask_dev.devenv.testing and are imported
here, so integration and e2e tests share one environment per session:
  devenv           session: DevEnvHandle (kubeconfig, api_url, temporal_address,
                   redfish_url/user/password/systems, run_dir, env)
  kube_api         session: kubernetes_asyncio ApiClient (admin)
  namespace        function: a fresh namespace name
  temporal_client  session: temporalio Client
Every test is marked by its folder: unit, integration, e2e or node.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nicotask_dev.devenv.testing import devenv, kube_api, namespace, temporal_client

__all__ = ["devenv", "kube_api", "namespace", "temporal_client"]

_TESTS = Path(__file__).parent
_KINDS = ("unit", "integration", "e2e", "node")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            kind = Path(item.path).relative_to(_TESTS).parts[0]
        except ValueError:
            continue
        if kind in _KINDS:
            item.add_marker(getattr(pytest.mark, kind))
