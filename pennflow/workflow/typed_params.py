"""Typed parameters: what a processor declares about its params (an app manifest's ``parameters``, a
definition's ``paramSchema``), and the one check a run's values pass before anything starts.

Values stay strings (they reach the processor as environment variables); the type says which strings
are valid. The local engine and the node's API both call ``typed_param_problems``, so a bad value is
refused the same way everywhere: each problem names the processor, the param and what was wrong.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pennflow.workflow.limits import PARAM_RE

TRUE_WORDS = frozenset({"true", "1", "yes"})
FALSE_WORDS = frozenset({"false", "0", "no"})


class ParamType(StrEnum):
    STRING = "string"
    NUMBER = "number"
    INTEGER = "integer"
    BOOLEAN = "boolean"


class ParamSpec(BaseModel):
    """One declared param. Pennsieve's shape: ``{name, type, description, default}``; ``required`` and
    ``enum`` are optional additions. A default of any YAML scalar is kept as the string it runs as."""

    # Built when first used, like the definition's models: importing the core builds no validator.
    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    name: str = Field(pattern=PARAM_RE.pattern, max_length=255)
    type: ParamType = ParamType.STRING
    description: str | None = None
    default: str | None = None
    required: bool = False
    enum: tuple[str, ...] | None = None

    @field_validator("default", mode="before")
    @classmethod
    def _scalar_as_text(cls, value: Any) -> Any:
        return as_param_text(value)

    @field_validator("enum", mode="before")
    @classmethod
    def _enum_as_text(cls, value: Any) -> Any:
        if isinstance(value, list):
            return tuple(as_param_text(item) for item in value)
        return value

    def problem(self, value: str) -> str | None:
        """Why ``value`` is not a valid value of this param, or None."""
        text = value.strip()
        if self.type is ParamType.INTEGER:
            try:
                int(text, 10)
            except ValueError:
                return f"{value!r} is not an integer"
        elif self.type is ParamType.NUMBER:
            try:
                number = float(text)
            except ValueError:
                return f"{value!r} is not a number"
            if not math.isfinite(number):
                return f"{value!r} is not a finite number"
        elif self.type is ParamType.BOOLEAN and text.lower() not in TRUE_WORDS | FALSE_WORDS:
            return f"{value!r} is not a boolean (true or false)"
        if self.enum is not None and value not in self.enum:
            return f"{value!r} is not one of {', '.join(repr(item) for item in self.enum)}"
        return None


def as_param_text(value: Any) -> Any:
    """A YAML scalar as the string a processor receives: ``true`` -> "true", ``256`` -> "256"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def merge_specs(first: Iterable[ParamSpec], then: Iterable[ParamSpec]) -> tuple[ParamSpec, ...]:
    """Specs by name; a later declaration (the definition's) replaces an earlier one (the manifest's)."""
    merged: dict[str, ParamSpec] = {spec.name: spec for spec in first}
    for spec in then:
        merged[spec.name] = spec
    return tuple(merged.values())


def declared_defaults(specs: Iterable[ParamSpec], params: Mapping[str, str]) -> dict[str, str]:
    """``params`` with each spec's default added where the params do not give the key."""
    out = {spec.name: spec.default for spec in specs if spec.default is not None}
    out.update(params)
    return out


@dataclass(frozen=True)
class ParamProblem:
    processor: str
    name: str
    message: str

    def __str__(self) -> str:
        return f"processor {self.processor!r}: param {self.name!r}: {self.message}"


def param_value_problems(
    processor_id: str, specs: Iterable[ParamSpec], values: Mapping[str, str]
) -> list[ParamProblem]:
    """Each bad or missing value of one processor's typed params."""
    problems = []
    for spec in specs:
        value = values.get(spec.name)
        if value is None or (value == "" and spec.type is not ParamType.STRING):
            if spec.required:
                problems.append(
                    ParamProblem(
                        processor_id, spec.name, f"required ({spec.type.value}); pass it with the run"
                    )
                )
            continue
        why = spec.problem(value)
        if why:
            problems.append(ParamProblem(processor_id, spec.name, f"{why} ({spec.type.value})"))
    return problems
