"""`kubectl nico rerun`: a new task from a finished one, linked both ways.

The new task is named `<base>-rerun-<n>`: `base` is the old name without its own
`-rerun-<n>` suffix (a rerun of `x-rerun-1` is `x-rerun-2`, not `x-rerun-1-rerun-1`),
cut so that the whole name fits a label value (63), and `n` the first free number.
A readable, predictable name (unlike generateName's random suffix) that a Git user
can follow by hand.

The link is written on the new task only: the old one is left untouched (Git or a
GitOps tool owns it, and any write there would be drift):
- label `nico.dev/rerun-of: <old name>` (when the name fits a label value): `kubectl
  get nt -l nico.dev/rerun-of=X` and `kubectl nico report X` find the reruns of X;
- annotation `nico.dev/rerun-of: <old name>`, shown by `kubectl nico report` of the new
  task, and `nico.dev/rerun-of-uid: <old uid>`, which tells a rerun of this X from a
  rerun of an older task of the same name.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from nicotask.api import API_VERSION, FINISHED_STATUS_VALUES, GROUP

from .common import PluginError, task_status

RERUN_OF = f"{GROUP}/rerun-of"
RERUN_OF_UID = f"{GROUP}/rerun-of-uid"
# The spec fields a rerun keeps (not cancel, cancelMode, cancelReason, nor any field
# this version does not know of).
COPIED_SPEC = (
    "siteId",
    "rackRef",
    "operation",
    "ruleId",
    "description",
    "deadline",
    "ttlSecondsAfterFinished",
)
# Labels by which Argo CD or Flux track what they manage: not copied, or the tool
# would take the rerun for one of its own, show it out of sync and prune it.
GITOPS_LABEL_PREFIXES = (
    "argocd.argoproj.io/",
    "kustomize.toolkit.fluxcd.io/",
    "helm.toolkit.fluxcd.io/",
)
GITOPS_LABELS = frozenset({"app.kubernetes.io/instance"})
LABEL_VALUE_MAX = 63
_SUFFIX = re.compile(r"^(?P<base>.+?)(-rerun-\d+)+$")


def rerun_base(name: str) -> str:
    """The name without a trailing `-rerun-<n>`."""
    match = _SUFFIX.match(name)
    return match["base"] if match else name


def rerun_name(name: str, n: int) -> str:
    """The n-th candidate name of a rerun of `name` (at most 63 characters)."""
    suffix = f"-rerun-{n}"
    base = rerun_base(name)[: LABEL_VALUE_MAX - len(suffix)].rstrip("-.")
    return base + suffix


def check_rerunnable(task: dict[str, Any], now: dt.datetime | None = None) -> None:
    """Refuse a task that has not finished, or whose absolute deadline has passed."""
    name = (task.get("metadata") or {}).get("name", "?")
    status = task_status(task)
    if status not in FINISHED_STATUS_VALUES:
        raise PluginError(
            f"nicotask {name!r} is {status}: only a finished task (Succeeded, Failed or "
            f"Terminated) can be rerun; cancel it first (kubectl nico cancel {name}) or "
            "wait for it (kubectl nico wait)"
        )
    not_after = ((task.get("spec") or {}).get("deadline") or {}).get("notAfter")
    if not_after:
        when = dt.datetime.fromisoformat(str(not_after).replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        if when <= (now or dt.datetime.now(dt.UTC)):
            raise PluginError(
                f"nicotask {name!r} has spec.deadline.notAfter {not_after}, which has "
                "passed: a rerun with it would never start; create a copy with a new "
                "deadline instead"
            )


def rerun_manifest(task: dict[str, Any], name: str) -> dict[str, Any]:
    """The new task: the old one's spec (COPIED_SPEC), labels (less the GitOps
    tools' tracking labels) and the links to the old one."""
    meta = task.get("metadata") or {}
    spec = task.get("spec") or {}
    old = str(meta.get("name", ""))
    labels = {
        k: v
        for k, v in (meta.get("labels") or {}).items()
        if k not in GITOPS_LABELS and not k.startswith(GITOPS_LABEL_PREFIXES) and k != RERUN_OF
    }
    if len(old) <= LABEL_VALUE_MAX:
        labels[RERUN_OF] = old
    annotations = {RERUN_OF: old}
    if meta.get("uid"):
        annotations[RERUN_OF_UID] = str(meta["uid"])
    metadata: dict[str, Any] = {"name": name, "annotations": annotations}
    if labels:
        metadata["labels"] = labels
    return {
        "apiVersion": API_VERSION,
        "kind": "NicoTask",
        "metadata": metadata,
        "spec": {k: spec[k] for k in COPIED_SPEC if spec.get(k) not in (None, "")},
    }


def reruns_of(task: dict[str, Any], candidates: list[dict[str, Any]]) -> list[str]:
    """The names of `candidates` (tasks labelled rerun-of this task's name) that are
    reruns of this very task (same uid, when the rerun recorded one), oldest first."""
    uid = (task.get("metadata") or {}).get("uid")
    found = []
    for other in candidates:
        meta = other.get("metadata") or {}
        recorded = (meta.get("annotations") or {}).get(RERUN_OF_UID)
        if recorded and uid and recorded != uid:
            continue
        found.append((str(meta.get("creationTimestamp") or ""), str(meta.get("name"))))
    return [name for _, name in sorted(found)]
