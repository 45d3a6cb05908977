"""Routes' logic for a run's logs: the archived objects once finalize copied them, else live events.

Finalize (``pennflow.node.finalize``) copies each task's CloudWatch stream to
``s3://<log bucket>/runs/<run_id>/logs/<processor>/<task id>[.fan-in].log.gz``. When a run's (or the
chosen processor's) archives exist, the answer lists them with short-lived presigned GET URLs: the
logs themselves never pass through the API, whatever their size. Until then the answer is one page of
live events from the processor log group, read from the streams of the tasks the run recorded
(``<processor>/<container>/<task id>``), oldest first, with a ``nextToken`` to poll for newer ones
(``pennflow logs --remote --follow``). The token is this module's own (CloudWatch's tokens end with
its pages): the last event time seen, the ids seen at that time, and CloudWatch's token mid-page.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field, ValidationError

from pennflow.api.errors import BadRequest, NotFound, field_error
from pennflow.api.models import _View
from pennflow.stores.base import RunStore
from pennflow.workflow.runs import Status

LOG_PREFIX = "runs/{run_id}/logs/"
URL_EXPIRY_SECONDS = 300  # long enough to start a download, short enough not to be shared around
MAX_EVENTS = 1000  # one page; CloudWatch answers at most 1 MB or 10,000 events per call
MAX_STREAMS = 100  # FilterLogEvents takes at most 100 stream names
MAX_TOKEN = 2048


class TaskLookup(Protocol):
    def step_tasks(self, run_id: str) -> dict[str, list[str]]: ...


class LogArchive(_View):
    processor_id: str
    key: str
    size_bytes: int
    url: str = Field(description="Presigned GET of the gzip archive (one line per event: time, message).")


class LogEvent(_View):
    processor_id: str
    timestamp: datetime
    message: str


class RunLogs(_View):
    run_id: str
    status: Status
    source: Literal["archive", "live"] = Field(
        description="archive: the run ended and its logs were copied to S3 (see archives); live: CloudWatch."
    )
    archives: list[LogArchive] = Field(default_factory=list)
    events: list[LogEvent] = Field(default_factory=list)
    expires_in_seconds: int | None = Field(None, description="How long the archives' URLs are valid.")
    next_token: str | None = Field(
        None,
        description="live: pass back as ?nextToken= for the events after these; null when the run has "
        "ended and every event was read.",
    )


class _Cursor(BaseModel):
    """Where the previous page stopped: CloudWatch is asked for events from ``start`` (inclusive),
    less ``skip`` (the ids already given at ``start``); ``page`` is CloudWatch's token mid-answer, and
    ``last``/``last_ids`` the newest time given so far and the ids given at it."""

    start: int = 0
    skip: list[str] = Field(default_factory=list, max_length=MAX_EVENTS)
    page: str | None = None
    last: int = 0
    last_ids: list[str] = Field(default_factory=list, max_length=MAX_EVENTS)


class RunLogSource:
    """The node's log bucket and processor log group (the API role may read only those)."""

    def __init__(self, log_bucket: str, log_group: str, *, s3: Any = None, logs: Any = None):
        self.log_bucket = log_bucket
        self.log_group = log_group
        self._s3, self._logs = s3, logs

    def archives(self, run_id: str) -> list[dict[str, Any]]:
        pages = self._s3_client.get_paginator("list_objects_v2").paginate(
            Bucket=self.log_bucket, Prefix=LOG_PREFIX.format(run_id=run_id)
        )
        return [item for page in pages for item in page.get("Contents", [])]

    def presign(self, key: str, expires: int) -> str:
        return self._s3_client.generate_presigned_url(
            "get_object", Params={"Bucket": self.log_bucket, "Key": key}, ExpiresIn=expires
        )

    def events(self, streams: Sequence[str], start: int, page: str | None, limit: int) -> dict[str, Any]:
        request: dict[str, Any] = {
            "logGroupName": self.log_group,
            "logStreamNames": list(streams),
            "startTime": start,
            "limit": limit,
        }
        if page:
            request["nextToken"] = page
        try:
            return self._logs_client.filter_log_events(**request)
        except Exception as exc:
            from pennflow.aws import error_code

            if error_code(exc) == "ResourceNotFoundException":  # no stream written yet
                return {"events": []}
            raise

    @property
    def _s3_client(self) -> Any:
        if self._s3 is None:
            from pennflow.aws import s3_presigner

            self._s3 = s3_presigner()
        return self._s3

    @property
    def _logs_client(self) -> Any:
        if self._logs is None:
            from pennflow.aws import client

            self._logs = client("logs")
        return self._logs


def run_logs(
    run_id: str,
    *,
    store: RunStore,
    tasks: TaskLookup,
    source: RunLogSource,
    processor: str | None = None,
    next_token: str | None = None,
    expires: int = URL_EXPIRY_SECONDS,
) -> RunLogs:
    run = store.get_run(run_id)
    if run is None:
        raise NotFound(f"no run {run_id!r}", fields=[field_error("run_id", "no such run", "path")])
    processors = [step.processor_id for step in store.list_steps(run_id)]
    if processor is not None and processor not in processors:
        raise NotFound(
            f"run {run_id!r} has no processor {processor!r} (processors: {', '.join(processors)})",
            fields=[field_error("processor", "not a processor of this run", "query")],
        )
    cursor = _decode(next_token)
    if next_token is None and run.status.is_terminal:
        archived = [
            item
            for item in source.archives(run_id)
            if processor is None or _archived_processor(item["Key"]) == processor
        ]
        if archived:
            return RunLogs(
                run_id=run_id,
                status=run.status,
                source="archive",
                archives=[
                    LogArchive(
                        processor_id=_archived_processor(item["Key"]),
                        key=item["Key"],
                        size_bytes=item.get("Size", 0),
                        url=source.presign(item["Key"], expires),
                    )
                    for item in archived
                ],
                expires_in_seconds=expires,
            )
    streams = _streams(tasks.step_tasks(run_id), processor)
    events, following = _live_events(source, streams, cursor)
    ended = run.status.is_terminal and following.page is None and not events
    return RunLogs(
        run_id=run_id,
        status=run.status,
        source="live",
        events=events,
        next_token=None if ended else _encode(following),
    )


def _streams(tasks: Mapping[str, list[str]], processor: str | None) -> dict[str, str]:
    """stream name -> processor id, for the tasks the run recorded (the newest streams when too many)."""
    from pennflow.node.taskdefs import FAN_IN_CONTAINER  # imported here: a cold start needs neither
    from pennflow.workflow.asl import CONTAINER_NAME

    streams = {}
    for processor_id, task_arns in tasks.items():
        if processor is not None and processor_id != processor:
            continue
        for task_arn in task_arns:
            task_id = task_arn.rsplit("/", 1)[-1]
            for container in (CONTAINER_NAME, FAN_IN_CONTAINER):
                streams[f"{processor_id}/{container}/{task_id}"] = processor_id
    return dict(list(streams.items())[-MAX_STREAMS:])


def _live_events(
    source: RunLogSource, streams: Mapping[str, str], cursor: _Cursor
) -> tuple[list[LogEvent], _Cursor]:
    """One page of events after the cursor, and the cursor after them."""
    if not streams:
        return [], cursor
    if cursor.page is None:  # a new query from ``start``: nothing given at a later time yet
        cursor = cursor.model_copy(update={"last": cursor.start, "last_ids": list(cursor.skip)})
    answer = source.events(list(streams), cursor.start, cursor.page, MAX_EVENTS)
    skip, last, last_ids = set(cursor.skip), cursor.last, list(cursor.last_ids)
    events = []
    for event in answer.get("events", []):
        # Stream and id: an id is unique in a stream (CloudWatch's are unique in the group).
        moment, event_id = event["timestamp"], f"{event.get('logStreamName', '')}:{event.get('eventId', '')}"
        if moment == cursor.start and event_id in skip:
            continue
        if moment > last:
            last, last_ids = moment, [event_id]
        elif moment == last:
            last_ids.append(event_id)
        events.append(
            LogEvent(
                processor_id=streams.get(event.get("logStreamName", ""), "?"),
                timestamp=datetime.fromtimestamp(moment / 1000, UTC),
                message=event.get("message", "").rstrip("\n"),
            )
        )
    last_ids = last_ids[-MAX_EVENTS:]
    page = answer.get("nextToken")
    if page and page != cursor.page:  # CloudWatch has more now: carry on with its token
        return events, cursor.model_copy(update={"page": page, "last": last, "last_ids": last_ids})
    return events, _Cursor(start=last, skip=last_ids, last=last, last_ids=last_ids)


def _archived_processor(key: str) -> str:
    return key.split("/")[3]  # runs/<run_id>/logs/<processor>/<task>.log.gz


def _encode(cursor: _Cursor) -> str:
    return base64.urlsafe_b64encode(cursor.model_dump_json(exclude_defaults=True).encode()).decode()


def _decode(token: str | None) -> _Cursor:
    if token is None:
        return _Cursor()
    try:
        return _Cursor.model_validate(json.loads(base64.urlsafe_b64decode(token.encode())))
    except (ValueError, ValidationError, TypeError):
        raise BadRequest(
            "nextToken: not a token this API gave (pass back the nextToken of the previous page)",
            fields=[field_error("nextToken", "not a token this API gave", "query")],
        ) from None
