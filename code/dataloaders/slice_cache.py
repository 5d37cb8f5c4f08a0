"""A disk cache of per-slice labels derived from a slice's arrays (random walker, points).

``SliceCache`` stores one ``<cache_dir>/<key>.npz`` per slice holding ``label`` and ``digest``, a
hash of everything the label depends on (the subclass's :meth:`digest`); ``get`` recomputes (and
overwrites) when the digest differs, so changed inputs or settings never serve a stale label.
Files are written atomically (temporary file + ``os.replace``), so parallel builders and
interrupted runs leave either the old or the new file, never a partial one. Subclasses implement
:meth:`digest` and :meth:`compute` over the same positional inputs.
"""
from __future__ import annotations

import multiprocessing
import os
import re

import numpy as np
from tqdm import tqdm

from dataloaders.io import atomic_path

_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


class SliceCache:
    """Labels ``compute(*inputs)`` of slices named by file-name safe keys such as
    ``patient001_frame01_slice_3``, stored in ``cache_dir``."""

    desc = "labels"

    def __init__(self, cache_dir: str):
        self.cache_dir = cache_dir

    def digest(self, *inputs) -> str:
        """Hex digest of the inputs and settings that determine the label."""
        raise NotImplementedError

    def compute(self, *inputs) -> np.ndarray:
        raise NotImplementedError

    def path(self, key: str) -> str:
        """Cache file of ``key``; ValueError for keys that are not plain file names."""
        if not isinstance(key, str) or not _KEY_RE.match(key) or key in (".", ".."):
            raise ValueError(f"{type(self).__name__}: key {key!r} must be a plain file name "
                             "(letters, digits, '_', '-', '.')")
        return os.path.join(self.cache_dir, key + ".npz")

    def _load(self, path: str, digest: str) -> np.ndarray | None:
        try:
            with np.load(path, allow_pickle=False) as f:
                if str(f["digest"]) != digest:
                    return None
                return f["label"]
        except (OSError, KeyError, ValueError, EOFError):
            # Missing or unreadable (e.g. foreign) file: treat as a miss and overwrite it.
            return None

    def _store(self, path: str, label: np.ndarray, digest: str) -> None:
        os.makedirs(self.cache_dir, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, label=label, digest=np.array(digest))

    def cached(self, key: str, *inputs) -> bool:
        """True if a current label for these inputs is on disk."""
        return self._load(self.path(key), self.digest(*inputs)) is not None

    def get(self, key: str, *inputs) -> np.ndarray:
        """The label of the slice ``key``, from disk or computed and stored."""
        path = self.path(key)
        digest = self.digest(*inputs)
        label = self._load(path, digest)
        if label is None:
            label = self.compute(*inputs)
            self._store(path, label, digest)
        return label

    def build(self, items, progress: bool = True, workers: int = 0) -> int:
        """Precompute the labels of ``items``, a sequence of (key, *inputs).

        ``workers`` > 1 spreads the work over a process pool ("spawn", safe when torch or
        threads are already running in the caller). Returns the number of slices computed
        (those already cached are skipped).
        """
        todo = [it for it in items if not self.cached(*it)]
        bar = tqdm(total=len(todo), desc=self.desc, disable=not progress)
        if workers > 1 and len(todo) > 1:
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(workers) as pool:
                for _ in pool.imap_unordered(self._get_item, todo):
                    bar.update()
        else:
            for it in todo:
                self.get(*it)
                bar.update()
        bar.close()
        return len(todo)

    def _get_item(self, item) -> None:
        self.get(*item)
