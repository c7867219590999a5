"""restorex_core.allocator: freed blocks stay for reuse inside a pass, and go back to the system after it."""

from __future__ import annotations

import os

import pytest
import torch

from restorex_core import allocator
from restorex_core.allocator import reuse_freed_memory

pytestmark = pytest.mark.skipif(not allocator.available() or not os.path.exists("/proc/self/statm"),
                                reason="glibc on Linux only (elsewhere reuse_freed_memory does nothing)")
MB = 1 << 20


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def churn() -> int:
    """Allocate, touch and free 128 MB; return how much of it is still resident afterwards."""
    before = rss()
    block = torch.ones(32 * MB)  # 128 MB of fp32, every page touched
    del block
    return rss() - before


def test_freed_memory_is_kept_inside_and_returned_on_leaving():
    assert churn() < 16 * MB  # glibc's default: a block this large is unmapped on free
    with reuse_freed_memory():
        before = rss()
        with reuse_freed_memory():  # re-entrant: the inner exit neither restores nor trims
            kept = churn()
        assert kept > 100 * MB  # still resident: the next op reuses these pages
        assert rss() - before > 100 * MB
    assert rss() - before < 16 * MB  # trimmed on leaving the outermost use
    assert churn() < 16 * MB  # and glibc's defaults are back
