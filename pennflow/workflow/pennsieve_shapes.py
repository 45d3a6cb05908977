"""Reads the shapes Pennsieve writes into pennflow's canonical definition, with a note for each liberty taken.

Pennsieve's web app, API and repositories write definitions that differ from pennflow's canonical form:
display names as workflow names, builder-generated or missing processor ids, ``dependsOn`` entries as
``{"sourceUrl": ...}`` objects, cpu/memory as text, Lambda memory sizes (kept: a lambda processor runs as a Lambda function), ``computeType: null``, and the
API's ``dag`` (instead of ``processors``) with ``runtimeConfig``/``resolvedParams``. ``normalize``
rewrites them deterministically; it also checks every key against the field table (``fields.py``).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pennflow.workflow.fields import PROCESSOR_FIELDS, WORKFLOW_FIELDS, check_fields
from pennflow.workflow.limits import (
    FARGATE_MEMORY,
    LAMBDA_MB_PER_VCPU,
    LAMBDA_MEMORY,
    LAMBDA_TIMEOUT_SECONDS,
    MAX_NAME,
    is_name,
    lambda_fallback,
)

# Pennsieve-only keys that carry nothing for the canonical model once read.
_DROPPED = ("position", "runtimeConfig", "resolvedParams")


@dataclass
class Normalized:
    data: dict[str, Any]
    faults: list[tuple[str | None, str, str]] = field(default_factory=list)  # (processor, field, message)
    notes: list[str] = field(default_factory=list)


def resource_name(text: str, fallback: str, max_len: int = MAX_NAME) -> str:
    """``Zarr thumbnails`` -> ``zarr-thumbnails``: lower-case letters, digits and '-', deterministic.

    A name that must be cut (or has no letters or digits at all) gets 8 hex digits of its sha256, so
    two long names with a common prefix stay apart.
    """
    if is_name(text) and len(text) <= max_len:
        return text
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    if not slug:
        return f"{fallback}-{digest}"
    if len(slug) > max_len:
        return f"{slug[: max_len - 9].rstrip('-')}-{digest}"
    return slug


def normalize(data: Mapping[str, Any]) -> Normalized:
    result = Normalized(data=dict(data))
    out = result.data
    top_faults, top_notes = check_fields(data, WORKFLOW_FIELDS)
    result.faults.extend((None, _path(p.path), p.message) for p in top_faults)
    result.notes.extend(f"{_path(p.path)}: {p.message}" for p in top_notes)
    for key in ("uuid", "isActive", "visibility", "createdAt", "updatedAt", "createdBy", "userId"):
        out.pop(key, None)

    if "dag" in out:
        if "processors" in out:
            result.faults.append((None, "dag", "give processors or dag (the API's name for it), not both"))
        else:
            out["processors"] = out.pop("dag")
            result.notes.append("dag: read as processors")
        out.pop("dag", None)

    name = out.get("name")
    if isinstance(name, str) and name.strip():
        derived = resource_name(name.strip(), "workflow")
        if derived != name:
            out["displayName"] = name
            out["name"] = derived
            result.notes.append(f"name: {name!r} runs as {derived!r} (state machine, registry, folders)")

    raw_processors = out.get("processors")
    if isinstance(raw_processors, list):
        out["processors"] = _normalize_processors(raw_processors, result)
    return result


def _normalize_processors(raw_processors: list[Any], result: Normalized) -> list[Any]:
    entries = [dict(raw) if isinstance(raw, Mapping) else raw for raw in raw_processors]
    ids = _derive_ids(entries)
    by_original: dict[str, str] = {}
    by_source: dict[str, list[str]] = {}
    for entry, pid in zip(entries, ids, strict=True):
        if not isinstance(entry, dict) or pid is None:
            continue
        original = entry.get("id")
        if isinstance(original, str) and original:
            by_original.setdefault(original, pid)
        by_original.setdefault(pid, pid)
        if isinstance(entry.get("sourceUrl"), str):
            by_source.setdefault(_url_key(entry["sourceUrl"]), []).append(pid)

    notes: dict[str, list[str]] = {}
    normalized: list[Any] = []
    for index, (entry, pid) in enumerate(zip(entries, ids, strict=True)):
        if not isinstance(entry, dict):
            normalized.append(entry)
            continue
        label = pid or f"#{index + 1}"
        field_faults, field_notes = check_fields(entry, PROCESSOR_FIELDS)
        result.faults.extend((label, _path(p.path), p.message) for p in field_faults)
        for p in field_notes:
            notes.setdefault(f"{_path(p.path, indices=False)}: {p.message}", []).append(label)
        if pid is not None:
            original = entry.get("id")
            if original != pid:
                if isinstance(original, str) and original:
                    entry["label"] = original
                    notes.setdefault(f"id: {original!r} runs as {pid!r}", [])
                else:
                    notes.setdefault("id: derived from sourceUrl (or type) where missing", []).append(pid)
                entry["id"] = pid
        if entry.get("sourceUrl") and not entry.get("tag") and not entry.get("image"):
            # Pennsieve's create dialog sends none: its service runs the application's latest version.
            notes.setdefault(
                "tag: none given; the latest version registered for the sourceUrl runs", []
            ).append(label)
        _resources(entry, label, result, notes)
        _session(entry, label, notes)
        _params(entry, label, result, notes)
        _run_layer_name(entry, label, notes)
        _dependencies(entry, label, by_original, by_source, result)
        for key in _DROPPED:
            entry.pop(key, None)
        normalized.append(entry)
    for text, where in notes.items():
        result.notes.append(text + (f" ({', '.join(where)})" if where else ""))
    return normalized


def _derive_ids(entries: list[Any]) -> list[str | None]:
    """Stable, resource-safe, unique ids; explicit valid ids keep theirs, derived ones yield on clashes."""
    taken = {e["id"] for e in entries if isinstance(e, dict) and is_name(e.get("id"))}
    ids: list[str | None] = []
    for entry in entries:
        if not isinstance(entry, dict):
            ids.append(None)
            continue
        raw = entry.get("id")
        if is_name(raw):
            ids.append(raw)
            continue
        if raw is not None and not (isinstance(raw, str) and raw.strip()):
            ids.append(None)  # a non-string id: the model reports it
            continue
        base = resource_name(raw.strip(), "processor") if isinstance(raw, str) else _id_from(entry)
        candidate, n = base, 1
        while candidate in taken:
            n += 1
            suffix = f"-{n}"
            candidate = base[: MAX_NAME - len(suffix)].rstrip("-") + suffix
        taken.add(candidate)
        ids.append(candidate)
    return ids


def _id_from(entry: Mapping[str, Any]) -> str:
    url = entry.get("sourceUrl")
    if isinstance(url, str) and _url_key(url):
        return resource_name(_url_key(url).rsplit("/", 1)[-1], "processor")
    kind = entry.get("type")
    return kind if isinstance(kind, str) and is_name(kind) else "processor"


def _url_key(url: str) -> str:
    url = url.strip().rstrip("/")
    return url[:-4] if url.endswith(".git") else url


def _number(value: Any) -> Any:
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 9:
        return int(value.strip())
    return value


def _resources(entry: dict[str, Any], label: str, result: Normalized, notes: dict[str, list[str]]) -> None:
    if "computeType" in entry and entry["computeType"] is None:
        del entry["computeType"]
    runtime = entry.get("runtimeConfig")
    if isinstance(runtime, Mapping):
        for key in ("cpu", "memory"):
            if key not in entry and runtime.get(key) not in (None, ""):
                entry[key] = runtime[key]
                notes.setdefault(f"{key}: taken from runtimeConfig", []).append(label)
    for key in ("cpu", "memory"):
        if key in entry:
            if entry[key] in ("", None):
                del entry[key]
            else:
                entry[key] = _number(entry[key])
    if entry.get("computeType") == "lambda":
        _lambda_resources(entry, label, result, notes)
        entry.setdefault("timeoutSeconds", LAMBDA_TIMEOUT_SECONDS)  # what Lambda allows, not a day


def _session(entry: dict[str, Any], label: str, notes: dict[str, list[str]]) -> None:
    """Pennsieve's launcher counts a processor as a notebook when ``interactive`` or ``sessionType`` is
    set, on the processor or in its ``runtimeConfig``: read both, and let a sessionType imply interactive."""
    runtime = entry.get("runtimeConfig")
    if isinstance(runtime, Mapping):
        for key in ("interactive", "sessionType"):
            if key not in entry and runtime.get(key) not in (None, ""):
                entry[key] = runtime[key]
                notes.setdefault(f"{key}: taken from runtimeConfig", []).append(label)
    if entry.get("sessionType") is not None and "interactive" not in entry:
        entry["interactive"] = True
        notes.setdefault("interactive: implied by sessionType", []).append(label)


def _lambda_resources(
    entry: dict[str, Any], label: str, result: Normalized, notes: dict[str, list[str]]
) -> None:
    """A lambda processor runs as a Lambda function of the memory Pennsieve gives (MB), its ``cpu`` the
    vCPU share of that memory (read by local runs and cost estimates only). One Lambda cannot run
    (``limits.lambda_fallback``: layers, a fan-in) runs as a Fargate task: only there is its memory
    mapped to a Fargate pair."""
    memory, cpu = entry.get("memory"), entry.get("cpu")
    layers, deps = entry.get("layers"), entry.get("dependsOn")
    fallback = lambda_fallback(
        layers if isinstance(layers, list) else [], deps if isinstance(deps, list) else []
    )
    if fallback and (memory is None or (isinstance(cpu, int) and memory in FARGATE_MEMORY.get(cpu, ()))):
        notes.setdefault(f"computeType: lambda runs as a Fargate task: {fallback}", []).append(label)
        return
    if memory is None or not isinstance(memory, int) or isinstance(memory, bool):
        return  # the default (2048) is a Lambda size; the model reports a memory that is not a number
    low, high = LAMBDA_MEMORY
    if not low <= memory <= high:
        result.faults.append((label, "memory", f"{memory} MB is not a Lambda memory size ({low}-{high} MB)"))
        entry.pop("memory")
        return
    if fallback:
        pair = fargate_for_lambda(memory)
        entry["cpu"], entry["memory"] = pair
        notes.setdefault(
            f"computeType: lambda runs as a Fargate task: {fallback} (Lambda {memory} MB -> cpu {pair[0]}, "
            f"{pair[1]} MiB)",
            [],
        ).append(label)
    elif "cpu" not in entry:
        entry["cpu"] = fargate_for_lambda(memory)[0]


def fargate_for_lambda(memory_mb: int) -> tuple[int, int]:
    """The smallest Fargate pair with at least the memory and the vCPU share Lambda gives that memory
    (its cpu is a lambda processor's ``cpu``, for local runs and cost estimates)."""
    cpu_needed = memory_mb * 1024 / LAMBDA_MB_PER_VCPU
    for cpu in sorted(FARGATE_MEMORY):
        if cpu < cpu_needed:
            continue
        for memory in FARGATE_MEMORY[cpu]:
            if memory >= memory_mb:
                return cpu, memory
    return 16384, FARGATE_MEMORY[16384][-1]


def _params(entry: dict[str, Any], label: str, result: Normalized, notes: dict[str, list[str]]) -> None:
    resolved = entry.get("resolvedParams")
    if not isinstance(resolved, Mapping) or not resolved:
        return
    params = entry.get("defaultParams")
    merged = dict(params) if isinstance(params, Mapping) else {}
    added = [key for key in resolved if key not in merged]
    for key in added:
        merged[key] = resolved[key]
    if added:
        entry["defaultParams"] = merged
        notes.setdefault("resolvedParams: keys missing from defaultParams added to them", []).append(label)


def _run_layer_name(entry: dict[str, Any], label: str, notes: dict[str, list[str]]) -> None:
    """A persistent-layer target with no layerName declares it empty: the run supplies it."""
    if entry.get("targetType") != "persistent-layer":
        return
    params = entry.get("defaultParams")
    if params is None:
        params = {}
    if isinstance(params, Mapping) and "layerName" not in params:
        entry["defaultParams"] = {**params, "layerName": ""}
        notes.setdefault("layerName: not in defaultParams; each run must pass it", []).append(label)


def _dependencies(
    entry: dict[str, Any],
    label: str,
    by_original: Mapping[str, str],
    by_source: Mapping[str, list[str]],
    result: Normalized,
) -> None:
    deps = entry.get("dependsOn")
    if not isinstance(deps, list):
        return
    mapped: list[Any] = []
    for dep in deps:
        if isinstance(dep, str):
            mapped.append(by_original.get(dep, dep))
        elif isinstance(dep, Mapping) and isinstance(dep.get("id"), str):
            mapped.append(by_original.get(dep["id"], dep["id"]))
        elif isinstance(dep, Mapping) and isinstance(dep.get("sourceUrl"), str):
            hits = by_source.get(_url_key(dep["sourceUrl"]), [])
            if len(hits) == 1:
                mapped.append(hits[0])
            elif not hits:
                result.faults.append((label, "dependsOn", f"no processor has sourceUrl {dep['sourceUrl']!r}"))
            else:
                result.faults.append(
                    (
                        label,
                        "dependsOn",
                        f"sourceUrl {dep['sourceUrl']!r} names {len(hits)} processors "
                        f"({', '.join(hits)}): give ids instead",
                    )
                )
        elif isinstance(dep, Mapping):
            result.faults.append((label, "dependsOn", "a dependency object needs a sourceUrl or an id"))
        else:
            mapped.append(dep)
    entry["dependsOn"] = mapped


def _path(path: tuple[str | int, ...], indices: bool = True) -> str:
    parts = [str(p) or "''" for p in path if indices or not isinstance(p, int)]
    return ".".join(parts)
