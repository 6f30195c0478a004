"""The invariants, checked at the end from three witnesses: the API server (the final
objects and the watch's history), Temporal (describe and result of every task's
workflow, and the list of running ones) and the BMC request log (the fault proxy)."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.service import RPCError, RPCStatusCode

from nicotask.temporal.models import WorkflowOutcome

from .bmcproxy import BmcRequest
from .faults import API_DOWN, Fault
from .load import HARD_PATHS, Cancel, ShimAnswer
from .watch import SoakWatch

TERMINAL = ("Succeeded", "Failed", "Terminated")
INVARIANTS = (
    "task_terminal",
    "status_matches_temporal",
    "cancel_applied",
    "no_power_change_after_close",
    "no_running_stage_when_finished",
    "report_sequence_monotonic",
    "terminal_is_final",
    "no_orphan_workflow",
    "no_rack_locked",
    "shim_no_unexpected_5xx",
    "shim_202_became_cancel",
)
# A completion that beats an accepted cancel by more than this, with no fault of the
# operator, Temporal or the API server in between, means the cancel was lost.
CANCEL_SLACK_S = 5.0
SHIM_503_GRACE_S = 15.0


@dataclass
class TRec:
    """What Temporal recorded for one workflow (None fields: not closed)."""

    status: str  # RUNNING, COMPLETED, TERMINATED, FAILED, TIMED_OUT, CANCELED, NONE
    start: float | None = None  # wall clock
    close: float | None = None
    outcome: str | None = None  # WorkflowOutcome.status when COMPLETED
    message: str = ""

    def expected_task_status(self) -> str | None:
        if self.status in ("TERMINATED", "CANCELED"):
            return "Terminated"
        if self.status == "COMPLETED":
            return self.outcome
        if self.status in ("FAILED", "TIMED_OUT"):
            return "Failed"
        return None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _ts(value: dt.datetime | None) -> float | None:
    return value.timestamp() if value else None


async def temporal_record(client: Client, uid: str) -> TRec:
    handle = client.get_workflow_handle(uid, result_type=WorkflowOutcome)
    for attempt in range(5):
        try:
            desc = await handle.describe()
            break
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return TRec("NONE")
            if attempt == 4:
                return TRec("UNKNOWN", message=str(exc))
            await asyncio.sleep(1)
    status = desc.status.name if desc.status else "UNKNOWN"
    rec = TRec(status, _ts(desc.start_time), _ts(desc.close_time))
    if desc.status == WorkflowExecutionStatus.COMPLETED:
        try:
            out = await handle.result(follow_runs=False)
            rec.outcome, rec.message = out.status.value, out.message
        except (WorkflowFailureError, RPCError) as exc:
            rec.message = str(exc)
    return rec


async def temporal_records(client: Client, uids: list[str]) -> dict[str, TRec]:
    sem = asyncio.Semaphore(16)
    out: dict[str, TRec] = {}

    async def one(uid: str) -> None:
        async with sem:
            out[uid] = await temporal_record(client, uid)

    await asyncio.gather(*(one(u) for u in uids))
    return out


async def running_workflows(client: Client) -> list[str]:
    return [wf.id async for wf in client.list_workflows('ExecutionStatus="Running"')]


def _running_in_report(obj: dict[str, Any]) -> list[str]:
    report = (obj.get("status") or {}).get("report") or {}
    bad = []
    for stage in report.get("stages") or []:
        if stage.get("status") == "running":
            bad.append(f"stage {stage.get('stage', stage.get('number'))}")
        for step in stage.get("steps") or []:
            if step.get("status") == "running":
                bad.append(f"step {step.get('name', step.get('componentType', '?'))}")
    return bad


def _conditions(obj: dict[str, Any]) -> dict[str, str]:
    return {
        c.get("type", ""): c.get("status", "")
        for c in (obj.get("status") or {}).get("conditions") or []
    }


class Checker:
    def __init__(
        self,
        *,
        t0: float,
        t0_wall: float,
        watch: SoakWatch,
        final: dict[str, dict[str, Any]],
        trecs: dict[str, TRec],
        running: list[str],
        bmc_log: list[BmcRequest],
        redfish_racks: dict[str, str],
        task_rack: dict[str, str],
        cancels: list[Cancel],
        faults: list[Fault],
        shim_answers: list[ShimAnswer],
        probes: dict[str, str],
    ) -> None:
        self.t0, self.t0_wall = t0, t0_wall
        self.watch, self.final, self.trecs, self.running = watch, final, trecs, running
        self.bmc_log, self.redfish_racks, self.task_rack = bmc_log, redfish_racks, task_rack
        self.cancels, self.faults, self.shim_answers, self.probes = (
            cancels,
            faults,
            shim_answers,
            probes,
        )
        self.violations: dict[str, list[dict[str, Any]]] = {k: [] for k in INVARIANTS}

    def mono_to_wall(self, t: float) -> float:
        return self.t0_wall + (t - self.t0)

    # ---- the witnesses of one task, for a violation ------------------------------------

    def witness(self, name: str) -> dict[str, Any]:
        obj = self.final.get(name)
        uid = self.watch.uids.get(name, "")
        trec = self.trecs.get(uid)
        st = (obj or {}).get("status") or {}
        rack = self.task_rack.get(name, "")
        system = self.redfish_racks.get(rack, "")
        bmc = [
            f"+{r.t - self.t0_wall:.2f}s {r.method} {r.path.rsplit('/', 1)[-1]} "
            f"{r.reset_type} mode={r.mode} -> {r.status}"
            for r in self.bmc_log
            if system and r.system == system and r.power_change
        ][-12:]
        created = self.watch.first_seen.get(name, {})
        lo = min(created.values()) if created else self.t0
        hi = self.watch.history[name].terminal_t if name in self.watch.history else None
        faults = [
            f"{f.kind} +{f.start - self.t0:.1f}s..+{f.end - self.t0:.1f}s"
            for f in self.faults
            if f.end >= lo - 2 and (hi is None or f.start <= hi + 2)
        ]
        tl = self.watch.timeline(name, self.t0)
        if trec and trec.start:
            tl.append(f"+{trec.start - self.t0_wall:.2f}s temporal started")
        if trec and trec.close:
            tl.append(f"+{trec.close - self.t0_wall:.2f}s temporal closed {trec.status}")
        for c in self.cancels:
            if c.task == name and c.accepted is not None:
                tl.append(f"+{c.accepted - self.t0:.2f}s cancel accepted via {c.path}")
        return {
            "task": name,
            "uid": uid,
            "rack": rack,
            "api": None
            if obj is None
            else {
                "status": st.get("status"),
                "message": st.get("message"),
                "reportSequence": st.get("reportSequence"),
                "conditions": _conditions(obj),
                "spec.cancel": (obj.get("spec") or {}).get("cancel"),
                "cancelMode": (obj.get("spec") or {}).get("cancelMode"),
            },
            "temporal": trec.to_json() if trec else None,
            "bmc": bmc,
            "cancels": [c.to_json(self.t0) for c in self.cancels if c.task == name],
            "faults_during": faults[-12:],
            "timeline": sorted(tl, key=lambda s: float(s.split("s", 1)[0].lstrip("+"))),
        }

    def add(self, invariant: str, name: str, detail: str) -> None:
        entry = {"detail": detail, **self.witness(name)} if name else {"detail": detail}
        self.violations[invariant].append(entry)

    # ---- the invariants -------------------------------------------------------------------

    def run(self) -> dict[str, list[dict[str, Any]]]:
        for v in self.watch.violations:
            self.add(v["invariant"], v["task"], v["detail"])
        self.check_tasks()
        self.check_cancels()
        self.check_bmc()
        self.check_orphans()
        self.check_probes()
        self.check_shim()
        return self.violations

    def check_tasks(self) -> None:
        for name, obj in sorted(self.final.items()):
            if name.startswith("probe-"):
                continue
            st = obj.get("status") or {}
            status = st.get("status")
            if status not in TERMINAL:
                self.add("task_terminal", name, f"status {status!r} at the end")
                continue
            if bad := _running_in_report(obj):
                self.add("no_running_stage_when_finished", name, f"{status} with {bad}")
            trec = self.trecs.get(obj["metadata"]["uid"])
            if trec is None:
                self.add("status_matches_temporal", name, "no Temporal record read")
                continue
            if trec.status == "NONE":
                if status == "Succeeded":
                    self.add("status_matches_temporal", name, "Succeeded without a workflow")
                continue
            expected = trec.expected_task_status()
            if expected != status:
                self.add(
                    "status_matches_temporal",
                    name,
                    f"task {status}, Temporal {trec.status} (outcome {trec.outcome})",
                )

    def _fault_between(self, a_wall: float, b_wall: float) -> bool:
        for f in self.faults:
            if f.kind.startswith("bmc_"):
                continue
            fs, fe = self.mono_to_wall(f.start), self.mono_to_wall(f.end) + 10.0
            if fs <= b_wall and fe >= a_wall - 1.0:
                return True
        return False

    def check_cancels(self) -> None:
        for c in self.cancels:
            if c.accepted is None or c.accepted_wall is None or c.path == "delete":
                continue
            if c.status_at_accept in TERMINAL:
                continue
            obj = self.final.get(c.task)
            if obj is None:
                continue  # deleted meanwhile (only the delete path deletes)
            status = (obj.get("status") or {}).get("status")
            trec = self.trecs.get(obj["metadata"]["uid"])
            if not (obj.get("spec") or {}).get("cancel"):
                self.add("cancel_applied", c.task, f"{c.path} accepted, spec.cancel not set")
                continue
            if status == "Terminated" or status not in TERMINAL or trec is None:
                continue  # Terminated; or reported by task_terminal
            if c.path == "graceful":
                if status == "Succeeded" and "CancelIgnored" not in _conditions(obj):
                    self.add(
                        "cancel_applied",
                        c.task,
                        "graceful stop accepted, Succeeded without CancelIgnored",
                    )
                continue
            # Completion first: Temporal must have closed it by completion, and soon after
            # the cancel unless a fault of the control plane held the cancel up.
            if trec.status == "NONE" and status == "Failed" and "CancelIgnored" in _conditions(obj):
                continue  # it failed before it started (a full queue), ahead of the cancel
            if trec.status not in ("COMPLETED", "FAILED", "TIMED_OUT"):
                self.add(
                    "cancel_applied",
                    c.task,
                    f"{c.path} accepted while {c.status_at_accept or '?'}; task {status}, "
                    f"Temporal {trec.status}",
                )
                continue
            close = trec.close or 0.0
            late = close - c.accepted_wall
            if late > CANCEL_SLACK_S and not self._fault_between(c.accepted_wall, close):
                self.add(
                    "cancel_applied",
                    c.task,
                    f"{c.path} accepted {late:.1f}s before the workflow completed "
                    f"({status}) with no fault in between: the cancel was lost",
                )
            elif status == "Succeeded" and "CancelIgnored" not in _conditions(obj):
                self.add("cancel_applied", c.task, "completed first, no CancelIgnored")

    def check_bmc(self) -> None:
        system_rack = {sid: rack for rack, sid in self.redfish_racks.items()}
        windows: dict[str, list[tuple[float, float, str]]] = {}
        for name, rack in self.task_rack.items():
            if rack not in self.redfish_racks:
                continue
            uid = self.watch.uids.get(name)
            trec = self.trecs.get(uid or "")
            if trec is None or trec.start is None:
                continue
            windows.setdefault(rack, []).append((trec.start, trec.close or float("inf"), name))
        for r in self.bmc_log:
            if not r.power_change or r.mode in ("reset", "5xx"):
                continue  # never reached the emulator
            found = system_rack.get(r.system)
            if found is None:
                continue
            rack = found
            spans = windows.get(rack, [])
            if any(s <= r.t <= e for s, e, _ in spans):
                continue
            before = [w for w in spans if w[1] < r.t]
            last = max(before, key=lambda w: w[1]) if before else None
            name = last[2] if last else ""
            after = f"{r.t - last[1]:.3f}s after {name}'s workflow closed" if last else "no task"
            self.add(
                "no_power_change_after_close",
                name,
                f"{r.reset_type} to {rack} at +{r.t - self.t0_wall:.2f}s, {after}",
            )

    def check_orphans(self) -> None:
        live = {
            obj["metadata"]["uid"]
            for obj in self.final.values()
            if (obj.get("status") or {}).get("status") not in TERMINAL
        }
        by_uid = {u: n for n, u in self.watch.uids.items()}
        for wid in self.running:
            if wid in live:
                continue
            name = by_uid.get(wid, "")
            gone = name not in self.final
            self.add(
                "no_orphan_workflow",
                name,
                f"workflow {wid} runs; its task {'was deleted' if gone else 'is finished'}",
            )

    def check_probes(self) -> None:
        for rack, status in sorted(self.probes.items()):
            if status != "Succeeded":
                self.add(
                    "no_rack_locked",
                    f"probe-{rack}",
                    f"probe task on {rack} ended {status or 'not finished'}",
                )

    def check_shim(self) -> None:
        down = [(f.start, f.end + SHIM_503_GRACE_S) for f in self.faults if f.kind in API_DOWN]
        for a in self.shim_answers:
            if a.status < 500:
                continue
            if a.status == 503 and any(s - 1 <= a.t <= e for s, e in down):
                continue
            self.add(
                "shim_no_unexpected_5xx",
                a.task,
                f"shim answered {a.status} at +{a.t - self.t0:.2f}s",
            )
        for c in self.cancels:
            if c.path != "rest_shim" or c.accepted is None:
                continue
            obj = self.final.get(c.task)
            if obj is not None and not (obj.get("spec") or {}).get("cancel"):
                self.add("shim_202_became_cancel", c.task, "202, but spec.cancel is not set")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, round(q * (len(s) - 1)))], 3)


def recovery(watch: SoakWatch, cancels: list[Cancel], faults: list[Fault]) -> dict[str, Any]:
    """Per fault: from its end until every cancel accepted during it was applied."""
    per_kind: dict[str, list[float]] = {}
    unrecovered = 0
    for f in faults:
        during = [
            c
            for c in cancels
            if c.accepted is not None
            and c.path != "delete"
            and f.start <= c.accepted <= f.end
            and c.status_at_accept not in TERMINAL
        ]
        if not during:
            continue
        ends: list[float] = []
        for c in during:
            h = watch.history.get(c.task)
            if h is None or h.terminal_t is None:
                unrecovered += 1
                ends = []
                break
            ends.append(h.terminal_t)
        if ends:
            per_kind.setdefault(f.kind, []).append(max(0.0, max(ends) - f.end))
    latency = [
        watch.history[c.task].terminal_t - c.accepted  # type: ignore[operator]
        for c in cancels
        if c.accepted is not None
        and c.path != "delete"
        and c.status_at_accept not in TERMINAL
        and c.task in watch.history
        and watch.history[c.task].terminal_t is not None
    ]
    every = [v for vs in per_kind.values() for v in vs]
    summary = {
        "faults_with_cancels": len(every),
        "unrecovered": unrecovered,
        "p50_s": percentile(every, 0.5),
        "p99_s": percentile(every, 0.99),
        "max_s": percentile(every, 1.0),
        "cancel_latency": {
            "n": len(latency),
            "p50_s": percentile(latency, 0.5),
            "p99_s": percentile(latency, 0.99),
            "max_s": percentile(latency, 1.0),
        },
    }
    return {
        **summary,
        "by_kind": {
            k: {
                "n": len(v),
                "p50_s": percentile(v, 0.5),
                "p99_s": percentile(v, 0.99),
                "max_s": percentile(v, 1.0),
            }
            for k, v in sorted(per_kind.items())
        },
    }


__all__ = ["HARD_PATHS", "Checker", "recovery", "running_workflows", "temporal_records"]
