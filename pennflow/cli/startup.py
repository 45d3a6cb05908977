"""Start-up work a short command need not do: pydantic's search for plugins.

The first time pydantic builds a validator it imports its plugin loader, and that module imports
``importlib.metadata`` (email parsing, zipfile, csv: about a tenth of ``pennflow validate``) even when
``PYDANTIC_DISABLE_PLUGINS`` turns plugins off, as the CLI does while typer and the definition build
their validators. A stand-in for the loader answers "no plugins" while they are off and hands over to
pydantic's own loader the first time they are on, so a plugin installed by the user still loads.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from collections.abc import Iterable
from typing import Any

PLUGIN_LOADER = "pydantic.plugin._loader"
_PLUGINS_OFF = ("__all__", "1", "true")  # what pydantic's own loader reads as "every plugin off"


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
