"""Writing without losing what is on disk: outputs checked before any work, replacements
staged beside their target, files written atomically."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

from dataloaders.io.layout import DATASET_JSON, SLICE_DIR, SPLITS_JSON, VOLUME_DIR


# What a conversion (or the phantom generator) writes into a data root; other files there (caches
# such as random_walker_cache) stay.
ROOT_OUTPUTS = (VOLUME_DIR, SLICE_DIR, DATASET_JSON, SPLITS_JSON)


def held_outputs(out: str, names) -> list[str]:
    """The entries of ``names`` that ``out`` holds: a file, or a folder with anything in it."""
    return [n for n in names if os.path.isfile(os.path.join(out, n))
            or (os.path.isdir(os.path.join(out, n)) and os.listdir(os.path.join(out, n)))]


@contextlib.contextmanager
def staged(path: str, what: str):
    """A new folder beside ``path`` for a replacement of its entries to be written to first, so
    that a failure leaves ``path`` as it was; on the same file system, so that
    :func:`replace_outputs` moves the entries in by renaming. Removed at the end of the block,
    with what it still holds (``path``'s old entries once replaced)."""
    dest = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.realpath(path))}.{what}.",
                            dir=os.path.dirname(os.path.realpath(path)))
    try:
        yield dest
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def replace_outputs(new: str, out: str, names) -> None:
    """Make the entries ``names`` of ``out`` those written to ``new`` (:func:`staged`; one not
    written there is removed from ``out``). Out's old entries move into ``new``, which the caller
    deletes; renames within one file system, so nothing is copied."""
    old = os.path.join(new, ".old")
    os.mkdir(old)
    for n in names:
        if os.path.lexists(os.path.join(out, n)):
            os.rename(os.path.join(out, n), os.path.join(old, n))
    for n in names:
        if os.path.lexists(os.path.join(new, n)):
            os.rename(os.path.join(new, n), os.path.join(out, n))


def check_outputs(flag: str, paths, overwrite: bool = False) -> None:
    """ValueError naming ``flag`` when a file of ``paths`` cannot be written (a folder on its way
    is a file, or it is a folder) or, unless ``overwrite``, already exists. Called before any work,
    so that a job never fails at its end and nothing on disk is replaced unasked."""
    for path in paths:
        parent = os.path.dirname(os.path.abspath(path))
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise ValueError(f"{flag}: {parent} is a file, not a folder")
        if os.path.isdir(path):
            raise ValueError(f"{flag}: {path} is a folder")
        if os.path.exists(path) and not overwrite:
            raise ValueError(f"{flag}: {path} exists; pass --overwrite to replace it")


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "", fsync: bool = False):
    """A temporary path beside ``path`` (unique to this process, ending in ``suffix``: ITK picks
    a format by it) for the block to write; renamed to ``path`` when the block succeeds and removed
    when it fails, so a failed write neither replaces a good file nor leaves a partial one. With
    ``fsync`` the file, then its folder after the rename, are flushed to disk (checkpoints)."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = f"{os.path.abspath(path)}.{os.getpid()}.tmp{suffix}"
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
        if fsync:
            _fsync(folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
