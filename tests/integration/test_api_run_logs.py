"""GET /runs/{id}/logs and /runs/{id}/results through the API Lambda, on moto's DynamoDB, S3 and Logs."""

from __future__ import annotations

import contextlib
import gzip
import time
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests

from pennflow.workflow.runs import Status
from tests.integration import api_support
from tests.integration.api_support import REGION, Api, tiny

PROCESSOR = "work"  # the tiny workflow's processor

api = api_support.api
mocked_aws = api_support.mocked_aws

LOG_BUCKET, RESULTS_BUCKET, LOG_GROUP = "pennflow-log-archive", "pennflow-results", "pennflow-processors"
TASK = "arn:aws:ecs:us-east-1:123456789012:task/pennflow/{}"


@pytest.fixture
def node(api: Api, monkeypatch: pytest.MonkeyPatch) -> Api:
    monkeypatch.setenv("LOG_ARCHIVE_BUCKET", LOG_BUCKET)
    monkeypatch.setenv("RESULTS_BUCKET", RESULTS_BUCKET)
    monkeypatch.setenv("PROCESSOR_LOG_GROUP", LOG_GROUP)
    s3 = boto3.client("s3", region_name=REGION)
    for bucket in (LOG_BUCKET, RESULTS_BUCKET):
        s3.create_bucket(Bucket=bucket)
    boto3.client("logs", region_name=REGION).create_log_group(logGroupName=LOG_GROUP)
    api.register(tiny())
    return api


def started_run(node: Api) -> str:
    run_id = node.start().body["runId"]
    node.store.update_run(run_id, Status.STARTED)
    return run_id


def write_events(stream: str, messages: list[str], at: int) -> None:
    logs = boto3.client("logs", region_name=REGION)
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    events = [{"timestamp": at + i, "message": m} for i, m in enumerate(messages)]
    logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=events)


def test_live_logs_page_with_a_next_token_until_the_run_ends(node: Api) -> None:
    run_id = started_run(node)
    node.store.record_task(run_id, "work", TASK.format("t1"))
    now = int(time.time() * 1000)
    write_events("work/processor/t1", ["loading", "window 1"], now)

    first = node("GET", f"/runs/{run_id}/logs")
    assert first.status == 200, first.body
    assert first.body["source"] == "live" and first.body["status"] == "STARTED"
    assert [(e["processorId"], e["message"]) for e in first.body["events"]] == [
        ("work", "loading"),
        ("work", "window 1"),
    ]
    token = first.body["nextToken"]

    quiet = node("GET", f"/runs/{run_id}/logs", query={"nextToken": token})
    assert quiet.body["events"] == [] and quiet.body["nextToken"]  # still running: keep polling

    write_events("work/processor/t1", ["window 2"], now + 2)  # the same millisecond as nothing before: new
    write_events("work/processor/t1", ["same ms as window 2"], now + 2)
    newer = node("GET", f"/runs/{run_id}/logs", query={"nextToken": quiet.body["nextToken"]})
    assert [e["message"] for e in newer.body["events"]] == ["window 2", "same ms as window 2"]

    node.store.update_run(run_id, Status.SUCCEEDED)
    last = node("GET", f"/runs/{run_id}/logs", query={"nextToken": newer.body["nextToken"]})
    assert last.body["events"] == [] and last.body["nextToken"] is None  # ended, everything read


def test_a_processor_filter_and_a_bad_token_or_processor_are_precise_errors(node: Api) -> None:
    run_id = started_run(node)
    node.store.record_task(run_id, "work", TASK.format("t1"))
    node.store.record_task(run_id, "target", TASK.format("t2"))
    now = int(time.time() * 1000)
    write_events("work/processor/t1", ["from work"], now)
    write_events("target/processor/t2", ["from target"], now + 1)

    only_target = node("GET", f"/runs/{run_id}/logs", query={"processor": "target"})
    bad_token = node("GET", f"/runs/{run_id}/logs", query={"nextToken": "not-ours"})
    no_such = node("GET", f"/runs/{run_id}/logs", query={"processor": "nope"})
    no_run = node("GET", "/runs/r-missing/logs")

    assert [e["message"] for e in only_target.body["events"]] == ["from target"]
    assert bad_token.status == 400 and ("query", "nextToken") in bad_token.fields()
    assert no_such.status == 404 and "has no processor 'nope'" in no_such.error["message"]
    assert no_run.status == 404 and no_run.error["message"] == "no run 'r-missing'"


def test_an_ended_run_lists_its_archives_with_presigned_urls(node: Api) -> None:
    run_id = started_run(node)
    node.store.update_run(run_id, Status.FAILED)
    body = gzip.compress(b"2026-01-01T00:00:00+00:00 boom\n")
    s3 = boto3.client("s3", region_name=REGION)
    s3.put_object(Bucket=LOG_BUCKET, Key=f"runs/{run_id}/logs/{PROCESSOR}/t1.log.gz", Body=body)
    s3.put_object(Bucket=LOG_BUCKET, Key=f"runs/{run_id}/logs/target/t2.log.gz", Body=b"x")
    s3.put_object(Bucket=LOG_BUCKET, Key=f"runs/other-run/logs/{PROCESSOR}/t9.log.gz", Body=b"not this run")

    reply = node("GET", f"/runs/{run_id}/logs", query={"processor": "work"})

    assert reply.status == 200, reply.body
    assert reply.body["source"] == "archive" and reply.body["expiresInSeconds"] == 300
    [archive] = reply.body["archives"]
    assert archive["processorId"] == "work" and archive["sizeBytes"] == len(body)
    query = parse_qs(urlsplit(archive["url"]).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Expires"] == ["300"]
    assert gzip.decompress(requests.get(archive["url"], timeout=10).content) == gzip.decompress(body)


def test_results_list_the_runs_objects_without_the_nodes_own(node: Api) -> None:
    run_id = started_run(node)
    s3 = boto3.client("s3", region_name=REGION)
    for key, data in {
        "run.json": b"{}",
        "manifest.json": b"[]",
        "work/batches.json": b"[]",
        "work/map-results/abc/SUCCEEDED_0.json": b"{}",
        "report/summary.csv": b"a,b\n1,2\n",
    }.items():
        s3.put_object(Bucket=RESULTS_BUCKET, Key=f"runs/{run_id}/{key}", Body=data)
    s3.put_object(Bucket=RESULTS_BUCKET, Key="runs/another/report.csv", Body=b"not this run")

    reply = node("GET", f"/runs/{run_id}/results")

    assert reply.status == 200, reply.body
    assert reply.body["bucket"] == RESULTS_BUCKET and reply.body["cursor"] is None
    by_path = {o["path"]: o for o in reply.body["objects"]}
    assert set(by_path) == {"run.json", "report/summary.csv"}
    assert by_path["report/summary.csv"]["sizeBytes"] == 8
    assert requests.get(by_path["report/summary.csv"]["url"], timeout=10).content == b"a,b\n1,2\n"
    assert node("GET", "/runs/r-missing/results").status == 404


def test_results_page_with_a_cursor(node: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from pennflow.api import results

    monkeypatch.setattr(results, "PAGE_SIZE", 2)
    run_id = started_run(node)
    s3 = boto3.client("s3", region_name=REGION)
    for index in range(5):
        s3.put_object(Bucket=RESULTS_BUCKET, Key=f"runs/{run_id}/out/{index}.txt", Body=b"x")

    first = node("GET", f"/runs/{run_id}/results")
    paths = [o["path"] for o in first.body["objects"]]
    cursor = first.body["cursor"]
    while cursor:
        page = node("GET", f"/runs/{run_id}/results", query={"cursor": cursor})
        paths += [o["path"] for o in page.body["objects"]]
        cursor = page.body["cursor"]

    assert len(first.body["objects"]) == 2
    assert paths == [f"out/{i}.txt" for i in range(5)]


def test_without_its_buckets_set_the_api_answers_503(api: Api) -> None:
    api.register(tiny())
    run_id = api.start().body["runId"]
    assert api("GET", f"/runs/{run_id}/logs").status == 503
    assert api("GET", f"/runs/{run_id}/results").status == 503
