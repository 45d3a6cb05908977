"""The session's idle timeout reads the server's own last activity; a busy kernel is activity, a
server that does not answer is not idle, and the reason says for how long and since when."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pennflow.notebooks.idle import IdleWatch
from pennflow.notebooks.session import (
    IDLE_ENV,
    NotebookError,
    SessionFiles,
    SessionRequest,
    SessionState,
    idle_timeout_setting,
)

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC).timestamp()


def _state(idle: int) -> SessionState:
    root = Path("/runs/r-1/notebook")
    files = SessionFiles(root=root, work=root / "w", input=root / "i", layers=root / "l", log=root / "log")
    return SessionState(
        run_id="r-1", files=files, request=SessionRequest(idle_timeout_seconds=idle), python="python",
        python_version="3.12.1", port=1, token="t", scratch="/tmp/s", layers={},
    )  # fmt: skip


class FakeServer:
    def __init__(self) -> None:
        self.last_activity = "2026-01-05T12:00:00.000000Z"
        self.kernels: list[dict] = []
        self.up = True
        self.asked: list[str] = []

    def get(self, state: SessionState, path: str) -> object | None:
        self.asked.append(path)
        if not self.up:
            return None
        if path.startswith("/api/kernels"):
            return self.kernels
        return {"last_activity": self.last_activity, "kernels": len(self.kernels)}


def test_idle_for_the_timeout_stops_with_how_long_and_since_when() -> None:
    server, now = FakeServer(), [T0]
    watch = IdleWatch(_state(60), get=server.get, clock=lambda: now[0])
    now[0] = T0 + 59
    assert watch.check() is None
    now[0] = T0 + 75
    assert watch.check() == "stopped: idle for 75 s (timeout 60 s, last activity 2026-01-05T12:00:00Z)"
    assert "/api/kernels?no_track_activity=1" in server.asked  # the watch's own listing is no activity


def test_activity_and_a_busy_kernel_put_the_timeout_off() -> None:
    server, now = FakeServer(), [T0]
    watch = IdleWatch(_state(60), get=server.get, clock=lambda: now[0])
    server.last_activity = "2026-01-05T12:00:50+00:00"
    now[0] = T0 + 100
    assert watch.check() is None  # 50 s since the last request
    server.kernels = [{"execution_state": "busy"}]  # a long silent computation
    now[0] = T0 + 200
    assert watch.check() is None
    server.kernels = [{"execution_state": "idle"}]
    now[0] = T0 + 250
    assert watch.check() is None  # idle since the busy kernel was last seen (T0 + 200)
    now[0] = T0 + 263  # (checks are 12 s apart at a 60 s timeout)
    assert watch.check() is not None


def test_a_server_that_does_not_answer_is_not_idle_and_checks_are_spaced() -> None:
    server, now = FakeServer(), [T0]
    watch = IdleWatch(_state(600), get=server.get, clock=lambda: now[0])
    server.up = False
    now[0] = T0 + 10_000
    assert watch.check() is None
    calls = len(server.asked)
    now[0] += 1
    assert watch.check() is None and len(server.asked) == calls  # within `every` seconds: not asked
    assert watch.every == 30.0


def test_the_setting_comes_from_the_environment_and_is_checked() -> None:
    assert idle_timeout_setting({}) == 3600
    assert idle_timeout_setting({IDLE_ENV: " 120 "}) == 120
    for bad in ("2", "soon", "-5"):
        with pytest.raises(NotebookError) as refused:
            idle_timeout_setting({IDLE_ENV: bad})
        assert str(refused.value) == (
            f"{IDLE_ENV}: must be a whole number of seconds from 5 to 604800, got {bad!r}"
        )
