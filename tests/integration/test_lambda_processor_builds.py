"""The build outcome of a processor's Lambda variant on moto: its digest recorded, an app.yml asking
for lambda without one FAILED with the build's reason, and a run's pin of the variant or its refusal."""

from __future__ import annotations

import boto3
import pytest

from pennflow.node.processor_builds import ENV_LAMBDA_DIGEST, ENV_LAMBDA_PROBLEM, manifest_key
from pennflow.processors.checkout import SourceRef
from pennflow.processors.registry import ProcessorsNotReady, ProcessorStatus, pin_images
from pennflow.workflow.definition import validate_definition
from tests.integration import api_support
from tests.integration.aws_fixtures import REGION
from tests.integration.test_processor_registry import BUCKET, DIGEST, TAG, URL, build_event, processors

api = api_support.api
mocked_aws = api_support.mocked_aws
LAMBDA_DIGEST = "sha256:" + "9c" * 32
NO_PYTHON = "the image has no python3 (3.8 or later), which the Lambda bootstrap needs"


def finish_with(record, variables: dict[str, str], app_yml: str | None = None):
    from pennflow.node.processor_builds import BuildOutputs, finish_build

    if app_yml is not None:
        boto3.client("s3", region_name=REGION).put_object(
            Bucket=BUCKET, Key=manifest_key(record), Body=app_yml
        )
    event = build_event(record, "SUCCEEDED")
    event["additional-information"]["exported-environment-variables"] += [
        {"name": name, "value": value} for name, value in variables.items()
    ]
    found = processors()
    return finish_build(event, registry=found.registry, outputs=BuildOutputs(found.builds.settings))


def registered():
    api_support.processors_api.configured_processors()
    return processors().registry


def lambda_workflow(compute_type: str = "lambda"):
    return validate_definition(
        {
            "name": "w",
            "processors": [{"id": "work", "sourceUrl": URL, "tag": TAG, "computeType": compute_type}],
        }
    )


def test_the_lambda_variant_is_recorded_and_a_lambda_run_pins_it(api):
    api("POST", "/processors", body={"sourceUrl": URL, "tag": TAG})
    record = registered().find(SourceRef(URL, TAG))
    ready = finish_with(
        record, {ENV_LAMBDA_DIGEST: LAMBDA_DIGEST}, "runtime: {computeTypes: [standard, lambda]}\n"
    )
    assert ready.status is ProcessorStatus.READY and ready.lambda_image_digest == LAMBDA_DIGEST
    repository = api_support.ENVIRONMENT["PROCESSOR_REPOSITORY_URI"]
    _, pins = pin_images(lambda_workflow(), registered())
    assert pins == {"work": f"{repository}@{LAMBDA_DIGEST}"}
    _, pins = pin_images(lambda_workflow("standard"), registered())
    assert pins == {"work": f"{repository}@{DIGEST}"}  # the same tag on ECS runs the plain image


def test_an_app_that_asks_for_lambda_fails_its_build_without_the_variant(api):
    api("POST", "/processors", body={"sourceUrl": URL, "tag": TAG})
    record = registered().find(SourceRef(URL, TAG))
    failed = finish_with(record, {ENV_LAMBDA_PROBLEM: NO_PYTHON}, "runtime: {computeTypes: [lambda]}\n")
    assert failed.status is ProcessorStatus.FAILED
    assert failed.error == f"app.yml allows computeType lambda, but {NO_PYTHON}"


def test_a_standard_app_without_the_variant_is_ready_and_a_record_without_one_refuses_lambda_runs(api):
    api("POST", "/processors", body={"sourceUrl": URL, "tag": TAG})
    record = registered().find(SourceRef(URL, TAG))
    ready = finish_with(record, {ENV_LAMBDA_PROBLEM: NO_PYTHON})  # no app.yml: standard only
    assert ready.status is ProcessorStatus.READY and ready.lambda_problem == NO_PYTHON
    # a record whose manifest allows lambda but that has no variant (built before the node made them)
    older = ready.model_copy(
        update={"manifest": {"runtime": {"computeTypes": ["lambda"]}}, "lambda_problem": None}
    )
    registered().put(older, replacing=ready)
    with pytest.raises(ProcessorsNotReady) as refused:
        pin_images(lambda_workflow(), registered())
    assert refused.value.problems == {
        "work": f"{URL}@{TAG} has no Lambda image for computeType lambda: not built"
    }
