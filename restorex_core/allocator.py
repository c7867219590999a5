"""Keep freed memory for reuse during a CPU pass, then give it back.

A Restormer pass on a CPU allocates and frees tensors of hundreds of megabytes, op after op. glibc's malloc
serves every block above 32 MB with a fresh ``mmap``, which the kernel fills with zeroed pages on first
touch, and unmaps it on ``free``: at 1024x1024 the default model spent more than half its time in these
page faults (benchmarks/RESULTS.md, "Allocator": bf16 3.33 s -> 1.55 s). Inside :func:`reuse_freed_memory`
malloc takes every block from its heap and keeps what is freed there (``mallopt``: no mmap, no trim), so
the next op reuses warm pages; on leaving, the settings go back to glibc's defaults and ``malloc_trim``
returns the heap's free pages to the system, so a host such as ComfyUI does not keep the pass's peak.

Elsewhere (macOS, Windows, musl) it does nothing. Re-entrant: only the outermost use restores and trims.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # mallopt parameters (malloc.h)
DEFAULTS = {M_TRIM_THRESHOLD: 128 * 1024, M_MMAP_THRESHOLD: 128 * 1024, M_MMAP_MAX: 65536}  # glibc's
_lock = threading.Lock()
_depth = 0


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: musl has mallopt but not this)
        libc.mallopt.argtypes, libc.malloc_trim.argtypes = [ctypes.c_int, ctypes.c_int], [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


def available() -> bool:
    """True where :func:`reuse_freed_memory` changes anything (glibc)."""
    return _glibc() is not None


@contextmanager
def reuse_freed_memory() -> Iterator[None]:
    """While inside, malloc keeps freed blocks for reuse; on leaving, the defaults return and the heap is trimmed."""
    global _depth
    libc = _glibc()
    if libc is None:
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            libc.mallopt(M_MMAP_MAX, 0)
            libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for param, value in DEFAULTS.items():
                    libc.mallopt(param, value)
                libc.malloc_trim(0)
