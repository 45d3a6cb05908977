"""Notebook sessions on the node (pennflow.node.notebooks) against moto ECS, EFS, SSM and DynamoDB."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import boto3
import pytest

from pennflow.node import notebook_runs as names
from pennflow.node import notebooks as nb
from pennflow.workflow.runs import Status, new_run_id
from tests.integration.aws_fixtures import REGION, MotoNode, build_moto_node, mocked_aws  # noqa: F401

PREFIX = "/pennflow/slots/"


@pytest.fixture
def sessions_node(mocked_aws: None, tmp_path: Path) -> tuple[MotoNode, nb.SessionSettings]:  # noqa: F811
    moto = build_moto_node(
        tmp_path / "runs", slots=2, layers={"scipy-env": "fsap-scipy", "atlas": "fsap-atlas"}
    )
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="sessions", Description="no ingress", VpcId=vpc)["GroupId"]
    node = moto.node
    node.config = replace(node.config, subnets=(subnet,))
    node.task_definitions.settings = replace(node.task_definitions.settings, slot_parameter_prefix=PREFIX)
    sessions = nb.SessionSettings(
        image="ghcr.io/pennflow/notebook:0.1.0",
        python_version="3.12",
        idle_minutes=30,
        security_group=group,
        log_group="/pennflow/notebooks",
        family_prefix="pennflow_nb-",
    )
    return moto, sessions


def _create(moto: MotoNode, layers=("scipy-env",), size=names.SessionSize()) -> str:
    run_id = new_run_id()
    run, step = names.new_session(run_id, layers=list(layers), size=size)
    moto.store.create_run(run, [step])
    return run_id


def _task(moto: MotoNode, arn: str) -> dict:
    ecs = boto3.client("ecs", region_name=REGION)
    return ecs.describe_tasks(cluster=moto.node.config.cluster_arn, tasks=[arn], include=["TAGS"])["tasks"][0]


def test_a_session_starts_a_task_with_ecs_exec_in_its_own_slot(sessions_node):
    moto, sessions = sessions_node
    run_id = _create(moto, layers=("scipy-env", "atlas"), size=names.SessionSize(2048, 8192))
    calls = []  # moto does not echo every RunTask parameter back: check what was asked
    moto.node.ecs.meta.events.register(
        "before-parameter-build.ecs.RunTask", lambda params, **_: calls.append(params)
    )

    started = nb.start_session(run_id, moto.node, sessions)

    assert started.outcome == "started", started.detail
    run = moto.store.get_run(run_id)
    assert run.status is Status.STARTED and run.started_at is not None
    task = _task(moto, started.task_arn)
    (asked,) = calls
    assert asked["enableExecuteCommand"] is True
    network = asked["networkConfiguration"]["awsvpcConfiguration"]
    assert network["assignPublicIp"] == "DISABLED" and network["securityGroups"] == [sessions.security_group]
    assert task["group"] == names.GROUP and task["startedBy"] == run_id
    assert {t["key"]: t["value"] for t in task["tags"]}[names.SESSION_TAG] == run_id
    ecs = boto3.client("ecs", region_name=REGION)
    definition = ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])["taskDefinition"]
    assert definition["taskRoleArn"].endswith(f"{started.slot_id}-notebook")
    assert (definition["cpu"], definition["memory"]) == ("2048", "8192")
    container = definition["containerDefinitions"][0]
    mounts = {m["containerPath"]: m["readOnly"] for m in container["mountPoints"]}
    assert mounts == {"/mnt/run": False, "/mnt/layers/atlas": True, "/mnt/layers/scipy-env": True}
    assert "--ServerApp.ip=127.0.0.1" in container["command"]
    assert "--ServerApp.shutdown_no_activity_timeout=1800" in container["command"]
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env["PIP_TARGET"].startswith(names.SCRATCH) and env["PYTHONPATH"].startswith(env["PIP_TARGET"])
    secrets = {s["name"]: s["valueFrom"] for s in container["secrets"]}
    assert secrets["JUPYTER_TOKEN"].endswith(f"{started.slot_id}/{names.TOKEN_PARAMETER}")
    assert not any("token" in arg.lower() and "=" in arg and "Token" in arg for arg in container["command"])
    ssm = boto3.client("ssm", region_name=REGION)
    token = ssm.get_parameter(Name=f"{PREFIX}{started.slot_id}/{names.TOKEN_PARAMETER}", WithDecryption=True)
    assert len(token["Parameter"]["Value"]) >= 40 and token["Parameter"]["Type"] == "SecureString"
    assert moto.node.slots.held_by(run_id).slot_id == started.slot_id
    assert moto.layers.pinned[run_id] == {"scipy-env", "atlas"}


def test_a_second_session_of_the_same_shape_registers_nothing(sessions_node):
    moto, sessions = sessions_node
    first = nb.start_session(_create(moto), moto.node, sessions)
    nb.session_stopped(_stopped(moto, first, "UserInitiated", names.STOPPED_BY_REQUEST, 0), moto.node)
    moto.registrations.clear()

    second = nb.start_session(_create(moto), moto.node, sessions)

    assert second.outcome == "started" and second.slot_id == first.slot_id
    assert moto.registrations == []


def _stopped(moto: MotoNode, started: nb.Started, stop_code: str, reason: str, exit_code: int | None) -> dict:
    ecs = boto3.client("ecs", region_name=REGION)
    ecs.stop_task(cluster=moto.node.config.cluster_arn, task=started.task_arn, reason=reason)
    task = _task(moto, started.task_arn)
    return {
        "taskArn": task["taskArn"],
        "startedBy": task["startedBy"],
        "group": task["group"],
        "lastStatus": "STOPPED",
        "stopCode": stop_code,
        "stoppedReason": reason,
        "containers": [{"name": names.CONTAINER, "exitCode": exit_code}],
    }


def test_stop_asks_ecs_and_the_stopped_event_ends_the_session_keeping_its_files(sessions_node):
    moto, sessions = sessions_node
    run_id = _create(moto)
    started = nb.start_session(run_id, moto.node, sessions)
    work = moto.slot_dir(started.slot_id) / "notebook" / "workspace"
    work.mkdir(parents=True)
    (work / "analysis.ipynb").write_text("{}")
    stops = []
    ecs = moto.node.ecs
    ecs.meta.events.register("before-parameter-build.ecs.StopTask", lambda params, **_: stops.append(params))

    outcome = nb.stop_session(run_id, moto.node)

    assert "stop requested" in outcome
    assert stops == [
        {
            "cluster": moto.node.config.cluster_arn,
            "task": started.task_arn,
            "reason": names.STOPPED_BY_REQUEST,
        }
    ]
    assert moto.store.get_run(run_id).status is Status.STARTED  # until the task has stopped

    nb.session_stopped(_stopped(moto, started, "UserInitiated", names.STOPPED_BY_REQUEST, 143), moto.node)

    run = moto.store.get_run(run_id)
    assert run.status is Status.SUCCEEDED and run.reason == "stopped"
    assert (moto.runs_mount / run_id / "notebook" / "workspace" / "analysis.ipynb").read_text() == "{}"
    assert moto.node.slots.held_by(run_id) is None
    assert run_id not in moto.layers.pinned
    # Costed like a run's tasks: Fargate vCPU- and GB-hours of the session's task
    items = {line["item"] for line in run.cost["lines"] if line.get("processorId") == names.WORKFLOW}
    assert {"fargate-vcpu", "fargate-memory"} <= items and run.cost["totalUsd"] > 0, run.cost["lines"]


def test_a_server_that_fails_ends_the_session_failed_with_its_reason(sessions_node):
    moto, sessions = sessions_node
    run_id = _create(moto)
    started = nb.start_session(run_id, moto.node, sessions)

    nb.session_stopped(
        _stopped(moto, started, "EssentialContainerExited", "Essential container exited", 1), moto.node
    )

    run = moto.store.get_run(run_id)
    assert run.status is Status.FAILED and "Essential container exited" in run.reason and run.exit_code == 1


def test_the_idle_timeout_ends_a_session_succeeded(sessions_node):
    moto, sessions = sessions_node
    run_id = _create(moto)
    started = nb.start_session(run_id, moto.node, sessions)

    nb.session_stopped(
        _stopped(moto, started, "EssentialContainerExited", "Essential container exited", 0), moto.node
    )

    assert moto.store.get_run(run_id).status is Status.SUCCEEDED


def test_with_every_slot_busy_a_session_fails_saying_so(sessions_node):
    moto, sessions = sessions_node
    for _ in range(2):
        assert nb.start_session(_create(moto), moto.node, sessions).outcome == "started"
    run_id = _create(moto)

    started = nb.start_session(run_id, moto.node, sessions)

    assert started.outcome == "failed"
    run = moto.store.get_run(run_id)
    assert run.status is Status.FAILED and "every run slot is busy" in run.reason
    assert run_id not in moto.layers.pinned


def test_an_unknown_layer_fails_the_session_naming_it(sessions_node):
    moto, sessions = sessions_node
    run_id = _create(moto, layers=("nope",))

    assert nb.start_session(run_id, moto.node, sessions).outcome == "failed"
    assert "nope" in moto.store.get_run(run_id).reason


def test_events_of_other_tasks_are_ignored(sessions_node):
    moto, _ = sessions_node
    assert nb.session_stopped({"taskArn": "arn:x", "startedBy": "r-unknown"}, moto.node).startswith("ignored")


def test_the_connect_target_is_cluster_task_and_runtime_id():
    task = {
        "taskArn": "arn:aws:ecs:us-east-1:123456789012:task/pennflow-cluster/0123abcd",
        "containers": [{"name": names.CONTAINER, "runtimeId": "0123abcd-3811061257"}],
    }
    cluster = "arn:aws:ecs:us-east-1:123456789012:cluster/pennflow-cluster"
    assert names.connect_target(cluster, task) == "ecs:pennflow-cluster_0123abcd_0123abcd-3811061257"
    assert names.connect_target(cluster, {**task, "containers": [{"name": names.CONTAINER}]}) is None


def test_a_canceled_session_ends_canceled(sessions_node):
    moto, sessions = sessions_node
    run_id = _create(moto)
    started = nb.start_session(run_id, moto.node, sessions)
    assert moto.store.update_run(run_id, Status.CANCELING)

    nb.session_stopped(_stopped(moto, started, "UserInitiated", "canceled by request", 143), moto.node)

    run = moto.store.get_run(run_id)
    assert run.status is Status.CANCELED and moto.node.slots.held_by(run_id) is None


def test_pennflow_cancel_of_a_session_stops_its_task_and_the_end_frees_the_slot(sessions_node):
    from pennflow.node.cancel import cancel_run

    moto, sessions = sessions_node
    run_id = _create(moto)
    started = nb.start_session(run_id, moto.node, sessions)

    status = cancel_run(run_id, moto.node)

    assert status is Status.CANCELED
    assert _task(moto, started.task_arn)["desiredStatus"] == "STOPPED"
    nb.session_stopped(_stopped(moto, started, "UserInitiated", "canceled by request", 143), moto.node)
    assert moto.store.get_run(run_id).status is Status.CANCELED
    assert moto.node.slots.held_by(run_id) is None
