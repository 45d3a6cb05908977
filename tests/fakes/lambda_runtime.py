"""A loopback Lambda Runtime API (invocation/next, response, error, init/error) and a loopback SSM
that answers GetParameter, for the processor bootstrap (pennflow.processors.lambda_bootstrap); and a
loopback EventBridge + CloudWatch Logs that records the step events and log lines it is sent."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "/2018-06-01/runtime"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:node_fn-slot-00-0123456789abcdef"


@dataclass
class Posted:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeRuntime:
    invocations: queue.Queue = field(default_factory=queue.Queue)
    posted: list[Posted] = field(default_factory=list)
    address: str = ""

    def invoke(self, event: Mapping[str, Any], request_id: str, seconds_left: float = 60.0) -> None:
        deadline = int((time.time() + seconds_left) * 1000)
        self.invocations.put((request_id, deadline, json.dumps(event).encode()))

    def answer(self, request_id: str) -> Posted:
        found = [p for p in self.posted if f"/invocation/{request_id}/" in p.path]
        assert len(found) == 1, f"expected one answer to {request_id}, got {self.posted}"
        return found[0]


@dataclass
class FakeSsm:
    values: dict[str, str]
    requests: list[Posted] = field(default_factory=list)
    url: str = ""


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"127.0.0.1:{server.server_address[1]}"


@contextmanager
def fake_runtime() -> Iterator[FakeRuntime]:
    runtime = FakeRuntime()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return None

        def do_GET(self) -> None:
            if self.path != f"{PREFIX}/invocation/next":
                self.send_error(404)
                return
            request_id, deadline, body = runtime.invocations.get(timeout=10)
            self.send_response(200)
            self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
            self.send_header("Lambda-Runtime-Deadline-Ms", str(deadline))
            self.send_header("Lambda-Runtime-Invoked-Function-Arn", FUNCTION_ARN)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null")
            runtime.posted.append(Posted(self.path, dict(self.headers), body))
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server, runtime.address = _serve(Handler)
    try:
        yield runtime
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def fake_ssm(values: Mapping[str, str]) -> Iterator[FakeSsm]:
    ssm = FakeSsm(dict(values))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return None

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length))
            ssm.requests.append(Posted(self.path, dict(self.headers), body))
            name = body.get("Name")
            if self.headers.get("X-Amz-Target") != "AmazonSSM.GetParameter" or name not in ssm.values:
                payload = json.dumps({"__type": "ParameterNotFound", "message": str(name)}).encode()
                self.send_response(400)
            else:
                payload = json.dumps({"Parameter": {"Name": name, "Value": ssm.values[name]}}).encode()
                self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server, address = _serve(Handler)
    ssm.url = f"http://{address}/"
    try:
        yield ssm
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class FakeAws:
    """PutEvents, CreateLogStream and PutLogEvents, answered as AWS does and recorded."""

    requests: list[Posted] = field(default_factory=list)
    url: str = ""
    refuse: set[str] = field(default_factory=set)  # targets answered with a 400

    def bodies(self, target: str) -> list[Any]:
        return [r.body for r in self.requests if r.headers.get("X-Amz-Target") == target]

    def events(self) -> list[dict[str, Any]]:
        entries = [e for body in self.bodies("AWSEvents.PutEvents") for e in body["Entries"]]
        return [{**e, "Detail": json.loads(e["Detail"])} for e in entries]

    def lines(self, stream: str) -> list[str]:
        return [
            event["message"]
            for body in self.bodies("Logs_20140328.PutLogEvents")
            if body["logStreamName"] == stream
            for event in body["logEvents"]
        ]


@contextmanager
def fake_aws() -> Iterator[FakeAws]:
    aws = FakeAws()
    streams: set[tuple[str, str]] = set()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return None

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length))
            target = self.headers.get("X-Amz-Target", "")
            aws.requests.append(Posted(self.path, dict(self.headers), body))
            status, answer = 200, {}
            key = (body.get("logGroupName"), body.get("logStreamName"))
            if target in aws.refuse:
                status, answer = 400, {"__type": "AccessDeniedException", "message": "refused"}
            elif target == "AWSEvents.PutEvents":
                answer = {"FailedEntryCount": 0, "Entries": [{"EventId": "e"} for _ in body["Entries"]]}
            elif target == "Logs_20140328.CreateLogStream" and key in streams:
                status, answer = 400, {"__type": "ResourceAlreadyExistsException", "message": "exists"}
            elif target == "Logs_20140328.CreateLogStream":
                streams.add(key)
            elif target == "Logs_20140328.PutLogEvents" and key not in streams:
                status, answer = 400, {"__type": "ResourceNotFoundException", "message": "no stream"}
            elif target != "Logs_20140328.PutLogEvents":
                status, answer = 400, {"__type": "UnknownOperationException", "message": target}
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server, address = _serve(Handler)
    aws.url = f"http://{address}/"
    try:
        yield aws
    finally:
        server.shutdown()
        server.server_close()
