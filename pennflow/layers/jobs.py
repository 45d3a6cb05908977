"""Layer jobs on the compute node: build, populate and remove layers with ECS tasks, publish a new
version when such a task stops, and publish the versions that persistent-layer data targets write.

The layer-jobs function (``lambdas/layer_jobs.py``) receives three kinds of event:

- a job from the API (``api.AsyncLayerJobs``, the layer already BUILDING): ``build``, ``populate``
  or ``remove``. Build and populate write the job's spec to
  ``s3://<log archive>/layer-jobs/<name>/v<n>/<token>/job.json`` and run one Fargate task; every task
  writes the new version into ``/mnt/layers-rw/<name>/v<n>`` (the ``/layers`` access point, mounted
  read-write only by the layer-job task roles) and its ``BuildResult`` to ``manifest.json`` beside
  the spec;
- the task's ``ECS Task State Change`` (STOPPED) from the node's EventBridge rule: every container
  exited 0 and the manifest says ok -> ``efs.publish_version`` (the version's own access point,
  READY with size, files, checksum and Python); otherwise FAILED with the manifest's error, or the
  failing container's reason and log tail;
- a persistent-layer target's synchronous calls (``begin-target``, ``publish-target``,
  ``fail-target``; see ``populate_task.populate_from_run``).

Choices, and why:

- The stack defines one task definition per job kind (``<node>_layer-build|populate|clean``), so a
  job is a RunTask with environment overrides and never a RegisterTaskDefinition (throttled, and
  only grantable on ``*``): the definitions are registered once per deploy, whatever the number of
  builds.
- The function stays out of the VPC and never mounts EFS: every write under ``/layers`` happens in a
  task, and job inputs and manifests travel through S3. Requirements always go through S3 (up to
  64 KiB, far beyond the 8,192-character override limit): one path, not two.
- A build is three containers: ``stage`` (built-in image: empties the version folder, writes
  ``requirements.txt``), ``build`` (the layer-build image, its processor contract unchanged) and
  ``report`` (built-in image: uploads the manifest). The pip step, which runs packages' own build
  code, gets a role without the Pennsieve secret; only the populate task's role may read it.
- A job is named by its task's ``startedBy`` (``layer-jobs/<kind>/<name>/<version>/<token>``, the
  token being the build's start time): a STOPPED event publishes only while the layer is still
  BUILDING that very job, so duplicate or late events, events of a superseded build and events of a
  deleted layer change nothing. RunTask gets a client token derived from the same name, so a retried
  invocation starts no second task.
- Version folders whose access points a publish pruned, and a deleted layer's folder, are removed by
  a ``clean`` task (a deleted layer's folder is kept if a layer of that name was created again).
- Readers never see a half-written version: every version is written to its own folder before its
  access point exists, and the registry switches the current version in one conditional write.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)
from pydantic.alias_generators import to_camel

from pennflow.aws import client as aws_client
from pennflow.aws import error_code
from pennflow.layers import service
from pennflow.layers.build import BuildResult, TreeStats
from pennflow.layers.efs import LAYER_TAG, VERSION_TAG, EfsLayerVersions, publish_version
from pennflow.layers.models import (
    LayerConflict,
    LayerError,
    LayerExists,
    LayerRecord,
    LayerStatus,
    LayerType,
)
from pennflow.layers.registry import LayerRegistry
from pennflow.workflow.definition import MAX_NAME, NAME_RE

log = logging.getLogger(__name__)

LAYERS_RW_MOUNT = PurePosixPath("/mnt/layers-rw")  # stacks/constants.py LAYERS_RW_MOUNT
JOBS_PREFIX = "layer-jobs"
JOBS_FOLDER = ".jobs"  # <layer>/.jobs/v<n>/{input,output}: a build's files, outside every version
JOB_SPEC = "job.json"
JOB_MANIFEST = "manifest.json"
LOG_STREAM_PREFIX = "layers"  # stacks/constants.py LAYER_JOBS_LOG_PREFIX
LOG_TAIL_LINES = 20
CLEAN_BATCH = 50  # paths per clean task: keeps the overrides far below ECS's 8,192 characters
OVERRIDES_LIMIT = 8192
NODE_TAG = "pennflow:node"
JOB_TAG = "pennflow:layer-job"

# Containers of the stack's task definitions (stacks/layers.py).
STAGE, BUILD, REPORT, POPULATE, CLEAN = "stage", "build", "report", "populate", "clean"

# Environment of the job tasks.
ENV_LAYER = "LAYER_NAME"
ENV_VERSION = "LAYER_VERSION"
ENV_TARGET = "LAYER_TARGET_DIR"
ENV_BUCKET = "LAYER_JOB_BUCKET"
ENV_JOB_KEY = "LAYER_JOB_KEY"
ENV_CLEAN_PATHS = "LAYER_CLEAN_PATHS"
ENV_LAYERS_ROOT = "LAYERS_RW_DIR"  # where /layers is mounted read-write (default LAYERS_RW_MOUNT)
ENV_FUNCTION = "LAYER_JOBS_FUNCTION_NAME"  # the same name as pennflow.api.layers.ENV_JOBS_FUNCTION

LayerName = Annotated[str, StringConstraints(pattern=NAME_RE.pattern, max_length=MAX_NAME)]


class JobKind(StrEnum):
    BUILD = "build"
    POPULATE = "populate"
    CLEAN = "clean"


CONTAINERS = {JobKind.BUILD: (STAGE, BUILD, REPORT), JobKind.POPULATE: (POPULATE,), JobKind.CLEAN: (CLEAN,)}
_STARTED_BY = re.compile(r"^layer-jobs/(build|populate|clean)/([a-z0-9][a-z0-9-]*)/(\d+)/([A-Za-z0-9]+)$")


@dataclass(frozen=True)
class Job:
    """One job, named by its task's ``startedBy`` (at most 128 characters: a 64-character layer name fits)."""

    kind: JobKind
    layer: str
    version: int  # the version it publishes (0 for a clean)
    token: str

    @property
    def started_by(self) -> str:
        return f"{JOBS_PREFIX}/{self.kind.value}/{self.layer}/{self.version}/{self.token}"

    @property
    def key_prefix(self) -> str:
        return f"{JOBS_PREFIX}/{self.layer}/v{self.version}/{self.token}/"

    def key(self, name: str) -> str:
        return self.key_prefix + name

    @property
    def client_token(self) -> str:
        """RunTask's idempotency token: the same job never starts two tasks."""
        return hashlib.sha256(self.started_by.encode()).hexdigest()

    @classmethod
    def parse(cls, started_by: str | None) -> Job | None:
        match = _STARTED_BY.match(started_by or "")
        if match is None:
            return None
        kind, layer, version, token = match.groups()
        return cls(JobKind(kind), layer, int(version), token)


def job_token(record: LayerRecord) -> str:
    """The running build's token: when it started (``begin_build`` sets it)."""
    if record.build_started_at is None:
        raise ValueError(f"layer {record.name!r} is BUILDING without a start time")
    return record.build_started_at.strftime("%Y%m%dT%H%M%S%f")


def is_current(record: LayerRecord | None, version: int, token: str) -> bool:
    """Whether ``record`` is still BUILDING the job that publishes ``version`` with ``token``."""
    return (
        record is not None
        and record.status is LayerStatus.BUILDING
        and record.version == version - 1
        and job_token(record) == token
    )


def version_dir(name: str, version: int, root: PurePosixPath = LAYERS_RW_MOUNT) -> PurePosixPath:
    """Version ``version``'s folder, seen through the read-write mount (efs.version_path on EFS)."""
    return root / name / f"v{version}"


def job_dir(name: str, version: int, root: PurePosixPath = LAYERS_RW_MOUNT) -> PurePosixPath:
    return root / name / JOBS_FOLDER / f"v{version}"


def task_environment(job: Job, bucket: str) -> dict[str, str]:
    """What each container of a build or populate task is told about its job."""
    env = {
        ENV_LAYER: job.layer,
        ENV_VERSION: str(job.version),
        ENV_BUCKET: bucket,
        ENV_JOB_KEY: job.key_prefix,
        ENV_TARGET: str(version_dir(job.layer, job.version)),
    }
    if job.kind is JobKind.BUILD:
        folder = job_dir(job.layer, job.version)
        env |= {"INPUT_DIR": str(folder / "input"), "OUTPUT_DIR": str(folder / "output")}
    return env


# ------------------------------------------------------------------ settings


def _comma_list(value: Any) -> Any:
    return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


IdList = Annotated[list[str], BeforeValidator(_comma_list), Field(min_length=1)]


class JobSettingsError(RuntimeError):
    """The function's environment is incomplete or invalid (one line per variable)."""


class JobSettings(BaseModel):
    """The layer-jobs function's environment (names from stacks/constants.py ``ENV``)."""

    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=True)

    node_name: str = Field("pennflow", alias="PENNFLOW_NODE_NAME")
    layers_table: str = Field(alias="LAYERS_TABLE", min_length=1)
    job_bucket: str = Field(alias="LOG_ARCHIVE_BUCKET", min_length=1)
    cluster_arn: str = Field(alias="CLUSTER_ARN", min_length=1)
    subnets: IdList = Field(alias="TASK_SUBNET_IDS")
    security_groups: IdList = Field(alias="TASK_SECURITY_GROUP_ID")
    file_system_id: str = Field(alias="FILE_SYSTEM_ID", min_length=1)
    log_group: str = Field(alias="PROCESSOR_LOG_GROUP", min_length=1)
    build_task_definition: str = Field(alias="LAYER_BUILD_TASK_DEFINITION", min_length=1)
    populate_task_definition: str = Field(alias="LAYER_POPULATE_TASK_DEFINITION", min_length=1)
    clean_task_definition: str = Field(alias="LAYER_CLEAN_TASK_DEFINITION", min_length=1)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> JobSettings:
        try:
            return cls.model_validate(dict(os.environ if environ is None else environ))
        except ValidationError as exc:
            raise JobSettingsError(
                "invalid layer-jobs settings:\n" + "\n".join(validation_problems(exc))
            ) from None

    def task_definition(self, kind: JobKind) -> str:
        return {
            JobKind.BUILD: self.build_task_definition,
            JobKind.POPULATE: self.populate_task_definition,
            JobKind.CLEAN: self.clean_task_definition,
        }[kind]


# ------------------------------------------------------------------ events


class _Request(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class BuildRequest(_Request):
    action: Literal["build"]
    layer: LayerName
    version: int = Field(ge=1)


class PopulateRequest(_Request):
    action: Literal["populate"]
    layer: LayerName
    version: int = Field(ge=1)
    dataset_id: str = Field(min_length=1)
    package_ids: list[str] = Field(default_factory=list)


class RemoveRequest(_Request):
    action: Literal["remove"]
    layer: LayerName
    access_points: dict[str, str] = Field(default_factory=dict)


class BeginTargetRequest(_Request):
    action: Literal["begin-target"]
    layer: LayerName
    run_id: str = Field(min_length=1)
    processor_id: str = Field(min_length=1)
    resume_version: int | None = Field(None, ge=1)  # a retried target's earlier reservation
    resume_token: str | None = None


class StatsModel(_Request):
    size_bytes: int = Field(ge=0)
    file_count: int = Field(ge=0)
    checksum: str = Field(min_length=1)


class PublishTargetRequest(_Request):
    action: Literal["publish-target"]
    layer: LayerName
    version: int = Field(ge=1)
    token: str = Field(min_length=1)
    stats: StatsModel


class FailTargetRequest(_Request):
    action: Literal["fail-target"]
    layer: LayerName
    version: int = Field(ge=1)
    token: str = Field(min_length=1)
    error: str = Field(min_length=1)


JobRequest = Annotated[
    BuildRequest
    | PopulateRequest
    | RemoveRequest
    | BeginTargetRequest
    | PublishTargetRequest
    | FailTargetRequest,
    Field(discriminator="action"),
]
_REQUEST = TypeAdapter(JobRequest)


class ContainerState(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    name: str
    exit_code: int | None = None
    reason: str | None = None


class TaskStopped(BaseModel):
    """The ``detail`` of an ECS Task State Change event, as far as finishing a job needs it."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    task_arn: str
    last_status: str
    started_by: str | None = None
    stopped_reason: str | None = None
    containers: list[ContainerState] = Field(default_factory=list)

    @property
    def task_id(self) -> str:
        return self.task_arn.rsplit("/", 1)[-1]


class MalformedJobEvent(ValueError):
    def __init__(self, problems: Sequence[str]):
        super().__init__("malformed layer-jobs event: " + "; ".join(problems))
        self.problems = list(problems)


def parse_request(event: Any) -> JobRequest:
    try:
        return _REQUEST.validate_python(event)
    except ValidationError as exc:
        raise MalformedJobEvent(validation_problems(exc)) from None


def parse_task_event(event: Mapping[str, Any]) -> TaskStopped:
    try:
        return TaskStopped.model_validate(event.get("detail"))
    except ValidationError as exc:
        raise MalformedJobEvent([f"detail.{p}" for p in validation_problems(exc)]) from None


def handle_event(event: Any, jobs: EcsLayerJobs) -> dict[str, Any]:
    """Route one event; a malformed one is answered with its problems (never retried)."""
    try:
        if isinstance(event, dict) and event.get("source") == "aws.ecs":
            return jobs.task_stopped(parse_task_event(event))
        return jobs.handle(parse_request(event))
    except MalformedJobEvent as exc:
        return {"outcome": "rejected", "error": str(exc), "problems": exc.problems}


# ------------------------------------------------------------------ the jobs


class JobStartError(RuntimeError):
    """ECS refused to start the task for a reason a retry would not change."""


# ECS answers that come back the same on every attempt: the job fails with the message instead.
PERMANENT_START_ERRORS = frozenset(
    {"ClientException", "InvalidParameterException", "AccessDeniedException", "ClusterNotFoundException"}
)


class EcsLayerJobs:
    """The ``LayerJobs`` port of ``pennflow.api.layers`` on ECS, and what finishes the jobs."""

    def __init__(
        self,
        settings: JobSettings,
        registry: LayerRegistry,
        *,
        versions: EfsLayerVersions | None = None,
        ecs: Any = None,
        s3: Any = None,
        logs: Any = None,
    ):
        self.settings = settings
        self.registry = registry
        self.versions = versions or EfsLayerVersions(
            settings.file_system_id, tags={NODE_TAG: settings.node_name}
        )
        self._clients = {"ecs": ecs, "s3": s3, "logs": logs}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EcsLayerJobs:
        from pennflow.layers.dynamodb import DynamoLayerRegistry

        settings = JobSettings.from_env(environ)
        return cls(settings, DynamoLayerRegistry(settings.layers_table))

    def _client(self, service_name: str) -> Any:
        if self._clients[service_name] is None:
            self._clients[service_name] = aws_client(service_name)
        return self._clients[service_name]

    # ---------------------------------------------------------------- the port

    def build(self, record: LayerRecord, version: int) -> None:
        self._start(JobKind.BUILD, record.name, version)

    def populate(self, record: LayerRecord, version: int, dataset_id: str, package_ids: list[str]) -> None:
        self._start(
            JobKind.POPULATE, record.name, version, {"datasetId": dataset_id, "packageIds": list(package_ids)}
        )

    def remove(self, record: LayerRecord) -> None:
        self.remove_layer(record.name, record.access_points)

    def handle(self, request: JobRequest) -> dict[str, Any]:
        """One job request (from the API or a persistent-layer target)."""
        if isinstance(request, BuildRequest):
            return self._start(JobKind.BUILD, request.layer, request.version)
        if isinstance(request, PopulateRequest):
            spec = {"datasetId": request.dataset_id, "packageIds": request.package_ids}
            return self._start(JobKind.POPULATE, request.layer, request.version, spec)
        if isinstance(request, RemoveRequest):
            return self.remove_layer(request.layer, request.access_points)
        if isinstance(request, BeginTargetRequest):
            return self.begin_target(request)
        if isinstance(request, PublishTargetRequest):
            return self.publish_target(request)
        return self.fail_target(request)

    # ---------------------------------------------------------------- starting

    def _start(self, kind: JobKind, name: str, version: int, spec: dict[str, Any] | None = None) -> dict:
        record = self.registry.get(name)
        if record is None or record.status is not LayerStatus.BUILDING or record.version != version - 1:
            # A retried request whose job already ended, or one for a layer deleted meanwhile.
            log.warning("layer %r is not waiting for version %d; nothing started", name, version)
            return _outcome("ignored", name, version, reason="the layer is not waiting for this version")
        job = Job(kind, name, version, job_token(record))
        spec = {"kind": kind.value, "layer": name, "version": version, **(spec or {})}
        if kind is JobKind.BUILD:
            spec["requirements"] = record.requirements or ""
        self._put_json(job.key(JOB_SPEC), spec)
        try:
            task_arn = self._run_task(job, task_environment(job, self.settings.job_bucket))
        except JobStartError as exc:
            self._fail(job, f"could not start the {kind.value} task: {exc}")
            return _outcome("failed", name, version, reason=str(exc))
        log.info("started %s of layer %r version %d: %s", kind.value, name, version, task_arn)
        return _outcome("started", name, version, task=task_arn)

    def _run_task(self, job: Job, environment: Mapping[str, str]) -> str:
        env = [{"name": key, "value": value} for key, value in environment.items()]
        overrides = {"containerOverrides": [{"name": c, "environment": env} for c in CONTAINERS[job.kind]]}
        if len(json.dumps(overrides)) > OVERRIDES_LIMIT:
            raise JobStartError(f"the task overrides exceed ECS's {OVERRIDES_LIMIT} characters")
        tags = {LAYER_TAG: job.layer, VERSION_TAG: str(job.version), JOB_TAG: job.kind.value}
        try:
            response = self._client("ecs").run_task(
                cluster=self.settings.cluster_arn,
                taskDefinition=self.settings.task_definition(job.kind),
                launchType="FARGATE",
                count=1,
                networkConfiguration={
                    "awsvpcConfiguration": {
                        "subnets": list(self.settings.subnets),
                        "securityGroups": list(self.settings.security_groups),
                        "assignPublicIp": "DISABLED",
                    }
                },
                overrides=overrides,
                startedBy=job.started_by,
                clientToken=job.client_token,
                tags=[{"key": key, "value": value} for key, value in tags.items()],
            )
        except Exception as exc:
            if error_code(exc) in PERMANENT_START_ERRORS:
                raise JobStartError(str(exc)) from exc
            raise  # throttling or a server error: the asynchronous retry runs the job again
        if response.get("failures") or not response.get("tasks"):
            reasons = "; ".join(
                f"{f.get('reason')} {f.get('detail') or ''}".strip() for f in response["failures"]
            )
            raise JobStartError(reasons or "ECS started no task")
        return response["tasks"][0]["taskArn"]

    # ---------------------------------------------------------------- finishing

    def task_stopped(self, task: TaskStopped) -> dict[str, Any]:
        """A STOPPED layer task: publish its version, or record why it failed (once)."""
        job = Job.parse(task.started_by)
        if job is None or task.last_status != "STOPPED":
            return {"outcome": "ignored", "reason": "not a stopped layer job", "task": task.task_arn}
        if job.kind is JobKind.CLEAN:
            return self._clean_stopped(job, task)
        record = self.registry.get(job.layer)
        if record is None:
            return _outcome("ignored", job.layer, job.version, reason="the layer was deleted")
        if record.version >= job.version:
            return _outcome("ignored", job.layer, job.version, reason="the version is published already")
        if not is_current(record, job.version, job.token):
            return _outcome("ignored", job.layer, job.version, reason="a later job replaced this one")
        manifest = self._manifest(job)
        failed = [c for c in task.containers if c.exit_code not in (0, None)]
        finished = bool(task.containers) and all(c.exit_code == 0 for c in task.containers)
        if finished and manifest is not None and manifest.ok and manifest.stats is not None:
            return self._publish(job, record, manifest)
        message = _failure_message(job, task, manifest, failed, self._log_tail)
        self._fail(job, message)
        return _outcome("failed", job.layer, job.version, reason=message.splitlines()[0])

    def _publish(self, job: Job, record: LayerRecord, manifest: BuildResult) -> dict[str, Any]:
        try:
            version = publish_version(self.registry, self.versions, job.layer, job.version - 1, manifest)
        except LayerConflict as exc:  # another delivery of this event published it first
            return _outcome("ignored", job.layer, job.version, reason=str(exc))
        self._clean_pruned(job.layer, record.access_points)
        log.info("published layer %r version %d", job.layer, version)
        return _outcome("published", job.layer, version)

    def _clean_pruned(self, name: str, before: Mapping[str, str]) -> None:
        """Remove the folders of the versions whose access points the publish just deleted."""
        after = self.registry.get(name)
        kept = set(after.access_points) if after else set()
        pruned = sorted(int(v) for v in set(before) - kept)
        if pruned:
            self.clean(name, [f"{name}/v{v}" for v in pruned])

    def _fail(self, job: Job, message: str) -> None:
        if is_current(self.registry.get(job.layer), job.version, job.token):
            service.fail_build(self.registry, job.layer, message)

    def _manifest(self, job: Job) -> BuildResult | None:
        try:
            body = self._client("s3").get_object(Bucket=self.settings.job_bucket, Key=job.key(JOB_MANIFEST))
        except Exception as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise
        try:
            return BuildResult.from_json(body["Body"].read().decode())
        except (ValueError, TypeError) as exc:
            return BuildResult(False, "", error=f"the task wrote an unreadable manifest: {exc}")

    def _log_tail(self, container: str, task_id: str) -> str:
        try:
            events = self._client("logs").get_log_events(
                logGroupName=self.settings.log_group,
                logStreamName=f"{LOG_STREAM_PREFIX}/{container}/{task_id}",
                limit=LOG_TAIL_LINES,
                startFromHead=False,
            )["events"]
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return ""
            raise
        return "\n".join(event["message"].rstrip() for event in events)

    # ---------------------------------------------------------------- removing

    def remove_layer(self, name: str, access_points: Mapping[str, str]) -> dict[str, Any]:
        """A deleted layer: its access points, then its folder (kept if the name was taken again)."""
        for arn in access_points.values():
            self._delete_access_point(arn)
        if self.registry.get(name) is not None:
            log.warning("layer %r exists again: its folder stays, its new versions replace the old", name)
            return {"outcome": "removed", "layer": name, "folder": "kept: the layer was created again"}
        tasks = self.clean(name, [name])
        return {"outcome": "removed", "layer": name, "folder": "removing", "tasks": tasks}

    def _delete_access_point(self, arn: str) -> None:
        try:
            self.versions.delete(arn)
        except Exception as exc:
            if error_code(exc) != "AccessPointNotFound":
                raise

    def clean(self, name: str, paths: Sequence[str]) -> list[str]:
        """Start clean tasks removing ``paths`` (``<layer>`` or ``<layer>/v<n>``) under /layers."""
        started = []
        for start in range(0, len(paths), CLEAN_BATCH):
            job = Job(JobKind.CLEAN, name, 0, secrets.token_hex(8))
            batch = ",".join(paths[start : start + CLEAN_BATCH])
            try:
                started.append(self._run_task(job, {ENV_LAYER: name, ENV_CLEAN_PATHS: batch}))
            except JobStartError as exc:  # the folders stay: harmless, and the next clean removes them
                log.error("could not start a clean task for %s: %s", batch, exc)
        return started

    def _clean_stopped(self, job: Job, task: TaskStopped) -> dict[str, Any]:
        failed = [c for c in task.containers if c.exit_code != 0]
        if failed:
            message = _failure_message(job, task, None, failed, self._log_tail)
            log.error("cleaning layer %r folders failed: %s", job.layer, message)
            return {"outcome": "clean failed", "layer": job.layer, "reason": message}
        return {"outcome": "cleaned", "layer": job.layer}

    # ---------------------------------------------------------------- persistent-layer targets

    def begin_target(self, request: BeginTargetRequest) -> dict[str, Any]:
        """Reserve the next version for a run's persistent-layer target (creating a data layer)."""
        name = request.layer
        if request.resume_version and request.resume_token:
            record = self.registry.get(name)
            if is_current(record, request.resume_version, request.resume_token):
                return _reservation(name, request.resume_version, request.resume_token)
        if self.registry.get(name) is None:
            try:
                record = service.new_layer(
                    name,
                    LayerType.DATA,
                    description=f"written by run {request.run_id} ({request.processor_id})",
                    created_by=f"run {request.run_id}",
                )
                self.registry.create(record)
            except LayerExists:  # created meanwhile: fill it all the same
                pass
        try:
            before = service.begin_build(self.registry, name, kind=LayerType.DATA)
        except LayerError as exc:
            return {"error": str(exc), "retryable": isinstance(exc, LayerConflict)}
        record = self.registry.get(name)
        if record is None:
            return {"error": f"layer {name!r} was deleted while being reserved", "retryable": True}
        return _reservation(name, before.version + 1, job_token(record))

    def publish_target(self, request: PublishTargetRequest) -> dict[str, Any]:
        record = self.registry.get(request.layer)
        if not is_current(record, request.version, request.token):
            return {
                "error": f"layer {request.layer!r} is no longer waiting for this version",
                "retryable": False,
            }
        assert record is not None
        stats = TreeStats(**request.stats.model_dump())
        manifest = BuildResult(True, "", stats=stats)
        try:
            version = publish_version(
                self.registry, self.versions, request.layer, request.version - 1, manifest
            )
        except LayerConflict as exc:
            return {"error": str(exc), "retryable": False}
        self._clean_pruned(request.layer, record.access_points)
        published = self.registry.get(request.layer)
        return {**_outcome("published", request.layer, version), "accessPoint": published.access_point_arn}

    def fail_target(self, request: FailTargetRequest) -> dict[str, Any]:
        job = Job(JobKind.POPULATE, request.layer, request.version, request.token)
        self._fail(job, request.error)
        return _outcome("failed", request.layer, request.version, reason=request.error.splitlines()[0])

    # ---------------------------------------------------------------- S3

    def _put_json(self, key: str, body: Mapping[str, Any]) -> None:
        self._client("s3").put_object(
            Bucket=self.settings.job_bucket,
            Key=key,
            Body=json.dumps(body, sort_keys=True).encode(),
            ContentType="application/json",
            ServerSideEncryption="AES256",
        )


def _failure_message(
    job: Job,
    task: TaskStopped,
    manifest: BuildResult | None,
    failed: Sequence[ContainerState],
    log_tail: Any,
) -> str:
    """Why a job failed, most precise first: the manifest's error, a failing container's own log
    lines, or why ECS stopped the task before anything ran."""
    what = f"the {job.kind.value} of layer {job.layer!r}" + (f" version {job.version}" if job.version else "")
    if manifest is not None and not manifest.ok and manifest.error:
        return f"{what} failed:\n{manifest.error}"
    if failed:
        container = failed[0]
        reason = f" ({container.reason})" if container.reason else ""
        tail = log_tail(container.name, task.task_id)
        message = f"{what} failed: {container.name} exited with {container.exit_code}{reason}"
        return f"{message}\n{tail}" if tail else message
    reasons = [f"{c.name}: {c.reason}" for c in task.containers if c.reason]
    detail = "; ".join([task.stopped_reason or "no reason given", *reasons])
    if task.containers and all(c.exit_code == 0 for c in task.containers):
        return f"{what} failed: the task finished without writing its manifest ({detail})"
    return f"{what} failed: the task stopped before finishing: {detail}"


def _outcome(outcome: str, layer: str, version: int, **extra: Any) -> dict[str, Any]:
    return {"outcome": outcome, "layer": layer, "version": version, **extra}


def _reservation(name: str, version: int, token: str) -> dict[str, Any]:
    return {"layer": name, "version": version, "token": token, "path": f"{name}/v{version}"}


def validation_problems(exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "event"
        problems.append(f"{where}: {'required' if error['type'] == 'missing' else error['msg']}")
    return problems


def stats_payload(stats: TreeStats) -> dict[str, Any]:
    """A TreeStats as publish-target expects it."""
    return {to_camel(key): value for key, value in asdict(stats).items()}
