"""What an activity may act on, derived from the cluster, never from the workflow input.

Anyone who can reach Temporal can start a workflow with any input, so the
input only says WHICH task and component: the NicoTask is read by namespace
and name and must carry the workflow's id as its uid; the component's
endpoint, system id, credentials Secret and CA come from the task's NicoRack
as stored. The step itself must be one of the rule the task resolves to in
the cluster (rules.resolve_rule: pinned, rack's, default or built-in), so a
forged rule cannot make a PowerOn task force a rack off. Secrets must be
labelled `nico.dev/bmc-credentials: "true"` and live in a namespace this
worker serves; the endpoint must pass the endpoint policy (bmc_policy.py).
Every refusal is a non-retryable ApplicationError whose message says why, so
the task ends Failed with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError
from temporalio.exceptions import ApplicationError

from nicotask.api import (
    BMC_CREDENTIALS_LABEL,
    RULES,
    NicoOperationRule,
    NicoRack,
    NicoTask,
    RackComponent,
    SecretRef,
    StepAction,
)
from nicotask.bmc_policy import EndpointPolicy, EndpointRefused, EndpointUnresolvable
from nicotask.kube import NotFound, SecretData
from nicotask.lifecycle import is_terminal
from nicotask.rules import RuleNotFound, resolve_rule
from nicotask.temporal.cache import TtlCache
from nicotask.temporal.models import TaskRef

ERR_REFUSED = "Refused"
ERR_CREDENTIALS = "CredentialsMissing"
ERR_TASK_GONE = "TaskGone"
ERR_UNREACHABLE = "BmcUnreachable"


class ClusterReader(Protocol):
    async def get_task(self, namespace: str, name: str) -> NicoTask: ...

    async def get_rack(self, namespace: str, name: str) -> NicoRack: ...

    async def read_secret_data(self, namespace: str, name: str) -> SecretData: ...

    async def list_objects(self, plural: str, namespace: str | None = None) -> list[Any]: ...


@dataclass(frozen=True)
class Target:
    """One component as the cluster defines it, with what is needed to reach its BMC."""

    namespace: str
    component_id: str
    endpoint: str
    system_id: str | None
    secret_name: str
    username: str
    password: str
    verify: bool | str
    allow_http: bool


def refuse(message: str, type_: str = ERR_REFUSED) -> ApplicationError:
    return ApplicationError(message, type=type_, non_retryable=True)


class TargetResolver:
    """Reads (through a short cache) and checks the task, rack and Secrets of an activity."""

    def __init__(
        self,
        kube: ClusterReader,
        *,
        policy: EndpointPolicy,
        namespaces: Sequence[str] = (),
        cache_seconds: float = 5.0,
        ca_dir: str,
    ) -> None:
        self.kube = kube
        self.policy = policy
        self.namespaces = frozenset(namespaces)
        self.cache = TtlCache(cache_seconds)
        self.ca_dir = ca_dir

    # ---- the task --------------------------------------------------------

    async def task(self, ref: TaskRef, workflow_id: str) -> NicoTask:
        """The NicoTask this workflow runs for; refused unless its uid is the workflow id."""
        where = f"nicotask {ref.namespace}/{ref.name}"
        if self.namespaces and ref.namespace not in self.namespaces:
            raise refuse(f"{where}: namespace {ref.namespace} is not served by this worker")
        if ref.uid != workflow_id:
            raise refuse(f"{where}: the input's uid {ref.uid} is not the workflow id {workflow_id}")
        key = ("task", ref.namespace, ref.name)
        try:
            task: NicoTask = await self.cache.get(
                key, lambda: self.kube.get_task(ref.namespace, ref.name)
            )
            if task.metadata.uid != workflow_id:
                self.cache.forget(key)  # maybe recreated since: decide on a fresh read
                task = await self.cache.get(
                    key, lambda: self.kube.get_task(ref.namespace, ref.name)
                )
        except NotFound as exc:
            raise refuse(f"{where} does not exist (any more)", ERR_TASK_GONE) from exc
        if task.metadata.uid != workflow_id:
            raise refuse(
                f"{where} has uid {task.metadata.uid}, not this workflow's id {workflow_id}",
                ERR_TASK_GONE,
            )
        if is_terminal(task.status.status):
            raise refuse(f"{where} is already {task.status.status.value}", ERR_TASK_GONE)
        return task

    # ---- the component ---------------------------------------------------

    async def target(
        self, ref: TaskRef, workflow_id: str, component_id: str, action: StepAction
    ) -> Target:
        """The component to act on, once the task, its rack and its rule allow `action`."""
        task = await self.task(ref, workflow_id)
        ns = ref.namespace
        rack_name = task.spec.rack_ref
        try:
            rack: NicoRack = await self.cache.get(
                ("rack", ns, rack_name), lambda: self.kube.get_rack(ns, rack_name)
            )
        except NotFound as exc:
            raise refuse(f"nicorack {ns}/{rack_name} of the task does not exist") from exc
        if rack.spec.site_id != task.spec.site_id:
            raise refuse(f"nicorack {ns}/{rack_name} is not in the task's site {task.spec.site_id}")
        component = _component(rack, component_id)
        if component is None:
            raise refuse(f"component {component_id} is not in nicorack {ns}/{rack_name}")
        await self.check_step(task, rack, component, action)
        endpoint = component.redfish.endpoint.rstrip("/")
        allow_http = rack.spec.tls.allow_insecure_http
        try:
            await asyncio.to_thread(self.policy.check_endpoint, endpoint, allow_http=allow_http)
        except EndpointRefused as exc:
            raise refuse(f"component {component_id}: {exc}") from exc
        except EndpointUnresolvable as exc:
            raise ApplicationError(
                f"BMC {endpoint} unreachable: {exc}", type=ERR_UNREACHABLE
            ) from exc
        cred_ref = component.redfish.credentials or rack.spec.credentials
        username, password = await self.credentials(ns, cred_ref, component_id)
        return Target(
            namespace=ns,
            component_id=component_id,
            endpoint=endpoint,
            system_id=component.redfish.system_id,
            secret_name=cred_ref.name,
            username=username,
            password=password,
            verify=await self.verify(ns, rack),
            allow_http=allow_http,
        )

    # ---- the step --------------------------------------------------------

    async def rules(self, namespace: str) -> list[NicoOperationRule]:
        raws = await self.cache.get(
            ("rules", namespace), lambda: self.kube.list_objects(RULES, namespace)
        )
        out = []
        for raw in raws:
            try:
                out.append(NicoOperationRule.model_validate(raw))
            except ValidationError:
                continue  # the operator reports unparsable rules; they run nothing
        return out

    async def check_step(
        self, task: NicoTask, rack: NicoRack, component: RackComponent, action: StepAction
    ) -> None:
        """Refuse a step that the rule the task resolves to (now, in the cluster) lacks.

        The rule's cleanup steps count only for a task that is being stopped (a cancel,
        or a deadline). A refusal from cached reads is checked once more against fresh
        ones: a rule created a moment before its task, or a cancel made since the task
        was cached (its cleanup then runs), must not fail it."""
        ns, name = task.metadata.namespace or "", task.metadata.name
        for fresh in (False, True):
            if fresh:
                self.cache.forget(("rules", ns))
                self.cache.forget(("task", ns, name))
                with contextlib.suppress(NotFound):
                    newer = await self.kube.get_task(ns, name)
                    if newer.metadata.uid == task.metadata.uid:
                        task = newer
            try:
                resolved = resolve_rule(task.spec, rack, await self.rules(ns))
            except RuleNotFound as exc:
                if fresh:
                    raise refuse(f"nicotask {ns}/{name}: {exc}") from exc
                continue
            steps = list(resolved.spec.steps)
            if task.spec.cancel or task.spec.deadline is not None:
                steps += resolved.spec.cleanup
            if any(
                step.component_type == component.type and step.action == action for step in steps
            ):
                return
        what = action.type.value + (f" {action.power.value}" if action.power else "")
        raise refuse(
            f"step {what} on {component.type.value} is not in rule {resolved.rule_id}"
            f" ({resolved.source}), which nicotask {ns}/{name} runs for"
            f" {task.spec.operation.value}"
        )

    # ---- Secrets ---------------------------------------------------------

    async def secret(self, namespace: str, name: str, what: str) -> SecretData:
        try:
            secret: SecretData = await self.cache.get(
                ("secret", namespace, name), lambda: self.kube.read_secret_data(namespace, name)
            )
        except NotFound as exc:
            raise refuse(
                f"secret {namespace}/{name} with the {what} does not exist", ERR_CREDENTIALS
            ) from exc
        if secret.labels.get(BMC_CREDENTIALS_LABEL) != "true":
            raise refuse(
                f"secret {namespace}/{name} is not labelled {BMC_CREDENTIALS_LABEL}=true:"
                f" refusing to use it for the {what}",
                ERR_CREDENTIALS,
            )
        return secret

    async def credentials(
        self, namespace: str, ref: SecretRef, component_id: str
    ) -> tuple[str, str]:
        what = f"BMC credentials of component {component_id}"
        data = (await self.secret(namespace, ref.name, what)).data
        missing = [k for k in (ref.username_key, ref.password_key) if k not in data]
        if missing:
            raise refuse(
                f"secret {namespace}/{ref.name} has no key {', '.join(missing)} ({what})",
                ERR_CREDENTIALS,
            )
        return data[ref.username_key], data[ref.password_key]

    async def verify(self, namespace: str, rack: NicoRack) -> bool | str:
        """requests' `verify`: False, True, or the path of the rack's CA bundle."""
        tls = rack.spec.tls
        if tls.insecure_skip_verify:
            return False
        if not tls.ca_secret_ref:
            return True
        data = (await self.secret(namespace, tls.ca_secret_ref, "BMC CA")).data
        pem = data.get("ca.crt")
        if not pem:
            raise refuse(
                f"secret {namespace}/{tls.ca_secret_ref} has no key ca.crt", ERR_CREDENTIALS
            )
        path = os.path.join(self.ca_dir, hashlib.sha256(pem.encode()).hexdigest() + ".pem")
        await asyncio.to_thread(_write_once, path, pem)
        return path


def _component(rack: NicoRack, component_id: str) -> RackComponent | None:
    return next((c for c in rack.spec.components if c.id == component_id), None)


def _write_once(path: str, text: str) -> None:
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
