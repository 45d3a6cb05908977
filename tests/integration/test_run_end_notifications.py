"""A run's end is told: to the node's topic by finalize (moto SNS -> SQS), to a webhook by the notify
function (a real HTTP server on loopback), and locally to `pennflow run --notify CMD`."""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest

from pennflow.node.finalize import finalize_run
from pennflow.node.lifecycle import prepare_run
from pennflow.node.run_end import WebhookFailed, deliver, webhook_url
from pennflow.workflow.run_end import RunEnded
from tests.integration import aws_fixtures
from tests.integration.api_support import LambdaContext
from tests.integration.aws_fixtures import EEG, REGION, MotoNode, workflow_from

mocked_aws = aws_fixtures.mocked_aws
moto_node = aws_fixtures.moto_node


class Hook:
    """A webhook on loopback that answers with the statuses it is given, then 200."""

    def __init__(self, statuses: list[int]):
        self.statuses = list(statuses)
        self.bodies: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.bodies.append(json.loads(body))
                self.send_response(hook.statuses.pop(0) if hook.statuses else 200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def hook() -> Iterator[Hook]:
    made: list[Hook] = []

    def make(statuses: list[int]) -> Hook:
        made.append(Hook(statuses))
        return made[-1]

    yield make
    for h in made:
        h.server.shutdown()


def message() -> RunEnded:
    return RunEnded(
        run_id="r-1",
        workflow="eeg",
        status="FAILED",
        failed_processor="quality",
        reason="exit code 2",
        duration_seconds=300,
        cost_usd=0.0123,
        report="pennflow report r-1 --remote",
        origin="api",
    )


def test_finalize_publishes_the_run_s_end_once(moto_node: MotoNode) -> None:
    sns, sqs = boto3.client("sns", region_name=REGION), boto3.client("sqs", region_name=REGION)
    topic = sns.create_topic(Name="run-ends")["TopicArn"]
    queue = sqs.create_queue(QueueName="heard")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"}
    )
    node = dataclasses.replace(
        moto_node.node, config=dataclasses.replace(moto_node.node.config, notify_topic_arn=topic)
    )
    workflow = workflow_from(EEG)
    moto_node.register(workflow)
    run = moto_node.create_run(workflow)
    prepare_run(run.run_id, node)

    finalize_run(run.run_id, "FAILED", {"Error": "States.TaskFailed", "Cause": "x"}, node)
    finalize_run(run.run_id, "FAILED", None, node)  # a retried finalize tells no one twice

    received = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert len(received) == 1
    told = json.loads(received[0]["Body"])
    assert (told["runId"], told["workflow"], told["status"]) == (run.run_id, "eeg-quality", "FAILED")
    assert told["costUsd"] == node.store.get_run(run.run_id).cost["totalUsd"]
    assert (
        told["consoleUrl"].startswith("https://")
        and told["report"] == f"pennflow report {run.run_id} --remote"
    )


def test_a_webhook_that_fails_is_retried_then_delivered(hook) -> None:
    server = hook([500, 429])
    assert deliver(message(), server.url, sleep=lambda s: None) == 200
    assert len(server.bodies) == 3
    body = server.bodies[-1]
    assert (
        "FAILED" in body["text"]
        and "quality: exit code 2" in body["text"]
        and body["blocks"][0]["type"] == "section"
    )


def test_a_webhook_that_refuses_is_not_retried_and_one_that_keeps_failing_raises(hook) -> None:
    refusing = hook([404])
    with pytest.raises(WebhookFailed, match="refused the message \\(HTTP 404\\); not retried"):
        deliver(message(), refusing.url, sleep=lambda s: None)
    assert len(refusing.bodies) == 1
    failing = hook([503, 503, 503])
    with pytest.raises(WebhookFailed, match="failed 3 times \\(last: HTTP 503\\)"):
        deliver(message(), failing.url, sleep=lambda s: None)


def test_the_notify_function_posts_each_sns_record(mocked_aws, hook, monkeypatch) -> None:
    server = hook([])
    secrets = boto3.client("secretsmanager", region_name=REGION)
    arn = secrets.create_secret(
        Name="hook", SecretString=json.dumps({"url": server.url.replace("http", "https", 1)})
    )["ARN"]
    with pytest.raises(ValueError, match="no https:// URL"):
        webhook_url(secrets.create_secret(Name="empty", SecretString="replace me")["ARN"], secrets)
    assert webhook_url(arn, secrets).startswith("https://127.0.0.1")

    from lambdas import notify

    monkeypatch.setenv(notify.WEBHOOK_SECRET_VARIABLE, arn)
    monkeypatch.setattr(notify, "webhook_url", lambda _arn: server.url)  # loopback speaks plain HTTP
    event = {"Records": [{"Sns": {"Message": message().model_dump_json(by_alias=True)}}]}
    result = notify.handler(event, LambdaContext())
    assert result == {"delivered": ["r-1"]} and len(server.bodies) == 1


def test_pennflow_run_notify_gets_the_same_fields_on_stdin(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from pennflow.cli import app

    monkeypatch.setenv("PENNFLOW_HOME", str(tmp_path / "home"))
    heard = tmp_path / "heard.json"
    path = tmp_path / "one.yaml"
    path.write_text(
        f"name: one\nprocessors:\n  - id: work\n    command: [{sys.executable!r}, '-c', 'import sys; sys.exit(5)']\n"
    )
    notify = f'{sys.executable} -c "import sys, pathlib; pathlib.Path({str(heard)!r}).write_text(sys.stdin.read())"'
    ran = CliRunner().invoke(app, ["run", str(path), "--no-containers", "--notify", notify])
    assert ran.exit_code == 1, ran.output
    told = json.loads(heard.read_text())
    assert set(told) == set(json.loads(message().model_dump_json(by_alias=True)))  # the node's fields
    assert (told["workflow"], told["status"], told["failedProcessor"]) == ("one", "FAILED", "work")
    assert told["costIsEstimate"] is True and told["report"] == f"pennflow report {told['runId']}"


def test_a_failing_notify_command_is_reported_not_fatal(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from pennflow.cli import app

    monkeypatch.setenv("PENNFLOW_HOME", str(tmp_path / "home"))
    path = tmp_path / "ok.yaml"
    path.write_text(f"name: ok\nprocessors:\n  - id: work\n    command: [{sys.executable!r}, '-c', 'pass']\n")
    ran = CliRunner().invoke(app, ["run", str(path), "--no-containers", "--notify", "exit 3"])
    assert ran.exit_code == 0, ran.output  # the run's outcome, not the command's
    assert "--notify command exited 3" in ran.output
