"""Every function invoked asynchronously keeps the invocations that fail: a DLQ that is encrypted and alarmed.

Which functions are invoked asynchronously is found, not listed: the EventBridge rules' targets in the
template, and the functions the API's ports invoke with ``InvocationType=Event``, run with the
synthesized API function's environment against a recording Lambda client.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from pennflow import aws
from stacks.entrypoint import PROJECT_ROOT

# The ports that invoke another function asynchronously, and how the API builds each one.
ASYNC_PORTS = {
    "AsyncLambda": ("run_launcher", "run_canceller"),
    "AsyncLayerJobs": ("layer_jobs",),
    "AsyncPrepare": ("node_for",),  # a preparation out of time hands its run on to prepare
    "AsyncSessions": ("session_handoff",),  # notebook sessions' start and stop (interactive nodes)
}


class RecordingLambda:
    def __init__(self) -> None:
        self.invoked: list[dict[str, Any]] = []

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        self.invoked.append(kwargs)
        return {"StatusCode": 202}


def functions_by(template: dict[str, Any], field: str) -> dict[str, str]:
    """Logical id of each Lambda function, by its FunctionName or Handler."""
    return {
        r["Properties"][field]: logical_id
        for logical_id, r in template["Resources"].items()
        if r["Type"] == "AWS::Lambda::Function" and isinstance(r["Properties"].get(field), str)
    }


def test_only_the_known_ports_invoke_asynchronously() -> None:
    """A new InvocationType=Event call site must be added to ASYNC_PORTS (and so to the test below)."""
    sites = {}
    for path in [
        *PROJECT_ROOT.joinpath("pennflow").rglob("*.py"),
        *PROJECT_ROOT.joinpath("lambdas").glob("*.py"),
    ]:
        text = path.read_text()
        for match in re.finditer(r'InvocationType="Event"', text):
            enclosing = re.findall(r"^class (\w+)", text[: match.start()], flags=re.MULTILINE)
            sites[str(path.relative_to(PROJECT_ROOT))] = enclosing[-1] if enclosing else None
    assert set(sites.values()) == set(ASYNC_PORTS), sites
    constructed = []
    for path in PROJECT_ROOT.joinpath("lambdas").glob("*.py"):
        constructed += re.findall(r"\b(AsyncLambda|AsyncLayerJobs|AsyncPrepare)\(", path.read_text())
    constructed += re.findall(r"\b(AsyncLayerJobs)\(", (PROJECT_ROOT / "pennflow/api/layers.py").read_text())
    constructed += re.findall(
        r"\b(AsyncSessions)\(", (PROJECT_ROOT / "pennflow/api/notebooks.py").read_text()
    )
    assert sorted(constructed) == sorted(name for name, ports in ASYNC_PORTS.items() for _ in ports)


def invoked_by_the_api(template: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """FunctionNames the API's asynchronous ports invoke, built from the API function's environment."""
    from lambdas import api
    from pennflow.api import layers as layers_api
    from pennflow.api import notebooks as notebooks_api
    from pennflow.layers.models import LayerRecord

    (api_function,) = [
        r for r in template["Resources"].values() if r["Properties"].get("Handler") == "lambdas.api.handler"
    ]
    for name, value in api_function["Properties"]["Environment"]["Variables"].items():
        monkeypatch.setenv(name, value if isinstance(value, str) else "token")  # ARNs and ids: any text
    recorder = RecordingLambda()
    monkeypatch.setattr(aws, "client", lambda service, region=None: recorder)
    factories = [
        api.settings,
        api.run_launcher,
        api.run_canceller,
        layers_api.layer_jobs,
        notebooks_api.session_settings,
        notebooks_api.session_handoff,
    ]
    for factory in factories:
        factory.cache_clear()
    try:
        api.run_launcher().launch("r-1")
        api.run_canceller().cancel("r-1")
        layers_api.layer_jobs().build(LayerRecord.model_construct(name="sci"), 1)
        if notebooks_api.session_settings()["function"]:  # a node with the interactive setting
            notebooks_api.session_handoff().send("start", "r-1")
    finally:
        for factory in factories:
            factory.cache_clear()
    assert {call["InvocationType"] for call in recorder.invoked} == {"Event"}
    return {call["FunctionName"] for call in recorder.invoked}


def targeted_by_rules(template: dict[str, Any]) -> set[str]:
    """Logical ids of the functions EventBridge rules invoke (asynchronously, as EventBridge does)."""
    functions = set(functions_by(template, "Handler").values())
    found = set()
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Events::Rule":
            for target in resource["Properties"]["Targets"]:
                arn = target["Arn"]
                if isinstance(arn, dict) and arn.get("Fn::GetAtt", [None])[0] in functions:
                    assert "DeadLetterConfig" in target, target  # events EventBridge cannot deliver
                    found.add(arn["Fn::GetAtt"][0])
    return found


def subscribed_to_topics(template: dict[str, Any]) -> set[str]:
    """Logical ids of the functions SNS topics deliver to (asynchronously; run ends to the webhook)."""
    found = set()
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::SNS::Subscription" and resource["Properties"]["Protocol"] == "lambda":
            assert "RedrivePolicy" in resource["Properties"], resource  # what SNS cannot hand over is kept
            found.add(resource["Properties"]["Endpoint"]["Fn::GetAtt"][0])
    return found


# Services that invoke a function asynchronously (API Gateway and SQS pollers invoke synchronously).
ASYNC_INVOKERS = {"events.amazonaws.com", "s3.amazonaws.com", "sns.amazonaws.com", "scheduler.amazonaws.com"}


def invoked_by_services(template: dict[str, Any]) -> set[str]:
    """Logical ids of the functions whose resource policy lets an asynchronous invoker call them."""
    found = set()
    for resource in template["Resources"].values():
        properties = resource["Properties"] if resource["Type"] == "AWS::Lambda::Permission" else {}
        if properties.get("Principal") in ASYNC_INVOKERS:
            found.add(properties["FunctionName"]["Fn::GetAtt"][0])
    return found


@pytest.mark.parametrize("synthesized", ["node", "variant"])
def test_every_asynchronously_invoked_function_has_an_encrypted_alarmed_dlq(
    synthesized: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    template = request.getfixturevalue(synthesized).json
    resources = template["Resources"]
    by_name = functions_by(template, "FunctionName")
    from_api = invoked_by_the_api(template, monkeypatch)
    assert from_api <= set(by_name), (from_api, sorted(by_name))
    asynchronous = (
        {by_name[name] for name in from_api} | targeted_by_rules(template) | subscribed_to_topics(template)
    )
    by_services = invoked_by_services(template)  # EventBridge's at least; S3, SNS or a schedule's too
    assert by_services and by_services <= asynchronous
    assert {by_name[n] for n in by_name if n.endswith(("_cancel", "_prepare", "_status", "_layer-jobs"))} <= (
        asynchronous
    )

    alarmed_queues = {
        a["Properties"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for a in resources.values()
        if a["Type"] == "AWS::CloudWatch::Alarm"
        and a["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
    }
    for logical_id in sorted(asynchronous):
        properties = resources[logical_id]["Properties"]
        (queue,) = failure_queues(resources, logical_id)
        assert resources[queue]["Type"] == "AWS::SQS::Queue", (properties["FunctionName"], queue)
        encryption = resources[queue]["Properties"]
        assert encryption.get("SqsManagedSseEnabled") or encryption.get("KmsMasterKeyId"), queue
        assert queue in alarmed_queues, (properties["FunctionName"], "its DLQ has no depth alarm")


def failure_queues(resources: dict[str, Any], logical_id: str) -> set[str]:
    """Where a function's failed asynchronous invocations go: its DLQ and any on-failure destination."""
    dead_letters = resources[logical_id]["Properties"].get("DeadLetterConfig", {}).get("TargetArn", {})
    queues = {dead_letters["Fn::GetAtt"][0]} if "Fn::GetAtt" in dead_letters else set()
    for config in resources.values():
        properties = config["Properties"] if config["Type"] == "AWS::Lambda::EventInvokeConfig" else {}
        on_failure = properties.get("DestinationConfig", {}).get("OnFailure")
        if on_failure and properties["FunctionName"] == {"Ref": logical_id}:
            queues.add(on_failure["Destination"]["Fn::GetAtt"][0])
    return queues
