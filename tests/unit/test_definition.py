"""Definitions: loading, the Pennsieve format, and every fault named by processor and field."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pennflow.workflow.definition import (
    DefinitionError,
    ProcessorType,
    TargetType,
    load_definition,
    parse_definition,
    validate_definition,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "definitions"


def faults_of(text: str, fmt: str = "yaml") -> list[tuple]:
    with pytest.raises(DefinitionError) as info:
        parse_definition(textwrap.dedent(text), fmt)
    return [(f.processor, f.field, f.message) for f in info.value.faults]


def base(*extra: dict) -> dict:
    return {
        "name": "wf",
        "processors": [
            {"id": "src", "type": "data-source"},
            {"id": "step", "image": "img:1", "dependsOn": ["src"]},
            *extra,
        ],
    }


def faults_for(data: dict) -> list[tuple]:
    with pytest.raises(DefinitionError) as info:
        validate_definition(data)
    return [(f.processor, f.field, f.message) for f in info.value.faults]


def test_pennsieve_definition_is_accepted_unchanged():
    workflow = load_definition(FIXTURES / "pennsieve-workflow.json")
    assert workflow.name == "ephys-features"
    assert workflow.organization_id.startswith("N:organization:")
    convert = workflow.processor("convert")
    assert (convert.source_url, convert.tag, convert.compute_type.value) == (
        "https://github.com/Penn-I3H/ephys-convert",
        "v1.2.0",
        "standard",
    )
    assert workflow.processor("source").dependencies == ()
    target = workflow.processor("target")
    assert target.type is ProcessorType.DATA_TARGET
    assert target.target_type is TargetType.PENNSIEVE_DATASET


def test_yaml_and_json_of_the_same_workflow_are_equal_and_hash_the_same():
    from_yaml = load_definition(FIXTURES / "diamond.yaml")
    as_json = json.dumps(yaml.safe_load((FIXTURES / "diamond.yaml").read_text()))
    from_json = parse_definition(as_json, "json")
    assert from_yaml == from_json
    assert from_yaml.definition_hash() == from_json.definition_hash()
    assert from_yaml.processor("convert").retry.max_attempts == 2
    assert from_yaml.processor("band-power").scatter.batch_size == 10


def test_hash_changes_with_content():
    a = validate_definition(base())
    changed = base()
    changed["processors"][1]["defaultParams"] = {"K": "v"}
    assert a.definition_hash() != validate_definition(changed).definition_hash()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"id": "Bad_Id", "image": "i", "dependsOn": ["src"]}, None),  # derived: bad-id
        ({"id": "x" * 65, "image": "i", "dependsOn": ["src"]}, None),  # derived, cut, with a hash
        ({"id": 7, "image": "i", "dependsOn": ["src"]}, ("#3", "id", "valid string")),
        ({"id": "step", "image": "i", "dependsOn": ["src"]}, ("step", "id", "duplicate id")),
        ({"id": "a", "image": "i", "dependsOn": ["a"]}, ("a", "dependsOn", "cannot depend on itself")),
        ({"id": "a", "image": "i", "dependsOn": ["ghost"]}, ("a", "dependsOn", "unknown processor 'ghost'")),
        ({"id": "a", "image": "i"}, None),  # a root processor: empty INPUT_DIR
        ({"id": "a", "image": "i", "dependsOn": []}, None),
        ({"id": "t", "type": "data-target", "targetType": "s3"}, ("t", "dependsOn", "required")),
        (
            {"id": "a", "image": "i", "dependsOn": ["src"], "defaultParam": {"K": "v"}},
            ("a", "defaultParam", "unknown field; did you mean defaultParams?"),
        ),
        ({"id": "a", "image": "i", "dependOn": ["src"]}, ("a", "dependOn", "did you mean dependsOn?")),
        ({"id": "a", "image": "i", "layer": ["x"]}, ("a", "layer", "did you mean layers?")),
        (
            {"id": "a", "image": "i", "retry": {"maxAttemps": 3}},
            ("a", "retry.maxAttemps", "did you mean maxAttempts?"),
        ),
        (
            {"id": "a", "image": "i", "dependsOn": [{"sourceUrl": "https://nowhere"}]},
            ("a", "dependsOn", "no processor has sourceUrl"),
        ),
        ({"id": "a", "image": "i", "computeType": "gpu"}, None),
        ({"id": "a", "image": "i", "gpus": 2}, ("a", "gpus", "set computeType: gpu")),
        (
            {"id": "a", "image": "i", "computeType": "gpu", "gpus": 9},
            ("a", "gpus", "less than or equal to 8"),
        ),
        (
            {"id": "a", "image": "i", "computeType": "gpu", "gpus": 0},
            ("a", "gpus", "greater than or equal to 1"),
        ),
        (
            {"id": "a", "image": "i", "computeType": "gpu", "cpu": 64},
            ("a", "cpu", "a gpu task takes 128-196608"),
        ),
        (
            {
                "id": "t",
                "type": "data-target",
                "targetType": "s3",
                "dependsOn": ["step"],
                "computeType": "gpu",
            },
            ("t", "computeType", "gpu is for processors"),
        ),
        ({"id": "a", "image": "Not An Image!"}, ("a", "image", "not a container image reference")),
        (
            {"id": "a", "image": "i", "defaultParams": {"FOO\n": "x"}},
            ("a", "defaultParams.FOO\n", "not a valid environment variable name"),
        ),
        (
            {"id": "a", "image": "i", "defaultParams": {"BATCH_INDEX": "1"}},
            ("a", "defaultParams.BATCH_INDEX", "reserved"),
        ),
        (
            {"id": "a", "image": "i", "defaultParams": {"PYTHONPATH": "/x"}},
            ("a", "defaultParams.PYTHONPATH", "reserved"),
        ),
        (
            {"id": "a", "image": "i", "defaultParams": {"SESSION_TOKEN": "x"}},
            ("a", "defaultParams.SESSION_TOKEN", "reserved"),
        ),
        ({"id": "a", "image": "i", "memory": "lots"}, ("a", "memory", "valid integer")),
        (
            {"id": "s2", "type": "data-source", "dependsOn": ["src"]},
            ("s2", "dependsOn", "data source has no"),
        ),
        (
            {"id": "t", "type": "data-target", "dependsOn": ["step"]},
            ("t", "targetType", "required for a data target"),
        ),
        (
            {"id": "t", "type": "data-target", "targetType": "ftp", "dependsOn": ["step"]},
            ("t", "targetType", "'ftp' is not one of"),
        ),
        (
            {"id": "t", "type": "data-target", "targetType": "persistent-layer", "dependsOn": ["step"]},
            None,  # the run supplies layerName
        ),
        (
            {
                "id": "t",
                "type": "data-target",
                "targetType": "persistent-layer",
                "dependsOn": ["step"],
                "defaultParams": {"layerName": "lay\n"},
            },
            ("t", "defaultParams.layerName", "not a valid layer name"),
        ),
        (
            {"id": "a", "image": "i", "dependsOn": ["src"], "defaultParams": {"N": 3}},
            ("a", "defaultParams.N", "must be strings, got int 3"),
        ),
        (
            {"id": "a", "image": "i", "dependsOn": ["src"], "defaultParams": {"OUTPUT_DIR": "/x"}},
            ("a", "defaultParams.OUTPUT_DIR", "reserved"),
        ),
        (
            {"id": "a", "image": "i", "dependsOn": ["src"], "defaultParams": {"bad-name": "x"}},
            ("a", "defaultParams.bad-name", "not a valid environment variable name"),
        ),
        (
            {"id": "a", "image": "i", "dependsOn": ["src"], "cpu": 300},
            ("a", "cpu", "not a Fargate cpu value"),
        ),
        (
            {"id": "a", "image": "i", "dependsOn": ["src"], "cpu": 256, "memory": 4096},
            ("a", "memory", "not valid with cpu 256"),
        ),
        ({"id": "a", "dependsOn": ["src"]}, ("a", "image", "needs an image, a sourceUrl")),
        ({"id": "a", "sourceUrl": "https://x", "dependsOn": ["src"]}, None),  # latest version runs
        (
            {"id": "a", "image": "i", "dependsOn": ["src"], "layers": ["Bad"]},
            ("a", "layers", "not a valid layer"),
        ),
        (
            {"id": "a", "image": "i", "dependsOn": ["src"], "retry": {"maxAttempts": 99}},
            ("a", "retry.maxAttempts", "less than or equal to 10"),
        ),
        (
            {"id": "a", "image": "i", "dependsOn": ["src"], "computeType": "tpu"},
            ("a", "computeType", "'tpu'"),
        ),
        (
            {"id": "t", "type": "data-target", "targetType": "s3", "dependsOn": ["step"]},
            None,
        ),
    ],
)
def test_each_fault_names_processor_and_field(extra, expected):
    data = base(extra)
    if expected is None:
        validate_definition(data)
        return
    processor, field, fragment = expected
    faults = faults_for(data)
    assert any(p == processor and f == field and fragment in m for p, f, m in faults), faults


def test_dependency_on_a_data_target_is_rejected():
    data = base(
        {"id": "t", "type": "data-target", "targetType": "s3", "dependsOn": ["step"]},
        {"id": "after", "image": "i", "dependsOn": ["t"]},
    )
    assert ("after", "dependsOn", "'t' is a data target, which has no output") in faults_for(data)


def test_cycle_is_reported_with_its_path():
    data = base(
        {"id": "a", "image": "i", "dependsOn": ["src", "c"]},
        {"id": "b", "image": "i", "dependsOn": ["a"]},
        {"id": "c", "image": "i", "dependsOn": ["b"]},
    )
    cycles = [m for _, f, m in faults_for(data) if m.startswith("cycle:")]
    assert len(cycles) == 1
    path = cycles[0].removeprefix("cycle: ").split(" (")[0].split(" -> ")
    assert path[0] == path[-1] and set(path) == {"a", "b", "c"}


def test_every_fault_is_listed_not_just_the_first():
    faults = faults_of(
        """
        name: [not, a, name]
        processors:
          - id: a
            image: i
            dependsOn: [a]
            defaultParams: {N: 1, INPUT_DIR: x}
            cpu: 256
            memory: 8192
          - id: a
            image: i
          - id: t
            type: data-target
            targetType: persistent-layer
            dependOn: [a]
        """
    )
    fields = {(p, f) for p, f, _ in faults}
    assert {
        (None, "name"),
        ("a", "dependsOn"),
        ("a", "defaultParams.N"),
        ("a", "defaultParams.INPUT_DIR"),
        ("a", "memory"),
        ("a", "id"),
        ("t", "dependOn"),
        ("t", "dependsOn"),
    } <= fields


def test_empty_and_missing_processors():
    assert (None, "processors", "the workflow has no processors") in faults_of("name: wf\nprocessors: []\n")
    assert (None, "processors", "required: a list of processors") in faults_of("name: wf\n")


def test_yaml_error_has_line_number():
    faults = faults_of("name: wf\nprocessors:\n  - id: a\n   bad: [\n")
    assert len(faults) == 1 and faults[0][1] == "file"
    assert "invalid YAML at line 4" in faults[0][2]


def test_json_error_has_line_number():
    faults = faults_of('{\n  "name": "wf",\n  "processors": [,]\n}', "json")
    assert "invalid JSON at line 3" in faults[0][2]


def test_unreadable_file(tmp_path):
    with pytest.raises(DefinitionError) as info:
        load_definition(tmp_path / "missing.yaml")
    assert "cannot read" in info.value.faults[0].message
    binary = tmp_path / "x.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DefinitionError) as info:
        load_definition(binary)
    assert "UTF-8" in info.value.faults[0].message


def test_top_level_must_be_a_mapping():
    assert faults_of("- a\n- b\n")[0][2].startswith("the top level must be a mapping")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
processor_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=6) | json_values,
        "type": st.sampled_from(["data-source", "processor", "data-target", "x"]) | json_values,
        "dependsOn": st.lists(st.text(max_size=3), max_size=3) | json_values,
        "image": st.text(max_size=5) | json_values,
        "defaultParams": st.dictionaries(st.text(max_size=5), json_values, max_size=3),
        "cpu": st.sampled_from([256, 512, 1024, 3]) | json_values,
        "memory": st.integers(-1, 100_000) | json_values,
        "targetType": st.sampled_from([t.value for t in TargetType]) | json_values,
        "retry": json_values,
        "scatter": json_values,
        "layers": json_values,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "name": st.text(max_size=10) | json_values,
            "processors": st.lists(processor_like, max_size=5),
        },
    )
    | json_values
)
def test_any_input_gives_a_workflow_or_a_definition_error(data):
    """Never a stray exception, and every fault names a field and has a message."""
    try:
        validate_definition(data)
    except DefinitionError as exc:
        assert exc.faults
        for fault in exc.faults:
            assert fault.field and fault.message
            assert str(fault)


def test_a_gpu_processor_gets_one_gpu_unless_it_asks_for_more():
    one = validate_definition({"name": "wf", "processors": [{"id": "a", "image": "i", "computeType": "gpu"}]})
    four = validate_definition(
        {"name": "wf", "processors": [{"id": "a", "image": "i", "computeType": "gpu", "gpus": 4}]}
    )
    plain = validate_definition({"name": "wf", "processors": [{"id": "a", "image": "i"}]})
    assert [w.processors[0].gpu_count for w in (one, four, plain)] == [1, 4, 0]


def test_a_gpu_processor_is_not_held_to_fargate_sizes():
    # 4 vCPU with 15 GiB is no Fargate pair, and what a g4dn.xlarge leaves a task.
    workflow = validate_definition(
        {
            "name": "wf",
            "processors": [{"id": "a", "image": "i", "computeType": "gpu", "cpu": 4096, "memory": 15360}],
        }
    )
    assert (workflow.processors[0].cpu, workflow.processors[0].memory) == (4096, 15360)


def test_the_gpu_count_leaves_the_hash_of_a_definition_without_it_unchanged():
    plain = {"name": "wf", "processors": [{"id": "a", "image": "i", "computeType": "gpu"}]}
    counted = {"name": "wf", "processors": [{"id": "a", "image": "i", "computeType": "gpu", "gpus": 2}]}
    hashed = validate_definition(plain).canonical_json()
    assert '"gpus"' not in hashed
    assert validate_definition(counted).definition_hash() != validate_definition(plain).definition_hash()
