"""Temporal side of nicotask: the NicoTaskWorkflow, its activities, client and worker.

Who writes what into a NicoTask's status:
- the worker, through the `publish_progress` activity, writes only
  non-terminal progress: status Running (with started and message "Running")
  and the live report, at start, at each step and stage transition and once
  more with the final report. It never overwrites a terminal state
  (Kube.update_task_status refuses it and the decision returns None), so a
  late progress write can never undo a cancel;
- the operator writes every terminal status (Succeeded, Failed, Terminated)
  from what Temporal recorded: the WorkflowOutcome the workflow returns, or
  the confirmed terminate. A failing rule does not fail the workflow: it
  returns an outcome with status Failed.
"""

from nicotask.temporal.models import (
    PUBLISH_PROGRESS,
    RUN_STEP_ACTION,
    WORKFLOW_NAME,
    ComponentTarget,
    ProgressUpdate,
    StepActivityInput,
    StepResult,
    TaskRef,
    WorkflowInput,
    WorkflowOutcome,
    build_workflow_input,
)

__all__ = [
    "PUBLISH_PROGRESS",
    "RUN_STEP_ACTION",
    "WORKFLOW_NAME",
    "ComponentTarget",
    "ProgressUpdate",
    "StepActivityInput",
    "StepResult",
    "TaskRef",
    "WorkflowInput",
    "WorkflowOutcome",
    "build_workflow_input",
]
