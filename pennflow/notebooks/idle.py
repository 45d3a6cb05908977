"""The idle rule of a notebook session, one home for both sides (a local server and a node's task).

jupyter_server shuts itself down after ``shutdown_no_activity_timeout`` seconds with no request and
no kernel or terminal left; kernels idle that long are culled first (even with a browser tab
connected), so a forgotten session ends instead of running, and costing, on.
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
