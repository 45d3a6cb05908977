"""The layers routes of the REST API (a Powertools ``Router``; the node's resolver includes it
under ``/layers``). Builds and populates run elsewhere: the routes move the layer to BUILDING
and hand the job to the ``LayerJobs`` port, so they answer at once.

Imported only by the AWS side (it imports Powertools at module level).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import cache
from typing import Annotated, Any, Literal, Protocol

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.depends import Depends
from aws_lambda_powertools.event_handler.openapi.params import Path
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

from pennflow import aws
from pennflow.api.errors import ApiError, Conflict, InvalidRequest, NotFound, Unavailable, field_error
from pennflow.api.openapi_docs import errors, ok
from pennflow.layers import service
from pennflow.layers.cost import LayerPrices, layer_storage
from pennflow.layers.models import (
    MAX_DESCRIPTION,
    MAX_REQUIREMENTS,
    InvalidLayerName,
    InvalidLayerRequest,
    LayerConflict,
    LayerError,
    LayerExists,
    LayerNotFound,
    LayerRecord,
    LayerStatus,
    LayerType,
    StorageClass,
)
from pennflow.layers.registry import LayerRegistry
from pennflow.workflow.definition import MAX_NAME, NAME_RE

ENV_TABLE = "LAYERS_TABLE"
ENV_JOBS_FUNCTION = "LAYER_JOBS_FUNCTION_NAME"
NODE_ID_PATTERN = r"^(N:[a-z]+:[A-Za-z0-9-]{1,64}|[0-9]{1,18})$"

NameParam = Annotated[str, Path(pattern=NAME_RE.pattern, max_length=MAX_NAME, description="The layer name.")]


# ------------------------------------------------------------------ ports


class LayerJobs(Protocol):
    """Starts the work that fills a layer version; the finisher calls ``efs.publish_version``."""

    def build(self, record: LayerRecord, version: int) -> None: ...

    def populate(
        self, record: LayerRecord, version: int, dataset_id: str, package_ids: list[str]
    ) -> None: ...

    def remove(self, record: LayerRecord) -> None:
        """Delete a deleted layer's access points and folders."""


class AsyncLayerJobs:
    """Hands each job to a Lambda function asynchronously: ``{"action", "layer", "version", ...}``."""

    def __init__(self, function_name: str, client: Any = None):
        self.function_name = function_name
        self._client = client

    def _send(self, payload: dict[str, Any]) -> None:
        client = self._client or aws.client("lambda")
        client.invoke(
            FunctionName=self.function_name, InvocationType="Event", Payload=json.dumps(payload).encode()
        )

    def build(self, record: LayerRecord, version: int) -> None:
        self._send({"action": "build", "layer": record.name, "version": version})

    def populate(self, record: LayerRecord, version: int, dataset_id: str, package_ids: list[str]) -> None:
        self._send(
            {
                "action": "populate",
                "layer": record.name,
                "version": version,
                "datasetId": dataset_id,
                "packageIds": package_ids,
            }
        )

    def remove(self, record: LayerRecord) -> None:
        self._send({"action": "remove", "layer": record.name, "accessPoints": record.access_points})


@cache
def layer_registry() -> LayerRegistry:
    from pennflow.layers.dynamodb import DynamoLayerRegistry

    return DynamoLayerRegistry(os.environ[ENV_TABLE])


@cache
def layer_jobs() -> LayerJobs:
    return AsyncLayerJobs(os.environ[ENV_JOBS_FUNCTION])


@cache
def layer_prices() -> LayerPrices:
    return LayerPrices.from_env()


Registry = Annotated[LayerRegistry, Depends(layer_registry)]
Jobs = Annotated[LayerJobs, Depends(layer_jobs)]
Prices = Annotated[LayerPrices, Depends(layer_prices)]


# ------------------------------------------------------------------ bodies


class _Request(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class _View(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class CreateLayerRequest(_Request):
    name: Annotated[str, StringConstraints(pattern=NAME_RE.pattern, max_length=MAX_NAME)]
    type: LayerType
    description: Annotated[str, StringConstraints(max_length=MAX_DESCRIPTION)] = ""
    requirements: Annotated[str, StringConstraints(max_length=MAX_REQUIREMENTS)] | None = Field(
        None, description="requirements.txt text; required for python-env layers, which build at once."
    )


class PopulateRequest(_Request):
    dataset_id: Annotated[str, StringConstraints(pattern=NODE_ID_PATTERN)]
    package_ids: list[Annotated[str, StringConstraints(pattern=NODE_ID_PATTERN)]] = Field(
        default_factory=list, max_length=1000
    )


class PackageView(_View):
    name: str
    version: str


class LayerSummary(_View):
    name: str
    type: LayerType
    description: str
    status: LayerStatus
    version: int
    size_bytes: int
    file_count: int
    checksum: str | None
    storage_class: StorageClass
    monthly_cost_usd: float
    last_accessed_at: datetime | None
    created_at: datetime
    created_by: str | None
    active_runs: int

    @classmethod
    def of(cls, record: LayerRecord, prices: LayerPrices) -> LayerSummary:
        storage, cost = layer_storage(record, prices)
        return cls(
            **record.model_dump(include=set(cls.model_fields)),
            storage_class=storage,
            monthly_cost_usd=round(cost, 6),
            active_runs=len(record.refs),
        )


class LayerView(LayerSummary):
    python_version: str | None
    requirements: str | None
    packages: list[PackageView]
    error: str | None
    built_at: datetime | None
    updated_at: datetime
    in_use_by: list[str]

    @classmethod
    def of(cls, record: LayerRecord, prices: LayerPrices) -> LayerView:
        summary = LayerSummary.of(record, prices).model_dump()
        return cls(
            **summary,
            python_version=record.python_version,
            requirements=record.requirements,
            packages=[PackageView(name=p.name, version=p.version) for p in record.packages],
            error=record.error,
            built_at=record.built_at,
            updated_at=record.updated_at,
            in_use_by=sorted(record.refs),
        )


class LayerList(_View):
    layers: list[LayerSummary]


class LayerJobAccepted(_View):
    name: str
    status: Literal[LayerStatus.BUILDING] = LayerStatus.BUILDING
    version: int = Field(description="The version the job will publish.")


class LayerDeleted(_View):
    name: str
    deleted: Literal[True] = True


# ------------------------------------------------------------------ routes

router = Router()


@router.get("/", summary="List layers", tags=["layers"], responses={**ok(LayerList), **errors(422)})
def list_layers(registry: Registry, prices: Prices) -> LayerList:
    return LayerList(layers=[LayerSummary.of(r, prices) for r in registry.list()])


@router.post(
    "/",
    summary="Create a layer (a python-env layer starts building)",
    tags=["layers"],
    responses={**ok(LayerView, "Created", 201), **errors(400, 409, 413, 415, 422)},
)
def create_layer(
    body: CreateLayerRequest, registry: Registry, jobs: Jobs, prices: Prices
) -> Response[LayerView]:
    caller = _caller()
    with _api_errors():
        record = service.new_layer(
            body.name,
            body.type,
            description=body.description,
            requirements=body.requirements,
            created_by=caller,
        )
        registry.create(record)
        if record.type is LayerType.PYTHON_ENV:
            _start(registry, record.name, LayerType.PYTHON_ENV, jobs.build)
        return _json(201, LayerView.of(service.get_layer(registry, record.name), prices))


@router.get(
    "/<name>",
    summary="A layer, with the packages of an environment",
    tags=["layers"],
    responses={**ok(LayerView), **errors(404, 422)},
)
def get_layer(name: NameParam, registry: Registry, prices: Prices) -> LayerView:
    with _api_errors():
        return LayerView.of(service.get_layer(registry, name), prices)


@router.post(
    "/<name>/build",
    summary="Build a python-env layer again",
    tags=["layers"],
    responses={**ok(LayerJobAccepted, "Accepted", 202), **errors(404, 409, 422)},
)
def build_layer(name: NameParam, registry: Registry, jobs: Jobs) -> Response[LayerJobAccepted]:
    with _api_errors():
        version = _start(registry, name, LayerType.PYTHON_ENV, jobs.build)
        return _json(202, LayerJobAccepted(name=name, version=version))


@router.post(
    "/<name>/populate",
    summary="Fill a data layer from a Pennsieve dataset",
    tags=["layers"],
    responses={**ok(LayerJobAccepted, "Accepted", 202), **errors(400, 404, 409, 413, 415, 422)},
)
def populate_layer(
    name: NameParam, body: PopulateRequest, registry: Registry, jobs: Jobs
) -> Response[LayerJobAccepted]:
    with _api_errors():
        version = _start(
            registry,
            name,
            LayerType.DATA,
            lambda record, version: jobs.populate(record, version, body.dataset_id, body.package_ids),
        )
        return _json(202, LayerJobAccepted(name=name, version=version))


@router.delete(
    "/<name>",
    summary="Delete a layer no active run uses",
    tags=["layers"],
    responses={**ok(LayerDeleted), **errors(404, 409, 422)},
)
def delete_layer(name: NameParam, registry: Registry, jobs: Jobs) -> LayerDeleted:
    with _api_errors():
        record = service.delete_layer(registry, name)
        jobs.remove(record)
        return LayerDeleted(name=name)


# ------------------------------------------------------------------ helpers


def _start(
    registry: LayerRegistry, name: str, kind: LayerType, start: Callable[[LayerRecord, int], None]
) -> int:
    before = service.begin_build(registry, name, kind=kind)
    version = before.version + 1
    try:
        start(before, version)
    except Exception as exc:
        service.fail_build(registry, name, f"could not start the job: {exc}")
        raise Unavailable(f"could not start the job for layer {name!r}; retry") from exc
    return version


@contextlib.contextmanager
def _api_errors() -> Iterator[None]:
    """Layer refusals -> the API's JSON errors, each naming the field at fault."""
    try:
        yield
    except LayerError as exc:
        raise _translate(exc) from None


def _translate(exc: LayerError) -> ApiError:
    message = str(exc)
    if isinstance(exc, LayerNotFound):
        return NotFound(message, fields=[field_error("name", "no such layer", "path")])
    if isinstance(exc, LayerExists):
        return Conflict(message, fields=[field_error("name", "taken")], code="layer_exists")
    if isinstance(exc, InvalidLayerName):
        return InvalidRequest(message, fields=[field_error("name", message, "path")])
    if isinstance(exc, InvalidLayerRequest):
        return InvalidRequest(message, fields=[field_error(exc.field, message)])
    if isinstance(exc, LayerConflict):
        return Conflict(message, fields=[field_error("name", message, "path")], code="layer_conflict")
    return Conflict(message)


def _caller() -> str | None:
    """The IAM caller of the request (API Gateway IAM auth), recorded as the layer's creator."""
    event = router.current_event
    identity = (event.raw_event.get("requestContext") or {}).get("identity") or {}
    return identity.get("userArn") or identity.get("user")


def _json(status: int, body: BaseModel) -> Response:
    return Response(status, "application/json", body)
