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
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)
from pydantic.alias_generators import to_camel

from pennflow.layers.build import TreeStats
from pennflow.layers.models import (
    LayerRecord,
    LayerStatus,
)
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


def validation_problems(exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "event"
        problems.append(f"{where}: {'required' if error['type'] == 'missing' else error['msg']}")
    return problems


def stats_payload(stats: TreeStats) -> dict[str, Any]:
    """A TreeStats as publish-target expects it."""
    return {to_camel(key): value for key, value in asdict(stats).items()}
