"""dtype="auto": which precision each device gets, and what bf16 costs in output on a real (tiny) model."""

from __future__ import annotations

from pathlib import Path

import torch

from restorex_core import RestoreX, RestoreXConfig
from restorex_core.precision import auto_dtype, cpu_has_native_bf16


def test_auto_is_bf16_only_on_a_cpu_that_runs_it_natively():
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    native = any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))
    assert cpu_has_native_bf16() == native
    assert auto_dtype("cpu") == (torch.bfloat16 if native else torch.float32)
    assert auto_dtype(torch.device("cuda")) == torch.float32  # unmeasured on a GPU: fp32 there
    assert auto_dtype("mps") == torch.float32


def test_bf16_model_stays_close_to_fp32():
    torch.manual_seed(0)
    model = RestoreX(RestoreXConfig.tiny()).eval()
    half = RestoreX(RestoreXConfig.tiny()).eval()
    half.load_state_dict(model.state_dict())
    half = half.to(torch.bfloat16)
    image = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        a, b = model.correct(image, seed=3), half.correct(image, seed=3)
    assert b.dtype == image.dtype and b.shape == image.shape
    diff = (a - b).abs()
    assert 0 < diff.max() < 0.05 and diff.mean() < 0.01  # bf16 really ran, and within a few 8-bit levels
