"""The ports the API logic needs besides the run store and the workflow registry.

The launcher and the canceller hand a run id to another Lambda without waiting for it: the API
answers within API Gateway's 29 seconds whatever preparing or cancelling a run costs. Keying a run
(``RunPlanning``) lists its input files on Pennsieve, reads layer versions and image digests, and
writes the download manifest the run's prepare step then reuses.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pennflow import aws
from pennflow.api.errors import ApiError, BadRequest, NotFound, Unavailable, field_error

if TYPE_CHECKING:
    from pennflow.data.content_key import ResolvedImage
    from pennflow.pennsieve import ManifestEntry, PennsieveClient

PAGE_SIZE = 1000  # Pennsieve's largest package page: fewest round trips within API Gateway's 29 s


class RunLauncher(Protocol):
    def launch(self, run_id: str) -> None:
        """Hand a created run (NOT_STARTED) to the node, which prepares and starts it."""


class RunCanceller(Protocol):
    def cancel(self, run_id: str) -> None:
        """Ask the node to stop a run (its execution and tasks) and record the outcome."""


class AsyncLambda:
    """Invokes a Lambda function asynchronously (``InvocationType=Event``) with ``{"runId"}``.

    Serves as the launcher (the prepare function) and as the canceller (the cancel function).
    """

    def __init__(self, function_name: str, client=None):
        self.function_name = function_name
        self._client = client

    def send(self, run_id: str) -> None:
        client = self._client or aws.client("lambda")
        client.invoke(
            FunctionName=self.function_name,
            InvocationType="Event",
            Payload=json.dumps({"runId": run_id}).encode(),
        )

    launch = send
    cancel = send


# ------------------------------------------------------------------ keying a run (pennflow.data.content_key)


class DatasetInputs(Protocol):
    def entries(self, dataset_id: str, package_ids: Sequence[str]) -> list[ManifestEntry]:
        """Every file the run would download; raises ApiError naming datasetId or packageIds."""


class ManifestWriter(Protocol):
    def write(self, run_id: str, entries: Sequence[ManifestEntry]) -> None:
        """Store the run's download manifest where its prepare step reads it."""


class LayerLookup(Protocol):
    def get(self, name: str) -> Any:
        """The layer's record (``version``, ``checksum``), or None (``pennflow.layers`` registries)."""


@dataclass
class RunPlanning:
    """What keying a run needs besides the store. A part the node lacks is None: the run then gets no
    content key when it needs that part (a dataset without Pennsieve access, layers without a registry)."""

    inputs: DatasetInputs | None = None
    layers: LayerLookup | None = None
    manifests: ManifestWriter | None = None
    resolve_image: Callable[[str], ResolvedImage] | None = None  # default: ecr_image_digest
    budget: Any = None  # pennflow.api.run_budget.RunBudget: the dry run's estimate, the per-run ceiling


def ecr_image_digest(reference: str) -> ResolvedImage:
    """The node runs images from registries, so it asks ECR (or reads a pinned digest) and nothing
    else; there is no local Docker engine to ask."""
    from pennflow.data.content_key import ECR_IMAGE, ResolvedImage, resolve_image

    if "@sha256:" in reference or ECR_IMAGE.match(reference):
        return resolve_image(reference)
    return ResolvedImage(reference=reference, source="unresolved", detail="not in ECR: no digest to read")


class S3Manifests:
    """Writes ``s3://<results bucket>/runs/<run_id>/manifest.json`` (``pennflow.data.datasource``)."""

    def __init__(self, bucket: str, s3: Any = None):
        self.bucket = bucket
        self._s3 = s3

    def write(self, run_id: str, entries: Sequence[ManifestEntry]) -> None:
        from pennflow.data.datasource import write_run_manifest

        write_run_manifest(run_id, entries, bucket=self.bucket, s3=self._s3)


class PennsieveInputs:
    """Lists a dataset's files (or the selected packages') through one Pennsieve client, made on first
    use and kept: a warm function reuses its access token."""

    def __init__(self, connect: Callable[[], PennsieveClient]):
        self._connect = connect
        self._client: PennsieveClient | None = None

    def entries(self, dataset_id: str, package_ids: Sequence[str]) -> list[ManifestEntry]:
        from pennflow.pennsieve import PennsieveError
        from pennflow.pennsieve.manifest import manifest_from_packages

        try:
            if self._client is None:
                self._client = self._connect()
            dataset = self._client.get_dataset(dataset_id)
            packages = list(self._client.iter_packages(dataset.node_id, page_size=PAGE_SIZE))
        except PennsieveError as exc:
            raise pennsieve_refusal(exc, "datasetId", f"dataset {dataset_id}") from exc
        try:
            return manifest_from_packages(dataset, packages, list(package_ids) or None).entries
        except PennsieveError as exc:  # a selected package is not in the dataset
            raise pennsieve_refusal(exc, "packageIds", "the selected packages") from exc


def pennsieve_refusal(exc: Exception, field: str, subject: str) -> ApiError:
    """A Pennsieve failure as the API's answer: the caller's mistake (4xx naming the field) or the
    node's trouble (503: Pennsieve unreachable or failing, the node's credentials refused)."""
    from pennflow.pennsieve import AuthenticationError, CredentialsNotFound, PermissionDenied
    from pennflow.pennsieve import NotFound as PennsieveNotFound

    if isinstance(exc, CredentialsNotFound | AuthenticationError):
        return Unavailable(
            f"this node's Pennsieve credentials could not be used: {exc}", code="pennsieve_credentials"
        )
    if isinstance(exc, PennsieveNotFound):
        return NotFound(
            f"Pennsieve found no {subject}, or this node's key may not see it: {exc}",
            fields=[field_error(field, "not found on Pennsieve")],
            code="pennsieve_not_found",
        )
    if isinstance(exc, PermissionDenied):
        return ApiError(
            f"this node's Pennsieve key may not read {subject}: {exc}",
            fields=[field_error(field, "access refused by Pennsieve")],
            code="pennsieve_forbidden",
            status=403,
        )
    status = getattr(exc, "status", None)
    if status is None or status >= 500 or status == 429:
        return Unavailable(
            f"Pennsieve is unreachable or failing: {exc}; try again", code="pennsieve_unavailable"
        )
    return BadRequest(
        f"Pennsieve refused {subject}: {exc}",
        fields=[field_error(field, f"refused by Pennsieve (HTTP {status})")],
        code="pennsieve_refused",
    )
