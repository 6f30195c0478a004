"""Flux reconciles NicoTasks from a Git repository: commits run, cancel and prune tasks.

A real Flux (source-controller and kustomize-controller, built from their Go modules:
nicotask_dev.devenv.flux) applies a folder of a local Git repository, served over
HTTP by `git http-backend`, with a Kustomization with `wait: true`, the NicoTask CEL
health check (docs/gitops.md) and `prune: true`.
After each push the test does what a webhook receiver does (the requestedAt
annotation on the GitRepository and the Kustomization).
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
from flux_support import Flux, applied, attempted, condition, inventory, ready
from temporalio.client import Client, WorkflowExecutionStatus

from nicotask.kube import NotFound
from nicotask_dev.devenv import flux
from nicotask_dev.devenv.gitrepo import GitRepo
from nicotask_dev.devenv.testing import DevEnvHandle

pytestmark = pytest.mark.gitops

FOLDER = "site"
CANCEL_REFUSED = "spec.cancel cannot be set back to false"
# Commit to Terminated with the webhook stand-in right after the push: source-controller's
# fetch, kustomize-controller's apply, then the operator's cancel path.
CANCEL_BOUND_SECONDS = 30.0


@pytest.fixture(scope="module")
def flux_git(
    nicotask_system: DevEnvHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, str]]:
    """The folder the Git server serves, and its base URL, with Flux running."""
    root = tmp_path_factory.mktemp("flux-git")
    base_url = flux.start(nicotask_system.env, root)
    yield root, base_url
    flux.stop(nicotask_system.env)


@pytest_asyncio.fixture(loop_scope="session")
async def fx(flux_git: tuple[Path, str], kube_api: Any, namespace: str) -> AsyncIterator[Flux]:
    objects = Flux(kube_api, f"tasks-{namespace}")
    yield objects
    try:
        await objects.delete()
    except Exception as exc:  # not created: nothing to clean
        print(f"[flux] cleanup of {objects.name}: {exc}")
    print("\n".join(["[flux] timeline:", *objects.timeline]))


def _repo(root: Path, namespace: str, env: DevEnvHandle, rules: list[dict[str, Any]]) -> GitRepo:
    repo = GitRepo(root / namespace)
    repo.write(f"{FOLDER}/rack.yaml", [rack("rack-1", env.redfish_url, env.redfish_systems[:1])])
    repo.write(f"{FOLDER}/rules.yaml", rules)
    return repo


async def _commit(fx: Flux, repo: GitRepo, message: str) -> str:
    revision = repo.commit(message)
    fx.note(f"commit {revision[:8]}: {message}")
    await fx.request_reconcile()
    return revision


def _watch(cluster: Cluster, name: str) -> Any:
    """The task's status and Ready condition, for the timeline (None when absent)."""

    async def line() -> str:
        try:
            obj = await cluster.get_task(name)
        except NotFound:
            return f"{name} absent"
        c = condition(obj, "Ready")
        gen = (
            obj["metadata"].get("generation"),
            (obj.get("status") or {}).get("observedGeneration"),
        )
        return f"{name} {status_of(obj)} Ready={c.get('status')} generation/observed={gen}"

    return line


async def test_commits_run_cancel_refuse_and_prune_tasks(
    fx: Flux,
    flux_git: tuple[Path, str],
    cluster: Cluster,
    nicotask_system: DevEnvHandle,
    namespace: str,
    temporal_client: Client,
) -> None:
    root, base_url = flux_git
    short, long = new_rule_id(), new_rule_id()
    repo = _repo(
        root, namespace, nicotask_system, [sleep_rule(short, [15]), sleep_rule(long, [600])]
    )

    # 1. A commit adds a rack, its rules and a task: Flux applies it, the task runs
    # (the Kustomization is not Ready while its health check waits) and finishes (Ready).
    repo.write(f"{FOLDER}/first.yaml", [task("first", "rack-1", short)])
    rev = repo.commit("rack-1, two rules and task first")
    fx.note(f"commit {rev[:8]}: rack-1, two rules and task first")
    await fx.create(
        flux.git_repository(fx.name, f"{base_url}/{namespace}/site.git"),
        flux.kustomization(fx.name, fx.name, FOLDER, namespace),
    )
    first = _watch(cluster, "first")
    await fx.wait(attempted(rev), "the first apply", 60, first)
    await cluster.wait_status("first", "Running", timeout=60)
    progressing = await fx.kustomization()
    fx.note(f"while task first runs: {condition(progressing, 'Ready')}")
    assert condition(progressing, "Ready").get("status") != "True"
    done = await fx.wait(lambda k: ready("True")(k) and applied(rev)(k), "Ready", 90, first)
    assert status_of(await cluster.get_task("first")) == "Succeeded"
    assert f"{namespace}_first_nico.dev_NicoTask" in inventory(done)
    first_uid = (await cluster.get_task("first"))["metadata"]["uid"]

    # 2. A commit adds a long task; it runs, and the Kustomization waits for it.
    repo.write(f"{FOLDER}/long.yaml", [task("long", "rack-1", long)])
    rev = await _commit(fx, repo, "task long")
    long_watch = _watch(cluster, "long")
    await fx.wait(attempted(rev), "the apply of task long", task=long_watch)
    long_uid = (await cluster.wait_status("long", "Running"))["metadata"]["uid"]
    waiting = await fx.wait(lambda k: not ready("True")(k), "not Ready", 10, long_watch)
    fx.note(f"while task long runs: {condition(waiting, 'Ready')}")

    # 3. The cancel commit: Terminated, then the Kustomization Ready at that revision.
    repo.write(f"{FOLDER}/long.yaml", [task("long", "rack-1", long, cancel=True)])
    committed = time.monotonic()
    rev = await _commit(fx, repo, "cancel task long")
    terminated = await cluster.wait_status("long", "Terminated", timeout=CANCEL_BOUND_SECONDS)
    to_terminated = time.monotonic() - committed
    fx.note(f"task long Terminated {to_terminated:.1f}s after the cancel commit")
    ok = await fx.wait(lambda k: ready("True")(k) and applied(rev)(k), "Ready", 60, long_watch)
    fx.note(f"Kustomization Ready {time.monotonic() - committed:.1f}s after the cancel commit")
    assert terminated["metadata"]["uid"] == long_uid
    assert terminated["status"]["message"].startswith("Cancelled by user")
    assert await workflow_status(temporal_client, long_uid) == WorkflowExecutionStatus.TERMINATED

    # 4. A commit sets it back to false: the API server refuses the apply, the
    # Kustomization reports it (Ready=False) and nothing changes.
    repo.write(f"{FOLDER}/long.yaml", [task("long", "rack-1", long, cancel=False)])
    rev = await _commit(fx, repo, "un-cancel task long (refused)")
    refused = await fx.wait(
        lambda k: ready("False")(k) and CANCEL_REFUSED in condition(k, "Ready").get("message", ""),
        "Ready=False with the API server's message",
        task=long_watch,
    )
    assert attempted(rev)(refused) and not applied(rev)(refused)
    assert refused["status"]["lastAppliedRevision"] == ok["status"]["lastAppliedRevision"]
    after = await cluster.get_task("long")
    assert after["spec"]["cancel"] is True
    assert after["metadata"]["generation"] == terminated["metadata"]["generation"]
    assert status_of(after) == "Terminated"

    # 5. Prune: Git agrees again and gets a running task; then that task and the finished
    # one are removed from Git. The running one's workflow is terminated.
    repo.write(f"{FOLDER}/long.yaml", [task("long", "rack-1", long, cancel=True)])
    repo.write(f"{FOLDER}/doomed.yaml", [task("doomed", "rack-1", long)])
    rev = await _commit(fx, repo, "task long cancelled again; task doomed")
    doomed = _watch(cluster, "doomed")
    await fx.wait(attempted(rev), "the apply of task doomed", task=doomed)
    doomed_uid = (await cluster.wait_status("doomed", "Running"))["metadata"]["uid"]
    assert (await cluster.get_task("first"))["metadata"]["uid"] == first_uid  # never re-created
    repo.write(f"{FOLDER}/doomed.yaml", None)
    repo.write(f"{FOLDER}/first.yaml", None)
    rev = await _commit(fx, repo, "remove tasks doomed and first")
    pruned = await fx.wait(
        lambda k: attempted(rev)(k) and f"{namespace}_doomed_nico.dev_NicoTask" not in inventory(k),
        "the prune",
        task=doomed,
    )
    await cluster.wait_gone("doomed")
    await cluster.wait_gone("first")
    assert f"{namespace}_first_nico.dev_NicoTask" not in inventory(pruned)
    deadline = time.monotonic() + 30
    while await workflow_status(temporal_client, doomed_uid) != WorkflowExecutionStatus.TERMINATED:
        assert time.monotonic() < deadline, "the pruned task's workflow was not terminated"
        await asyncio.sleep(0.2)
    assert status_of(await cluster.get_task("long")) == "Terminated"
    await fx.wait(lambda k: ready("True")(k) and applied(rev)(k), "Ready after the prune", 60)
