"""The trigger rule routes of the REST API (a Powertools ``Router``; the node's resolver includes it
under ``/triggers``): create, list, get (with the open debounce window) and delete.

Creating a rule checks what would otherwise fail only when files arrive: the workflow must be
registered and every param must be declared by one of its processors. Errors are the API's
``ApiError``s, which the node's resolver turns into its one JSON error shape naming the field.

Imported only by the AWS side (it imports Powertools at module level).
"""

from __future__ import annotations

import os
from functools import cache
from typing import Annotated, Protocol

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.depends import Depends
from aws_lambda_powertools.event_handler.openapi.params import Path, Query

from pennflow.api.errors import BadRequest, NotFound, field_error
from pennflow.api.models import DEFAULT_LIST_LIMIT, MAX_CURSOR, MAX_LIST_LIMIT
from pennflow.api.openapi_docs import errors, ok
from pennflow.node.registry import WorkflowRecord
from pennflow.triggers.models import (
    DATASET_ID_PATTERN,
    RULE_ID_PATTERN,
    TriggerDeleted,
    TriggerList,
    TriggerRule,
    TriggerRuleRequest,
    TriggerView,
)
from pennflow.triggers.store import TriggerStore
from pennflow.workflow.contract import UnknownParameter, run_parameters
from pennflow.workflow.runs import utcnow

ENV_WORKFLOWS_TABLE = "WORKFLOWS_TABLE"

RuleIdParam = Annotated[str, Path(pattern=RULE_ID_PATTERN, description="The trigger rule id (trg-<32 hex>).")]


class WorkflowLookup(Protocol):
    def get(self, name: str) -> WorkflowRecord | None: ...


@cache
def trigger_store() -> TriggerStore:
    from pennflow.triggers import wiring

    return wiring.store()


@cache
def workflow_lookup() -> WorkflowLookup:
    from pennflow.node.registry import DynamoWorkflowRegistry, StateMachineSettings

    # Only reads: the state machine settings are never used, so none are required here.
    return DynamoWorkflowRegistry(
        os.environ[ENV_WORKFLOWS_TABLE], StateMachineSettings(prefix="", role_arn="")
    )


Store = Annotated[TriggerStore, Depends(trigger_store)]
Workflows = Annotated[WorkflowLookup, Depends(workflow_lookup)]

router = Router()


@router.post(
    "/",
    summary="Create a trigger rule",
    description="Starts the workflow on a dataset when matching files are uploaded to it, once per burst "
    "of uploads (debounced).",
    tags=["triggers"],
    responses={**ok(TriggerView, "Created", 201), **errors(400, 404, 413, 415, 422)},
)
def create_trigger(body: TriggerRuleRequest, store: Store, workflows: Workflows) -> Response[TriggerView]:
    record = workflows.get(body.workflow)
    if record is None:
        raise NotFound(
            f"no workflow named {body.workflow!r}: register it with POST /workflows",
            fields=[field_error("workflow", "not registered")],
        )
    try:
        run_parameters(record.workflow(), body.params)
    except UnknownParameter as exc:
        fields = [field_error(f"params.{key}", "no processor declares this param") for key in exc.keys]
        raise BadRequest(str(exc), fields=fields, code="unknown_param") from None
    rule = TriggerRule.create(body, now=utcnow(), created_by=_caller())
    store.create_rule(rule)
    return Response(201, "application/json", TriggerView.of(rule))


@router.get(
    "/",
    summary="List trigger rules",
    tags=["triggers"],
    responses={**ok(TriggerList), **errors(400, 422)},
)
def list_triggers(
    store: Store,
    dataset_id: Annotated[str | None, Query(alias="datasetId", pattern=DATASET_ID_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = DEFAULT_LIST_LIMIT,
    cursor: Annotated[str | None, Query(min_length=1, max_length=MAX_CURSOR)] = None,
) -> TriggerList:
    try:
        page = store.list_rules(dataset_id=dataset_id, limit=limit, cursor=cursor)
    except ValueError as exc:
        raise BadRequest(str(exc), fields=[field_error("cursor", str(exc), "query")]) from None
    return TriggerList(triggers=[TriggerView.of(rule) for rule in page.rules], cursor=page.cursor)


@router.get(
    "/<rule_id>",
    summary="Get a trigger rule and its open window",
    tags=["triggers"],
    responses={**ok(TriggerView), **errors(404, 422)},
)
def get_trigger(rule_id: RuleIdParam, store: Store) -> TriggerView:
    return TriggerView.of(_existing(store, rule_id), store.get_pending(rule_id))


@router.delete(
    "/<rule_id>",
    summary="Delete a trigger rule",
    tags=["triggers"],
    responses={**ok(TriggerDeleted, "Deleted"), **errors(404, 422)},
)
def delete_trigger(rule_id: RuleIdParam, store: Store) -> TriggerDeleted:
    if store.delete_rule(rule_id) is None:
        raise _not_found(rule_id)
    return TriggerDeleted(rule_id=rule_id)


def _existing(store: TriggerStore, rule_id: str) -> TriggerRule:
    rule = store.get_rule(rule_id)
    if rule is None:
        raise _not_found(rule_id)
    return rule


def _not_found(rule_id: str) -> NotFound:
    return NotFound(
        f"no trigger rule {rule_id!r}", fields=[field_error("rule_id", "no such trigger rule", "path")]
    )


def _caller() -> str | None:
    """The IAM caller of the request, recorded as the rule's creator."""
    identity = (router.current_event.raw_event.get("requestContext") or {}).get("identity") or {}
    return identity.get("userArn") or identity.get("caller")
