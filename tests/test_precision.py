"""The device and dtype every host gets from the core (restorex_core.precision), and what a low precision
keeps: each test runs the real choice on this machine, or on a stated /proc/cpuinfo, and can fail."""

from __future__ import annotations

import logging
import platform

import pytest
import torch

from restorex_core import RestoreX, RestoreXConfig, load_checkpoint, precision, save_checkpoint
from restorex_core.errors import DeviceError
from restorex_core.precision import (
    FP16_ON_CPU,
    auto_dtype,
    available_devices,
    cpu_has_native_bf16,
    cpu_has_native_fp16,
    resolve_device,
    resolve_dtype,
)

linux_only = pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc/cpuinfo")
FLAGS = "processor\t: 0\nflags\t\t: fpu sse sse2 avx2 avx512f {extra}\nbogomips\t: 4000\n"


@linux_only
@pytest.mark.parametrize(("extra", "bf16", "fp16"), [("", False, False), ("avx512_bf16", True, False),
                                                     ("amx_bf16 amx_tile avx512_fp16", True, True),
                                                     ("avx512_bf16x avx512_fp16x", False, False)])
def test_native_bf16_and_fp16_are_read_from_the_cpu_flags(tmp_path, extra, bf16, fp16):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(FLAGS.format(extra=extra))
    assert cpu_has_native_bf16(str(cpuinfo)) is bf16 and cpu_has_native_fp16(str(cpuinfo)) is fp16
    assert cpu_has_native_bf16(str(tmp_path / "missing")) is False  # unknown: no bf16


def test_auto_is_bf16_only_on_a_cpu_with_native_bf16_and_fp32_on_gpus():
    assert auto_dtype("cpu") == (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    for device in ("cuda", "cuda:1", "mps"):  # unmeasured on GPUs: fp32 there
        assert auto_dtype(device) == torch.float32
        assert resolve_dtype("auto", device) == torch.float32
    assert resolve_dtype("auto", "cpu") == auto_dtype("cpu")


def test_named_dtypes_and_refusals(caplog):
    assert [resolve_dtype(n, "cuda") for n in ("fp32", "bf16", "fp16")] == [torch.float32, torch.bfloat16,
                                                                             torch.float16]
    assert resolve_dtype(torch.bfloat16, "cpu") == torch.bfloat16
    with pytest.raises(DeviceError, match="auto, fp32, bf16, fp16"):
        resolve_dtype("fp8", "cpu")
    with pytest.raises(DeviceError, match="not torch.int8"):
        resolve_dtype(torch.int8, "cpu")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_fp16_on_a_cpu_without_native_fp16_warns_once_naming_bf16(caplog):
    caplog.set_level(logging.WARNING)
    precision._warn_once.cache_clear()  # once per process: start this process's count here
    resolve_dtype("fp16", "cuda")  # fast there: no warning
    assert not caplog.records
    for _ in range(3):
        assert resolve_dtype("fp16", "cpu") == torch.float16
    # an AVX512-FP16 CPU runs fp16 as fast as bf16 (benchmarks/RESULTS.md): no warning there
    assert [r.getMessage() for r in caplog.records] == ([] if cpu_has_native_fp16() else [FP16_ON_CPU])
    assert "slower than bf16" in FP16_ON_CPU and "use bf16, or auto" in FP16_ON_CPU


def test_devices_this_machine_has_and_a_clear_error_for_one_it_lacks(tmp_path):
    devices = available_devices()
    assert devices[-1] == "cpu" and resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device(devices[0].split(":")[0])
    with pytest.raises(DeviceError, match="not a device") as bad:
        resolve_device("gpu0")
    assert "cpu" in str(bad.value)
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the error for a missing one cannot be seen here")
    with pytest.raises(DeviceError, match="CUDA is not available on this machine") as missing:
        resolve_device("cuda")
    assert f"one of: {', '.join(devices)}" in str(missing.value)
    path = save_checkpoint(RestoreX(RestoreXConfig.tiny()), tmp_path / "tiny.safetensors")
    with pytest.raises(DeviceError, match="CUDA is not available"):  # the library, not torch's raw message
        load_checkpoint(path, device="cuda")


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


def test_a_16_bit_image_keeps_its_tones_in_bf16():
    """The restorer's bf16 residual is added to the full-precision input: a bf16 sum would keep 8 bits (a
    smooth 16-bit gradient came out with 453 distinct values instead of fp32's 45,380, docs/library.md)."""
    torch.manual_seed(0)
    model = RestoreX(RestoreXConfig.tiny()).eval()
    half = RestoreX(RestoreXConfig.tiny()).eval()
    half.load_state_dict(model.state_dict())
    half = half.to(torch.bfloat16)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 128), indexing="ij")
    image = (torch.stack([0.05 + 0.6 * xx, 0.1 + 0.5 * yy, 0.2 + 0.3 * xx * yy])[None] * 65535).round() / 65535

    def tones(x: torch.Tensor) -> int:
        return torch.unique((x * 65535).round()).numel()

    with torch.inference_mode():
        full, low = model.correct(image, seed=0), half.correct(image, seed=0)
    assert tones(image) > 2000
    assert tones(low) > 0.5 * tones(full)  # bf16 alone has 256 steps per octave: a few hundred values
