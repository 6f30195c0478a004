"""The soak's invariants (soak/check.py, soak/watch.py) on crafted histories.

A clean history passes every invariant; each invariant flags the one
history crafted to break it (and only the invariants that history breaks).
"""

from __future__ import annotations

import copy
import types
from collections.abc import Callable
from typing import Any

import pytest
from soak.bmcproxy import BmcRequest
from soak.check import INVARIANTS, Checker, TRec, percentile, recovery
from soak.faults import Fault
from soak.load import Cancel, ShimAnswer
from soak.watch import SoakWatch

T0 = 1000.0  # time.monotonic() at the start
W = 1_700_000_000.0  # the wall clock at the start
RESET_PATH = "/redfish/v1/Systems/sys-1/Actions/ComputerSystem.Reset"


def _report(stage_status: str) -> dict[str, Any]:
    step = {"componentType": "Compute", "status": stage_status}
    return {"stages": [{"stage": 1, "status": stage_status, "steps": [step]}]}


def _obj(name: str, uid: str, status: str, seq: int | None, rv: int, **spec: Any) -> dict[str, Any]:
    st: dict[str, Any] = {"status": status}
    if seq is not None:
        st["reportSequence"] = seq
        st["report"] = _report("succeeded" if status == "Succeeded" else "running")
    if status == "Terminated":
        st["report"] = _report("skipped")
    return {
        "metadata": {"name": name, "uid": uid, "resourceVersion": str(rv)},
        "spec": {"rackRef": "rack", **spec},
        "status": st,
    }


class World:
    """Two tasks and their witnesses, all consistent:
    - t-ok on the sleep rack rack-s1: Pending, Running, Succeeded; Temporal completed it;
    - t-cancel on the Redfish rack rack-r1: Running, cancelled through the shim (202),
      Terminated; Temporal terminated it; one Reset reached the BMC while it ran."""

    def __init__(self) -> None:
        self.history: list[tuple[float, dict[str, Any]]] = [
            (T0 + 1, _obj("t-ok", "u-ok", "Pending", None, 1)),
            (T0 + 2, _obj("t-ok", "u-ok", "Running", 1, 2)),
            (T0 + 10, _obj("t-ok", "u-ok", "Succeeded", 2, 5)),
            (T0 + 1, _obj("t-cancel", "u-c", "Running", 1, 3)),
            (T0 + 4, _obj("t-cancel", "u-c", "Terminated", 2, 4, cancel=True)),
        ]
        self.final = {
            "t-ok": _obj("t-ok", "u-ok", "Succeeded", 2, 5),
            "t-cancel": _obj("t-cancel", "u-c", "Terminated", 2, 4, cancel=True),
        }
        self.trecs = {
            "u-ok": TRec("COMPLETED", start=W + 1, close=W + 10, outcome="Succeeded"),
            "u-c": TRec("TERMINATED", start=W + 1, close=W + 4),
        }
        self.running: list[str] = []
        self.bmc_log = [
            BmcRequest(W + 2, "POST", RESET_PATH, "sys-1", True, "On", "", 204),
        ]
        self.cancels = [
            Cancel(
                "t-cancel",
                "rest_shim",
                planned=T0 + 2,
                sent=T0 + 2,
                accepted=T0 + 3,
                accepted_wall=W + 3,
                status_at_accept="Running",
            ),
        ]
        self.faults = [Fault("restart_apiserver", start=T0 + 40, end=T0 + 42)]
        self.shim_answers = [ShimAnswer(T0 + 3, 202, "t-cancel")]
        self.probes = {"rack-s1": "Succeeded", "rack-r1": "Succeeded"}

    def check(self) -> set[str]:
        """The invariants violated (each with its count in `self.found`)."""
        watch = SoakWatch(types.SimpleNamespace())
        for now, obj in self.history:
            watch._record(copy.deepcopy(obj), now)
        checker = Checker(
            t0=T0,
            t0_wall=W,
            watch=watch,
            final=self.final,
            trecs=self.trecs,
            running=self.running,
            bmc_log=self.bmc_log,
            redfish_racks={"rack-r1": "sys-1"},
            task_rack={"t-ok": "rack-s1", "t-cancel": "rack-r1"},
            cancels=self.cancels,
            faults=self.faults,
            shim_answers=self.shim_answers,
            probes=self.probes,
        )
        self.found = {k: len(v) for k, v in checker.run().items() if v}
        self.violations = checker.violations
        return set(self.found)


def test_a_clean_history_passes_every_invariant() -> None:
    world = World()
    assert world.check() == set()
    assert set(world.violations) == set(INVARIANTS)  # every invariant was checked


def _not_terminal(w: World) -> None:
    w.final["t-ok"]["status"] = {"status": "Running", "report": _report("running")}


def _other_status(w: World) -> None:
    w.trecs["u-ok"] = TRec("TERMINATED", start=W + 1, close=W + 10)


def _lost_cancel(w: World) -> None:
    # The workflow completed 27 s after the cancel was accepted, no fault in between.
    w.final["t-cancel"] = _obj("t-cancel", "u-c", "Succeeded", 3, 6, cancel=True)
    w.trecs["u-c"] = TRec("COMPLETED", start=W + 1, close=W + 30, outcome="Succeeded")


def _reset_after_close(w: World) -> None:
    w.bmc_log.append(BmcRequest(W + 5, "POST", RESET_PATH, "sys-1", True, "ForceOff", "", 204))


def _running_stage(w: World) -> None:
    w.final["t-ok"]["status"]["report"] = _report("running")


def _sequence_down(w: World) -> None:
    w.history.insert(2, (T0 + 3, _obj("t-ok", "u-ok", "Running", 0, 3)))


def _terminal_left(w: World) -> None:
    w.history.append((T0 + 11, _obj("t-ok", "u-ok", "Running", 3, 6)))


def _orphan(w: World) -> None:
    w.running.append("u-ok")


def _rack_locked(w: World) -> None:
    w.probes["rack-s1"] = "Terminated"


def _shim_500(w: World) -> None:
    w.shim_answers.append(ShimAnswer(T0 + 5, 500, "t-cancel"))


def _shim_202_no_cancel(w: World) -> None:
    w.final["t-cancel"]["spec"].pop("cancel")


CASES: dict[str, tuple[Callable[[World], None], set[str]]] = {
    "task_terminal": (_not_terminal, {"task_terminal"}),
    "status_matches_temporal": (_other_status, {"status_matches_temporal"}),
    "cancel_applied": (_lost_cancel, {"cancel_applied"}),
    "no_power_change_after_close": (_reset_after_close, {"no_power_change_after_close"}),
    "no_running_stage_when_finished": (_running_stage, {"no_running_stage_when_finished"}),
    "report_sequence_monotonic": (_sequence_down, {"report_sequence_monotonic"}),
    "terminal_is_final": (_terminal_left, {"terminal_is_final"}),
    "no_orphan_workflow": (_orphan, {"no_orphan_workflow"}),
    "no_rack_locked": (_rack_locked, {"no_rack_locked"}),
    "shim_no_unexpected_5xx": (_shim_500, {"shim_no_unexpected_5xx"}),
    # A 202 the API server did not keep is also a cancel that was not applied.
    "shim_202_became_cancel": (_shim_202_no_cancel, {"shim_202_became_cancel", "cancel_applied"}),
}


def test_every_invariant_has_a_breaking_history() -> None:
    assert set(CASES) == set(INVARIANTS)


@pytest.mark.parametrize("invariant", INVARIANTS)
def test_each_invariant_flags_its_violation(invariant: str) -> None:
    world = World()
    breaks, expected = CASES[invariant]
    breaks(world)
    assert world.check() == expected
    assert world.found[invariant] == 1
    (entry,) = world.violations[invariant]
    assert entry["detail"]


def test_a_violation_carries_its_witnesses() -> None:
    world = World()
    _reset_after_close(world)
    world.check()
    (entry,) = world.violations["no_power_change_after_close"]
    assert entry["task"] == "t-cancel" and entry["rack"] == "rack-r1"
    assert "1.000s after t-cancel's workflow closed" in entry["detail"]
    assert entry["temporal"]["status"] == "TERMINATED"
    assert any("ForceOff" in line for line in entry["bmc"])
    assert any("cancel accepted via rest_shim" in line for line in entry["timeline"])


def test_a_cancel_beaten_by_completion_is_fine_when_quick_or_held_up_by_a_fault() -> None:
    world = World()
    # Completed 2 s after the cancel (within the slack), with CancelIgnored: fine.
    ignored = _obj("t-cancel", "u-c", "Succeeded", 3, 6, cancel=True)
    ignored["status"]["conditions"] = [{"type": "CancelIgnored", "status": "True"}]
    world.final["t-cancel"] = ignored
    world.trecs["u-c"] = TRec("COMPLETED", start=W + 1, close=W + 5, outcome="Succeeded")
    assert world.check() == set()
    # 27 s late, but the API server was down in between: held up, not lost.
    world.trecs["u-c"] = TRec("COMPLETED", start=W + 1, close=W + 30, outcome="Succeeded")
    world.faults = [Fault("restart_apiserver", start=T0 + 10, end=T0 + 12)]
    assert world.check() == set()
    # Without CancelIgnored it is a violation even so.
    world.final["t-cancel"]["status"]["conditions"] = []
    assert world.check() == {"cancel_applied"}


def test_the_shims_503_is_allowed_only_around_an_api_server_outage() -> None:
    world = World()
    world.shim_answers.append(ShimAnswer(T0 + 45, 503, "t-cancel"))  # 3 s after its end
    assert world.check() == set()
    world.shim_answers.append(ShimAnswer(T0 + 70, 503, "t-cancel"))  # long after
    assert world.check() == {"shim_no_unexpected_5xx"}


def test_recovery_times_from_each_faults_end() -> None:
    world = World()
    world.faults = [Fault("restart_temporal", start=T0 + 2, end=T0 + 3.5)]
    world.check()
    watch = SoakWatch(types.SimpleNamespace())
    for now, obj in world.history:
        watch._record(copy.deepcopy(obj), now)
    got = recovery(watch, world.cancels, world.faults)
    # The cancel accepted at +3 during the fault; the task seen Terminated at +4.
    assert got["by_kind"] == {
        "restart_temporal": {"n": 1, "p50_s": 0.5, "p99_s": 0.5, "max_s": 0.5}
    }
    assert got["unrecovered"] == 0 and got["cancel_latency"]["p50_s"] == 1.0
    assert percentile([], 0.5) is None and percentile([3.0, 1.0, 2.0], 0.5) == 2.0
