"""The README's table of the dev server and the Temporal server side by side."""

from __future__ import annotations

from typing import Any

from bench import sidebyside


def _run(raw_start: float, first: float, start: float, temporal_cpu: float) -> dict[str, Any]:
    return {
        "params": {"tasks": 1000},
        "machine": {"time": "2026-12-06T22:00:00+0000", "nproc": 2, "loadavg_start": [9.5]},
        "raw": {"start_per_s": raw_start, "terminate_per_s": 100.0, "first_task_per_s": first},
        "start": {
            "tasks": 1000,
            "running": 1000,
            "tasks_per_s": start,
            "cpu_ms_per_task": {
                "operator": 10.0,
                "worker": 15.0,
                "kube-apiserver": 20.0,
                "etcd": 4.0,
                "shim": 1.0,
                "temporal": temporal_cpu,
                "postgres": 12.0,
                "total": 62.0 + temporal_cpu,
                "bench": 3.0,
            },
        },
        "steady": {
            "cpu_cores": {"temporal": 0.1, "postgres": 0.02, "operator": 0.01, "total": 0.15}
        },
    }


def test_each_column_compares_with_its_own_run() -> None:
    rows = dict(sidebyside.rows(_run(200.0, 50.0, 40.0, 30.0)))
    assert rows["raw StartWorkflow / TerminateWorkflow"] == "200.0/s / 100.0/s"
    assert rows["Temporal's own start with a first workflow task"] == "50.0/s (0.25 x raw start)"
    assert rows["nicotask start (create -> Running)"] == (
        "40.0/s (0.80 x Temporal's own; 1000 of 1000 Running)"
    )
    # nicotask's side (operator, worker, shim, kube-apiserver, etcd) and Temporal's
    # (the server and PostgreSQL), the bench's own CPU in neither.
    assert rows["CPU per start"] == "50 ms nicotask + 42 ms Temporal"
    assert rows["steady CPU, all tasks Running and idle"] == "0.15 cores (Temporal 0.12)"
    assert rows["burst cancel"] == sidebyside.MISSING  # no burst phase in this run


def test_table_and_refresh() -> None:
    dev, server = _run(80.0, 28.0, 18.0, 33.0), _run(200.0, 50.0, 40.0, 30.0)
    table = sidebyside.table(dev, server)
    assert "| nicotask start (create -> Running) | 18.0/s (0.64 x Temporal's own;" in table
    assert "| 40.0/s (0.80 x Temporal's own; 1000 of 1000 Running) |" in table
    text = f"intro\n{sidebyside.BEGIN}\nold\n{sidebyside.END}\noutro\n"
    out = sidebyside.refresh(text, dev, server)
    assert "old" not in out and out.endswith(sidebyside.END + "\noutro\n")
    assert sidebyside.refresh(out, dev, server) == out
    assert sidebyside.refresh("no block", dev, server) == "no block"
