"""Scatter batches staged in the run's slot, the fan-in entry point, and the thin Lambda handlers."""

from __future__ import annotations

import json
import types

import boto3
import pytest

from pennflow.node import fanin
from pennflow.node.batches import BatchError, BatchRequest, list_batches
from pennflow.node.lifecycle import prepare_run
from pennflow.workflow.runs import Status
from tests.integration import aws_fixtures
from tests.integration.aws_fixtures import RESULTS_BUCKET, MotoNode, workflow_from
from tests.integration.test_lifecycle_tracking import task_event

mocked_aws = aws_fixtures.mocked_aws
moto_node = aws_fixtures.moto_node

SCATTER = """
    name: scatter
    processors:
      - {id: source, type: data-source}
      - {id: left, image: "l:1", dependsOn: [source]}
      - {id: right, image: "r:1", dependsOn: [left]}
      - {id: per-file, image: "p:1", dependsOn: [left], scatter: {batchSize: 2}}
      - {id: joined, image: "j:1", dependsOn: [left, right], scatter: {batchSize: 10}}
"""


@pytest.fixture
def scattering(moto_node: MotoNode):
    workflow = workflow_from(SCATTER)
    moto_node.register(workflow)
    run = moto_node.create_run(workflow)
    assert prepare_run(run.run_id, moto_node.node).outcome == "started"
    slot_dir = moto_node.slot_dir(moto_node.node.slots.held_by(run.run_id).slot_id)
    for name in ("a.edf", "b.edf", "sub/c.edf"):
        path = slot_dir / "left" / "output" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    (slot_dir / "right" / "output").mkdir(parents=True)
    (slot_dir / "right" / "output" / "r.json").write_text("{}")
    return moto_node, run.run_id, slot_dir


def _request(run_id: str, processor: str, input_dir: str, size: int) -> BatchRequest:
    return BatchRequest.model_validate(
        {"runId": run_id, "processorId": processor, "inputDir": input_dir, "batchSize": size}
    )


def _listed(answer: dict) -> list[dict]:
    """The batch list the answer points at, as the scatter's Distributed Map reads it."""
    s3 = boto3.client("s3", region_name=aws_fixtures.REGION)
    return json.loads(s3.get_object(Bucket=answer["bucket"], Key=answer["key"])["Body"].read())


def test_batches_are_staged_in_the_run_folder_and_named_as_the_task_sees_them(scattering) -> None:
    node, run_id, slot_dir = scattering
    answer = list_batches(_request(run_id, "per-file", "/mnt/run/left/output", 2), node.node)
    # only the list's location travels in the state; the list itself is in the results bucket
    assert answer == {"bucket": RESULTS_BUCKET, "key": f"runs/{run_id}/per-file/batches.json", "count": 2}
    assert _listed(answer) == [
        {"index": 0, "inputDir": "/mnt/run/per-file/batches/00000"},
        {"index": 1, "inputDir": "/mnt/run/per-file/batches/00001"},
    ]
    first, second = slot_dir / "per-file" / "batches" / "00000", slot_dir / "per-file" / "batches" / "00001"
    assert sorted(p.relative_to(first).as_posix() for p in first.rglob("*") if p.is_file()) == [
        "a.edf",
        "b.edf",
    ]
    assert (second / "sub" / "c.edf").read_text() == "sub/c.edf"

    (slot_dir / "left" / "output" / "b.edf").unlink()  # a retried listing sees the folder as it is now
    answer = list_batches(_request(run_id, "per-file", "/mnt/run/left/output", 2), node.node)
    assert answer["count"] == 1 and len(_listed(answer)) == 1 and not second.exists()


def test_a_scattered_fan_in_gets_its_union_built_first(scattering) -> None:
    node, run_id, slot_dir = scattering
    answer = list_batches(_request(run_id, "joined", "/mnt/run/joined/input", 10), node.node)
    assert answer["count"] == 1
    staged = slot_dir / "joined" / "batches" / "00000"
    assert sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()) == [
        "a.edf",
        "b.edf",
        "r.json",
        "sub/c.edf",
    ]


@pytest.mark.parametrize("input_dir", ["/etc", "/mnt/run/../../etc", "relative/path"])
def test_folders_outside_the_run_are_refused(scattering, input_dir: str) -> None:
    node, run_id, _ = scattering
    with pytest.raises(BatchError, match="must be a folder under /mnt/run"):
        list_batches(_request(run_id, "per-file", input_dir, 2), node.node)


def test_a_missing_input_or_a_run_without_slot_is_a_clear_error(scattering) -> None:
    node, run_id, _ = scattering
    with pytest.raises(BatchError, match="does not exist"):
        list_batches(_request(run_id, "per-file", "/mnt/run/nothing/output", 2), node.node)
    with pytest.raises(BatchError, match="holds no run slot"):
        list_batches(_request("r-other", "per-file", "/mnt/run/left/output", 2), node.node)


def test_fan_in_entry_point(tmp_path, capsys) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.csv").write_text("a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "y.csv").write_text("b")
    dest = tmp_path / "union"
    (dest / "stale").mkdir(parents=True)  # a previous attempt's leftovers

    assert fanin.main(["--dest", str(dest), f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}"]) == 0
    assert sorted(p.name for p in dest.iterdir()) == ["x.csv", "y.csv"]
    (tmp_path / "b" / "x.csv").write_text("clash")
    assert fanin.main(["--dest", str(dest), f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}"]) == 2
    assert fanin.main(["--dest", str(dest), f"a={tmp_path / 'missing'}"]) == 1
    assert fanin.main(["--dest", str(dest), "no-equals-sign"]) == 2
    err = capsys.readouterr().err
    assert "fan-in clash: x.csv" in err and "no output from a" in err and "must be <processor id>=" in err


# ------------------------------------------------------------------ handlers


@pytest.fixture
def handlers_env(moto_node: MotoNode, monkeypatch):
    from lambdas import settings

    env = {
        "AWS_REGION": aws_fixtures.REGION,
        "RUNS_TABLE": aws_fixtures.RUNS_TABLE,
        "WORKFLOWS_TABLE": "pennflow-workflows",
        "SLOTS_TABLE": aws_fixtures.SLOTS_TABLE,
        "RESULTS_BUCKET": aws_fixtures.RESULTS_BUCKET,
        "LOG_ARCHIVE_BUCKET": aws_fixtures.LOG_BUCKET,
        "CLUSTER_ARN": moto_node.node.config.cluster_arn,
        "PROCESSOR_LOG_GROUP": aws_fixtures.PROCESSOR_LOG_GROUP,
        "TASK_EXECUTION_ROLE_ARN": aws_fixtures.ROLE + "execution",
        "SLOT_TASK_ROLE_ARN_TEMPLATE": aws_fixtures.SLOT_ROLE_TEMPLATE,
        "BUILTIN_IMAGE": aws_fixtures.BUILTIN_IMAGE,
        "FILE_SYSTEM_ID": moto_node.file_system_id,
        "RUNS_MOUNT": str(moto_node.runs_mount),
        "RUN_SLOTS": "3",
        "TASK_SUBNET_IDS": "subnet-0a, subnet-0b",
        "TASK_SECURITY_GROUP_ID": "sg-0a",
        "STATE_MACHINE_PREFIX": "pennflow-",
        "FINALIZE_FUNCTION_ARN": aws_fixtures.FINALIZE_FUNCTION,
        "LIST_BATCHES_FUNCTION_ARN": aws_fixtures.LIST_BATCHES_FUNCTION,
        "DOWNLOAD_FUNCTION_ARN": aws_fixtures.DOWNLOAD_FUNCTION,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "pennflow",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings.node_settings.cache_clear()
    settings.node.cache_clear()
    from lambdas.observability import MetricsListener

    built = settings.build_node(settings.NodeSettings(), listener=MetricsListener())
    built.workflows = moto_node.workflows  # the registry's own table is another module's concern
    built.manifests = moto_node.node.manifests
    monkeypatch.setattr(settings, "node", lambda: built)  # prepare, status, cancel, finalize: via node_for
    monkeypatch.setattr("lambdas.list_batches.node", lambda: built)
    yield moto_node
    settings.node_settings.cache_clear()


CONTEXT = types.SimpleNamespace(
    function_name="pennflow-prepare",
    memory_limit_in_mb=512,
    invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:pennflow-prepare",
    aws_request_id="req-1",
)


def test_settings_list_every_missing_variable() -> None:
    from lambdas.settings import NodeSettings, SettingsError

    with pytest.raises(SettingsError) as caught:
        NodeSettings({"AWS_REGION": "us-east-1", "RUN_SLOTS": "0"})
    message = str(caught.value)
    assert "RUNS_TABLE: required" in message and "BUILTIN_IMAGE: required" in message
    assert "RUN_SLOTS: Input should be greater than or equal to 1" in message


def test_handlers_prepare_and_cancel_a_run_and_answer_malformed_events(handlers_env, capsys) -> None:
    from lambdas import cancel, finalize, list_batches, prepare, status

    node = handlers_env
    workflow = workflow_from(aws_fixtures.EEG)
    node.register(workflow)
    run = node.create_run(workflow)

    answer = prepare.handler({"runId": run.run_id}, CONTEXT)
    assert answer["outcome"] == "started" and answer["slot"] == "slot-00"
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    (started,) = [m for m in metrics if "RunsStarted" in m]
    assert (
        started["RunsStarted"] == [1.0] and started["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "pennflow"
    )

    assert prepare.handler({"run": "x"}, CONTEXT)["problems"] == ["runId: Field required"]
    assert "does not know" in status.handler({"detail-type": "ECS Task State Change", "source": "aws.ecs", "detail": {
        "taskArn": "arn:t/1", "lastStatus": "RUNNING", "overrides": {"containerOverrides": [
            {"name": "processor", "environment": [{"name": "RUN_ID", "value": "r-x"}, {"name": "PROCESSOR_ID", "value": "a"}]}
        ]}}}, CONTEXT)["result"]  # fmt: skip
    with pytest.raises(ValueError, match="outcome"):
        finalize.handler({"runId": run.run_id, "outcome": "MAYBE"}, CONTEXT)
    with pytest.raises(BatchError, match="batchSize"):
        list_batches.handler({"runId": run.run_id, "processorId": "a", "inputDir": "/mnt/run/x"}, CONTEXT)

    for status_name in ("RUNNING", "STOPPED"):
        event = task_event(run.run_id, "convert", status_name, exit_code=0)
        assert "convert" in status.handler(event, CONTEXT)["result"]
    done = finalize.handler({"runId": run.run_id, "outcome": "SUCCEEDED"}, CONTEXT)
    assert done == {"runId": run.run_id, "status": "SUCCEEDED", "failedProcessor": None, "exitCode": None}
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    (succeeded,) = [m for m in metrics if "RunsSucceeded" in m]
    assert succeeded["RunsSucceeded"] == [1.0] and "RunDuration" in succeeded
    (convert,) = [m for m in metrics if "ProcessorDuration" in m and m.get("processor") == "convert"]
    assert convert["ProcessorDuration"] == [300.0]
    # The node's service dimension too: the dashboard's SEARCH reads {namespace,processor,service}.
    assert convert["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service", "processor"]]
    assert convert["service"] == succeeded["service"]

    other = node.create_run(workflow)
    prepare.handler({"runId": other.run_id}, CONTEXT)
    assert cancel.handler({"runId": other.run_id}, CONTEXT) == {"runId": other.run_id, "status": "CANCELED"}
    assert node.store.get_run(other.run_id).status is Status.CANCELED
    assert "no run" in cancel.handler({"runId": "r-missing"}, CONTEXT)["error"]


def test_names_match_the_stack() -> None:
    """Table keys, index names, tags and environment variables are the ones the CDK constructs use."""
    from lambdas.settings import ApiSettings, NodeSettings
    from pennflow.node import slots
    from pennflow.stores import dynamodb as ddb
    from stacks import constants as C

    assert (ddb.PK, ddb.SK) == (C.RUNS_PK, C.RUNS_SK)
    assert (ddb.BY_WORKFLOW, ddb.WORKFLOW_ATTR) == (C.RUNS_BY_WORKFLOW_INDEX, C.RUNS_WORKFLOW_ATTR)
    assert (ddb.BY_STATUS, ddb.STATUS_ATTR, ddb.CREATED_ATTR) == (
        C.RUNS_BY_STATUS_INDEX,
        C.RUNS_STATUS_ATTR,
        C.RUNS_CREATED_ATTR,
    )
    assert (slots.KEY, slots.SLOT_TAG, slots.slot_id(7)) == (C.SLOTS_PK, C.SLOT_TAG_KEY, C.slot_id(7))
    assert str(slots.RUNS_ROOT) == C.RUNS_PATH and C.SLOTS_PATH.startswith(C.RUNS_PATH + "/")

    stack_names = set(C.ENV.values())
    for model in (ApiSettings, NodeSettings):
        names = {field.alias for field in model.model_fields.values()}
        extra = names - stack_names
        expected = {
            "AWS_REGION",
            "BUILTIN_IMAGE",
            "RUN_RETENTION_DAYS",
            "LAYERS_TABLE",
            "DOWNLOAD_FUNCTION_ARN",
        }
        assert extra <= expected, (
            f"{model.__name__} reads variables the stack does not set: {extra - expected}"
        )


def test_a_scatter_may_make_up_to_10000_batches_and_no_more(scattering, monkeypatch) -> None:
    from pennflow.node import batches

    assert batches.MAX_BATCHES == 10_000  # a Distributed Map over the S3 list: no payload grows with it
    node, run_id, _ = scattering
    monkeypatch.setattr(batches, "MAX_BATCHES", 2)  # three files in batches of one make three
    with pytest.raises(
        BatchError, match="3 files in batches of 1 make 3 batches, over 2; raise scatter.batchSize"
    ):
        list_batches(_request(run_id, "per-file", "/mnt/run/left/output", 1), node.node)
