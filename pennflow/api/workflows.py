"""Routes' logic for workflows: register (validate, compile, deploy), list, get."""

from __future__ import annotations

from typing import Any

from pennflow.api.errors import Conflict, InvalidRequest, NotFound, field_error, invalid_definition
from pennflow.api.gpu import node_gpu_capacity, refuse_without_gpu_capacity
from pennflow.api.models import WorkflowList, WorkflowSummary, WorkflowView
from pennflow.node.gpu import GpuCapacity
from pennflow.node.registry import (
    StackOwnedWorkflow,
    StateMachineNameTooLong,
    WorkflowRecord,
    WorkflowRegistry,
)
from pennflow.workflow.definition import DefinitionError, Workflow, runs_on_lambda, validate_definition


def register_workflow(
    body: Any, *, registry: WorkflowRegistry, processors: Any | None = None, gpu: GpuCapacity | None = None
) -> tuple[WorkflowView, bool]:
    """Returns the registered workflow and whether it is new (201) rather than updated (200).

    Its sourceUrl processors are registered too (``processors``: the node's processor registry), so
    their builds start now and the first run finds them READY or says they are still building."""
    from pennflow.workflow.asl import CompileError

    try:
        workflow = validate_definition(body, source="request body")
    except DefinitionError as exc:
        raise invalid_definition(exc.faults) from None
    refuse_without_gpu_capacity(workflow, node_gpu_capacity() if gpu is None else gpu)
    refuse_unbuilt_lambda_images(workflow)
    if processors is not None or any(p.source_url and not p.image for p in workflow.processors):
        from pennflow.api.processors import register_sources

        register_sources(workflow, processors)
    try:
        record, created = registry.register(workflow)
    except CompileError as exc:
        raise InvalidRequest(
            str(exc), fields=[field_error("processors", str(exc))], code="cannot_compile"
        ) from None
    except StackOwnedWorkflow as exc:  # its state machine is CloudFormation's: never changed from here
        raise Conflict(
            str(exc), fields=[field_error("name", "deployed by the stack")], code="stack_owned"
        ) from None
    except StateMachineNameTooLong as exc:
        raise InvalidRequest(str(exc), fields=[field_error("name", str(exc))]) from None
    return workflow_view(record), created


def refuse_unbuilt_lambda_images(workflow: Workflow) -> None:
    """422 for a computeType lambda processor given by ``image:``: on a node it runs from an image the
    node built from its sourceUrl@tag with the Lambda bootstrap, so such a run could only fail at
    prepare (``node.lambda_functions.function_request``); the registration says so first."""
    unbuilt = [p.id for p in workflow.processors if runs_on_lambda(p) and p.image and not p.source_url]
    if not unbuilt:
        return
    why = (
        "computeType lambda on a node runs an image the node builds from the processor's sourceUrl@tag "
        "(it adds the Lambda runtime bootstrap); give a sourceUrl and tag, or use computeType standard"
    )
    raise InvalidRequest(
        "; ".join(f"processor {pid!r}: {why}" for pid in unbuilt),
        fields=[field_error(f"processors.{pid}.computeType", why) for pid in unbuilt],
        code="lambda_needs_source",
    )


def get_workflow(name: str, *, registry: WorkflowRegistry) -> WorkflowView:
    record = registry.get(name)
    if record is None:
        raise NotFound(f"no workflow named {name!r}", fields=[field_error("name", "not registered", "path")])
    return workflow_view(record)


def list_workflows(*, registry: WorkflowRegistry) -> WorkflowList:
    return WorkflowList(workflows=[_summary(record) for record in registry.list()])


def workflow_view(record: WorkflowRecord) -> WorkflowView:
    return WorkflowView(
        name=record.name,
        definition_hash=record.definition_hash,
        state_machine_arn=record.state_machine_arn,
        state_machine_version_arn=record.version_arn,
        managed_by=record.managed_by,
        created_at=record.created_at,
        updated_at=record.updated_at,
        definition=record.definition,
    )


def _summary(record: WorkflowRecord) -> WorkflowSummary:
    return WorkflowSummary(
        name=record.name,
        summary=record.definition.get("summary") or record.definition.get("description"),
        definition_hash=record.definition_hash,
        processors=len(record.definition.get("processors", [])),
        state_machine_arn=record.state_machine_arn,
        managed_by=record.managed_by,
        updated_at=record.updated_at,
    )
