"""The readers of `python -m bench --profile`'s profiles: py-spy's collapsed stacks,
`go tool pprof -traces`, and the per-thread CPU split."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import profsummary as ps
from bench.__main__ import parse_args
from bench.profiling import thread_split, thread_ticks

SITE = "/repo/.venv/lib/python3.11/site-packages"
STDLIB = "/usr/lib/python3.11"
OURS = "/repo/operator/nicotask"

COLLAPSED = f"""\
thread (101): MainThread;run (asyncio/x);_run_once ({STDLIB}/asyncio/base_events.py);reconcile ({OURS}/operator/controller.py);model_validate ({SITE}/pydantic/main.py) 6
thread (101): MainThread;run (asyncio/x);_run_once ({STDLIB}/asyncio/base_events.py);reconcile ({OURS}/operator/controller.py) 2
thread (101): MainThread;operator_main ({OURS}/operator_main.py);_run_once ({STDLIB}/asyncio/base_events.py);Handle._run ({STDLIB}/asyncio/events.py);process ({SITE}/kopf/_core/reactor/processing.py);read ({SITE}/aiohttp/streams.py) 10
thread (202): ThreadPoolExecutor-0_0;activate ({SITE}/temporalio/worker/_workflow_instance.py) 2
"""  # noqa: E501


def test_collapsed_stacks_by_package_function_and_our_caller() -> None:
    stacks = ps.parse_collapsed(COLLAPSED + "not a sample line\n")
    assert stacks.total == 20
    assert stacks.threads == {101, 202}
    s = ps.summarize_stacks(stacks)
    assert dict(s.self_by_package) == {
        "kubernetes/aiohttp": 50.0,
        "pydantic": 30.0,
        "nicotask": 10.0,
        "temporalio": 10.0,
    }
    # Our innermost function carries the library work below it; the rest goes to the
    # framework that drove it (its outermost frame outside asyncio and the stdlib).
    # Frames above the event loop's callback (the entry point) do not count.
    assert dict(s.by_our_caller) == {
        "(no nicotask frame: kopf)": 50.0,
        "reconcile (nicotask/operator/controller.py)": 40.0,
        "(no nicotask frame: temporalio)": 10.0,
    }
    # Total counts a function once per sample, wherever it is below the loop's callback.
    totals = dict(s.total_by_function)
    assert totals["_run_once (asyncio/base_events.py)"] == 40.0
    assert totals["process (kopf/_core/reactor/processing.py)"] == 50.0
    assert "operator_main (nicotask/operator_main.py)" not in totals
    assert s.self_by_function[0] == ("read (aiohttp/streams.py)", 50.0)


def test_hex_thread_ids_and_stacks_without_threads() -> None:
    stacks = ps.parse_collapsed("thread (0x1F): T;f (/x/nicotask/a.py) 3\ng (/x/y.py) 1\n")
    assert stacks.threads == {31}
    assert stacks.total == 4
    assert ps.parse_frame("f (/x/y.py)") == ps.Frame("f", "/x/y.py")


@pytest.mark.parametrize(
    ("filename", "package"),
    [
        (f"{SITE}/kopf/_core/x.py", "kopf"),
        (f"{SITE}/kubernetes_asyncio/client/api_client.py", "kubernetes/aiohttp"),
        (f"{SITE}/temporalio/worker/_workflow.py", "temporalio"),
        (f"{SITE}/pydantic_core/core_schema.py", "pydantic"),
        (f"{STDLIB}/json/decoder.py", "json"),
        (f"{OURS}/kube/status.py", "nicotask"),
        (f"{STDLIB}/asyncio/events.py", "asyncio"),
        (f"{STDLIB}/enum.py", "stdlib (other)"),
        (f"{SITE}/something/else.py", "other"),
    ],
)
def test_package_of(filename: str, package: str) -> None:
    assert ps.package_of(filename) == package


TRACES = """\
File: kube-apiserver
Type: cpu
-----------+-------------------------------------------------------
      30ms   encoding/json.(*decodeState).object
             k8s.io/apiserver/pkg/endpoints/handlers.UpdateResource.func1
             net/http.HandlerFunc.ServeHTTP
-----------+-------------------------------------------------------
      10ms   k8s.io/apiserver/pkg/storage/cacher.(*cacheWatcher).process
-----------+-------------------------------------------------------
    0.05s   runtime.gcDrain
             runtime.gcBgMarkWorker
-----------+-------------------------------------------------------
      10ms   github.com/google/cel-go/interpreter.(*evalEq).Eval
             k8s.io/apiextensions-apiserver/pkg/apiserver.(*crdHandler).serveResource.PatchResource.func1
-----------+-------------------------------------------------------
      20ms   runtime.mallocgc
             github.com/prometheus/client_golang/prometheus/promhttp.HandlerFor.func1
-----------+-------------------------------------------------------
"""


def test_apiserver_traces_by_activity_and_kind_of_code() -> None:
    traces = ps.parse_traces(TRACES)
    assert [v for v, _ in traces] == [30.0, 10.0, 50.0, 10.0, 20.0]
    total, left_out, activities, kinds = ps.apiserver_shares(traces)
    # The bench's own /metrics scrape is counted apart, and out of the shares.
    assert (total, left_out) == (120.0, 20.0)
    assert dict(activities) == {
        "GC (background)": 50.0,
        "update (PUT)": 30.0,
        "watch: encode and send to watchers": 10.0,
        "patch": 10.0,
    }
    # Each sample goes to the innermost frame of a known kind.
    assert dict(kinds) == {
        "GC": 50.0,
        "JSON encode/decode": 30.0,
        "other (runtime, maps, reflection, ...)": 10.0,
        "CEL rules": 10.0,
    }
    assert ps.apiserver_shares([]) == (0.0, 0.0, [], [])


def test_thread_split_python_and_native(tmp_path: Path) -> None:
    before = {1: ("python", 100), 2: ("tokio-runtime-w", 50), 3: ("tokio-runtime-w", 10)}
    after = {1: ("python", 160), 2: ("tokio-runtime-w", 70), 3: ("tokio-runtime-w", 15)}
    after[4] = ("grpc", 5)  # started in the window: all its ticks count
    python, native = thread_split(before, after, python_tids={1})
    assert python == 60
    assert native == {"tokio-runtime-w": (2, 25), "grpc": (1, 5)}
    # /proc layout: <pid>/task/<tid>/stat, utime and stime are fields 14 and 15.
    task = tmp_path / "7" / "task" / "8"
    task.mkdir(parents=True)
    (task / "stat").write_text("8 (tokio (x)) S 1 7 7 0 -1 0 0 0 0 0 11 4 0 0 20 0 9\n")
    assert thread_ticks(7, tmp_path) == {8: ("tokio (x)", 15)}
    assert thread_ticks(99, tmp_path) == {}


def test_profile_flag() -> None:
    assert parse_args([]).profile is None
    args = parse_args(["--profile", "out", "--profile-rate", "100"])
    assert (args.profile, args.profile_rate) == ("out", 100)
