"""Opt-in malloc tuning for a program that owns its process, such as the command line: keep freed memory for
reuse during CPU passes.

A Restormer pass on a CPU allocates and frees tensors of hundreds of megabytes, op after op. glibc's malloc
serves every block above its mmap threshold with a fresh ``mmap``, which the kernel fills with zeroed pages
on first touch, and unmaps it on ``free``: at 1024x1024 the default model spent more than half its time in
these page faults (benchmarks/RESULTS.md, "Allocator": bf16 3.33 s -> 1.55 s). Inside
:func:`reuse_freed_memory` malloc takes every block from its heap and keeps what is freed there (``mallopt``:
no mmap, no trim), so the next op reuses warm pages; :func:`give_back_freed_memory` returns the heap's free
pages to the system (between images), and leaving the context puts glibc's default values back and trims.

**Nothing in the library or the ComfyUI nodes enters it**: by mallopt(3), setting any of these parameters
turns glibc's dynamic mmap threshold off for the rest of the process, even after the values are restored, and
a host such as ComfyUI must keep its allocator as it configured it. The command line enters it for its whole
``correct`` run (tests/test_allocator.py checks both in fresh processes).

Elsewhere (macOS, Windows, musl) it does nothing. Re-entrant: only the outermost use restores and trims.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)
DEFAULTS = {M_TRIM_THRESHOLD: 128 * 1024, M_MMAP_MAX: 65536}  # glibc's values of the two parameters changed
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
    """While inside, malloc keeps freed blocks for reuse; on leaving, glibc's default values return and the heap
    is trimmed. The dynamic mmap threshold stays off for the rest of the process (mallopt(3)): for programs that
    own their process only, never for a library call inside a host."""
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


def give_back_freed_memory() -> None:
    """Return the heap's free pages to the system now (``malloc_trim``), e.g. between two images, so that the
    next image's automatic tile plan sees the same available memory as the first. Changes no setting."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
