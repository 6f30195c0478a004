"""`kubectl nico` against the local control plane: report, cancel and wait on a real NicoTask
(the operator is not running: the test writes the status through the status subresource).

The plugin runs as on a laptop install without the `server` extra: the distributions that
extra adds (kopf, temporalio, fastapi, ...) cannot be imported by it."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from integration_support import (
    create_service_account,
    create_task,
    read_task,
    service_account_token,
    token_kubeconfig,
)
from kubernetes_asyncio import client

from nicotask import api, lifecycle
from nicotask.kube import Kube, Refused
from nicotask_dev import crdgen, lock
from nicotask_dev.devenv.testing import argocd_health, fresh_namespace

BIN = Path(sys.executable).parent
PLUGIN = BIN / "kubectl-nico"
RULE = "770e8400-e29b-41d4-a716-446655440001"


# A sitecustomize.py that hides the server extra's modules from the plugin's processes.
NO_SERVER_EXTRA: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def no_server_extra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    NO_SERVER_EXTRA.append(
        lock.write_import_blocker(
            tmp_path_factory.mktemp("no-server-extra"), lock.server_only_modules()
        ).parent
    )
    yield
    NO_SERVER_EXTRA.clear()


@pytest.fixture(scope="module")
def crds(devenv: Any) -> None:
    crdgen.install_crds(devenv.kubeconfig)


async def run(
    devenv: Any,
    *args: str | bytes,
    via_kubectl: bool = False,
    kubeconfig: Path | None = None,
) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig or devenv.kubeconfig),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(map(str, NO_SERVER_EXTRA)),
    }
    argv = [str(BIN / "kubectl"), "nico", *args] if via_kubectl else [str(PLUGIN), *args]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,  # no terminal: a selection needs --yes
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def write_status(
    kube_api: Any, task: api.NicoTask, status: api.NicoTaskStatus
) -> api.NicoTask:
    body = task.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["status"] = status.wire()
    obj = await Kube(kube_api).replace_status(
        api.TASKS, task.metadata.name, body, task.metadata.namespace or ""
    )
    return api.NicoTask.model_validate(obj)


def report(now: dt.datetime) -> api.TaskReportV1:
    S, R = api.TaskReportV1Stage, api.TaskReportV1Step
    t = lambda s: now + dt.timedelta(seconds=s)  # noqa: E731
    return api.TaskReportV1(
        stages=[
            S(
                number=1,
                status="completed",
                started_at=t(0),
                finished_at=t(4),
                steps=[
                    R(
                        component_type="PowerShelf",
                        status="completed",
                        total_components=2,
                        started_at=t(0),
                        finished_at=t(4),
                    )
                ],
            ),
            S(
                number=2,
                status="running",
                started_at=t(4),
                steps=[
                    R(
                        component_type="NVSwitch",
                        status="running",
                        total_components=2,
                        started_at=t(4),
                    )
                ],
            ),
            S(
                number=3,
                status="pending",
                steps=[R(component_type="Compute", status="pending", total_components=6)],
            ),
        ]
    )


async def test_report_cancel_wait(devenv: Any, kube_api: Any, namespace: str, crds: None) -> None:
    task = await create_task(kube_api, namespace, "power-on-rack-1", description="Power on rack-1")
    start = dt.datetime(2025, 6, 1, 10, 0, 0, tzinfo=dt.UTC)
    running = lifecycle.with_status(
        task, api.TaskStatus.RUNNING, "Running", now=start, report=report(start)
    )
    running.rule_id = RULE
    task = await write_status(kube_api, task, running)

    rc, out, err = await run(devenv, "report", "power-on-rack-1", "-n", namespace)
    assert rc == 0, err
    lines = out.splitlines()
    assert f"Task:       {namespace}/power-on-rack-1  (id {task.metadata.uid})" in lines
    assert "Status:     Running" in lines
    assert f"Rule:       {RULE}" in lines
    assert "Started:    2025-06-01T10:00:00Z" in lines
    table = lines[lines.index("") + 1 :]
    assert table[0].split()[:4] == ["STAGE", "COMPONENT", "STATUS", "TOTAL"]
    assert table[2].split() == ["PowerShelf", "completed", "2", "10:00:00", "10:00:04", "4s"]
    assert table[4].split()[:5] == ["NVSwitch", "running", "2", "10:00:04", "-"]
    assert table[6].split() == ["Compute", "pending", "6", "-", "-", "-"]

    # Through kubectl's plugin discovery (kubectl-nico on PATH).
    rc, out2, err = await run(
        devenv, "report", "power-on-rack-1", "-n", namespace, via_kubectl=True
    )
    assert rc == 0, err
    assert "Status:     Running" in out2 and "PowerShelf" in out2

    # wait times out (non-zero) while the task runs.
    rc, _, err = await run(
        devenv, "wait", "power-on-rack-1", "-n", namespace, "--for=Terminated", "--timeout=1s"
    )
    assert rc == 1 and "timed out" in err

    # cancel sets spec.cancel; a second cancel is a no-op.
    rc, out, err = await run(devenv, "cancel", "power-on-rack-1", "-n", namespace)
    assert rc == 0, err
    assert "cancel requested" in out
    obj = await read_task(kube_api, namespace, "power-on-rack-1")
    assert obj["spec"]["cancel"] is True
    # who cancelled: the caller, as the API server knows it (SelfSubjectReview)
    from nicotask_dev.devenv.pki import ADMIN_USER

    assert obj["metadata"]["annotations"]["nico.dev/cancel-requested-by"] == ADMIN_USER
    assert obj["status"]["status"] == "Running"  # only spec changed
    assert argocd_health(obj) == ("Progressing", "Running (stage 2 of 3) (cancel requested)")
    rc, out, _ = await run(devenv, "cancel", "power-on-rack-1", "-n", namespace)
    assert rc == 0 and "already requested" in out

    # wait --for=Terminated returns 0 once the status says so (written while it waits).
    waiter = asyncio.create_task(
        run(devenv, "wait", "power-on-rack-1", "-n", namespace, "--for=Terminated", "--timeout=30s")
    )
    await asyncio.sleep(1.5)
    assert not waiter.done()
    task = api.NicoTask.model_validate(obj)
    now = start + dt.timedelta(seconds=7)
    closed = lifecycle.close_report(task.status.report, lifecycle.CANCELLED_BY_USER, now)
    terminated = lifecycle.with_status(
        task, api.TaskStatus.TERMINATED, "Cancelled by user (test)", now=now, report=closed
    )
    await write_status(kube_api, task, terminated)
    rc, out, err = await waiter
    assert rc == 0, err
    assert "Terminated" in out

    # Waiting for another terminal status fails fast; --for=finished succeeds.
    rc, _, err = await run(
        devenv, "wait", "power-on-rack-1", "-n", namespace, "--for=Succeeded", "--timeout=30s"
    )
    assert rc == 1 and "finished as Terminated" in err
    rc, _, _ = await run(devenv, "wait", "power-on-rack-1", "-n", namespace)
    assert rc == 0

    obj = await read_task(kube_api, namespace, "power-on-rack-1")
    assert argocd_health(obj) == ("Healthy", "Terminated: Cancelled by user (test)")
    rc, out, _ = await run(devenv, "report", "power-on-rack-1", "-n", namespace)
    assert "Status:     Terminated" in out
    assert "Cancel:     Terminate, requested" in out
    nvswitch = next(line for line in out.splitlines() if "NVSwitch" in line)
    assert nvswitch.split()[:2] == ["NVSwitch", "failed"]
    assert nvswitch.rstrip().endswith("Cancelled by user")


async def test_not_found_and_current_namespace(
    devenv: Any, kube_api: Any, namespace: str, crds: None, tmp_path: Path
) -> None:
    rc, _, err = await run(devenv, "report", "no-such-task", "-n", namespace)
    assert rc == 2
    assert f'nicotask "no-such-task" not found in namespace "{namespace}"' in err
    # The kubeconfig's current namespace is used when -n is absent.
    await create_task(kube_api, namespace, "t1")
    kubeconfig = tmp_path / "kubeconfig"
    await asyncio.to_thread(shutil.copyfile, devenv.kubeconfig, kubeconfig)
    env_kc = {"KUBECONFIG": str(kubeconfig)}
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "kubectl"),
        "config",
        "set-context",
        "--current",
        f"--namespace={namespace}",
        env={**os.environ, **env_kc},
    )
    assert await proc.wait() == 0
    rc, out, err = await run(devenv, "report", "t1", "--kubeconfig", str(kubeconfig))
    assert rc == 0, err
    assert f"{namespace}/t1" in out
    assert "No report yet." in out


# ---- cancel of many tasks --------------------------------------------------------------------


async def task_with_status(
    kube_api: Any,
    namespace: str,
    name: str,
    status: str,
    rack: str = "rack-1",
    labels: dict[str, str] | None = None,
    **spec: Any,
) -> api.NicoTask:
    """A task with a status written as the operator would (the operator is not running)."""
    task = await create_task(
        kube_api, namespace, name, rack=rack, metadata={"labels": labels or {}}, **spec
    )
    now = dt.datetime.now(dt.UTC)
    return await write_status(
        kube_api, task, lifecycle.with_status(task, api.TaskStatus(status), status, now=now)
    )


async def versions(kube_api: Any, namespace: str) -> dict[str, str]:
    items = await Kube(kube_api).list_objects(api.TASKS, namespace)
    return {t["metadata"]["name"]: t["metadata"]["resourceVersion"] for t in items}


def summary_line(out: str) -> str:
    return next(line for line in out.splitlines() if " tasks: " in line or " task: " in line)


async def test_bulk_cancel_by_selector_rack_and_all(
    devenv: Any, kube_api: Any, namespace: str, crds: None
) -> None:
    from nicotask_dev.devenv.pki import ADMIN_USER

    ns = ["-n", namespace]
    await asyncio.gather(
        *(task_with_status(kube_api, namespace, f"a{i}", "Running", labels={"team": "a"})
          for i in (1, 2, 3)),
        task_with_status(kube_api, namespace, "s1", "Succeeded", labels={"team": "a"}),
        task_with_status(kube_api, namespace, "b1", "Running", rack="rack-2",
                         labels={"team": "b"}),
        task_with_status(kube_api, namespace, "g1", "Running", rack="rack-2",
                         labels={"team": "b"}, cancel=True, cancelMode="Graceful",
                         cancelReason="first"),
    )  # fmt: skip
    before = await versions(kube_api, namespace)
    assert len(before) == 6

    # --dry-run: the list, the count, and nothing changes.
    rc, out, err = await run(devenv, "cancel", "--all", "--dry-run", *ns)
    assert rc == 0, err
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:-1]}
    assert rows["a1"][:3] == ["Running", "rack-1", "cancel"]
    assert rows["s1"][:4] == ["Succeeded", "rack-1", "none:", "already"]
    assert rows["g1"][2:] == ["escalate", "to", "Terminate"]
    assert summary_line(out) == (
        "6 tasks: 5 would be cancelled (1 escalated to Terminate), 0 already cancelled, "
        "1 already finished (dry run: nothing changed)"
    )
    rc, out, _ = await run(devenv, "cancel", "-l", "team=a", "--dry-run", *ns)
    assert rc == 0 and summary_line(out).startswith("4 tasks: 3 would be cancelled")
    rc, out, _ = await run(devenv, "cancel", "--rack", "rack-2", "--dry-run", *ns)
    assert rc == 0 and sorted(rows_of(out)) == ["b1", "g1"]
    # A selection without a terminal to confirm on, and without --yes: refused.
    rc, _, err = await run(devenv, "cancel", "--rack", "rack-2", *ns)
    assert rc == 2 and "add --yes" in err
    assert await versions(kube_api, namespace) == before

    # --rack with a reason: b1 cancelled (Terminate), g1's graceful stop escalated; g1
    # keeps its own reason (fixed once cancelled).
    rc, out, err = await run(devenv, "cancel", "--rack", "rack-2", "--yes",
                             "--reason", "rack 2 maintenance", *ns)  # fmt: skip
    assert rc == 0, err
    assert "nicotask.nico.dev/b1 cancel requested (Terminate)" in out
    assert "nicotask.nico.dev/g1 cancel escalated to Terminate" in out
    assert summary_line(out) == (
        "2 tasks: 2 cancelled (1 escalated to Terminate), 0 already cancelled, 0 already finished"
    )
    b1 = await read_task(kube_api, namespace, "b1")
    assert b1["spec"]["cancel"] is True
    assert (b1["spec"]["cancelMode"], b1["spec"]["cancelReason"]) == (
        "Terminate",
        "rack 2 maintenance",
    )
    assert b1["metadata"]["annotations"]["nico.dev/cancel-requested-by"] == ADMIN_USER
    g1 = await read_task(kube_api, namespace, "g1")
    assert (g1["spec"]["cancelMode"], g1["spec"]["cancelReason"]) == ("Terminate", "first")

    # -l with --mode Graceful: the three running ones; s1 finished and keeps its spec.
    rc, out, err = await run(devenv, "cancel", "-l", "team=a", "--mode", "Graceful", "-y", *ns)
    assert rc == 0, err
    assert summary_line(out) == ("4 tasks: 3 cancelled, 0 already cancelled, 1 already finished")
    assert "nicotask.nico.dev/s1 already finished (Succeeded): not cancelled" in out
    for name in ("a1", "a2", "a3"):
        obj = await read_task(kube_api, namespace, name)
        assert (obj["spec"]["cancel"], obj["spec"]["cancelMode"]) == (True, "Graceful")
        assert "cancelReason" not in obj["spec"]
    s1 = await read_task(kube_api, namespace, "s1")
    assert not s1["spec"]["cancel"] and s1["metadata"]["resourceVersion"] == before["s1"]

    # --all --mode Graceful: nothing left to do, and it says so (exit 0). (The default
    # mode, Terminate, would escalate a1..a3.)
    after = await versions(kube_api, namespace)
    rc, out, err = await run(devenv, "cancel", "--all", "--yes", "--mode", "Graceful", *ns)
    assert rc == 0, err
    assert summary_line(out) == "6 tasks: 0 cancelled, 5 already cancelled, 1 already finished"
    assert await versions(kube_api, namespace) == after
    # Escalating by name works too; a name that does not exist fails that one (exit 1).
    rc, out, err = await run(devenv, "cancel", "a1", "nope", *ns)
    assert rc == 1
    assert "nicotask.nico.dev/a1 cancel escalated to Terminate" in out
    assert "error: nicotask.nico.dev/nope not found" in err
    assert (await read_task(kube_api, namespace, "a1"))["spec"]["cancelMode"] == "Terminate"


def rows_of(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines()[1:-1]]


async def test_bulk_cancel_of_many_shows_progress_and_a_summary(
    devenv: Any, kube_api: Any, namespace: str, crds: None
) -> None:
    sem = asyncio.Semaphore(8)

    async def make(i: int) -> None:
        async with sem:
            await create_task(kube_api, namespace, f"m{i:03d}")

    await asyncio.gather(*(make(i) for i in range(45)))
    rc, out, err = await run(devenv, "cancel", "--all", "--yes", "-n", namespace)
    assert rc == 0, err
    assert out.splitlines() == ["45 tasks: 45 cancelled, 0 already cancelled, 0 already finished"]
    assert "cancelling 45/45" in err  # progress, on stderr
    items = await Kube(kube_api).list_objects(api.TASKS, namespace)
    assert len(items) == 45 and all(t["spec"]["cancel"] for t in items)


@pytest.fixture
async def second_namespace(kube_api: Any) -> Any:
    async with fresh_namespace(kube_api) as name:
        yield name


async def test_bulk_cancel_refused_by_rbac_in_the_middle_of_a_list(
    devenv: Any,
    kube_api: Any,
    namespace: str,
    second_namespace: str,
    crds: None,
    tmp_path: Path,
) -> None:
    """A user who may read tasks everywhere but patch only p1 and p3 in one namespace:
    `cancel -A` cancels those two, reports the others refused (403), and exits 1."""
    other = second_namespace
    run_id = secrets.token_hex(3)
    labels = {"batch": run_id}
    await asyncio.gather(
        *(task_with_status(kube_api, namespace, n, "Running", labels=labels)
          for n in ("p1", "p2", "p3")),
        task_with_status(kube_api, other, "q1", "Running", labels=labels),
        task_with_status(kube_api, other, "q2", "Succeeded", labels=labels),
    )  # fmt: skip
    rbac = client.RbacAuthorizationV1Api(kube_api)
    reader = f"nicotask-reader-{run_id}"
    await create_service_account(kube_api, namespace, "canceller")
    subject = {"kind": "ServiceAccount", "name": "canceller", "namespace": namespace}
    await rbac.create_cluster_role({  # type: ignore[arg-type]
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": reader},
        "rules": [{"apiGroups": [api.GROUP], "resources": [api.TASKS],
                   "verbs": ["get", "list"]}],
    })  # fmt: skip
    await rbac.create_cluster_role_binding({  # type: ignore[arg-type]
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": reader}, "subjects": [subject],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": reader},
    })  # fmt: skip
    await rbac.create_namespaced_role(namespace, {  # type: ignore[arg-type]
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "cancel-some"},
        "rules": [{"apiGroups": [api.GROUP], "resources": [api.TASKS],
                   "resourceNames": ["p1", "p3"], "verbs": ["patch"]}],
    })  # fmt: skip
    await rbac.create_namespaced_role_binding(namespace, {  # type: ignore[arg-type]
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "cancel-some"}, "subjects": [subject],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "cancel-some"},
    })  # fmt: skip
    try:
        token = await service_account_token(kube_api, namespace, "canceller")
        kubeconfig = token_kubeconfig(devenv.kubeconfig, token, tmp_path / "sa.kubeconfig")
        before = {**await versions(kube_api, namespace), **await versions(kube_api, other)}
        rc, out, err = await run(devenv, "cancel", "-A", "-l", f"batch={run_id}", "--dry-run",
                                 kubeconfig=kubeconfig)  # fmt: skip
        assert rc == 0, err
        assert out.splitlines()[0].split() == ["NAMESPACE", "NAME", "STATUS", "RACK", "ACTION"]
        assert {*rows_of(out)} == {namespace, other}
        after_dry = {**await versions(kube_api, namespace), **await versions(kube_api, other)}
        assert after_dry == before

        rc, out, err = await run(devenv, "cancel", "-A", "-l", f"batch={run_id}", "--yes",
                                 "--reason", "batch stop", kubeconfig=kubeconfig)  # fmt: skip
        assert rc == 1
        assert summary_line(out) == (
            "5 tasks: 2 cancelled, 0 already cancelled, 1 already finished, 2 refused by RBAC"
        )
        assert f"{namespace}/nicotask.nico.dev/p1 cancel requested (Terminate)" in out
        assert f"{namespace}/nicotask.nico.dev/p3 cancel requested (Terminate)" in out
        assert f"{other}/nicotask.nico.dev/q2 already finished (Succeeded)" in out
        refused = [line for line in err.splitlines() if "refused by RBAC" in line]
        assert len(refused) == 2
        assert all('cannot patch resource "nicotasks"' in line for line in refused)
        assert any(f"{namespace}/nicotask.nico.dev/p2 " in line for line in refused)
        assert any(f"{other}/nicotask.nico.dev/q1 " in line for line in refused)
        user = f"system:serviceaccount:{namespace}:canceller"
        for name, cancelled in (("p1", True), ("p2", False), ("p3", True)):
            obj = await read_task(kube_api, namespace, name)
            assert bool(obj["spec"].get("cancel")) is cancelled
            if cancelled:
                assert obj["spec"]["cancelReason"] == "batch stop"
                assert obj["metadata"]["annotations"]["nico.dev/cancel-requested-by"] == user
        for name in ("q1", "q2"):
            assert not (await read_task(kube_api, other, name))["spec"]["cancel"]
    finally:
        await rbac.delete_cluster_role_binding(reader)
        await rbac.delete_cluster_role(reader)


async def test_bulk_cancel_refused_by_admission_shows_the_servers_message(
    devenv: Any, kube_api: Any, namespace: str, crds: None
) -> None:
    """A ValidatingAdmissionPolicy (422) refuses the cancel of the tasks labelled
    `protected` in this namespace: the others are cancelled, the message is shown as is."""
    policy = f"kubectl-nico-test-{secrets.token_hex(3)}"
    message = "protected tasks are cancelled by the on-call only"
    adm = client.AdmissionregistrationV1Api(kube_api)
    await adm.create_validating_admission_policy({  # type: ignore[arg-type]
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": policy},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "resourceRules": [{"apiGroups": [api.GROUP], "apiVersions": ["*"],
                                   "operations": ["UPDATE"], "resources": [api.TASKS]}],
            },
            "validations": [{
                "expression": "!has(object.metadata.labels)"
                              " || !('protected' in object.metadata.labels)"
                              " || !has(object.spec.cancel) || !object.spec.cancel",
                "message": message, "reason": "Invalid",
            }],
        },
    })  # fmt: skip
    await adm.create_validating_admission_policy_binding({  # type: ignore[arg-type]
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": policy},
        "spec": {"policyName": policy, "validationActions": ["Deny"]},
    })  # fmt: skip
    try:
        labels = {"wave": "1"}
        await asyncio.gather(
            task_with_status(kube_api, namespace, "r1", "Running", labels=labels),
            task_with_status(kube_api, namespace, "r2", "Running",
                             labels={**labels, "protected": "yes"}),
            task_with_status(kube_api, namespace, "r3", "Running", labels=labels),
        )  # fmt: skip
        # The policy takes effect within a few seconds: wait until it refuses a dry run.
        kube = Kube(kube_api)
        for _ in range(100):
            try:
                await kube.custom.patch_namespaced_custom_object(
                    api.GROUP, api.VERSION, namespace, api.TASKS, "r2",
                    {"spec": {"cancel": True}}, dry_run="All",
                    _content_type="application/merge-patch+json",
                )  # fmt: skip
            except client.ApiException as exc:
                assert exc.status == 422
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("the admission policy never took effect")

        rc, out, err = await run(devenv, "cancel", "-l", "wave=1", "--yes", "-n", namespace)
        assert rc == 1
        assert summary_line(out) == (
            "3 tasks: 2 cancelled, 0 already cancelled, 0 already finished, 1 refused by admission"
        )
        (line,) = [x for x in err.splitlines() if "refused by admission" in x]
        assert line.startswith("error: nicotask.nico.dev/r2 refused by admission: ")
        assert message in line and f"ValidatingAdmissionPolicy '{policy}'" in line
        assert not (await read_task(kube_api, namespace, "r2"))["spec"]["cancel"]
        for name in ("r1", "r3"):
            assert (await read_task(kube_api, namespace, name))["spec"]["cancel"] is True
    finally:
        await adm.delete_validating_admission_policy_binding(policy)
        await adm.delete_validating_admission_policy(policy)


async def test_a_bad_reason_is_refused_and_nothing_is_stored(
    devenv: Any, kube_api: Any, namespace: str, crds: None
) -> None:
    await task_with_status(kube_api, namespace, "t1", "Running")
    before = await versions(kube_api, namespace)
    bad: list[str | bytes] = ["x" * 10240, "two\nlines", "bell \x07", b"latin-1 \xe9t\xe9"]
    for reason in bad:
        rc, _, err = await run(devenv, "cancel", "t1", "--reason", reason, "-n", namespace)
        assert rc == 2 and "error: --reason:" in err, err
    # The API server refuses the same reasons itself (whoever sends them), storing nothing.
    kube = Kube(kube_api)
    for reason in ("x" * 10240, "two\nlines", "bell \x07", "latin-1 \ufffdt\ufffd"):
        with pytest.raises(Refused) as refused:
            await kube.patch(
                api.TASKS, "t1", {"spec": {"cancel": True, "cancelReason": reason}}, namespace
            )
        assert "cancelReason" in str(refused.value)
    assert await versions(kube_api, namespace) == before
    # A good one goes through, and the report shows it.
    rc, out, err = await run(devenv, "cancel", "t1", "--mode", "Graceful", "--reason",
                             "firmware window — ticket 42", "-n", namespace)  # fmt: skip
    assert rc == 0, err
    assert out == "nicotask.nico.dev/t1 cancel requested (Graceful)\n"
    rc, out, _ = await run(devenv, "report", "t1", "-n", namespace)
    assert "Cancel:     Graceful, requested" in out
    assert "Reason:     firmware window — ticket 42" in out
    # The limit is 512 characters, as the API server counts them (not bytes).
    await task_with_status(kube_api, namespace, "t2", "Running")
    rc, out, err = await run(devenv, "cancel", "t2", "--reason", "é" * 512, "-n", namespace)
    assert rc == 0, err
    assert (await read_task(kube_api, namespace, "t2"))["spec"]["cancelReason"] == "é" * 512


# ---- rerun -------------------------------------------------------------------------------------


async def test_rerun(devenv: Any, kube_api: Any, namespace: str, crds: None) -> None:
    ns = ["-n", namespace]
    spec = {
        "ruleId": RULE,
        "description": "nightly power-on",
        "deadline": {"activeSeconds": 600, "stop": "Terminate"},
        "ttlSecondsAfterFinished": 86400,
    }
    labels = {"team": "infra", "app.kubernetes.io/instance": "argo-app"}
    task = await task_with_status(kube_api, namespace, "nightly", "Running", rack="rack-7",
                                  labels=labels, **spec)  # fmt: skip
    # A live task is not rerun.
    rc, _, err = await run(devenv, "rerun", "nightly", *ns)
    assert rc == 2 and "nightly' is Running: only a finished task" in err
    assert list(await versions(kube_api, namespace)) == ["nightly"]

    # Cancelled gracefully, with a reason, and Terminated: rerun it, twice.
    obj = await Kube(kube_api).patch(
        api.TASKS, "nightly",
        {"spec": {"cancel": True, "cancelMode": "Graceful", "cancelReason": "wrong window"}},
        namespace,
    )  # fmt: skip
    task = api.NicoTask.model_validate(obj)
    done = lifecycle.with_status(task, api.TaskStatus.TERMINATED, "Stopped gracefully",
                             now=dt.datetime.now(dt.UTC))  # fmt: skip
    done.cancel_mode = api.StopMode.GRACEFUL
    done.cancel_reason = "wrong window"
    done.cancel_requested_by = "alice"
    task = await write_status(kube_api, task, done)
    old_version = task.metadata.resource_version
    rc, out, err = await run(devenv, "rerun", "nightly", *ns)
    assert rc == 0, err
    assert (
        out == "nicotask.nico.dev/nightly-rerun-1 created (rerun of nightly, which was "
        "Terminated)\n"
    )
    new = await read_task(kube_api, namespace, "nightly-rerun-1")
    assert new["spec"] == {"siteId": task.spec.site_id, "rackRef": "rack-7",
                           "operation": "PowerOn", "cancel": False, **spec}  # fmt: skip
    assert new["metadata"]["labels"] == {"team": "infra", "nico.dev/rerun-of": "nightly"}
    annotations = new["metadata"]["annotations"]
    assert annotations == {"nico.dev/rerun-of": "nightly",
                           "nico.dev/rerun-of-uid": task.metadata.uid}  # fmt: skip
    assert "status" not in new or not new["status"].get("status")
    # The old task is not written to (Git owns it): the link is found by the label.
    assert (await read_task(kube_api, namespace, "nightly"))["metadata"][
        "resourceVersion"
    ] == old_version
    rc, out, err = await run(devenv, "rerun", "nightly", *ns)
    assert rc == 0 and "nicotask.nico.dev/nightly-rerun-2 created" in out, err
    # A rerun that has not run yet is live: not rerun.
    rc, _, err = await run(devenv, "rerun", "nightly-rerun-1", *ns)
    assert rc == 2 and "is Pending" in err

    rc, out, _ = await run(devenv, "report", "nightly", *ns)
    lines = out.splitlines()
    assert "Cancel:     Graceful, requested by alice" in lines
    assert "Reason:     wrong window" in lines
    assert "Rerun as:   nightly-rerun-1, nightly-rerun-2" in lines
    rc, out, _ = await run(devenv, "report", "nightly-rerun-2", *ns)
    assert "Rerun of:   nightly" in out.splitlines()
    assert "Rerun as:" not in out


async def answer_on_a_terminal(devenv: Any, answer: bytes, *args: str) -> tuple[int, str, str]:
    """Run the plugin with a terminal (a pty) as stdin, and type `answer` on it."""
    import pty

    leader, follower = pty.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            str(PLUGIN), *args,
            env={**os.environ, "KUBECONFIG": str(devenv.kubeconfig)},
            stdin=follower, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        os.write(leader, answer)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    finally:
        os.close(follower)
        os.close(leader)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_bulk_cancel_asks_on_a_terminal(
    devenv: Any, kube_api: Any, namespace: str, crds: None
) -> None:
    await asyncio.gather(*(task_with_status(kube_api, namespace, n, "Running")
                           for n in ("c1", "c2")))  # fmt: skip
    before = await versions(kube_api, namespace)
    rc, out, err = await answer_on_a_terminal(devenv, b"n\n", "cancel", "--all", "-n", namespace)
    assert rc == 1
    assert f'Cancel 2 of the 2 selected tasks in namespace "{namespace}" (mode Terminate)' in err
    assert "Proceed? [y/N]" in err and "Nothing cancelled." in err
    assert await versions(kube_api, namespace) == before
    rc, out, err = await answer_on_a_terminal(devenv, b"y\n", "cancel", "--all", "-n", namespace)
    assert rc == 0, err
    assert summary_line(out) == "2 tasks: 2 cancelled, 0 already cancelled, 0 already finished"
