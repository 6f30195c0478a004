"""nicotask: NICo rack tasks as Kubernetes resources, run by Temporal."""
