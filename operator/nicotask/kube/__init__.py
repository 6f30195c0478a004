"""The one Kubernetes adapter. Every component (operator, worker, shim, kubectl
plugin, dev environment) reaches the API server through this package:

- `apiclient`: `new_api_client` (in-cluster config or a kubeconfig, with a
  User-Agent naming the component), `kubeconfig_namespace`, `kubeconfig_server`;
- `errors`: one mapping of API errors: 404 `NotFound`, 409 `Conflict`, 410
  `Expired` (a watch's resourceVersion is too old), 422 `Refused`; other statuses
  stay `ApiException`. `api_errors` maps a client call's exception,
  `raise_for_status` a raw response's status;
- `objects`: get/list/create/patch/delete of the custom resources (the hot calls
  read their answers raw and parse them with orjson);
- `watch`: one WATCH, bookmarks included; `listwatch`: LIST then WATCH for ever,
  relisting on 410 (the shim's caches, the operator's finished-cancels watch);
- `status`: the conditional status writer (`update_task_status`) and the
  worker's progress patch;
- `events`: an Event on a task.

`Kube` is all of it on one ApiClient; `from nicotask.kube import X` serves every
name the modules export.
"""

from __future__ import annotations

from dataclasses import dataclass

from nicotask.api import CANCEL_REQUESTED_BY, PROVIDERS, RACKS, RULES, SITES, TASKS

from .apiclient import (
    PROXY_VARIABLES,
    kubeconfig_namespace,
    kubeconfig_server,
    new_api_client,
    trust_env_only_if_used,
    user_agent,
)
from .errors import (
    ApiException,
    Conflict,
    Expired,
    KubeError,
    NotFound,
    Refused,
    api_errors,
    api_message,
    mapped_error,
    raise_for_status,
    read_body,
    read_json,
)
from .events import EventPoster
from .objects import JSON_PATCH, MERGE_PATCH, SecretData
from .status import TaskStatusWriter
from .watch import Watching
from .watch import watch_event as _watch_event

__all__ = [
    "CANCEL_REQUESTED_BY",
    "JSON_PATCH",
    "MERGE_PATCH",
    "PROVIDERS",
    "PROXY_VARIABLES",
    "RACKS",
    "RULES",
    "SITES",
    "TASKS",
    "ApiException",
    "Conflict",
    "Expired",
    "Kube",
    "KubeError",
    "NotFound",
    "Refused",
    "SecretData",
    "_watch_event",
    "api_errors",
    "api_message",
    "kubeconfig_namespace",
    "kubeconfig_server",
    "mapped_error",
    "new_api_client",
    "raise_for_status",
    "read_body",
    "read_json",
    "trust_env_only_if_used",
    "user_agent",
]


@dataclass
class Kube(TaskStatusWriter, EventPoster, Watching):
    """The custom resources we use, on one ApiClient: reads and writes, watches,
    the status writes of tasks and their Events."""
