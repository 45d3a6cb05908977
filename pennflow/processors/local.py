"""``sourceUrl@tag`` on this machine: clone the tag, read ``app.yml``, then build the image with the
container runtime, or (without one) follow a plain Dockerfile in a virtual environment.

``resolve`` returns the processor as the run sees it (the manifest's typed params and resources
added, ``image`` set to the built image) and, on the venv path, what to launch instead of a
container. Every refusal is a ``SourceProblem`` naming the processor and what stopped it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from pennflow.processors.checkout import Checkout, CheckoutCache, CheckoutError, SourceRef, key_of
from pennflow.processors.dockerfile import DOCKERFILE_NAME, LocalRecipe, NotPlain, interpret
from pennflow.processors.manifest import AppManifest, ManifestError, apply_manifest, read_manifest
from pennflow.processors.venv import Interpreter, PathMap, StagingError, environment, interpreter_for, stage
from pennflow.workflow.definition import Processor

BUILD_TIMEOUT_SECONDS = 3600
IMAGE_REPOSITORY = "pennflow-source"


class SourceProblem(RuntimeError):
    def __init__(self, processor_id: str, message: str):
        self.processor_id = processor_id
        super().__init__(f"processor {processor_id!r}: {message}")


@dataclass(frozen=True)
class VenvLaunch:
    """What runs instead of the image: the command in the staged files with the venv first on PATH."""

    venv: Path
    cwd: Path
    env: dict[str, str]  # the Dockerfile's ENV, paths rewritten to the staged root
    argv: list[str]
    interpreter: Interpreter
    base: str
    pin: str  # what ran, for the run's record: venv:<url>@<commit>
    root: Path | None = None  # the image's files staged here (read-only in the sandbox, with the venv)


@dataclass(frozen=True)
class LocalSource:
    processor: Processor
    checkout: Checkout
    manifest: AppManifest
    venv: VenvLaunch | None = None
    notes: list[str] = field(default_factory=list)


def source_of(processor: Processor, definition_dir: Path) -> SourceRef:
    if not processor.tag:
        raise SourceProblem(
            processor.id, f"sourceUrl {processor.source_url} has no tag: give the version to run"
        )
    url = processor.source_url or ""
    if "://" not in url and not _scp_like(url):
        path = Path(url).expanduser()
        url = str(path if path.is_absolute() else (definition_dir / path).resolve())
    return SourceRef(url, processor.tag)


def _scp_like(url: str) -> bool:
    """``git@github.com:org/repo.git``: git's ssh shorthand (a ':' before any '/')."""
    head = url.split("/", 1)[0]
    return ":" in head and not head.endswith(":")


def resolve(
    processor: Processor,
    *,
    definition_dir: Path,
    cache_root: Path,
    use_docker: bool,
    container: str = "docker",
) -> LocalSource:
    """The processor ready to run here (see the module's doc); raises SourceProblem. ``container`` is
    the container runtime's program (docker, or podman: the same build arguments)."""
    source = source_of(processor, definition_dir)
    try:
        checkout = CheckoutCache(cache_root).checkout(source)
    except CheckoutError as exc:
        raise SourceProblem(processor.id, f"cannot fetch {source}: {exc}") from None
    notes = [f"{source}: the remote could not be asked; using commit {checkout.short} seen before"]
    notes = notes if checkout.offline else []
    try:
        manifest = read_manifest(checkout.path)
    except ManifestError as exc:
        raise SourceProblem(processor.id, f"{source}: {exc}") from None
    try:
        resolved = apply_manifest(processor, manifest)
    except ValueError as exc:
        raise SourceProblem(processor.id, str(exc)) from None
    dockerfile = checkout.path / DOCKERFILE_NAME
    if not dockerfile.is_file():
        raise SourceProblem(processor.id, f"{source} has no {DOCKERFILE_NAME} at its root")
    if use_docker:
        image = build_image(processor.id, checkout, container)
        return LocalSource(resolved.model_copy(update={"image": image}), checkout, manifest, notes=notes)
    try:
        recipe = interpret(dockerfile.read_text(encoding="utf-8", errors="replace"))
    except NotPlain as exc:
        raise SourceProblem(
            processor.id,
            f"{source}: no container runtime here (docker info failed), and without one only a plain "
            f"Python Dockerfile can be followed: {exc}",
        ) from None
    launch = _venv_launch(processor, recipe, checkout, cache_root)
    notes.append(
        f"processor {processor.id!r}: not the image: {source} (commit {checkout.short}) runs from its files in "
        f"a virtual environment with Python {launch.interpreter.version} (the image is {recipe.base}), "
        "since no container runtime is available"
    )
    return LocalSource(resolved, checkout, manifest, launch, notes)


def _venv_launch(
    processor: Processor, recipe: LocalRecipe, checkout: Checkout, cache_root: Path
) -> VenvLaunch:
    try:
        paths: PathMap = stage(recipe, checkout.path, cache_root / "roots", checkout.commit)
        python = interpreter_for(recipe.python_version, cache_root / "interpreters.json")
        venv = environment(recipe, paths, cache_root / "venvs", checkout.commit, python)
    except StagingError as exc:
        raise SourceProblem(processor.id, f"{checkout.source}: {exc}") from None
    env = {key: paths.text(value) for key, value in recipe.env.items()}
    argv = [paths.text(arg) for arg in recipe.command(processor.command)]
    pin = f"venv:{checkout.source.url}@{checkout.commit}"
    return VenvLaunch(venv, paths.path(recipe.workdir), env, argv, python, recipe.base, pin, paths.root)


def image_tag(checkout: Checkout) -> str:
    return f"{IMAGE_REPOSITORY}/{key_of(checkout.source.url)}:{checkout.short}"


def build_image(processor_id: str, checkout: Checkout, container: str = "docker") -> str:
    """``docker build`` (or ``podman build``) of the checkout, once per commit (an image with the tag
    is reused)."""
    tag = image_tag(checkout)
    docker = shutil.which(container) or container
    if _docker([docker, "image", "inspect", "--format", "{{.Id}}", tag]).returncode == 0:
        return tag
    done = _docker(
        [docker, "build", "--quiet", "--tag", tag, "--file", DOCKERFILE_NAME, "."], cwd=checkout.path
    )
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit code {done.returncode}"
        raise SourceProblem(processor_id, f"{Path(docker).name} build of {checkout.source} failed: {last}")
    return tag


def _docker(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_SECONDS,
            env=dict(os.environ),
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return subprocess.CompletedProcess(argv, 1, "", str(exc))
