"""Host memory for CPU training: keep freed blocks for reuse instead of giving them back.

glibc's malloc serves every block above its mmap threshold (dynamic, at most 32 MiB) with a
fresh ``mmap`` and unmaps it when freed, and trims the heap top it frees; either way the kernel
zero-fills every page again on its next first touch. A training step allocates and frees the
same activations every time, so on the CPU that is 10-50 thousand page faults per MaskMixAdv
step (batch 8, 128x128). Raising both thresholds to ``KEEP_BYTES`` (the mmap threshold to 32
MiB before glibc 2.35) lets the heap keep them: a step then faults a few hundred times. The
price is that the process keeps its peak footprint.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

KEEP_BYTES = 1 << 30  # blocks up to 1 GiB come from the heap and stay there when freed
# glibc before 2.35 refuses an mmap threshold above 32 MiB (its default maximum); that much
# still covers most activations of a CPU step.
OLD_GLIBC_MMAP_MAX = 32 << 20
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
# The same settings for a process started from here (glibc reads them at its start).
GLIBC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(KEEP_BYTES), "MALLOC_TRIM_THRESHOLD_": str(KEEP_BYTES)}


def keep_freed_memory() -> bool:
    """Raise glibc's trim threshold and mmap threshold to ``KEEP_BYTES`` (the latter to
    ``OLD_GLIBC_MMAP_MAX`` where glibc refuses more) in this process and the data loader workers
    it forks later. Returns whether both took effect: False off Linux or without glibc (musl's
    ``mallopt`` accepts nothing), where the allocator is left as it is."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    trim = mallopt(M_TRIM_THRESHOLD, KEEP_BYTES) == 1
    mmap = any(mallopt(M_MMAP_THRESHOLD, size) == 1 for size in (KEEP_BYTES, OLD_GLIBC_MMAP_MAX))
    return trim and mmap
