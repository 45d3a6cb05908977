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
from pennflow.workflow.definition import DefinitionError, validate_definition


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
