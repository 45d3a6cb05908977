"""Definitions past the workflow core's limits are refused with a fault naming the limit, never a crash."""

from __future__ import annotations

import pytest

from pennflow.workflow.definition import (
    MAX_PROCESSORS,
    DefinitionError,
    parse_definition,
    validate_definition,
)


def chain(length: int) -> dict:
    processors = [{"id": "source", "type": "data-source"}]
    for i in range(length - 1):
        processors.append({"id": f"p{i}", "image": "w:1", "dependsOn": [processors[-1]["id"]]})
    return {"name": "big", "processors": processors}


def test_a_workflow_at_the_processor_limit_is_valid() -> None:
    assert len(validate_definition(chain(MAX_PROCESSORS)).processors) == MAX_PROCESSORS


@pytest.mark.parametrize("length", [MAX_PROCESSORS + 1, 4000])
def test_more_processors_are_one_fault_naming_the_limit(length: int) -> None:
    definition = chain(length)
    definition["processors"][5]["cpu"] = 3  # not reported: the count refuses the workflow first
    with pytest.raises(DefinitionError) as refused:
        validate_definition(definition)
    (fault,) = refused.value.faults
    assert (fault.processor, fault.field) == (None, "processors")
    assert fault.message == f"{length:,} processors; a workflow may have at most {MAX_PROCESSORS:,}"


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_text_nested_past_the_parser_is_a_fault_not_a_recursion_error(fmt: str) -> None:
    with pytest.raises(DefinitionError) as refused:
        parse_definition("[" * 5000 + "]" * 5000, fmt)
    (fault,) = refused.value.faults
    assert fault.field == "file" and "nested too deeply" in fault.message
