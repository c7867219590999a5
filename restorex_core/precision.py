"""Where and in what precision a model runs: the one choice of device and dtype every host makes through.

``dtype="auto"``: bf16 halves the memory traffic of the full-resolution levels, which bound the Restormer's
speed on a CPU: on an AVX512-BF16 CPU the default model runs about 2x faster in bf16 than in fp32 at 1024x1024,
and its 8-bit output differs from fp32 by 0.24/255 on average, at most 1.6/255 (benchmarks/RESULTS.md,
"Speed against CoTF", the bf16 row). CPUs without native bf16 instructions emulate it slower than fp32, so they
stay in fp32; so do CUDA and MPS until a GPU measurement says otherwise (benchmarks/bench_gpu.py). fp16 on a CPU
without native fp16 instructions is emulated: it runs, with a warning (on an AVX512-FP16 CPU it runs as fast as bf16:
benchmarks/RESULTS.md, "Precision and batches").
"""

from __future__ import annotations

import functools
import logging
import platform
from pathlib import Path

import torch

from .errors import DeviceError

logger = logging.getLogger(__name__)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 instruction sets with bf16 dot products
NATIVE_FP16_FLAGS = ("avx512_fp16", "amx_fp16")  # and with fp16 arithmetic
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # the names hosts offer
FP16_ON_CPU = ("fp16 on this CPU (no AVX512-FP16) is emulated: far slower than bf16 (issue 23 measured 200x); "
               "use bf16, or auto (bf16 where the CPU runs it natively, else fp32)")


@functools.cache
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's instruction-set flags, read from ``cpuinfo`` (empty where unknown: not Linux, unreadable)."""
    if platform.system() != "Linux":
        return frozenset()
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    return frozenset(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
                          []))


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True on a CPU with bf16 dot-product instructions (False where unknown)."""
    return not cpu_flags(cpuinfo).isdisjoint(NATIVE_BF16_FLAGS)


def cpu_has_native_fp16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True on a CPU with fp16 arithmetic instructions (False where unknown)."""
    return not cpu_flags(cpuinfo).isdisjoint(NATIVE_FP16_FLAGS)


def auto_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on a CPU that runs it natively, fp32 everywhere else."""
    if torch.device(device).type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def resolve_dtype(dtype: str | torch.dtype, device: torch.device | str) -> torch.dtype:
    """The compute dtype for ``dtype`` ("auto", "fp32", "bf16", "fp16" or a torch dtype) on ``device``.

    fp16 on a CPU without native fp16 is allowed but logged once as a warning naming the faster choices.
    """
    if isinstance(dtype, torch.dtype):
        chosen = dtype
    elif dtype == "auto":
        return auto_dtype(device)
    elif dtype in DTYPES:
        chosen = DTYPES[dtype]
    else:
        raise DeviceError(f"dtype must be auto, {', '.join(DTYPES)} (or a torch dtype), got {dtype!r}")
    if chosen not in DTYPES.values():
        raise DeviceError(f"RestoreX runs in {', '.join(DTYPES)}, not {chosen}")
    if chosen == torch.float16 and torch.device(device).type == "cpu" and not cpu_has_native_fp16():
        _warn_once(FP16_ON_CPU)
    return chosen


@functools.cache
def _warn_once(message: str) -> None:
    logger.warning(message)


def available_devices() -> list[str]:
    """The devices this machine can run on, in the order ``"auto"`` prefers them (the CPU last)."""
    found = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if torch.backends.mps.is_available():
        found.append("mps")
    return [*found, "cpu"]


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` ("auto": CUDA, then MPS, then the CPU) as a torch device this machine has, or a
    :class:`DeviceError` naming the devices it does have (instead of torch's error at the first tensor moved)."""
    available = available_devices()
    if device == "auto":
        return torch.device("cuda" if available[0].startswith("cuda") else available[0])
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise DeviceError(f"{device!r} is not a device; use auto or one of this machine's: "
                          f"{', '.join(available)}") from e
    if chosen.type == "cpu":
        return chosen
    if chosen.type == "cuda" and not torch.cuda.is_available():
        why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise DeviceError(f"device {str(device)!r}: CUDA is not available on this machine ({why}); "
                          f"use auto or one of: {', '.join(available)}")
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise DeviceError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s); "
                          f"use auto or one of: {', '.join(available)}")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {str(device)!r}: MPS is not available on this machine; use auto or one of: "
                          f"{', '.join(available)}")
    if chosen.type not in ("cuda", "mps"):
        raise DeviceError(f"device {str(device)!r}: RestoreX runs on cpu, cuda or mps; this machine has: "
                          f"{', '.join(available)}")
    return chosen
