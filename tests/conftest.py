"""Shared test setup.

The environment fixtures live in nicotask_dev.devenv.testing and are imported
here, so integration and e2e tests share one environment per session:
  devenv           session: DevEnvHandle (kubeconfig, api_url, temporal_address,
                   redfish_url/user/password/systems, run_dir, env)
  kube_api         session: kubernetes_asyncio ApiClient (admin)
  namespace        function: a fresh namespace name
  temporal_client  session: temporalio Client
Every test is marked by its folder: unit, integration, e2e or node. The tests of
SERVER_PASS are marked temporal_server too: CI runs them a second time against the
Temporal server on PostgreSQL (`make integration-server` and, for tests/node, `make
node-e2e-server`; both set NICOTASK_TEMPORAL=server).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nicotask_dev.devenv.testing import devenv, kube_api, namespace, temporal_client

__all__ = ["devenv", "kube_api", "namespace", "temporal_client"]

_TESTS = Path(__file__).parent
_KINDS = ("unit", "integration", "e2e", "node", "kind")
# What the second pass runs on the Temporal server (store and visibility on PostgreSQL):
# every test whose outcome depends on Temporal's behaviour. Lifecycle, every cancel
# path, queue, races of cancel against completion, drift and the follower's full
# reconcile (test_lifecycle); the operator SIGKILLed mid-cancel and a Temporal outage
# (test_recovery); PostgreSQL restarted under 200 live tasks (test_postgres_restart) and
# closes that visibility shows late (test_visibility_lag), both this pass only;
# graceful stops, their cleanup and races (test_graceful_stop);
# cancels through BMCs and the shim; the start-up check; the
# workflow itself and the progress writes; and, as root, the chart's pods on a real node
# (install, cancel through the shim, upgrade: `make node-e2e-server`).
SERVER_PASS = {
    "e2e/test_lifecycle.py",
    "e2e/test_recovery.py",
    "e2e/test_postgres_restart.py",
    "e2e/test_visibility_lag.py",
    "e2e/test_cancel_redfish.py",
    "e2e/test_shim_cancel.py",
    "e2e/test_graceful_stop.py",
    "e2e/test_operator_startup.py",
    "integration/test_workflow.py",
    "integration/test_workflow_stop.py",
    "integration/test_progress_write.py",
    "integration/test_devenv_smoke.py",
    "node/test_chart_on_node.py",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            rel = Path(item.path).relative_to(_TESTS)
        except ValueError:
            continue
        kind = rel.parts[0]
        if kind in _KINDS:
            item.add_marker(getattr(pytest.mark, kind))
        if rel.as_posix() in SERVER_PASS:
            item.add_marker(pytest.mark.temporal_server)
