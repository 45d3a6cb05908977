"""A definition nested past what the parsers can read is a fault naming the problem, never a crash."""

from __future__ import annotations

import pytest

from pennflow.workflow.definition import (
    DefinitionError,
    parse_definition,
)


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_text_nested_past_the_parser_is_a_fault_not_a_recursion_error(fmt: str) -> None:
    with pytest.raises(DefinitionError) as refused:
        parse_definition("[" * 5000 + "]" * 5000, fmt)
    (fault,) = refused.value.faults
    assert fault.field == "file" and "nested too deeply" in fault.message
