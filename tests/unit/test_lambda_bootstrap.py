"""The lambda processor bootstrap against a loopback Runtime API and SSM, running real commands."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from pennflow.processors import lambda_bootstrap as boot
from tests.fakes.lambda_runtime import FUNCTION_ARN, fake_aws, fake_runtime, fake_ssm

RUN_PARAM, TOKEN_PARAM = "/pennflow/slots/slot-00/run-id", "/pennflow/slots/slot-00/session-token"
PROCESSOR = """
import os, pathlib, sys
out = pathlib.Path(os.environ["OUTPUT_DIR"])
seen = {k: os.environ.get(k) for k in ("INPUT_DIR", "THRESHOLD", "SESSION_TOKEN", "INTEGRATION_ID",
        "EXECUTION_RUN_ID", "AWS_LAMBDA_RUNTIME_API", "PENNFLOW_COMMAND", "HOME")}
seen["input_exists"] = pathlib.Path(os.environ["INPUT_DIR"]).is_dir()
(out / "seen.json").write_text(__import__("json").dumps(seen))
print("processed", os.environ["THRESHOLD"])
sys.exit(int(os.environ.get("EXIT", "0")))
"""


@pytest.fixture
def ssm():
    with fake_ssm({RUN_PARAM: "run-42", TOKEN_PARAM: "tok-secret"}) as server:
        yield server


def _environ(ssm_url: str, command: list[str], **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_SESSION_TOKEN": "session",
        boot.SSM_ENDPOINT_VAR: ssm_url,
        boot.COMMAND_VAR: json.dumps(command),
        boot.RUN_ID_PARAMETER_VAR: RUN_PARAM,
        boot.TOKEN_PARAMETER_VAR: TOKEN_PARAM,
        boot.RUN_ID_NAMES_VAR: "INTEGRATION_ID,EXECUTION_RUN_ID",
        **extra,
    }


def _event(tmp_path: Path, **env: str) -> dict:
    variables = {"INPUT_DIR": str(tmp_path / "in"), "OUTPUT_DIR": str(tmp_path / "out"), "THRESHOLD": "0.5"}
    variables.update(env)
    return {"processorId": "convert", "environment": [{"Name": k, "Value": v} for k, v in variables.items()]}


def test_a_real_bootstrap_process_runs_the_command_with_the_run_secrets(tmp_path, ssm):
    # The file alone, in a folder of its own, under an isolated Python: it needs nothing but the stdlib.
    script = tmp_path / "image" / "bootstrap.py"
    script.parent.mkdir()
    shutil.copy(boot.__file__, script)
    with fake_runtime() as runtime:
        environ = _environ(ssm.url, [sys.executable, "-c", PROCESSOR], AWS_LAMBDA_RUNTIME_API=runtime.address)
        process = subprocess.Popen([sys.executable, "-I", str(script)], env=environ)
        try:
            runtime.invoke(_event(tmp_path), "req-1")
            deadline = time.monotonic() + 20
            while not runtime.posted and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            process.kill()
            process.wait()
        answer = runtime.answer("req-1")
    assert answer.path.endswith("/invocation/req-1/response")
    assert answer.body["exitCode"] == 0 and answer.body["processorId"] == "convert"
    assert answer.body["logTail"] == ["processed 0.5"]
    seen = json.loads((tmp_path / "out" / "seen.json").read_text())
    assert seen["SESSION_TOKEN"] == "tok-secret"
    assert seen["INTEGRATION_ID"] == seen["EXECUTION_RUN_ID"] == "run-42"
    assert seen["AWS_LAMBDA_RUNTIME_API"] is None and seen["PENNFLOW_COMMAND"] is None
    assert seen["input_exists"] and seen["HOME"] == "/tmp"
    assert "tok-secret" not in json.dumps(answer.body)
    # Both parameters were read signed with the function's credentials, decrypted.
    assert sorted(r.body["Name"] for r in ssm.requests) == sorted([RUN_PARAM, TOKEN_PARAM])
    for request in ssm.requests:
        assert request.body["WithDecryption"] is True
        assert request.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
        assert request.headers["X-Amz-Security-Token"] == "session"


def test_a_non_zero_exit_is_a_processor_failure_with_its_code_and_last_line(tmp_path, ssm):
    with fake_runtime() as runtime:
        runtime.invoke(_event(tmp_path, EXIT="3"), "req-2")
        environ = _environ(ssm.url, [sys.executable, "-c", PROCESSOR])
        assert boot.serve(boot.RuntimeApi(runtime.address), environ, max_invocations=1) == 1
        answer = runtime.answer("req-2")
    assert answer.path.endswith("/invocation/req-2/error")
    assert answer.headers["Lambda-Runtime-Function-Error-Type"] == boot.FAILED_ERROR
    assert answer.body["errorType"] == boot.FAILED_ERROR and answer.body["exitCode"] == 3
    assert answer.body["errorMessage"] == "convert exited with code 3: processed 0.5"


def test_a_processor_still_running_at_the_deadline_is_killed_and_reported(tmp_path, ssm):
    with fake_runtime() as runtime:
        # 3 s of margin: the child gets about one second of its thirty
        runtime.invoke(_event(tmp_path), "req-3", seconds_left=boot.DEADLINE_MARGIN_SECONDS + 1)
        command = ["sh", "-c", "echo started; sleep 30 & wait"]
        started = time.monotonic()
        boot.serve(boot.RuntimeApi(runtime.address), _environ(ssm.url, command), max_invocations=1)
        elapsed = time.monotonic() - started
        answer = runtime.answer("req-3")
    assert elapsed < 10, "the child's whole process group must be killed"
    assert answer.body["errorType"] == boot.TIMED_OUT_ERROR and answer.body["timedOut"] is True
    assert answer.body["logTail"] == ["started"]


def test_a_missing_parameter_or_command_is_a_bootstrap_error_naming_it(tmp_path):
    with fake_ssm({}) as empty, fake_runtime() as runtime:
        runtime.invoke(_event(tmp_path), "req-4")
        runtime.invoke(_event(tmp_path), "req-5")
        api = boot.RuntimeApi(runtime.address)
        boot.serve(api, _environ(empty.url, ["true"]), max_invocations=1)
        no_parameters = {boot.RUN_ID_PARAMETER_VAR: "", boot.TOKEN_PARAMETER_VAR: ""}
        boot.serve(api, _environ(empty.url, ["/no/such/processor"], **no_parameters), 1)
        missing, unstartable = runtime.answer("req-4"), runtime.answer("req-5")
    assert missing.body["errorType"] == boot.SETUP_ERROR
    assert RUN_PARAM in missing.body["errorMessage"] and "HTTP 400" in missing.body["errorMessage"]
    assert unstartable.body["errorType"] == boot.SETUP_ERROR
    assert "cannot start the processor's command" in unstartable.body["errorMessage"]


def test_an_image_not_built_by_the_node_fails_at_init(tmp_path):
    with fake_runtime() as runtime:
        env = {"PATH": os.environ["PATH"], "AWS_LAMBDA_RUNTIME_API": runtime.address}
        done = subprocess.run([sys.executable, "-I", boot.__file__], env=env, timeout=20)
        assert done.returncode == 1
        (posted,) = runtime.posted
    assert posted.path.endswith("/runtime/init/error")
    assert boot.COMMAND_VAR in posted.body["errorMessage"]


def test_the_signature_is_the_one_botocore_computes():
    url = "https://ssm.eu-west-1.amazonaws.com/"
    body = b'{"Name": "/p", "WithDecryption": true}'
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "AmazonSSM.GetParameter",
        "X-Amz-Security-Token": "session",
    }
    now = datetime.datetime(2026, 12, 3, 17, 40, 5, tzinfo=datetime.UTC)
    ours = boot.sign_v4(
        "POST",
        url,
        headers,
        body,
        region="eu-west-1",
        service="ssm",
        access_key="AK",
        secret_key="SK",
        now=now,
    )
    request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
    with mock.patch("botocore.auth.get_current_datetime", return_value=now.replace(tzinfo=None)):
        SigV4Auth(Credentials("AK", "SK", "session"), "ssm", "eu-west-1").add_auth(request)
    assert ours["Authorization"] == request.headers["Authorization"]


def test_the_command_recorded_at_build_is_read_from_its_file(tmp_path, monkeypatch):
    recorded = tmp_path / "command.json"
    recorded.write_text(json.dumps({"command": ["python", "-m", "thumbs"], "workdir": "/app"}))
    monkeypatch.setattr(boot, "COMMAND_FILE", str(recorded))
    assert boot.image_command({}) == (["python", "-m", "thumbs"], "/app")
    recorded.write_text(json.dumps({"command": [], "workdir": ""}))
    with pytest.raises(boot.SetupError, match="non-empty JSON list"):
        boot.image_command({})


# ------------------------------------------------------------------ step events and the processor's log stream


def _reporting(aws_url: str, ssm_url: str, command: list[str]) -> dict[str, str]:
    return _environ(
        ssm_url,
        command,
        **{
            boot.EVENTS_ENDPOINT_VAR: aws_url,
            boot.LOGS_ENDPOINT_VAR: aws_url,
            boot.LOG_GROUP_VAR: "/pennflow/node/processors",
            "AWS_LAMBDA_FUNCTION_NAME": "node_fn-slot-00-0123456789abcdef",
        },
    )


def _step_event(tmp_path: Path, **env: str) -> dict:
    return _event(tmp_path, RUN_ID="run-42", PROCESSOR_ID="convert", **env)


def test_the_step_start_and_end_are_put_as_processor_events_and_the_lines_in_the_task_stream(tmp_path, ssm):
    with fake_aws() as aws, fake_runtime() as runtime:
        runtime.invoke(_step_event(tmp_path), "req-6")
        environ = _reporting(aws.url, ssm.url, [sys.executable, "-c", PROCESSOR])
        boot.serve(boot.RuntimeApi(runtime.address), environ, max_invocations=1)
        assert runtime.answer("req-6").body["exitCode"] == 0
    started, stopped = aws.events()
    for event in (started, stopped):
        assert event["Source"] == boot.EVENT_SOURCE and event["DetailType"] == boot.EVENT_DETAIL_TYPE
        assert event["Resources"] == [FUNCTION_ARN]
        assert event["Detail"]["runId"] == "run-42" and event["Detail"]["processorId"] == "convert"
        assert event["Detail"]["attempt"] == f"{FUNCTION_ARN}/req-6"
        assert event["Detail"]["functionName"] == "node_fn-slot-00-0123456789abcdef"
    assert started["Detail"]["status"] == "RUNNING" and started["Detail"]["startedAt"]
    assert stopped["Detail"]["status"] == "STOPPED" and stopped["Detail"]["exitCode"] == 0
    assert stopped["Detail"]["stoppedAt"] >= stopped["Detail"]["startedAt"]
    # The processor's lines are in the stream an ECS task of it would write, not in Lambda's.
    stream = "convert/processor/req-6"
    assert stopped["Detail"]["logStream"] == stream
    (created,) = aws.bodies("Logs_20140328.CreateLogStream")
    assert created == {"logGroupName": "/pennflow/node/processors", "logStreamName": stream}
    assert aws.lines(stream) == ["processed 0.5"]
    # Signed with the function's credentials, for the service each call is to.
    scopes = {r.headers["Authorization"].split("/")[3] for r in aws.requests}
    assert scopes == {"events", "logs"}
    assert "tok-secret" not in json.dumps([r.body for r in aws.requests])


def test_a_failed_attempt_ends_with_its_exit_code_and_a_setup_error_with_none(tmp_path, ssm):
    with fake_aws() as aws, fake_ssm({}) as empty, fake_runtime() as runtime:
        runtime.invoke(_step_event(tmp_path, EXIT="3"), "req-7")
        runtime.invoke(_step_event(tmp_path), "req-8")
        api = boot.RuntimeApi(runtime.address)
        boot.serve(api, _reporting(aws.url, ssm.url, [sys.executable, "-c", PROCESSOR]), 1)
        boot.serve(api, _reporting(aws.url, empty.url, ["true"]), 1)
    ends = {e["Detail"]["requestId"]: e["Detail"] for e in aws.events() if e["Detail"]["status"] == "STOPPED"}
    assert (
        ends["req-7"]["exitCode"] == 3
        and ends["req-7"]["reason"] == "convert exited with code 3: processed 0.5"
    )
    assert ends["req-8"]["exitCode"] is None and RUN_PARAM in ends["req-8"]["reason"]


def test_without_events_or_logs_the_processor_still_runs_and_its_lines_go_to_the_function_log(
    tmp_path, ssm, capsys
):
    with fake_aws() as aws, fake_runtime() as runtime:
        aws.refuse.update({"AWSEvents.PutEvents", "Logs_20140328.CreateLogStream"})
        runtime.invoke(_step_event(tmp_path), "req-9")
        boot.serve(
            boot.RuntimeApi(runtime.address),
            _reporting(aws.url, ssm.url, [sys.executable, "-c", PROCESSOR]),
            1,
        )
        answer = runtime.answer("req-9")
    assert answer.path.endswith("/response") and answer.body["exitCode"] == 0
    out = capsys.readouterr().out.splitlines()
    assert "processed 0.5" in out
    assert any("RUNNING event was not sent" in line for line in out)
    assert any("cannot write log stream convert/processor/req-9" in line for line in out)
    assert aws.bodies("Logs_20140328.PutLogEvents") == []


def test_an_invocation_that_names_no_run_sends_no_event(tmp_path, ssm):
    with fake_aws() as aws, fake_runtime() as runtime:
        runtime.invoke(_event(tmp_path), "req-10")
        boot.serve(
            boot.RuntimeApi(runtime.address),
            _reporting(aws.url, ssm.url, [sys.executable, "-c", PROCESSOR]),
            1,
        )
    assert aws.events() == []


def test_long_output_is_sent_in_batches_in_order(tmp_path, ssm, monkeypatch):
    monkeypatch.setattr(boot, "LOG_BATCH_EVENTS", 50)
    script = "for i in range(120): print('line', i)"
    with fake_aws() as aws, fake_runtime() as runtime:
        runtime.invoke(_step_event(tmp_path), "req-11")
        boot.serve(
            boot.RuntimeApi(runtime.address), _reporting(aws.url, ssm.url, [sys.executable, "-c", script]), 1
        )
    assert aws.lines("convert/processor/req-11") == [f"line {i}" for i in range(120)]
    assert len(aws.bodies("Logs_20140328.PutLogEvents")) >= 3
