"""Routes' logic for a run's results: its objects in the results bucket, each with a presigned GET URL.

A run's results on the node are what it left under ``s3://<results bucket>/runs/<run_id>/``: what its
s3 data targets published (``pennflow.data.targets.s3_key``) and its provenance record ``run.json``
(``pennflow.node.finalize``). The node's own working objects there (the download manifest, a
scatter's ``batches.json``, a Distributed Map's ``map-results/``) are not results and are left out.
The URLs expire soon: the files never pass through the API, and a listing does not stay a key.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from pennflow.api.errors import BadRequest, NotFound, field_error
from pennflow.api.models import _View
from pennflow.stores.base import RunStore
from pennflow.workflow.runs import Status

URL_EXPIRY_SECONDS = 900
PAGE_SIZE = 200  # presigning is local, so a page costs one LIST; 200 URLs stay well under 1 MB
MANIFEST_NAME = "manifest.json"  # pennflow.data.datasource: the run's download manifest
BATCHES_NAME = "batches.json"  # pennflow.node.batches: a scatter's batch list
MAP_RESULTS = "map-results"  # pennflow.workflow.asl: a Distributed Map's child results


class ResultObject(_View):
    path: str = Field(
        description="Where the object is within the run's results (its key after runs/<run_id>/)."
    )
    key: str
    size_bytes: int
    last_modified: str | None = None
    url: str = Field(description="Presigned GET of the object.")


class RunResults(_View):
    run_id: str
    status: Status
    bucket: str
    objects: list[ResultObject]
    expires_in_seconds: int = Field(description="How long the URLs are valid.")
    cursor: str | None = Field(None, description="Pass back as ?cursor= for the next page; null at the end.")


class ResultBucket:
    """The node's results bucket (the API role lists runs/ and reads the objects there)."""

    def __init__(self, bucket: str, *, s3: Any = None):
        self.bucket = bucket
        self._s3 = s3

    def page(self, prefix: str, cursor: str | None, size: int) -> dict[str, Any]:
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": size}
        if cursor:
            request["ContinuationToken"] = cursor
        try:
            return self.client.list_objects_v2(**request)
        except Exception as exc:
            from pennflow.aws import error_code

            if cursor and error_code(exc) in ("InvalidArgument", "InvalidToken"):
                raise BadRequest(
                    "cursor: not a cursor this API gave", fields=[field_error("cursor", "invalid", "query")]
                ) from None
            raise

    def presign(self, key: str, expires: int) -> str:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires
        )

    @property
    def client(self) -> Any:
        if self._s3 is None:
            from pennflow.aws import s3_presigner

            self._s3 = s3_presigner()
        return self._s3


def run_results(
    run_id: str,
    *,
    store: RunStore,
    bucket: ResultBucket,
    cursor: str | None = None,
    expires: int = URL_EXPIRY_SECONDS,
    page_size: int | None = None,
) -> RunResults:
    run = store.get_run(run_id)
    if run is None:
        raise NotFound(f"no run {run_id!r}", fields=[field_error("run_id", "no such run", "path")])
    from pennflow.data.targets import RESULTS_PREFIX  # imported here: a cold start needs no data plane

    prefix = f"{RESULTS_PREFIX}/{run_id}/"
    answer = bucket.page(prefix, cursor, page_size or PAGE_SIZE)
    objects = []
    for item in answer.get("Contents", []):
        path = item["Key"][len(prefix) :]
        if not is_result(path):
            continue
        modified = item.get("LastModified")
        objects.append(
            ResultObject(
                path=path,
                key=item["Key"],
                size_bytes=item.get("Size", 0),
                last_modified=modified.isoformat() if modified is not None else None,
                url=bucket.presign(item["Key"], expires),
            )
        )
    return RunResults(
        run_id=run_id,
        status=run.status,
        bucket=bucket.bucket,
        objects=objects,
        expires_in_seconds=expires,
        cursor=answer.get("NextContinuationToken") if answer.get("IsTruncated") else None,
    )


def is_result(path: str) -> bool:
    """False for the node's own working objects under runs/<run_id>/ (and for folder markers)."""
    parts = path.split("/")
    if not path or path.endswith("/"):
        return False
    if parts == [MANIFEST_NAME]:
        return False
    if len(parts) == 2 and parts[1] == BATCHES_NAME:
        return False
    return not (len(parts) >= 3 and parts[1] == MAP_RESULTS)
