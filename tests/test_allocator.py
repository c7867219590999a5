"""restorex_core.allocator: an opt-in the command line enters; the library and the nodes leave malloc alone.

Inside ``reuse_freed_memory`` freed blocks stay for reuse and go back to the system on leaving (or on
``give_back_freed_memory``). Outside it glibc keeps its own behaviour, its dynamic mmap threshold included,
which mallopt(3) turns off for good once any of these parameters is set: checked in fresh processes.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from restorex_core import allocator
from restorex_core.allocator import give_back_freed_memory, reuse_freed_memory

pytestmark = pytest.mark.skipif(not allocator.available() or not os.path.exists("/proc/self/statm"),
                                reason="glibc on Linux only (elsewhere reuse_freed_memory does nothing)")
MB = 1 << 20
REPO = Path(__file__).resolve().parent.parent
# Whether glibc's mmap threshold still adapts: a freed mmapped block raises the threshold to its size, so the
# same request comes from the heap the second time (bit 2 of a chunk's size field: IS_MMAPPED). Where
# mallopt has switched the adaptation off, both requests are mmapped.
PROBE = """
import ctypes
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
def mmapped(n):
    p = libc.malloc(n)
    flag = ctypes.c_size_t.from_address(p - ctypes.sizeof(ctypes.c_size_t)).value & 2
    libc.free(p)
    return bool(flag)
mmapped(30 << 20)
print("dynamic" if not mmapped(30 << 20) else "fixed")
"""


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def churn() -> int:
    """Allocate, touch and free 128 MB; return how much of it is still resident afterwards."""
    before = rss()
    block = torch.ones(32 * MB)  # 128 MB of fp32, every page touched
    del block
    return rss() - before


def in_fresh_process(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code + PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300, check=True)
    return out.stdout.split()[-1]


def test_freed_memory_is_kept_inside_and_returned_on_leaving():
    with reuse_freed_memory():
        before = rss()
        with reuse_freed_memory():  # re-entrant: the inner exit neither restores nor trims
            kept = churn()
        assert kept > 100 * MB  # still resident: the next op reuses these pages
        assert rss() - before > 100 * MB
        give_back_freed_memory()  # between two images: returned, the settings kept
        assert rss() - before < 16 * MB
        assert churn() > 100 * MB
    assert rss() - before < 16 * MB  # trimmed on leaving the outermost use


def test_the_library_keeps_glibcs_dynamic_mmap_threshold():
    library = """
import torch
from restorex_core import RestoreX, RestoreXConfig, correct_sequence
model = RestoreX(RestoreXConfig.tiny()).eval()
with torch.inference_mode():
    model.correct(torch.rand(1, 3, 64, 64))
    correct_sequence(model, torch.rand(3, 3, 32, 32), window=3)
"""
    assert in_fresh_process(library) == "dynamic"
    # the probe can tell: once the tuning has been entered, even left, the threshold is fixed for good
    assert in_fresh_process("from restorex_core.allocator import reuse_freed_memory\n"
                            "with reuse_freed_memory():\n    pass\n") == "fixed"


def test_only_the_command_line_enters_the_tuning():
    users = set()
    for path in REPO.glob("*/**/*.py"):
        if ".venv" in path.parts or path.name == "allocator.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("allocator"):
                users.add(path.relative_to(REPO).parts[0])
            elif isinstance(node, ast.Import) and any(a.name.endswith(".allocator") for a in node.names):
                users.add(path.relative_to(REPO).parts[0])
    assert users <= {"restorex_cli", "tests", "benchmarks"}
    assert "restorex_cli" in users
