"""Integration tests: real kube-apiserver + etcd, Temporal dev server, sushy-tools.

The fixtures (devenv, kube_api, namespace, temporal_client) come from
tests/conftest.py (nicotask.devenv.testing), which also marks every test
here `integration`. Set NICOTASK_TEST_RUN_DIR to reuse a running environment.
"""
