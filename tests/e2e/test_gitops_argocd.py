"""Argo CD reconciles NicoTasks from a Git repository: commits run, cancel and prune tasks.

A real Argo CD (application controller, repo server and redis, built from its Go
module: nicotask_dev.devenv.argocd) syncs a folder of a local Git repository
(file:// URL) with automated sync, prune and self-heal. Its health verdicts come
from the chart's Lua script, installed in argocd-cm under the key docs/gitops.md
gives. After each commit the test does what a Git webhook does (a hard refresh).
Marked `gitops`: `make gitops-e2e`, not `make integration`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from e2e_support import (
    Cluster,
    new_rule_id,
    rack,
    sleep_rule,
    status_of,
    task,
    workflow_status,
)
from gitops_support import Application, app_health, resource, synced_at, task_health
from temporalio.client import Client, WorkflowExecutionStatus

from nicotask_dev.devenv import argocd
from nicotask_dev.devenv.gitrepo import GitRepo
from nicotask_dev.devenv.testing import DevEnvHandle

pytestmark = pytest.mark.gitops

FOLDER = "site"
CANCEL_REFUSED = "spec.cancel cannot be set back to false"
# Argo CD applies the objects of one sync wave concurrently: without an earlier wave for
# racks and rules, the operator can see a task before its rack and fail it
# ("NicoRack rack-1 not found"). docs/gitops.md tells users to do the same.
EARLIER_WAVE = {"argocd.argoproj.io/sync-wave": "-1"}
# Commit to Terminated with a refresh right after the push: Argo CD's sync (a
# server-side apply) plus the operator's cancel path (a few seconds in the e2e settings).
CANCEL_BOUND_SECONDS = 30.0


@pytest.fixture(scope="module")
def argo_cd(nicotask_system: DevEnvHandle) -> Iterator[DevEnvHandle]:
    argocd.start(nicotask_system.env)
    yield nicotask_system
    argocd.stop(nicotask_system.env)


@pytest_asyncio.fixture(loop_scope="session")
async def app(argo_cd: DevEnvHandle, kube_api: Any, namespace: str) -> AsyncIterator[Application]:
    application = Application(kube_api, f"tasks-{namespace}")
    yield application
    # No resources-finalizer on the Application: deleting it leaves the tasks alone.
    try:
        await application.delete()
    except Exception as exc:  # not created: nothing to clean
        print(f"[argocd] cleanup of {application.name}: {exc}")
    print("\n".join(["[argocd] timeline:", *application.timeline]))


def _application(app: Application, repo: GitRepo, namespace: str) -> dict[str, Any]:
    """The documented Application, pruning with background propagation: Argo CD's default
    (foreground) leaves a `foregroundDeletion` finalizer for the garbage collector of
    kube-controller-manager, which this local control plane does not run, so a pruned
    task would stay "Pending deletion" here (in a cluster the collector removes it)."""
    body = argocd.application(app.name, repo.url, FOLDER, namespace)
    body["spec"]["syncPolicy"]["syncOptions"].append("PrunePropagationPolicy=background")
    return body


def _repo(tmp_path: Path, env: DevEnvHandle, rules: list[dict[str, Any]]) -> GitRepo:
    repo = GitRepo(tmp_path / "git")
    the_rack = rack("rack-1", env.redfish_url, env.redfish_systems[:1])
    for obj in [the_rack, *rules]:
        obj["metadata"]["annotations"] = dict(EARLIER_WAVE)
    repo.write(f"{FOLDER}/rack.yaml", [the_rack])
    repo.write(f"{FOLDER}/rules.yaml", rules)
    return repo


async def _commit(app: Application, repo: GitRepo, message: str) -> str:
    revision = repo.commit(message)
    app.note(f"commit {revision[:8]}: {message}")
    await app.hard_refresh()
    return revision


def _conditions(app_obj: dict[str, Any], type_: str) -> str:
    conds = (app_obj.get("status") or {}).get("conditions") or []
    return " | ".join(c.get("message", "") for c in conds if c.get("type") == type_)


async def test_commits_run_cancel_refuse_and_prune_tasks(
    app: Application,
    cluster: Cluster,
    nicotask_system: DevEnvHandle,
    namespace: str,
    temporal_client: Client,
    tmp_path: Path,
) -> None:
    short, long = new_rule_id(), new_rule_id()
    repo = _repo(tmp_path, nicotask_system, [sleep_rule(short, [15]), sleep_rule(long, [600])])

    # 1. A commit adds a rack, its rules and a task: Argo CD syncs it, the task runs
    # (Progressing) and finishes (Healthy).
    repo.write(f"{FOLDER}/first.yaml", [task("first", "rack-1", short)])
    rev = repo.commit("rack-1, two rules and task first")
    app.note(f"commit {rev[:8]}: rack-1, two rules and task first")
    await app.create(_application(app, repo, namespace))
    running = await app.wait(
        lambda a: (
            synced_at(rev)(a)
            and task_health("first", "Progressing")(a)
            and app_health("Progressing")(a)
        ),
        "sync with task first Progressing",
        task="first",
    )
    first_health = resource(running, "NicoTask", "first")["health"]
    assert first_health["message"].startswith(("Running", "Pending", "Waiting"))
    first_uid = (await cluster.get_task("first"))["metadata"]["uid"]
    done = await app.wait(
        lambda a: task_health("first", "Healthy")(a) and app_health("Healthy")(a),
        "task first Healthy",
        task="first",
        timeout=120,
    )
    assert resource(done, "NicoTask", "first")["health"]["message"] == "Succeeded"
    assert status_of(await cluster.get_task("first")) == "Succeeded"

    # 2. A commit adds a long task; it runs.
    repo.write(f"{FOLDER}/long.yaml", [task("long", "rack-1", long)])
    rev = await _commit(app, repo, "task long")
    await app.wait(
        lambda a: synced_at(rev)(a) and task_health("long", "Progressing")(a),
        "sync with task long",
        task="long",
    )
    long_task = await cluster.wait_status("long", "Running")
    long_uid = long_task["metadata"]["uid"]

    # 3. The cancel commit: Terminated, and Argo CD shows the task Healthy with the reason.
    repo.write(f"{FOLDER}/long.yaml", [task("long", "rack-1", long, cancel=True)])
    committed = time.monotonic()
    rev = await _commit(app, repo, "cancel task long")
    terminated = await cluster.wait_status("long", "Terminated", timeout=CANCEL_BOUND_SECONDS)
    to_terminated = time.monotonic() - committed
    app.note(f"task long Terminated {to_terminated:.1f}s after the cancel commit")
    healthy = await app.wait(
        lambda a: (
            synced_at(rev)(a) and task_health("long", "Healthy")(a) and app_health("Healthy")(a)
        ),
        "task long Healthy after the cancel",
        task="long",
    )
    app.note(f"Argo CD shows it {time.monotonic() - committed:.1f}s after the cancel commit")
    assert terminated["metadata"]["uid"] == long_uid
    assert terminated["status"]["message"].startswith("Cancelled by user")
    long_health = resource(healthy, "NicoTask", "long")["health"]
    assert long_health["message"] == f"Terminated: {terminated['status']['message']}"
    assert await workflow_status(temporal_client, long_uid) == WorkflowExecutionStatus.TERMINATED

    # 4. A commit sets it back to false. With server-side apply Argo CD diffs by a
    # server-side dry run, so the API server refuses it already there: no sync is tried,
    # the comparison fails with the API server's message, nothing changes.
    repo.write(f"{FOLDER}/long.yaml", [task("long", "rack-1", long, cancel=False)])
    rev = await _commit(app, repo, "un-cancel task long (refused)")
    refused = await app.wait(
        lambda a: CANCEL_REFUSED in _conditions(a, "ComparisonError"),
        "a ComparisonError with the API server's message",
        task="long",
    )
    assert refused["status"]["sync"]["status"] == "Unknown"
    assert "Forbidden" in _conditions(refused, "ComparisonError")
    assert refused["status"]["operationState"]["syncResult"]["revision"] != rev
    after = await cluster.get_task("long")
    assert after["spec"]["cancel"] is True
    assert after["metadata"]["generation"] == terminated["metadata"]["generation"]
    assert status_of(after) == "Terminated"

    # 5. Prune: Git agrees again and gets a running task; then that task and the finished
    # one are removed from Git. The running one's workflow is terminated.
    repo.write(f"{FOLDER}/long.yaml", [task("long", "rack-1", long, cancel=True)])
    repo.write(f"{FOLDER}/doomed.yaml", [task("doomed", "rack-1", long)])
    rev = await _commit(app, repo, "task long cancelled again; task doomed")
    await app.wait(synced_at(rev), "sync with task doomed", task="doomed")
    doomed_uid = (await cluster.wait_status("doomed", "Running"))["metadata"]["uid"]
    assert (await cluster.get_task("first"))["metadata"]["uid"] == first_uid  # never re-created
    repo.write(f"{FOLDER}/doomed.yaml", None)
    repo.write(f"{FOLDER}/first.yaml", None)
    rev = await _commit(app, repo, "remove tasks doomed and first")
    await app.wait(
        lambda a: synced_at(rev)(a) and not resource(a, "NicoTask", "doomed"),
        "the prune",
        task="doomed",
    )
    await cluster.wait_gone("doomed")
    await cluster.wait_gone("first")
    deadline = time.monotonic() + 30
    while await workflow_status(temporal_client, doomed_uid) != WorkflowExecutionStatus.TERMINATED:
        assert time.monotonic() < deadline, "the pruned task's workflow was not terminated"
        await asyncio.sleep(0.2)
    assert status_of(await cluster.get_task("long")) == "Terminated"


async def test_task_deleted_by_its_ttl_is_recreated_by_self_heal(
    app: Application,
    cluster: Cluster,
    nicotask_system: DevEnvHandle,
    namespace: str,
    tmp_path: Path,
) -> None:
    """What docs/gitops.md warns about: a TTL on a task that stays in Git runs it again."""
    short = new_rule_id()
    repo = _repo(tmp_path, nicotask_system, [sleep_rule(short, [1])])
    repo.write(f"{FOLDER}/ttl.yaml", [task("ttl", "rack-1", short, ttlSecondsAfterFinished=3)])
    rev = repo.commit("task ttl with ttlSecondsAfterFinished: 3")
    app.note(f"commit {rev[:8]}: task ttl with ttlSecondsAfterFinished: 3")
    await app.create(_application(app, repo, namespace))
    await app.wait(synced_at(rev), "the first sync", task="ttl")
    first = await cluster.wait_status("ttl", "Succeeded")
    again = await cluster.wait_task(
        "ttl",
        lambda t: t["metadata"]["uid"] != first["metadata"]["uid"],
        timeout=60,
        what="a new task of the same name",
    )
    app.note(f"task ttl re-created as {again['metadata']['uid']} (a second run)")
    # Stop the loop: without the Application, the TTL deletes the last run for good.
    await app.delete()
    await cluster.wait_status("ttl", "Succeeded")
