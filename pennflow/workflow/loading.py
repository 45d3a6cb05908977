"""Reading and parsing definition text with limits, so a hostile file is a fault, never a hang or a crash.

Limits: the file must be a regular file of at most ``MAX_FILE_BYTES`` (a FIFO or ``/dev/zero`` would
block or never end); the parsed document at most ``MAX_JSON_DEPTH`` levels of arrays and objects deep
(the limit the node's API puts on a request body, ``nesting_exceeds`` for both) and ``MAX_NODES``
values once YAML aliases are expanded (an alias bomb is tiny as text and huge as data); YAML may use at
most ``MAX_ALIASES`` aliases; a mapping may not repeat a key (JSON and YAML both keep only the last
one, so a repeated key silently drops a value the author wrote).

YAML is read by libyaml (``CSafeLoader``) when PyYAML has it, several times faster than the pure-Python
loader; a faulty file is read again by the pure-Python loader, whose messages name the culprit, and so
is a file whose block structure could nest deep enough to overflow libyaml's recursive composer.
"""

from __future__ import annotations

import contextlib
import json
import re
import stat
from pathlib import Path
from typing import Any, Literal

from pennflow.workflow.limits import MAX_JSON_DEPTH

MAX_FILE_BYTES = 1_048_576  # a definition file (1,000 processors take about 70 KB)
MAX_NODES = 50_000
MAX_ALIASES = 64
# Block nesting libyaml's composer may meet (it recurses in C, without Python's recursion limit).
FAST_YAML_MAX_INDENT = 500


class TextProblem(ValueError):
    """What is wrong with the file or its text, in one sentence."""


def read_definition_text(path: Path) -> str:
    try:
        info = path.stat()
    except OSError as exc:
        raise TextProblem(f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise TextProblem(f"{path} is not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise TextProblem(f"the file has {info.st_size} bytes, over the {MAX_FILE_BYTES}-byte limit")
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise TextProblem(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise TextProblem(f"the file is over the {MAX_FILE_BYTES}-byte limit")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TextProblem("not UTF-8 text") from None


def parse_text(text: str, fmt: str) -> Any:
    if len(text) > MAX_FILE_BYTES:
        raise TextProblem(f"the definition is over the {MAX_FILE_BYTES}-character limit")
    try:
        data = _parse_json(text) if fmt == "json" else _parse_yaml(text)
    except RecursionError:
        raise TextProblem(TOO_DEEP) from None
    check_shape(data)
    return data


TOO_DEEP = f"nested too deeply (at most {MAX_JSON_DEPTH} levels)"


def check_shape(data: Any) -> None:
    """Depth and expanded size (see ``shape_exceeds``)."""
    exceeded = shape_exceeds(data, MAX_JSON_DEPTH, MAX_NODES)
    if exceeded == "nodes":
        raise TextProblem(f"the document expands to over {MAX_NODES} values (YAML aliases?)")
    if exceeded == "depth":
        raise TextProblem(TOO_DEEP)


def nesting_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays and objects nest deeper than ``limit`` levels (without recursing itself)."""
    return shape_exceeds(value, limit) == "depth"


def shape_exceeds(
    value: Any, max_depth: int, max_nodes: int | None = None
) -> Literal["depth", "nodes"] | None:
    """Which limit ``value`` crosses: arrays and objects nested more than ``max_depth`` levels (the
    top one is level 1; scalars add none), or more than ``max_nodes`` values in all. Walked
    iteratively: a recursive walk would itself overflow."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    nodes = 0
    while pending:
        item, depth = pending.pop()
        nodes += 1
        if max_nodes is not None and nodes > max_nodes:
            return "nodes"
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > max_depth:
            return "depth"
        pending.extend((child, depth + 1) for child in children)
    return None


def no_duplicate_keys(items: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``' object_pairs_hook: a repeated key would silently keep only its last value."""
    result: dict[str, Any] = {}
    for key, value in items:
        if key in result:
            raise TextProblem(f"duplicate key {key!r}")
        result[key] = value
    return result


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise TextProblem(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


_FLOW_TOKENS = re.compile(r"[\[\]{}\"'\n]")


def _flow_depth(text: str) -> int:
    """The deepest nesting of YAML flow collections (``[``/``{``) outside quotes: PyYAML's parser
    recurses once per level and takes a second to overflow on 50,000 of them, so count first."""
    depth = deepest = 0
    quote = ""
    for match in _FLOW_TOKENS.finditer(text):
        char = match.group()
        if char == "\n":
            quote = ""  # an unclosed quote (an apostrophe in plain text) ends with its line
        elif quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                break  # enough to refuse
        else:
            depth = max(depth - 1, 0)
    return deepest


_BLOCK_PREFIX = re.compile(r"^[ \t?:-]*", re.M)


def _block_indent(text: str) -> int:
    """The longest run of indentation and block indicators (``-``, ``?``, ``:``) starting a line: each
    level of block nesting starts further right, so this bounds how deep block collections nest."""
    return max((len(match.group()) for match in _BLOCK_PREFIX.finditer(text)), default=0)


def _parse_yaml(text: str) -> Any:
    import yaml  # only YAML files pay for the parser (Lambdas receive JSON)

    if _flow_depth(text) > MAX_JSON_DEPTH:
        raise TextProblem(TOO_DEEP)
    if getattr(yaml, "CSafeLoader", None) is not None and _block_indent(text) <= FAST_YAML_MAX_INDENT:
        with contextlib.suppress(yaml.YAMLError):
            return _load(yaml, _limited_loader(yaml, fast=True), text)
        # A faulty file is parsed again by the pure-Python loader: its messages name the culprit.
    try:
        return _load(yaml, _limited_loader(yaml, fast=False), text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise TextProblem(f"invalid YAML{where}: {problem}") from None


def _load(yaml: Any, loader_class: Any, text: str) -> Any:
    # The pure-Python reader refuses control characters already when the loader is made.
    return yaml.load(text, Loader=loader_class)


_LOADERS: dict[bool, Any] = {}


def _limited_loader(yaml: Any, *, fast: bool) -> Any:
    """A safe loader (libyaml's with ``fast``) that counts aliases and refuses repeated keys."""
    if fast in _LOADERS:
        return _LOADERS[fast]

    class LimitedLoader(yaml.CSafeLoader if fast else yaml.SafeLoader):  # type: ignore[misc,name-defined]
        def get_single_data(self) -> Any:
            node = self.get_single_node()
            if node is None:
                return None
            _count_aliases(yaml, node)
            return self.construct_document(node)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, (str, int, float, bool)) and key in seen:
                    line = key_node.start_mark.line + 1
                    raise TextProblem(f"duplicate key {key!r} at line {line}")
                if isinstance(key, (str, int, float, bool)):
                    seen.add(key)
            return super().construct_mapping(node, deep=deep)

    LimitedLoader.__name__ = LimitedLoader.__qualname__ = "Limited" + LimitedLoader.__mro__[1].__name__
    _LOADERS[fast] = LimitedLoader
    return LimitedLoader


def _count_aliases(yaml: Any, root: Any) -> None:
    """A node met again in the composed document is an alias: refuse more than MAX_ALIASES of them
    (before constructing, so an alias bomb never expands)."""
    seen: set[int] = set()
    aliases = 0
    pending = [root]
    while pending:
        node = pending.pop()
        if id(node) in seen:
            aliases += 1
            if aliases > MAX_ALIASES:
                raise TextProblem(f"more than {MAX_ALIASES} YAML aliases")
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            pending.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                pending.extend((key, value))
