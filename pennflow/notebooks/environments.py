"""Which layers a notebook session may mount: Pennsieve's "match the Python version" rule.

A python-env layer records the Python it was built for (``LayerRecord.python_version``, set by the
build); its packages live under ``lib/python3.<minor>``, so a kernel of another minor version would
not find them, or would find compiled modules built for another interpreter. Data layers hold no
code and fit any session; R environments fit no Python kernel.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable

from pennflow.layers.models import LayerRecord, LayerType


def minor_version(version: str) -> str:
    """``3.12.4`` -> ``3.12``."""
    return ".".join(version.split(".")[:2])


def session_python() -> str:
    """The Python the session's kernel runs: the interpreter of this installation (its notebook extra)."""
    return platform.python_version()


def misfit_reason(record: LayerRecord, python_version: str) -> str | None:
    """Why a session on ``python_version`` cannot mount the layer (None when it can)."""
    if record.type is LayerType.DATA:
        return None
    if record.type is LayerType.R_ENV:
        return f"layer {record.name!r} is an R environment: a notebook session runs a Python kernel"
    wanted = minor_version(python_version)
    if not record.python_version:
        return (
            f"layer {record.name!r} records no Python version, the session runs Python {wanted}: "
            "build the layer again so it records one"
        )
    built = minor_version(record.python_version)
    if built != wanted:
        return (
            f"layer {record.name!r} was built for Python {built}, the session runs Python {wanted}: "
            f"build the layer again with Python {wanted}"
        )
    return None


def for_notebooks(records: Iterable[LayerRecord], python_version: str) -> list[LayerRecord]:
    """The layers a session on ``python_version`` may mount."""
    return [record for record in records if misfit_reason(record, python_version) is None]
