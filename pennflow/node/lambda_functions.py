"""The node's processor functions: one Lambda function per (image digest, run slot, size), created on a
run's first use and reused by every later run in that slot.

A function's file system is part of its configuration, not of an invocation, and a run's isolation is
its slot's access point (``pennflow.node.slots``): so each function mounts one slot's access point at
``/mnt/run`` and has that slot's function role, which may mount that access point only and read that
slot's run parameters only. Its name is ``<prefix><slot>-<16 hex of sha256(the whole request)>``: the
image digest, memory, timeout, environment, role and network are all in the request, so a changed
memory or a new digest is a new function, and the same content in the same slot is always the same
name (a warm start costs one ``GetFunction``). The run's preparation (``pennflow.node.lifecycle``)
ensures the functions before the execution starts; a function it creates is Pending for a while, which
the compiled state retries (``pennflow.workflow.asl_lambda``). ``prune`` deletes the functions of
digests no READY processor and no leased slot's run uses any more (the node's daily schedule).

Secrets are in no function's configuration: its environment names the slot's SSM parameters, which
the image's bootstrap (``pennflow.processors.lambda_bootstrap``) reads at each invocation.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pennflow.aws import arns as aws_arns
from pennflow.aws import client as aws_client
from pennflow.aws import error_code
from pennflow.node.slots import Slot
from pennflow.node.taskdefs import RUN_ID_PARAMETER, TOKEN_PARAMETER
from pennflow.processors import lambda_bootstrap as boot
from pennflow.workflow.asl_lambda import lambda_processors
from pennflow.workflow.contract import RUN_MOUNT
from pennflow.workflow.cost_tags import NODE_TAG
from pennflow.workflow.definition import Processor, Workflow
from pennflow.workflow.pennsieve_env import RUN_VARIABLES

log = logging.getLogger(__name__)

HASH_CHARS = 16
SLOT_TAG = "pennflow:slot"
PROCESSOR_TAG = "pennflow:processor"
DIGEST_TAG = "pennflow:image-digest"
DEFAULT_EPHEMERAL_MB = 512  # /tmp: Lambda's free size; a processor writes its results to OUTPUT_DIR on EFS


@dataclass(frozen=True)
class FunctionSettings:
    """The node-wide values every processor function names (from the Lambda settings)."""

    name_prefix: str  # "<node>_fn-": the states role may invoke, the runs manager manage, only these
    # One function role per run slot: "arn:...:role/<node>_<region>_{slot}-function" (stacks/lambda_compute.py)
    role_template: str
    subnets: Sequence[str]
    security_groups: Sequence[str]
    region: str
    log_group: str
    slot_parameter_prefix: str | None = None
    session_tokens: bool = False
    pennsieve_environment: Mapping[str, str] = field(default_factory=dict)
    ephemeral_mb: int = DEFAULT_EPHEMERAL_MB
    node_name: str | None = None

    def role_arn(self, slot_id: str) -> str:
        return self.role_template.format(slot=slot_id)

    def access_point_arn(self, access_point_id: str) -> str:
        role = aws_arns.parse(self.role_template)
        resource = f"access-point/{access_point_id}"
        return aws_arns.build(
            "elasticfilesystem", self.region, role.account, resource, partition=role.partition
        )


def image_digest(image: str | None) -> str | None:
    """``sha256:...`` of an image pinned by digest (``repo@sha256:...``), else None."""
    if not image or "@sha256:" not in image:
        return None
    return image.rsplit("@", 1)[1]


def function_request(processor: Processor, slot: Slot, settings: FunctionSettings) -> dict[str, Any]:
    """The ``CreateFunction`` request (without name and tags) of a lambda processor in a slot."""
    if image_digest(processor.image) is None:
        raise ValueError(
            f"processor {processor.id!r}: computeType lambda runs an image the node built from its "
            f"sourceUrl@tag (with the Lambda bootstrap), pinned by digest; {processor.image!r} is not one"
        )
    environment = dict(settings.pennsieve_environment)
    if settings.slot_parameter_prefix:
        environment[boot.RUN_ID_PARAMETER_VAR] = (
            f"{settings.slot_parameter_prefix}{slot.slot_id}/{RUN_ID_PARAMETER}"
        )
        environment[boot.RUN_ID_NAMES_VAR] = ",".join(RUN_VARIABLES)
        if settings.session_tokens and processor.gets_token:
            environment[boot.TOKEN_PARAMETER_VAR] = (
                f"{settings.slot_parameter_prefix}{slot.slot_id}/{TOKEN_PARAMETER}"
            )
    return {
        "Role": settings.role_arn(slot.slot_id),
        "PackageType": "Image",
        "Code": {"ImageUri": processor.image},
        "MemorySize": processor.memory,
        "Timeout": processor.timeout_seconds,
        "EphemeralStorage": {"Size": settings.ephemeral_mb},
        "Environment": {"Variables": dict(sorted(environment.items()))},
        "VpcConfig": {
            "SubnetIds": sorted(settings.subnets),
            "SecurityGroupIds": sorted(settings.security_groups),
        },
        "FileSystemConfigs": [
            {"Arn": settings.access_point_arn(slot.access_point_id), "LocalMountPath": str(RUN_MOUNT)}
        ],
        "LoggingConfig": {"LogFormat": "Text", "LogGroup": settings.log_group},
        "Description": f"pennflow processor {processor.id} in {slot.slot_id}"[:256],
    }


def function_name(request: Mapping[str, Any], slot_id: str, prefix: str) -> str:
    canonical = json.dumps({k: v for k, v in request.items() if k != "Description"}, sort_keys=True)
    return f"{prefix}{slot_id}-{hashlib.sha256(canonical.encode()).hexdigest()[:HASH_CHARS]}"


class ProcessorFunctions:
    """Get-or-create the run slot's function of each lambda processor; prune unused digests."""

    def __init__(self, settings: FunctionSettings, lambda_client: Any = None):
        self.settings = settings
        self._lambda = lambda_client

    @property
    def lambda_(self) -> Any:
        if self._lambda is None:
            self._lambda = aws_client("lambda")
        return self._lambda

    def requests(self, workflow: Workflow, slot: Slot) -> dict[str, tuple[str, dict[str, Any]]]:
        """processor id -> (function name, request), for the workflow's lambda processors in this slot."""
        out = {}
        for processor in lambda_processors(workflow.processors):
            request = function_request(processor, slot, self.settings)
            out[processor.id] = (function_name(request, slot.slot_id, self.settings.name_prefix), request)
        return out

    def ensure(self, workflow: Workflow, slot: Slot, run_layers: Sequence[str] = ()) -> dict[str, str]:
        """processor id -> function ARN in this slot, creating only the functions that do not exist."""
        requests = self.requests(workflow, slot)
        if requests and run_layers:
            raise ValueError(
                f"the run's layers ({', '.join(run_layers)}) cannot be mounted by the lambda processor(s) "
                f"{', '.join(requests)}: a Lambda function mounts one file system, the run's folder"
            )
        arns: dict[str, str] = {}
        for processor_id, (name, request) in requests.items():
            arns[processor_id] = self._get(name) or self._create(name, request, slot, processor_id, workflow)
        return arns

    def _get(self, name: str) -> str | None:
        try:
            return self.lambda_.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return None
            raise

    def _create(
        self, name: str, request: dict[str, Any], slot: Slot, processor_id: str, workflow: Workflow
    ) -> str:
        image = workflow.processor(processor_id).image
        tags = {SLOT_TAG: slot.slot_id, PROCESSOR_TAG: processor_id, DIGEST_TAG: image_digest(image) or ""}
        if self.settings.node_name:
            tags[NODE_TAG] = self.settings.node_name
        try:
            arn = self.lambda_.create_function(FunctionName=name, Tags=tags, **request)["FunctionArn"]
        except Exception as exc:
            code = error_code(exc)
            if code == "ResourceConflictException":  # another preparation created it just now
                return self._get(name) or name
            if code == "InvalidParameterValueException":  # the same on every attempt: the run fails
                raise ValueError(f"processor {processor_id!r}: Lambda refused its function: {exc}") from None
            raise
        log.info("created function %s for %s in %s", name, processor_id, slot.slot_id)
        return arn

    # ------------------------------------------------------------------ clean-up

    def functions(self) -> Iterator[dict[str, Any]]:
        """The node's processor functions (ListFunctions filtered by the name prefix)."""
        for page in self.lambda_.get_paginator("list_functions").paginate():
            for function in page.get("Functions", []):
                if function["FunctionName"].startswith(self.settings.name_prefix):
                    yield function

    def prune(self, images_in_use: Collection[str]) -> list[str]:
        """Delete the functions whose image digest is in none of ``images_in_use`` (READY processors'
        Lambda images and the images of runs holding a slot); returns their names."""
        keep = {image_digest(image) for image in images_in_use} - {None}
        deleted = []
        for function in self.functions():
            tags = self.lambda_.list_tags(Resource=function["FunctionArn"]).get("Tags", {})
            if tags.get(DIGEST_TAG) in keep:
                continue
            try:
                self.lambda_.delete_function(FunctionName=function["FunctionName"])
            except Exception as exc:
                if error_code(exc) != "ResourceNotFoundException":
                    raise
            deleted.append(function["FunctionName"])
        if deleted:
            log.info(
                "deleted %d processor function(s) of unused images: %s", len(deleted), ", ".join(deleted)
            )
        return deleted


def images_in_use(registry: Any, slots: Any, store: Any) -> set[str]:
    """Every image a function may still run: each READY processor's (both variants), and each image
    pinned by a run that holds a slot (running, or kept for a resume)."""
    images: set[str] = set()
    for record in registry.list():
        images.update(image for image in record.pins() if image)
    for slot in slots.slots():
        run = store.get_run(slot.run_id) if slot.run_id else None
        if run is not None:
            images.update((run.images or {}).values())
    return images


def prune_unused(node: Any) -> list[str]:
    """The node's daily clean-up (stacks/lambda_compute.py): delete the functions of unused digests.
    Without a processor registry nothing is known to be unused, so nothing is deleted."""
    if node.functions is None or node.processors is None:
        return []
    return node.functions.prune(images_in_use(node.processors, node.slots, node.store))
