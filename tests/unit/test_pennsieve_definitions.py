"""Pennsieve's own definition shapes (tests/fixtures/pennsieve, sources in SOURCES.md) validate and compile."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from pennflow.cli import app
from pennflow.workflow.asl import MAX_STATE_NAME, CompileError, compile_workflow
from pennflow.workflow.definition import DefinitionError, TargetType, load_definition, validate_definition
from pennflow.workflow.fields import PROCESSOR_FIELDS, WORKFLOW_FIELDS, json_schema
from pennflow.workflow.limits import MAX_NAME, is_name
from pennflow.workflow.pennsieve_shapes import fargate_for_lambda, resource_name

FIXTURES = Path(__file__).parents[1] / "fixtures" / "pennsieve"
ALL = sorted(FIXTURES.glob("*.json"))


def test_there_are_thirteen_shapes_each_with_a_source():
    sources = (FIXTURES / "SOURCES.md").read_text()
    assert len(ALL) == 13
    for path in ALL:
        assert f"`{path.name}`" in sources


def _state_names(states: dict) -> list[str]:
    names = []
    for name, body in states.items():
        names.append(name)
        for branch in body.get("Branches", []):
            names += _state_names(branch["States"])
        if "ItemProcessor" in body:
            names += _state_names(body["ItemProcessor"]["States"])
    return names


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_each_shape_validates_compiles_and_matches_the_schema(path):
    jsonschema.Draft202012Validator(json_schema()).validate(json.loads(path.read_text()))
    workflow = load_definition(path)
    assert is_name(workflow.name)
    assert all(is_name(p.id) for p in workflow.processors)
    assert len({p.id for p in workflow.processors}) == len(workflow.processors)
    assert load_definition(path).definition_hash() == workflow.definition_hash()  # deterministic
    if any(p.interactive for p in workflow.processors):  # a session: refused by the compiler by name
        with pytest.raises(CompileError, match="is interactive .* the node's `interactive` setting"):
            compile_workflow(workflow)
        return
    names = _state_names(compile_workflow(workflow)["States"])
    assert len(names) == len(set(names))
    assert all(len(n) <= MAX_STATE_NAME for n in names)


def test_display_names_are_kept_and_resource_names_derived():
    workflow = load_definition(FIXTURES / "builder-diamond.json")
    assert (workflow.name, workflow.display_name) == ("zarr-thumbnails", "Zarr thumbnails")
    convert = workflow.processor("node-1749650419876-a8b7c6d5e")
    assert convert.label == "node_1749650419876_a8b7c6d5e"
    assert (convert.cpu, convert.memory) == (4096, 8192)  # sent as text by the builder
    join = workflow.processor("node-1749650430000-z9y8x7w6v")
    assert join.dependencies == ("node-1749650419876-a8b7c6d5e", "node-1749650423456-f1g2h3i4j")
    assert any(n.startswith("position: ignored (layout only)") for n in workflow.notes)
    assert load_definition(FIXTURES / "build-python-env.json").display_name == (
        "Pennsieve - Build Python Environment"
    )


def test_id_less_processors_get_ids_from_their_source_and_dependency_objects_resolve():
    workflow = load_definition(FIXTURES / "create-dialog.json")
    assert [p.id for p in workflow.processors] == [
        "processor-pre-metadata",
        "processor-extract",
        "processor-post-metadata",
    ]
    assert workflow.processor("processor-post-metadata").dependencies == ("processor-extract",)
    assert workflow.processor("processor-pre-metadata").dependencies == ()  # a root: empty INPUT_DIR


def test_ids_that_reduce_to_the_same_name_stay_apart_in_order():
    workflow = load_definition(FIXTURES / "metadata-chain.json")
    assert [p.id for p in workflow.processors] == [
        "dataset-files",
        "pre-metadata",
        "pre-metadata-2",
        "post-metadata",
    ]
    assert workflow.processor("post-metadata").dependencies == ("pre-metadata", "pre-metadata-2")


def test_the_api_shape_is_read():
    workflow = load_definition(FIXTURES / "api-definition.json")
    features = workflow.processor("features")
    assert (features.cpu, features.memory) == (2048, 4096)  # from runtimeConfig
    assert features.default_params == {"WINDOW": "10", "BANDS": "delta,theta,alpha"}  # defaults win
    for field in ("uuid", "isActive", "visibility"):
        assert any(n.startswith(f"{field}: ignored") for n in workflow.notes), field
    (window,) = features.param_schema  # paramSchema is read as typed params
    assert (window.name, window.type.value, window.default) == ("WINDOW", "string", "30")


def test_both_dag_and_processors_is_a_fault():
    data = json.loads((FIXTURES / "api-definition.json").read_text())
    data["processors"] = data["dag"]
    with pytest.raises(DefinitionError, match="not both"):
        validate_definition(data)


def test_lambda_memory_is_the_functions_and_cpu_its_vcpu_share():
    workflow = load_definition(FIXTURES / "lambda-memory.json")
    assert (workflow.processor("small").cpu, workflow.processor("small").memory) == (256, 128)
    assert (workflow.processor("one-vcpu").cpu, workflow.processor("one-vcpu").memory) == (1024, 1769)
    assert not any("Fargate" in note for note in workflow.notes)
    assert fargate_for_lambda(10_240) == (8192, 16384)
    with pytest.raises(DefinitionError, match="not a Lambda memory size"):
        validate_definition(
            {"name": "x", "processors": [{"id": "a", "image": "i", "computeType": "lambda", "memory": 20000}]}
        )


def test_a_layer_target_without_layer_name_takes_it_from_the_run():
    workflow = load_definition(FIXTURES / "build-python-env.json")
    target = workflow.processor("environment-layer")
    assert target.target_type is TargetType.PERSISTENT_LAYER
    assert target.default_params == {"layerName": ""}
    assert any(n.startswith("layerName: not in defaultParams") for n in workflow.notes)


@pytest.mark.parametrize(
    ("entry", "where", "hint"),
    [
        ({"defaultParam": {}}, "defaultParam", "did you mean defaultParams?"),
        ({"layer": ["x"]}, "layer", "did you mean layers?"),
        ({"dependOn": ["s"]}, "dependOn", "did you mean dependsOn?"),
        ({"scatter": {"batchsize": 2}}, "scatter.batchsize", "did you mean batchSize?"),
        ({"dependsOn": [{"sourceURL": "https://x"}]}, "dependsOn.0.sourceURL", "did you mean sourceUrl?"),
    ],
)
def test_unknown_fields_name_the_closest_known_field_at_any_depth(entry, where, hint):
    data = {
        "name": "x",
        "processors": [{"id": "s", "type": "data-source"}, {"id": "a", "image": "i", **entry}],
    }
    with pytest.raises(DefinitionError) as info:
        validate_definition(data)
    assert any(f.field == where and hint in f.message for f in info.value.faults), info.value.faults
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(json_schema()).validate(data)


def test_a_top_level_typo_is_named_too():
    with pytest.raises(DefinitionError, match="descripton.*did you mean description"):
        validate_definition({"name": "x", "descripton": "d", "processors": [{"id": "a", "image": "i"}]})


def test_every_field_is_documented_in_the_format_reference():
    reference = (Path(__file__).parents[2] / "docs" / "WORKFLOW_FORMAT.md").read_text()
    for spec in (*WORKFLOW_FIELDS, *PROCESSOR_FIELDS):
        assert f"`{spec.name}`" in reference, spec.name


def test_schema_command_prints_the_schema():
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0
    assert json.loads(result.output)["$defs"]["processor"]["additionalProperties"] is False


def test_validate_lists_notes():
    result = CliRunner().invoke(app, ["validate", str(FIXTURES / "interactive-session.json")])
    assert result.exit_code == 0
    assert "interactive: ignored" not in result.output and "sessionType: ignored" not in result.output
    assert "note: processor 'notebook' is interactive (a notebook session)" in result.output


@given(st.text(min_size=1, max_size=300))
def test_any_name_gives_a_stable_resource_name_within_limits(text):
    derived = resource_name(text, "workflow")
    assert is_name(derived) and len(derived) <= MAX_NAME
    assert resource_name(text, "workflow") == derived
