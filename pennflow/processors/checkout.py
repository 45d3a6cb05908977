"""A processor's repository at a tag, cloned once into a cache and reused.

``$PENNFLOW_HOME/processors/sources/<key of url>/<commit>/`` holds one checkout per commit the tag
resolved to, and ``tags/<key of tag>`` the commit the tag was last seen at. Each use asks git which
commit the tag names now (``git ls-remote``, cheap), so a moved tag is cloned again; when the remote
cannot be reached, the commit last seen is used and the caller says so. Any URL git accepts works:
https, ssh, ``file://`` and a local path. Git never prompts (``GIT_TERMINAL_PROMPT=0``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

GIT_TIMEOUT_SECONDS = 600
COMMIT_LENGTH = 40
INDEX = "source.json"


class CheckoutError(RuntimeError):
    """The repository or tag cannot be had; the message says what git said."""


@dataclass(frozen=True)
class SourceRef:
    url: str
    tag: str

    def __str__(self) -> str:
        return f"{self.url}@{self.tag}"


def parse_source(text: str) -> SourceRef:
    """``URL@TAG``: the tag follows the last '@' that is after the URL's host and path separators."""
    url, sep, tag = text.strip().rpartition("@")
    if not sep or not url or not tag or "/" in tag or ":" in tag:
        raise ValueError(f"{text!r} is not URL@TAG (e.g. https://github.com/org/repo@v1.0.0)")
    return SourceRef(url, tag)


@dataclass(frozen=True)
class Checkout:
    source: SourceRef
    commit: str
    path: Path
    offline: bool = False  # the remote could not be asked: the commit is the one last seen

    @property
    def short(self) -> str:
        return self.commit[:12]


def key_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class CheckoutCache:
    def __init__(self, root: Path):
        self.root = root

    def url_dir(self, url: str) -> Path:
        return self.root / "sources" / key_of(url)

    def checkout(self, source: SourceRef) -> Checkout:
        """The checkout of ``source``'s tag (cloned when this commit is not cached yet)."""
        url_dir = self.url_dir(source.url)
        seen = url_dir / "tags" / key_of(source.tag)
        offline = False
        try:
            commit = remote_commit(source)
        except CheckoutError:
            if not seen.is_file():
                raise
            commit, offline = seen.read_text().strip(), True
        path = url_dir / commit
        if commit and path.is_dir():
            if not offline:
                self._index(source, commit)
            return Checkout(source, commit, path, offline)
        commit = self._clone(source, url_dir)
        seen.parent.mkdir(parents=True, exist_ok=True)
        seen.write_text(commit + "\n")
        self._index(source, commit)
        return Checkout(source, commit, url_dir / commit)

    def _index(self, source: SourceRef, commit: str) -> None:
        """``source.json``: the URL and each tag's commit, for listing (the folder names are hashes)."""
        path = self.url_dir(source.url) / INDEX
        index = self._read_index(path) or {"url": source.url, "tags": {}}
        index["tags"][source.tag] = commit
        path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")

    @staticmethod
    def _read_index(path: Path) -> dict | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("tags"), dict) else None

    def cached(self) -> list[Checkout]:
        """Every checkout in the cache, by URL then tag."""
        found = []
        for index_path in sorted((self.root / "sources").glob(f"*/{INDEX}")):
            index = self._read_index(index_path)
            if index is None:
                continue
            for tag, commit in sorted(index["tags"].items()):
                path = index_path.parent / commit
                if path.is_dir():
                    found.append(Checkout(SourceRef(index["url"], tag), commit, path))
        return sorted(found, key=lambda c: (c.source.url, c.source.tag))

    def _clone(self, source: SourceRef, url_dir: Path) -> str:
        url_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".clone-", dir=url_dir))
        try:
            git(
                "clone",
                "--quiet",
                "--depth",
                "1",
                "--branch",
                source.tag,
                "--",
                source.url,
                str(staging / "c"),
            )
            commit = git("-C", str(staging / "c"), "rev-parse", "HEAD").strip()
            shutil.rmtree(staging / "c" / ".git", ignore_errors=True)  # the files are what runs
            final = url_dir / commit
            if final.is_dir():  # another run cloned it meanwhile
                return commit
            os.replace(staging / "c", final)
            return commit
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def remote_commit(source: SourceRef) -> str:
    """The commit the tag (or branch) names in the remote now, annotated tags peeled."""
    out = git("ls-remote", "--", source.url, f"refs/tags/{source.tag}", f"refs/tags/{source.tag}^{{}}")
    out += git("ls-remote", "--heads", "--", source.url, source.tag) if not out.strip() else ""
    refs = dict(reversed(line.split("\t", 1)) for line in out.splitlines() if "\t" in line)
    commit = refs.get(f"refs/tags/{source.tag}^{{}}") or refs.get(f"refs/tags/{source.tag}")
    commit = commit or refs.get(f"refs/heads/{source.tag}")
    if not commit or len(commit) != COMMIT_LENGTH:
        raise CheckoutError(f"{source.url} has no tag or branch {source.tag!r}")
    return commit


def git(*args: str) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}
    try:
        done = subprocess.run(
            ["git", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except FileNotFoundError:
        raise CheckoutError("git is not installed: it is needed to fetch a processor's sourceUrl") from None
    except subprocess.TimeoutExpired:
        raise CheckoutError(f"git {args[0]} took more than {GIT_TIMEOUT_SECONDS}s") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise CheckoutError(f"git {args[0]} failed: {lines[-1] if lines else f'exit code {done.returncode}'}")
    return done.stdout
