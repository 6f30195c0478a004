"""Replays of recorded NicoTaskWorkflow histories, offline (no Temporal server).

histories/publish-timeout-then-replay.json was recorded by the fault soak:
the task's first progress write (a local activity) timed out while the worker was
starved of CPU, the workflow retried it after a 0.2 s timer, then its workflow task
timed out and another worker replayed the history. The replay took another path
(the timed-out write arrives there as a bare TimeoutError, which was not caught) and
failed with "Nondeterminism error: No command scheduled for event TimerStarted": the
task stayed Running for good and its rack never ran the next task.
"""

from __future__ import annotations

from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from nicotask.temporal.workflows import NicoTaskWorkflow

HISTORIES = Path(__file__).parent / "histories"


async def test_a_timed_out_progress_write_replays() -> None:
    path = HISTORIES / "publish-timeout-then-replay.json"
    replayer = Replayer(workflows=[NicoTaskWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(
        WorkflowHistory.from_json(path.stem, path.read_text()), raise_on_replay_failure=False
    )
    assert result.replay_failure is None, result.replay_failure
