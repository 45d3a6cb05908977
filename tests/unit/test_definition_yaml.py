"""YAML definitions load with libyaml when PyYAML has it, the pure-Python loader otherwise; a faulty file
is described by the pure-Python loader's message, with its line and column, either way."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pennflow.workflow.definition import DefinitionError, load_definition, parse_definition

EXAMPLE = Path(__file__).parents[2] / "workflows" / "eeg-quality.yaml"
FAULTY = "name: x\nprocessors:\n  - id: a\n    type: data-source\n  - id: b\n    dependsOn: *nothing\n"

needs_libyaml = pytest.mark.skipif(not hasattr(yaml, "CSafeLoader"), reason="PyYAML built without libyaml")


@pytest.fixture
def loaders_used(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The loaders yaml.load is given, in order: libyaml's (CSafeLoader) or the pure-Python one
    (SafeLoader), whichever the loader given derives from (pennflow.workflow.loading adds limits)."""
    used: list[str] = []
    real_load = yaml.load

    def spy(stream, Loader):  # noqa: N803 (yaml's own argument name)
        used.append(next(c.__name__ for c in Loader.__mro__ if c.__name__ in ("CSafeLoader", "SafeLoader")))
        return real_load(stream, Loader=Loader)

    monkeypatch.setattr(yaml, "load", spy)
    return used


@needs_libyaml
def test_a_valid_file_is_parsed_once_by_libyaml(loaders_used: list[str]) -> None:
    workflow = load_definition(EXAMPLE)
    assert loaders_used == ["CSafeLoader"]
    assert workflow.name == "eeg-quality" and len(workflow.processors) == 6


def test_without_libyaml_the_pure_python_loader_gives_the_same_workflow(
    loaders_used: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with_libyaml = load_definition(EXAMPLE)
    monkeypatch.delattr(yaml, "CSafeLoader", raising=False)
    loaders_used.clear()
    assert load_definition(EXAMPLE) == with_libyaml
    assert loaders_used == ["SafeLoader"]


@needs_libyaml
def test_a_faulty_file_names_the_culprit_line_and_column(loaders_used: list[str]) -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_definition(FAULTY, "yaml", source="faulty.yaml")
    [fault] = caught.value.faults
    # libyaml would say only "found undefined alias": the pure-Python loader names it.
    assert (
        str(fault)
        == "workflow, field 'file': invalid YAML at line 6, column 16: found undefined alias 'nothing'"
    )
    assert loaders_used == ["CSafeLoader", "SafeLoader"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: b: c\n", "invalid YAML at line 1, column 5: mapping values are not allowed here"),
        (
            "name: x\n\t- a\n",
            "invalid YAML at line 2, column 1: found character '\\t' that cannot start any token",
        ),
        ("{a: 1", "invalid YAML at line 1, column 6: expected ',' or '}', but got '<stream end>'"),
    ],
)
def test_yaml_faults_read_as_before(text: str, message: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_definition(text, "yaml")
    assert [f.message for f in caught.value.faults] == [message]


def test_yaml_tags_that_build_objects_are_refused() -> None:
    with pytest.raises(DefinitionError, match="could not determine a constructor"):
        parse_definition("name: !!python/object/apply:os.getcwd []\nprocessors: []\n", "yaml")
