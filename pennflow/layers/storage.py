"""Local layer folders: immutable versions, and an atomic switch of the current one.

    <root>/.versions/<name>/<version>/     one folder per published version, read-only
    <root>/.versions/<name>/.staging-*     a build or populate in progress (never mounted)
    <root>/<name> -> .versions/<name>/<v>  the current version (a relative symlink)

A new version is written into a staging folder, renamed into place, and the current symlink is
replaced with ``os.replace`` (atomic on POSIX), so a reader never sees a half-written layer. Runs
mount the version folder itself, so a later switch never changes what a running processor sees.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from pathlib import Path

VERSIONS_DIR = ".versions"
STAGING_PREFIX = ".staging-"
WRITE_BITS = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


class LocalLayerStorage:
    def __init__(self, root: Path):
        self.root = Path(root)

    def current_link(self, name: str) -> Path:
        return self.root / name

    def versions_dir(self, name: str) -> Path:
        return self.root / VERSIONS_DIR / name

    def version_dir(self, name: str, version: int) -> Path:
        return self.versions_dir(name) / str(version)

    def versions(self, name: str) -> list[int]:
        folder = self.versions_dir(name)
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())

    # ---------------------------------------------------------------- writing a version

    def new_staging(self, name: str) -> Path:
        path = self.versions_dir(name) / f"{STAGING_PREFIX}{secrets.token_hex(6)}"
        path.mkdir(parents=True)
        return path

    def publish(self, name: str, staging: Path, version: int) -> Path:
        """Freeze ``staging`` and rename it to ``version``'s folder (not yet current)."""
        final = self.version_dir(name, version)
        if final.exists():  # left by a publish whose registry update never happened
            remove_tree(final)
        freeze(staging)
        os.rename(staging, final)
        return final

    def make_current(self, name: str, version: int) -> None:
        """Point ``<root>/<name>`` at ``version`` in one atomic rename."""
        link = self.current_link(name)
        temporary = self.root / f".{name}.{secrets.token_hex(6)}"
        os.symlink(Path(VERSIONS_DIR) / name / str(version), temporary)
        os.replace(temporary, link)

    def discard(self, path: Path) -> None:
        remove_tree(path)

    # ---------------------------------------------------------------- removing versions

    def collect_garbage(self, name: str, keep: set[int], *, below: int) -> list[int]:
        """Remove every published version under ``below`` that is not in ``keep``; returns them.

        ``below`` is the current version as read before listing: a version published while this
        runs is newer than it, so a collector never removes what a concurrent publish just made.
        """
        removed = []
        for version in self.versions(name):
            if version < below and version not in keep and self._retire(self.version_dir(name, version)):
                removed.append(version)
        return removed

    def _retire(self, path: Path) -> bool:
        """Rename to a unique name, then delete: of two collectors racing, one removes it, once."""
        trash = path.with_name(f".trash-{path.name}-{secrets.token_hex(6)}")
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return False
        remove_tree(trash)
        return True

    def remove(self, name: str) -> None:
        link = self.current_link(name)
        if link.is_symlink():
            link.unlink()
        remove_tree(self.versions_dir(name))


def freeze(root: Path) -> None:
    """Drop every write bit: a second line of defence where no private mount namespace is available
    (it stops processors that do not run as root)."""
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) & ~WRITE_BITS)
    for folder, _, _ in sorted(os.walk(root), key=lambda entry: -len(entry[0])):
        os.chmod(folder, stat.S_IMODE(os.stat(folder).st_mode) & ~WRITE_BITS)


def remove_tree(path: Path) -> None:
    """rmtree that first gives back the write bits ``freeze`` took (the owner may be unprivileged)."""
    if not os.path.lexists(path):
        return
    if os.path.islink(path):
        os.unlink(path)
        return
    for folder, _, _ in os.walk(path):
        with contextlib.suppress(OSError):
            os.chmod(folder, stat.S_IMODE(os.stat(folder).st_mode) | stat.S_IWUSR | stat.S_IXUSR)
    shutil.rmtree(path)
