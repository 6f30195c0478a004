"""The README's performance table is the committed bench run's (bench/readme.py)."""

from __future__ import annotations

import copy
import json

import pytest
from bench import readme
from bench.report import LATEST


@pytest.fixture(scope="module")
def latest() -> dict:
    return json.loads(LATEST.read_text())


def test_readme_shows_the_committed_figures() -> None:
    assert readme.main(["--check"]) == 0, "run `python -m bench.readme`"


def test_table_rows(latest: dict) -> None:
    r = copy.deepcopy(latest)
    r["params"]["tasks"] = 1000
    r["start"].update(running=999, tasks=1000, total_s=54.4, tasks_per_s=18.4)
    r["raw"].update(start_per_s=76.0, first_task_per_s=28.5)
    r["start"]["cpu_ms_per_task"] = {
        "operator": 11.0,
        "worker": 0.2,
        "temporal": 33.3,
        "total": 44.5,
        "bench": 3.5,
    }
    rows = dict(readme.rows(r))
    assert rows["tasks Running after the start phase"] == (
        "999 of 1000 in 54 s (18.4/s; raw StartWorkflow 76.0/s)"
    )
    assert rows["Temporal alone: StartWorkflow + a first workflow task"] == (
        "28.5/s (0.38 x raw StartWorkflow)"
    )
    # Largest first, the bench's own CPU and components under 0.5 ms left out.
    assert rows["CPU per started task, all components"] == "44 ms: Temporal 33, operator 11"


def test_missing_figures_show_as_dashes(latest: dict) -> None:
    r = {k: v for k, v in latest.items() if k not in ("shim", "rss")}
    rows = dict(readme.rows(r))
    assert rows["REST shim, repeated cancels of Terminated tasks"] == readme.MISSING
    assert rows["operator RSS with the NicoTasks present"] == readme.MISSING
    assert rows["API-server calls per start / per cancel"] != readme.MISSING


def test_refresh_replaces_only_the_block(latest: dict) -> None:
    text = f"intro\n{readme.BEGIN}\nold\n{readme.END}\noutro\n"
    out = readme.refresh(text, latest)
    assert out.startswith("intro\n" + readme.BEGIN) and out.endswith(readme.END + "\noutro\n")
    assert "old" not in out and readme.refresh(out, latest) == out
    with pytest.raises(ValueError):
        readme.refresh("no markers", latest)


def test_the_readme_is_a_front_door() -> None:
    """No performance history in the README: that is bench/README.md's."""
    text = readme.README.read_text()
    perf = text[text.index("## Performance") : text.index("## Development")]
    for word in ("round", "issue", "before (", "commit "):
        assert word not in perf.lower(), word
