"""Carrying out a plain Dockerfile's recipe on this machine: the image's files, a virtual environment.

``stage`` lays the image's files out once per commit under ``roots/<commit>/`` (each ``COPY`` and
``chmod`` followed in order, from the checkout), so ``/app/main.py`` in the image is
``<root>/app/main.py`` here. ``environment`` creates (or reuses) a virtual environment per commit,
interpreter and ``pip install`` arguments under ``venvs/<key>/``. Paths of the image in the command,
``ENV`` values and pip's arguments are rewritten to the staged root; paths inside the processor's own
scripts are not (the one difference a processor can see, besides the interpreter's version).
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pennflow.processors.dockerfile import Chmod, Copy, LocalRecipe

PIP_TIMEOUT_SECONDS = 1800
COMPLETE = ".pennflow-complete"  # written last: a venv without it is rebuilt


class StagingError(RuntimeError):
    """A COPY source is missing, or pip or chmod failed; the message names the Dockerfile line."""


@dataclass(frozen=True)
class PathMap:
    """Rewrites the image's absolute paths (the top-level folders the recipe created) to the staged root."""

    root: Path
    tops: tuple[str, ...]

    @classmethod
    def of(cls, recipe: LocalRecipe, root: Path) -> PathMap:
        made = [step.dest for step in recipe.steps if isinstance(step, Copy)] + list(recipe.workdirs)
        tops = sorted({path.parts[1] for path in made if len(path.parts) > 1}, key=len, reverse=True)
        return cls(root, tuple(tops))

    def path(self, path: PurePosixPath) -> Path:
        return self.root / str(path).lstrip("/")

    def text(self, text: str) -> str:
        if not self.tops:
            return text
        names = "|".join(re.escape(top) for top in self.tops)
        pattern = re.compile(rf"(?<![\w./-])/({names})(?=/|$|[^\w.-])")
        return pattern.sub(lambda match: f"{self.root}/{match.group(1)}", text)


@dataclass(frozen=True)
class Interpreter:
    executable: str
    version: str  # "3.11"


def interpreter_for(wanted: str | None, known: Path | None = None) -> Interpreter:
    """``python3.X`` of the image's tag when this machine has one that runs, else pennflow's own.

    ``known`` remembers each probe (by path and mtime): asking an interpreter (or a pyenv shim that
    has none) its version costs a few hundred milliseconds on every run otherwise."""
    if wanted and wanted != _version_of(sys.executable):
        candidate = shutil.which(f"python{wanted}")
        if candidate and _remembered_version(candidate, known) == wanted:
            return Interpreter(candidate, wanted)
    return Interpreter(sys.executable, _version_of(sys.executable) or "")


def _remembered_version(executable: str, known: Path | None) -> str | None:
    if known is None:
        return _version_of(executable)
    try:
        stamp = str(os.stat(executable).st_mtime_ns)
    except OSError:
        return None
    try:
        probes = json.loads(known.read_text())
    except (OSError, ValueError):
        probes = {}
    hit = probes.get(executable) if isinstance(probes, dict) else None
    if isinstance(hit, dict) and hit.get("mtime") == stamp:
        return hit.get("version")
    version = _version_of(executable)
    probes = probes if isinstance(probes, dict) else {}
    probes[executable] = {"mtime": stamp, "version": version}
    known.parent.mkdir(parents=True, exist_ok=True)
    known.write_text(json.dumps(probes))
    return version


def _version_of(executable: str) -> str | None:
    if executable == sys.executable:
        return f"{sys.version_info.major}.{sys.version_info.minor}"
    try:
        done = subprocess.run(
            [executable, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def stage(recipe: LocalRecipe, checkout: Path, roots: Path, commit: str) -> PathMap:
    """The image's files for this commit (laid out once; later runs reuse them)."""
    final = roots / commit
    if not final.is_dir():
        roots.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".stage-", dir=roots))
        try:
            _lay_out(recipe, checkout, PathMap.of(recipe, staging))
            if not final.is_dir():
                os.replace(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return PathMap.of(recipe, final)


def _lay_out(recipe: LocalRecipe, checkout: Path, paths: PathMap) -> None:
    for workdir in recipe.workdirs:
        paths.path(workdir).mkdir(parents=True, exist_ok=True)
    for step in recipe.steps:
        if isinstance(step, Copy):
            _copy(step, checkout, paths)
        elif isinstance(step, Chmod):
            args = [paths.text(arg) for arg in step.args]
            _run(["chmod", *args], paths.path(step.workdir), step.line, "chmod")


def _copy(step: Copy, checkout: Path, paths: PathMap) -> None:
    into_dir = step.into_dir
    dest = paths.path(step.dest)
    for source in step.sources:
        matches = (
            sorted(glob.glob(str(checkout / source))) if glob.has_magic(source) else [str(checkout / source)]
        )
        matches = [match for match in matches if os.path.lexists(match)]
        if not matches:
            raise StagingError(
                f"Dockerfile line {step.line}: COPY source {source!r} is not in the repository"
            )
        for match in map(Path, matches):
            if match.is_dir():
                shutil.copytree(match, dest, dirs_exist_ok=True, symlinks=True)
            else:
                target = dest / match.name if into_dir or dest.is_dir() else dest
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(match, target)


def environment(recipe: LocalRecipe, paths: PathMap, venvs: Path, commit: str, python: Interpreter) -> Path:
    """The virtual environment holding what the recipe's ``pip install`` steps install (made once)."""
    installs = recipe.pip_installs
    material = "\n".join([commit, python.executable, python.version, *(repr(step.args) for step in installs)])
    final = venvs / hashlib.sha256(material.encode()).hexdigest()[:16]
    if (final / COMPLETE).exists():
        return final
    shutil.rmtree(final, ignore_errors=True)  # left half-made by an interrupted run
    venvs.mkdir(parents=True, exist_ok=True)
    try:
        # Made at its final path: a venv records where it lives, so it cannot be moved into place.
        own_pip = importlib.util.find_spec("pip") is not None  # pip --python installs into any venv
        options = ["--without-pip"] if own_pip or not installs else []
        _run([python.executable, "-m", "venv", *options, str(final)], paths.root, 0, "venv")
        for step in installs:
            pip = (
                [sys.executable, "-m", "pip", "--python", str(final / "bin" / "python")]
                if own_pip
                else [
                    str(final / "bin" / "python"),
                    "-m",
                    "pip",
                ]
            )
            args = [paths.text(arg) for arg in step.args]
            _run(
                [*pip, "install", "--disable-pip-version-check", *args],
                paths.path(step.workdir),
                step.line,
                "pip",
            )
        (final / COMPLETE).write_text(material + "\n")
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise
    return final


def _run(argv: list[str], cwd: Path, line: int, what: str) -> None:
    cwd.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT_SECONDS,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise StagingError(f"Dockerfile line {line}: {what} could not run: {exc}") from None
    if done.returncode != 0:
        tail = [row for row in (done.stderr or done.stdout).splitlines() if row.strip()]
        where = f"Dockerfile line {line}: " if line else ""
        raise StagingError(f"{where}{what} failed: {tail[-1] if tail else f'exit code {done.returncode}'}")
