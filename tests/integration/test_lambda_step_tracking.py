"""A lambda step reaches the run's step records live, and its lines its archive, as an ECS step's: the
real bootstrap runs an invocation against a loopback Runtime API and a loopback EventBridge/Logs, and
what it sent is replayed into moto (the status rule's event into the tracker, the log calls into
CloudWatch Logs), so the names and fields the node reads are the ones the bootstrap writes."""

from __future__ import annotations

import gzip
import json
import os
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

from pennflow.api.logs import RunLogSource, run_logs
from pennflow.node.finalize import archive_logs
from pennflow.node.lifecycle import prepare_run
from pennflow.node.tracking import handle_event
from pennflow.processors import lambda_bootstrap as boot
from pennflow.workflow.runs import Status
from tests.fakes.lambda_runtime import fake_aws, fake_runtime
from tests.integration import aws_fixtures
from tests.integration.aws_fixtures import LOG_BUCKET, PROCESSOR_LOG_GROUP, REGION, MotoNode
from tests.integration.test_lambda_runs import functions_of, lambda_workflow, with_functions

mocked_aws = aws_fixtures.mocked_aws
moto_node = aws_fixtures.moto_node
SCRIPT = (
    "import os, sys; print('thumbs for', os.environ['RUN_ID']); sys.exit(int(os.environ.get('EXIT', '0')))"
)


@pytest.fixture
def lambda_run(moto_node: MotoNode) -> tuple[MotoNode, str, str]:
    with_functions(moto_node)
    workflow = lambda_workflow()
    moto_node.register(workflow)
    result = prepare_run(moto_node.create_run(workflow).run_id, moto_node.node)
    assert result.outcome == "started", result.detail
    (function_arn,) = functions_of(result).values()
    return moto_node, result.run_id, function_arn


def invoke(run_id: str, function_arn: str, tmp_path: Path, request_id: str, **env: str) -> Any:
    """One invocation of the real bootstrap; what it sent to EventBridge and CloudWatch Logs."""
    variables = {"RUN_ID": run_id, "PROCESSOR_ID": "thumbs", "OUTPUT_DIR": str(tmp_path / "out"), **env}
    event = {"processorId": "thumbs", "environment": [{"Name": k, "Value": v} for k, v in variables.items()]}
    with fake_aws() as aws, fake_runtime() as runtime:
        runtime.invoke(event, request_id)
        environ = {
            "PATH": os.environ["PATH"],
            "AWS_REGION": REGION,
            "AWS_LAMBDA_FUNCTION_NAME": function_arn.rsplit(":", 1)[-1],
            boot.LOG_GROUP_VAR: PROCESSOR_LOG_GROUP,
            boot.EVENTS_ENDPOINT_VAR: aws.url,
            boot.LOGS_ENDPOINT_VAR: aws.url,
            boot.COMMAND_VAR: json.dumps([sys.executable, "-c", SCRIPT]),
        }
        # The loopback runtime names a fixed function; this run's is the one prepare created.
        api = boot.RuntimeApi(runtime.address)
        real_next = api.next
        api.next = lambda: (*real_next()[:3], function_arn)  # type: ignore[method-assign]
        boot.serve(api, environ, max_invocations=1)
    return aws


def replay(aws: Any, node: MotoNode) -> list[str]:
    """The status rule's delivery of each event, and the log calls as CloudWatch Logs receives them."""
    logs = boto3.client("logs", region_name=REGION)
    for body in aws.bodies("Logs_20140328.CreateLogStream"):
        logs.create_log_stream(**body)
    for body in aws.bodies("Logs_20140328.PutLogEvents"):
        logs.put_log_events(**body)
    return [
        handle_event(
            {
                "detail-type": e["DetailType"],
                "source": e["Source"],
                "resources": e["Resources"],
                "detail": e["Detail"],
            },
            node.node,
        )
        for e in aws.events()
    ]


def _step(node: MotoNode, run_id: str):
    return next(s for s in node.store.list_steps(run_id) if s.processor_id == "thumbs")


def test_a_lambda_step_is_started_then_succeeded_with_its_times_and_its_lines_archived(lambda_run, tmp_path):
    node, run_id, function_arn = lambda_run
    aws = invoke(run_id, function_arn, tmp_path, "req-1")
    (started, stopped) = aws.events()
    handle_event(
        {"detail-type": started["DetailType"], "source": started["Source"], "detail": started["Detail"]},
        node.node,
    )
    step = _step(node, run_id)
    assert step.status is Status.STARTED and step.attempts == 1 and step.started_at is not None
    outcomes = replay(aws, node)
    assert outcomes[1] == f"run {run_id}, processor thumbs: succeeded"
    step = _step(node, run_id)
    assert step.status is Status.SUCCEEDED and step.exit_code == 0 and step.attempts == 1  # duplicate RUNNING
    assert step.finished_at is not None and step.finished_at >= step.started_at
    assert node.store.step_tasks(run_id)["thumbs"] == [f"{function_arn}/req-1"]

    # Live, as `pennflow logs RUN --remote` reads them, then archived under the processor's id.
    source = RunLogSource(LOG_BUCKET, PROCESSOR_LOG_GROUP)
    live = run_logs(run_id, store=node.store, tasks=node.store, source=source, processor="thumbs")
    assert [(e.processor_id, e.message) for e in live.events] == [("thumbs", f"thumbs for {run_id}")]
    keys = archive_logs(node.node, run_id, node.store.step_tasks(run_id))
    assert keys == [f"runs/{run_id}/logs/thumbs/req-1.log.gz"]
    body = boto3.client("s3", region_name=REGION).get_object(Bucket=LOG_BUCKET, Key=keys[0])["Body"].read()
    assert gzip.decompress(body).decode().split(" ", 1)[1] == f"thumbs for {run_id}\n"


def test_failed_invocations_count_attempts_until_the_policy_allows_no_more(lambda_run, tmp_path):
    node, run_id, function_arn = lambda_run
    outcomes = replay(invoke(run_id, function_arn, tmp_path, "req-2", EXIT="4"), node)
    assert outcomes[1].endswith(f"attempt 1 of 1 exited 4: thumbs exited with code 4: thumbs for {run_id}")
    step = _step(node, run_id)
    assert step.status is Status.FAILED and step.exit_code == 4 and step.finished_at is not None


def test_events_of_another_nodes_function_or_another_runs_slot_are_ignored(lambda_run, tmp_path):
    node, run_id, function_arn = lambda_run
    (started, _) = invoke(run_id, function_arn, tmp_path, "req-3").events()
    foreign = {**started["Detail"], "functionName": "othernode_fn-slot-00-0123456789abcdef"}
    other = node.node.slots.lease(node.create_run(lambda_workflow()).run_id)  # another run, another slot
    assert other is not None and f"fn-{other.slot_id}-" not in function_arn
    wrong_slot = {**started["Detail"], "functionName": f"pennflow_fn-{other.slot_id}-0123456789abcdef"}
    for detail, why in ((foreign, "is not one of this node's processors"), (wrong_slot, "is held by run")):
        event = {"detail-type": boot.EVENT_DETAIL_TYPE, "source": boot.EVENT_SOURCE, "detail": detail}
        outcome = handle_event(event, node.node)
        assert outcome.startswith("ignored:") and why in outcome, outcome
    assert _step(node, run_id).status is Status.NOT_STARTED
    malformed = {
        "detail-type": boot.EVENT_DETAIL_TYPE,
        "source": boot.EVENT_SOURCE,
        "detail": {"runId": run_id},
    }
    assert "malformed" in handle_event(malformed, node.node) and "processorId" in handle_event(
        malformed, node.node
    )
