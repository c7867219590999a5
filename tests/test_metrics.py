"""PSNR / SSIM in the paper's protocol, against hand computations and scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from training.metrics import best_curve, gaussian_window, image_metrics, psnr, quantize, ssim


def _u8(x: torch.Tensor) -> np.ndarray:
    return np.round(x.clamp(0, 1).permute(1, 2, 0).double().numpy() * 255).astype(np.uint8)


def _skimage_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    return structural_similarity(_u8(a), _u8(b), gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=255, channel_axis=-1)


@pytest.mark.parametrize("shape", [(3, 11, 11), (3, 37, 52), (3, 96, 70)])
def test_ssim_matches_skimage(shape):
    g = torch.Generator().manual_seed(sum(shape))
    yy, xx = torch.meshgrid(torch.linspace(0, 1, shape[1]), torch.linspace(0, 1, shape[2]), indexing="ij")
    target = (0.5 + 0.4 * torch.sin(6 * xx + 3 * yy)).expand(3, -1, -1) * torch.tensor([1.0, 0.8, 0.6]).view(3, 1, 1)
    pred = (target ** 1.7 + 0.08 * torch.randn(shape, generator=g)).clamp(0, 1)
    ours = float(ssim(pred, target))
    assert abs(ours - _skimage_ssim(pred, target)) < 1e-4
    assert ours < 0.95  # a real difference was scored


def test_ssim_batches_and_channel_mean():
    a, b = torch.rand(2, 3, 20, 24), torch.rand(2, 3, 20, 24)
    batch = ssim(a, b)
    assert batch.shape == (2,)
    assert torch.allclose(batch, torch.stack([ssim(a[i], b[i]) for i in range(2)]))
    per_channel = [float(ssim(a[0, c:c + 1], b[0, c:c + 1])) for c in range(3)]
    assert float(batch[0]) == pytest.approx(sum(per_channel) / 3, abs=1e-12)
    assert float(ssim(a[0], a[0])) == pytest.approx(1.0, abs=1e-12)


def test_gaussian_window_is_the_11_tap_sigma_1_5_kernel():
    g = gaussian_window()
    assert g.shape == (11,) and float(g.sum()) == pytest.approx(1.0)
    assert float(g[5] / g[6]) == pytest.approx(math.exp(0.5 / 1.5**2))


def test_psnr_by_hand():
    a = torch.full((3, 8, 8), 100 / 255)
    b = torch.full((3, 8, 8), 110 / 255)
    assert float(psnr(a, b)) == pytest.approx(10 * math.log10(255**2 / 100))
    b[0, 0, 0] = 200 / 255  # one pixel off by 100, the rest by 10
    mse = (100**2 + (3 * 64 - 1) * 10**2) / (3 * 64)
    assert float(psnr(a, b)) == pytest.approx(10 * math.log10(255**2 / mse))
    assert math.isinf(float(psnr(a, a)))


def test_psnr_rounds_to_8_bits_first():
    a = torch.full((3, 4, 4), 100 / 255)
    assert math.isinf(float(psnr(a + 0.3 / 255, a)))  # rounds to the same level
    assert float(psnr(a + 0.7 / 255, a)) == pytest.approx(10 * math.log10(255**2))  # one level apart
    assert float(psnr(torch.full((3, 4, 4), 1.7), torch.ones(3, 4, 4))) == math.inf  # clamped
    assert torch.equal(quantize(torch.tensor([-0.2, 0.4 / 255, 1.6 / 255, 2.0])),
                       torch.tensor([0.0, 0.0, 2.0, 255.0], dtype=torch.float64))


def test_image_metrics_and_shape_errors():
    a, b = torch.rand(3, 16, 16), torch.rand(3, 16, 16)
    p, s = image_metrics(a, b)
    assert isinstance(p, float) and isinstance(s, float) and p < 20 and s < 0.5
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(a, b[:, :8])
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(a[:, :10], b[:, :10])


def test_best_curve_undoes_a_global_curve_and_nothing_local():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(3, 32, 48, generator=g)
    toned = target.pow(torch.tensor([2.2, 1.0, 0.5]).view(3, 1, 1))  # a different global curve per channel
    assert float(psnr(toned, target)) < 20
    assert float(psnr(best_curve(toned, target), target)) > 45  # only the 8-bit rounding is left
    # a local change (noise) is not a global curve: the fit cannot take it away
    noisy = (target + 0.05 * torch.randn(3, 32, 48, generator=g)).clamp(0, 1)
    assert float(psnr(best_curve(noisy, target), target)) < float(psnr(noisy, target)) + 1.5
    # least squares over all curves: never worse than the identity curve
    assert float(psnr(best_curve(noisy, target), target)) >= float(psnr(noisy, target)) - 0.05
    with pytest.raises(ValueError, match="best_curve"):
        best_curve(target[None], target[None])
