"""The SigV4 client for a deployed node, against a local HTTP server that checks every signature.

The server recomputes each request's signature with botocore from what it received (method, path,
query, signed headers, body) and the shared secret, the way API Gateway's IAM auth does.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
import typer
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from moto import mock_aws
from typer.testing import CliRunner

from pennflow.cli import local as local_commands
from pennflow.cli import remote as remote_commands
from pennflow.node import client as remote
from pennflow.node.client import NodeClient, RemoteError

ACCESS_KEY, SECRET_KEY, REGION = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "eu-west-1"
AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request, "
    r"SignedHeaders=(?P<signed>[^,]+), Signature=(?P<signature>[0-9a-f]{64})$"
)
DEFINITION = """
name: tiny
processors:
  - id: source
    type: data-source
  - id: work
    image: example/work:1
    dependsOn: [source]
    defaultParams: {WINDOW: "30"}
"""


def expected_signature(method: str, target: str, headers: dict[str, str], body: bytes, secret: str) -> str:
    """What the signature must be, recomputed from the request as received."""
    match = AUTH_RE.match(headers["Authorization"])
    assert match, headers["Authorization"]
    signed = {name: headers[name] for name in match["signed"].split(";")}
    request = AWSRequest(
        method=method, url=f"http://{headers['host']}{target}", data=body or None, headers=signed
    )
    request.context["timestamp"] = headers["x-amz-date"]
    auth = SigV4Auth(Credentials(match["key"], secret), match["service"], match["region"])
    return auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)


class FakeNode:
    """Records requests; answers with queued (status, body) pairs, or 200 {} by default."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answers: dict[tuple[str, str], list[tuple[int, Any]]] = {}

    def answer(self, method: str, path: str, *replies: tuple[int, Any]) -> None:
        self.answers[(method, path)] = list(replies)

    def reply(self, method: str, path: str) -> tuple[int, Any]:
        queue = self.answers.get((method, path.split("?")[0]), [])
        return queue.pop(0) if len(queue) > 1 else (queue[0] if queue else (200, {}))


@pytest.fixture
def node() -> Iterator[tuple[FakeNode, str]]:
    fake = FakeNode()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            headers["Authorization"] = self.headers.get("Authorization", "")
            fake.requests.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": headers,
                    "body": body,
                    "valid": bool(AUTH_RE.match(headers["Authorization"]))
                    and AUTH_RE.match(headers["Authorization"])["signature"]
                    == expected_signature(self.command, self.path, headers, body, SECRET_KEY),
                }
            )
            status, payload = fake.reply(self.command, self.path.removeprefix("/v1"))
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield fake, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def session(secret: str = SECRET_KEY) -> boto3.Session:
    return boto3.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=secret, region_name=REGION)


def test_a_get_is_signed_for_execute_api_and_the_server_verifies_it(node) -> None:
    fake, url = node
    fake.answer("GET", "/runs/r-1", (200, {"runId": "r-1", "status": "STARTED"}))

    run = NodeClient(url, session()).get_run("r-1")

    assert run == {"runId": "r-1", "status": "STARTED"}
    (request,) = fake.requests
    assert request["path"] == "/v1/runs/r-1"
    auth = AUTH_RE.match(request["headers"]["Authorization"])
    assert (auth["key"], auth["region"], auth["service"]) == (ACCESS_KEY, REGION, "execute-api")
    assert re.fullmatch(r"\d{8}T\d{6}Z", request["headers"]["x-amz-date"])
    assert "host" in auth["signed"].split(";") and "x-amz-date" in auth["signed"].split(";")
    assert request["valid"]


def test_the_verification_fails_for_a_wrong_secret_or_a_changed_body(node) -> None:
    fake, url = node
    NodeClient(url, session(secret="not-the-shared-secret")).get_run("r-1")
    assert not fake.requests[0]["valid"]

    NodeClient(url, session()).request("POST", "/runs", body={"workflow": "tiny"})
    signed = fake.requests[1]
    assert signed["valid"]
    assert AUTH_RE.match(signed["headers"]["Authorization"])["signature"] != expected_signature(
        "POST", signed["path"], signed["headers"], b'{"workflow": "other"}', SECRET_KEY
    )


def test_query_strings_and_odd_run_ids_are_signed_as_sent(node) -> None:
    fake, url = node
    client = NodeClient(url, session())
    client.list_runs(workflow="eeg-quality", status="FAILED", limit=5, cursor="a b/+=?&")
    client.get_run("r-1 /x")
    assert all(r["valid"] for r in fake.requests)
    assert "cursor=a%20b%2F%2B%3D%3F%26" in fake.requests[0]["path"]
    assert fake.requests[1]["path"] == "/v1/runs/r-1%20%2Fx"


def test_the_region_comes_from_the_url_before_the_session() -> None:
    url = "https://abc123.execute-api.ap-southeast-2.amazonaws.com/v1/"
    assert remote.region_from_url(url) == "ap-southeast-2"
    assert NodeClient(url, session()).region == "ap-southeast-2"
    assert NodeClient("https://api.example.org/v1", session()).region == REGION
    assert remote.region_from_url("http://127.0.0.1:8000/v1") is None


def test_submit_registers_then_starts_with_an_idempotency_key(node, tmp_path: Path) -> None:
    fake, url = node
    fake.answer("POST", "/runs", (202, {"runId": "r-9", "workflow": "tiny", "status": "NOT_STARTED"}))
    path = tmp_path / "tiny.yaml"
    path.write_text(DEFINITION)

    accepted = NodeClient(url, session()).submit(
        path, "N:dataset:1", {"WINDOW": "10"}, packages=["N:package:2"], layers=["sci"]
    )

    assert accepted["runId"] == "r-9"
    register, start = fake.requests
    assert (register["method"], register["path"]) == ("POST", "/v1/workflows")
    assert json.loads(register["body"])["processors"][1]["defaultParams"] == {"WINDOW": "30"}
    assert json.loads(start["body"]) == {
        "workflow": "tiny",
        "params": {"WINDOW": "10"},
        "datasetId": "N:dataset:1",
        "packageIds": ["N:package:2"],
        "layers": ["sci"],
    }
    assert start["headers"]["content-type"] == "application/json"
    assert re.fullmatch(r"[0-9a-f-]{36}", start["headers"]["idempotency-key"])
    assert "idempotency-key" in AUTH_RE.match(start["headers"]["Authorization"])["signed"]
    assert register["valid"] and start["valid"]


def test_api_errors_carry_the_api_message_and_fields(node) -> None:
    fake, url = node
    error = {
        "error": {
            "code": "unknown_param",
            "message": "no processor declares param(s) 'WINDOWS'",
            "fields": [
                {"field": "params.WINDOWS", "in": "body", "message": "no processor declares this param"}
            ],
        }
    }
    fake.answer("POST", "/runs", (400, error))
    fake.answer(
        "GET", "/runs/r-1", (403, {"message": "The security token included in the request is invalid."})
    )
    client = NodeClient(url, session())

    with pytest.raises(RemoteError) as refused:
        client.start({"workflow": "tiny", "params": {"WINDOWS": "1"}})
    assert refused.value.status == 400 and refused.value.code == "unknown_param"
    assert refused.value.lines() == [
        "no processor declares param(s) 'WINDOWS'",
        "  - body params.WINDOWS: no processor declares this param",
    ]
    with pytest.raises(RemoteError, match="HTTP 403: The security token included in the request is invalid"):
        client.get_run("r-1")


def test_an_unreachable_node_and_missing_credentials_are_errors_not_tracebacks(monkeypatch) -> None:
    with pytest.raises(RemoteError, match="cannot reach the node"):
        NodeClient("http://127.0.0.1:9/v1", session()).get_run("r-1")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(RemoteError, match="no AWS credentials"):
        NodeClient("http://127.0.0.1:9/v1", boto3.Session(region_name=REGION)).get_run("r-1")
    with pytest.raises(RemoteError, match="not a node URL"):
        NodeClient("127.0.0.1:9/v1")


def test_watch_yields_each_change_until_the_run_ends(node) -> None:
    fake, url = node

    def run(status: str, step: str) -> tuple[int, dict]:
        return 200, {"runId": "r-1", "status": status, "steps": [{"processorId": "work", "status": step}]}

    fake.answer(
        "GET",
        "/runs/r-1",
        run("NOT_STARTED", "NOT_STARTED"),
        run("STARTED", "STARTED"),
        run("STARTED", "STARTED"),
        run("STARTED", "SUCCEEDED"),
        run("SUCCEEDED", "SUCCEEDED"),
    )
    sleeps: list[float] = []

    seen = list(NodeClient(url, session()).watch("r-1", interval=3, sleep=sleeps.append))

    assert [(r["status"], r["steps"][0]["status"]) for r in seen] == [
        ("NOT_STARTED", "NOT_STARTED"),
        ("STARTED", "STARTED"),
        ("STARTED", "SUCCEEDED"),
        ("SUCCEEDED", "SUCCEEDED"),
    ]
    assert sleeps == [3, 3, 3, 3] and len(fake.requests) == 5


def test_the_node_url_comes_from_the_flag_the_environment_or_the_stack(monkeypatch) -> None:
    monkeypatch.setenv(remote.ENV_NODE_URL, "https://env.example/v1")
    monkeypatch.delenv(remote.ENV_NODE, raising=False)
    assert remote.node_url("https://flag.example/v1") == "https://flag.example/v1"
    assert remote.node_url() == "https://env.example/v1"
    template = {
        "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {"ApiUrl": {"Value": "https://abc.execute-api.eu-west-1.amazonaws.com/v1/"}},
    }
    lab = {
        **template,
        "Outputs": {"ApiUrl": {"Value": "https://lab.execute-api.eu-west-1.amazonaws.com/v1/"}},
    }
    with mock_aws():
        aws = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
        cloudformation = aws.client("cloudformation")
        cloudformation.create_stack(StackName="pennflow-node", TemplateBody=json.dumps(template))
        cloudformation.create_stack(StackName="lab-node", TemplateBody=json.dumps(lab))
        # --node NAME names the stack as the CDK app does (<nodeName>-node), before $PENNFLOW_NODE_URL
        assert (
            remote.node_url(node="lab", session=aws) == "https://lab.execute-api.eu-west-1.amazonaws.com/v1/"
        )
        monkeypatch.delenv(remote.ENV_NODE_URL)
        assert remote.node_url(session=aws) == "https://abc.execute-api.eu-west-1.amazonaws.com/v1/"
        monkeypatch.setenv(remote.ENV_NODE, "lab")
        assert remote.node_url(session=aws).startswith("https://lab.")
        with pytest.raises(
            RemoteError, match="no node stack 'elsewhere-node' in eu-west-1: give --node NAME"
        ):
            remote.node_url(node="elsewhere", session=aws)


def test_no_region_or_no_credentials_name_what_to_set(monkeypatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION",
                 "AWS_DEFAULT_REGION", remote.ENV_NODE_URL):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(RemoteError, match="no AWS region: set AWS_REGION .* give --node NAME"):
        remote.node_url(session=boto3.Session())
    with pytest.raises(RemoteError, match="no AWS credentials found: set AWS_PROFILE"):
        remote.node_url(session=boto3.Session(region_name=REGION))
    with pytest.raises(RemoteError, match="no AWS region: set AWS_REGION"):
        _ = NodeClient("http://127.0.0.1:9/v1", boto3.Session()).region


# ------------------------------------------------------------------ the commands


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("submit")(remote_commands.submit_command)
    app.command("status")(remote_commands.remote_status_command)
    return app


@pytest.fixture
def signed_env(monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


def test_submit_command_prints_the_run_and_follows_it(node, tmp_path: Path, signed_env) -> None:
    fake, url = node
    fake.answer(
        "POST",
        "/runs",
        (202, {"runId": "r-7", "workflow": "tiny", "status": "NOT_STARTED", "consoleUrl": "c"}),
    )
    fake.answer(
        "GET", "/runs/r-7", (200, {"runId": "r-7", "workflow": "tiny", "status": "FAILED", "steps": []})
    )
    path = tmp_path / "tiny.yaml"
    path.write_text(DEFINITION)

    result = CliRunner().invoke(
        cli(), ["submit", str(path), "--node-url", url, "--param", "WINDOW=5", "--watch"]
    )

    assert result.exit_code == 1, result.output
    assert "run r-7 accepted (tiny)" in result.output and "run r-7: tiny FAILED" in result.output


def test_commands_show_api_errors_as_messages_with_exit_2(node, tmp_path: Path, signed_env) -> None:
    fake, url = node
    fake.answer(
        "GET",
        "/runs/nope",
        (404, {"error": {"code": "not_found", "message": "no run 'nope'", "fields": []}}),
    )
    path = tmp_path / "tiny.yaml"
    path.write_text(DEFINITION)
    runner = CliRunner()

    missing = runner.invoke(cli(), ["status", "nope", "--node-url", url])
    bad_param = runner.invoke(cli(), ["submit", str(path), "--node-url", url, "--param", "WINDOW"])
    path.write_text("name: Bad Name\nprocessors: []\n")
    bad_file = runner.invoke(cli(), ["submit", str(path), "--node-url", url])

    assert (missing.exit_code, bad_param.exit_code, bad_file.exit_code) == (2, 2, 2)
    assert "error: no run 'nope'" in missing.output
    assert "--param 'WINDOW': expected KEY=VALUE" in bad_param.output
    assert "invalid definition" in bad_file.output and "processors" in bad_file.output
    assert all(
        r.exception is None or isinstance(r.exception, SystemExit) for r in (missing, bad_param, bad_file)
    )
    assert "Traceback" not in missing.output + bad_param.output + bad_file.output
    assert len(fake.requests) == 1  # invalid input never reached the node


def test_cancel_and_rerun_send_an_empty_json_object(node) -> None:
    fake, url = node
    client = NodeClient(url, session())
    client.cancel("r-1")
    client.rerun("r-1")
    assert [(r["path"], r["body"], r["valid"]) for r in fake.requests] == [
        ("/v1/runs/r-1/cancel", b"{}", True),
        ("/v1/runs/r-1/rerun", b"{}", True),
    ]


# ------------------------------------------------------------------ the shared helper


def test_server_failures_exit_1_and_every_other_refusal_exit_2(node, signed_env) -> None:
    fake, url = node
    fake.answer(
        "GET", "/runs", (500, {"error": {"code": "internal", "message": "internal error; quote req-1"}})
    )
    fake.answer(
        "POST", "/runs/r-1/cancel", (409, {"error": {"code": "conflict", "message": "already ended"}})
    )
    app = typer.Typer()
    app.command("runs")(local_commands.runs_)
    app.command("cancel")(local_commands.cancel)
    runner = CliRunner()

    broken = runner.invoke(app, ["runs", "--node-url", url])
    refused = runner.invoke(app, ["cancel", "r-1", "--node-url", url])
    unreachable = runner.invoke(app, ["runs", "--node-url", "http://127.0.0.1:9/v1"])

    assert broken.exit_code == 1 and "error: internal error; quote req-1" in broken.output
    assert refused.exit_code == 2 and "error: already ended" in refused.output
    assert (
        unreachable.exit_code == 2
        and "error: cannot reach the node at http://127.0.0.1:9/v1" in unreachable.output
    )
    assert "Traceback" not in broken.output + refused.output + unreachable.output


def test_downloads_never_land_outside_the_folder(tmp_path: Path) -> None:
    from pennflow.cli.remote_runs import safe_destination

    assert safe_destination(tmp_path, "report/summary.csv") == tmp_path / "report" / "summary.csv"
    for hostile in ("../escape.txt", "a/../../b", "/etc/passwd", ""):
        assert safe_destination(tmp_path, hostile) is None, hostile


def test_rerun_remote_watch_follows_the_new_run_to_its_end(node, signed_env) -> None:
    fake, url = node
    accepted = {
        "runId": "r-2",
        "workflow": "tiny",
        "status": "NOT_STARTED",
        "consoleUrl": "c",
        "rerunOf": "r-1",
    }
    fake.answer("POST", "/runs/r-1/rerun", (202, accepted))
    fake.answer(
        "GET", "/runs/r-2", (200, {"runId": "r-2", "workflow": "tiny", "status": "FAILED", "steps": []})
    )
    from pennflow.cli import app

    result = CliRunner().invoke(app, ["rerun", "r-1", "--node-url", url, "--watch"])

    assert result.exit_code == 1, result.output  # the new run failed
    assert (
        "run r-2 accepted (tiny), a rerun of r-1" in result.output and "run r-2: tiny FAILED" in result.output
    )
    assert [(r["method"], r["path"]) for r in fake.requests] == [
        ("POST", "/v1/runs/r-1/rerun"),
        ("GET", "/v1/runs/r-2"),
    ]
