"""The compute node's REST API (API Gateway REST proxy, IAM auth): routes -> ``pennflow.api``.

Each route declares its request and response models and calls one function of ``pennflow.api``
with the ports it needs (``Depends``, created on first use so a cold start pays only for what
the request touches; tests swap them with ``app.dependency_overrides``). Every error is one JSON
shape naming the field at fault; an unexpected exception gives 500 with the request id only.
"""

from __future__ import annotations

import json
from functools import cache, partial
from http import HTTPStatus
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Depends, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError, ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query
from aws_lambda_powertools.logging import correlation_paths

from lambdas.observability import logger, metrics, tracer
from pennflow.api import logs as log_logic
from pennflow.api import results as result_logic
from pennflow.api import resume as resume_logic
from pennflow.api import runs as run_logic
from pennflow.api import workflows as workflow_logic
from pennflow.api.errors import (
    ApiError,
    NotFound,
    Unavailable,
    UnsupportedMediaType,
    from_validation_errors,
    too_complex,
)
from pennflow.api.idempotency import IdempotentRunStarts
from pennflow.api.layers import router as layers_router
from pennflow.api.models import (
    DEFAULT_LIST_LIMIT,
    MAX_CURSOR,
    MAX_LIST_LIMIT,
    RUN_ID_PATTERN,
    CancelAccepted,
    ErrorBody,
    RunAccepted,
    RunDuplicate,
    RunList,
    RunPlan,
    RunRequest,
    RunView,
    WorkflowList,
    WorkflowName,
    WorkflowView,
)
from pennflow.api.notebooks import router as notebooks_router
from pennflow.api.openapi_docs import errors as _errors
from pennflow.api.openapi_docs import ok as _ok
from pennflow.api.openapi_docs import with_edge_responses
from pennflow.api.ports import (
    AsyncLambda,
    PennsieveInputs,
    RunCanceller,
    RunLauncher,
    RunPlanning,
    S3Manifests,
)
from pennflow.api.processors import configured_processors
from pennflow.api.processors import router as processors_router
from pennflow.api.requests import json_body, preflight, refuse_oversized_definition
from pennflow.api.resume import ResumeFunction, RunResumed, RunResumer
from pennflow.api.run_budget import RunBudget
from pennflow.node.registry import WorkflowRegistry
from pennflow.stores.base import RunStore
from pennflow.triggers.api import router as triggers_router
from pennflow.workflow.cost import PriceOverrides
from pennflow.workflow.runs import Status

TITLE = "pennflow compute node"
API_VERSION = "1.0.0"

# A response that does not match its model is a bug here, not the caller's: 500, not 422.
app = APIGatewayRestResolver(
    enable_validation=True,
    response_validation_error_http_code=HTTPStatus.INTERNAL_SERVER_ERROR,
    json_body_deserializer=json_body,
)


# ------------------------------------------------------------------ ports (created on first use)


@cache
def settings():
    from lambdas.settings import ApiSettings

    return ApiSettings()


@cache
def run_store() -> RunStore:
    from pennflow.stores.dynamodb import DynamoRunStore

    return DynamoRunStore(settings().runs_table)


@cache
def workflow_registry() -> WorkflowRegistry:
    from pennflow.node.registry import DynamoWorkflowRegistry, StateMachineSettings

    s = settings()
    machines = StateMachineSettings(
        prefix=s.state_machine_prefix,
        role_arn=s.state_machine_role_arn,
        log_group_arn=s.state_machine_log_group_arn,
        tags={"pennflow:node": s.node_name},
    )
    return DynamoWorkflowRegistry(s.workflows_table, machines)


@cache
def run_launcher() -> RunLauncher:
    return AsyncLambda(settings().prepare_function_name)


@cache
def run_canceller() -> RunCanceller:
    return AsyncLambda(settings().cancel_function_name)


@cache
def run_resumer() -> RunResumer:
    return ResumeFunction(settings().resume_function_name)


@cache
def idempotency() -> IdempotentRunStarts:
    return IdempotentRunStarts(settings().idempotency_table)


@cache
def run_planning() -> RunPlanning:
    """Keying runs: what this node's settings give (a missing part leaves runs that need it unkeyed)."""
    s = settings()
    layers = None
    if s.layers_table:
        from pennflow.layers.dynamodb import DynamoLayerRegistry

        layers = DynamoLayerRegistry(s.layers_table)
    return RunPlanning(
        inputs=PennsieveInputs(partial(pennsieve_client, s.pennsieve_secret_arn))
        if s.pennsieve_secret_arn
        else None,
        layers=layers,
        manifests=S3Manifests(s.results_bucket) if s.results_bucket else None,
        budget=RunBudget(
            region=s.region,
            prices=PriceOverrides.model_validate_json(s.cost_prices),
            ceiling_usd=s.run_cost_ceiling,
            **({"gpu_instance_type": s.gpu_instance_types.split(",")[0]} if s.gpu_instance_types else {}),
        ),
    )


@cache
def run_log_source() -> log_logic.RunLogSource:
    s = settings()
    if not (s.log_bucket and s.processor_log_group):
        raise Unavailable("this node's API has no log bucket or log group set (redeploy the node)")
    return log_logic.RunLogSource(s.log_bucket, s.processor_log_group)


@cache
def result_bucket() -> result_logic.ResultBucket:
    if not settings().results_bucket:
        raise Unavailable("this node's API has no results bucket set (redeploy the node)")
    return result_logic.ResultBucket(settings().results_bucket)


def pennsieve_client(secret_arn: str) -> Any:
    """A Pennsieve client with the node's secret only, and timeouts that fit API Gateway's 29 s."""
    from pennflow.pennsieve import HttpSettings, PennsieveClient, PennsieveHosts
    from pennflow.pennsieve.node_secret import secret_credentials

    http = HttpSettings(connect_timeout=3, read_timeout=10, retries=2, backoff_factor=0.2, backoff_max=2)
    credentials = secret_credentials({"PENNSIEVE_SECRET_ARN": secret_arn})
    return PennsieveClient(credentials, hosts=PennsieveHosts.from_env(), http=http)


Store = Annotated[RunStore, Depends(run_store)]
Registry = Annotated[WorkflowRegistry, Depends(workflow_registry)]
Launcher = Annotated[RunLauncher, Depends(run_launcher)]
Canceller = Annotated[RunCanceller, Depends(run_canceller)]
Idempotency = Annotated[IdempotentRunStarts, Depends(idempotency)]
Resumer = Annotated[RunResumer, Depends(run_resumer)]
Planning = Annotated[RunPlanning, Depends(run_planning)]
LogSource = Annotated[log_logic.RunLogSource, Depends(run_log_source)]
Results = Annotated[result_logic.ResultBucket, Depends(result_bucket)]
Processors = Annotated[Any, Depends(configured_processors)]  # None on a node without a processor registry
# Pennsieve refused the node's key access to the dataset (openapi_docs has no 403 of its own).
FORBIDDEN = {
    403: {
        "description": "Pennsieve refused access to the dataset (the error names the field)",
        "content": {"application/json": {"model": ErrorBody}},
    }
}
RunId = Annotated[str, Path(pattern=RUN_ID_PATTERN, description="The run id (its execution name).")]


# ------------------------------------------------------------------ workflows


@app.post(
    "/workflows",
    operation_id="registerWorkflow",
    summary="Register a workflow",
    description="Validates the definition (every fault is listed), compiles it and creates or updates "
    "its state machine. 201 when the workflow is new, 200 when it was updated or unchanged; 409 when the "
    "name belongs to a workflow deployed from the node's workflows folder (change the file and redeploy).",
    tags=["workflows"],
    responses={
        **_ok(WorkflowView, "Updated (or unchanged)"),
        **_ok(WorkflowView, "Created", 201),
        **_errors(400, 409, 413, 415, 422),
    },
)
def post_workflow(
    definition: Annotated[
        dict[str, Any],
        Body(description="A workflow definition: Pennsieve's workflow JSON, or pennflow's superset of it."),
    ],
    registry: Registry,
    processors: Processors,
) -> Response[WorkflowView]:
    refuse_oversized_definition(definition)
    view, created = workflow_logic.register_workflow(definition, registry=registry, processors=processors)
    return _json(201 if created else 200, view)


@app.get(
    "/workflows",
    operation_id="listWorkflows",
    summary="List workflows",
    tags=["workflows"],
    responses={**_ok(WorkflowList), **_errors(422)},
)
def get_workflows(registry: Registry) -> WorkflowList:
    return workflow_logic.list_workflows(registry=registry)


@app.get(
    "/workflows/<name>",
    operation_id="getWorkflow",
    summary="Get a workflow",
    tags=["workflows"],
    responses={**_ok(WorkflowView), **_errors(404, 422)},
)
def get_workflow(name: Annotated[WorkflowName, Path()], registry: Registry) -> WorkflowView:
    return workflow_logic.get_workflow(name, registry=registry)


# ------------------------------------------------------------------ runs


@app.post(
    "/runs",
    operation_id="startRun",
    summary="Start a run",
    description="Keys the run (definition, image digests, params, layer versions and the dataset's files: "
    "its content key), creates it and hands it to the node (202). When a SUCCEEDED run has the same content "
    "key, answers 200 with that run (duplicateOf) and starts nothing, unless force is true. With dryRun, "
    "returns the plan, the inputs summary and the content key (200) and starts nothing. An Idempotency-Key "
    "makes retries safe: the same key and body return the same run.",
    tags=["runs"],
    responses={
        **_ok(RunPlan | RunDuplicate, "The plan (dryRun), or the SUCCEEDED run with the same content key"),
        **_ok(RunAccepted, "Run accepted", 202),
        **_errors(400, 404, 409, 413, 415, 422, 503),
        **FORBIDDEN,
    },
)
def post_run(
    request: RunRequest,
    store: Store,
    registry: Registry,
    launcher: Launcher,
    starts: Idempotency,
    planning: Planning,
    processors: Processors,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            pattern=r"^[\x21-\x7e]+$",
            description="Any unique string (a UUID); repeats of the request with it return the same run.",
        ),
    ] = None,
) -> Response[RunAccepted | RunPlan | RunDuplicate]:
    def once(create):
        return starts.start(idempotency_key, _caller(), request, create, app.lambda_context)

    answer = run_logic.start_run(
        request,
        store=store,
        registry=registry,
        launcher=launcher,
        planning=planning,
        once=once if idempotency_key else None,
        processors=processors,
    )
    return _json(202 if isinstance(answer, RunAccepted) else 200, answer)


@app.get(
    "/runs",
    operation_id="listRuns",
    summary="List runs, newest first",
    tags=["runs"],
    responses={**_ok(RunList), **_errors(400, 422)},
)
def get_runs(
    store: Store,
    workflow: Annotated[WorkflowName | None, Query()] = None,
    status: Annotated[Status | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = DEFAULT_LIST_LIMIT,
    cursor: Annotated[str | None, Query(min_length=1, max_length=MAX_CURSOR)] = None,
) -> RunList:
    return run_logic.list_runs(store=store, workflow=workflow, status=status, limit=limit, cursor=cursor)


@app.get(
    "/runs/<run_id>",
    operation_id="getRun",
    summary="Get a run and its processors",
    tags=["runs"],
    responses={**_ok(RunView), **_errors(404, 422)},
)
def get_run(run_id: RunId, store: Store) -> RunView:
    return run_logic.get_run(run_id, store=store)


@app.post(
    "/runs/<run_id>/cancel",
    operation_id="cancelRun",
    summary="Cancel a run",
    tags=["runs"],
    responses={
        **_ok(CancelAccepted, "Cancel requested", 202),
        **_errors(404, 409, 422),
    },
)
def post_cancel(run_id: RunId, store: Store, canceller: Canceller) -> Response[CancelAccepted]:
    return _json(202, run_logic.cancel_run(run_id, store=store, canceller=canceller))


@app.post(
    "/runs/<run_id>/rerun",
    operation_id="rerun",
    summary="Run again with the same definition, dataset, params and layers",
    tags=["runs"],
    responses={
        **_ok(RunAccepted, "Run accepted", 202),
        **_errors(404, 409, 422, 503),
        **FORBIDDEN,
    },
)
def post_rerun(
    run_id: RunId, store: Store, registry: Registry, launcher: Launcher, planning: Planning
) -> Response[RunAccepted]:
    accepted = run_logic.rerun(run_id, store=store, registry=registry, launcher=launcher, planning=planning)
    return _json(202, accepted)


@app.post(
    "/runs/<run_id>/resume",
    operation_id="resumeRun",
    summary="Continue a FAILED or CANCELED run (Step Functions redrive): SUCCEEDED processors are not run again",
    tags=["runs"],
    responses={
        **_ok(RunResumed, "Run resumed", 202),
        **_errors(404, 409, 422, 503),
    },
)
def post_resume(run_id: RunId, store: Store, resumer: Resumer) -> Response[RunResumed]:
    body = app.current_event.body
    return _json(202, resume_logic.resume_run(run_id, store=store, resumer=resumer, body=body))


@app.get(
    "/runs/<run_id>/logs",
    operation_id="getRunLogs",
    summary="A run's logs: archived objects once it ended, else live events",
    description="After finalize archived the run's logs, lists the archives (gzip, one line per event) with "
    "presigned GET URLs (expiresInSeconds). Before that, one page of live CloudWatch Logs events of the run's "
    "processors, oldest first; pass nextToken back for newer ones (null once the run ended and all were read).",
    tags=["runs"],
    responses={**_ok(log_logic.RunLogs), **_errors(400, 404, 422, 503)},
)
def get_run_logs(
    run_id: RunId,
    store: Store,
    source: LogSource,
    processor: Annotated[
        str | None, Query(min_length=1, max_length=64, description="Only this processor's logs.")
    ] = None,
    next_token: Annotated[
        str | None,
        Query(
            alias="nextToken", min_length=1, max_length=log_logic.MAX_TOKEN, description="From the last page."
        ),
    ] = None,
) -> log_logic.RunLogs:
    return log_logic.run_logs(
        run_id, store=store, tasks=store, source=source, processor=processor, next_token=next_token
    )


@app.get(
    "/runs/<run_id>/results",
    operation_id="getRunResults",
    summary="A run's result objects, with presigned GET URLs",
    description="What the run left under runs/<run_id>/ in the node's results bucket (its s3 targets' files "
    "and run.json), without the node's working objects; each with a presigned GET URL valid for "
    "expiresInSeconds. Pages with cursor.",
    tags=["runs"],
    responses={**_ok(result_logic.RunResults), **_errors(400, 404, 422, 503)},
)
def get_run_results(
    run_id: RunId,
    store: Store,
    bucket: Results,
    cursor: Annotated[str | None, Query(min_length=1, max_length=MAX_CURSOR)] = None,
) -> result_logic.RunResults:
    return result_logic.run_results(run_id, store=store, bucket=bucket, cursor=cursor)


# ------------------------------------------------------------------ errors


@app.exception_handler(ApiError)
def api_error(exc: ApiError) -> Response:
    if exc.status >= 500:
        logger.warning("request refused", extra={"code": exc.code, "cause": repr(exc.__cause__)})
    return _error(exc)


@app.exception_handler(RequestValidationError)
def invalid_request(exc: RequestValidationError) -> Response:
    return _error(from_validation_errors(exc.errors(), {"body": _body_fields()}))


@app.exception_handler(RequestUnsupportedContentType)
def unsupported_content_type(exc: RequestUnsupportedContentType) -> Response:
    return _error(UnsupportedMediaType("send the body as application/json"))


@app.not_found
def no_route(exc: NotFoundError) -> Response:
    event = app.current_event
    return _error(NotFound(f"no route {event.http_method} {event.path}", code="no_route"))


@app.exception_handler(ServiceError)
def service_error(exc: ServiceError) -> Response:
    return _error(ApiError(exc.msg, code="bad_request", status=exc.status_code))


@app.exception_handler(RecursionError)
def recursion_limit(exc: RecursionError) -> Response:
    # Only a request's own size makes the routes' logic recurse this deep (a huge DAG, say): a 4xx.
    logger.warning("request too deeply nested or chained", extra={"cause": repr(exc)})
    return _error(too_complex())


@app.exception_handler(Exception)
def unexpected(exc: Exception) -> Response:
    logger.exception("unexpected error")
    return _error(
        ApiError("internal error; quote the request id when reporting it", code="internal", status=500)
    )


def _error(exc: ApiError) -> Response:
    return Response(exc.status, "application/json", json.dumps(exc.body(_request_id())))


def _json(status: int, body: Any) -> Response:
    return Response(status, "application/json", body)


def _request_id() -> str | None:
    try:
        return app.current_event.request_context.request_id
    except (AttributeError, KeyError, TypeError):
        return None


def _caller() -> str:
    """Who signed the request (IAM auth), so idempotency keys are scoped per caller."""
    identity = app.current_event.request_context.identity
    return identity.user_arn or identity.caller or identity.account_id or "anonymous"


@cache
def _body_fields() -> tuple[str, ...]:
    return tuple(info.alias or name for name, info in RunRequest.model_fields.items())


# ------------------------------------------------------------------ entry points


# Layers and trigger rules: their routes, models and ports live with them.
app.include_router(layers_router, prefix="/layers")
app.include_router(processors_router, prefix="/processors")
app.include_router(triggers_router, prefix="/triggers")
app.include_router(notebooks_router, prefix="/notebooks")


def openapi_json() -> str:
    """The OpenAPI document of these routes (``docs/openapi.json`` is generated from it)."""
    from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn

    sigv4 = APIKey(
        name="Authorization",
        in_=APIKeyIn.header,
        description="AWS Signature Version 4 (API Gateway IAM auth): sign with service execute-api.",
    )
    document = app.get_openapi_json_schema(
        title=TITLE,
        version=API_VERSION,
        description="Register workflows and start, follow, cancel and rerun runs on a pennflow compute node.",
        security_schemes={"sigv4": sigv4},
        security=[{"sigv4": []}],
    )
    return json.dumps(with_edge_responses(json.loads(document)), indent=2)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    refused = preflight(event)
    if refused is not None:
        return {
            "statusCode": refused.status,
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps(refused.body(_event_request_id(event))),
            "isBase64Encoded": False,
        }
    return app.resolve(event, context)


def _event_request_id(event: dict[str, Any]) -> str | None:
    context = event.get("requestContext")
    return context.get("requestId") if isinstance(context, dict) else None
