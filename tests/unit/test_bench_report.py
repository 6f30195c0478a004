"""The bench's pure helpers: percentiles, summaries, ratios, /proc parsing, Prometheus
counter deltas, CPU accounting, the target table, the report table and JSON."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

# bench/ lives at the repository root, which is not on pytest's path by default.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import calls
from bench.__main__ import parse_args
from bench.concurrency import DeadlinePassed, bounded
from bench.cpu import ProcStat, component_ticks, cores_used, parse_stat, tree_pids
from bench.measure import metric_sum, parse_status_kb, percentile, rate, ratio, summarize
from bench.promtext import (
    apiserver_key,
    counter_delta,
    counter_samples,
    group,
    per_item,
    temporal_frontend_key,
)
from bench.report import fmt, render_table, rows, target_rows, write_json
from bench.targets import FAIL, NOT_APPLICABLE, NOT_REACHED, PASS, evaluate, scale_note

pytestmark = pytest.mark.unit


def test_percentile_interpolates_like_numpy_linear() -> None:
    data = [1.0, 2.0, 3.0, 4.0]
    assert percentile(data, 0) == 1.0
    assert percentile(data, 100) == 4.0
    assert percentile(data, 50) == 2.5
    assert percentile(data, 25) == pytest.approx(1.75)
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)


def test_percentile_order_single_and_empty() -> None:
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0
    assert percentile([7.0], 95) == 7.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_scales_and_rounds() -> None:
    s = summarize([0.001, 0.002, 0.003], scale=1000)
    assert s == {"n": 3, "min": 1.0, "mean": 2.0, "p50": 2.0, "p95": 2.9, "p99": 2.98, "max": 3.0}
    empty = summarize([])
    assert empty["n"] == 0 and empty["p50"] is None


def test_ratio_and_rate() -> None:
    assert ratio(10.0, 4.0) == 2.5
    assert ratio(None, 4.0) is None
    assert ratio(1.0, 0) is None
    assert ratio(math.nan, 1.0) is None
    assert rate(100, 8.0) == 12.5
    assert rate(5, 0) is None
    assert rate(5, None) is None


def test_parse_status_kb() -> None:
    text = "Name:\tpython3\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t4\n"
    assert parse_status_kb(text, "VmRSS") == 102400
    assert parse_status_kb(text, "VmHWM") == 204800
    assert parse_status_kb(text, "VmSwap") is None


def test_metric_sum_adds_every_label_set() -> None:
    text = (
        "# HELP nicotask_tasks NicoTasks seen\n"
        "# TYPE nicotask_tasks gauge\n"
        'nicotask_tasks{status="Terminated"} 10301.0\n'
        'nicotask_tasks{status="Running"} 2.0\n'
        "nicotask_tasks_other 5.0\n"
        'nicotask_finished_total{status="Terminated"} 7.0\n'
    )
    assert metric_sum(text, "nicotask_tasks") == 10303
    assert metric_sum(text, "missing") == 0


def test_fmt() -> None:
    assert fmt(None, "ms") == "-"
    assert fmt(math.nan) == "-"
    assert fmt(3.14159, "ms") == "3.1 ms"
    assert fmt(2.0, "x", 2) == "2.00 x"
    assert fmt(12) == "12"


def sample_results() -> dict[str, Any]:
    lat = {"n": 3, "min": 1.0, "mean": 2.0, "p50": 2.0, "p95": 2.9, "p99": 2.98, "max": 3.0}
    shim_part = {
        "requests": 3,
        "requests_per_s": 40.0,
        "latency_ms": lat,
        "status_codes": {"202": 3},
        "p50_over_patch": 1.5,
        "p99_over_patch": 2.25,
    }
    return {
        "machine": {"time": "2030-01-01T00:00:00+0000", "nproc": 2, "git_commit": "abcdef123456"},
        "params": {"tasks": 3, "rss_tasks": 0, "shim_cancels": 3},
        "floor_idle": {"patch_ms": lat, "terminate_ms": lat, "get_ms": lat, "floor_ms": 2.0},
        "floor": {"patch_ms": lat, "terminate_ms": lat, "get_ms": lat, "floor_ms": 4.0},
        "start": {"tasks": 3, "running": 3, "total_s": 1.5, "tasks_per_s": 2.0, "latency_ms": lat},
        "cancel": {
            "tasks": 3,
            "terminated": 3,
            "latency_ms": lat,
            "wall_s": 0.5,
            "cancels_per_s": 6.0,
            "p50_over_floor": 0.5,
            "p50_over_idle_floor": 1.0,
        },
        "shim": {
            "fresh": shim_part,
            "repeat": shim_part,
            "raw_patch": lat,
            "raw_patch_ms": 2.0,
            "raw_patch_concurrent": {
                "requests_per_s": 250.0,
                "latency_ms": {"p50": 40.0, "p99": 90.0},
            },
            "terminated_ms": lat,
        },
        "rss": {"skipped": True},
        "runtime_s": 42.0,
        "errors": ["start: 2 of 3 Running within 121s"],
    }


def test_rows_cover_every_section() -> None:
    table = rows(sample_results())
    sections = [r[0] for r in table]
    for name in ("floor", "start", "cancel", "shim", "rss"):
        assert name in sections
    values = {(s, f): v for s, f, v in table}
    assert values[("cancel", "patch -> Terminated p50 / p95 / p99")] == "2.0 / 2.9 / 3.0 ms"
    assert values[("cancel", "p50 / floor (loaded)")] == "0.50 x"
    assert values[("cancel", "p50 / floor (idle)")] == "1.00 x"
    assert values[("floor", "loaded: floor = patch p50 + terminate p50")] == "4.0 ms"
    assert values[("floor", "idle: floor = patch p50 + terminate p50")] == "2.0 ms"
    assert values[("shim", "raw API-server PATCH p50 / p99, one at a time (just before)")] == (
        "2.0 / 3.0 ms"
    )
    assert values[("shim", "raw API-server PATCH p50 / p99, as many in flight as the shim's")] == (
        "40.0 / 90.0 ms"
    )
    assert values[("shim", "raw API-server PATCH requests/s, as many in flight")] == "250.0"
    assert values[("shim", "fresh cancel: 202s")] == "3 of 3"
    over_patch = ("shim", "fresh cancel: p50 / p99 over raw PATCH p50 (same in flight)")
    assert values[over_patch] == "1.50 / 2.25 x"
    assert values[("rss", "operator RSS")].startswith("skipped")


def test_calls_rows_show_temporal_store_writes_next_to_the_raw_calls() -> None:
    results = {
        "calls": {"per_start": {"apiserver": 3.0, "temporal": 3.07, "temporal_writes": 6.0}},
        "raw": {"persistence_per_workflow": {"writes_per_item": 4.76}, "first_task_per_s": 33.9},
    }
    values = {(s, f): v for s, f, v in rows(results)}
    first = ("raw", "StartWorkflow + first workflow task/s (empty workflow, SDK worker)")
    assert values[first] == "33.9"
    assert values[("calls", "Temporal store writes per start")] == "6.00"
    assert values[("calls", "Temporal store writes per raw start + terminate")] == "4.76"


def test_rows_tolerate_missing_sections_and_figures() -> None:
    assert rows({}) == []
    table = rows({"cancel": {"tasks": 5}})
    assert ("cancel", "patch -> Terminated p50 / p95 / p99", "-") in table
    assert ("cancel", "cancels/s", "-") in table


def test_render_table_is_aligned_and_has_header_and_errors() -> None:
    text = render_table(sample_results())
    lines = text.splitlines()
    assert lines[0].startswith("nicotask bench  2030-01-01")
    assert "nproc 2" in lines[0] and "commit abcdef123456" in lines[0] and "tasks=3" in lines[0]
    body = [ln for ln in lines[3:] if ln.startswith(("floor", "start", "cancel", "shim", "rss"))]
    value_columns = {ln.index(ln.split("  ")[-1].strip()) for ln in body if "  " in ln}
    assert len(body) == len(rows(sample_results()))
    assert value_columns  # every row has a value column
    assert "runtime 42.0 s" in text
    assert "error: start: 2 of 3 Running within 121s" in text


def test_write_json_round_trips(tmp_path: Path) -> None:
    results = sample_results()
    path = write_json(results, tmp_path / "results" / "latest.json")
    assert json.loads(path.read_text()) == results
    assert not list(path.parent.glob("*.tmp"))


def test_parse_args_defaults_and_quick() -> None:
    args = parse_args([])
    assert (args.tasks, args.rss_tasks, args.shim_cancels) == (200, 10000, 100)
    assert (args.concurrency, args.shim_concurrency, args.raw_workflows) == (20, 32, 200)
    assert args.steady_seconds == 60.0
    quick = parse_args(["--quick"])
    assert (quick.tasks, quick.rss_tasks, quick.shim_cancels) == (50, 1000, 30)
    assert quick.steady_seconds == 20.0 and quick.raw_workflows == 50
    assert parse_args(["--quick", "--tasks", "7"]).tasks == 7
    with pytest.raises(SystemExit):
        parse_args(["--tasks", "1001"])
    with pytest.raises(SystemExit):
        parse_args(["--steady-cancel-rate", "0"])


def test_parse_args_phases_keep_order_and_bring_start() -> None:
    assert parse_args([]).phases == (
        "raw", "start", "steady", "steady-cancel", "shim", "cancel", "plugin-cancel",
        "graceful", "rss",
    )  # fmt: skip
    assert parse_args(["--phases", "shim,raw"]).phases == ("raw", "shim")
    # the steady figures and the burst cancel need the start phase's Running tasks
    assert parse_args(["--phases", "cancel"]).phases == ("start", "cancel")
    # the plugin's cancel runs on the racks the burst cancel frees
    assert parse_args(["--phases", "plugin-cancel"]).phases == ("start", "cancel", "plugin-cancel")
    assert parse_args(["--phases", "graceful"]).phases == ("start", "cancel", "graceful")
    assert parse_args(["--phases", "steady, raw"]).phases == ("raw", "start", "steady")
    with pytest.raises(SystemExit):
        parse_args(["--phases", "start,warp"])


# ---- Prometheus counters --------------------------------------------------


def _req(code: str, resource: str, sub: str, verb: str, value: int) -> str:
    group = "nico.dev" if resource else ""
    return (
        f'apiserver_request_total{{code="{code}",component="apiserver",dry_run="",'
        f'group="{group}",resource="{resource}",scope="namespace",subresource="{sub}",'
        f'verb="{verb}",version="v1alpha1"}} {value}\n'
    )


APISERVER_BEFORE = (
    "# HELP apiserver_request_total [STABLE] Counter of apiserver requests\n"
    "# TYPE apiserver_request_total counter\n"
    + _req("201", "nicotasks", "", "POST", 10)
    + _req("200", "nicotasks", "status", "PATCH", 4)
    + _req("200", "", "", "GET", 100)  # a non-resource URL: /metrics, /readyz
    + "# TYPE apiserver_request_duration_seconds histogram\n"
    'apiserver_request_duration_seconds_bucket{verb="GET",le="0.1"} 7\n'
    'apiserver_request_duration_seconds_count{verb="GET"} 7\n'
)

APISERVER_AFTER = (
    "# TYPE apiserver_request_total counter\n"
    + _req("201", "nicotasks", "", "POST", 15)
    + _req("200", "nicotasks", "status", "PATCH", 14)
    + _req("409", "nicotasks", "status", "PATCH", 2)
    + _req("200", "", "", "GET", 130)
)


def test_counter_samples_reads_one_counter_with_or_without_total() -> None:
    samples = counter_samples(APISERVER_BEFORE, "apiserver_request_total")
    assert sorted(samples.values()) == [4.0, 10.0, 100.0]  # the histogram is not counted
    temporal = (
        "# TYPE service_requests counter\n"
        'service_requests{namespace="default",operation="StartWorkflowExecution",'
        'service_name="frontend"} 3\n'
        "# TYPE service_requests_latency histogram\n"
        'service_requests_latency_count{operation="StartWorkflowExecution"} 3\n'
    )
    got = counter_samples(temporal, "service_requests")
    assert list(got.values()) == [3.0]
    assert dict(next(iter(got)))["operation"] == "StartWorkflowExecution"
    assert counter_samples(temporal, "missing_total") == {}


def test_counter_delta_new_label_sets_and_restarts() -> None:
    a = counter_samples(APISERVER_BEFORE, "apiserver_request_total")
    b = counter_samples(APISERVER_AFTER, "apiserver_request_total")
    grouped = group(counter_delta(a, b), apiserver_key)
    # POST +5, status PATCH +10 and a new label set (409) +2; /metrics GETs left out
    assert grouped == {"POST nicotasks": 5.0, "PATCH nicotasks/status": 12.0}
    key = (("verb", "GET"),)
    assert counter_delta({key: 50.0}, {key: 7.0}) == {key: 7.0}  # reset: the process restarted
    assert counter_delta({key: 7.0}, {key: 7.0}) == {}


def test_temporal_frontend_key_keeps_client_rpcs_only() -> None:
    key = temporal_frontend_key(["temporal_system", "nicotask-bench"])
    fe = {"service_name": "frontend", "namespace": "default", "operation": "StartWorkflowExecution"}
    assert key(fe) == "StartWorkflowExecution"
    assert key({**fe, "service_name": "history"}) is None
    assert key({**fe, "namespace": "nicotask-bench"}) is None
    assert key({**fe, "namespace": "nicotask_bench"}) is None  # as the server writes it
    assert key({**fe, "namespace": "temporal_system"}) is None


def test_per_item_subtracts_own_requests() -> None:
    got = per_item({"POST nicotasks": 5.0, "PATCH nicotasks/status": 12.0}, own=5, items=5)
    assert got["per_item"] == 2.4
    assert got["by_kind"] == {"PATCH nicotasks/status": 2.4, "POST nicotasks": 1.0}
    assert per_item({}, own=0, items=0)["per_item"] is None
    assert per_item({"GET x": 1.0}, own=3, items=1)["per_item"] == 0.0  # never negative


def test_calls_per_task_from_two_scrapes() -> None:
    api_a = counter_samples(APISERVER_BEFORE, "apiserver_request_total")
    api_b = counter_samples(APISERVER_AFTER, "apiserver_request_total")
    fe = (
        ("namespace", "default"),
        ("operation", "TerminateWorkflowExecution"),
        ("service_name", "frontend"),
    )
    bench_ns = (
        ("namespace", "nicotask-bench"),
        ("operation", "TerminateWorkflowExecution"),
        ("service_name", "frontend"),
    )
    before = calls.Scrape(at=10.0, own_api=100, api=api_a, temporal={fe: 1.0, bench_ns: 0.0})
    after = calls.Scrape(at=12.5, own_api=105, api=api_b, temporal={fe: 6.0, bench_ns: 40.0})
    got = calls.per_task(before, after, 5)
    assert got["apiserver"] == 2.4 and got["temporal"] == 1.0 and got["window_s"] == 2.5
    missing = calls.per_task(before, calls.Scrape(12.5, 105, None, None), 5)
    assert missing["apiserver"] is None and missing["temporal"] is None


def test_persistence_counts_both_stores_and_leaves_the_bench_namespace_out() -> None:
    text = (
        "# TYPE persistence_requests counter\n"
        'persistence_requests{namespace="default",operation="CreateWorkflowExecution"} 4\n'
        'persistence_requests{namespace="nicotask_bench",operation="CreateWorkflowExecution"} 9\n'
        'persistence_requests{operation="GetTransferTasks"} 2\n'
        "# TYPE visibility_persistence_requests counter\n"
        'visibility_persistence_requests{operation="RecordWorkflowExecutionStarted"} 4\n'
    )
    empty = calls.Scrape(at=0.0, own_api=0, api=None, temporal=None, persistence={})
    after = calls.Scrape(
        at=1.0, own_api=0, api=None, temporal=None, persistence=calls._stored(text)
    )
    assert calls.persistence(empty, after) == {
        "CreateWorkflowExecution": 4.0,
        "GetTransferTasks": 2.0,  # shard-wide: no namespace, kept
        "visibility RecordWorkflowExecutionStarted": 4.0,
    }
    assert calls.persistence(empty, after, exclude=())["CreateWorkflowExecution"] == 13.0
    got = calls.per_task(empty, after, 2)
    assert got["temporal_persistence"] == 5.0
    assert got["temporal_writes"] == 4.0  # Create and Record; GetTransferTasks reads
    unscraped = calls.Scrape(1.0, 0, None, None)
    assert calls.per_task(empty, unscraped, 2)["temporal_persistence"] is None


# ---- CPU from /proc ---------------------------------------------------------


def _stat_line(
    pid: int, comm: str, ppid: int, session: int, ticks: tuple[int, ...], started: int = 1000
) -> str:
    utime, stime, cutime, cstime = ticks
    # fields 3..22: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    # utime stime cutime cstime priority nice threads itrealvalue starttime
    rest = [
        "S",
        ppid,
        session,
        session,
        0,
        -1,
        0,
        0,
        0,
        0,
        0,
        utime,
        stime,
        cutime,
        cstime,
        20,
        0,
        1,
        0,
        started,
        12345,
        67,
    ]
    return f"{pid} ({comm}) " + " ".join(str(x) for x in rest)


def test_parse_stat_with_spaces_and_parentheses_in_the_name() -> None:
    st = parse_stat(_stat_line(42, "python (worker) 2", 7, 40, (100, 20, 3, 4), started=555))
    assert st == ProcStat(pid=42, ppid=7, session=40, started=555, ticks=127)


def _stats(lines: list[str]) -> dict[int, ProcStat]:
    return {s.pid: s for s in (parse_stat(ln) for ln in lines)}


def test_tree_pids_session_and_descendants() -> None:
    stats = _stats(
        [
            _stat_line(10, "wrapper", 1, 10, (0, 0, 0, 0)),
            _stat_line(11, "kube-apiserver", 10, 10, (0, 0, 0, 0)),
            _stat_line(12, "helper", 11, 99, (0, 0, 0, 0)),  # left the session: still a child
            _stat_line(20, "etcd", 1, 20, (0, 0, 0, 0)),
        ]
    )
    assert tree_pids(stats, 10) == {10, 11, 12}
    assert tree_pids(stats, 20) == {20}
    assert tree_pids(stats, 30) == set()  # gone


def test_cores_used_per_component_and_total() -> None:
    roots = {"operator": 10, "etcd": 20, "shim": 30}
    before = component_ticks(
        _stats(
            [
                _stat_line(10, "python", 1, 10, (100, 50, 0, 0)),
                _stat_line(11, "child", 10, 10, (10, 0, 0, 0)),
                _stat_line(20, "etcd", 1, 20, (500, 100, 0, 0)),
            ]
        ),
        roots,
    )
    after = component_ticks(
        _stats(
            [
                # the child exited and was reaped: its 10 + 20 ticks moved to cutime
                _stat_line(10, "python", 1, 10, (200, 50, 30, 0)),
                _stat_line(
                    13, "new child", 10, 10, (40, 0, 0, 0), started=9000
                ),  # started meanwhile
                _stat_line(20, "etcd", 1, 20, (600, 200, 0, 0)),
                _stat_line(30, "shim", 1, 30, (5, 0, 0, 0)),  # not in the first sample
            ]
        ),
        roots,
    )
    # 60 s at 100 ticks/s: operator 100 + 20 + 40 = 160 ticks, etcd 200 ticks
    cores = cores_used(before, after, 60.0, 100, ["operator", "etcd", "shim"])
    assert cores == {
        "operator": round(160 / 6000, 3),
        "etcd": round(200 / 6000, 3),
        "shim": None,
        "total": round(360 / 6000, 3),
    }
    assert cores_used(before, after, 0, 100, ["etcd"])["etcd"] is None


def test_cores_used_ignores_a_recycled_pid() -> None:
    roots = {"worker": 10}
    before = component_ticks(_stats([_stat_line(10, "w", 1, 10, (900, 0, 0, 0), 1)]), roots)
    # same pid, another start time: a new process whose ticks all fall in the window
    after = component_ticks(_stats([_stat_line(10, "w", 1, 10, (50, 0, 0, 0), 2)]), roots)
    assert cores_used(before, after, 1.0, 100, ["worker"])["worker"] == 0.5


# ---- targets ---------------------------------------------------------------


def passing_results() -> dict[str, Any]:
    return {
        "params": {"tasks": 1000},
        "raw": {"start_per_s": 100.0, "terminate_per_s": 200.0},
        "start": {"running": 1000, "tasks_per_s": 50.0},
        "steady": {"cpu_cores": {"total": 0.3}},
        "floor": {"floor_ms": 40.0},
        "steady_cancel": {"latency_ms": {"p50": 120.0, "p99": 250.0}},
        "cancel": {"terminated": 1000, "cancels_per_s": 100.0},
        "calls": {"per_cancel": {"apiserver": 3.0}, "per_start": {"apiserver": 5.0}},
        "rss": {"operator_mb": 150.0, "tasks": 10001},
        "shim": {
            "fresh": {"p50_over_patch": 2.0, "requests_per_s": 300.0},
            "repeat": {"latency_ms": {"p99": 20.0}},
        },
    }


def test_targets_pass_at_their_limits() -> None:
    verdicts = {t["figure"]: t["verdict"] for t in evaluate(passing_results())}
    assert len(verdicts) == 13
    assert set(verdicts.values()) == {PASS}
    assert scale_note(passing_results()) == ""


def test_targets_fail_just_past_their_limits() -> None:
    r = passing_results()
    r["start"] = {"running": 999, "tasks_per_s": 49.9}
    r["steady"]["cpu_cores"]["total"] = 0.31
    r["steady_cancel"]["latency_ms"] = {"p50": 120.1, "p99": 250.1}
    r["cancel"] = {"terminated": 999, "cancels_per_s": 99.9}
    r["calls"] = {"per_cancel": {"apiserver": 3.01}, "per_start": {"apiserver": 5.01}}
    r["rss"]["operator_mb"] = 150.1
    r["shim"] = {
        "fresh": {"p50_over_patch": 2.01, "requests_per_s": 299.9},
        "repeat": {"latency_ms": {"p99": 20.1}},
    }
    rows_ = evaluate(r)
    assert {t["verdict"] for t in rows_} == {FAIL}
    limits = {t["figure"]: t["limit"] for t in rows_}
    assert limits["start.tasks_per_s"] == 50.0  # 0.5 x raw StartWorkflow/s
    assert limits["cancel.cancels_per_s"] == 100.0  # 0.5 x raw TerminateWorkflow/s
    assert limits["steady_cancel.latency_ms.p50"] == 120.0  # 3 x the loaded floor


def test_targets_missing_figures_and_small_runs() -> None:
    r = passing_results()
    del r["steady"]
    r["raw"] = None  # the raw phase did not finish: nothing to compare the start rate to
    r["rss"] = {"operator_mb": 90.0, "tasks": 300}  # too few tasks for a verdict
    r["params"] = {"tasks": 50}
    r["start"]["running"] = 50
    by_figure = {t["figure"]: t for t in evaluate(r)}
    assert by_figure["steady.cpu_cores.total"]["verdict"] == NOT_REACHED
    assert by_figure["start.tasks_per_s"]["verdict"] == NOT_APPLICABLE
    assert by_figure["start.running"]["verdict"] == PASS  # every one of the 50
    assert by_figure["rss.operator_mb"]["verdict"] == NOT_APPLICABLE
    assert "only 300 tasks" in by_figure["rss.operator_mb"]["note"]
    r["rss"]["operator_mb"] = 150.5  # already over with 300 tasks: it only grows
    assert {t["figure"]: t for t in evaluate(r)}["rss.operator_mb"]["verdict"] == FAIL
    assert "--tasks 1000" in scale_note(r)
    assert evaluate({})[0]["verdict"] == NOT_REACHED


def test_target_rows_and_table_show_verdicts() -> None:
    r = passing_results()
    r["shim"]["repeat"]["latency_ms"]["p99"] = 35.5
    table = {t[1]: t for t in target_rows(r)}
    assert table["shim repeated cancel p99 <= 20 ms"][:3] == (
        FAIL,
        "shim repeated cancel p99 <= 20 ms",
        "35.50",
    )
    text = render_table(r)
    assert "\ntargets" in text
    assert any(ln.startswith("FAIL") and "repeated cancel" in ln for ln in text.splitlines())


# ---- bounded concurrency -------------------------------------------------------


async def test_bounded_skips_items_after_the_deadline() -> None:
    import asyncio
    import time

    seen: list[int] = []

    async def slow(i: int) -> None:
        seen.append(i)
        await asyncio.sleep(0.05)

    errors = await bounded(range(10), slow, 2, deadline=time.monotonic() + 0.08)
    assert 2 <= len(seen) < 10
    assert len(errors) == 10 - len(seen)
    assert all(isinstance(e, DeadlinePassed) for e in errors)
    assert await bounded(range(3), slow, 2) == []


def test_phase_budgets_grow_with_the_work_and_stay_capped() -> None:
    from bench.phases import EXTRA_MAX_S, Settings

    cfg = Settings(tasks=1000, shim_cancels=100)
    assert cfg.steady_cancels == 100 and cfg.racks == 1200
    assert cfg.start_timeout() == 300 and cfg.burst_timeout() == 180
    assert cfg.extra_timeout(200) == 120
    assert cfg.extra_timeout(200, start_rate=3.0) == 120  # a fast start: the fixed budget
    assert cfg.extra_timeout(200, start_rate=2.0) == 150  # 1.5 x what the start rate needs
    assert cfg.extra_timeout(200, start_rate=0.5) == EXTRA_MAX_S
    assert Settings(phases=("start", "cancel")).racks == 200  # no extra tasks


def test_raw_budget_covers_both_raw_deadlines_and_their_terminates() -> None:
    from bench.phases import FIRST_TASK_EACH_S, RAW_EACH_S, RAW_S, Phases, Settings

    ph = Phases(None, Settings(tasks=1000, raw_workflows=1000))  # type: ignore[arg-type]
    deadlines = (RAW_S + 1000 * RAW_EACH_S) + (RAW_S + 1000 * FIRST_TASK_EACH_S)
    assert ph.raw_budget() == pytest.approx(2 * deadlines) == 840


async def test_first_tasks_count_each_workflow_once() -> None:
    import dataclasses

    from bench.rawtemporal import FirstTasks
    from temporalio.testing import ActivityEnvironment

    counter = FirstTasks(want=2)
    env = ActivityEnvironment()
    for workflow_id in ("w1", "w1"):  # a retried attempt of the same first task
        env.info = dataclasses.replace(env.info, workflow_id=workflow_id)
        await env.run(counter.done)
    assert counter.seen == 1 and not counter.all_seen.is_set()
    env.info = dataclasses.replace(env.info, workflow_id="w2")
    await env.run(counter.done)
    assert counter.seen == 2 and counter.all_seen.is_set()


def test_cpu_per_task_row_names_each_component_and_keeps_the_bench_apart() -> None:
    cpu = {"operator": 12.5, "worker": None, "total": 12.5, "bench": 3.25}
    table = rows({"start": {"tasks": 2, "cpu_ms_per_task": cpu}})
    values = {(s, f): v for s, f, v in table}
    assert values[("start", "CPU ms per task (operator, worker)")] == (
        "12.5 / - = 12.5 (and the bench itself: 3.2)"
    )
    assert not any(f.startswith("CPU") for s, f, _ in table if s == "cancel")


def test_rows_of_the_plugin_cancel() -> None:
    out = rows({"plugin_cancel": {
        "tasks": 1000, "terminated": 1000, "plugin_s": 18.03, "wall_s": 52.9,
        "cancels_per_s": 18.9,
        "summary": "2001 tasks: 1000 cancelled, 1001 already cancelled, 0 already finished",
    }})  # fmt: skip
    got = {figure: value for section, figure, value in out if section == "plugin cancel"}
    assert got["kubectl nico cancel --all: tasks Terminated"] == "1000 of 1000"
    assert got["the plugin's process (list + patches, 32 in flight)"] == "18.0 s"
    assert got["wall (exec -> last Terminated; burst: first patch ->)"] == "52.9 s"
    assert got["cancels/s"] == "18.9"
    assert got["its summary"].startswith("2001 tasks: 1000 cancelled")


def test_rows_of_the_graceful_stops() -> None:
    out = rows({"graceful": {
        "tasks": 200, "running": 200, "late": 42, "in_stage": 158, "terminated": 158,
        "as_expected": 157, "stage_s": 2.0,
        "latency_ms": {"p50": 1830.0, "p99": 2400.0},
        "after_stage_ms": {"p50": 310.0, "p99": 900.0},
        "patch_after_running_ms": {"p50": 12.0, "p99": 80.0},
    }})  # fmt: skip
    got = {figure: value for section, figure, value in out if section == "graceful"}
    assert got["stopped in stage 1: Terminated (as expected)"] == "158 of 158 (157)"
    assert got["stopped too late to skip stage 2 (late, not measured)"] == "42 of 200"
    assert got["Running seen -> patch sent p50 / p99 (the bench's own delay)"] == "12.0 / 80.0 ms"
    assert got["patch -> Terminated p50 / p99 (incl. <= 2.0 s of running stage)"] == (
        "1830.0 / 2400.0 ms"
    )
    assert got["running stage's end -> Terminated p50 / p99 (hard: cancel's patch ->)"] == (
        "310.0 / 900.0 ms"
    )
