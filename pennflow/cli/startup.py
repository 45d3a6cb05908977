"""Start-up work a short command need not do: pydantic's search for plugins, the collector's passes.

The first time pydantic builds a validator it imports its plugin loader, and that module imports
``importlib.metadata`` (email parsing, zipfile, csv: about a tenth of ``pennflow validate``) even when
``PYDANTIC_DISABLE_PLUGINS`` turns plugins off, as the CLI does while typer and the definition build
their validators. A stand-in for the loader answers "no plugins" while they are off and hands over to
pydantic's own loader the first time they are on, so a plugin installed by the user still loads.

Start-up builds long-lived objects (modules, classes, validators) and frees almost none, so the cyclic
garbage collector's passes over them find nothing (about 5% of ``pennflow validate``). It is off for
the first half second: a command still going then (a run, ``--watch``) gets it back, with the
start-up objects frozen out of its way.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import threading
import types
from collections.abc import Iterable
from typing import Any

PLUGIN_LOADER = "pydantic.plugin._loader"
_PLUGINS_OFF = ("__all__", "1", "true")  # what pydantic's own loader reads as "every plugin off"
GC_PAUSE_SECONDS = 0.5


def defer_pydantic_plugin_search() -> None:
    """Put the stand-in loader in place, unless pydantic's own is already imported."""
    if PLUGIN_LOADER not in sys.modules:
        sys.modules[PLUGIN_LOADER] = _StandInLoader(PLUGIN_LOADER)


class _StandInLoader(types.ModuleType):
    def get_plugins(self) -> Iterable[Any]:
        if os.environ.get("PYDANTIC_DISABLE_PLUGINS") in _PLUGINS_OFF:
            return ()
        if sys.modules.get(PLUGIN_LOADER) is self:
            del sys.modules[PLUGIN_LOADER]
        return importlib.import_module(PLUGIN_LOADER).get_plugins()


def pause_gc_during_startup(seconds: float = GC_PAUSE_SECONDS) -> threading.Timer:
    """Turn the cyclic collector off now and back on after ``seconds`` (cancel the returned timer
    when the command ends first)."""
    gc.disable()
    resume = threading.Timer(seconds, _resume_gc)
    resume.daemon = True
    resume.start()
    return resume


def _resume_gc() -> None:
    gc.freeze()
    gc.enable()
