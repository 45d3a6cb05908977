"""The layer record, its status model and the errors every entry point (API, CLI, engine) reports.

A layer's ``version`` is the published content runs mount (0: nothing published yet); ``status``
tells how the latest build or populate went. A re-build of a READY layer keeps serving the
current version while BUILDING, and the new version replaces it in one atomic step.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from pennflow.workflow.definition import MAX_NAME, NAME_RE
from pennflow.workflow.runs import utcnow

LayerName = Annotated[str, StringConstraints(pattern=NAME_RE.pattern, max_length=MAX_NAME)]
MAX_DESCRIPTION = 1024
MAX_REQUIREMENTS = 64 * 1024  # stays well inside a DynamoDB item (400 KB) with the package list
MAX_ERROR = 4000


class LayerType(StrEnum):
    PYTHON_ENV = "python-env"
    R_ENV = "r-env"
    DATA = "data"


class LayerStatus(StrEnum):
    EMPTY = "EMPTY"
    BUILDING = "BUILDING"
    READY = "READY"
    FAILED = "FAILED"


_NEXT: dict[LayerStatus, frozenset[LayerStatus]] = {
    LayerStatus.EMPTY: frozenset({LayerStatus.BUILDING}),
    LayerStatus.BUILDING: frozenset({LayerStatus.READY, LayerStatus.FAILED}),
    LayerStatus.READY: frozenset({LayerStatus.BUILDING}),
    LayerStatus.FAILED: frozenset({LayerStatus.BUILDING}),
}

# A layer can be mounted while a rebuild runs: the rebuild publishes a new version atomically.
MOUNTABLE = frozenset({LayerStatus.READY, LayerStatus.BUILDING})


def can_transition(old: LayerStatus, new: LayerStatus) -> bool:
    return new in _NEXT[old]


def allowed_predecessors(new: LayerStatus) -> frozenset[LayerStatus]:
    return frozenset(old for old, nexts in _NEXT.items() if new in nexts)


class StorageClass(StrEnum):
    STANDARD = "Standard"
    INFREQUENT_ACCESS = "Infrequent Access"


# ------------------------------------------------------------------ errors


class LayerError(Exception):
    """Base of every refusal; ``str(exc)`` is the message a user reads."""


class InvalidLayerName(LayerError, ValueError):
    pass


class InvalidLayerRequest(LayerError, ValueError):
    """A request that can never succeed as given (wrong type for the action, missing requirements)."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


class LayerNotFound(LayerError, LookupError):
    def __init__(self, name: str):
        super().__init__(f"no layer named {name!r}; see `pennflow layers list`")
        self.name = name


class LayerExists(LayerError):
    def __init__(self, name: str):
        super().__init__(f"a layer named {name!r} exists already")
        self.name = name


class LayerConflict(LayerError):
    """The layer's current state refuses the action (already building, in use, ...)."""


class LayerInUse(LayerConflict):
    def __init__(self, name: str, run_ids: Sequence[str]):
        runs = ", ".join(sorted(run_ids))
        super().__init__(f"layer {name!r} is in use by active run(s) {runs}; delete it when they end")
        self.name = name
        self.run_ids = sorted(run_ids)


class LayerBuildFailed(LayerError):
    """A build or populate ran and failed; the layer is FAILED with the error recorded."""

    def __init__(self, name: str, error: str):
        super().__init__(f"layer {name!r} failed to build:\n{error}")
        self.name = name
        self.error = error


class LayersUnavailable(LayerError):
    """One or more requested layers cannot be mounted; ``problems`` names each one."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def check_layer_name(name: str) -> str:
    """The name, or InvalidLayerName saying exactly what is wrong with it."""
    if not isinstance(name, str) or not name:
        raise InvalidLayerName("layer name: required")
    if len(name) > MAX_NAME:
        raise InvalidLayerName(f"layer name {name!r}: at most {MAX_NAME} characters, got {len(name)}")
    if not NAME_RE.fullmatch(name):
        raise InvalidLayerName(
            f"layer name {name!r}: use lower-case letters, digits and '-', starting with a letter or digit"
        )
    return name


# ------------------------------------------------------------------ records


class Package(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    version: str


class LayerRecord(BaseModel):
    """One layer as the registry stores it (both adapters round-trip every field)."""

    model_config = ConfigDict(extra="ignore")

    name: LayerName
    type: LayerType
    description: str = Field("", max_length=MAX_DESCRIPTION)
    status: LayerStatus = LayerStatus.EMPTY
    version: int = Field(0, ge=0)
    size_bytes: int = Field(0, ge=0)
    file_count: int = Field(0, ge=0)
    checksum: str | None = None
    python_version: str | None = None
    requirements: str | None = Field(None, max_length=MAX_REQUIREMENTS)
    packages: list[Package] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)
    created_by: str | None = None
    updated_at: datetime = Field(default_factory=utcnow)
    built_at: datetime | None = None  # when the current version was published
    build_started_at: datetime | None = None
    last_accessed_at: datetime | None = None  # when a run last mounted it
    error: str | None = None
    # AWS: each published version's EFS access point (version -> ARN); the current one is mounted.
    access_points: dict[str, str] = Field(default_factory=dict)
    # Active runs that mounted the layer (run id -> the version they mounted).
    refs: dict[str, int] = Field(default_factory=dict)

    @property
    def access_point_arn(self) -> str | None:
        return self.access_points.get(str(self.version))

    @property
    def mountable(self) -> bool:
        return self.version > 0 and self.status in MOUNTABLE

    def referenced_versions(self) -> set[int]:
        return set(self.refs.values())


# Fields a registry update may set besides the status (the key, type and creation are fixed).
UPDATABLE_FIELDS = frozenset(LayerRecord.model_fields) - {
    "name",
    "type",
    "created_at",
    "created_by",
    "status",
    "refs",
}
