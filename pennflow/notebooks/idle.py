"""A session's idle timeout: the server's own account of its last activity, read every few seconds.

jupyter_server's ``/api/status`` gives ``last_activity``: the latest of its API requests (the status
request itself does not count) and its kernels' messages. A kernel busy with a long, silent
computation sends nothing, so a busy kernel (``/api/kernels``) counts as activity too. When nothing
happened for the timeout, the session is stopped and says why. A server that does not answer is not
idle: its process ending is noticed by the session's process on its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from pennflow.notebooks.session import SessionState, server_get

MAX_CHECK_SECONDS = 30.0


class IdleWatch:
    def __init__(
        self,
        state: SessionState,
        get: Callable[[SessionState, str], object | None] = server_get,
        clock: Callable[[], float] = time.time,
    ):
        self.state = state
        self.timeout = state.request.idle_timeout_seconds
        self.every = min(MAX_CHECK_SECONDS, max(1.0, self.timeout / 5))
        self._get = get
        self._clock = clock
        self._active_at = clock()  # a fresh server has had no activity yet: it is idle from its start
        self._checked_at = 0.0

    def check(self) -> str | None:
        """Why the session is to stop now (idle for the timeout), or None; asks the server at most
        every ``every`` seconds."""
        now = self._clock()
        if now - self._checked_at < self.every:
            return None
        self._checked_at = now
        status = self._get(self.state, "/api/status")
        if not isinstance(status, dict):
            return None
        kernels = self._get(self.state, "/api/kernels?no_track_activity=1")  # a listing is no activity
        if isinstance(kernels, list) and any(k.get("execution_state") == "busy" for k in kernels):
            self._active_at = now
            return None
        last = _timestamp(status.get("last_activity"))
        if last is not None:
            self._active_at = max(self._active_at, last)
        idle = now - self._active_at
        if idle < self.timeout:
            return None
        since = datetime.fromtimestamp(self._active_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"stopped: idle for {idle:.0f} s (timeout {self.timeout} s, last activity {since})"


def _timestamp(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()
