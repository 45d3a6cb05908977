"""One sandbox per run: bwrap started once, with a small launcher inside that forks each processor.

Starting bwrap costs 3-6 ms a processor (new namespaces and a copy of the machine's mount table),
where starting the processor itself costs well under one. So a run that sandboxes its processors
starts one bwrap, with one view for the whole run (``RunSandbox.view``, the rules of
``engine.sandbox``), and runs ``engine.sandbox_launcher`` in it; each attempt is a request to that
launcher over a socket (argv, environment, folder and the log's descriptor), and its process a
child of the launcher with its own session, environment and folder, its exit status and rusage
reported back, its group signalled on request. ``LauncherChild`` is what ``RunningProcess`` holds
for it, as it holds a ``Popen`` for an unsandboxed attempt.

The view is the run's, so what a processor may do differs from one bwrap per processor in what
its run's other processors share (README "What a local run enforces"): every OUTPUT_DIR of the run
is writable (a processor can write into a sibling's), each processor's LAYERS_DIR holds its own
layers but a sibling's view is readable at its path, /tmp and HOME are one private scratch for the
run (gone when it ends), and the processors of a run share a pid namespace (one can see and signal
another). Between runs, and between a run and the user's files, nothing changes.

The launcher holds a socket only this process has: when the engine exits or is killed, the socket
closes and the launcher kills every attempt; bwrap's ``--die-with-parent`` ends the sandbox too.
"""

from __future__ import annotations

import contextlib
import errno
import marshal
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from pennflow.engine import sandbox_launcher
from pennflow.engine.resource_use import MAXRSS_UNIT
from pennflow.engine.sandbox import SandboxView, command_files, wrap_command

SEND_BUFFER = 4 << 20  # a request holds a processor's whole environment


class SandboxGone(OSError):
    """The run's sandbox ended (the launcher died): no attempt can start in it any more."""


@dataclass
class LauncherChild:
    """An attempt's process, started by the run's launcher. ``pid`` is its pid inside the sandbox."""

    sandbox: RunSandbox
    pid: int
    returncode: int | None = None
    cpu_seconds: float | None = None
    peak_rss_bytes: int | None = None  # None when not above what the launcher's fork handed it

    def __post_init__(self) -> None:
        self._exited = threading.Event()

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code (Popen's: -N for a death by signal N), None when ``timeout`` passed first."""
        if not self._exited.wait(timeout):
            return None
        return self.returncode

    def signal_group(self, signal_number: int) -> None:
        """The signal to the attempt's process group (ignored once the launcher reaped it)."""
        self.sandbox.signal(self.pid, signal_number)

    def _exit(self, message: dict[str, Any]) -> None:
        self.returncode = os.waitstatus_to_exitcode(message["status"])
        self.cpu_seconds = round(float(message["cpu"]), 3)
        own = int(message["own_maxrss"])
        peak = int(message["maxrss"])
        self.peak_rss_bytes = peak * MAXRSS_UNIT if peak > own else None
        self._exited.set()


class RunSandbox:
    """The run's one bwrap and its launcher; ``start`` runs an attempt in it."""

    def __init__(self, bwrap: str, view: SandboxView, on_start: Callable[[int], None] | None = None):
        self._bwrap = bwrap
        self._view = view
        self._on_start = on_start  # told bwrap's pid (its process group) once it runs
        self._lock = threading.Lock()
        self._next_id = 0
        self._pending: dict[int, tuple[threading.Event, list[Any]]] = {}
        self._children: dict[int, LauncherChild] = {}
        self._socket: socket.socket | None = None
        self._process: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._gone = False
        self._last_words = ""

    @property
    def started(self) -> bool:
        return self._process is not None

    def start_sandbox(self) -> None:
        """Start bwrap and the launcher (from the thread that lives as long as the run: bwrap's
        ``--die-with-parent`` follows the thread that started it)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        source = Path(sandbox_launcher.__file__).read_text(encoding="utf-8")
        launcher = [sys.executable, "-I", "-S", "-c", source, str(theirs.fileno())]
        argv = wrap_command(launcher, self._bwrap, self._with_launcher(self._view))
        split = argv.index("--")
        # The options through a pipe (--args): a run of thousands of processors binds thousands of
        # folders, more than one command line holds.
        args_read, args_write = os.pipe()
        try:
            self._process = subprocess.Popen(
                [self._bwrap, "--args", str(args_read), *argv[split:]],
                # Nothing of the engine's environment: the launcher's is readable by the processors.
                env={"PATH": os.defpath},
                stdin=subprocess.DEVNULL,
                stderr=subprocess.PIPE,  # bwrap's (and the launcher's) complaints: why the sandbox ended
                pass_fds=(args_read, theirs.fileno()),
                start_new_session=True,
            )
        finally:
            os.close(args_read)
            theirs.close()
        with os.fdopen(args_write, "wb") as args:
            args.write(b"".join(option.encode() + b"\0" for option in argv[1:split]))
        self._socket = ours
        if self._on_start is not None:
            self._on_start(self._process.pid)
        self._reader = threading.Thread(target=self._read, name="pennflow-sandbox", daemon=True)
        self._reader.start()

    @staticmethod
    def _with_launcher(view: SandboxView) -> SandboxView:
        """The view, with what the launcher itself runs on readable: this interpreter's environment
        and the base it links to (a checkout under a folder the sandbox covers, /tmp say, hides it)."""
        interpreter = [*command_files([sys.executable], view.cwd, os.defpath), Path(sys.base_prefix)]
        return replace(view, readable=list(dict.fromkeys([*view.readable, *interpreter])))

    def start(self, argv: list[str], env: dict[str, str], cwd: Path, log: BinaryIO) -> LauncherChild:
        """Start one attempt; raises OSError (FileNotFoundError for a missing program) as Popen does."""
        with self._lock:
            if self._gone or self._socket is None:
                raise SandboxGone(f"the run's sandbox is gone{self._why()}")
            self._next_id += 1
            request_id = self._next_id
            answer: list[Any] = []
            done = threading.Event()
            self._pending[request_id] = (done, answer)
            sock = self._socket
        request = {"op": "start", "id": request_id, "argv": argv, "env": env, "cwd": str(cwd)}
        try:  # not under the lock: a packet goes whole, and the reader must not wait for a sender
            socket.send_fds(sock, [marshal.dumps(request)], [log.fileno()])
        except OSError as exc:
            with self._lock:
                self._pending.pop(request_id, None)
            if self._reader is not None:  # the launcher is gone: the reader has its last words
                self._reader.join(timeout=10)
            raise SandboxGone(f"the run's sandbox is gone{self._why()}") from exc
        done.wait()
        if not answer:
            raise SandboxGone(f"the run's sandbox ended while an attempt started{self._why()}")
        child = answer[0]
        if isinstance(child, LauncherChild):
            return child
        code = int(child["errno"])
        error = FileNotFoundError if code == errno.ENOENT else OSError
        raise error(code, os.strerror(code), argv[0])

    def signal(self, pid: int, signal_number: int) -> None:
        with self._lock:
            if self._gone or self._socket is None:
                return
            message = marshal.dumps({"op": "signal", "pid": pid, "signal": int(signal_number)})
            with contextlib.suppress(OSError):
                self._socket.send(message)

    def close(self) -> None:
        """End the sandbox: the launcher kills what still runs and exits."""
        with self._lock:
            sock, self._socket = self._socket, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._process is not None:
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._reader is not None:
            self._reader.join(timeout=10)

    def _why(self) -> str:
        """``: <bwrap's last line>`` once the sandbox ended and said why, else nothing."""
        return f": {self._last_words}" if self._last_words else ""

    def _read(self) -> None:
        sock = self._socket
        assert sock is not None
        try:
            while True:
                try:
                    data = sock.recv(sandbox_launcher.MAX_REQUEST)
                except OSError:
                    break
                if not data:
                    break
                self._handle(marshal.loads(data))
        finally:
            self._last_words = self._stderr_tail()
            with self._lock:
                self._gone = True
                pending, self._pending = self._pending, {}
                children = list(self._children.values())
                self._children.clear()
            for done, _ in pending.values():
                done.set()
            for child in children:  # the launcher died with them: they died too (SIGKILL)
                child._exit({"status": 9, "cpu": 0, "maxrss": 0, "own_maxrss": 0})

    def _handle(self, message: dict[str, Any]) -> None:
        """An answer: the launcher sends an attempt's "started" before its "exited"."""
        with self._lock:
            if message["op"] == "exited":
                child = self._children.pop(message["pid"], None)
            else:
                done, answer = self._pending.pop(message["id"])
                if message["op"] == "started":
                    child = self._children[message["pid"]] = LauncherChild(self, message["pid"])
                    answer.append(child)
                else:
                    answer.append(message)
                done.set()
                return
        if child is not None:
            child._exit(message)

    def _stderr_tail(self) -> str:
        """The last line bwrap or the launcher wrote, once it has exited (its stderr then ends)."""
        process = self._process
        if process is None or process.stderr is None:
            return ""
        try:
            process.wait(timeout=5)
            text = process.stderr.read().decode(errors="replace")
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return ""
        finally:
            with contextlib.suppress(OSError):
                process.stderr.close()
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[-1][:300] if lines else ""
