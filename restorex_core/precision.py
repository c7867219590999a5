"""The compute precision ``dtype="auto"`` picks, per device.

bf16 halves the memory traffic of the full-resolution levels, which bound the Restormer's speed on a CPU:
on an AVX512-BF16 CPU the default model runs about 2x faster in bf16 than in fp32 at 1024x1024, and its
8-bit output differs from fp32 by 0.24/255 on average, at most 1.6/255 (benchmarks/RESULTS.md, "Precision").
CPUs without native bf16 instructions emulate it slower than fp32, so they stay in fp32; so do CUDA and MPS
until a GPU measurement says otherwise (benchmarks/bench_gpu.py).
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 instruction sets with bf16 dot products


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True on a CPU with bf16 dot-product instructions (read from /proc/cpuinfo; False where unknown)."""
    if platform.system() != "Linux":
        return False
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def auto_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on a CPU that runs it natively, fp32 everywhere else."""
    if torch.device(device).type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32
