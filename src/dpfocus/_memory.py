"""Keep freed memory for reuse while an analysis runs (glibc only; elsewhere nothing changes).

By default glibc hands large freed blocks back to the system at once, so each of an analysis's
large temporaries has its pages faulted in afresh, which is slow on virtual machines: at 1120x1680
(``benchmarks/bench_network.py``'s scene, fresh processes, alternating) the network analysis took
5.72-6.10 s with the default and 4.89-5.53 s with freed blocks kept (in a helper thread, as the
napari widget runs it, 6.11-6.57 against 5.05-5.28 s). Afterwards ``malloc_trim`` gives what is
left over back, so an idle viewer does not hold on to it.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from functools import lru_cache

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
#: glibc's defaults for the two settings put back afterwards (the mmap threshold stays raised)
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_TOP_PAD = 128 << 10, 0
#: blocks up to this size come from the heap (glibc's own ceiling for the threshold)
_MMAP_THRESHOLD = 32 << 20
#: the heap grows in steps of this much beyond a request, and is not trimmed while an analysis runs
_TOP_PAD = 256 << 20
_NO_TRIM = (1 << 31) - 1


@lru_cache(maxsize=1)
def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes, libc.malloc_trim.argtypes = (ctypes.c_int, ctypes.c_int), (ctypes.c_size_t,)
    except (OSError, AttributeError):  # musl or another libc: leave the allocator alone
        return None
    return libc


@contextlib.contextmanager
def reusing_freed_memory():
    """While the block runs, freed blocks up to 32 MB stay in the process for reuse."""
    libc = _glibc()
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    libc.mallopt(_M_TRIM_THRESHOLD, _NO_TRIM)
    libc.mallopt(_M_TOP_PAD, _TOP_PAD)
    try:
        yield
    finally:
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        libc.mallopt(_M_TOP_PAD, _DEFAULT_TOP_PAD)
        libc.malloc_trim(0)
