"""app.yml, typed params and the plain-Dockerfile reading: the pure parts of processors from source."""

from __future__ import annotations

import pytest

from pennflow.processors.checkout import parse_source
from pennflow.processors.dockerfile import NotPlain, interpret
from pennflow.processors.manifest import ManifestError, parse_manifest
from pennflow.workflow.contract import run_parameters, typed_param_problems
from pennflow.workflow.definition import DefinitionError, parse_definition
from pennflow.workflow.typed_params import ParamSpec

# The shape of a Pennsieve processor's app.yml (its repository's root).
PENNSIEVE_APP_YML = """\
# yaml-language-server: $schema=https://app.pennsieve.io/static/schemas/app-manifest.v1.json
schemaVersion: '1.0'
name: Thumbnail Generator
description: generates a thumbnail for the pennsieve assets from a ome.zarr file
applicationType: processor
categories:
  - Visualization
runtime:
  computeTypes:
    - standard
resources:
  cpu: 4096
  memory: 30720
parameters:
  - name: THUMBNAIL_SIZE
    type: number
    description: width and height of thumbnail. square
    default: 256
"""


def test_pennsieves_manifest_shape_is_read():
    manifest = parse_manifest(PENNSIEVE_APP_YML)
    assert manifest.name == "Thumbnail Generator"
    assert [kind.value for kind in manifest.runtime.compute_types] == ["standard"]
    assert (manifest.resources.cpu, manifest.resources.memory) == (4096, 30720)
    (size,) = manifest.parameters
    assert (size.name, size.type.value, size.default) == ("THUMBNAIL_SIZE", "number", "256")
    assert manifest.document()["parameters"][0]["default"] == "256"


def test_every_manifest_fault_is_named_with_its_place():
    text = """\
runtime:
  computeTypes: [standard, quantum]
resources: {cpu: lots}
parameters:
  - {name: 1BAD, type: string}
  - {name: N, type: decimal}
  - {name: OK, type: integer, default: "x"}
"""
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text)
    faults = caught.value.faults
    assert any(f.startswith("runtime.computeTypes[1]: 'quantum' is not one of") for f in faults)
    assert any(f.startswith("resources.cpu:") for f in faults)
    assert "parameters[0].name: '1BAD' is not a valid environment variable name" in faults
    assert any(f.startswith("parameters[1].type: 'decimal' is not one of") for f in faults)


def test_a_default_that_is_not_its_type_is_a_manifest_fault():
    with pytest.raises(ManifestError, match=r"parameters\[0\].default: 'x' is not an integer"):
        parse_manifest("parameters:\n  - {name: N, type: integer, default: x}\n")


def test_a_manifest_that_is_not_yaml_names_the_line():
    with pytest.raises(ManifestError, match="line 2"):
        parse_manifest("name: a\n  bad: [\n")


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        ("integer", ["3", "-12", " 7 "], ["3.5", "x", ""]),
        ("number", ["3", "2.5e3", "-0.1"], ["nan", "inf", "three"]),
        ("boolean", ["true", "False", "1", "no"], ["maybe", "2"]),
        ("string", ["", "anything"], []),
    ],
)
def test_typed_values(kind, good, bad):
    spec = ParamSpec(name="P", type=kind)
    assert [v for v in good if spec.problem(v)] == []
    assert [v for v in bad if spec.problem(v) is None and v != ""] == []


def test_definition_param_schema_defaults_apply_and_values_are_checked():
    workflow = parse_definition(
        """
name: w
processors:
  - id: a
    command: ["true"]
    defaultParams: {LEVEL: "2"}
    paramSchema:
      - {name: LEVEL, type: integer}
      - {name: RATE, type: number, default: 0.5}
      - {name: NAME, type: string, required: true}
      - {name: COLOR, type: string, enum: [red, blue], default: red}
"""
    )
    params = run_parameters(workflow, {"RATE": "fast", "COLOR": "green"})
    assert params["a"] == {"LEVEL": "2", "RATE": "fast", "COLOR": "green"}
    problems = [str(p) for p in typed_param_problems(workflow, params)]
    assert problems == [
        "processor 'a': param 'RATE': 'fast' is not a number (number)",
        "processor 'a': param 'NAME': required (string); pass it with the run",
        "processor 'a': param 'COLOR': 'green' is not one of 'red', 'blue' (string)",
    ]
    fixed = run_parameters(workflow, {"NAME": "x"})  # a typed param without a default is accepted
    assert typed_param_problems(workflow, fixed) == []


def test_a_definition_whose_defaults_break_its_own_schema_is_refused_at_validate():
    with pytest.raises(DefinitionError) as caught:
        parse_definition(
            """
name: w
processors:
  - id: a
    command: ["true"]
    defaultParams: {LEVEL: high}
    paramSchema: [{name: LEVEL, type: integer}, {name: RUN_ID, type: string}]
"""
        )
    messages = [str(f) for f in caught.value.faults]
    assert (
        "processor 'a', field 'paramSchema.LEVEL': defaultParams: 'high' is not an integer (integer)"
        in messages
    )
    assert "processor 'a', field 'paramSchema.RUN_ID': reserved by the processor contract" in messages


def test_plain_dockerfile_is_read_in_order():
    recipe = interpret(
        """\
FROM python:3.12-slim AS run
WORKDIR /app
COPY requirements.txt .
RUN python -m pip install --no-cache-dir -r requirements.txt
COPY . .
RUN chmod +x run.sh
ENV MODE fast
ENTRYPOINT ["python"]
CMD main.py --verbose
"""
    )
    assert recipe.python_version == "3.12"
    assert recipe.env == {"MODE": "fast"}
    assert recipe.pip_installs[0].args == ("--no-cache-dir", "-r", "requirements.txt")
    assert recipe.command() == ["python", "/bin/sh", "-c", "main.py --verbose"]
    assert recipe.command(["other.py"]) == ["python", "other.py"]


@pytest.mark.parametrize(
    ("text", "line", "why"),
    [
        ("FROM ubuntu:22.04\nCMD x\n", 1, "is not a python:* base image"),
        ("FROM python:3.12\nRUN apt-get install -y gcc\nCMD x\n", 2, "cannot be followed"),
        ("FROM python:3.12\nRUN pip install a && rm -rf /tmp\nCMD x\n", 2, "is a shell script"),
        ("FROM python:3.12\nADD https://x/y /y\nCMD x\n", 2, "cannot be followed"),
        ("FROM python:3.12 AS b\nFROM python:3.12\nCMD x\n", 2, "second stage"),
        ("FROM python:3.12\nCOPY --from=b /x /x\nCMD x\n", 2, "uses --from"),
        ("FROM python:3.12\nCOPY ../secret /x\nCMD x\n", 2, "outside the repository"),
        ("FROM python:3.12\nWORKDIR /app\n", 2, "is missing"),
    ],
)
def test_what_is_not_plain_is_named_with_its_line(text, line, why):
    with pytest.raises(NotPlain) as caught:
        interpret(text)
    assert caught.value.line == line
    assert why in str(caught.value)


def test_source_references():
    assert str(parse_source("https://github.com/org/repo@v1.2")) == "https://github.com/org/repo@v1.2"
    assert parse_source("git@github.com:org/repo.git@v1").url == "git@github.com:org/repo.git"
    for bad in ("https://github.com/org/repo", "git@github.com:org/repo.git", "x@"):
        with pytest.raises(ValueError, match="is not URL@TAG"):
            parse_source(bad)


def test_a_lambda_processor_longer_than_lambdas_15_minutes_is_refused_at_validate():
    text = """
name: w
processors:
  - id: quick
    image: example/quick:1
    computeType: lambda
    timeoutSeconds: {timeout}
"""
    assert parse_definition(text.format(timeout=900)).processor("quick").timeout_seconds == 900
    with pytest.raises(DefinitionError, match=r"timeoutSeconds': 901 is over Lambda's 900 seconds"):
        parse_definition(text.format(timeout=901))


def test_a_gpu_manifest_gives_its_gpu_count_to_a_processor_that_runs_as_gpu():
    from pennflow.processors.manifest import apply_manifest, parse_manifest
    from pennflow.workflow.definition import Processor

    manifest = parse_manifest("runtime: {computeTypes: [gpu, standard]}\nresources: {gpus: 2}\n")
    as_gpu = apply_manifest(Processor(id="a", source_url="https://h/r", tag="v1"), manifest)
    as_standard = apply_manifest(
        Processor.model_validate(
            {"id": "a", "sourceUrl": "https://h/r", "tag": "v1", "computeType": "standard"}
        ),
        manifest,
    )
    assert (as_gpu.compute_type.value, as_gpu.gpu_count) == ("gpu", 2)
    assert (as_standard.compute_type.value, as_standard.gpus, as_standard.gpu_count) == ("standard", None, 0)


def test_a_manifest_asking_for_more_gpus_than_any_instance_has_is_refused():
    from pennflow.processors.manifest import ManifestError, parse_manifest

    with pytest.raises(ManifestError, match=r"resources.gpus: Input should be less than or equal to 8"):
        parse_manifest("runtime: {computeTypes: [gpu]}\nresources: {gpus: 16}\n")
