"""Replacing a folder (a checkpoint, a saved model) so that a complete copy exists at every moment, even across a crash.

The new folder is written next to the target under a temporary name and fsynced; the old one is renamed aside
(`<name>.prev`), the new one renamed into place, the parent directory fsynced, and only then is the old copy
deleted. A process killed at any point leaves either the new folder at `target`, or the old one at `target`
or at `<name>.prev`; `complete_dir` finds whichever is there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

PREVIOUS_SUFFIX = ".prev"
TEMP_SUFFIX = ".tmp"


def temp_dir_for(target: str | os.PathLike) -> Path:
    """An empty folder next to `target` to write its replacement into (left over from a crash: emptied)."""
    target = Path(target)
    tmp = target.with_name(target.name + TEMP_SUFFIX)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def fsync_tree(folder: str | os.PathLike) -> None:
    """Flush every file under `folder`, and the folders themselves, to disk."""
    folder = Path(folder)
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(root)


def _fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_dir(tmp: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Put the finished folder `tmp` at `target`, replacing what is there; the old copy goes only after the new
    one is on disk under its final name."""
    tmp, target = Path(tmp), Path(target)
    previous = target.with_name(target.name + PREVIOUS_SUFFIX)
    fsync_tree(tmp)
    if target.exists():
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(target, previous)
    os.replace(tmp, target)
    _fsync_dir(target.parent)
    shutil.rmtree(previous, ignore_errors=True)
    return target


def complete_dir(target: str | os.PathLike, marker: str) -> Path | None:
    """`target` if it holds the file `marker`, else the old copy a crash during `publish_dir` left aside, else None."""
    target = Path(target)
    for candidate in (target, target.with_name(target.name + PREVIOUS_SUFFIX)):
        if (candidate / marker).is_file():
            return candidate
    return None


def remove_dir(target: str | os.PathLike) -> None:
    """Delete `target` and any aside or temporary copy of it."""
    target = Path(target)
    for suffix in ("", PREVIOUS_SUFFIX, TEMP_SUFFIX):
        shutil.rmtree(target.with_name(target.name + suffix), ignore_errors=True)
