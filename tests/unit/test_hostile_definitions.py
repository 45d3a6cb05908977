"""Hostile definitions give exit 2 with a fault, never a traceback, a hang or a crash.

The corpus is built here, one generator per class of attack found by fuzzing; each class also has a
direct assertion on the fault it must produce.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pennflow.cli import app
from pennflow.workflow.asl import CompileError, compile_workflow
from pennflow.workflow.definition import (
    DefinitionError,
    load_definition,
    parse_definition,
    validate_definition,
)
from pennflow.workflow.limits import MAX_JSON_DEPTH
from pennflow.workflow.loading import MAX_ALIASES, MAX_FILE_BYTES

BASE = {
    "name": "wf",
    "processors": [{"id": "s", "type": "data-source"}, {"id": "a", "image": "i", "dependsOn": ["s"]}],
}


def with_processor(**fields) -> str:
    data = json.loads(json.dumps(BASE))
    data["processors"][1].update(fields)
    return json.dumps(data)


def nested_json(depth: int) -> str:
    return with_processor(defaultParams="NEST").replace('"NEST"', "[" * depth + "]" * depth)


def alias_bomb(levels: int) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 9)}]")
    return "\n".join(lines) + "\nname: bomb\nprocessors: *a" + str(levels - 1) + "\n"


# (file name, text, fragment the fault must contain)
CORPUS: list[tuple[str, str, str]] = [
    (
        "param-newline.json",
        with_processor(defaultParams={"FOO\n": "x"}),
        "not a valid environment variable name",
    ),
    (
        "param-space.json",
        with_processor(defaultParams={"FOO BAR": "x"}),
        "not a valid environment variable name",
    ),
    ("param-empty.json", with_processor(defaultParams={"": "x"}), "not a valid environment variable name"),
    ("layer-newline.json", with_processor(layers=["lay\n"]), "not a valid layer name"),
    ("layer-upper.json", with_processor(layers=["Lay"]), "not a valid layer name"),
    ("batch-index.json", with_processor(defaultParams={"BATCH_INDEX": "1"}), "reserved"),
    ("pythonpath.json", with_processor(defaultParams={"PYTHONPATH": "/x"}), "reserved"),
    ("session-token.json", with_processor(defaultParams={"SESSION_TOKEN": "t"}), "reserved"),
    ("input-dir-prefix.json", with_processor(defaultParams={"INPUT_DIR_X": "t"}), "reserved"),
    ("image-space.json", with_processor(image="my image"), "not a container image reference"),
    ("image-newline.json", with_processor(image="img:1\n"), "not a container image reference"),
    ("image-upper.json", with_processor(image="Repo/Image"), "not a container image reference"),
    ("image-long.json", with_processor(image="a" * 300), "not a container image reference"),
    ("image-bad-digest.json", with_processor(image="img@sha256:xyz"), "not a container image reference"),
    ("deep-json.json", nested_json(100_000), "nested too deeply"),
    ("deep-json-40.json", nested_json(MAX_JSON_DEPTH + 8), "nested too deeply"),
    ("deep-yaml.yaml", "name: wf\nprocessors: " + "[" * 50_000 + "]" * 50_000 + "\n", "nested too deeply"),
    (
        "deep-yaml-block.yaml",
        "name: wf\nx:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 60)),
        "nested",
    ),
    ("alias-bomb.yaml", alias_bomb(9), "aliases"),
    ("alias-recursive.yaml", "name: wf\nprocessors: &p [*p]\n", "nested too deeply"),
    ("duplicate-json.json", '{"name": "wf", "name": "other", "processors": []}', "duplicate key 'name'"),
    ("duplicate-json-deep.json", with_processor()[:-3] + ', "image": "j"}]}', "duplicate key 'image'"),
    (
        "duplicate-yaml.yaml",
        "name: wf\nprocessors:\n  - id: a\n    image: i\n    image: j\n",
        "duplicate key 'image'",
    ),
    ("dup-yaml-top.yaml", "name: a\nname: b\nprocessors: []\n", "duplicate key 'name'"),
    ("not-mapping.json", "[1, 2]", "top level must be a mapping"),
    ("null.yaml", "~\n", "top level must be a mapping"),
    ("scalar.yaml", "just text\n", "top level must be a mapping"),
    ("bad-json.json", '{"name": ', "invalid JSON"),
    ("bad-yaml.yaml", "name: [\n", "invalid YAML"),
    ("yaml-tag.yaml", "name: !!python/object:os.system ls\nprocessors: []\n", "invalid YAML"),
    (
        "non-string-key.yaml",
        "name: wf\nprocessors:\n  - id: a\n    image: i\n    defaultParams: {1: x}\n",
        "defaultParams",
    ),
    ("typo.json", with_processor(defaultParam={"K": "v"}), "did you mean defaultParams?"),
    ("typo-deep.json", with_processor(retry={"maxAttemps": 2}), "did you mean maxAttempts?"),
    ("cycle.json", with_processor(dependsOn=["a"]), "cannot depend on itself"),
    ("huge-cpu.json", with_processor(cpu="9" * 5000), "cpu"),
    ("negative-timeout.json", with_processor(timeoutSeconds=-1), "timeoutSeconds"),
    ("bool-memory.json", with_processor(memory=True), "memory"),
    ("nan.json", with_processor(retry={"backoffRate": float("nan")}), "backoffRate"),
    ("params-list.json", with_processor(defaultParams=["a"]), "defaultParams"),
    ("dep-object.json", with_processor(dependsOn=[{"sourceUrl": 5}]), "dependsOn"),
    ("gpu-count.json", with_processor(computeType="gpu", gpus="many"), "gpus"),
    (
        "layer-target-newline.json",
        json.dumps(
            {
                "name": "wf",
                "processors": [
                    {"id": "a", "image": "i"},
                    {
                        "id": "t",
                        "type": "data-target",
                        "targetType": "persistent-layer",
                        "dependsOn": ["a"],
                        "defaultParams": {"layerName": "lay\n"},
                    },
                ],
            }
        ),
        "not a valid layer name",
    ),
    ("no-processors.json", '{"name": "wf", "processors": []}', "no processors"),
    ("nul-bytes.yaml", "name: wf\x00\nprocessors: []\n", "invalid YAML"),
]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("name", "text", "fragment"), CORPUS, ids=[c[0] for c in CORPUS])
def test_each_hostile_file_is_a_fault_and_exit_2(tmp_path, name, text, fragment):
    path = _write(tmp_path, name, text)
    with pytest.raises(DefinitionError) as info:
        load_definition(path)
    assert any(fragment in str(f) for f in info.value.faults), info.value.faults
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output


def test_the_alias_limit_allows_ordinary_anchors():
    text = (
        "name: wf\nprocessors:\n  - {id: p1, image: i, layers: &l [a]}\n  - {id: p2, image: i, layers: *l}\n"
    )
    assert parse_definition(text).processor("p2").layers == ["a"]
    bomb = (
        "\n".join(f"a{i}: &a{i} x" for i in range(MAX_ALIASES + 1))
        + "\nl: ["
        + ", ".join(f"*a{i}" for i in range(MAX_ALIASES + 1))
        + "]\n"
    )
    with pytest.raises(DefinitionError, match="aliases"):
        parse_definition(bomb)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda tmp: (os.mkfifo(tmp / "fifo.yaml"), tmp / "fifo.yaml")[1], id="fifo"),
        pytest.param(lambda tmp: Path("/dev/zero"), id="dev-zero"),
        pytest.param(lambda tmp: tmp, id="directory"),
        pytest.param(lambda tmp: tmp / "missing.yaml", id="missing"),
        pytest.param(lambda tmp: _write(tmp, "big.yaml", "#" * (MAX_FILE_BYTES + 1)), id="too-big"),
        pytest.param(
            lambda tmp: (tmp / "latin1.yaml").write_bytes(b"name: \xe9\n") and tmp / "latin1.yaml",
            id="not-utf8",
        ),
    ],
)
def test_files_that_are_not_definitions_never_hang(tmp_path, make: Callable[[Path], Path]):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    path = make(tmp_path)
    with pytest.raises(DefinitionError) as info:
        load_definition(path)
    assert info.value.faults[0].field == "file"
    assert CliRunner().invoke(app, ["validate", str(path)]).exit_code == 2


def test_three_long_params_fail_compile_not_run_task():
    text = with_processor(defaultParams={f"P{i}": "v" * 4096 for i in range(3)})
    with pytest.raises(CompileError, match="8192"):
        compile_workflow(parse_definition(text, "json"))


def test_the_corpus_is_large_and_varied():
    assert len(CORPUS) >= 40 and len({c[0] for c in CORPUS}) == len(CORPUS)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.text(max_size=400))
def test_any_text_is_a_workflow_or_a_fault(text):
    for fmt in ("yaml", "json"):
        try:
            parse_definition(text, fmt)
        except DefinitionError as exc:
            assert exc.faults and all(f.message for f in exc.faults)


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=40,
    )
)
def test_any_processor_value_is_a_workflow_or_a_fault(value):
    data = {
        "name": "wf",
        "processors": [{"id": "a", "image": "i", "defaultParams": value, "dependsOn": value}],
    }
    try:
        workflow = validate_definition(data)
    except DefinitionError as exc:
        assert all(f.field and f.message for f in exc.faults)
    else:
        compile_workflow(workflow)


def test_yaml_and_json_agree_on_duplicate_free_documents():
    text = with_processor(defaultParams={"K": "v"})
    assert parse_definition(text, "json") == parse_definition(yaml.safe_dump(json.loads(text)), "yaml")
