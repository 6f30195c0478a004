"""`kubectl nico cancel` of one task or many: selection, the patch, outcomes, the summary.

Pure: what to select, what to do with each task as read, the patch, the summary,
the confirmation and the progress line. The API calls are in commands.py.

The patch carries the resourceVersion of the task as read (a precondition). The
decision (skip a finished task, escalate a graceful stop, keep a reason already set)
is made on that object; the precondition makes the patch apply to exactly that
state, or fail with 409, after which the task is read again and decided again. So a
task that finishes between the list and the patch is counted "already finished" and
keeps its spec (no `cancel: true` written onto a Succeeded task, which Git would show
as drift), and a cancel by somebody else in between is counted "already cancelled"
instead of overwriting their name or being refused for a different reason.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from nicotask.api import CANCEL_REASON_MAX, CANCEL_REQUESTED_BY, check_reason

from .common import KIND, PluginError, task_status

TERMINATE = "Terminate"
GRACEFUL = "Graceful"
MODES = (TERMINATE, GRACEFUL)
# Up to this many tasks, a line per task; above it, a progress line and the problems only.
PER_TASK_LINES = 20
DEFAULT_CONCURRENCY = 32


class Outcome(enum.StrEnum):
    CANCELLED = "cancelled"
    ESCALATED = "escalated to Terminate"
    ALREADY_CANCELLED = "already cancelled"
    ALREADY_FINISHED = "already finished"
    REFUSED_RBAC = "refused by RBAC"
    REFUSED_ADMISSION = "refused by admission"
    NOT_FOUND = "not found"
    FAILED = "failed"

    @property
    def ok(self) -> bool:
        """Cancelled now or before, or finished: nothing left to do."""
        return self in (
            Outcome.CANCELLED,
            Outcome.ESCALATED,
            Outcome.ALREADY_CANCELLED,
            Outcome.ALREADY_FINISHED,
        )


# ---- selection ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Which tasks: by name, or by label selector and/or rack, or all (in a namespace
    or, with all_namespaces, everywhere)."""

    names: tuple[str, ...] = ()
    selector: str | None = None
    rack: str | None = None
    all: bool = False
    all_namespaces: bool = False

    @property
    def by_name(self) -> bool:
        return bool(self.names)

    @property
    def field_selector(self) -> str | None:
        return f"spec.rackRef={self.rack}" if self.rack else None


def selection(
    names: tuple[str, ...] | list[str],
    selector: str | None,
    rack: str | None,
    all_: bool,
    all_namespaces: bool,
) -> Selection:
    """Check the combination of TASK..., -l, --rack, --all and -A (usage errors raise)."""
    names = tuple(names)
    chosen = bool(selector) or bool(rack)
    if names and (chosen or all_):
        raise PluginError("give task names, or -l/--rack/--all, not both")
    if names and all_namespaces:
        raise PluginError("-A/--all-namespaces selects by -l, --rack or --all, not by name")
    if all_ and chosen:
        raise PluginError("--all selects every task: drop it, or drop -l/--rack")
    if not names and not chosen and not all_:
        raise PluginError("which tasks? give TASK names, -l SELECTOR, --rack RACK or --all")
    if selector is not None and not selector.strip():
        raise PluginError("-l/--selector: empty selector (use --all for every task)")
    return Selection(names, selector, rack, all_, all_namespaces)


def validate_reason(reason: str | None) -> str | None:
    """The CRD's rules for spec.cancelReason, checked before anything is sent."""
    if reason is None:
        return None
    if not reason:
        raise PluginError("--reason: empty (leave it out for no reason)")
    try:
        reason.encode("utf-8")
    except UnicodeEncodeError:
        raise PluginError("--reason: not valid UTF-8") from None
    try:
        check_reason(reason)
    except ValueError as exc:
        raise PluginError(f"--reason: {exc}") from None
    if len(reason) > CANCEL_REASON_MAX:
        raise PluginError(f"--reason: {len(reason)} characters; at most {CANCEL_REASON_MAX}")
    return reason


# ---- what to do with one task ------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """For one task as read: the outcome if nothing is sent, else the patch to send and
    the outcome once it is accepted."""

    outcome: Outcome
    patch: dict[str, Any] | None = None
    note: str = ""


def plan(task: dict[str, Any], mode: str, reason: str | None, requested_by: str | None) -> Plan:
    """What `cancel --mode MODE [--reason R]` does to `task` (as the API server returned it).

    - Succeeded/Failed: nothing (already finished); Terminated: nothing (already cancelled).
    - not cancelled yet: spec.cancel true, cancelMode MODE, cancelReason R when given.
    - cancelled Graceful, asked Terminate: escalate (cancelMode Terminate). The reason is
      fixed once cancelled: R is added only when the task has none.
    - otherwise cancelled already, with the same or a harder mode: nothing (Graceful asked
      of a task cancelled with Terminate cannot be had, and is not needed).
    """
    status = task_status(task)
    if status in ("Succeeded", "Failed"):
        return Plan(Outcome.ALREADY_FINISHED, note=status)
    if status == "Terminated":
        return Plan(Outcome.ALREADY_CANCELLED, note=status)
    spec = task.get("spec") or {}
    meta = task.get("metadata") or {}
    body_spec: dict[str, Any]
    if not spec.get("cancel"):
        body_spec = {"cancel": True, "cancelMode": mode}
        if reason:
            body_spec["cancelReason"] = reason
        outcome, note = Outcome.CANCELLED, mode
    else:
        current = spec.get("cancelMode") or TERMINATE
        if not (mode == TERMINATE and current == GRACEFUL):
            return Plan(Outcome.ALREADY_CANCELLED, note=f"{current}, {status}")
        body_spec = {"cancelMode": TERMINATE}
        note = "was Graceful"
        if reason and not spec.get("cancelReason"):
            body_spec["cancelReason"] = reason
        elif reason and spec.get("cancelReason") != reason:
            note += "; its reason is kept (fixed once cancelled)"
        outcome = Outcome.ESCALATED
    metadata: dict[str, Any] = {"resourceVersion": meta.get("resourceVersion")}
    if requested_by:
        metadata["annotations"] = {CANCEL_REQUESTED_BY: requested_by}
    return Plan(outcome, {"metadata": metadata, "spec": body_spec}, note)


def refusal_outcome(status: int | None, message: str) -> Outcome:
    """403 from RBAC or from an admission policy (which may answer 403 too), 422."""
    if status == 422:
        return Outcome.REFUSED_ADMISSION
    if status == 403:
        lowered = message.lower()
        if "admission" in lowered or "denied request" in lowered:
            return Outcome.REFUSED_ADMISSION
        return Outcome.REFUSED_RBAC
    if status == 404:
        return Outcome.NOT_FOUND
    return Outcome.FAILED


# ---- results and the summary -------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    namespace: str
    name: str
    outcome: Outcome
    detail: str = ""

    def line(self, with_namespace: bool) -> str:
        where = f"{self.namespace}/" if with_namespace else ""
        ref = f"{where}{KIND}/{self.name}"
        if self.outcome == Outcome.CANCELLED:
            return f"{ref} cancel requested ({self.detail})"
        if self.outcome == Outcome.ESCALATED:
            return f"{ref} cancel escalated to Terminate ({self.detail})"
        if self.outcome == Outcome.ALREADY_CANCELLED:
            return f"{ref} cancel already requested ({self.detail})"
        if self.outcome == Outcome.ALREADY_FINISHED:
            return f"{ref} already finished ({self.detail}): not cancelled"
        return f"error: {ref} {self.outcome}: {self.detail}"


@dataclass
class Summary:
    counts: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))

    def add(self, outcome: Outcome) -> None:
        self.counts[outcome] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def ok(self) -> bool:
        return all(o.ok for o, n in self.counts.items() if n)

    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def text(self, dry_run: bool = False) -> str:
        """`12 tasks: 9 cancelled (1 escalated to Terminate), 2 already cancelled, ...`."""
        c = self.counts
        total = self.total
        head = f"{total} task{'' if total == 1 else 's'}"
        cancelled = c[Outcome.CANCELLED] + c[Outcome.ESCALATED]
        verb = "would be cancelled" if dry_run else "cancelled"
        parts = [f"{cancelled} {verb}"]
        if c[Outcome.ESCALATED]:
            parts[0] += f" ({c[Outcome.ESCALATED]} escalated to Terminate)"
        for outcome in (
            Outcome.ALREADY_CANCELLED,
            Outcome.ALREADY_FINISHED,
            Outcome.REFUSED_RBAC,
            Outcome.REFUSED_ADMISSION,
            Outcome.NOT_FOUND,
            Outcome.FAILED,
        ):
            if c[outcome] or outcome in (Outcome.ALREADY_CANCELLED, Outcome.ALREADY_FINISHED):
                parts.append(f"{c[outcome]} {outcome}")
        tail = " (dry run: nothing changed)" if dry_run else ""
        return f"{head}: {', '.join(parts)}{tail}"


# ---- dry run, confirmation, progress -------------------------------------------------------


def dry_run_table(
    tasks: list[dict[str, Any]], plans: list[Plan], with_namespace: bool
) -> list[str]:
    """NAME STATUS RACK ACTION (NAMESPACE first with -A), one row per task."""
    headers = (["NAMESPACE"] if with_namespace else []) + ["NAME", "STATUS", "RACK", "ACTION"]
    rows = []
    for task, p in zip(tasks, plans, strict=True):
        meta = task.get("metadata") or {}
        action = {
            Outcome.CANCELLED: f"cancel ({p.note})",
            Outcome.ESCALATED: "escalate to Terminate",
        }.get(p.outcome, f"none: {p.outcome}")
        row = [str(meta.get("name")), task_status(task),
               str((task.get("spec") or {}).get("rackRef", "-")), action]  # fmt: skip
        rows.append(([str(meta.get("namespace"))] if with_namespace else []) + row)
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in [headers, *rows]]  # fmt: skip


def confirmation_prompt(
    to_patch: list[str], total: int, where: str, mode: str, reason: str | None
) -> str:
    """The question asked before a selection is cancelled."""
    shown = ", ".join(to_patch[:5]) + (", ..." if len(to_patch) > 5 else "")
    why = f', reason "{reason}"' if reason else ""
    return (
        f"Cancel {len(to_patch)} of the {total} selected task{'s' if total != 1 else ''} "
        f"{where} (mode {mode}{why}): {shown}\nProceed? [y/N] "
    )


def confirmed(answer: str | None) -> bool:
    return (answer or "").strip().lower() in ("y", "yes")


@dataclass
class Progress:
    """`cancelling 120/1000` on stderr: in place on a terminal, else a line every `every`."""

    total: int
    tty: bool
    every: int = 100
    done: int = 0
    last_shown: int = 0

    def step(self) -> str | None:
        """Count one task; the text to write now, if any."""
        self.done += 1
        if self.tty:
            return f"\rcancelling {self.done}/{self.total}"
        if self.done - self.last_shown >= self.every or self.done == self.total:
            self.last_shown = self.done
            return f"cancelling {self.done}/{self.total}\n"
        return None
