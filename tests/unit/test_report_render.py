"""The report's HTML from a node's answer: escaped values, the DAG from the registered definition."""

from __future__ import annotations

from pennflow.report.data import from_remote
from pennflow.report.render import render_html
from pennflow.workflow.definition import parse_definition
from tests.unit import test_remote

PROCESSOR = "work"  # the failed processor of the record below
LOG_PATH = f"s3://logs/runs/r-1/logs/{PROCESSOR}/"  # where the node archived its log

node = test_remote.node  # a fake node on loopback that checks each SigV4 signature
signed_env = test_remote.signed_env

DEFINITION = """
name: tiny
processors:
  - {id: source, type: data-source}
  - {id: work, image: "ghcr.io/x/work@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", dependsOn: [source]}
"""


def _run(definition_hash: str) -> dict:
    return {
        "runId": "r-1",
        "workflow": "tiny",
        "status": "FAILED",
        "definitionHash": definition_hash,
        "reason": "processor 'work' failed with exit code 1 <script>alert(1)</script>",
        "startedAt": "2025-03-01T12:00:00Z",
        "finishedAt": "2025-03-01T12:05:00Z",
        "steps": [
            {
                "processorId": "source",
                "status": "SUCCEEDED",
                "attempts": 1,
                "startedAt": "2025-03-01T12:00:00Z",
                "finishedAt": "2025-03-01T12:01:00Z",
            },
            {
                "processorId": "work",
                "status": "FAILED",
                "attempts": 2,
                "exitCode": 1,
                "startedAt": "2025-03-01T12:01:00Z",
                "finishedAt": "2025-03-01T12:05:00Z",
                "reason": "exit 1",
                "logPath": LOG_PATH,
            },
        ],
        "consoleUrl": "https://console.example/r-1",
    }


def test_a_node_run_with_its_definition():
    workflow = parse_definition(DEFINITION)
    report = from_remote(_run(workflow.definition_hash()), {"definition": workflow.model_dump(by_alias=True)})
    assert report.definition_known
    assert [(s.processor_id, s.level, s.depends_on) for s in report.steps] == [
        ("source", 0, []),
        ("work", 1, ["source"]),
    ]
    page = render_html(report)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'class="edge"' in page  # source -> work
    assert LOG_PATH in page  # no tail remotely: where the log is archived
    assert (
        "(by tag"
        not in page.split("work@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")[1][
            :80
        ]
    )  # pinned by digest
    assert "Step Functions console" in page and "not measured" in page


def test_a_changed_definition_is_not_drawn_as_the_run_s():
    workflow = parse_definition(DEFINITION)
    report = from_remote(_run("another-hash"), {"definition": workflow.model_dump(by_alias=True)})
    assert not report.definition_known
    assert 'class="edge"' not in render_html(report)


def test_report_remote_asks_the_node_for_the_run_and_its_definition(node, signed_env, tmp_path) -> None:
    from typer.testing import CliRunner

    from pennflow.cli import app

    fake, url = node
    workflow = parse_definition(DEFINITION)
    fake.answer("GET", "/runs/r-1", (200, _run(workflow.definition_hash())))
    fake.answer(
        "GET", "/workflows/tiny", (200, {"name": "tiny", "definition": workflow.model_dump(by_alias=True)})
    )
    page = tmp_path / "r-1.html"
    result = CliRunner().invoke(app, ["report", "r-1", "--node-url", url, "-o", str(page)])
    assert result.exit_code == 0, result.output
    assert [r["path"] for r in fake.requests] == ["/v1/runs/r-1", "/v1/workflows/tiny"]
    assert all(r["valid"] for r in fake.requests)  # SigV4-signed like every remote command
    html = page.read_text()
    assert 'data-processor="work" data-status="FAILED"' in html and 'class="edge"' in html


def test_report_remote_of_an_unknown_run_is_exit_2(node, signed_env, tmp_path) -> None:
    from typer.testing import CliRunner

    from pennflow.cli import app

    fake, url = node
    fake.answer("GET", "/runs/r-9", (404, {"error": {"code": "not_found", "message": "no run 'r-9'"}}))
    result = CliRunner().invoke(app, ["report", "r-9", "--node-url", url, "-o", str(tmp_path / "x.html")])
    assert result.exit_code == 2 and "no run 'r-9'" in result.output
    assert not (tmp_path / "x.html").exists()
