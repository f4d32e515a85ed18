"""Let a training process reuse the host memory it frees, so XLA:CPU's step buffers are not fresh pages.

XLA:CPU allocates an execution's temporary buffer with malloc and frees it when the step ends.
glibc serves blocks that large with fresh `mmap` pages and unmaps them on free, so every step
page-faults through its whole buffer while the kernel zero-fills it, a sizeable share of a small
model's step. Raising malloc's mmap and trim thresholds keeps such blocks in the heap, where the
next step finds the same, already mapped pages. Blocks above 64 MB malloc'd off the main thread, as
XLA's executions are, are still mapped afresh whatever the settings (glibc's thread arenas grow in
64 MB heaps), so the 124M step's much larger buffer faults as before. One arena for every thread
(`M_ARENA_MAX=1`, which counts only if set before XLA's threads first malloc) would keep it, but
serialises their mallocs: it sped up the 124M step but slowed the character recipe's step and
decoding, so it is not set here (the figures are in the performance log of the docs).

Only training asks for this (`gpt2 train`, Keras `fit`, the training benchmark): it changes the
whole process's malloc, and generation measured the same with it.
"""

from __future__ import annotations

import ctypes
import os
import platform

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# The largest value mallopt takes (a C int, 2 GiB): blocks up to it come from the heap and stay there.
_THRESHOLD = 2**31 - 1


def reuse_freed_memory() -> bool:
    """Keep large freed blocks in glibc's heap for the next step; True where it took effect.

    Does nothing off glibc (macOS, musl) and where the user set malloc's own tunables
    (`GLIBC_TUNABLES=glibc.malloc...`), which stay theirs.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    mallopt = ctypes.CDLL(None).mallopt
    return bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, _THRESHOLD))
