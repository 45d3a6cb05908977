"""Credentials the engine holds never reach a processor's environment (DESIGN §3)."""

from __future__ import annotations

import json

from pennflow.engine.local import run_workflow
from pennflow.workflow.definition import validate_definition
from pennflow.workflow.runs import Status

DUMP_ENV = "import json, os; json.dump(dict(os.environ), open(os.path.join(os.environ['OUTPUT_DIR'], 'env.json'), 'w'))"


def test_pennsieve_and_aws_secrets_are_withheld_from_processors(tmp_path, monkeypatch):
    for name, value in {
        "PENNSIEVE_API_KEY": "key-123",
        "PENNSIEVE_API_SECRET": "secret-456",
        "AWS_SECRET_ACCESS_KEY": "aws-789",
        "LAB_SETTING": "not passed",
        "LANG": "C.UTF-8",
    }.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "a.txt").write_text("a")
    workflow = validate_definition(
        {
            "name": "env-dump",
            "processors": [
                {"id": "source", "type": "data-source"},
                {"id": "dump", "command": ["python", "-c", DUMP_ENV], "dependsOn": ["source"]},
            ],
        }
    )
    record = run_workflow(
        workflow, definition_dir=tmp_path, input_dir=tmp_path / "input", home=tmp_path / "home"
    )
    assert record.status is Status.SUCCEEDED, record.reason
    env_file = next((tmp_path / "home" / "runs" / record.run_id / "dump" / "output").glob("env.json"))
    seen = json.loads(env_file.read_text())
    text = env_file.read_text()
    for secret in ("key-123", "secret-456", "aws-789"):
        assert secret not in text
    # Only an allow-list of this machine's variables reaches processors; settings are params.
    assert "LAB_SETTING" not in seen and seen["LANG"] == "C.UTF-8"
    assert seen["PROCESSOR_ID"] == "dump"
