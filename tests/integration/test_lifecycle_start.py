"""Preparing runs on moto: slots, task definitions, the execution input, the queue, 100 starts."""

from __future__ import annotations

import json

import boto3
import pytest

from pennflow.node.lifecycle import prepare_run, start_next_queued
from pennflow.node.slots import SlotPool
from pennflow.workflow import asl
from pennflow.workflow.runs import Status
from tests.integration import aws_fixtures
from tests.integration.aws_fixtures import (
    BUILTIN_IMAGE,
    EEG,
    REGION,
    MotoNode,
    build_moto_node,
    workflow_from,
)

mocked_aws = aws_fixtures.mocked_aws
moto_node = aws_fixtures.moto_node


def _execution(arn: str) -> dict:
    return boto3.client("stepfunctions", region_name=REGION).describe_execution(executionArn=arn)


def _task_definition(arn: str) -> dict:
    return boto3.client("ecs", region_name=REGION).describe_task_definition(taskDefinition=arn)[
        "taskDefinition"
    ]


def test_a_run_starts_in_a_slot_with_the_input_the_state_machine_expects(moto_node: MotoNode) -> None:
    workflow = workflow_from(EEG)
    version = moto_node.register(workflow)
    run = moto_node.create_run(workflow, dataset_id="N:dataset:1")

    result = prepare_run(run.run_id, moto_node.node)

    assert result.outcome == "started" and result.slot_id == "slot-00"
    stored = moto_node.store.get_run(run.run_id)
    assert stored.status is Status.STARTED and stored.started_at is not None
    assert stored.execution_arn == result.execution_arn
    execution = _execution(stored.execution_arn)
    assert execution["name"] == run.run_id and execution["stateMachineArn"] == version.state_machine_arn
    payload = json.loads(execution["input"])
    expected = asl.execution_input(
        workflow,
        run_id=run.run_id,
        task_definitions={
            pid.replace("_", "-"): arn for pid, arn in payload["run"]["taskDefinitions"].items()
        },
        params=run.params,
        node=moto_node.node.config.execution_node(),
        dataset_id="N:dataset:1",
        manifest={"bucket": aws_fixtures.RESULTS_BUCKET, "key": f"runs/{run.run_id}/manifest.json"},
    )
    assert payload == expected
    # the data source is a Distributed Map of download Lambdas: it has no task definition
    assert set(payload["run"]["taskDefinitions"]) == {
        "convert",
        "bandpower",
        "quality",
        "report",
        "results",
    }


def test_task_definitions_mount_only_the_slot_and_follow_the_contract(moto_node: MotoNode) -> None:
    workflow = workflow_from(EEG)
    moto_node.register(workflow)
    run = moto_node.create_run(workflow)
    prepare_run(run.run_id, moto_node.node)
    arns = json.loads(_execution(moto_node.store.get_run(run.run_id).execution_arn)["input"])["run"][
        "taskDefinitions"
    ]

    for key, arn in arns.items():
        task = _task_definition(arn)
        assert task["family"].startswith("pf-") and len(task["family"]) == len("pf-") + 16
        assert task["requiresCompatibilities"] == ["FARGATE"] and task["networkMode"] == "awsvpc"
        (volume,) = task["volumes"]
        efs = volume["efsVolumeConfiguration"]
        assert efs["transitEncryption"] == "ENABLED"
        assert efs["authorizationConfig"] == {
            "accessPointId": moto_node.slot_access_points["slot-00"],
            "iam": "ENABLED",
        }
        main = next(c for c in task["containerDefinitions"] if c["name"] == asl.CONTAINER_NAME)
        assert main["mountPoints"] == [
            {"sourceVolume": "run", "containerPath": "/mnt/run", "readOnly": False}
        ]
        options = main["logConfiguration"]["options"]
        assert (
            options["awslogs-stream-prefix"] == key
            and options["awslogs-group"] == aws_fixtures.PROCESSOR_LOG_GROUP
        )

    assert "recordings" not in arns, "a data source runs as download Lambdas, not as a task"
    target = _task_definition(arns["results"])
    for builtin, command in ((target, ["data-target", "--target-type", "s3"]),):
        (container,) = builtin["containerDefinitions"]
        assert container["image"] == BUILTIN_IMAGE
        assert builtin["taskRoleArn"] == _slot_role("slot-00", "builtin")
        assert container["command"] == ["python", "-m", "pennflow.node.builtins", *command]
        assert {e["name"]: e["value"] for e in container["environment"]} == {
            "LAYERS_DIR": "/mnt/layers",
            "PENNSIEVE_SECRET_ARN": aws_fixtures.PENNSIEVE_SECRET,
            "RESULTS_BUCKET": aws_fixtures.RESULTS_BUCKET,
        }
    assert _task_definition(arns["convert"])["taskRoleArn"] == _slot_role("slot-00", "processor")

    report = _task_definition(arns["report"])
    fan_in, main = report["containerDefinitions"]
    assert fan_in["name"] == "fan-in" and fan_in["essential"] is False and fan_in["image"] == BUILTIN_IMAGE
    assert fan_in["command"] == [
        "python", "-m", "pennflow.node.fanin", "--dest", "/mnt/run/report/input",
        "bandpower=/mnt/run/bandpower/output", "quality=/mnt/run/quality/output",
    ]  # fmt: skip
    assert main["dependsOn"] == [{"containerName": "fan-in", "condition": "SUCCESS"}]
    assert "dependsOn" not in _task_definition(arns["bandpower"])["containerDefinitions"][0]


def _slot_role(slot: str, kind: str) -> str:
    return aws_fixtures.SLOT_ROLE_TEMPLATE.format(slot=slot, kind=kind)


def _run_task_definitions(moto_node: MotoNode, run_id: str) -> dict[str, dict]:
    execution = _execution(moto_node.store.get_run(run_id).execution_arn)
    return {
        key: _task_definition(arn)
        for key, arn in json.loads(execution["input"])["run"]["taskDefinitions"].items()
    }


def test_each_slot_task_definitions_carry_that_slot_role_and_access_point(moto_node: MotoNode) -> None:
    workflow = workflow_from(EEG)
    moto_node.register(workflow)
    runs = [moto_node.create_run(workflow) for _ in range(2)]
    slots = [prepare_run(run.run_id, moto_node.node).slot_id for run in runs]
    assert slots == ["slot-00", "slot-01"]

    seen_roles = set()
    for run, slot in zip(runs, slots, strict=True):
        for key, task in _run_task_definitions(moto_node, run.run_id).items():
            kind = "builtin" if key == "results" else "processor"
            assert task["taskRoleArn"] == _slot_role(slot, kind), key
            run_volume = next(v for v in task["volumes"] if v["name"] == "run")
            access_point = run_volume["efsVolumeConfiguration"]["authorizationConfig"]["accessPointId"]
            assert access_point == moto_node.slot_access_points[slot], key
            seen_roles.add(task["taskRoleArn"])
    # two slots, two kinds: four roles, none shared between the slots
    assert len(seen_roles) == 4


def test_the_same_content_is_registered_once_per_slot(moto_node: MotoNode) -> None:
    workflow = workflow_from(EEG)
    moto_node.register(workflow)
    first = moto_node.create_run(workflow)
    prepare_run(first.run_id, moto_node.node)
    assert len(moto_node.registrations) == 5  # every processor but the data source
    from pennflow.node.finalize import finalize_run

    finalize_run(first.run_id, "SUCCEEDED", None, moto_node.node)
    second = moto_node.create_run(workflow)
    assert prepare_run(second.run_id, moto_node.node).slot_id == "slot-00"  # the warm slot is preferred
    assert len(moto_node.registrations) == 5  # every processor but the data source

    # A fresh slot table (lost cache) still finds the families with DescribeTaskDefinition.
    boto3.client("dynamodb", region_name=REGION).delete_table(TableName=aws_fixtures.SLOTS_TABLE)
    aws_fixtures.create_slots_table()
    third = moto_node.create_run(workflow)
    assert prepare_run(third.run_id, moto_node.node).outcome == "started"
    assert len(moto_node.registrations) == 5  # every processor but the data source


def test_preparing_twice_starts_once(moto_node: MotoNode) -> None:
    workflow = workflow_from(EEG)
    moto_node.register(workflow)
    run = moto_node.create_run(workflow)
    first = prepare_run(run.run_id, moto_node.node)
    again = prepare_run(run.run_id, moto_node.node)
    assert (first.outcome, again.outcome) == ("started", "skipped")
    assert [s.run_id for s in moto_node.node.slots.slots()].count(run.run_id) == 1


def test_an_existing_execution_of_the_run_counts_as_started(moto_node: MotoNode) -> None:
    workflow = workflow_from(EEG)
    version = moto_node.register(workflow)
    run = moto_node.create_run(workflow)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    existing = sfn.start_execution(stateMachineArn=version.state_machine_arn, name=run.run_id, input="{}")
    assert prepare_run(run.run_id, moto_node.node).outcome == "started"
    assert moto_node.store.get_run(run.run_id).execution_arn == existing["executionArn"]


def test_runs_beyond_the_slots_queue_and_start_oldest_first(moto_node: MotoNode) -> None:
    from pennflow.node.finalize import finalize_run

    workflow = workflow_from(EEG)
    moto_node.register(workflow)
    runs = [moto_node.create_run(workflow) for _ in range(5)]
    outcomes = [prepare_run(run.run_id, moto_node.node).outcome for run in runs]
    assert outcomes == ["started", "started", "started", "queued", "queued"]
    assert [q.run_id for q in moto_node.node.slots.queued()] == [runs[3].run_id, runs[4].run_id]
    waiting = moto_node.store.get_run(runs[3].run_id)
    assert waiting.status is Status.NOT_STARTED and waiting.reason.startswith("queued")
    assert start_next_queued(moto_node.node) is None  # no free slot

    finalize_run(runs[1].run_id, "SUCCEEDED", None, moto_node.node)
    started = moto_node.store.get_run(runs[3].run_id)
    assert started.status is Status.STARTED and started.reason is None
    assert moto_node.node.slots.held_by(runs[3].run_id).slot_id == "slot-01"
    assert moto_node.store.get_run(runs[4].run_id).status is Status.NOT_STARTED


def test_a_missing_layer_or_definition_fails_the_run_with_the_reason(moto_node: MotoNode) -> None:
    workflow = workflow_from(EEG.replace('image: "ghcr.io/x/quality:1"', 'image: "q:1", layers: [sci]'))
    moto_node.register(workflow)
    run = moto_node.create_run(workflow)
    assert prepare_run(run.run_id, moto_node.node).outcome == "failed"
    failed = moto_node.store.get_run(run.run_id)
    assert failed.status is Status.FAILED and "sci" in failed.reason
    assert all(slot.is_free for slot in moto_node.node.slots.slots())

    unregistered = moto_node.create_run(workflow_from(EEG.replace("eeg-quality", "other")))
    result = prepare_run(unregistered.run_id, moto_node.node)
    assert (
        result.outcome == "failed" and "not registered" in moto_node.store.get_run(unregistered.run_id).reason
    )


def test_layers_are_mounted_read_only_from_their_pinned_access_points(mocked_aws, tmp_path) -> None:
    node = build_moto_node(tmp_path / "runs", layers={"sci": "fsap-sci1", "ref": "fsap-ref1"})
    workflow = workflow_from(EEG.replace('image: "ghcr.io/x/quality:1"', 'image: "q:1", layers: [sci]'))
    node.register(workflow)
    run = node.create_run(workflow, layers=[{"name": "ref"}])
    prepare_run(run.run_id, node.node)
    assert node.layers.pinned[run.run_id] == {"sci", "ref"}
    arns = json.loads(_execution(node.store.get_run(run.run_id).execution_arn)["input"])["run"][
        "taskDefinitions"
    ]
    quality = _task_definition(arns["quality"])
    volumes = {
        v["name"]: v["efsVolumeConfiguration"]["authorizationConfig"]["accessPointId"]
        for v in quality["volumes"]
    }
    assert volumes == {
        "run": node.slot_access_points["slot-00"],
        "layer-ref": "fsap-ref1",
        "layer-sci": "fsap-sci1",
    }
    mounts = quality["containerDefinitions"][0]["mountPoints"]
    assert {m["containerPath"]: m["readOnly"] for m in mounts} == {
        "/mnt/run": False,
        "/mnt/layers/ref": True,
        "/mnt/layers/sci": True,
    }


def test_a_slot_is_never_leased_twice_even_when_two_preparations_race(moto_node: MotoNode) -> None:
    pool = moto_node.node.slots
    snapshot = pool.slots()  # both preparations read the same free slots ...
    first = pool.lease("r-a")
    stale = SlotPool(pool.table_name, file_system_id=moto_node.file_system_id, slot_count=3)
    stale._read_slots = lambda: snapshot  # ... the second one acts on that stale read
    second = stale.lease("r-b")
    assert first.slot_id == "slot-00" and second.slot_id == "slot-01"
    holders = {s.slot_id: s.run_id for s in pool.slots()}
    assert holders == {"slot-00": "r-a", "slot-01": "r-b", "slot-02": None}
    assert not pool.release("slot-00", "r-b")  # only the holder releases


@pytest.mark.slow  # about 20 s: a hundred full lifecycles, at a few ms per moto call
def test_a_hundred_run_starts_cost_one_registration_per_processor_and_slot(mocked_aws, tmp_path) -> None:
    """100 runs submitted at once on a 3-slot node, then run to completion one slot at a time."""
    from pennflow.node.finalize import finalize_run

    node = build_moto_node(tmp_path / "runs", slots=3)
    workflow = workflow_from(EEG)
    node.register(workflow)
    runs = node.create_runs(workflow, 100)
    outcomes = [prepare_run(run.run_id, node.node).outcome for run in runs]
    assert outcomes.count("started") == 3 and outcomes.count("queued") == 97
    assert len(node.registrations) == 3 * 5 <= 20  # 5 task-run processors in each of 3 slots
    assert len(set(node.registrations)) == 15

    access_point_of = {}  # task definition ARN -> the access point it mounts at /mnt/run
    for slot in node.node.slots.slots():
        for arn in slot.task_definitions.values():
            volume = _task_definition(arn)["volumes"][0]["efsVolumeConfiguration"]
            access_point_of[arn] = volume["authorizationConfig"]["accessPointId"]
    started_order: list[str] = []
    seen_access_points: dict[str, str] = {}
    while True:
        leased = [s for s in node.node.slots.slots() if s.run_id]
        if not leased:
            break
        # Concurrently leased slots: distinct runs, distinct access points, distinct folders.
        assert len({s.run_id for s in leased}) == len({s.access_point_id for s in leased}) == len(leased)
        assert len({s.root_path for s in leased}) == len(leased)
        for slot in sorted(leased, key=lambda s: s.leased_at):
            if slot.run_id in seen_access_points:
                continue
            started_order.append(slot.run_id)
            arns = json.loads(_execution(node.store.get_run(slot.run_id).execution_arn)["input"])["run"]
            assert {access_point_of[arn] for arn in arns["taskDefinitions"].values()} == {
                slot.access_point_id
            }
            seen_access_points[slot.run_id] = slot.access_point_id
            (node.slot_dir(slot.slot_id) / "convert" / "output").mkdir(parents=True)  # the slot starts empty
            (node.slot_dir(slot.slot_id) / "convert" / "output" / "owner.txt").write_text(slot.run_id)
        oldest = min(leased, key=lambda s: started_order.index(s.run_id))
        finalize_run(oldest.run_id, "SUCCEEDED", None, node.node)

    assert len(seen_access_points) == 100
    assert started_order == [run.run_id for run in runs]  # first in, first started
    assert len(node.registrations) == 15  # 100 starts, no registration after the first run of each slot
    for run in runs:
        assert node.store.get_run(run.run_id).status is Status.SUCCEEDED
        kept = node.runs_mount / run.run_id / "convert" / "output" / "owner.txt"
        assert kept.read_text() == run.run_id  # each run's files, and only its own, kept under /runs/<run_id>


@pytest.mark.parametrize("slots", [1])
def test_a_single_slot_node_runs_one_at_a_time(mocked_aws, tmp_path, slots: int) -> None:
    node = build_moto_node(tmp_path / "runs", slots=slots)
    workflow = workflow_from(EEG)
    node.register(workflow)
    first, second = node.create_run(workflow), node.create_run(workflow)
    assert prepare_run(first.run_id, node.node).outcome == "started"
    assert prepare_run(second.run_id, node.node).outcome == "queued"


def test_the_manifest_the_api_wrote_is_the_one_downloaded(moto_node: MotoNode) -> None:
    from pennflow.node.lifecycle import PennsieveManifests

    workflow = workflow_from(EEG)
    run = moto_node.create_run(workflow, dataset_id="N:dataset:1")
    key = f"runs/{run.run_id}/manifest.json"
    boto3.client("s3", region_name=REGION).put_object(Bucket=aws_fixtures.RESULTS_BUCKET, Key=key, Body=b"[]")
    unused = object()  # Pennsieve is not asked: the manifest exists
    manifests = PennsieveManifests(aws_fixtures.RESULTS_BUCKET, pennsieve=unused)
    assert manifests.write(run, workflow) == {"bucket": aws_fixtures.RESULTS_BUCKET, "key": key}
    with pytest.raises(ValueError, match="dataset id"):
        manifests.write(moto_node.create_run(workflow), workflow)
