"""Running code in a notebook session's kernel, over the server's REST API and kernel websocket."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid

from tornado.websocket import websocket_connect

from pennflow.notebooks.session import SessionState


def run_code(state: SessionState, code: str, timeout: float = 60) -> tuple[str, str | None]:
    """Run ``code`` in a new kernel of the session's server: (its stdout, the error's name or None)."""
    return asyncio.run(_run_code(state, code, timeout))


async def _run_code(state: SessionState, code: str, timeout: float) -> tuple[str, str | None]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{state.port}/api/kernels",
        data=b"{}",
        method="POST",
        headers={"Authorization": f"token {state.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        kernel = json.loads(response.read())["id"]
    socket = await websocket_connect(
        f"ws://127.0.0.1:{state.port}/api/kernels/{kernel}/channels?token={state.token}"
    )
    msg_id = uuid.uuid4().hex
    socket.write_message(
        json.dumps(
            {
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": "t",
                           "version": "5.3"},
                "parent_header": {},
                "metadata": {},
                "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                            "allow_stdin": False, "stop_on_error": True},
                "channel": "shell",
            }
        )
    )  # fmt: skip
    out, error = [], None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        raw = await asyncio.wait_for(socket.read_message(), max(0.1, deadline - loop.time()))
        assert raw is not None, "the kernel websocket closed"
        message = json.loads(raw)
        if message.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = message["msg_type"], message["content"]
        if kind == "stream" and content["name"] == "stdout":
            out.append(content["text"])
        elif kind == "error":
            error = content["ename"]
        elif kind == "status" and content["execution_state"] == "idle":
            socket.close()
            return "".join(out), error
