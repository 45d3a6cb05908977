"""The idle rule of a node's notebook task, given to jupyter_server itself.

No pennflow process runs beside the server in the node's task, so the server shuts itself down
after ``shutdown_no_activity_timeout`` seconds with no request and no kernel or terminal left;
kernels idle that long are culled first (even with a browser tab connected), so a forgotten session
ends instead of running, and costing, on. A local session is watched by its pennflow process
instead (:mod:`pennflow.notebooks.idle`), which can say why it stopped.
"""

from __future__ import annotations

CULL_INTERVAL_SECONDS = 60


def jupyter_idle_arguments(idle_seconds: int) -> list[str]:
    """The server's flags for the session's idle timeout (seconds)."""
    return [
        f"--ServerApp.shutdown_no_activity_timeout={idle_seconds}",
        f"--MappingKernelManager.cull_idle_timeout={idle_seconds}",
        f"--MappingKernelManager.cull_interval={min(idle_seconds, CULL_INTERVAL_SECONDS)}",
        "--MappingKernelManager.cull_connected=True",
    ]
