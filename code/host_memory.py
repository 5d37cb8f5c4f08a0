"""Host memory for CPU training: keep freed blocks for reuse instead of giving them back.

glibc's malloc serves every block above its mmap threshold (dynamic, at most 32 MiB) with a
fresh ``mmap`` and unmaps it when freed, and trims the heap top it frees; either way the kernel
zero-fills every page again on its next first touch. A training step allocates and frees the
same activations every time, so on the CPU that is 10-50 thousand page faults per MaskMixAdv
step (batch 8, 128x128). Raising both thresholds to ``KEEP_BYTES`` lets the heap keep them: a
step then faults a few hundred times. The price is that the process keeps its peak footprint.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

KEEP_BYTES = 1 << 30  # blocks up to 1 GiB come from the heap and stay there when freed
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
# The same settings for a process started from here (glibc reads them at its start).
GLIBC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(KEEP_BYTES), "MALLOC_TRIM_THRESHOLD_": str(KEEP_BYTES)}


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to ``KEEP_BYTES`` in this process (and the data
    loader workers it forks later). Returns whether both took effect: False off Linux or
    without glibc (musl's ``mallopt`` accepts nothing), where the allocator is left as it is."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, KEEP_BYTES) == 1 for param in (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD))
