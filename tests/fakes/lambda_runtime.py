"""A loopback Lambda Runtime API (invocation/next, response, error, init/error) and a loopback SSM
that answers GetParameter, for the processor bootstrap (pennflow.processors.lambda_bootstrap)."""

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
