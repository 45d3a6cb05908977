"""The CLI's --remote forms against a loopback HTTP node: each request's SigV4 signature is checked
(the verification of ``tests/unit/test_remote``), then handed to the API Lambda on moto (``api_support``).

So a command is tested end to end: option parsing, node resolution, signing, the route's logic on
moto's DynamoDB, S3 and CloudWatch Logs, the presigned downloads, and what the command prints.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from typer.testing import CliRunner

from pennflow.cli import app
from pennflow.workflow.runs import Status
from tests.integration import api_support
from tests.integration.api_support import REGION, Api, tiny
from tests.unit.test_remote import AUTH_RE, SECRET_KEY, expected_signature

PROCESSOR = "work"  # the tiny workflow's processor

api = api_support.api
mocked_aws = api_support.mocked_aws

LOG_BUCKET, RESULTS_BUCKET, LOG_GROUP = "pennflow-log-archive", "pennflow-results", "pennflow-processors"


@pytest.fixture
def node(api: Api, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Api, str, list[dict]]]:
    """The API on moto behind a loopback server that refuses (403) any request not validly signed."""
    monkeypatch.setenv("LOG_ARCHIVE_BUCKET", LOG_BUCKET)
    monkeypatch.setenv("RESULTS_BUCKET", RESULTS_BUCKET)
    monkeypatch.setenv("PROCESSOR_LOG_GROUP", LOG_GROUP)
    # What the CLI signs with: moto's fixture credentials are also the server's shared secret here.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    for bucket in (LOG_BUCKET, RESULTS_BUCKET):
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=bucket)
    boto3.client("logs", region_name=REGION).create_log_group(logGroupName=LOG_GROUP)
    api.register(tiny())
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            headers["Authorization"] = self.headers.get("Authorization", "")
            signed = AUTH_RE.match(headers["Authorization"])
            valid = bool(signed) and signed["signature"] == expected_signature(
                self.command, self.path, headers, body, SECRET_KEY
            )
            seen.append({"method": self.command, "path": self.path, "valid": valid})
            if not valid:
                self._send(403, {"message": "The request signature we calculated does not match"})
                return
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            reply = api(
                self.command,
                parts.path.removeprefix("/v1"),
                raw=body.decode() if body else None,
                query=query or None,
            )
            self._send(reply.status, reply.body)

        def _send(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield api, f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    server.shutdown()
    server.server_close()


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_runs_status_cancel_and_rerun_go_to_the_node_signed(node) -> None:
    api, url, seen = node
    run_id = api.start().body["runId"]

    listed = cli("runs", "--node-url", url, "--json")
    shown = cli("status", run_id, "--node-url", url)
    canceled = cli("cancel", run_id, "--node-url", url)
    api.store.update_run(run_id, Status.CANCELED)
    again = cli("rerun", run_id, "--node-url", url, "--json")

    assert listed.exit_code == 0, listed.output
    assert [r["runId"] for r in json.loads(listed.stdout)["runs"]] == [run_id]
    assert shown.exit_code == 0 and f"run {run_id}: tiny NOT_STARTED" in shown.stdout
    assert canceled.exit_code == 0 and "cancel requested" in canceled.stdout
    assert api.canceller.run_ids == [run_id]
    assert again.exit_code == 0, again.output
    rerun = json.loads(again.stdout)
    assert rerun["rerunOf"] == run_id and api.store.get_run(rerun["runId"]).rerun_of == run_id
    assert f"a rerun of {run_id}" in cli("status", rerun["runId"], "--node-url", url).stdout
    assert seen and all(request["valid"] for request in seen)


def test_api_refusals_are_one_line_and_exit_2(node) -> None:
    api, url, _ = node
    run_id = api.start().body["runId"]
    api.store.update_run(run_id, Status.STARTED)
    api.store.update_run(run_id, Status.SUCCEEDED)

    missing = cli("status", "r-nope", "--node-url", url)
    ended = cli("cancel", run_id, "--node-url", url)
    no_processor = cli("logs", run_id, "nope", "--node-url", url)

    assert (missing.exit_code, ended.exit_code, no_processor.exit_code) == (2, 2, 2)
    assert "error: no run 'r-nope'" in missing.output
    assert f"error: run {run_id!r} has already finished: SUCCEEDED" in ended.output
    assert "has no processor 'nope'" in no_processor.output
    assert "Traceback" not in missing.output + ended.output + no_processor.output


def test_a_bad_signature_is_refused_by_the_node_and_reported(node, monkeypatch) -> None:
    _, url, seen = node
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    result = cli("runs", "--node-url", url)
    assert result.exit_code == 2
    assert "HTTP 403: The request signature we calculated does not match" in result.output
    assert not seen[-1]["valid"]


def test_logs_follow_polls_live_events_until_the_run_ends(node, monkeypatch) -> None:
    api, url, _ = node
    run_id = api.start().body["runId"]
    api.store.update_run(run_id, Status.STARTED)
    api.store.record_task(run_id, "work", "arn:aws:ecs:us-east-1:123456789012:task/pennflow/t1")
    logs = boto3.client("logs", region_name=REGION)
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName="work/processor/t1")
    start = int(time.time() * 1000)
    polls = []

    def next_poll(seconds: float) -> None:  # the run writes more, then ends, between polls
        polls.append(seconds)
        if len(polls) == 1:
            events = [{"timestamp": start + 5, "message": "second"}]
            logs.put_log_events(logGroupName=LOG_GROUP, logStreamName="work/processor/t1", logEvents=events)
        elif len(polls) == 2:
            api.store.update_run(run_id, Status.SUCCEEDED)

    from pennflow.cli import remote_runs

    monkeypatch.setattr(remote_runs.time, "sleep", next_poll)
    logs.put_log_events(
        logGroupName=LOG_GROUP,
        logStreamName="work/processor/t1",
        logEvents=[{"timestamp": start, "message": "first"}],
    )

    result = cli("logs", run_id, "work", "--follow", "--node-url", url)

    assert result.exit_code == 0, result.output
    assert [line.split(" ", 1)[1] for line in result.stdout.splitlines()] == ["first", "second"]
    assert polls == [2.0, 2.0]


def test_logs_of_an_ended_run_are_its_archives_downloaded_and_unzipped(node) -> None:
    api, url, _ = node
    run_id = api.start().body["runId"]
    api.store.update_run(run_id, Status.FAILED)
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=LOG_BUCKET,
        Key=f"runs/{run_id}/logs/{PROCESSOR}/t1.log.gz",
        Body=gzip.compress(b"2026-01-01T00:00:00+00:00 boom\n"),
    )

    result = cli("logs", run_id, "--node-url", url)

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["==> work (t1) <==", "2026-01-01T00:00:00+00:00 boom"]


def test_results_list_and_download_through_presigned_urls(node, tmp_path: Path) -> None:
    api, url, _ = node
    run_id = api.start().body["runId"]
    s3 = boto3.client("s3", region_name=REGION)
    s3.put_object(Bucket=RESULTS_BUCKET, Key=f"runs/{run_id}/report/summary.csv", Body=b"a,b\n")
    s3.put_object(Bucket=RESULTS_BUCKET, Key=f"runs/{run_id}/run.json", Body=b"{}")
    s3.put_object(Bucket=RESULTS_BUCKET, Key=f"runs/{run_id}/manifest.json", Body=b"[]")

    listed = cli("results", run_id, "--node-url", url)
    fetched = cli("results", run_id, "--node-url", url, "--to", tmp_path / "out")

    assert listed.exit_code == 0, listed.output
    assert "report/summary.csv" in listed.stdout and "manifest.json" not in listed.stdout
    assert fetched.exit_code == 0, fetched.output
    assert (tmp_path / "out" / "report" / "summary.csv").read_bytes() == b"a,b\n"
    assert sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file()) == ["run.json", "summary.csv"]


def test_layers_commands_reach_the_nodes_layer_routes(node, monkeypatch) -> None:
    api, url, seen = node
    from lambdas import api as module
    from pennflow.api import layers as layers_api
    from pennflow.layers.dynamodb import PK

    monkeypatch.setenv(layers_api.ENV_TABLE, "pennflow-layers")
    boto3.client("dynamodb", region_name=REGION).create_table(
        TableName="pennflow-layers",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": PK, "AttributeType": "S"}],
        KeySchema=[{"AttributeName": PK, "KeyType": "HASH"}],
    )
    started: list[str] = []

    class Jobs:
        def build(self, record, version) -> None:
            started.append(f"build {record.name} {version}")

        def populate(self, record, version, dataset_id, package_ids) -> None:
            started.append(f"populate {record.name} {version} {dataset_id}")

        def remove(self, record) -> None:
            started.append(f"remove {record.name}")

    module.app.dependency_overrides[layers_api.layer_jobs] = Jobs

    created = cli("layers", "create", "refs", "--type", "data", "--node-url", url)
    populated = cli("layers", "populate", "refs", "--dataset", "N:dataset:1", "--node-url", url)
    listed = cli("layers", "list", "--node-url", url, "--json")
    no_dataset = cli("layers", "populate", "refs", "--node-url", url)
    shown = cli("layers", "show", "refs", "--node-url", url)
    refused = cli("layers", "delete", "refs", "--node-url", url)

    assert created.exit_code == 0, created.output
    assert populated.exit_code == 0 and "version 1" in populated.stdout, populated.output
    assert [layer["name"] for layer in json.loads(listed.stdout)] == ["refs"]
    assert no_dataset.exit_code == 2 and "--dataset" in no_dataset.output
    assert shown.exit_code == 0 and "BUILDING" in shown.stdout, shown.output
    assert refused.exit_code == 2 and "layer 'refs' is BUILDING" in refused.output  # the API's own 409
    assert started == ["populate refs 1 N:dataset:1"]
    assert [(r["method"], urlsplit(r["path"]).path) for r in seen][-1] == ("DELETE", "/v1/layers/refs")


def test_logs_without_follow_read_page_after_page_until_caught_up(node, monkeypatch) -> None:
    from pennflow.api import logs as log_logic

    api, url, seen = node
    monkeypatch.setattr(log_logic, "MAX_EVENTS", 2)  # CloudWatch pages of two events
    run_id = api.start().body["runId"]
    api.store.update_run(run_id, Status.STARTED)
    api.store.record_task(run_id, "work", "arn:aws:ecs:us-east-1:123456789012:task/pennflow/t1")
    logs = boto3.client("logs", region_name=REGION)
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName="work/processor/t1")
    start = int(time.time() * 1000)
    events = [{"timestamp": start + i, "message": f"event {i}"} for i in range(5)]
    logs.put_log_events(logGroupName=LOG_GROUP, logStreamName="work/processor/t1", logEvents=events)

    result = cli("logs", run_id, "work", "--node-url", url)

    assert result.exit_code == 0, result.output
    assert [line.split(" ", 1)[1] for line in result.stdout.splitlines()] == [f"event {i}" for i in range(5)]
    assert sum(1 for r in seen if "/logs" in r["path"]) == 4  # 2 + 2 + 1, then an empty page: caught up


def test_status_of_a_resumed_run_lists_its_earlier_attempts_and_what_it_reused(node) -> None:
    from pennflow.workflow.runs import ended_attempt, utcnow

    api, url, _ = node
    run_id = api.start().body["runId"]
    store = api.store
    store.update_run(run_id, Status.STARTED, execution_arn="arn:aws:states:us-east-1:1:execution:m:r")
    for pid in ("source", PROCESSOR):
        store.update_step(run_id, pid, Status.STARTED, started_at=utcnow())
    store.update_step(run_id, "source", Status.SUCCEEDED, finished_at=utcnow())
    store.update_step(run_id, PROCESSOR, Status.FAILED, exit_code=3, finished_at=utcnow())
    store.update_run(run_id, Status.FAILED, failed_processor=PROCESSOR, reason="work exited 3")
    store.update_run(run_id, resume_until=utcnow() + timedelta(days=7))
    kept = cli("status", run_id, "--node-url", url)
    assert kept.exit_code == 0, kept.output
    assert f"pennflow resume {run_id} --remote" in kept.output and "attempt 1:" not in kept.output

    run = store.get_run(run_id)
    assert store.reopen_run(
        run_id, attempt=1, history=[ended_attempt(run, store.list_steps(run_id))], now=utcnow()
    )
    shown = cli("status", run_id, "--node-url", url)

    assert shown.exit_code == 0, shown.output
    assert "attempt 1: FAILED: work exited 3" in shown.output
    assert "attempt 2 (now): reused source" in shown.output
    assert any(
        line.split()[:2] == ["source", "SUCCEEDED"] and "(reused)" in line
        for line in shown.output.splitlines()
    )
    as_json = json.loads(cli("status", run_id, "--node-url", url, "--json").stdout)
    assert as_json["attempt"] == 2 and as_json["history"][0]["failedProcessor"] == PROCESSOR
