"""The node's side of ``pennflow notebook``: ``start|stop --remote``, ``connect`` and the layers that fit.

``connect RUN`` asks the node for the session's task (GET /notebooks/{id}), reads the server's
token from its SSM parameter (the notebook users' policy allows it), starts an SSM session with
the ``AWS-StartPortForwardingSession`` document on the target ``ecs:<cluster>_<task id>_<container
runtime id>`` (ECS Exec's agent in the task forwards to the server on 127.0.0.1), and hands that
session to AWS's session-manager-plugin exactly as ``aws ssm start-session`` does, printing the
local URL with the token. The plugin keeps the forwarding open until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

from pennflow.cli.output import EXIT_INVALID, EXIT_RUN_FAILED, echo, fail, print_json
from pennflow.cli.remote import NodeTarget, call_node, connect, remote_errors

PLUGIN = "session-manager-plugin"
PLUGIN_HELP = (
    "connecting needs AWS's Session Manager plugin (session-manager-plugin) on PATH: install it as "
    "https://docs.aws.amazon.com/systems-manager/latest/userguide/session-manager-working-with-install-plugin.html "
    "says (macOS: brew install --cask session-manager-plugin; Debian/Ubuntu: the session-manager-plugin.deb "
    "package from that page), then run this command again"
)
WAIT_POLL_SECONDS = 5.0


def start(
    target: NodeTarget,
    *,
    layers: Sequence[str],
    dataset: str | None,
    packages: Sequence[str],
    cpu: float | None,
    memory: int | None,
    as_json: bool,
) -> None:
    body: dict[str, Any] = {"layers": list(layers)}
    if dataset:
        body["datasetId"] = dataset
    if packages:
        body["packageIds"] = list(packages)
    if cpu is not None:
        body["cpu"] = round(cpu * 1024)  # vCPUs -> Fargate's CPU units
    if memory is not None:
        body["memory"] = memory
    accepted = call_node(target, lambda client: client.request("POST", "/notebooks", body=body))
    if as_json:
        print_json(accepted)
        return
    run_id = accepted["runId"]
    echo(f"session {run_id} accepted on the node ({accepted['status']}, Python {accepted['pythonVersion']})")
    echo(f"  layers:  {', '.join(accepted.get('layers') or []) or '(none)'}")
    echo(f"  connect: pennflow notebook connect {run_id}  (once its task runs, about a minute)")
    echo(f"  stop:    pennflow notebook stop {run_id} --remote  (idle timeout {accepted['idleMinutes']} min)")


def stop(target: NodeTarget, run_id: str) -> None:
    view = call_node(target, lambda client: client.request("POST", f"/notebooks/{run_id}/stop"))
    echo(
        f"session {run_id}: stop requested ({view.get('status')}); its working area's files are kept on the node"
    )


def list_layers(target: NodeTarget, as_json: bool) -> None:
    found = call_node(target, lambda client: client.request("GET", "/notebooks/layers"))
    if as_json:
        print_json(found["layers"])
        return
    python = found["pythonVersion"]
    if not found["layers"]:
        echo(f"no layer on the node fits a notebook session (Python {python}): data layers and python-env "
             f"layers built for Python {python} do")  # fmt: skip
        return
    echo(f"{'LAYER':<24} {'TYPE':<11} {'VERSION':<8} PYTHON   (sessions run Python {python})")
    for layer in found["layers"]:
        echo(
            f"{layer['name']:<24} {layer['type']:<11} {layer['version']!s:<8} {layer.get('pythonVersion') or '-'}"
        )


def connect_session(
    target: NodeTarget,
    run_id: str,
    *,
    local_port: int | None,
    wait_seconds: float,
    runner: Callable[[list[str]], int] = subprocess.call,
) -> int:
    """Open the port forwarding and block in the plugin; returns the plugin's exit code."""
    plugin = shutil.which(PLUGIN)
    if plugin is None:
        raise fail(PLUGIN_HELP, EXIT_INVALID)
    with remote_errors():
        client = connect(target)
        view = _running_session(client, run_id, wait_seconds)
        info = view["connect"]
        ssm = client.session.client("ssm", region_name=client.region)
        token = ssm.get_parameter(Name=info["tokenParameter"], WithDecryption=True)["Parameter"]["Value"]
        port = local_port or free_port()
        parameters = {
            "Target": info["target"],
            "DocumentName": info["document"],
            "Parameters": {"portNumber": [str(info["port"])], "localPortNumber": [str(port)]},
        }
        started = ssm.start_session(**parameters)
    echo(f"session {run_id}: forwarding 127.0.0.1:{port} to the notebook server (Ctrl-C ends it)")
    echo(f"  url: http://127.0.0.1:{port}/?token={token}")
    argv = [
        plugin,
        json.dumps({k: started[k] for k in ("SessionId", "TokenValue", "StreamUrl") if k in started}),
        client.region,
        "StartSession",
        client.session.profile_name if _named_profile(client.session) else "",
        json.dumps(parameters),
        f"https://ssm.{client.region}.amazonaws.com",
    ]
    try:
        return runner(argv)
    except KeyboardInterrupt:
        return 0
    finally:  # the plugin may have ended it already, or the credentials expired: nothing is left open
        with contextlib.suppress(Exception):
            ssm.terminate_session(SessionId=started["SessionId"])


def _running_session(client: Any, run_id: str, wait_seconds: float) -> dict[str, Any]:
    """The session's view once its container runs (polling up to ``wait_seconds``)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        view = client.request("GET", f"/notebooks/{run_id}")
        status = view.get("status")
        if view.get("connect"):
            return view
        if status not in ("NOT_STARTED", "STARTED"):
            reason = f": {view['reason']}" if view.get("reason") else ""
            raise fail(f"session {run_id} has ended ({status}{reason}); start a new one", EXIT_RUN_FAILED)
        if time.monotonic() >= deadline:
            task = view.get("taskStatus") or "no task yet"
            raise fail(
                f"session {run_id} is {status} ({task}) and not running yet: try again in a minute "
                "(or give --wait SECONDS)",
                EXIT_RUN_FAILED,
            )
        time.sleep(WAIT_POLL_SECONDS)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _named_profile(session: Any) -> bool:
    profile = getattr(session, "profile_name", None)
    return bool(profile) and profile != "default"
