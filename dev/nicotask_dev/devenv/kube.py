"""etcd and kube-apiserver: command lines, kubeconfig, readiness probes.

Reading a kubeconfig and talking to the API server are nicotask.kube's (the one adapter).
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from nicotask.kube import kubeconfig_server

from .pki import ADMIN_USER, Pki

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
CONTEXT_NAME = "nicotask-dev"


def etcd_argv(
    binary: Path, data_dir: Path, client_port: int, peer_port: int, host: str = "127.0.0.1"
) -> list[str]:
    client = f"http://{host}:{client_port}"
    peer = f"http://{host}:{peer_port}"
    return [
        str(binary),
        "--name=nicotask-dev",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=nicotask-dev={peer}",
        "--initial-cluster-state=new",
        f"--quota-backend-bytes={2 * 1024**3}",
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def apiserver_argv(
    binary: Path,
    pki: Pki,
    port: int,
    etcd_url: str,
    host: str = "127.0.0.1",
    with_node: bool = False,
    profiling: bool = False,
) -> list[str]:
    """With a node (devenv/node.py), kube-controller-manager runs, so ServiceAccount
    admission (token volumes) can stay on, and the API server needs a client
    certificate for the kubelet (logs, exec, port-forward). `profiling` serves
    /debug/pprof (upstream's default; off here unless the bench profiles)."""
    if with_node:
        extra = [
            f"--kubelet-client-certificate={pki.admin_cert}",
            f"--kubelet-client-key={pki.admin_key}",
            # the node's name does not resolve; its InternalIP is the bridge address
            "--kubelet-preferred-address-types=InternalIP",
        ]
    else:
        # no kube-controller-manager: nothing would create `default` ServiceAccounts
        extra = ["--disable-admission-plugins=ServiceAccount"]
    return [
        str(binary),
        f"--etcd-servers={etcd_url}",
        f"--bind-address={host}",
        f"--advertise-address={host}",
        f"--secure-port={port}",
        f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}",
        f"--client-ca-file={pki.ca_cert}",
        "--authorization-mode=Node,RBAC",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki.sa_pub}",
        f"--service-account-signing-key-file={pki.sa_key}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        *extra,
        # the `kubernetes` Endpoints may not hold a loopback address
        "--endpoint-reconciler-type=none",
        "--allow-privileged=true",
        f"--profiling={str(profiling).lower()}",
        "--v=1",
    ]


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig_dict(
    server: str, ca_pem: bytes, client_cert_pem: bytes, client_key_pem: bytes
) -> dict[str, Any]:
    """An admin kubeconfig with embedded certificates."""

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT_NAME,
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": ADMIN_USER,
                "user": {
                    "client-certificate-data": b64(client_cert_pem),
                    "client-key-data": b64(client_key_pem),
                },
            }
        ],
        "contexts": [
            {
                "name": CONTEXT_NAME,
                "context": {"cluster": CONTEXT_NAME, "user": ADMIN_USER, "namespace": "default"},
            }
        ],
        "current-context": CONTEXT_NAME,
        "preferences": {},
    }


def write_kubeconfig(path: Path, server: str, pki: Pki) -> Path:
    cfg = kubeconfig_dict(
        server,
        pki.ca_cert.read_bytes(),
        pki.admin_cert.read_bytes(),
        pki.admin_key.read_bytes(),
    )
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    path.chmod(0o600)
    return path


def server_from_kubeconfig(path: Path) -> str:
    """The server URL of the current context (best effort, '' if unknown)."""
    return kubeconfig_server(path)


def admin_ssl_context(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
    return ctx


def get_json(url: str, ctx: ssl.SSLContext | None = None, timeout: float = 3.0) -> Any:
    with urllib.request.urlopen(url, context=ctx, timeout=timeout) as resp:
        return json.loads(resp.read())


def http_ok(url: str, ctx: ssl.SSLContext | None = None, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def etcd_ready(client_url: str) -> bool:
    try:
        return bool(get_json(f"{client_url}/health").get("health") == "true")
    except (OSError, ValueError):
        return False


def apiserver_ready(api_url: str, pki: Pki) -> bool:
    return http_ok(f"{api_url}/readyz", admin_ssl_context(pki))
