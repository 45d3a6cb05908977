"""A notebook session's start vs a bare Jupyter server's, side by side in one run.

`pennflow notebook start` = pin layers, record the run, start the session's process, which takes
the engine lease and starts the server in the processor sandbox, until the server answers. The
baseline is `python -m jupyter_server` started directly (no sandbox, no run) until it answers; then
a stop of each (`notebook stop`: the server's own shutdown, until the run is ended).
"""

from __future__ import annotations

import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from pennflow.engine.home import PennflowHome
from pennflow.notebooks.session import SessionRequest, free_port, start_session, stop_session

ROUNDS = 3


def bare_server(work: Path) -> tuple[float, float]:
    port, token = free_port(), secrets.token_urlsafe(16)
    env = {**os.environ, "JUPYTER_TOKEN": token, "JUPYTER_RUNTIME_DIR": str(work / "rt")}
    begin = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.open_browser=False", f"--ServerApp.root_dir={work}", "--ServerApp.allow_root=True"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/status", headers={"Authorization": f"token {token}"}
    )
    while True:
        try:
            urllib.request.urlopen(request, timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    started = time.perf_counter() - begin
    begin = time.perf_counter()
    server.terminate()
    server.wait()
    return started, time.perf_counter() - begin


def session(home: PennflowHome) -> tuple[float, float]:
    begin = time.perf_counter()
    state = start_session(home, SessionRequest())
    started = time.perf_counter() - begin
    begin = time.perf_counter()
    stop_session(home, state.run_id)
    return started, time.perf_counter() - begin


def main() -> None:
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="pennflow-bench-notebook-") as tmp:
        home = PennflowHome(Path(tmp, "home"))
        work = Path(tmp, "bare")
        work.mkdir()
        bare = [bare_server(work) for _ in range(ROUNDS)]
        ours = [session(home) for _ in range(ROUNDS)]
    for label, index in (("start (until the server answers)", 0), ("stop", 1)):
        b = statistics.median(r[index] for r in bare)
        s = statistics.median(r[index] for r in ours)
        print(
            f"{label:34} bare jupyter_server {b:6.2f} s   notebook session {s:6.2f} s   ratio {s / b:4.2f}x"
        )


if __name__ == "__main__":
    main()
