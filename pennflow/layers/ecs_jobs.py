"""The layer jobs as ECS tasks: start build, populate and clean tasks, and publish or fail a version when
one stops (the design is in ``pennflow.layers.jobs``)."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from pennflow.aws import client as aws_client
from pennflow.aws import error_code
from pennflow.layers import service
from pennflow.layers.build import BuildResult, TreeStats
from pennflow.layers.efs import LAYER_TAG, VERSION_TAG, EfsLayerVersions, publish_version
from pennflow.layers.job_events import (
    BeginTargetRequest,
    BuildRequest,
    ContainerState,
    FailTargetRequest,
    JobRequest,
    MalformedJobEvent,
    PopulateRequest,
    PublishTargetRequest,
    RemoveRequest,
    TaskStopped,
    parse_request,
    parse_task_event,
)
from pennflow.layers.jobs import (
    CLEAN_BATCH,
    CONTAINERS,
    ENV_CLEAN_PATHS,
    ENV_LAYER,
    JOB_MANIFEST,
    JOB_SPEC,
    JOB_TAG,
    LOG_STREAM_PREFIX,
    LOG_TAIL_LINES,
    OVERRIDES_LIMIT,
    Job,
    JobKind,
    JobSettings,
    is_current,
    job_token,
    task_environment,
)
from pennflow.layers.models import (
    LayerConflict,
    LayerError,
    LayerExists,
    LayerRecord,
    LayerStatus,
    LayerType,
)
from pennflow.layers.registry import LayerRegistry
from pennflow.workflow.cost_tags import NODE_TAG

log = logging.getLogger(__name__)


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


def handle_event(event: Any, jobs: EcsLayerJobs) -> dict[str, Any]:
    """Route one event; a malformed one is answered with its problems (never retried)."""
    try:
        if isinstance(event, dict) and event.get("source") == "aws.ecs":
            return jobs.task_stopped(parse_task_event(event))
        return jobs.handle(parse_request(event))
    except MalformedJobEvent as exc:
        return {"outcome": "rejected", "error": str(exc), "problems": exc.problems}
