"""A step's key: the same key means the same processor computing on the same bytes, so a resumed run
may reuse the output of a step that succeeded with it.

The key is one sha256 over canonical JSON of:

- the processor's own definition fields, less those that change how it runs but not what it
  computes (label, cpu, memory, compute type, retry, timeout) and its defaultParams (its params
  below are what it ran with);
- its params after the run's overrides;
- what it runs: the image (a digest when ``pennflow.data.content_key`` resolves one), or its
  command with the content of every file the command names in the definition's folder (a fixed
  ``copy.py`` is a changed processor);
- its layers with their pinned versions and checksums;
- each dependency's step key and output content (``folder_hash``): everything downstream of a
  changed processor runs again, and so does everything downstream of an output that changed;
- for a processor without dependencies, the run's input (the ``--input`` folder's content, or the
  dataset and packages).

The output of a step is reused only when its key matches and its folder still hashes to what was
recorded when it succeeded (a result edited or deleted since is computed again).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pennflow.workflow.definition import Processor

STEP_KEY_VERSION = 1
_CHUNK = 1 << 20
# Fields that say how a step runs, not what it computes: changing them re-runs nothing.
RUN_ONLY_FIELDS = frozenset({"label", "cpu", "memory", "compute_type", "gpus", "retry", "timeout_seconds"})


# folder_hash of a folder holding nothing: what most short steps write, known without a walk.
EMPTY_FOLDER_HASH = hashlib.sha256().hexdigest()


def folder_hash(folder: Path) -> str | None:
    """sha256 over every file's relative path and content (a symlink's target as written), in path
    order; None when the folder does not exist."""
    try:  # every step's output is hashed when it succeeds: an empty one costs one listing
        with os.scandir(folder) as listing:
            if next(listing, None) is None:
                return EMPTY_FOLDER_HASH
    except (FileNotFoundError, NotADirectoryError):
        return None
    digest = hashlib.sha256()
    entries: list[tuple[str, Path]] = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in files:
            path = Path(root, name)
            entries.append((path.relative_to(folder).as_posix(), path))
    for rel, path in sorted(entries):
        digest.update(rel.encode() + b"\0")
        if path.is_symlink():
            digest.update(b"link:" + os.readlink(path).encode() + b"\0")
            continue
        file_digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda handle=handle: handle.read(_CHUNK), b""):
                file_digest.update(chunk)
        digest.update(file_digest.digest())
    return digest.hexdigest()


def command_identity(command: Sequence[str], definition_dir: Path) -> dict[str, Any]:
    """The command as written, and the content of each argument that is a file of the definition's
    folder (the script a ``[python, copy.py]`` runs)."""
    files: dict[str, str] = {}
    for arg in command:
        candidate = definition_dir / arg
        try:
            if arg and not os.path.isabs(arg) and candidate.is_file():
                files[arg] = hashlib.sha256(candidate.read_bytes()).hexdigest()
        except OSError:  # a name too long to be a path, unreadable: keyed as written
            continue
    return {"command": list(command), "files": files}


def definition_fields(processor: Processor) -> dict[str, Any]:
    fields = processor.model_dump(mode="json", exclude=set(RUN_ONLY_FIELDS | {"default_params"}))
    fields["layers"] = sorted(fields.get("layers") or [])
    return fields


def step_key(
    processor: Processor,
    *,
    params: Mapping[str, str],
    runs: Mapping[str, Any],
    layers: Sequence[Sequence[str | None]],
    upstream: Mapping[str, tuple[str | None, str | None]],
    run_input: Any = None,
) -> str:
    """The step's key. ``runs`` is what it runs (an image identity or ``command_identity``);
    ``layers`` its ``[name, version, checksum]`` pins; ``upstream`` maps each dependency to its
    (step key, output hash); ``run_input`` identifies the run's input (used only without dependencies)."""
    material = {
        "keyVersion": STEP_KEY_VERSION,
        "processor": definition_fields(processor),
        "params": dict(sorted(params.items())),
        "runs": runs,
        "layers": sorted([list(pin) for pin in layers], key=lambda pin: str(pin[0])),
        "upstream": {pid: list(upstream[pid]) for pid in sorted(upstream)},
        "input": None if processor.dependencies else run_input,
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def folder_bytes(folder: Path) -> int:
    """The bytes of the files under ``folder`` (links not followed); 0 where there is none."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue  # removed while we walked
    return total
