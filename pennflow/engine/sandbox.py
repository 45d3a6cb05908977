"""Local enforcement of "a processor sees its own run and nothing of the user's" (DESIGN §3).

A local run's ``command`` processors start inside bubblewrap (``bwrap``), which gives them a private
view of this machine, as an ECS task's container would:

- the system read-only (``--ro-bind / /``), so they find their programs and libraries;
- the user's home, pennflow's home (other runs, the layers store, the run database) and ``/tmp``
  covered by empty folders: no ``~/.pennsieve``, ``~/.aws`` or other run is in sight; HOME and
  ``/tmp`` stay writable but private, and are gone when the run ends;
- their run's folder read-only and each OUTPUT_DIR read-write, the only places writes persist;
- each LAYERS_DIR holding just its processor's layers, read-only;
- read-only too: the folder the commands run from, and the files and interpreters they name (a venv
  or a script under the covered home stays usable);
- their own user, PID and IPC namespaces with no capabilities, so they cannot undo any of it, see
  the engine's processes, or read their environment. The network is the machine's (processors call
  Pennsieve), as on ECS.

A run starts one such sandbox for all its processors (``engine.run_sandbox``), the view of every one
of them at once, with a launcher inside that starts each attempt in its own session and process
group; what that shares between the processors of one run is said there. ``--die-with-parent``
ends the sandbox if the engine is killed (``kill -9``), on top of the lease. ``wrap_command`` makes
the view (notebook sessions use it too).

Where bwrap is missing or cannot make namespaces (or ``PENNFLOW_SANDBOX=off``), processors run
unsandboxed, the run says so in one line (``Sandbox.notice``), and only the layers sandbox
(``pennflow.layers.sandbox``) and the environment allow-list still hold.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SANDBOX_ENV = "PENNFLOW_SANDBOX"  # "off": run processors unsandboxed even where bwrap works
PROBE_TIMEOUT_SECONDS = 10
PRIVATE_TMP = Path("/tmp")

# Its own users (no capabilities over anything outside), processes (the engine's environment out of
# reach) and SysV IPC (other runs' shared memory).
_NAMESPACES = ["--unshare-user", "--unshare-pid", "--unshare-ipc"]


@dataclass(frozen=True)
class Sandbox:
    """How this machine isolates a local command processor: ``bwrap`` set, or ``why_not``."""

    bwrap: str | None
    why_not: str | None = None

    @property
    def available(self) -> bool:
        return self.bwrap is not None

    @property
    def notice(self) -> str:
        """The run's one line when processors run unsandboxed."""
        return (
            f"processors run without a sandbox ({self.why_not}): they can read other runs, your home "
            "(~/.pennsieve, ~/.aws) and write outside their run; see README 'What a local run enforces'"
        )


@dataclass(frozen=True)
class SandboxView:
    """What one attempt may see, by absolute path on this machine (the same inside the sandbox)."""

    cwd: Path
    hidden: Sequence[Path]  # covered by an empty read-only folder (pennflow's home)
    readable: Sequence[Path]  # shown read-only (the run folder, the command's own files)
    writable: Sequence[Path]  # shown read-write (OUTPUT_DIR)
    layers_dir: Path | None = None  # LAYERS_DIR: holds only ``layers``, read-only
    layers: Mapping[str, Path] | None = None  # layer name -> the pinned version's folder
    scratch: Sequence[Path] = ()  # covered by an empty writable folder, gone at the end (HOME; /tmp always)
    # More LAYERS_DIRs, each holding only its layers (the run's one sandbox: every processor's view)
    layer_views: Sequence[tuple[Path, Mapping[str, Path]]] = ()


def detect(environ: Mapping[str, str] | None = None) -> Sandbox:
    """The sandbox of this process's runs (``PENNFLOW_SANDBOX=off`` turns it off)."""
    environ = os.environ if environ is None else environ
    if environ.get(SANDBOX_ENV, "").strip().lower() in {"off", "0", "false", "no"}:
        return Sandbox(None, f"{SANDBOX_ENV}=off")
    return _probe()


@cache
def _probe() -> Sandbox:
    """bwrap found and able to start a process in new namespaces here (probed once per process)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return Sandbox(None, "bwrap not found: install bubblewrap")
    argv = wrap_command(["true"], bwrap, SandboxView(cwd=Path("/"), hidden=(), readable=(), writable=()))
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=PROBE_TIMEOUT_SECONDS, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return Sandbox(None, f"bwrap cannot start: {exc}")
    if done.returncode != 0:
        last = (done.stderr.decode(errors="replace").strip().splitlines() or ["no namespaces"])[-1]
        return Sandbox(None, f"bwrap cannot make namespaces here: {last}")
    return Sandbox(bwrap)


def wrap_command(argv: Sequence[str], bwrap: str, view: SandboxView) -> list[str]:
    """The command that runs ``argv`` in ``view`` (bwrap applies its options in this order)."""
    options = ["--die-with-parent", *_NAMESPACES, "--cap-drop", "ALL"]
    options += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    # Outer folders first, so a deeper one wins: the run inside a covered pennflow home is shown, a
    # covered home inside a shown folder (the definition's) stays covered. A folder to show is bound
    # only inside a covered one (elsewhere `/` shows it already; each mount costs start-up time).
    hidden = _coverable(view.hidden)
    covered = [*_coverable([PRIVATE_TMP, *view.scratch]), *hidden]
    shown = [f for f in _existing(view.readable) if any(f != c and f.is_relative_to(c) for c in covered)]
    steps = [(folder, 0, "--ro-bind") for folder in shown]
    steps += [(folder, 1, "--tmpfs") for folder in covered]
    steps += [(folder, 2, "--bind") for folder in _existing(view.writable)]
    for folder, _, option in sorted(steps, key=lambda step: (len(step[0].parts), step[1])):
        options += [option, str(folder)] if option == "--tmpfs" else [option, str(folder), str(folder)]
    layer_views = [(view.layers_dir, view.layers)] if view.layers_dir is not None and view.layers else []
    for layers_dir, layers in [*layer_views, *view.layer_views]:
        if not layers:
            continue
        options += ["--tmpfs", str(layers_dir)]
        for name, source in sorted(layers.items()):
            options += ["--ro-bind", str(source), str(layers_dir / name)]
        options += ["--remount-ro", str(layers_dir)]
    for folder in hidden:  # pennflow's home stays unwritable; HOME and /tmp are private scratch
        options += ["--remount-ro", str(folder)]
    options += ["--chdir", str(view.cwd)]
    return [bwrap, *options, "--", *argv]


def command_files(argv: Sequence[str], cwd: Path, path: str) -> list[Path]:
    """The folders a command needs to see that it names itself: its program's environment
    (``<env>/bin/python`` -> ``<env>``, found on ``path`` as exec finds it) and each existing path
    argument's folder, both as written and with symlinks resolved (a venv's python links to its
    base interpreter, which may live under the covered home)."""
    folders: list[Path] = []
    for index, arg in enumerate(argv):
        if index == 0 and os.sep not in arg:
            found = shutil.which(arg, path=path)
            if found is None:
                continue
            arg = found
        elif os.sep not in arg:
            continue
        given = Path(cwd, arg)
        if not given.exists():
            continue
        for candidate in dict.fromkeys([Path(os.path.normpath(given.absolute())), given.resolve()]):
            folder = candidate if candidate.is_dir() else candidate.parent
            if index == 0 and folder.name == "bin":
                folder = folder.parent
            folders.append(folder)
    return folders


def _coverable(folders: Iterable[Path]) -> list[Path]:
    """Existing absolute folders other than ``/``, once each. One inside another is covered too:
    a folder shown between them (the definition's) must not show it again."""
    return sorted(
        {Path(f) for f in folders if Path(f).is_absolute() and Path(f) != Path("/") and Path(f).is_dir()}
    )


def _existing(folders: Iterable[Path]) -> list[Path]:
    """Existing folders, once each."""
    return sorted({Path(f) for f in folders if Path(f).exists()})
