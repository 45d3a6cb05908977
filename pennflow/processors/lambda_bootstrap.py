"""The bootstrap of a ``computeType: lambda`` processor: Lambda's Runtime API on one side, the image's
own command on the other. Standard library only, Python 3.8 or later: the node's build copies this
file into an image derived from the processor's (``stacks/lambda_compute.py``), which knows nothing of
Lambda or AWS, and makes it the entry point.

Each invocation (the state machine's ``lambda:invoke``, ``pennflow.workflow.asl_lambda``) carries the
processor's environment as the ECS state's container override does (``[{"Name", "Value"}]``: INPUT_DIR,
OUTPUT_DIR, params, ...). The bootstrap adds the run's Pennsieve names and its SESSION_TOKEN, read at
that moment from the slot's SSM parameters with the function's role (so no secret is in the function's
configuration, the event or a log line), runs the image's original ENTRYPOINT + CMD (``PENNFLOW_COMMAND``,
recorded at build) as a child process and answers with its exit code. The node hears of the step as
of an ECS task: at its start and end the bootstrap puts a ``pennflow.processor`` event on the default
bus, which the node's status rule sends to the same tracker (``pennflow.node.tracking``), and it writes
the processor's output to the processor log group under the ECS task's stream name
(``<processor>/processor/<request id>``), so the live logs and the run's archive find it the same way.
Both are best effort: a failed call is one line in the function's own log, never a failed processor. A non-zero exit is a function error ``pennflow.ProcessorFailed`` (the state's failure path,
as a failed ECS task), and a child still running near the deadline is killed and reported as
``pennflow.ProcessorTimedOut``.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

API_VERSION = "2018-06-01"
FAILED_ERROR = "pennflow.ProcessorFailed"
TIMED_OUT_ERROR = "pennflow.ProcessorTimedOut"
SETUP_ERROR = "pennflow.BootstrapError"
# The function's configuration (pennflow.node.lambda_functions), never the child's environment.
# The image's own ENTRYPOINT + CMD and WORKDIR, recorded at build beside this file (or, for tests, the
# variables): {"command": [...], "workdir": "..."}.
COMMAND_FILE = "/opt/pennflow/command.json"
COMMAND_VAR = "PENNFLOW_COMMAND"  # a JSON list
WORKDIR_VAR = "PENNFLOW_WORKDIR"
RUN_ID_PARAMETER_VAR = "PENNFLOW_RUN_ID_PARAMETER"  # SSM parameter names (not values)
TOKEN_PARAMETER_VAR = "PENNFLOW_TOKEN_PARAMETER"
RUN_ID_NAMES_VAR = "PENNFLOW_RUN_ID_NAMES"  # comma-separated: INTEGRATION_ID,EXECUTION_RUN_ID
SSM_ENDPOINT_VAR = "PENNFLOW_SSM_ENDPOINT"  # tests only: a loopback SSM
EVENTS_ENDPOINT_VAR = "PENNFLOW_EVENTS_ENDPOINT"  # tests only: a loopback EventBridge
LOGS_ENDPOINT_VAR = "PENNFLOW_LOGS_ENDPOINT"  # tests only: a loopback CloudWatch Logs
LOG_GROUP_VAR = "AWS_LAMBDA_LOG_GROUP_NAME"  # Lambda's: the function's LoggingConfig group
# The step events (the status rule matches both; stacks/lambda_compute.py grants exactly these).
EVENT_SOURCE = "pennflow.processor"
EVENT_DETAIL_TYPE = "Processor Invocation State Change"
# The ECS processor container's name (pennflow.workflow.asl_states.CONTAINER_NAME): the log stream of an
# invocation is named as a task's, "<processor>/processor/<task id>", with the request id as task id.
LOG_CONTAINER = "processor"
LOG_BATCH_EVENTS = 1000  # PutLogEvents takes at most 10,000 events and 1 MiB
LOG_BATCH_BYTES = 512 * 1024
LOG_LINE_CHARS = 64 * 1024  # a longer line is cut (an event is at most 256 KiB)
LOG_FLUSH_SECONDS = 1.0  # the live logs see a line this soon
TOKEN_NAME = "SESSION_TOKEN"
HIDDEN_FROM_CHILD = ("AWS_LAMBDA_RUNTIME_API", "_HANDLER")  # the child must not take invocations
TAIL_LINES = 40
TAIL_CHARS = 4000  # well inside Step Functions' 32 KiB cause
DEADLINE_MARGIN_SECONDS = 3.0  # left to kill the child and report before Lambda ends the sandbox


class SetupError(Exception):
    """The invocation cannot start the processor (a bad event, a missing parameter)."""


# ------------------------------------------------------------------ the child process


def child_environment(event: dict, secrets: dict, base: dict | None = None) -> dict:
    """The processor's environment: the function's (less the bootstrap's own settings), the state's
    variables, then the run's names and token (which the event may not override)."""
    base = dict(os.environ if base is None else base)
    env = {k: v for k, v in base.items() if k not in HIDDEN_FROM_CHILD and not k.startswith("PENNFLOW_")}
    env.setdefault("HOME", "/tmp")  # the only writable folder of a Lambda sandbox besides the mounts
    entries = event.get("environment", [])
    if not isinstance(entries, list):
        raise SetupError("the event's environment must be a list of {Name, Value}")
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("Name"), str):
            raise SetupError(f"bad environment entry {entry!r}: need Name and Value")
        env[entry["Name"]] = str(entry.get("Value", ""))
    env.update(secrets)
    return env


def run_processor(command: list, env: dict, cwd: str | None, timeout: float, echo: Any = None) -> dict:
    """Run the command, echoing its output; ``{"exitCode", "timedOut", "seconds", "logTail"}``."""
    for folder in (env.get("INPUT_DIR"), env.get("OUTPUT_DIR")):
        if folder:  # a root processor's INPUT_DIR is an empty folder, as on ECS
            os.makedirs(folder, exist_ok=True)
    tail: collections.deque = collections.deque(maxlen=TAIL_LINES)
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        env=env,
        cwd=cwd or None,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: a timeout ends its children too
    )
    killer = _Deadline(process, timeout)
    assert process.stdout is not None
    for raw in process.stdout:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        if echo is None:
            print(line, flush=True)
        else:
            echo(line)
        tail.append(line)
    code = process.wait()
    timed_out = killer.cancel()
    return {
        "exitCode": code,
        "timedOut": timed_out,
        "seconds": round(time.monotonic() - started, 3),
        "logTail": _bounded(list(tail)),
    }


class _Deadline:
    """Kills the child's process group when the invocation's time is up."""

    def __init__(self, process: subprocess.Popen, timeout: float):
        import threading

        self.fired = False
        self._process = process
        self._timer = threading.Timer(max(timeout, 0.0), self._kill)
        self._timer.daemon = True
        self._timer.start()

    def _kill(self) -> None:
        self.fired = True
        with contextlib.suppress(ProcessLookupError):  # it ended just now
            os.killpg(self._process.pid, signal.SIGKILL)

    def cancel(self) -> bool:
        self._timer.cancel()
        return self.fired


def _bounded(lines: list) -> list:
    kept: list = []
    size = 0
    for line in reversed(lines):
        size += len(line) + 1
        if size > TAIL_CHARS:
            break
        kept.append(line)
    return list(reversed(kept))


# ------------------------------------------------------------------ the run's parameters (SSM)


def sign_v4(
    method: str,
    url: str,
    headers: dict,
    body: bytes,
    *,
    region: str,
    service: str,
    access_key: str,
    secret_key: str,
    now: datetime.datetime,
) -> dict:
    """Signature Version 4 headers for a request whose path is ``/`` and that has no query."""
    host = url.split("://", 1)[1].split("/", 1)[0]
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    signed = {k.lower(): v.strip() for k, v in headers.items()}
    signed["host"] = host
    signed["x-amz-date"] = amz_date
    names = sorted(signed)
    canonical = "\n".join(
        [
            method,
            "/",
            "",
            "".join(f"{name}:{signed[name]}\n" for name in names),
            ";".join(names),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out = dict(headers)
    out["X-Amz-Date"] = amz_date
    out["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={';'.join(names)}, "
        f"Signature={signature}"
    )
    return out


def aws_call(service: str, target: str, payload: dict, environ: dict, endpoint_var: str) -> dict:
    """One signed AWS JSON 1.1 call with the function's credentials (raises ``AwsError``)."""
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or ""
    url = environ.get(endpoint_var) or f"https://{service}.{region}.amazonaws.com/"
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target}
    if environ.get("AWS_SESSION_TOKEN"):
        headers["X-Amz-Security-Token"] = environ["AWS_SESSION_TOKEN"]
    headers = sign_v4(
        "POST",
        url,
        headers,
        body,
        region=region,
        service=service,
        access_key=environ.get("AWS_ACCESS_KEY_ID", ""),
        secret_key=environ.get("AWS_SECRET_ACCESS_KEY", ""),
        now=datetime.datetime.now(datetime.timezone.utc),  # noqa: UP017 (the image's Python may be 3.8)
    )
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        raise AwsError(f"HTTP {exc.code} {detail}", _error_code(detail)) from None
    except (OSError, ValueError) as exc:
        raise AwsError(str(exc), "") from None


class AwsError(Exception):
    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


def _error_code(detail: str) -> str:
    try:
        return str(json.loads(detail).get("__type", "")).rsplit("#", 1)[-1]
    except (ValueError, AttributeError):
        return ""


def get_parameter(name: str, environ: dict | None = None) -> str:
    """An SSM parameter's value (decrypted), with the function's credentials."""
    environ = dict(os.environ if environ is None else environ)
    try:
        answer = aws_call(
            "ssm", "AmazonSSM.GetParameter", {"Name": name, "WithDecryption": True}, environ, SSM_ENDPOINT_VAR
        )
        return answer["Parameter"]["Value"]
    except AwsError as exc:
        raise SetupError(f"cannot read parameter {name}: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise SetupError(f"cannot read parameter {name}: no {exc} in the answer") from None


def run_secrets(environ: dict | None = None) -> dict:
    """The run's Pennsieve names (its id) and SESSION_TOKEN, as the ECS task's ``secrets`` give them."""
    environ = dict(os.environ if environ is None else environ)
    secrets: dict = {}
    run_parameter = environ.get(RUN_ID_PARAMETER_VAR)
    if run_parameter:
        run_id = get_parameter(run_parameter, environ)
        for name in filter(None, environ.get(RUN_ID_NAMES_VAR, "").split(",")):
            secrets[name] = run_id
    token_parameter = environ.get(TOKEN_PARAMETER_VAR)
    if token_parameter:
        secrets[TOKEN_NAME] = get_parameter(token_parameter, environ)
    return secrets


# ------------------------------------------------------------------ what the node hears of a step


def invocation_attempt(function_arn: str, request_id: str) -> str:
    """A step's attempt as the node records it: ``<function ARN>/<request id>`` (a task's is its ARN)."""
    return f"{function_arn}/{request_id}"


def is_invocation_attempt(attempt: str) -> bool:
    """A recorded attempt that is a Lambda invocation, not an ECS task (``arn:<partition>:lambda:...``)."""
    parts = attempt.split(":", 3)
    return len(parts) == 4 and parts[0] == "arn" and parts[2] == "lambda"


def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()  # noqa: UP017 (Python 3.8)


def _say(message: str) -> None:
    """A line of the bootstrap's own in the function's log (Lambda's stream, not the processor's)."""
    print(f"pennflow bootstrap: {message}", flush=True)


class StepEvents:
    """The step's start and end as ``pennflow.processor`` events, shaped for ``pennflow.node.tracking``:
    the attempt is ``<function ARN>/<request id>`` (its task id, as a task ARN's, is the request id)."""

    def __init__(self, event: dict, request_id: str, function_arn: str, environ: dict):
        variables = _variables(event)
        self.environ = environ
        self.detail = {
            "runId": variables.get("RUN_ID", ""),
            "processorId": variables.get("PROCESSOR_ID") or str(event.get("processorId", "")),
            "functionName": environ.get("AWS_LAMBDA_FUNCTION_NAME", ""),
            "attempt": invocation_attempt(function_arn, request_id),
            "requestId": request_id,
            "logStream": log_stream_name(variables.get("PROCESSOR_ID") or "", request_id),
        }
        if "BATCH_INDEX" in variables:
            self.detail["batchIndex"] = variables["BATCH_INDEX"]
        self.function_arn = function_arn
        self.enabled = bool(self.detail["runId"] and self.detail["processorId"])

    def started(self) -> None:
        self.started_at = _now_iso()
        self._put({"status": "RUNNING", "startedAt": self.started_at})

    def stopped(self, exit_code: Any, reason: str) -> None:
        self._put(
            {
                "status": "STOPPED",
                "exitCode": exit_code,
                "reason": reason,
                "startedAt": getattr(self, "started_at", None),
                "stoppedAt": _now_iso(),
            }
        )

    def _put(self, fields: dict) -> None:
        if not self.enabled:
            return
        entry = {
            "Source": EVENT_SOURCE,
            "DetailType": EVENT_DETAIL_TYPE,
            "Detail": json.dumps({**self.detail, **fields}),
            "Resources": [self.function_arn] if self.function_arn else [],
        }
        try:
            answer = aws_call(
                "events", "AWSEvents.PutEvents", {"Entries": [entry]}, self.environ, EVENTS_ENDPOINT_VAR
            )
        except AwsError as exc:
            _say(f"the step's {fields['status']} event was not sent ({exc}); the run's end will record it")
            return
        if answer.get("FailedEntryCount"):
            _say(f"the step's {fields['status']} event was refused: {answer.get('Entries')}")


def _variables(event: dict) -> dict:
    entries = event.get("environment") if isinstance(event, dict) else None
    if not isinstance(entries, list):
        return {}
    return {
        e["Name"]: str(e.get("Value", ""))
        for e in entries
        if isinstance(e, dict) and isinstance(e.get("Name"), str)
    }


def log_stream_name(processor_id: str, request_id: str) -> str:
    return f"{processor_id}/{LOG_CONTAINER}/{request_id}"


class ProcessorLog:
    """The processor's lines in the processor log group, in the stream an ECS task of it would write
    (CreateLogStream, then PutLogEvents in batches, at least every ``LOG_FLUSH_SECONDS``). Without a
    log group, or once a call fails, the lines go to the function's own log instead."""

    def __init__(self, environ: dict, processor_id: str, request_id: str):
        import threading

        self.environ = environ
        self.group = environ.get(LOG_GROUP_VAR, "")
        self.stream = log_stream_name(processor_id, request_id)
        self._pending: list = []
        self._bytes = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.failed = not (self.group and processor_id)
        if not self.failed:
            self._call("CreateLogStream", {})
        self._flusher = threading.Thread(target=self._flush_every, daemon=True)
        self._flusher.start()

    def write(self, line: str) -> None:
        if self.failed:
            print(line, flush=True)
            return
        line = line[:LOG_LINE_CHARS] or " "  # CloudWatch refuses an empty message
        with self._lock:
            self._pending.append({"timestamp": int(time.time() * 1000), "message": line})
            self._bytes += len(line.encode("utf-8", "replace")) + 26  # CloudWatch's per-event overhead
            full = len(self._pending) >= LOG_BATCH_EVENTS or self._bytes >= LOG_BATCH_BYTES
        if full:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            batch, self._pending, self._bytes = self._pending, [], 0
            if batch and not self.failed:
                self._call("PutLogEvents", {"logEvents": batch})
            if batch and self.failed:
                for event in batch:
                    print(event["message"], flush=True)

    def close(self) -> None:
        self._closed.set()
        self.flush()

    def _flush_every(self) -> None:
        while not self._closed.wait(LOG_FLUSH_SECONDS):
            self.flush()

    def _call(self, action: str, fields: dict) -> None:
        payload = {"logGroupName": self.group, "logStreamName": self.stream, **fields}
        try:
            aws_call("logs", f"Logs_20140328.{action}", payload, self.environ, LOGS_ENDPOINT_VAR)
        except AwsError as exc:
            if action == "CreateLogStream" and exc.code == "ResourceAlreadyExistsException":
                return  # a repeated invocation id: the same stream
            self.failed = True
            _say(f"cannot write log stream {self.stream} ({action}: {exc}); the lines follow here")


# ------------------------------------------------------------------ the Runtime API


class RuntimeApi:
    def __init__(self, address: str):
        self.base = f"http://{address}/{API_VERSION}/runtime"

    def next(self) -> tuple:
        """(request id, deadline in epoch ms, event, invoked function ARN) of the next invocation;
        blocks until there is one."""
        with urllib.request.urlopen(f"{self.base}/invocation/next") as response:
            request_id = response.headers["Lambda-Runtime-Aws-Request-Id"]
            deadline = int(response.headers.get("Lambda-Runtime-Deadline-Ms") or 0)
            function_arn = response.headers.get("Lambda-Runtime-Invoked-Function-Arn") or ""
            return request_id, deadline, json.loads(response.read() or b"{}"), function_arn

    def respond(self, request_id: str, result: dict) -> None:
        self._post(f"/invocation/{request_id}/response", result)

    def fail(self, request_id: str, error_type: str, message: str, **extra: Any) -> None:
        self._post(f"/invocation/{request_id}/error", _error(error_type, message, **extra), error_type)

    def init_failed(self, error_type: str, message: str) -> None:
        self._post("/init/error", _error(error_type, message), error_type)

    def _post(self, path: str, payload: dict, error_type: str | None = None) -> None:
        headers = {"Content-Type": "application/json"}
        if error_type:
            headers["Lambda-Runtime-Function-Error-Type"] = error_type
        request = urllib.request.Request(
            self.base + path, data=json.dumps(payload).encode(), headers=headers, method="POST"
        )
        with urllib.request.urlopen(request) as response:
            response.read()


def _error(error_type: str, message: str, **extra: Any) -> dict:
    return {"errorType": error_type, "errorMessage": message, **extra}


def image_command(environ: dict) -> tuple:
    """(the image's command, its working directory) from the variables, else the build's file."""
    if environ.get(COMMAND_VAR):
        recorded = {"command": json.loads(environ[COMMAND_VAR]), "workdir": environ.get(WORKDIR_VAR, "")}
    else:
        try:
            with open(COMMAND_FILE) as handle:
                recorded = json.load(handle)
        except (OSError, ValueError) as exc:
            raise SetupError(
                f"no {COMMAND_VAR} and no readable {COMMAND_FILE} ({exc}): the image was not built by the node"
            ) from None
    command = recorded.get("command") if isinstance(recorded, dict) else None
    if not isinstance(command, list) or not command or not all(isinstance(p, str) for p in command):
        raise SetupError("the image's command must be a non-empty JSON list of strings")
    return command, recorded.get("workdir") or None


def handle(event: dict, deadline_ms: int, environ: dict | None = None, echo: Any = None) -> tuple:
    """One invocation: ``(None, result)`` on exit 0, else ``(error type, error payload)``."""
    environ = dict(os.environ if environ is None else environ)
    command, workdir = image_command(environ)
    env = child_environment(event, run_secrets(environ), environ)
    timeout = (deadline_ms / 1000.0 - time.time() - DEADLINE_MARGIN_SECONDS) if deadline_ms else 900.0
    result = run_processor(command, env, workdir, timeout, echo)
    result["processorId"] = event.get("processorId", "")
    label = result["processorId"] or "the processor"
    if result["timedOut"]:
        message = f"{label} was still running at the function's timeout and was stopped"
        return TIMED_OUT_ERROR, _error(TIMED_OUT_ERROR, message, **result)
    if result["exitCode"] != 0:
        last = result["logTail"][-1] if result["logTail"] else "(no output)"
        message = f"{label} exited with code {result['exitCode']}: {last}"
        return FAILED_ERROR, _error(FAILED_ERROR, message, **result)
    return None, result


def serve(api: RuntimeApi, environ: dict | None = None, max_invocations: int | None = None) -> int:
    """The runtime loop (forever in Lambda; ``max_invocations`` for tests): the count served."""
    environ = dict(os.environ if environ is None else environ)
    served = 0
    while max_invocations is None or served < max_invocations:
        request_id, deadline, event, function_arn = api.next()
        step = StepEvents(event, request_id, function_arn, environ)
        step.started()
        log = ProcessorLog(environ, step.detail["processorId"] if step.enabled else "", request_id)
        try:
            error_type, payload = handle(event, deadline, environ, log.write)
        except SetupError as exc:
            error_type, payload = SETUP_ERROR, _error(SETUP_ERROR, str(exc))
        except OSError as exc:  # the command cannot start: not found, not executable
            error_type, payload = (
                SETUP_ERROR,
                _error(SETUP_ERROR, f"cannot start the processor's command: {exc}"),
            )
        finally:
            log.close()
        if error_type is None:
            step.stopped(0, "exited 0")
            api.respond(request_id, payload)
        else:
            step.stopped(payload.get("exitCode"), payload["errorMessage"])
            api.fail(request_id, error_type, payload["errorMessage"], **_extra(payload))
        served += 1
    return served


def _extra(payload: dict) -> dict:
    return {k: v for k, v in payload.items() if k not in ("errorType", "errorMessage")}


def main() -> int:
    address = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not address:
        print(
            "pennflow bootstrap: AWS_LAMBDA_RUNTIME_API is not set (this runs inside Lambda)", file=sys.stderr
        )
        return 2
    api = RuntimeApi(address)
    try:
        image_command(dict(os.environ))
    except SetupError as exc:
        api.init_failed(SETUP_ERROR, str(exc))
        return 1
    serve(api)
    return 0


if __name__ == "__main__":
    sys.exit(main())
