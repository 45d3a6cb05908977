"""Cost-allocation tags: what lets Cost Explorer split the node's bill by node, workflow and run.

- ECS tasks: RunTask's ``Tags`` name the workflow and the run, read from the execution input
  (``$.run.tags``: one short path per task state keeps a 1,000-processor definition under 1 MB);
  ``PropagateTags: TASK_DEFINITION`` adds the node's tag, set on each task definition it registers.
- State machines and Lambda functions carry the stack's tags (the node; a state machine also its
  workflow). Step Functions has no tags per execution: an execution is found by its name, the run id.
Activate the tag keys in the Billing console (Cost allocation tags) for Cost Explorer to show them.
"""

from __future__ import annotations

NODE_TAG = "pennflow:node"
WORKFLOW_TAG = "pennflow:workflow"
RUN_TAG = "pennflow:run"


RUN_TAGS_PATH = "$.run.tags"  # where each compiled ``ecs:runTask.sync`` state reads its ``Tags``


def run_task_tags(workflow_name: str, run_id: str) -> list[dict[str, str]]:
    """The ``Tags`` of every ECS task of a run (RunTask's shape), carried in the execution input."""
    return [{"Key": WORKFLOW_TAG, "Value": workflow_name}, {"Key": RUN_TAG, "Value": run_id}]
