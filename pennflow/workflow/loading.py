"""Reading and parsing definition text with limits, so a hostile file is a fault, never a hang or a crash.

Limits: the file must be a regular file of at most ``MAX_FILE_BYTES`` (a FIFO or ``/dev/zero`` would
block or never end); the parsed document at most ``MAX_DEPTH`` levels deep and ``MAX_NODES`` values
once YAML aliases are expanded (an alias bomb is tiny as text and huge as data); YAML may use at most
``MAX_ALIASES`` aliases; a mapping may not repeat a key (JSON and YAML both keep only the last one,
so a repeated key silently drops a value the author wrote).
"""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Any

MAX_FILE_BYTES = 1_048_576
MAX_DEPTH = 32
MAX_NODES = 50_000
MAX_ALIASES = 64


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
        raise TextProblem(f"nested too deeply (at most {MAX_DEPTH} levels)") from None
    check_shape(data)
    return data


def check_shape(data: Any) -> None:
    """Depth and expanded size, walked iteratively (a recursive walk would itself overflow)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    nodes = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise TextProblem(f"the document expands to over {MAX_NODES} values (YAML aliases?)")
        if depth > MAX_DEPTH:
            raise TextProblem(f"nested too deeply (at most {MAX_DEPTH} levels)")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def _parse_json(text: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                raise TextProblem(f"duplicate key {key!r}")
            result[key] = value
        return result

    try:
        return json.loads(text, object_pairs_hook=pairs)
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
            if deepest > MAX_DEPTH:
                break  # enough to refuse
        else:
            depth = max(depth - 1, 0)
    return deepest


def _parse_yaml(text: str) -> Any:
    import yaml  # only YAML files pay for the parser (Lambdas receive JSON)

    if _flow_depth(text) > MAX_DEPTH:
        raise TextProblem(f"nested too deeply (at most {MAX_DEPTH} levels)")

    loader = None
    try:
        loader = _limited_loader(yaml)(text)  # the reader refuses control characters here already
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise TextProblem(f"invalid YAML{where}: {problem}") from None
    finally:
        if loader is not None:
            loader.dispose()


_LOADER: Any = None


def _limited_loader(yaml: Any) -> Any:
    global _LOADER
    if _LOADER is not None:
        return _LOADER

    class LimitedLoader(yaml.SafeLoader):
        aliases = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > MAX_ALIASES:
                    raise TextProblem(f"more than {MAX_ALIASES} YAML aliases")
            return super().compose_node(parent, index)

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

    _LOADER = LimitedLoader
    return _LOADER
