"""The node's processor registry on AWS: the Processors table, CodeBuild builds, their outcome.

``register_processor`` records a repository@tag BUILDING and starts the node's CodeBuild project with
the source, the image tag and where to put ``app.yml`` (a private repository's token is passed as a
``SECRETS_MANAGER`` variable: CodeBuild reads the secret by its ARN, so the token is in no request,
record or log). ``finish_build`` takes CodeBuild's state-change event (EventBridge) and makes the
record READY (the pushed image's digest, the manifest read from S3) or FAILED (the build log's tail).
The pure rules (ids, pins, not-ready reasons) are ``pennflow.processors.registry``'s.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pennflow.aws import LazyClient, error_code
from pennflow.aws.items import deserialize, from_attribute, serialize, to_attribute
from pennflow.processors.checkout import SourceRef
from pennflow.processors.manifest import ManifestError, parse_manifest
from pennflow.processors.registry import (
    DIGEST_PREFIX,
    MAX_LOG_TAIL,
    ProcessorRecord,
    ProcessorStatus,
    processor_key,
    utcnow,
)
from pennflow.workflow.definition import ComputeType

log = logging.getLogger(__name__)

PK = "processor_key"  # stacks.constants.PROCESSORS_PK
LOG_TAIL_LINES = 40
SUCCEEDED, FAILED_STATES = "SUCCEEDED", frozenset({"FAILED", "FAULT", "STOPPED", "TIMED_OUT"})
# The variables the build reads (the project's buildspec, stacks/processors.py).
ENV_SOURCE_URL, ENV_SOURCE_TAG, ENV_IMAGE_TAG = "SOURCE_URL", "SOURCE_TAG", "IMAGE_TAG"
ENV_PROCESSOR_KEY, ENV_MANIFEST_KEY, ENV_GIT_TOKEN = "PROCESSOR_KEY", "MANIFEST_KEY", "GIT_TOKEN"
ENV_DIGEST = "IMAGE_DIGEST"  # exported by the build
# The image again with the Lambda bootstrap (stacks/lambda_compute.py), or why it could not be made.
ENV_LAMBDA_DIGEST, ENV_LAMBDA_PROBLEM = "LAMBDA_IMAGE_DIGEST", "LAMBDA_IMAGE_PROBLEM"
MANIFEST_PREFIX = "processors/"


class ProcessorConflict(Exception):
    """Another registration changed the record first."""


class DynamoProcessorRegistry:
    """The Processors table: one item per repository@tag, partition key ``processor_key``."""

    def __init__(self, table_name: str, client: Any = None):
        self.table_name = table_name
        self._client = client

    client = LazyClient("dynamodb")

    def find(self, source: SourceRef) -> ProcessorRecord | None:
        item = self.client.get_item(
            TableName=self.table_name, Key={PK: {"S": processor_key(source)}}, ConsistentRead=True
        ).get("Item")
        return _record(item) if item else None

    def list(self) -> list[ProcessorRecord]:
        records = []
        for page in self.client.get_paginator("scan").paginate(
            TableName=self.table_name, ConsistentRead=True
        ):
            records.extend(_record(item) for item in page.get("Items", []))
        return sorted(records, key=lambda record: (record.source_url, record.tag))

    def get(self, processor_id: str) -> ProcessorRecord | None:
        return next((record for record in self.list() if record.id == processor_id), None)

    def newest_ready(self, url: str) -> ProcessorRecord | None:
        prefix = processor_key(SourceRef(url, "")).rstrip("#") + "#"
        ready = [
            r for r in self.list() if r.processor_key.startswith(prefix) and r.status is ProcessorStatus.READY
        ]
        return max(ready, key=lambda record: record.updated_at, default=None)

    def put(self, record: ProcessorRecord, *, replacing: ProcessorRecord | None = None) -> None:
        """Write a new record, or replace ``replacing`` only if it is unchanged since it was read."""
        condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(#pk)"}
        names = {"#pk": PK}
        if replacing is not None:
            condition = {
                "ConditionExpression": "#updated = :updated",
                "ExpressionAttributeValues": {":updated": {"S": to_attribute(replacing.updated_at)}},
            }
            names = {"#updated": "updated_at"}
        try:
            self.client.put_item(
                TableName=self.table_name, Item=_item(record), ExpressionAttributeNames=names, **condition
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise ProcessorConflict(
                    f"{record.source} was registered by another request meanwhile"
                ) from None
            raise

    def finish(self, key: str, build_id: str, **fields: Any) -> ProcessorRecord | None:
        """Set the outcome of ``build_id``; None when the record has moved on to another build."""
        fields["updated_at"] = utcnow()
        names = {f"#{name}": name for name in fields} | {"#build": "build_id"}
        values = {f":{name}": to_attribute(value) for name, value in fields.items()} | {":build": build_id}
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key={PK: {"S": key}},
                UpdateExpression="SET " + ", ".join(f"#{name} = :{name}" for name in fields),
                ConditionExpression="#build = :build",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=serialize(values),
                ReturnValues="ALL_NEW",
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise
        return _record(response["Attributes"])


@dataclass(frozen=True)
class BuildSettings:
    project_name: str
    manifest_bucket: str  # where builds put app.yml (under processors/<id>/)
    repository_uri: str  # the node's ECR repository, which the project pushes to


class CodeBuildBuilds:
    """Starts one build of the node's project for a record."""

    def __init__(self, settings: BuildSettings, client: Any = None):
        self.settings = settings
        self._client = client

    client = LazyClient("codebuild")

    def start(self, record: ProcessorRecord) -> str:
        variables = [
            _plain(ENV_SOURCE_URL, record.source_url),
            _plain(ENV_SOURCE_TAG, record.tag),
            _plain(ENV_IMAGE_TAG, record.id),
            _plain(ENV_PROCESSOR_KEY, record.processor_key),
            _plain(ENV_MANIFEST_KEY, manifest_key(record)),
        ]
        if record.token_secret_arn:  # CodeBuild resolves it; the value is never in this request
            variables.append(
                {"name": ENV_GIT_TOKEN, "value": record.token_secret_arn, "type": "SECRETS_MANAGER"}
            )
        response = self.client.start_build(
            projectName=self.settings.project_name, environmentVariablesOverride=variables
        )
        return response["build"]["id"]


def manifest_key(record: ProcessorRecord) -> str:
    return f"{MANIFEST_PREFIX}{record.id}/app.yml"


def register_processor(
    source: SourceRef,
    *,
    registry: DynamoProcessorRegistry,
    builds: CodeBuildBuilds,
    token_secret_arn: str | None = None,
) -> tuple[ProcessorRecord, bool]:
    """The record and whether a build started. READY and BUILDING records stand (a tag is a version:
    registering it again builds nothing); a FAILED one, or a new token, builds again."""
    existing = registry.find(source)
    token = token_secret_arn or (existing.token_secret_arn if existing else None)
    if (
        existing is not None
        and existing.status is not ProcessorStatus.FAILED
        and token == existing.token_secret_arn
    ):
        return existing, False
    record = ProcessorRecord.new(source, token)
    if existing is not None:
        record = record.model_copy(update={"created_at": existing.created_at})
    record = record.model_copy(update={"build_id": builds.start(record)})
    registry.put(record, replacing=existing)
    log.info("processor %s: build %s started", source, record.build_id)
    return record, True


@dataclass(frozen=True)
class BuildEvent:
    """What a CodeBuild state-change event says about one build of the node's project."""

    build_id: str  # "<project>:<uuid>", as start_build returns it
    status: str
    processor_key: str | None
    digest: str | None
    log_group: str | None
    log_stream: str | None
    lambda_digest: str | None = None
    lambda_problem: str | None = None

    @classmethod
    def of(cls, detail: Mapping[str, Any]) -> BuildEvent:
        info = detail.get("additional-information") or {}
        env = {
            v.get("name"): v.get("value")
            for v in info.get("environment", {}).get("environment-variables", [])
        }
        exported = {v.get("name"): v.get("value") for v in info.get("exported-environment-variables", [])}
        logs = info.get("logs") or {}
        build_arn = str(detail.get("build-id", ""))
        return cls(
            build_id=build_arn.rsplit("/", 1)[-1],
            status=str(detail.get("build-status", "")),
            processor_key=env.get(ENV_PROCESSOR_KEY),
            digest=exported.get(ENV_DIGEST),
            log_group=logs.get("group-name"),
            log_stream=logs.get("stream-name"),
            lambda_digest=exported.get(ENV_LAMBDA_DIGEST) or None,
            lambda_problem=exported.get(ENV_LAMBDA_PROBLEM) or None,
        )


class BuildOutputs:
    """Where a finished build left what it found: the digest, app.yml in S3, the log in CloudWatch."""

    def __init__(self, settings: BuildSettings, codebuild: Any = None, s3: Any = None, logs: Any = None):
        self.settings = settings
        self._codebuild, self._s3, self._logs = codebuild, s3, logs

    def digest(self, event: BuildEvent) -> str | None:
        if event.digest:
            return event.digest
        client = self._codebuild or _client("codebuild")
        builds = client.batch_get_builds(ids=[event.build_id]).get("builds", [])
        exported = builds[0].get("exportedEnvironmentVariables", []) if builds else []
        return next((v.get("value") for v in exported if v.get("name") == ENV_DIGEST), None)

    def manifest_text(self, record: ProcessorRecord) -> str | None:
        client = self._s3 or _client("s3")
        try:
            body = client.get_object(Bucket=self.settings.manifest_bucket, Key=manifest_key(record))["Body"]
        except Exception as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return None  # the repository has no app.yml: the default manifest
            raise
        return body.read().decode("utf-8", errors="replace")

    def log_tail(self, event: BuildEvent) -> str:
        if not event.log_group or not event.log_stream:
            return "the build left no log"
        client = self._logs or _client("logs")
        try:
            events = client.get_log_events(
                logGroupName=event.log_group,
                logStreamName=event.log_stream,
                limit=LOG_TAIL_LINES,
                startFromHead=False,
            )["events"]
        except Exception as exc:
            return f"the build log could not be read ({error_code(exc) or exc})"
        text = "".join(
            e.get("message", "") if e.get("message", "").endswith("\n") else e.get("message", "") + "\n"
            for e in events
        )
        return text[-MAX_LOG_TAIL:] or "the build log is empty"


def finish_build(
    detail: Mapping[str, Any], *, registry: DynamoProcessorRegistry, outputs: BuildOutputs
) -> ProcessorRecord | None:
    """READY or FAILED from a build's final state; None for states in between, other projects' builds
    and builds a newer registration replaced."""
    event = BuildEvent.of(detail)
    if event.processor_key is None or (event.status != SUCCEEDED and event.status not in FAILED_STATES):
        return None
    record = registry.finish  # one conditional write per outcome, matched on the build id
    if event.status in FAILED_STATES:
        return record(
            event.processor_key, event.build_id, status=ProcessorStatus.FAILED, error=outputs.log_tail(event)
        )
    current = _current(registry, event)
    if current is None:
        return None
    digest = outputs.digest(event)
    if not digest or not digest.startswith(DIGEST_PREFIX):
        return record(
            event.processor_key,
            event.build_id,
            status=ProcessorStatus.FAILED,
            error="the build reported no image digest",
        )
    text = outputs.manifest_text(current)
    try:
        manifest = parse_manifest(text) if text is not None else None
    except ManifestError as exc:
        return record(event.processor_key, event.build_id, status=ProcessorStatus.FAILED, error=str(exc))
    lambda_digest = event.lambda_digest if (event.lambda_digest or "").startswith(DIGEST_PREFIX) else None
    lambda_problem = None if lambda_digest else (event.lambda_problem or "the build made no Lambda image")
    if (
        lambda_digest is None
        and manifest is not None
        and ComputeType.LAMBDA in manifest.runtime.compute_types
    ):
        error = f"app.yml allows computeType lambda, but {lambda_problem}"
        return record(event.processor_key, event.build_id, status=ProcessorStatus.FAILED, error=error)
    return record(
        event.processor_key,
        event.build_id,
        status=ProcessorStatus.READY,
        image_digest=digest,
        image_uri=outputs.settings.repository_uri,
        manifest=manifest.document() if manifest is not None else {},
        lambda_image_digest=lambda_digest,
        lambda_problem=lambda_problem,
        error=None,
    )


def _current(registry: DynamoProcessorRegistry, event: BuildEvent) -> ProcessorRecord | None:
    url, _, tag = (event.processor_key or "").rpartition("#")
    record = registry.find(SourceRef(url, tag))
    return record if record is not None and record.build_id == event.build_id else None


def _plain(name: str, value: str) -> dict[str, str]:
    return {"name": name, "value": value, "type": "PLAINTEXT"}


def _item(record: ProcessorRecord) -> dict[str, Any]:
    item = {name: to_attribute(value) for name, value in record.model_dump(mode="python").items()}
    return serialize({name: value for name, value in item.items() if value is not None})


def _record(item: Mapping[str, Any]) -> ProcessorRecord:
    return ProcessorRecord.model_validate(from_attribute(deserialize(dict(item))))


def _client(service: str) -> Any:
    from pennflow.aws import client

    return client(service)


# Environment of the functions that use the registry (the API, the build-state handler): stacks/processors.py.
ENV_TABLE, ENV_PROJECT = "PROCESSORS_TABLE", "PROCESSOR_BUILD_PROJECT"
ENV_BUCKET, ENV_REPOSITORY = "PROCESSOR_MANIFEST_BUCKET", "PROCESSOR_REPOSITORY_URI"


class NodeProcessors:
    """The registry and its builds together: what the API's routes, workflow registration and run
    starts use (``find`` is ``pennflow.processors.registry.ProcessorLookup``)."""

    def __init__(self, registry: DynamoProcessorRegistry, builds: CodeBuildBuilds):
        self.registry = registry
        self.builds = builds

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> NodeProcessors | None:
        """None when the node was deployed without a processor registry."""
        names = (ENV_TABLE, ENV_PROJECT, ENV_BUCKET, ENV_REPOSITORY)
        if not all(environ.get(name) for name in names):
            return None
        settings = BuildSettings(environ[ENV_PROJECT], environ[ENV_BUCKET], environ[ENV_REPOSITORY])
        return cls(DynamoProcessorRegistry(environ[ENV_TABLE]), CodeBuildBuilds(settings))

    def find(self, source: SourceRef) -> ProcessorRecord | None:
        return self.registry.find(source)

    def newest_ready(self, url: str) -> ProcessorRecord | None:
        return self.registry.newest_ready(url)

    def register(
        self, source: SourceRef, token_secret_arn: str | None = None
    ) -> tuple[ProcessorRecord, bool]:
        return register_processor(
            source, registry=self.registry, builds=self.builds, token_secret_arn=token_secret_arn
        )
