"""The commands against the API server: cancel (one task or many), rerun, report, wait."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from nicotask.api import TASKS

from . import bulk, rerun
from .bulk import Outcome, Plan, Result, Selection, Summary
from .common import KIND, PluginError, task_status, wait_verdict
from .report import render_report

if TYPE_CHECKING:
    from nicotask.kube import Kube

# How often one task is read again and patched again after a 409 (it changed since read).
CONFLICT_ATTEMPTS = 5
TOO_MANY_REQUESTS_ATTEMPTS = 5


# --------------------------------------------------------------------------
# Kubernetes access
# --------------------------------------------------------------------------


def kubeconfig_path(explicit: str | None) -> str:
    return explicit or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")


def current_namespace(kubeconfig: str, context: str | None) -> str:
    from nicotask.kube import kubeconfig_namespace

    return kubeconfig_namespace(kubeconfig, context)


async def new_client(kubeconfig: str, context: str | None) -> Any:
    from nicotask.kube import new_api_client

    try:
        return await new_api_client(
            kubeconfig, component="kubectl-nico", context=context, persist_config=False
        )
    except Exception as exc:
        raise PluginError(f"cannot load kubeconfig {kubeconfig}: {exc}") from exc


def error_status(exc: Exception) -> tuple[int | None, str]:
    """The HTTP status and the API server's message of a failed call."""
    from nicotask.kube import ApiException, KubeError, api_message

    cause = exc.__cause__ if isinstance(exc.__cause__, ApiException) else exc
    if isinstance(cause, ApiException):
        return cause.status, api_message(cause)
    if isinstance(exc, KubeError):
        return exc.status, str(exc)
    return None, str(exc)


def api_error(exc: Exception, namespace: str, name: str) -> PluginError:
    from nicotask.kube import NotFound

    if isinstance(exc, NotFound):
        return PluginError(f'nicotask "{name}" not found in namespace "{namespace}"')
    status, message = error_status(exc)
    return PluginError(f"{status}: {message}" if status else message)


async def get_task(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    from nicotask.kube import ApiException, KubeError

    try:
        return await kube.get(TASKS, name, namespace)
    except (ApiException, KubeError) as exc:
        raise api_error(exc, namespace, name) from exc


async def whoami(api_client: Any) -> str | None:
    """The caller's username as the API server sees it (SelfSubjectReview), or None."""
    from kubernetes_asyncio import client

    from nicotask.kube import ApiException

    try:
        review = await client.AuthenticationV1Api(api_client).create_self_subject_review(
            client.V1SelfSubjectReview()
        )
    except ApiException:
        return None
    user = review.status.user_info if review.status else None
    return str(user.username) if user and user.username else None


# --------------------------------------------------------------------------
# cancel
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class CancelOptions:
    mode: str = bulk.TERMINATE
    reason: str | None = None
    dry_run: bool = False
    yes: bool = False
    concurrency: int = bulk.DEFAULT_CONCURRENCY


async def select_tasks(
    kube: Kube, sel: Selection, namespace: str
) -> tuple[list[dict[str, Any]], list[Result]]:
    """The selected tasks as listed (or read by name), and the names not found."""
    from nicotask.kube import ApiException, KubeError, NotFound

    if sel.by_name:
        sem = asyncio.Semaphore(bulk.DEFAULT_CONCURRENCY)

        async def one(name: str) -> dict[str, Any] | Result:
            async with sem:
                try:
                    return await kube.get(TASKS, name, namespace)
                except NotFound:
                    return Result(namespace, name, Outcome.NOT_FOUND, "no such task")
                except (ApiException, KubeError) as exc:
                    status, message = error_status(exc)
                    return Result(namespace, name, bulk.refusal_outcome(status, message), message)

        got = await asyncio.gather(*(one(n) for n in dict.fromkeys(sel.names)))
        return [t for t in got if isinstance(t, dict)], [r for r in got if isinstance(r, Result)]
    namespaces = [] if sel.all_namespaces else [namespace]
    tasks: list[dict[str, Any]] = []
    try:
        async for task in kube.iter_objects(
            TASKS, namespaces, field_selector=sel.field_selector, label_selector=sel.selector
        ):
            tasks.append(task)
    except (ApiException, KubeError) as exc:
        status, message = error_status(exc)
        raise PluginError(f"cannot list nicotasks: {status}: {message}") from exc
    return tasks, []


async def cancel_one(
    kube: Kube, task: dict[str, Any], opts: CancelOptions, requested_by: str | None
) -> Result:
    """Plan, patch (with the resourceVersion read); on 409 read again and plan again."""
    from nicotask.kube import ApiException, Conflict, KubeError, NotFound

    meta = task.get("metadata") or {}
    namespace, name = str(meta.get("namespace")), str(meta.get("name"))
    busy = 0
    for _ in range(CONFLICT_ATTEMPTS):
        p: Plan = bulk.plan(task, opts.mode, opts.reason, requested_by)
        if p.patch is None:
            return Result(namespace, name, p.outcome, p.note)
        try:
            await kube.patch(TASKS, name, p.patch, namespace)
            return Result(namespace, name, p.outcome, p.note)
        except NotFound:
            return Result(namespace, name, Outcome.NOT_FOUND, "deleted meanwhile")
        except Conflict:
            pass  # changed since read: read it again, decide again
        except (ApiException, KubeError) as exc:
            status, message = error_status(exc)
            if status == 429 and busy < TOO_MANY_REQUESTS_ATTEMPTS:
                busy += 1
                await asyncio.sleep(0.2 * busy)
                continue
            return Result(namespace, name, bulk.refusal_outcome(status, message), message)
        try:
            task = await kube.get(TASKS, name, namespace)
        except NotFound:
            return Result(namespace, name, Outcome.NOT_FOUND, "deleted meanwhile")
        except (ApiException, KubeError) as exc:
            status, message = error_status(exc)
            return Result(namespace, name, bulk.refusal_outcome(status, message), message)
    return Result(namespace, name, Outcome.FAILED, "it kept changing (409); try again")


def _ask(prompt: str, stdin: TextIO, stderr: TextIO) -> bool:
    stderr.write(prompt)
    stderr.flush()
    return bulk.confirmed(stdin.readline())


async def cmd_cancel(
    kube: Kube,
    namespace: str,
    sel: Selection,
    opts: CancelOptions,
    requested_by: str | None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    tasks, missing = await select_tasks(kube, sel, namespace)
    with_ns = sel.all_namespaces
    where = "in all namespaces" if with_ns else f'in namespace "{namespace}"'
    summary = Summary()
    if not tasks and not missing:
        print(f"No nicotasks matched {where}.", file=stdout)
        return 0
    plans = [bulk.plan(t, opts.mode, opts.reason, requested_by) for t in tasks]
    if opts.dry_run:
        for line in bulk.dry_run_table(tasks, plans, with_ns):
            print(line, file=stdout)
        for r in missing:
            print(r.line(with_ns), file=stderr)
            summary.add(r.outcome)
        for p in plans:
            summary.add(p.outcome)
        print(summary.text(dry_run=True), file=stdout)
        return summary.exit_code()
    to_patch = [str(t["metadata"]["name"]) for t, p in zip(tasks, plans, strict=True) if p.patch]
    if to_patch and not sel.by_name and not opts.yes:
        if not stdin.isatty():
            raise PluginError(
                f"this would cancel {len(to_patch)} task(s) {where}, and there is no terminal "
                "to confirm on: add --yes (or see them first with --dry-run)"
            )
        prompt = bulk.confirmation_prompt(to_patch, len(tasks), where, opts.mode, opts.reason)
        if not await asyncio.to_thread(_ask, prompt, stdin, stderr):
            print("Nothing cancelled.", file=stderr)
            return 1
    results = await run_cancels(kube, tasks, opts, requested_by, stderr, with_ns)
    results = missing + results
    many = len(results) > bulk.PER_TASK_LINES
    for r in results:
        summary.add(r.outcome)
        if not many:
            print(r.line(with_ns), file=stdout if r.outcome.ok else stderr)
    if len(results) > 1:
        print(summary.text(), file=stdout)
    return summary.exit_code()


async def run_cancels(
    kube: Kube,
    tasks: list[dict[str, Any]],
    opts: CancelOptions,
    requested_by: str | None,
    stderr: TextIO,
    with_ns: bool,
) -> list[Result]:
    """Cancel every task, `opts.concurrency` patches in flight; with many tasks, a progress
    line on stderr and every problem as it happens. Results in the order of `tasks`."""
    results: list[Result | None] = [None] * len(tasks)
    many = len(tasks) > bulk.PER_TASK_LINES
    tty = stderr.isatty()
    progress = bulk.Progress(len(tasks), tty=tty)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(tasks)):
        queue.put_nowait(i)

    def show(text: str | None, problem: Result | None = None) -> None:
        if problem is not None:
            stderr.write(("\r\033[K" if tty else "") + problem.line(with_ns) + "\n")
        if text:
            stderr.write(text)
        stderr.flush()

    async def worker() -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            result = await cancel_one(kube, tasks[i], opts, requested_by)
            results[i] = result
            if many:
                show(progress.step(), None if result.outcome.ok else result)

    await asyncio.gather(*(worker() for _ in range(max(1, min(opts.concurrency, len(tasks))))))
    if many and tty:
        stderr.write("\n")
    return [r for r in results if r is not None]


# --------------------------------------------------------------------------
# rerun, report, wait
# --------------------------------------------------------------------------


async def cmd_rerun(kube: Kube, namespace: str, name: str, attempts: int = 1000) -> int:
    from nicotask.kube import ApiException, Conflict, KubeError

    task = await get_task(kube, namespace, name)
    rerun.check_rerunnable(task)
    for n in range(1, attempts + 1):
        new = rerun.rerun_name(name, n)
        try:
            await kube.create(TASKS, rerun.rerun_manifest(task, new), namespace)
        except Conflict:
            continue  # the name is taken: the next number
        except (ApiException, KubeError) as exc:
            raise api_error(exc, namespace, new) from exc
        print(f"{KIND}/{new} created (rerun of {name}, which was {task_status(task)})")
        return 0
    raise PluginError(f"no free name for a rerun of {name} after {attempts} tries")


async def find_reruns(kube: Kube, namespace: str, task: dict[str, Any]) -> list[str]:
    """The reruns of `task` (by their label); none when the caller may not list."""
    from nicotask.kube import ApiException, KubeError

    name = str((task.get("metadata") or {}).get("name", ""))
    if len(name) > rerun.LABEL_VALUE_MAX:
        return []
    try:
        found = await kube.list_objects(TASKS, namespace, label_selector=f"{rerun.RERUN_OF}={name}")
    except (ApiException, KubeError):
        return []
    return rerun.reruns_of(task, found)


async def cmd_report(kube: Kube, namespace: str, name: str, output: str) -> int:
    task = await get_task(kube, namespace, name)
    if output == "json":
        print(json.dumps((task.get("status") or {}).get("report") or {}, indent=2))
    else:
        sys.stdout.write(render_report(task, reruns=await find_reruns(kube, namespace, task)))
    return 0


async def cmd_wait(
    kube: Kube,
    namespace: str,
    name: str,
    wanted: str,
    timeout: float,
    interval: float = 0.5,
    clock: Callable[[], float] | None = None,
) -> int:
    loop = asyncio.get_running_loop()
    now = clock or loop.time
    deadline = now() + timeout
    while True:
        task = await get_task(kube, namespace, name)
        verdict = wait_verdict(task, wanted)
        current = (task.get("status") or {}).get("status") or "(none)"
        if verdict is True:
            print(f"{KIND}/{name} {current}")
            return 0
        if verdict is False:
            print(f"{KIND}/{name} finished as {current}, not {wanted}", file=sys.stderr)
            return 1
        if now() >= deadline:
            print(
                f"error: timed out waiting for {KIND}/{name} to be {wanted} (status: {current})",
                file=sys.stderr,
            )
            return 1
        await asyncio.sleep(min(interval, max(0.0, deadline - now())))
