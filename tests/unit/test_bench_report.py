"""The bench's pure helpers: percentiles, summaries, ratios, /proc parsing, table and JSON."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

# bench/ lives at the repository root, which is not on pytest's path by default.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.__main__ import parse_args
from bench.measure import metric_sum, parse_status_kb, percentile, rate, ratio, summarize
from bench.report import fmt, render_table, rows, write_json

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
        "start": {
            "tasks": 3, "running": 3, "total_s": 1.5, "tasks_per_s": 2.0, "latency_ms": lat
        },
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
    assert values[("shim", "raw API-server PATCH p50 / p99 (just before)")] == "2.0 / 3.0 ms"
    assert values[("shim", "fresh cancel: 202s")] == "3 of 3"
    assert values[("shim", "fresh cancel: p50 / p99 over raw PATCH p50")] == "1.50 / 2.25 x"
    assert values[("rss", "operator RSS")].startswith("skipped")


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
    quick = parse_args(["--quick"])
    assert (quick.tasks, quick.rss_tasks, quick.shim_cancels) == (50, 1000, 30)
    assert parse_args(["--quick", "--tasks", "7"]).tasks == 7
    with pytest.raises(SystemExit):
        parse_args(["--tasks", "1001"])
