"""The metrics the functions emit are the ones the alarms and the dashboard read, for any nodeName.

The emitting code runs for real (lambdas/observability.py, in a subprocess with a synthesized
function's environment) and its embedded-metric-format output is matched against the template of
the `lab` node: namespace, metric name and every dimension.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

from stacks.entrypoint import PROJECT_ROOT

# Emits each metric the handlers emit, the way they emit it (MetricsListener, metrics.add_metric).
EMIT = """
import json, sys
from types import SimpleNamespace
from aws_lambda_powertools.metrics import MetricUnit
from lambdas.observability import MetricsListener, metrics

listener = MetricsListener()
listener.run_started("r-1", "wf")
for status in ("SUCCEEDED", "FAILED"):
    listener.run_finished(SimpleNamespace(
        status=status, workflow="wf", duration_seconds=3.0, processor_seconds={"p": 1.0}, cost={"totalUsd": 0.01}
    ))
for name in json.loads(sys.argv[1]):
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
metrics.flush_metrics()
"""
ADD_METRIC = re.compile(r"add_metric\(\s*name=([^,]+),")


def handler_metric_names() -> set[str]:
    """Every name a handler passes to ``metrics.add_metric`` (MetricsListener's are emitted by EMIT)."""
    from lambdas.layer_jobs import METRIC_BY_OUTCOME

    names: set[str] = set()
    for path in sorted((PROJECT_ROOT / "lambdas").glob("*.py")) + sorted(
        (PROJECT_ROOT / "pennflow").rglob("*.py")
    ):
        if path.name == "observability.py":
            continue
        for expression in ADD_METRIC.findall(path.read_text()):
            if re.fullmatch(r'"\w+"', expression):
                names.add(expression.strip('"'))
            elif (path.name, expression) == ("layer_jobs.py", "metric"):
                names |= set(METRIC_BY_OUTCOME.values())
            else:
                raise AssertionError(
                    f"{path.name}: add_metric(name={expression}): teach this test its values"
                )
    return names


def emitted(environment: dict[str, str], names: set[str]) -> set[tuple[str, str, frozenset]]:
    """(namespace, metric, dimensions) of every metric the code writes with this environment."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("POWERTOOLS_")}
    env.update(environment)
    result = subprocess.run(
        [sys.executable, "-c", EMIT, json.dumps(sorted(names))],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    found = set()
    for line in result.stdout.splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        for directive in record["_aws"]["CloudWatchMetrics"]:
            for dimension_set in directive["Dimensions"]:
                dimensions = frozenset((name, record[name]) for name in dimension_set)
                for metric in directive["Metrics"]:
                    found.add((directive["Namespace"], metric["Name"], dimensions))
    return found


def read_by_alarms(template: dict[str, Any]) -> set[tuple[str, str, frozenset]]:
    reads = set()
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::CloudWatch::Alarm" and "Namespace" in resource["Properties"]:
            alarm = resource["Properties"]
            dimensions = frozenset((d["Name"], _text(d["Value"])) for d in alarm.get("Dimensions", []))
            reads.add((alarm["Namespace"], alarm["MetricName"], dimensions))
    return reads


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)  # a token: {"Ref": ...}


def dashboard(template: dict[str, Any]) -> dict[str, Any]:
    (body,) = [
        r["Properties"]["DashboardBody"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::CloudWatch::Dashboard"
    ]
    if isinstance(body, dict):  # Fn::Join of text and tokens (ARNs, ids): a token stands for a value
        body = "".join(part if isinstance(part, str) else "TOKEN" for part in body["Fn::Join"][1])
    return json.loads(body)


def read_by_dashboard(template: dict[str, Any]) -> tuple[set[tuple[str, str, frozenset]], list[str]]:
    """The metrics the graphs read by name, and the SEARCH expressions they read by query."""
    reads, searches = set(), []
    for widget in dashboard(template)["widgets"]:
        for line in widget.get("properties", {}).get("metrics", []):
            if isinstance(line[0], dict):
                searches.append(line[0]["expression"])
                continue
            fields = [item for item in line if not isinstance(item, dict)]
            namespace, metric, pairs = fields[0], fields[1], fields[2:]
            reads.add((namespace, metric, frozenset(zip(pairs[::2], pairs[1::2], strict=True))))
    return reads, searches


def matches_search(expression: str, namespace: str, metric: str, dimensions: frozenset) -> bool:
    """Whether SEARCH('{namespace,dim,...} MetricName="m" dim="v"', ...) finds this metric."""
    schema = re.search(r"\{([^}]*)\}", expression)
    if schema is None:
        return False
    ns, *names = [part.strip() for part in schema.group(1).split(",")]
    terms = dict(re.findall(r'(\w+)="([^"]*)"', expression))
    wanted = dict(dimensions)
    return (
        ns == namespace
        and sorted(names) == sorted(wanted)
        and terms.get("MetricName") == metric
        and all(wanted.get(name) == value for name, value in terms.items() if name != "MetricName")
    )


def function_environments(template: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {
        r["Properties"]["Handler"]: r["Properties"]["Environment"]["Variables"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"].get("Handler", "").startswith("lambdas.")
    }


def test_the_handlers_metric_names_are_found() -> None:
    assert {"TriggeredRuns", "WebhookRejected", "LayerJobsFailed"} <= handler_metric_names()


def test_every_metric_emitted_is_read_with_its_exact_namespace_and_dimensions(variant) -> None:
    template = variant.json
    environments = function_environments(template)
    assert len(environments) >= 10, sorted(environments)
    powertools = {
        tuple(sorted((k, v) for k, v in env.items() if k.startswith("POWERTOOLS_")))
        for env in environments.values()
    }
    assert len(powertools) == 1, powertools  # every function reports under the same service and namespace
    (settings,) = powertools
    assert dict(settings)["POWERTOOLS_SERVICE_NAME"] == "lab"

    metrics = emitted(dict(settings), handler_metric_names())
    by_name = {metric for _, metric, _ in metrics}
    assert {
        "RunsStarted",
        "RunsSucceeded",
        "RunsFailed",
        "RunDuration",
        "ProcessorDuration",
        "RunCost",
    } <= by_name
    assert all(("service", "lab") in dimensions for _, _, dimensions in metrics), metrics

    alarms = read_by_alarms(template)
    graphs, searches = read_by_dashboard(template)
    for metric in metrics:
        if metric in alarms or metric in graphs:
            continue
        assert any(matches_search(expression, *metric) for expression in searches), (
            f"nothing reads {metric}; alarms read {sorted(alarms, key=str)}, graphs {sorted(graphs, key=str)}"
        )
    runs_failed = [m for m in metrics if m[1] == "RunsFailed"]
    assert runs_failed and set(runs_failed) <= alarms  # the failed-run alarm reads what a failed run emits
