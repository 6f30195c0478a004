"""The API client and the kubeconfig.

`new_api_client` gives in-cluster config in a pod, else a kubeconfig's client,
with a User-Agent naming the nicotask component; `kubeconfig_namespace` and
`kubeconfig_server` read what a kubeconfig says.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from kubernetes_asyncio import client, config

__all__ = [
    "PROXY_VARIABLES",
    "kubeconfig_namespace",
    "kubeconfig_server",
    "new_api_client",
    "trust_env_only_if_used",
    "user_agent",
]


def user_agent(component: str) -> str:
    """`nicotask-<component>/<version>`. The API server takes a write's field manager
    from the User-Agent (up to the first `/`), so managedFields, audit logs and
    `apiserver_request_total` name the component that wrote, not the client library."""
    try:
        version = importlib.metadata.version("nicotask")
    except importlib.metadata.PackageNotFoundError:  # a checkout on PYTHONPATH, not installed
        version = "dev"
    return f"nicotask-{component}/{version}"


async def new_api_client(
    kubeconfig: str | None = None,
    *,
    component: str,
    context: str | None = None,
    persist_config: bool = True,
) -> client.ApiClient:
    """In-cluster config when running in a pod, else the kubeconfig (KUBECONFIG or default);
    its requests say which nicotask `component` sends them (`user_agent`)."""
    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        api_client = client.ApiClient()
    else:
        api_client = await config.new_client_from_config(
            config_file=kubeconfig or os.environ.get("KUBECONFIG"),
            context=context,
            persist_config=persist_config,
        )
    api_client.user_agent = user_agent(component)
    trust_env_only_if_used(api_client)
    return api_client


# As kubernetes-asyncio sets it: a watch event of a large object can exceed aiohttp's default.
_READ_BUFSIZE = 2**21
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "WS_PROXY", "WSS_PROXY")


def trust_env_only_if_used(api_client: client.ApiClient) -> None:
    """kubernetes-asyncio's aiohttp session trusts the environment: on every request
    it looks up proxy variables and reads ~/.netrc in a worker thread (about 3% of the
    operator's time in a burst of cancels, py-spy). With neither there, nothing is
    trusted anyway: stop looking."""
    names = [*PROXY_VARIABLES, *(n.lower() for n in PROXY_VARIABLES), "NETRC"]
    if any(os.environ.get(n) for n in names) or (Path.home() / ".netrc").exists():
        return
    rest = api_client.rest_client
    session = rest.pool_manager
    if not session.trust_env:
        return  # done already
    connector = session.connector
    # aiohttp fixes trust_env when a session is made: the same connector (TLS,
    # pool) moves to a new session that does not trust the environment.
    session.detach()
    rest.pool_manager = aiohttp.ClientSession(
        connector=connector, trust_env=False, read_bufsize=_READ_BUFSIZE
    )


def _kubeconfig_context(path: str | Path, context: str | None) -> tuple[dict[str, Any], Any]:
    """The kubeconfig and the entry of `context` (else of its current context)."""
    cfg = yaml.safe_load(Path(path).expanduser().read_text()) or {}
    contexts = cfg.get("contexts") or []
    active = next((c for c in contexts if c.get("name") == cfg.get("current-context")), None)
    chosen = next((c for c in contexts if c.get("name") == context), active) if context else active
    return cfg, chosen


def kubeconfig_namespace(kubeconfig: str | Path, context: str | None = None) -> str:
    """The namespace of the context (else the current one), `default` when unset or unknown."""
    try:
        _, chosen = _kubeconfig_context(kubeconfig, context)
        return str(((chosen or {}).get("context") or {}).get("namespace") or "default")
    except Exception:
        return "default"


def kubeconfig_server(kubeconfig: str | Path) -> str:
    """The server URL of the current context (best effort, '' if unknown)."""
    try:
        cfg, chosen = _kubeconfig_context(kubeconfig, None)
        ctx = chosen["context"]
        cluster = next(c["cluster"] for c in cfg.get("clusters", []) if c["name"] == ctx["cluster"])
        return str(cluster.get("server", ""))
    except (OSError, StopIteration, KeyError, TypeError, AttributeError, yaml.YAMLError):
        return ""
