"""nicotask.logs: JSON and text lines, and the task's namespace/name/uid on lines about a task."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nicotask import logs


@pytest.fixture
def capture() -> Iterator[io.StringIO]:
    """The root handler as configure_logging(json_logs=True) builds it, into a buffer."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    logs.configure_logging(json_logs=True)
    buf = io.StringIO()
    root.handlers[0].setStream(buf)  # type: ignore[attr-defined]
    yield buf
    root.handlers[:] = saved
    root.setLevel(level)


def lines(buf: io.StringIO) -> list[dict[str, str]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_plain_line_has_no_task_fields(capture: io.StringIO) -> None:
    logging.getLogger("nicotask.x").info("hello %s", "world")
    (line,) = lines(capture)
    assert line["message"] == "hello world" and line["level"] == "INFO"
    assert line["logger"] == "nicotask.x"
    assert "uid" not in line and "namespace" not in line


def test_task_logger_names_the_task(capture: io.StringIO) -> None:
    log = logs.task_logger(logging.getLogger("nicotask.lifecycle"), "ns1", "t1", "u-1")
    log.warning("retrying")
    (line,) = lines(capture)
    assert (line["namespace"], line["name"], line["uid"]) == ("ns1", "t1", "u-1")
    assert line["logger"] == "nicotask.lifecycle"


async def test_task_context_follows_awaits_and_threads(capture: io.StringIO) -> None:
    log = logging.getLogger("nicotask.worker")

    def in_thread() -> None:
        log.info("from a thread")

    with logs.task_context("ns2", "t2", "u-2"):
        await asyncio.sleep(0)
        log.info("in the activity")
        await asyncio.to_thread(in_thread)
    log.info("after")
    got = lines(capture)
    assert [(g.get("uid"), g["message"]) for g in got] == [
        ("u-2", "in the activity"),
        ("u-2", "from a thread"),
        (None, "after"),
    ]
    assert got[0]["namespace"] == "ns2" and got[0]["name"] == "t2"


def test_kopf_object_logger_fields(capture: io.StringIO) -> None:
    """kopf's per-object lines (extra k8s_ref) name their task too."""
    ref = {"kind": "NicoTask", "namespace": "ns3", "name": "t3", "uid": "u-3"}
    logging.getLogger("kopf.objects").warning("handler failed", extra={"k8s_ref": ref})
    (line,) = lines(capture)
    assert (line["namespace"], line["name"], line["uid"]) == ("ns3", "t3", "u-3")


def test_text_format_appends_the_task() -> None:
    record = logging.LogRecord("nicotask.x", logging.INFO, __file__, 1, "step done", (), None)
    with logs.task_context("ns4", "t4", "u-4"):
        logs.TaskFieldsFilter().filter(record)
    assert logs.TextFormatter().format(record).endswith("step done [ns4/t4 uid=u-4]")


def test_exception_in_json(capture: io.StringIO) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("nicotask.x").exception("failed")
    (line,) = lines(capture)
    assert "ValueError: boom" in line["exc"]


def test_lines_logged_inside_a_kopf_handler_name_its_task(capture: io.StringIO) -> None:
    """The operator's lifecycle code logs with a module logger; inside a kopf handler the
    filter finds the object through kopf's cause contextvar (no change to the handlers)."""
    import types

    import kopf
    from kopf._core.actions.execution import cause_var
    from kopf._core.actions.loggers import ObjectLogger

    body = kopf.Body(
        {
            "apiVersion": "nico.dev/v1alpha1",
            "kind": "NicoTask",
            "metadata": {"namespace": "ns5", "name": "t5", "uid": "u-5"},
        }
    )
    cause = types.SimpleNamespace(logger=ObjectLogger(body=body, settings=kopf.OperatorSettings()))
    token = cause_var.set(cause)  # type: ignore[arg-type]
    try:
        logging.getLogger("nicotask.lifecycle").warning("task retrying")
    finally:
        cause_var.reset(token)
    logging.getLogger("nicotask.lifecycle").warning("outside")
    first, second = lines(capture)
    assert (first["namespace"], first["name"], first["uid"]) == ("ns5", "t5", "u-5")
    assert "uid" not in second


def test_shim_process_logs_json(tmp_path: Path) -> None:
    """`nicotask shim` with NICOTASK_JSON_LOGS: uvicorn's lines and ours are JSON (here the
    startup fails on an empty kubeconfig, which is logged and ends the process)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("{}\n")
    env = {**os.environ, "NICOTASK_JSON_LOGS": "true", "KUBECONFIG": str(kubeconfig)}
    proc = subprocess.run(
        [sys.executable, "-m", "nicotask", "shim", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    logged = [
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        if line and not line.startswith("nicotask shim: no token issuer")
    ]
    parsed = [json.loads(line) for line in logged]
    assert {p["logger"] for p in parsed} >= {"uvicorn.error"}
    assert any(p["message"] == "Application startup failed. Exiting." for p in parsed)


def test_a_log_line_never_imports_kopf(
    capture: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the worker, kopf is not loaded: the filter must not import it to look for a kopf
    handler's object. A workflow's log line runs the filter inside Temporal's sandbox,
    which re-imports kopf for each run: slow enough to trip the deadlock detector, and
    the workflow's cache eviction then never finished (found by the fault soak)."""
    import builtins

    imported: list[str] = []
    real_import = builtins.__import__

    def spy(name: str, *args: object, **kwargs: object) -> object:
        imported.append(name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    for name in [m for m in sys.modules if m == "kopf" or m.startswith("kopf.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(builtins, "__import__", spy)
    logging.getLogger("nicotask.temporal.workflows").warning("could not publish")
    monkeypatch.undo()
    (line,) = lines(capture)
    assert line["message"] == "could not publish" and "uid" not in line
    assert not [n for n in imported if n.startswith("kopf")], imported
