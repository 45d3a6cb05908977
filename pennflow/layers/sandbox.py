"""Local enforcement of "a processor sees only the layers it requested, read-only" (DESIGN §3).

Each processor gets a *view*: a folder holding one entry per requested layer (its LAYERS_DIR).

- ``namespace`` mode (Linux, ``unshare`` permitted): the processor starts in a private mount
  namespace where each view entry is a read-only bind mount of the pinned version and the real
  layers root is covered by an empty read-only tmpfs. Capabilities are dropped before the
  processor runs, so it cannot undo either mount. Writes fail with EROFS even for root.
- ``permissions`` mode (no namespaces): view entries are symlinks to the pinned versions, whose
  write bits were removed when they were published. Writes fail with EACCES for non-root users;
  the real layers root is still reachable by its path, so this mode isolates less.

``detect_mode()`` probes once per process with a real bind mount, so a machine that has
``unshare`` but forbids mounts falls back instead of failing every processor.

All of a view's mounts are listed in one fstab file beside it and made by a single
``mount --all``: the sandbox costs the same few process starts whatever the number of layers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path

from pennflow.layers.models import LayerType
from pennflow.layers.mounts import LayerMount
from pennflow.layers.storage import remove_tree

PROBE_TIMEOUT_SECONDS = 10
EXIT_SANDBOX_FAILED = 125  # like `env`/`docker run`: the wrapper, not the processor, failed

FSTAB_SUFFIX = ".fstab"

# Runs under `sh -c`: $1 the view's fstab, then argv. (libmount cannot parse an fstab from a pipe.)
_SETUP = r"""
set -u
if ! mount --all --fstab "$1"; then
  echo "pennflow: cannot mount the layers read-only or hide the layers folder" >&2; exit 125
fi
shift
exec setpriv --no-new-privs --inh-caps=-all --bounding-set=-all -- "$@"
"""


class SandboxMode(StrEnum):
    NAMESPACE = "namespace"
    PERMISSIONS = "permissions"


@dataclass(frozen=True)
class LayersView:
    """The layers one processor may see: ``root`` is its LAYERS_DIR."""

    root: Path
    mounts: tuple[LayerMount, ...]
    hidden: Path  # the real layers root, covered in namespace mode
    mode: SandboxMode

    @classmethod
    def create(
        cls, root: Path, mounts: Sequence[LayerMount], *, hidden: Path, mode: SandboxMode | None = None
    ) -> LayersView:
        """Lay out ``root`` for ``mounts`` (only those: the processor's own request)."""
        mode = mode or detect_mode()
        root = Path(root)
        if os.path.lexists(root):
            remove_tree(root)
        root.mkdir(parents=True)
        for mount in mounts:
            entry = root / mount.name
            if mode is SandboxMode.NAMESPACE:
                entry.mkdir()  # the mount point
            else:
                entry.symlink_to(mount.path, target_is_directory=True)
        view = cls(root, tuple(mounts), Path(hidden), mode)
        if mode is SandboxMode.NAMESPACE:
            view.fstab.write_text(_fstab(view))
        return view

    @property
    def fstab(self) -> Path:
        return self.root.with_name(self.root.name + FSTAB_SUFFIX)

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return wrap_command(argv, self)

    def remove(self) -> None:
        remove_tree(self.root)
        self.fstab.unlink(missing_ok=True)


def wrap_command(argv: Sequence[str], view: LayersView) -> list[str]:
    """The command that runs ``argv`` seeing only ``view``'s layers, read-only."""
    if view.mode is not SandboxMode.NAMESPACE:
        return list(argv)
    return [*_unshare(), "sh", "-c", _SETUP, "pennflow-sandbox", str(view.fstab), *argv]


def _fstab(view: LayersView) -> str:
    """Each layer bound read-only into the view, then the real layers folder covered (if present)."""
    lines = [
        f"{_fstab_field(m.path)} {_fstab_field(view.root / m.name)} none bind,ro 0 0" for m in view.mounts
    ]
    if view.hidden.is_dir():
        lines.append(f"pennflow-layers {_fstab_field(view.hidden)} tmpfs ro,mode=0555,size=4k 0 0")
    return "".join(line + "\n" for line in lines)


def _fstab_field(path: object) -> str:
    """fstab separates fields by blanks: octal-escape them (and the escape character itself)."""
    text = str(path)
    for char in "\\ \t\n":
        text = text.replace(char, f"\\{ord(char):03o}")
    return text


def _unshare() -> list[str]:
    argv = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        argv[1:1] = ["--user", "--map-root-user"]
    return [*argv, "--"]


@cache
def detect_mode() -> SandboxMode:
    """NAMESPACE when a read-only bind mount in a private namespace works here (probed once)."""
    if not (shutil.which("unshare") and shutil.which("setpriv") and shutil.which("mount")):
        return SandboxMode.PERMISSIONS
    with tempfile.TemporaryDirectory(prefix="pennflow-sandbox-") as tmp:
        source, hidden = Path(tmp, "layer"), Path(tmp, "hidden")
        source.mkdir()
        hidden.mkdir()
        (source / "probe").write_text("ok")
        mount = LayerMount(name="probe", type=LayerType.DATA, version=1, checksum=None, path=str(source))
        view = LayersView.create(Path(tmp, "view"), [mount], hidden=hidden, mode=SandboxMode.NAMESPACE)
        check = f"test -r {view.root}/probe/probe && ! touch {view.root}/probe/w 2>/dev/null"
        try:
            done = subprocess.run(
                wrap_command(["sh", "-c", check], view),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=PROBE_TIMEOUT_SECONDS,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return SandboxMode.PERMISSIONS
    return SandboxMode.NAMESPACE if done.returncode == 0 else SandboxMode.PERMISSIONS


def enforced(mode: SandboxMode) -> bool:
    """Whether writes to layers are actually refused for this process's processors."""
    return mode is SandboxMode.NAMESPACE or os.geteuid() != 0
