"""Process settings from the environment (prefix NICOTASK_), one Settings per process."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NICOTASK_", extra="ignore")

    # Temporal
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = "nicotask"
    temporal_tls: bool = False
    temporal_tls_ca_file: str | None = None
    temporal_tls_cert_file: str | None = None
    temporal_tls_key_file: str | None = None
    # Temporal Cloud API key (sent as a bearer token; needs temporal_tls).
    temporal_api_key: SecretStr | None = None

    # Kubernetes: KUBECONFIG (or in-cluster) is read by kube.new_api_client.
    kubeconfig: str | None = Field(default=None, validation_alias="KUBECONFIG")

    # Operator
    namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces served (operator watch, worker Secrets); empty means cluster-wide.",
    )
    site_selector: str | None = Field(
        default=None, description="Label selector to shard NicoTasks by site."
    )
    peering: str | None = Field(default=None, description="kopf peering name for HA.")
    peering_priority: int | None = Field(
        default=None,
        description="kopf peering priority of this replica (unset: random, distinct per replica).",
    )
    peering_lifetime_seconds: int = Field(
        default=60,
        ge=2,
        description="kopf peering keep-alive lifetime: a standby takes over "
        "this long after the active replica stops.",
    )
    queue_limit: int = Field(default=5, ge=0, description="Waiting tasks per rack.")
    queue_timeout_seconds: float = Field(default=3600.0, gt=0)
    reconcile_interval_seconds: float = Field(
        default=30.0, gt=0, description="How often every live task is checked against Temporal."
    )
    follow_interval_seconds: float = Field(
        default=1.0, gt=0, description="How often Temporal is asked which executions closed."
    )
    operator_workers: int = Field(
        default=32, ge=1, description="Tasks the operator reconciles at once (FIFO beyond)."
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        description="Delete finished tasks this long after they finish (unset: keep them).",
    )
    health_port: int = 8080
    metrics_port: int = 9090
    json_logs: bool = False

    # Worker
    # Activities are async and mostly wait (on BMCs, sleeps): slots are cheap, and a
    # step that holds one must not starve another task's progress write.
    worker_max_concurrent_activities: int = 1000
    # Workflow tasks are CPU work on one thread pool (the GIL), and each one's 10 s
    # timeout runs from when the worker takes it: with 200 taken at once on a busy
    # worker, most timed out and were replayed, again and again (the bench's graceful
    # phase: 0 of 158 stops done in 2 minutes). A task left on the server waits for free.
    worker_max_concurrent_workflows: int = Field(default=20, ge=1)
    worker_health_port: int = 8081
    # Progress writes are local activities with slots of their own, so they never
    # wait behind step activities.
    worker_progress_max_concurrent_activities: int = Field(default=50, ge=1)
    # Where BMCs may be: CIDRs. Empty: any address except loopback, link-local,
    # unspecified and multicast. Those special ranges are allowed only when a listed
    # CIDR lies inside them (e.g. "127.0.0.0/8" in the local dev environment).
    worker_bmc_networks: list[str] = Field(default_factory=list)
    # How long the worker reuses a NicoTask, NicoRack or Secret it read (per object).
    worker_cache_seconds: float = Field(default=5.0, ge=0)
    # Prometheus /metrics (Temporal SDK and nicotask_worker_*); 0 turns it off.
    worker_metrics_port: int = 9091

    # Shim
    shim_host: str = "127.0.0.1"
    shim_port: int = 8088


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
