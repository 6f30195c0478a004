"""What the workflow sandbox re-imports for each new run, and the bytecode warning.

The sandbox re-executes the workflow module (and any module not passed through)
for every workflow run it creates: that is per-start CPU in the worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib._bootstrap as bootstrap
import sys
from typing import Any

import pytest
from temporalio.workflow import _Definition

from nicotask.temporal import worker
from nicotask.temporal.workflows import NicoTaskWorkflow


def _modules_loaded_by_one_new_run(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    defn = _Definition.must_from_class(NicoTaskWorkflow)
    loaded: list[str] = []

    async def create_two() -> None:
        worker.WORKFLOW_RUNNER.prepare_workflow(defn)  # warms the host's own imports
        original = bootstrap._load_unlocked

        def spy(spec: Any) -> Any:
            loaded.append(spec.name)
            return original(spec)

        monkeypatch.setattr(bootstrap, "_load_unlocked", spy)
        worker.WORKFLOW_RUNNER.prepare_workflow(defn)
        monkeypatch.setattr(bootstrap, "_load_unlocked", original)

    asyncio.run(create_two())
    return loaded


def test_a_new_run_reexecutes_only_the_workflow_module_and_its_packages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded = _modules_loaded_by_one_new_run(monkeypatch)
    # Not the models, pydantic, kubernetes-asyncio or the lazy installer.
    assert loaded == ["nicotask", "nicotask.temporal", "nicotask.temporal.workflows"]


def test_a_new_run_builds_no_dataclass(monkeypatch: pytest.MonkeyPatch) -> None:
    # Making a dataclass execs source for its methods: in the re-executed workflow
    # module that was paid again on every start (its types live in passed-through ones).
    built: list[str] = []
    original = dataclasses._process_class  # type: ignore[attr-defined]

    def spy(cls: type, *args: Any, **kwargs: Any) -> Any:
        built.append(cls.__qualname__)
        return original(cls, *args, **kwargs)

    defn = _Definition.must_from_class(NicoTaskWorkflow)

    async def create_two() -> None:  # the sandbox wants a running loop
        worker.WORKFLOW_RUNNER.prepare_workflow(defn)
        monkeypatch.setattr(dataclasses, "_process_class", spy)
        worker.WORKFLOW_RUNNER.prepare_workflow(defn)

    asyncio.run(create_two())
    assert built == []


def test_bytecode_warning_only_when_python_may_not_write_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    spec = sys.modules[NicoTaskWorkflow.__module__].__spec__
    assert spec is not None
    monkeypatch.setattr(spec, "cached", str(tmp_path / "workflows.cpython.pyc"))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    assert worker.workflow_bytecode_missing()
    (tmp_path / "workflows.cpython.pyc").write_bytes(b"")
    assert not worker.workflow_bytecode_missing()
    (tmp_path / "workflows.cpython.pyc").unlink()
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    assert not worker.workflow_bytecode_missing()
