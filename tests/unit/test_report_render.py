"""The report's HTML from a node's answer: escaped values, the DAG from the registered definition."""

from __future__ import annotations

from pennflow.report.data import from_remote
from pennflow.report.render import render_html
from pennflow.workflow.definition import parse_definition

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
                "logPath": "s3://logs/runs/r-1/logs/work/",
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
    assert "s3://logs/runs/r-1/logs/work/" in page  # no tail remotely: where the log is archived
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
