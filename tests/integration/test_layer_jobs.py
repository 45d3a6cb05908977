"""Layer jobs on the compute node (moto: ECS, EFS, DynamoDB, S3, CloudWatch Logs).

The tasks' containers are run here as the node runs them: the same entry points
(``pennflow.layers.populate_task``) with the environment the job's RunTask overrides give, the
read-write mount ``/mnt/layers-rw`` being a temporary folder. Only pip (the layer-build image) and
the Pennsieve download are stand-ins.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from pennflow.layers import jobs as layer_jobs
from pennflow.layers import populate_task
from pennflow.layers.build import MANIFEST_NAME, BuildResult, installed_packages, tree_stats
from pennflow.layers.dynamodb import PK, DynamoLayerRegistry
from pennflow.layers.ecs_jobs import EcsLayerJobs, handle_event
from pennflow.layers.efs import EfsLayerVersions
from pennflow.layers.jobs import Job, JobSettings, JobSettingsError
from pennflow.layers.models import LayerStatus
from pennflow.layers.mounts import release_layers, resolve_layers
from pennflow.layers.populate_task import LayerTargetError, populate_from_run
from pennflow.layers.service import begin_build, delete_layer, new_layer
from tests.integration import aws_fixtures

mocked_aws = aws_fixtures.mocked_aws
REGION = aws_fixtures.REGION
ACCOUNT = aws_fixtures.ACCOUNT
TABLE = "pennflow-layers"
BUCKET = "pennflow-logs"
LOG_GROUP = "/pennflow/processors"
CLUSTER = "pennflow"
RW = "/mnt/layers-rw"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/pennflow-layer-job"
LONG_REQUIREMENTS = "".join(f"package-number-{i:05d}==1.0.{i}\n" for i in range(800))  # ~25,000 chars


@dataclass
class Node:
    jobs: EcsLayerJobs
    registry: DynamoLayerRegistry
    file_system: str
    task_definitions: dict[str, str]
    root: Path  # stands in for /mnt/layers-rw
    ecs: Any
    s3: Any

    def handle(self, event: dict[str, Any]) -> dict[str, Any]:
        """As the function receives it: JSON in, JSON out."""
        return json.loads(json.dumps(handle_event(json.loads(json.dumps(event)), self.jobs)))

    def tasks(self) -> list[dict[str, Any]]:
        arns = self.ecs.list_tasks(cluster=CLUSTER)["taskArns"]
        return self.ecs.describe_tasks(cluster=CLUSTER, tasks=arns, include=["TAGS"])["tasks"] if arns else []

    def last_task(self, kind: str) -> dict[str, Any]:
        found = [t for t in self.tasks() if t["taskDefinitionArn"] == self.task_definitions[kind]]
        assert found, f"no {kind} task"
        return found[-1]  # list_tasks keeps the order tasks started in

    def environment(self, task: dict[str, Any], container: str) -> dict[str, str]:
        """A container's environment as the task sees it, with the mount moved to ``root``."""
        (override,) = [o for o in task["overrides"]["containerOverrides"] if o["name"] == container]
        env = {e["name"]: e["value"].replace(RW, str(self.root)) for e in override["environment"]}
        return {**env, layer_jobs.ENV_LAYERS_ROOT: str(self.root)}

    def stopped(self, task: dict[str, Any], exits: dict[str, int | None], reason: str = "") -> dict:
        return {
            "source": "aws.ecs",
            "detail-type": "ECS Task State Change",
            "detail": {
                "taskArn": task["taskArn"],
                "taskDefinitionArn": task["taskDefinitionArn"],
                "lastStatus": "STOPPED",
                "startedBy": task["startedBy"],
                "stoppedReason": reason or "Essential container in task exited",
                "containers": [
                    {"name": name, **({"exitCode": code} if code is not None else {})}
                    for name, code in exits.items()
                ],
            },
        }

    def access_points(self) -> dict[str, dict[str, Any]]:
        efs = boto3.client("efs", region_name=REGION)
        return {
            p["AccessPointArn"]: p
            for p in efs.describe_access_points(FileSystemId=self.file_system)["AccessPoints"]
        }

    def spec(self, task: dict[str, Any]) -> dict[str, Any]:
        job = Job.parse(task["startedBy"])
        return json.loads(self.s3.get_object(Bucket=BUCKET, Key=job.key("job.json"))["Body"].read())


def _register(ecs: Any, family: str, containers: list[str]) -> str:
    """What the stack defines (stacks/layers.py): the /layers access point mounted read-write."""
    definitions = [
        {"name": name, "image": "ghcr.io/pennflow/builtin:0.1.0", "essential": name not in ("stage", "build"), "memoryReservation": 256,
         "mountPoints": [{"sourceVolume": "layers", "containerPath": RW, "readOnly": False}]}
        for name in containers
    ]  # fmt: skip
    return ecs.register_task_definition(
        family=family,
        taskRoleArn=ROLE,
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu="1024",
        memory="4096",
        containerDefinitions=definitions,
        volumes=[
            {
                "name": "layers",
                "efsVolumeConfiguration": {"fileSystemId": "fs-1", "transitEncryption": "ENABLED"},
            }
        ],
    )["taskDefinition"]["taskDefinitionArn"]


@pytest.fixture
def node(mocked_aws: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Node:
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")  # the tasks' subnets need no AMI catalogue
    boto3.client("dynamodb", region_name=REGION).create_table(
        TableName=TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": PK, "AttributeType": "S"}],
        KeySchema=[{"AttributeName": PK, "KeyType": "HASH"}],
    )
    efs = boto3.client("efs", region_name=REGION)
    file_system = efs.create_file_system(CreationToken="pennflow")["FileSystemId"]
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    boto3.client("logs", region_name=REGION).create_log_group(logGroupName=LOG_GROUP)
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})  # moto names the task's ENI
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24")["Subnet"]["SubnetId"] for i in (1, 2)]
    group = ec2.create_security_group(VpcId=vpc, GroupName="tasks", Description="tasks")["GroupId"]
    ecs = boto3.client("ecs", region_name=REGION)
    cluster = ecs.create_cluster(clusterName=CLUSTER)["cluster"]["clusterArn"]
    definitions = {
        "build": _register(ecs, "pennflow-layer-build", ["stage", "build", "report"]),
        "populate": _register(ecs, "pennflow-layer-populate", ["populate"]),
        "clean": _register(ecs, "pennflow-layer-clean", ["clean"]),
    }
    settings = JobSettings.from_env(
        {
            "PENNFLOW_NODE_NAME": "pennflow",
            "LAYERS_TABLE": TABLE,
            "LOG_ARCHIVE_BUCKET": BUCKET,
            "CLUSTER_ARN": cluster,
            "TASK_SUBNET_IDS": ", ".join(subnets),
            "TASK_SECURITY_GROUP_ID": group,
            "FILE_SYSTEM_ID": file_system,
            "PROCESSOR_LOG_GROUP": LOG_GROUP,
            "LAYER_BUILD_TASK_DEFINITION": definitions["build"],
            "LAYER_POPULATE_TASK_DEFINITION": definitions["populate"],
            "LAYER_CLEAN_TASK_DEFINITION": definitions["clean"],
        }
    )
    # Clients of boto3's default session share its loaded service models: a fast test file.
    registry = DynamoLayerRegistry(TABLE, client=boto3.client("dynamodb", region_name=REGION))
    versions = EfsLayerVersions(file_system, tags={"pennflow:node": "pennflow"}, client=efs)
    logs = boto3.client("logs", region_name=REGION)
    jobs = EcsLayerJobs(settings, registry, versions=versions, ecs=ecs, s3=s3, logs=logs)
    root = tmp_path / "layers"
    root.mkdir()
    return Node(jobs, registry, file_system, definitions, root, ecs, s3)


# ------------------------------------------------------------------ the tasks' containers


def fake_pip(env: dict[str, str], *, fail: str | None = None) -> None:
    """The layer-build container: what ``pennflow.layers.build.main`` leaves behind."""
    target, output = Path(env["LAYER_TARGET_DIR"]), Path(env["OUTPUT_DIR"])
    requirements = (Path(env["INPUT_DIR"]) / "requirements.txt").read_text()
    if fail:
        result = BuildResult(False, "3.12.7", error=fail)
    else:
        site = target / "python"
        (site / "numpy").mkdir(parents=True)
        (site / "numpy" / "__init__.py").write_text(f"# built from {len(requirements)} characters\n")
        info = site / "numpy-2.1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: numpy\nVersion: 2.1.0\n")
        result = BuildResult(True, "3.12.7", installed_packages(site), tree_stats(target))
    output.mkdir(parents=True, exist_ok=True)
    (output / MANIFEST_NAME).write_text(result.to_json())


def run_build(node: Node, *, fail: str | None = None) -> dict[str, Any]:
    """stage -> build -> report, as the task runs them; the STOPPED event it ends with."""
    task = node.last_task("build")
    assert populate_task.stage(node.environment(task, "stage"), node.s3) == 0
    fake_pip(node.environment(task, "build"), fail=fail)
    assert populate_task.report(node.environment(task, "report"), node.s3) == 0
    return node.stopped(task, {"stage": 0, "build": 1 if fail else 0, "report": 0})


class FakePennsieve:
    """The populate task's Pennsieve client; the download stand-in never calls it."""

    def close(self) -> None:
        pass


def run_clean(node: Node) -> None:
    task = node.last_task("clean")
    assert populate_task.clean(node.environment(task, "clean")) == 0


def start_build(node: Node, name: str = "sci") -> int:
    version = begin_build(node.registry, name).version + 1
    assert node.handle({"action": "build", "layer": name, "version": version})["outcome"] == "started"
    return version


# ------------------------------------------------------------------ build


def test_build_runs_the_stack_build_definition_with_its_job_in_overrides_and_s3(node) -> None:
    node.registry.create(new_layer("sci", "python-env", requirements=LONG_REQUIREMENTS))
    start_build(node)

    [task] = node.tasks()
    assert task["taskDefinitionArn"] == node.task_definitions["build"]
    assert task["launchType"] == "FARGATE"
    assert task["startedBy"].startswith("layer-jobs/build/sci/1/")
    tags = {t["key"]: t["value"] for t in task["tags"]}
    assert tags == {"pennflow:layer": "sci", "pennflow:layer-version": "1", "pennflow:layer-job": "build"}
    overrides = task["overrides"]["containerOverrides"]
    assert [o["name"] for o in overrides] == ["stage", "build", "report"]
    env = {e["name"]: e["value"] for e in overrides[1]["environment"]}
    assert env["LAYER_TARGET_DIR"] == "/mnt/layers-rw/sci/v1"
    assert (env["LAYER_NAME"], env["LAYER_VERSION"]) == ("sci", "1")
    assert env["INPUT_DIR"] == "/mnt/layers-rw/sci/.jobs/v1/input"
    assert env["OUTPUT_DIR"] == "/mnt/layers-rw/sci/.jobs/v1/output"
    # Requirements far past the 8,192-character override limit travel through S3, whole.
    assert len(json.dumps(task["overrides"])) < 8192 < len(LONG_REQUIREMENTS)
    assert node.spec(task)["requirements"] == LONG_REQUIREMENTS


def test_stopped_with_exit_0_publishes_the_version_with_its_own_access_point(node) -> None:
    node.registry.create(new_layer("sci", "python-env", requirements="numpy==2.1.0\n"))
    start_build(node)
    outcome = node.handle(run_build(node))

    assert outcome == {"outcome": "published", "layer": "sci", "version": 1}
    record = node.registry.get("sci")
    assert (record.status, record.version, record.python_version) == (LayerStatus.READY, 1, "3.12.7")
    assert [(p.name, p.version) for p in record.packages] == [("numpy", "2.1.0")]
    stats = tree_stats(node.root / "sci" / "v1")
    assert (record.size_bytes, record.file_count, record.checksum) == (
        stats.size_bytes,
        stats.file_count,
        stats.checksum,
    )
    point = node.access_points()[record.access_point_arn]
    assert point["RootDirectory"]["Path"] == "/layers/sci/v1"
    assert {t["Key"]: t["Value"] for t in point["Tags"]}["pennflow:node"] == "pennflow"
    # The staged requirements reached pip; the build's job folder is gone, the version stays.
    assert "13 characters" in (node.root / "sci" / "v1" / "python" / "numpy" / "__init__.py").read_text()
    assert not (node.root / "sci" / ".jobs" / "v1").exists()


def test_the_next_build_uses_the_same_task_definition_and_prunes_unused_versions(node) -> None:
    node.registry.create(new_layer("sci", "python-env", requirements="numpy\n"))
    start_build(node)
    node.handle(run_build(node))
    [reader] = resolve_layers(["sci"], node.registry, run_id="r-reading")  # a run keeps version 1
    start_build(node)
    node.handle(run_build(node))
    start_build(node)
    node.handle(run_build(node))

    registered = node.ecs.list_task_definitions()["taskDefinitionArns"]
    assert sorted(registered) == sorted(node.task_definitions.values())  # no job registers anything
    builds = [t for t in node.tasks() if t["taskDefinitionArn"] == node.task_definitions["build"]]
    assert len(builds) == 3
    record = node.registry.get("sci")
    assert record.version == 3 and set(record.access_points) == {"1", "3"}  # v2: unused, pruned
    assert reader.access_point_arn in node.access_points()
    clean = node.last_task("clean")
    assert node.environment(clean, "clean")["LAYER_CLEAN_PATHS"] == "sci/v2"
    run_clean(node)
    assert sorted(p.name for p in (node.root / "sci").iterdir() if p.name.startswith("v")) == ["v1", "v3"]

    release_layers(["sci"], node.registry, "r-reading")
    start_build(node)
    node.handle(run_build(node))
    assert node.environment(node.last_task("clean"), "clean")["LAYER_CLEAN_PATHS"] == "sci/v1,sci/v3"


def test_a_failed_build_records_pips_error_and_publishes_nothing(node) -> None:
    node.registry.create(new_layer("sci", "python-env", requirements="nosuchpkg==9\n"))
    start_build(node)
    error = "ERROR: Could not find a version that satisfies the requirement nosuchpkg==9"
    outcome = node.handle(run_build(node, fail=error))

    assert outcome["outcome"] == "failed"
    record = node.registry.get("sci")
    assert (record.status, record.version) == (LayerStatus.FAILED, 0)
    assert record.error.endswith(error) and "build of layer 'sci' version 1 failed" in record.error
    assert node.access_points() == {}


def test_a_crashed_container_is_reported_with_its_log_tail(node) -> None:
    node.registry.create(new_layer("sci", "python-env", requirements="numpy\n"))
    start_build(node)
    task = node.last_task("build")
    logs = boto3.client("logs", region_name=REGION)
    stream = f"layers/stage/{task['taskArn'].rsplit('/', 1)[-1]}"
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    lines = [f"line {i}" for i in range(30)] + ["failed: PermissionError: [Errno 13] Permission denied"]
    logs.put_log_events(
        logGroupName=LOG_GROUP,
        logStreamName=stream,
        logEvents=[{"timestamp": int(time.time() * 1000) + i, "message": m} for i, m in enumerate(lines)],
    )
    node.handle(node.stopped(task, {"stage": 1, "build": None, "report": None}))

    error = node.registry.get("sci").error
    assert error.startswith("the build of layer 'sci' version 1 failed: stage exited with 1")
    assert error.endswith("Permission denied") and "line 11" in error and "line 10\n" not in error


def test_a_task_that_never_ran_is_reported_with_ecs_reason(node) -> None:
    node.registry.create(new_layer("sci", "python-env", requirements="numpy\n"))
    start_build(node)
    task = node.last_task("build")
    event = node.stopped(
        task,
        {"stage": None, "build": None, "report": None},
        reason="CannotPullContainerError: pull access denied",
    )
    node.handle(event)
    record = node.registry.get("sci")
    assert record.status is LayerStatus.FAILED
    assert "stopped before finishing: CannotPullContainerError: pull access denied" in record.error


def test_duplicate_late_and_orphan_events_publish_nothing_twice(node) -> None:
    node.registry.create(new_layer("sci", "python-env", requirements="numpy\n"))
    start_build(node)
    success = run_build(node)
    assert node.handle(success)["outcome"] == "published"
    assert node.handle(success) == {
        "outcome": "ignored", "layer": "sci", "version": 1, "reason": "the version is published already"
    }  # fmt: skip
    assert len(node.access_points()) == 1 and node.registry.get("sci").version == 1

    # A build that replaced a dead one (same version, a later token): the dead one's events are void.
    start_build(node)
    current = node.last_task("build")
    late = json.loads(json.dumps(node.stopped(current, {"stage": 1, "build": None, "report": None})))
    job = Job.parse(current["startedBy"])
    late["detail"]["startedBy"] = Job(job.kind, job.layer, job.version, "20000101T000000000000").started_by
    assert node.handle(late)["reason"] == "a later job replaced this one"
    assert node.registry.get("sci").status is LayerStatus.BUILDING

    # A failure after success is ignored too (out of order), and so is anything for a deleted layer.
    node.handle(run_build(node))
    assert node.handle(node.stopped(current, {"stage": 0, "build": 1, "report": 0}))["outcome"] == "ignored"
    assert node.registry.get("sci").status is LayerStatus.READY
    delete_layer(node.registry, "sci")
    assert node.handle(success)["reason"] == "the layer was deleted"
    assert (
        node.handle(node.stopped({**current, "startedBy": "someone-else"}, {"x": 0}))["outcome"] == "ignored"
    )


def test_a_request_whose_job_already_ended_starts_nothing(node) -> None:
    node.registry.create(new_layer("sci", "python-env", requirements="numpy\n"))
    start_build(node)
    node.handle(run_build(node))
    again = node.handle({"action": "build", "layer": "sci", "version": 1})  # a retried invocation
    assert again["outcome"] == "ignored" and len(node.tasks()) == 1


def test_a_start_ecs_refuses_fails_the_layer_with_the_reason(node) -> None:
    node.registry.create(new_layer("sci", "python-env", requirements="numpy\n"))
    refusing = JobSettings.model_validate(
        {
            **node.jobs.settings.model_dump(by_alias=True),
            "LAYER_BUILD_TASK_DEFINITION": "pennflow-layer-missing",
        }
    )
    node.jobs.settings = refusing
    begin_build(node.registry, "sci")
    outcome = node.handle({"action": "build", "layer": "sci", "version": 1})
    assert outcome["outcome"] == "failed"
    record = node.registry.get("sci")
    assert record.status is LayerStatus.FAILED and record.error.startswith("could not start the build task")


# ------------------------------------------------------------------ populate


def test_populate_downloads_into_the_version_folder_and_publishes_it(node) -> None:
    node.registry.create(new_layer("atlas", "data"))
    version = begin_build(node.registry, "atlas").version + 1
    request = {
        "action": "populate",
        "layer": "atlas",
        "version": version,
        "datasetId": "N:dataset:abc",
        "packageIds": ["N:package:1"],
    }
    assert node.handle(request)["outcome"] == "started"
    task = node.last_task("populate")
    assert node.spec(task) == {
        "kind": "populate", "layer": "atlas", "version": 1, "datasetId": "N:dataset:abc", "packageIds": ["N:package:1"]
    }  # fmt: skip
    calls = []

    def download(client: Any, dataset_id: str, dest: Path, *, package_ids: Any = None) -> None:
        calls.append((dataset_id, package_ids))
        (dest / "sub-01").mkdir(parents=True)
        (dest / "sub-01" / "atlas.nii").write_bytes(b"\0" * 4096)

    code = populate_task.populate(
        node.environment(task, "populate"), node.s3, pennsieve=FakePennsieve, download=download
    )
    assert code == 0 and calls == [("N:dataset:abc", ["N:package:1"])]
    assert node.handle(node.stopped(task, {"populate": 0}))["outcome"] == "published"
    record = node.registry.get("atlas")
    assert (record.status, record.version, record.file_count, record.size_bytes) == (
        LayerStatus.READY,
        1,
        1,
        4096,
    )
    assert record.python_version is None
    assert node.access_points()[record.access_point_arn]["RootDirectory"]["Path"] == "/layers/atlas/v1"


def test_a_failed_download_fails_the_populate_with_its_error(node) -> None:
    node.registry.create(new_layer("atlas", "data"))
    begin_build(node.registry, "atlas")
    node.handle({"action": "populate", "layer": "atlas", "version": 1, "datasetId": "N:dataset:abc"})
    task = node.last_task("populate")

    def download(*args: Any, **kwargs: Any) -> None:
        raise PermissionError("dataset N:dataset:abc: 403 Forbidden")

    code = populate_task.populate(
        node.environment(task, "populate"), node.s3, pennsieve=FakePennsieve, download=download
    )
    assert code == 1
    node.handle(node.stopped(task, {"populate": 1}))
    record = node.registry.get("atlas")
    assert record.status is LayerStatus.FAILED
    assert record.error.endswith("PermissionError: dataset N:dataset:abc: 403 Forbidden")


# ------------------------------------------------------------------ remove


def test_remove_deletes_the_access_points_then_the_folder(node) -> None:
    node.registry.create(new_layer("sci", "python-env", requirements="numpy\n"))
    start_build(node)
    node.handle(run_build(node))
    record = delete_layer(node.registry, "sci")
    outcome = node.handle({"action": "remove", "layer": "sci", "accessPoints": record.access_points})

    assert outcome["outcome"] == "removed" and outcome["folder"] == "removing"
    assert node.access_points() == {}
    assert node.environment(node.last_task("clean"), "clean")["LAYER_CLEAN_PATHS"] == "sci"
    run_clean(node)
    assert sorted(p.name for p in node.root.iterdir()) == [".trash"] and not any(
        (node.root / ".trash").iterdir()
    )
    # Delivered again: nothing left to delete, no error.
    assert (
        node.handle({"action": "remove", "layer": "sci", "accessPoints": record.access_points})["outcome"]
        == "removed"
    )


def test_remove_keeps_the_folder_of_a_layer_created_again(node) -> None:
    node.registry.create(new_layer("sci", "data"))
    record = delete_layer(node.registry, "sci")
    node.registry.create(new_layer("sci", "data"))
    outcome = node.handle({"action": "remove", "layer": "sci", "accessPoints": record.access_points})
    assert outcome["folder"].startswith("kept") and node.tasks() == []


def test_clean_refuses_paths_outside_layer_folders(node) -> None:
    env = {"LAYER_CLEAN_PATHS": "sci/v1,../runs", layer_jobs.ENV_LAYERS_ROOT: str(node.root)}
    with pytest.raises(populate_task.TaskEnvironmentError, match=r"\.\./runs"):
        populate_task.clean(env)
    assert populate_task.main(["clean"]) == 2  # no LAYER_CLEAN_PATHS in this environment


# ------------------------------------------------------------------ persistent-layer targets


def target_invoke(node: Node) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda request: node.handle(request)


def test_a_persistent_layer_target_publishes_its_input_as_a_new_version(node, tmp_path) -> None:
    results = tmp_path / "run" / "convert" / "output"
    (results / "nested").mkdir(parents=True)
    (results / "nested" / "features.csv").write_text("a,b\n1,2\n")
    published = populate_from_run(
        results,
        layer_name="features",
        run_id="r-1",
        processor_id="publish",
        layers_root=node.root,
        invoke=target_invoke(node),
    )

    record = node.registry.get("features")
    assert (published.version, record.version, record.status, record.type.value) == (
        1,
        1,
        LayerStatus.READY,
        "data",
    )
    assert record.checksum == tree_stats(node.root / "features" / "v1").checksum == published.stats.checksum
    assert (node.root / "features" / "v1" / "nested" / "features.csv").read_text() == "a,b\n1,2\n"
    assert not any((node.root / "features" / ".targets").iterdir())
    [reader] = resolve_layers(["features"], node.registry, run_id="r-reading")

    (results / "nested" / "features.csv").write_text("a,b\n3,4\n")
    again = populate_from_run(
        results,
        layer_name="features",
        run_id="r-2",
        processor_id="publish",
        layers_root=node.root,
        invoke=target_invoke(node),
    )
    assert again.version == 2
    # The reader of version 1 keeps its own folder and access point, untouched.
    assert (node.root / "features" / "v1" / "nested" / "features.csv").read_text() == "a,b\n1,2\n"
    assert reader.access_point_arn in node.access_points()
    assert node.registry.get("features").access_point_arn != reader.access_point_arn


def test_a_target_meeting_a_running_build_fails_retryably(node, tmp_path) -> None:
    node.registry.create(new_layer("features", "data"))
    begin_build(node.registry, "features")
    with pytest.raises(LayerTargetError, match="already BUILDING") as refused:
        populate_from_run(
            tmp_path,
            layer_name="features",
            run_id="r-1",
            processor_id="p",
            layers_root=node.root,
            invoke=target_invoke(node),
        )
    assert refused.value.retryable
    node.registry.create(new_layer("env", "python-env", requirements="numpy\n"))
    with pytest.raises(LayerTargetError, match="python-env") as wrong:
        populate_from_run(
            tmp_path,
            layer_name="env",
            run_id="r-1",
            processor_id="p",
            layers_root=node.root,
            invoke=target_invoke(node),
        )
    assert not wrong.value.retryable


def test_a_target_whose_copy_fails_marks_the_layer_failed(node, tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        populate_from_run(
            tmp_path / "missing",
            layer_name="features",
            run_id="r-1",
            processor_id="p",
            layers_root=node.root,
            invoke=target_invoke(node),
        )
    record = node.registry.get("features")
    assert record.status is LayerStatus.FAILED and "copying the target's input" in record.error


def test_a_retried_target_resumes_its_own_reservation(node, tmp_path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.txt").write_text("x")
    crashed = []

    def crash_on_publish(request: dict[str, Any]) -> dict[str, Any]:
        if request["action"] == "publish-target":
            crashed.append(request["version"])
            raise ConnectionError("the task was lost")
        return node.handle(request)

    with pytest.raises(ConnectionError):
        populate_from_run(
            tmp_path / "in",
            layer_name="features",
            run_id="r-1",
            processor_id="p",
            layers_root=node.root,
            invoke=crash_on_publish,
        )
    assert node.registry.get("features").status is LayerStatus.BUILDING
    retried = populate_from_run(
        tmp_path / "in",
        layer_name="features",
        run_id="r-1",
        processor_id="p",
        layers_root=node.root,
        invoke=target_invoke(node),
    )
    assert retried.version == crashed[0] == 1 and node.registry.get("features").status is LayerStatus.READY


# ------------------------------------------------------------------ events and settings


def test_malformed_events_are_answered_with_each_problem(node) -> None:
    assert node.handle({"action": "build", "layer": "Bad_Name"})["problems"] == [
        "build.layer: String should match pattern '^[a-z0-9][a-z0-9-]*$'",
        "build.version: required",
    ]
    assert node.handle({"action": "explode"})["outcome"] == "rejected"
    assert node.handle({"source": "aws.ecs", "detail": {"lastStatus": "STOPPED"}})["problems"] == [
        "detail.taskArn: required"
    ]
    assert node.tasks() == []


def test_settings_name_every_missing_variable() -> None:
    with pytest.raises(JobSettingsError) as missing:
        JobSettings.from_env({"LAYERS_TABLE": "t", "TASK_SUBNET_IDS": " , "})
    lines = str(missing.value).splitlines()[1:]
    assert "TASK_SUBNET_IDS: Value should have at least 1 item after validation, not 0" in lines
    assert "LAYER_BUILD_TASK_DEFINITION: required" in lines and "LAYERS_TABLE: required" not in lines


def test_the_lambda_handler_runs_a_job_end_to_end(node, monkeypatch) -> None:
    from lambdas import layer_jobs as handler_module
    from tests.integration.api_support import LambdaContext

    monkeypatch.setattr(handler_module, "layer_jobs", lambda: node.jobs)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "pennflow")
    node.registry.create(new_layer("sci", "python-env", requirements="numpy\n"))
    begin_build(node.registry, "sci")
    assert (
        handler_module.handler({"action": "build", "layer": "sci", "version": 1}, LambdaContext())["outcome"]
        == "started"
    )
    assert handler_module.handler(run_build(node), LambdaContext())["outcome"] == "published"


def test_the_builtin_data_target_publishes_a_persistent_layer(node, tmp_path, monkeypatch) -> None:
    """`python -m pennflow.node.builtins data-target --target-type persistent-layer`, as the ECS task runs it."""
    from pennflow.layers import populate_task
    from pennflow.node.builtins.__main__ import main as builtin_main

    results = tmp_path / "run" / "report" / "output"
    results.mkdir(parents=True)
    (results / "atlas.csv").write_text("region,volume\nv1,10\n")
    monkeypatch.setattr(populate_task, "lambda_invoker", lambda _name: target_invoke(node))
    for name, value in {
        "INPUT_DIR": str(results),
        "OUTPUT_DIR": str(tmp_path / "run" / "atlas" / "output"),
        "RUN_ID": "r-9",
        "PROCESSOR_ID": "atlas",
        "WORKFLOW_NAME": "build-atlas",
        "layerName": "atlas",
        "LAYERS_RW_DIR": str(node.root),
        "LAYER_JOBS_FUNCTION_NAME": "pennflow-layer-jobs",
    }.items():
        monkeypatch.setenv(name, value)
    assert builtin_main(["data-target", "--target-type", "persistent-layer"]) == 0
    record = node.registry.get("atlas")
    assert (record.status, record.version) == (LayerStatus.READY, 1)
    assert (node.root / "atlas" / "v1" / "atlas.csv").read_text() == "region,volume\nv1,10\n"
    monkeypatch.delenv("layerName")
    assert builtin_main(["data-target", "--target-type", "persistent-layer"]) == 2
