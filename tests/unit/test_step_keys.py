"""The output hash a step records when it succeeds (``pennflow.data.step_keys.folder_hash``)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pennflow.data.step_keys import EMPTY_FOLDER_HASH, folder_hash


def walked_hash(folder: Path) -> str:
    """The rule written out: each file's relative path and content digest, in path order."""
    digest = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink())
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        if path.is_symlink():
            digest.update(b"link:" + os.readlink(path).encode() + b"\0")
        else:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def test_an_empty_output_hashes_as_a_walk_of_it_would_without_one(tmp_path) -> None:
    assert folder_hash(tmp_path) == EMPTY_FOLDER_HASH == walked_hash(tmp_path)


def test_a_folder_of_empty_folders_is_empty_too_and_a_file_changes_it(tmp_path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert folder_hash(tmp_path) == EMPTY_FOLDER_HASH
    (tmp_path / "a" / "b" / "x.txt").write_text("x")
    assert folder_hash(tmp_path) == walked_hash(tmp_path) != EMPTY_FOLDER_HASH


def test_a_symlink_alone_is_not_an_empty_output(tmp_path) -> None:
    (tmp_path / "link").symlink_to("nowhere")
    assert folder_hash(tmp_path) == walked_hash(tmp_path) != EMPTY_FOLDER_HASH


def test_no_folder_or_a_file_has_no_hash(tmp_path) -> None:
    assert folder_hash(tmp_path / "missing") is None
    (tmp_path / "file").write_text("x")
    assert folder_hash(tmp_path / "file") is None
