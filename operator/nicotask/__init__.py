"""nicotask: NICo rack tasks as Kubernetes resources, run by Temporal."""

from nicotask import lazy_kubernetes

# Before kopf or the Kubernetes adapter imports kubernetes-asyncio: its ~800
# generated modules load when used, not all at once (~35 MB per process).
lazy_kubernetes.install()
