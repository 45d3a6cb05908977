"""AWS's evaluation of identity-based (and resource-based) policies, for the IAM test tier.

The rules are those of the IAM User Guide, "Policy evaluation logic": a request is denied unless a
statement allows it, and an explicit Deny beats any Allow. Statements match on Action/NotAction
(case-insensitive, `*` and `?` wildcards), Resource/NotResource (case-sensitive wildcards) and
every Condition operator (all must hold; keys are case-insensitive, values of one key are ORed).
Only the operators a policy of this node uses are implemented: anything else raises, so a new
operator cannot pass unevaluated.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

ContextValue = str | bool | Sequence[str]


@dataclass(frozen=True)
class Request:
    """One authorization request: an action on a resource, with the request's context keys."""

    action: str
    resource: str
    context: Mapping[str, ContextValue] = field(default_factory=dict)
    principal: str | None = None  # for resource-based policies

    def describe(self) -> str:
        keys = ", ".join(f"{k}={v}" for k, v in sorted(self.context.items()))
        return f"{self.action} on {self.resource}" + (f" [{keys}]" if keys else "")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str  # the deciding statement's Sid (or index), or "no statement allows it"


def evaluate(statements: Iterable[Mapping[str, Any]], request: Request) -> Decision:
    allowing = None
    for index, statement in enumerate(statements):
        if not statement_applies(statement, request):
            continue
        label = statement.get("Sid") or f"statement {index}"
        if statement["Effect"] == "Deny":
            return Decision(False, f"explicitly denied by {label}")
        allowing = allowing or label
    if allowing:
        return Decision(True, f"allowed by {allowing}")
    return Decision(False, "no statement allows it")


def statement_applies(statement: Mapping[str, Any], request: Request) -> bool:
    return (
        _matches_actions(statement, request.action)
        and _matches_resources(statement, request.resource)
        and _matches_principal(statement, request.principal)
        and conditions_hold(statement.get("Condition", {}), request.context)
    )


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _matches_actions(statement: Mapping[str, Any], action: str) -> bool:
    if "Action" in statement:
        return any(wildcard_match(p, action, ignore_case=True) for p in _listed(statement["Action"]))
    return not any(wildcard_match(p, action, ignore_case=True) for p in _listed(statement["NotAction"]))


def _matches_resources(statement: Mapping[str, Any], resource: str) -> bool:
    if "Resource" in statement:
        return any(wildcard_match(p, resource) for p in _listed(statement["Resource"]))
    if "NotResource" in statement:
        return not any(wildcard_match(p, resource) for p in _listed(statement["NotResource"]))
    return True  # resource-based policies name no resource: they are attached to it


def _matches_principal(statement: Mapping[str, Any], principal: str | None) -> bool:
    if "Principal" not in statement:
        return True  # identity-based: the principal is the policy's own role
    named = statement["Principal"]
    if named == "*":
        return True
    arns = [arn for values in named.values() for arn in _listed(values)]
    return principal is not None and any(arn == "*" or arn == principal for arn in arns)


@cache
def _pattern(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def wildcard_match(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    return _pattern(pattern, ignore_case).fullmatch(value) is not None


def _arn_like(pattern: str, value: str) -> bool:
    """ArnLike compares the six colon-delimited parts one by one: a wildcard never spans a colon
    of the first five (the resource part may hold colons of its own)."""
    pattern_parts, value_parts = pattern.split(":", 5), value.split(":", 5)
    if len(pattern_parts) != 6 or len(value_parts) != 6:
        return False
    return all(wildcard_match(p, v) for p, v in zip(pattern_parts, value_parts, strict=True))


def _string_equals(pattern: str, value: str) -> bool:
    return pattern == value


def _string_equals_ignore_case(pattern: str, value: str) -> bool:
    return pattern.lower() == value.lower()


def _bool(pattern: str, value: str) -> bool:
    return str(pattern).lower() == str(value).lower()


# Positive operators; "Not" variants are their negation (IAM User Guide, condition operators).
_MATCHERS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": _string_equals,
    "StringEqualsIgnoreCase": _string_equals_ignore_case,
    "StringLike": wildcard_match,
    "ArnEquals": _arn_like,  # ArnEquals and ArnLike behave identically (wildcards allowed in both)
    "ArnLike": _arn_like,
    "Bool": _bool,
}
_NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
}


def conditions_hold(conditions: Mapping[str, Mapping[str, Any]], context: Mapping[str, ContextValue]) -> bool:
    lowered = {key.lower(): value for key, value in context.items()}
    return all(
        _condition_holds(operator, key, _listed(expected), lowered.get(key.lower()))
        for operator, keys in conditions.items()
        for key, expected in keys.items()
    )


def _condition_holds(operator: str, key: str, expected: list[Any], present: ContextValue | None) -> bool:
    if operator == "Null":
        # "true": the key must be absent; "false": it must be present.
        return any((present is None) == _bool(str(value), "true") for value in expected)
    qualifier, _, base = operator.partition(":") if ":" in operator else ("", "", operator)
    if_exists = base.endswith("IfExists")
    base = base.removesuffix("IfExists")
    negated = base in _NEGATED
    matcher = _MATCHERS.get(_NEGATED.get(base, base))
    if matcher is None or qualifier not in ("", "ForAnyValue", "ForAllValues"):
        raise NotImplementedError(f"condition operator {operator} (on {key}) is not evaluated by this tier")
    if present is None:
        # A missing key: IfExists passes; ForAllValues passes on an empty set; a negated operator holds;
        # any other operator fails (IAM User Guide, "Condition keys absent from the request context").
        return if_exists or qualifier == "ForAllValues" or negated
    values = [str(v).lower() if isinstance(v, bool) else v for v in _listed(present)]

    def one_matches(value: str) -> bool:
        return any(matcher(str(pattern), value) for pattern in expected)

    if qualifier == "ForAllValues":
        return all(one_matches(v) != negated for v in values)
    if qualifier == "ForAnyValue":
        return any(one_matches(v) != negated for v in values)
    if len(values) != 1:
        raise ValueError(f"{key} is multivalued: {operator} needs ForAnyValue or ForAllValues")
    return one_matches(values[0]) != negated
