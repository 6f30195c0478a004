"""The workflow input is a hint, never authority: hand-started workflows against the real worker.

Anyone who can reach Temporal can start NicoTaskWorkflow with any input. Here
the test plays that caller: it starts workflows on the real dev server whose
input names another namespace's (labelled!) Secret and a BMC endpoint on a
listener of ours, which the worker's endpoint policy would allow (loopback is
allowed in this test). The real worker, with the real Kube, must act only on
what the cluster says: no connection reaches the listener, and that Secret
is never read. Kube is the real class; the subclass only records which
Secrets were read.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from typing import Any

import pytest
from integration_support import component, create_rack, create_task
from kubernetes_asyncio import client as k8s
from temporalio.client import Client

from nicotask import api
from nicotask.api import (
    ActionType,
    ComponentType,
    NicoOperationRuleSpec,
    Operation,
    PowerAction,
    RetryPolicy,
    RuleStep,
    SecretRef,
    StepAction,
    TaskStatus,
)
from nicotask.bmc_policy import EndpointPolicy
from nicotask.kube import Kube, SecretData
from nicotask.rules import builtin_rule
from nicotask.temporal.models import (
    WORKFLOW_NAME,
    ComponentTarget,
    TaskRef,
    WorkflowInput,
    WorkflowOutcome,
)
from nicotask.temporal.worker import build_worker
from nicotask_dev.redfish_testing import LinkingBmc

LOOPBACK_OK = EndpointPolicy.from_cidrs(["127.0.0.0/8"])

pytestmark = pytest.mark.asyncio(loop_scope="session")


class SpyKube(Kube):
    """The real Kube; remembers every Secret it was asked for."""

    def __init__(self, api_client: Any) -> None:
        super().__init__(api_client)
        self.secret_reads: list[tuple[str, str]] = []

    async def read_secret_data(self, namespace: str, name: str) -> SecretData:
        self.secret_reads.append((namespace, name))
        return await super().read_secret_data(namespace, name)


class Listener:
    """A TCP listener that counts connections (a BMC endpoint of ours)."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> Listener:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            writer.close()

        self.server = await asyncio.start_server(accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


def power_on_rule(power: PowerAction = PowerAction.ON) -> NicoOperationRuleSpec:
    """A rule of the forger's (not stored in the cluster)."""
    return NicoOperationRuleSpec(
        rule_id=str(uuid.uuid4()),
        operation=Operation.POWER_ON,
        steps=[
            RuleStep(
                component_type=ComponentType.COMPUTE,
                stage=1,
                timeout_seconds=30,
                retry=RetryPolicy(max_attempts=1),
                action=StepAction(type=ActionType.POWER_CONTROL, power=power),
            )
        ],
    )


def forged_input(
    ref: TaskRef, endpoint: str, secret: str, spec: NicoOperationRuleSpec | None = None
) -> WorkflowInput:
    spec = spec or power_on_rule()
    return WorkflowInput(
        task=ref,
        operation=spec.operation,
        rule_id=spec.rule_id,
        rule=spec,
        components=[
            ComponentTarget(
                id="compute-0",
                type=ComponentType.COMPUTE,
                endpoint=endpoint,
                system_id="anything",
                credentials_secret=SecretRef(name=secret),
            )
        ],
    )


async def make_namespace(kube_api: Any) -> str:
    name = f"victim-{secrets.token_hex(4)}"
    await k8s.CoreV1Api(kube_api).create_namespace(
        k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name))
    )
    return name


async def make_secret(kube_api: Any, namespace: str, name: str, *, labelled: bool) -> None:
    labels = {api.BMC_CREDENTIALS_LABEL: "true"} if labelled else {}
    await k8s.CoreV1Api(kube_api).create_namespaced_secret(
        namespace,
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name=name, labels=labels),
            string_data={"username": "root", "password": "db-password"},
        ),
    )


async def test_forged_workflow_input_sends_no_secret_anywhere(
    devenv: Any, kube_api: Any, namespace: str, crds: None, pclient: Client
) -> None:
    victim = await make_namespace(kube_api)
    await make_secret(kube_api, victim, "victim-db", labelled=True)
    # Our own namespace: a real task on a real rack whose Secret is NOT labelled.
    await make_secret(kube_api, namespace, "rack-secret", labelled=False)
    kube = SpyKube(kube_api)
    await create_rack(
        kube,
        namespace,
        "rack-1",
        [component("compute-0", "http://127.0.0.1:1", "s")],
        secret="rack-secret",
    )
    task = await create_task(kube, namespace, "task-1")
    uid = task.metadata.uid or ""
    queue = f"test-trust-{uuid.uuid4().hex[:8]}"

    async def refused(
        workflow_id: str,
        ref: TaskRef,
        endpoint: str,
        message: str,
        spec: NicoOperationRuleSpec | None = None,
    ) -> WorkflowOutcome:
        """A forged input for `ref` (the victim's Secret, our listener) fails with `message`."""
        handle = await pclient.start_workflow(
            WORKFLOW_NAME,
            forged_input(ref, endpoint, "victim-db", spec),
            id=workflow_id,
            task_queue=queue,
            result_type=WorkflowOutcome,
        )
        outcome = await asyncio.wait_for(handle.result(), timeout=60)
        assert outcome.status == TaskStatus.FAILED
        assert outcome.message == message
        return outcome

    async with Listener() as listener:
        async with build_worker(pclient, kube, task_queue=queue, bmc_policy=LOOPBACK_OK):
            # 1. A task that does not exist, in the victim's namespace.
            wid = str(uuid.uuid4())
            await refused(
                wid,
                TaskRef(namespace=victim, name="no-such-task", uid=wid),
                listener.url,
                f"Compute compute-0: nicotask {victim}/no-such-task does not exist (any more)",
            )

            # 2. A real task, but the workflow is not that task's (its id is not the uid).
            wid = str(uuid.uuid4())
            await refused(
                wid,
                TaskRef(namespace=namespace, name="task-1", uid=wid),
                listener.url,
                f"Compute compute-0: nicotask {namespace}/task-1 has uid {uid},"
                f" not this workflow's id {wid}",
            )

            # 3. The real task's own workflow id, but a rule of the forger's: a step that
            #    the task's rule (the built-in PowerOn) lacks is refused before any read
            #    of a Secret, whatever the input says.
            ours = TaskRef(namespace=namespace, name="task-1", uid=uid)
            builtin = builtin_rule(Operation.POWER_ON)
            await refused(
                uid,
                ours,
                listener.url,
                f"Compute compute-0: step PowerControl ForceOff on Compute is not in rule"
                f" {builtin.rule_id} (builtin), which nicotask {namespace}/task-1 runs for"
                " PowerOn",
                power_on_rule(PowerAction.FORCE_OFF),
            )
            assert kube.secret_reads == []

            # 4. The task's own rule: the endpoint and the Secret come from the stored
            #    rack, whose Secret is not labelled for BMC use: refused.
            outcome = await refused(
                uid,
                ours,
                listener.url,
                f"Compute compute-0: secret {namespace}/rack-secret is not labelled"
                f" {api.BMC_CREDENTIALS_LABEL}=true: refusing to use it for the BMC"
                " credentials of component compute-0",
                builtin,
            )
        await asyncio.sleep(0.2)
        assert listener.connections == 0
    assert (victim, "victim-db") not in kube.secret_reads
    assert all(ns == namespace for ns, _ in kube.secret_reads), kube.secret_reads
    # The refused task got the reason in its report.
    stored = await kube.get_task(namespace, "task-1")
    assert stored.status.report is not None
    assert stored.status.report.error == outcome.message
    await k8s.CoreV1Api(kube_api).delete_namespace(victim)


async def test_namespace_not_served_is_refused(
    devenv: Any, kube_api: Any, namespace: str, crds: None, pclient: Client
) -> None:
    """A worker serving other namespaces reads nothing here."""
    kube = SpyKube(kube_api)
    queue = f"test-trust-{uuid.uuid4().hex[:8]}"
    wid = str(uuid.uuid4())
    async with build_worker(
        pclient, kube, task_queue=queue, bmc_policy=LOOPBACK_OK, namespaces=["somewhere-else"]
    ):
        handle = await pclient.start_workflow(
            WORKFLOW_NAME,
            forged_input(
                TaskRef(namespace=namespace, name="task-1", uid=wid), "http://127.0.0.1:1", "bmc"
            ),
            id=wid,
            task_queue=queue,
            result_type=WorkflowOutcome,
        )
        outcome = await asyncio.wait_for(handle.result(), timeout=60)
    assert outcome.status == TaskStatus.FAILED
    assert outcome.message == (
        f"Compute compute-0: nicotask {namespace}/task-1: namespace {namespace}"
        " is not served by this worker"
    )
    assert kube.secret_reads == []


async def run_own_workflow(
    pclient: Client, kube: Kube, task: api.NicoTask, **worker: Any
) -> WorkflowOutcome:
    """The task's own workflow (its uid, the built-in PowerOn rule it resolves to) on a
    fresh worker (`worker`: build_worker's settings; none: a worker in a cluster)."""
    ref = TaskRef(
        namespace=task.metadata.namespace or "",
        name=task.metadata.name,
        uid=task.metadata.uid or "",
    )
    queue = f"test-trust-{uuid.uuid4().hex[:8]}"
    async with build_worker(pclient, kube, task_queue=queue, **worker):
        handle = await pclient.start_workflow(
            WORKFLOW_NAME,
            forged_input(ref, "x", "bmc", builtin_rule(Operation.POWER_ON)),
            id=ref.uid,
            task_queue=queue,
            result_type=WorkflowOutcome,
        )
        return await asyncio.wait_for(handle.result(), timeout=60)


async def test_rack_endpoint_on_link_local_is_refused_by_default(
    devenv: Any, kube_api: Any, namespace: str, crds: None, pclient: Client
) -> None:
    """SSRF: cloud metadata (169.254.169.254) is refused before any Secret is read."""
    await make_secret(kube_api, namespace, "bmc", labelled=True)
    kube = SpyKube(kube_api)
    await create_rack(
        kube, namespace, "rack-md", [component("compute-0", "http://169.254.169.254", "s")]
    )
    task = await create_task(kube, namespace, "md", rack="rack-md")
    outcome = await run_own_workflow(pclient, kube, task)  # the default policy
    assert outcome.status == TaskStatus.FAILED
    assert outcome.message == (
        "Compute compute-0: component compute-0: BMC endpoint http://169.254.169.254:80 refused:"
        " 169.254.169.254 is a link-local address (not allowed for BMCs)"
    )
    assert kube.secret_reads == []


async def test_rack_endpoint_on_loopback_is_refused_by_default(
    devenv: Any, kube_api: Any, namespace: str, crds: None, pclient: Client
) -> None:
    """SSRF: a rack aimed at the worker's loopback gets nothing, not even a connection."""
    await make_secret(kube_api, namespace, "bmc", labelled=True)
    kube = SpyKube(kube_api)
    async with Listener() as listener:
        await create_rack(kube, namespace, "rack-1", [component("compute-0", listener.url, "s")])
        task = await create_task(kube, namespace, "t")
        # The default policy: what a worker in a cluster gets without settings.
        outcome = await run_own_workflow(pclient, kube, task)
        assert listener.connections == 0
        url = listener.url
    assert outcome.status == TaskStatus.FAILED
    assert outcome.message == (
        f"Compute compute-0: component compute-0: BMC endpoint {url} refused:"
        " 127.0.0.1 is a loopback address (not allowed for BMCs)"
    )
    assert kube.secret_reads == []  # refused before the credentials were read


async def test_redfish_links_to_another_host_get_no_request(
    devenv: Any, kube_api: Any, namespace: str, crds: None, pclient: Client
) -> None:
    """A BMC whose Redfish links point at another host: the worker follows none of them,
    so the rack's credentials never reach that host (loopback allowed, as in dev)."""
    await make_secret(kube_api, namespace, "bmc", labelled=True)
    kube = SpyKube(kube_api)
    other = LinkingBmc()
    bmc = LinkingBmc(links_to=other.url)
    try:
        linked = component("compute-0", bmc.url, "1")
        del linked["redfish"]["systemId"]  # found through the (hostile) Systems link
        await create_rack(kube, namespace, "rack-links", [linked])
        task = await create_task(kube, namespace, "links", rack="rack-links")
        outcome = await run_own_workflow(pclient, kube, task, bmc_policy=LOOPBACK_OK)
    finally:
        bmc.close()
        other.close()
    assert outcome.status == TaskStatus.FAILED
    assert outcome.message == (
        f"Compute compute-0: BMC {bmc.url}: refused a request to {other.url}:"
        f" the BMC's endpoint is {bmc.url}"
    )
    assert bmc.seen  # the BMC itself was asked (its service root)
    assert other.seen == []
    assert kube.secret_reads == [(namespace, "bmc")]
