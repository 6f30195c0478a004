"""kubernetes-asyncio's packages load their generated modules on first use (nicotask installs
the lazy stand-ins on import), and give exactly the classes the real packages give."""

from __future__ import annotations

import subprocess
import sys

import nicotask  # noqa: F401  # installs the stand-ins, as in every process
from nicotask.lazy_kubernetes import PACKAGES, _exports, install

PROBE = """
import sys
import nicotask
import kopf
from nicotask.operator import handlers
loaded = [m for m in sys.modules if m.startswith("kubernetes_asyncio.client.models.")]
print(len(loaded))
"""


def test_the_operator_imports_few_generated_models() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout
    assert int(out.strip()) < 20  # the real packages load ~770 at import


def test_names_resolve_to_the_real_classes() -> None:
    from kubernetes_asyncio import client, config, watch
    from kubernetes_asyncio.client import models

    assert client.V1ObjectMeta is models.V1ObjectMeta
    assert client.V1ObjectMeta.__module__ == "kubernetes_asyncio.client.models.v1_object_meta"
    assert client.CustomObjectsApi.__module__ == "kubernetes_asyncio.client.api.custom_objects_api"
    assert client.ApiClient.__module__ == "kubernetes_asyncio.client.api_client"
    assert issubclass(client.ApiException, Exception)
    assert callable(config.load_kube_config) and watch.Watch is not None
    assert client.V1ObjectMeta(name="x").to_dict()["name"] == "x"
    # What ApiClient's deserializer reads: the models package as the client's attribute,
    # and a submodule bound on first use.
    import kubernetes_asyncio

    assert kubernetes_asyncio.client.models.V1Namespace is models.V1Namespace
    assert client.rest.RESTClientObject is not None


def test_every_name_of_the_real_init_is_served() -> None:
    import importlib

    for name in PACKAGES:
        module = sys.modules[name]
        with open(module.__file__ or "", encoding="utf-8") as f:
            source = f.read()
        for attr in _exports(source):
            assert getattr(module, attr) is not None, (name, attr)
    assert importlib.import_module("kubernetes_asyncio").__version__


def test_unknown_names_are_attribute_errors_and_a_second_install_does_nothing() -> None:
    from kubernetes_asyncio import client

    try:
        client.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")
    assert install() is False  # already installed (or imported)
