"""Building a python-env layer, and the tree statistics every layer records.

Standard library only: the same code runs locally (pip in a subprocess with the engine's
interpreter) and inside the built-in ``layer_build`` processor's image on the compute node.

A python-env layer is ``pip install --target <layer>/lib/python3.<minor>/site-packages`` (Pennsieve's
layout, the minor version of the interpreter that builds it); the processor contract puts that folder
(and the older ``<layer>/python``) on PYTHONPATH, so layers built by Pennsieve or pennflow mix.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

EXCERPT_LINES = 20
PIP_TIMEOUT_SECONDS = 3600
MANIFEST_NAME = "layer-build.json"
CHUNK = 1 << 20


def site_packages_dir(layer_dir: Path, python_version: str) -> Path:
    """``<layer>/lib/python3.12/site-packages`` for Python 3.12.x (Pennsieve's python-env layout)."""
    major, minor = (python_version.split(".") + ["0", "0"])[:2]
    return Path(layer_dir) / "lib" / f"python{major}.{minor}" / "site-packages"


@dataclass(frozen=True)
class TreeStats:
    size_bytes: int
    file_count: int
    checksum: str  # sha256 over the sorted relative paths and each file's sha256


def tree_stats(root: Path) -> TreeStats:
    """Size, file count and checksum of a folder; symlinks count by their target text, never followed."""
    root = Path(root)
    entries: list[tuple[str, str, int]] = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = Path(folder, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                entries.append((rel, "symlink:" + os.readlink(path), 0))
            else:
                entries.append((rel, _file_sha256(path), path.stat().st_size))
    digest = hashlib.sha256()
    for rel, file_hash, _ in sorted(entries):
        digest.update(f"{rel}\0{file_hash}\n".encode())
    return TreeStats(sum(size for *_, size in entries), len(entries), digest.hexdigest())


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class BuildResult:
    ok: bool
    python_version: str
    packages: list[dict[str, str]] = field(default_factory=list)
    stats: TreeStats | None = None
    error: str | None = None  # the last lines of pip's output when the build failed

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BuildResult:
        data = json.loads(text)
        stats = data.pop("stats", None)
        return cls(**data, stats=TreeStats(**stats) if stats else None)


def build_python_env(
    requirements: Path,
    layer_dir: Path,
    *,
    python: str = sys.executable,
    extra_args: Sequence[str] = (),
    timeout: float = PIP_TIMEOUT_SECONDS,
) -> BuildResult:
    """Install ``requirements`` into the layer's site-packages; never raises for a pip failure."""
    version = _python_version(python)
    target = site_packages_dir(Path(layer_dir), version)
    target.mkdir(parents=True, exist_ok=True)
    argv = [
        python, "-m", "pip", "install",
        "--target", str(target),
        "--requirement", str(requirements),
        "--no-input", "--disable-pip-version-check", "--no-cache-dir", "--no-compile",
        *extra_args,
    ]  # fmt: skip
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return BuildResult(False, version, error=f"pip did not finish within {timeout:.0f} seconds")
    except OSError as exc:
        return BuildResult(False, version, error=f"cannot run {python!r}: {exc.strerror or exc}")
    if done.returncode != 0:
        return BuildResult(False, version, error=excerpt(done.stderr or done.stdout))
    return BuildResult(True, version, installed_packages(target), tree_stats(layer_dir))


def installed_packages(site_dir: Path) -> list[dict[str, str]]:
    """Name and version of every distribution installed in ``site_dir``, by name."""
    found = {
        dist.metadata["Name"]: dist.version
        for dist in metadata.distributions(path=[str(site_dir)])
        if dist.metadata["Name"]
    }
    return [{"name": name, "version": found[name]} for name in sorted(found, key=str.lower)]


def excerpt(text: str, lines: int = EXCERPT_LINES) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:]) or "pip failed without output"


def _python_version(python: str) -> str:
    if python == sys.executable:
        return platform.python_version()
    done = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "unknown"


# ------------------------------------------------------------------ the layer_build processor


def main(environ: dict[str, str] | None = None) -> int:
    """Entry point of the built-in ``layer_build`` processor (processor contract, DESIGN §3).

    Reads ``INPUT_DIR/requirements.txt``, installs into ``LAYER_TARGET_DIR`` (the new version's
    folder), writes the build manifest to ``OUTPUT_DIR/layer-build.json`` whatever the outcome, and
    exits 1 with pip's last lines on stderr when the build fails.
    """
    env = os.environ if environ is None else environ
    missing = [name for name in ("INPUT_DIR", "OUTPUT_DIR", "LAYER_TARGET_DIR") if not env.get(name)]
    if missing:
        print(f"layer_build: error: {', '.join(missing)} not set", file=sys.stderr)
        return 2
    requirements = Path(env["INPUT_DIR"]) / "requirements.txt"
    if not requirements.is_file():
        print(f"layer_build: error: {requirements} not found", file=sys.stderr)
        return 2
    result = build_python_env(requirements, Path(env["LAYER_TARGET_DIR"]))
    output = Path(env["OUTPUT_DIR"])
    output.mkdir(parents=True, exist_ok=True)
    (output / MANIFEST_NAME).write_text(result.to_json())
    if not result.ok:
        print(f"layer_build: error: pip failed:\n{result.error}", file=sys.stderr)
        return 1
    print(f"layer_build: installed {len(result.packages)} packages, {result.stats.file_count} files")
    return 0
