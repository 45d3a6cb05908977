"""What a plain Python Dockerfile asks for, so a processor can run without a container runtime.

A Dockerfile is *plain* when every instruction is one pennflow can follow on this machine:
``FROM python:*`` (one stage), ``WORKDIR``, ``COPY`` (from the build context), ``RUN pip install ...``
(also ``pip3`` and ``python -m pip``), ``RUN chmod ...``, ``ENV``, ``CMD`` and ``ENTRYPOINT``; ``ARG``,
``LABEL``, ``EXPOSE`` and ``MAINTAINER`` change nothing a processor sees and are ignored. Anything
else (``RUN apt-get``, ``ADD``, a second ``FROM``, ``COPY --from``, ``SHELL``, ``USER``...) is refused
with the line it is on, since running without it would not be running what the image runs.

The interpretation is pure: ``interpret`` turns the text into a ``LocalRecipe``; the venv runner
(``pennflow.processors.venv``) carries it out.
"""

from __future__ import annotations

import io
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from dockerfile_parse import DockerfileParser

DOCKERFILE_NAME = "Dockerfile"
IGNORED = frozenset({"ARG", "LABEL", "EXPOSE", "MAINTAINER"})
PYTHON_BASE_RE = re.compile(
    r"^(?:docker\.io/)?(?:library/)?python(?::(?P<tag>[A-Za-z0-9_.-]+))?(?:@sha256:[0-9a-f]{64})?$"
)
PIP_PREFIXES = (("pip", "install"), ("pip3", "install"), ("python", "-m", "pip", "install"))
PIP_PREFIXES += (("python3", "-m", "pip", "install"),)
SHELL_OPERATORS = frozenset({"&&", "||", ";", "|", ">", ">>", "<", "&"})


class NotPlain(ValueError):
    """The Dockerfile holds an instruction pennflow cannot follow without building the image."""

    def __init__(self, line: int, instruction: str, why: str):
        self.line = line
        self.instruction = instruction
        self.why = why
        super().__init__(f"{DOCKERFILE_NAME} line {line}: {instruction!r} {why}")


@dataclass(frozen=True)
class Copy:
    sources: tuple[str, ...]  # relative to the build context (the checkout)
    dest: PurePosixPath  # absolute, in the image
    line: int
    into_dir: bool = False  # the destination is a folder (it ends with '/' or takes several sources)


@dataclass(frozen=True)
class PipInstall:
    args: tuple[str, ...]  # what follows ``pip install``
    workdir: PurePosixPath  # where it ran (relative args are relative to it)
    line: int


@dataclass(frozen=True)
class Chmod:
    args: tuple[str, ...]
    workdir: PurePosixPath
    line: int


@dataclass
class LocalRecipe:
    """The image's file system, environment and command, as instructions to follow in order."""

    base: str
    python_version: str | None  # "3.12" from python:3.12-slim, None when the tag names none
    workdir: PurePosixPath = PurePosixPath("/")
    env: dict[str, str] = field(default_factory=dict)
    steps: list[Copy | PipInstall | Chmod] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    workdirs: list[PurePosixPath] = field(default_factory=list)  # every WORKDIR, created in the image

    def command(self, override: list[str] | None = None) -> list[str]:
        """ENTRYPOINT + CMD, as Docker runs them; a definition's ``command`` replaces CMD."""
        return [*self.entrypoint, *(override if override is not None else self.cmd)]

    @property
    def pip_installs(self) -> list[PipInstall]:
        return [step for step in self.steps if isinstance(step, PipInstall)]


def interpret(text: str) -> LocalRecipe:
    """The recipe of a plain Dockerfile; raises NotPlain naming the first instruction it cannot follow."""
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()), env_replace=False)
    recipe: LocalRecipe | None = None
    for item in parser.structure:
        kind = item["instruction"].upper()
        line = item["startline"] + 1
        value = item["value"].strip()
        shown = f"{kind} {value}"[:120]
        if kind in IGNORED or kind == "COMMENT":
            continue
        if kind == "FROM":
            if recipe is not None:
                raise NotPlain(
                    line, shown, "starts a second stage: multi-stage builds need a container runtime"
                )
            recipe = _base(value, line, shown)
            continue
        if recipe is None:
            raise NotPlain(line, shown, "comes before FROM")
        _follow(recipe, kind, value, line, shown)
    if recipe is None:
        raise NotPlain(1, "", "the Dockerfile has no FROM")
    if not recipe.command():
        raise NotPlain(
            len(text.splitlines()) or 1, "CMD", "is missing: neither CMD nor ENTRYPOINT says what runs"
        )
    return recipe


def _base(value: str, line: int, shown: str) -> LocalRecipe:
    image = value.split()[0] if value.split() else ""
    if value.split()[1:2] and value.split()[1].upper() != "AS" or image.startswith("--"):
        raise NotPlain(line, shown, "uses FROM options pennflow cannot follow")
    match = PYTHON_BASE_RE.match(image)
    if match is None:
        raise NotPlain(
            line, shown, "is not a python:* base image, so the image's system cannot be reproduced"
        )
    version = re.match(r"^(\d+\.\d+)", match.group("tag") or "")
    return LocalRecipe(base=image, python_version=version.group(1) if version else None)


def _follow(recipe: LocalRecipe, kind: str, value: str, line: int, shown: str) -> None:
    if kind == "WORKDIR":
        recipe.workdir = _absolute(recipe, _expand(recipe, value.strip("\"'")))
        recipe.workdirs.append(recipe.workdir)
    elif kind == "ENV":
        recipe.env.update({key: _expand(recipe, val) for key, val in _env_pairs(value, line, shown)})
    elif kind == "COPY":
        recipe.steps.append(_copy(recipe, value, line, shown))
    elif kind == "RUN":
        recipe.steps.append(_run(recipe, value, line, shown))
    elif kind in ("CMD", "ENTRYPOINT"):
        words = _exec_form(value)
        if kind == "ENTRYPOINT":
            recipe.entrypoint = words
            recipe.cmd = []  # as Docker does: an ENTRYPOINT resets an inherited CMD
        else:
            recipe.cmd = words
    else:
        raise NotPlain(line, shown, "cannot be followed without a container runtime")


def _env_pairs(value: str, line: int, shown: str) -> list[tuple[str, str]]:
    words = shlex.split(value, posix=True)
    if words and "=" not in words[0]:
        return [(words[0], value.split(None, 1)[1] if len(words) > 1 else "")]  # the legacy ENV KEY VALUE
    pairs = []
    for word in words:
        key, sep, val = word.partition("=")
        if not sep:
            raise NotPlain(line, shown, f"has {word!r}, which is not KEY=VALUE")
        pairs.append((key, val))
    return pairs


def _copy(recipe: LocalRecipe, value: str, line: int, shown: str) -> Copy:
    words = _exec_form(value) if value.startswith("[") else shlex.split(value)
    flags = [word for word in words if word.startswith("--")]
    for flag in flags:
        if not flag.startswith(("--chown", "--chmod", "--link")):
            raise NotPlain(line, shown, f"uses {flag.split('=')[0]}, which needs a container runtime")
    words = [word for word in words if not word.startswith("--")]
    if len(words) < 2:
        raise NotPlain(line, shown, "needs a source and a destination")
    *sources, dest = words
    for source in sources:
        parts = PurePosixPath(source).parts
        if source.startswith("/") or ".." in parts or "://" in source:
            raise NotPlain(line, shown, f"copies {source!r}, which is outside the repository")
    target = _absolute(recipe, _expand(recipe, dest))
    return Copy(tuple(sources), target, line, into_dir=dest.endswith("/") or len(sources) > 1)


def _run(recipe: LocalRecipe, value: str, line: int, shown: str) -> PipInstall | Chmod:
    try:
        words = _exec_form(value) if value.startswith("[") else shlex.split(value)
    except ValueError:
        raise NotPlain(line, shown, "cannot be read as a command") from None
    if any(word in SHELL_OPERATORS for word in words) or any(ch in value for ch in "`$"):
        raise NotPlain(
            line, shown, "is a shell script; only 'pip install ...' and 'chmod ...' can be followed"
        )
    for prefix in PIP_PREFIXES:
        if tuple(words[: len(prefix)]) == prefix:
            return PipInstall(tuple(words[len(prefix) :]), recipe.workdir, line)
    if words[:1] == ["chmod"]:
        return Chmod(tuple(words[1:]), recipe.workdir, line)
    raise NotPlain(
        line, shown, "cannot be followed without a container runtime (only 'pip install' and 'chmod' can)"
    )


def _exec_form(value: str) -> list[str]:
    """``["python", "main.py"]`` as is; the shell form runs under ``/bin/sh -c``, as Docker runs it."""
    if value.startswith("["):
        try:
            words = json.loads(value)
        except json.JSONDecodeError:
            words = None
        if isinstance(words, list) and all(isinstance(word, str) for word in words):
            return words
    return ["/bin/sh", "-c", value] if value else []


def _absolute(recipe: LocalRecipe, path: str) -> PurePosixPath:
    return PurePosixPath(path) if path.startswith("/") else recipe.workdir / path


def _expand(recipe: LocalRecipe, value: str) -> str:
    """``$KEY`` and ``${KEY}`` of an earlier ENV, as Docker substitutes them; others are kept."""

    def replace(match: re.Match[str]) -> str:
        key = match.group(1) or match.group(2)
        return recipe.env.get(key, match.group(0))

    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", replace, value)
