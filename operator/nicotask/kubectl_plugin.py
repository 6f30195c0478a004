"""`kubectl nico`: cancel, report and wait for NicoTasks.

Installed as the console script `kubectl-nico`, so kubectl finds it on PATH:

    kubectl nico cancel TASK [-n NS]      (records the caller in nico.dev/cancel-requested-by)
    kubectl nico report TASK [-n NS] [-o table|json]
    kubectl nico wait TASK [-n NS] [--for=finished|Succeeded|Failed|Terminated|Running|...]
                      [--timeout=60s]

The kubeconfig is --kubeconfig, else $KUBECONFIG, else ~/.kube/config; the
namespace is -n, else the current context's namespace, else `default`.

Exit codes: 0 done; 1 timed out, or (wait) the task finished in another
status than the one awaited; 2 usage error, task not found or API error.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import sys
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, NoReturn

import click

from nicotask.api import CANCEL_REQUESTED_BY, TASKS
from nicotask.api import FINISHED_STATUS_VALUES as FINISHED

if TYPE_CHECKING:
    from nicotask.kube import Kube

STATUSES = ("Pending", "Waiting", "Running", *FINISHED)


class PluginError(Exception):
    """A clear message for the user; exit code 2."""


# --------------------------------------------------------------------------
# Report rendering (pure)
# --------------------------------------------------------------------------


def _parse_time(value: Any) -> dt.datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _clock(value: Any) -> str:
    parsed = _parse_time(value)
    return parsed.astimezone(dt.UTC).strftime("%H:%M:%S") if parsed else "-"


def _stamp(value: Any) -> str:
    parsed = _parse_time(value)
    return parsed.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if parsed else "-"


def format_duration(seconds: float) -> str:
    """4s, 2m05s, 1h02m03s, 2d3h."""
    total = max(0, round(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _duration(started: Any, finished: Any, now: dt.datetime) -> str:
    start = _parse_time(started)
    if start is None:
        return "-"
    end = _parse_time(finished)
    if end is None:
        return format_duration((now - start).total_seconds()) + "+"  # still going
    return format_duration((end - start).total_seconds())


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [headers, *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return lines


def _one_line(text: Any) -> str:
    return " ".join(str(text).split()) if text else ""


def render_report(task: dict[str, Any], now: dt.datetime | None = None) -> str:
    """A readable report of one NicoTask (the object as the API server returns it).

    A header (task, status, message, rule, times, cancel, conditions worth knowing)
    and a table with one row per stage followed by one row per step of the stage:
    stage number, component type, status, total components, started, finished,
    duration, error. Times in the table are UTC clock times; a duration ending in
    `+` is still growing.
    """
    now = now or dt.datetime.now(dt.UTC)
    meta = task.get("metadata") or {}
    spec = task.get("spec") or {}
    status = task.get("status") or {}
    name = f"{meta.get('namespace', '')}/{meta.get('name', '')}".lstrip("/")
    state = status.get("status") or "(no status yet)"
    lines = [
        f"Task:       {name}  (id {status.get('id') or meta.get('uid') or '-'})",
        f"Operation:  {spec.get('operation', '-')} on rack {spec.get('rackRef', '-')}"
        f"  (site {spec.get('siteId', '-')})",
        f"Status:     {state}",
        f"Message:    {_one_line(status.get('message')) or '-'}",
        f"Rule:       {status.get('ruleId') or spec.get('ruleId') or '-'}",
        f"Created:    {_stamp(status.get('created') or meta.get('creationTimestamp'))}",
        f"Started:    {_stamp(status.get('started'))}",
        f"Finished:   {_stamp(status.get('finished'))}",
    ]
    if status.get("started"):
        lines.append(
            f"Duration:   {_duration(status.get('started'), status.get('finished'), now)}"
        )
    if spec.get("cancel"):
        who = status.get("cancelRequestedBy")
        at = status.get("cancelRequestedAt")
        detail = (f" at {_stamp(at)}" if at else "") + (f" by {who}" if who else "")
        lines.append(f"Cancel:     requested{detail}")
    for cond in status.get("conditions") or []:
        if cond.get("type") in ("CancelPending", "CancelIgnored") and cond.get("status") == "True":
            label = cond["type"] + ":"
            lines.append(f"{label:<11} {_one_line(cond.get('message')) or '-'}")
    report = status.get("report") or {}
    if report.get("error"):
        lines.append(f"Error:      {_one_line(report['error'])}")
    stages = report.get("stages") or []
    lines.append("")
    if not stages:
        lines.append("No report yet.")
        return "\n".join(lines) + "\n"
    headers = ["STAGE", "COMPONENT", "STATUS", "TOTAL", "STARTED", "FINISHED", "DURATION", "ERROR"]
    rows: list[list[str]] = []
    for stage in stages:
        steps = stage.get("steps") or []
        totals = [s.get("totalComponents") for s in steps if s.get("totalComponents") is not None]
        rows.append(
            [
                str(stage.get("number", "?")),
                f"({len(steps)} step{'s' if len(steps) != 1 else ''})",
                str(stage.get("status", "-")),
                str(sum(totals)) if totals else "-",
                _clock(stage.get("startedAt")),
                _clock(stage.get("finishedAt")),
                _duration(stage.get("startedAt"), stage.get("finishedAt"), now),
                _one_line(stage.get("error")),
            ]
        )
        for step in steps:
            total = step.get("totalComponents")
            rows.append(
                [
                    "",
                    f"  {step.get('componentType', '?')}",
                    str(step.get("status", "-")),
                    "-" if total is None else str(total),
                    _clock(step.get("startedAt")),
                    _clock(step.get("finishedAt")),
                    _duration(step.get("startedAt"), step.get("finishedAt"), now),
                    _one_line(step.get("error")),
                ]
            )
    lines.extend(_table(headers, rows))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Wait decisions (pure)
# --------------------------------------------------------------------------


def normalize_for(value: str) -> str:
    """`finished` or a status name, case-insensitive (also `status=Terminated`)."""
    text = value.strip()
    if "=" in text:
        key, _, text = text.partition("=")
        if key.strip().lower() not in ("status", "jsonpath={.status.status}"):
            raise PluginError(f"--for: unknown condition {value!r}")
    lowered = text.strip().lower()
    if lowered in ("finished", "done", "terminal"):
        return "finished"
    for status in STATUSES:
        if status.lower() == lowered:
            return status
    raise PluginError(
        f"--for: expected finished or one of {', '.join(STATUSES)}; got {value!r}"
    )


def wait_verdict(task: dict[str, Any], wanted: str) -> bool | None:
    """True: reached; False: can never be reached (finished otherwise); None: keep waiting."""
    current = (task.get("status") or {}).get("status")
    if wanted == "finished":
        return True if current in FINISHED else None
    if current == wanted:
        return True
    if current in FINISHED:
        return False
    return None


def parse_timeout(value: str) -> float:
    """`60s`, `5m`, `1h30m`, `90` (seconds), `0` for no wait."""
    text = value.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise PluginError(f"--timeout: cannot parse {value!r} (e.g. 30s, 5m, 1h)")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


# --------------------------------------------------------------------------
# Kubernetes access
# --------------------------------------------------------------------------


def _kubeconfig_path(explicit: str | None) -> str:
    return explicit or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")


def current_namespace(kubeconfig: str, context: str | None) -> str:
    from nicotask.kube import kubeconfig_namespace

    return kubeconfig_namespace(kubeconfig, context)


async def _client(kubeconfig: str, context: str | None) -> Any:
    from nicotask.kube import new_api_client

    try:
        return await new_api_client(
            kubeconfig, component="kubectl-nico", context=context, persist_config=False
        )
    except Exception as exc:
        raise PluginError(f"cannot load kubeconfig {kubeconfig}: {exc}") from exc


def _api_error(exc: Exception, namespace: str, name: str) -> PluginError:
    from nicotask.kube import ApiException, NotFound, api_message

    if isinstance(exc, NotFound):
        return PluginError(f'nicotask "{name}" not found in namespace "{namespace}"')
    cause = exc.__cause__ if isinstance(exc.__cause__, ApiException) else exc
    if isinstance(cause, ApiException):
        return PluginError(f"{cause.status} {cause.reason or ''}: {api_message(cause)}".strip())
    return PluginError(str(exc))


async def _get(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    from nicotask.kube import ApiException, KubeError

    try:
        return await kube.get(TASKS, name, namespace)
    except (ApiException, KubeError) as exc:
        raise _api_error(exc, namespace, name) from exc


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


def cancel_body(requested_by: str | None) -> dict[str, Any]:
    """spec.cancel, plus who asked: the caller itself (the admission policy allows no other)."""
    body: dict[str, Any] = {"spec": {"cancel": True}}
    if requested_by:
        body["metadata"] = {"annotations": {CANCEL_REQUESTED_BY: requested_by}}
    return body


async def cmd_cancel(
    kube: Kube, namespace: str, name: str, requested_by: str | None = None
) -> int:
    from nicotask.kube import ApiException, KubeError

    task = await _get(kube, namespace, name)
    if (task.get("spec") or {}).get("cancel"):
        print(f"nicotask.nico.dev/{name} cancel already requested "
              f"(status: {(task.get('status') or {}).get('status', '-')})")
        return 0
    try:
        await kube.patch(TASKS, name, cancel_body(requested_by), namespace)
    except (ApiException, KubeError) as exc:
        raise _api_error(exc, namespace, name) from exc
    print(f"nicotask.nico.dev/{name} cancel requested")
    return 0


async def cmd_report(kube: Kube, namespace: str, name: str, output: str) -> int:
    task = await _get(kube, namespace, name)
    if output == "json":
        print(json.dumps((task.get("status") or {}).get("report") or {}, indent=2))
    else:
        sys.stdout.write(render_report(task))
    return 0


async def cmd_wait(
    kube: Kube, namespace: str, name: str, wanted: str, timeout: float, interval: float = 0.5
) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        task = await _get(kube, namespace, name)
        verdict = wait_verdict(task, wanted)
        current = (task.get("status") or {}).get("status") or "(none)"
        if verdict is True:
            print(f"nicotask.nico.dev/{name} {current}")
            return 0
        if verdict is False:
            print(
                f"nicotask.nico.dev/{name} finished as {current}, not {wanted}", file=sys.stderr
            )
            return 1
        if loop.time() >= deadline:
            print(
                f"error: timed out waiting for nicotask.nico.dev/{name} to be {wanted} "
                f"(status: {current})",
                file=sys.stderr,
            )
            return 1
        await asyncio.sleep(min(interval, max(0.0, deadline - loop.time())))


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Invocation:
    """One parsed command line: what to do, to which task, where."""

    command: str  # cancel | report | wait
    task: str
    namespace: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    output: str = "table"
    for_: str = "finished"
    timeout: str = "60s"


def _common_options(f: Any) -> Any:
    """-n/--kubeconfig/--context, accepted before and after the subcommand."""
    for option in reversed(
        [
            click.option("-n", "--namespace", default=None, help="namespace of the task"),
            click.option("--kubeconfig", default=None, help="path to the kubeconfig file"),
            click.option("--context", default=None, help="kubeconfig context to use"),
        ]
    ):
        f = option(f)
    return f


def _invoke(command: str, task: str, **kw: Any) -> NoReturn:
    # A flag given after the subcommand wins over the same flag given before it.
    before: dict[str, Any] = click.get_current_context().meta.get("kubectl_nico.flags", {})
    flags = {k: kw.pop(k) or before.get(k) for k in ("namespace", "kubeconfig", "context")}
    inv = Invocation(
        command,
        task,
        namespace=flags["namespace"],
        kubeconfig=flags["kubeconfig"],
        context=flags["context"],
    )
    sys.exit(execute(replace(inv, **kw)))


@click.group(
    name="kubectl nico",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@_common_options
def plugin(namespace: str | None, kubeconfig: str | None, context: str | None) -> None:
    """Cancel, report and wait for NicoTasks (nico.dev/v1alpha1)."""
    flags = {"namespace": namespace, "kubeconfig": kubeconfig, "context": context}
    click.get_current_context().meta["kubectl_nico.flags"] = flags


@plugin.command()
@click.argument("task")
@_common_options
def cancel(task: str, **flags: Any) -> None:
    """Set spec.cancel: true."""
    _invoke("cancel", task, **flags)


@plugin.command()
@click.argument("task")
@_common_options
@click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def report(task: str, output: str, **flags: Any) -> None:
    """Print the stages and steps."""
    _invoke("report", task, output=output, **flags)


@plugin.command()
@click.argument("task")
@_common_options
@click.option(
    "--for",
    "for_",
    default="finished",
    help="finished (default) or a status: Pending, Waiting, Running, Succeeded, "
    "Failed, Terminated",
)
@click.option("--timeout", default="60s", help="e.g. 30s, 5m (default 60s)")
def wait(task: str, for_: str, timeout: str, **flags: Any) -> None:
    """Wait for a status."""
    _invoke("wait", task, for_=for_, timeout=timeout, **flags)


async def _run(inv: Invocation) -> int:
    from nicotask.kube import Kube

    kubeconfig = _kubeconfig_path(inv.kubeconfig)
    namespace = inv.namespace or current_namespace(kubeconfig, inv.context)
    wanted = normalize_for(inv.for_) if inv.command == "wait" else ""
    timeout = parse_timeout(inv.timeout) if inv.command == "wait" else 0.0
    api_client = await _client(kubeconfig, inv.context)
    try:
        kube = Kube(api_client)
        if inv.command == "cancel":
            return await cmd_cancel(kube, namespace, inv.task, await whoami(api_client))
        if inv.command == "report":
            return await cmd_report(kube, namespace, inv.task, inv.output)
        return await cmd_wait(kube, namespace, inv.task, wanted, timeout)
    finally:
        await api_client.close()


def execute(inv: Invocation) -> int:
    """Run one invocation; a PluginError is a clear message and exit code 2."""
    try:
        return asyncio.run(_run(inv))
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    """The `kubectl-nico` console script; returns the exit code."""
    try:
        plugin.main(args=argv, prog_name="kubectl nico")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
