"""The Restormer's zero padding must not show as a line along the image border (issue: a 1-pixel
coloured line along the top and left edge of every output of the trained model)."""

from pathlib import Path

import pytest
import torch

from restorex_core import load_checkpoint

WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "restorex-default.safetensors"


def _edge_jumps(out: torch.Tensor) -> dict[str, tuple[float, float]]:
    """Per border: (mean |edge - next line|, mean |next line - the one after|) in 8-bit levels."""
    o = out[0] * 255
    def jump(a, b):
        return float((a - b).abs().mean())
    return {"top": (jump(o[:, 0], o[:, 1]), jump(o[:, 1], o[:, 2])),
            "bottom": (jump(o[:, -1], o[:, -2]), jump(o[:, -2], o[:, -3])),
            "left": (jump(o[:, :, 0], o[:, :, 1]), jump(o[:, :, 1], o[:, :, 2])),
            "right": (jump(o[:, :, -1], o[:, :, -2]), jump(o[:, :, -2], o[:, :, -3]))}


@pytest.fixture(scope="module")
def model():
    if not WEIGHTS.is_file():
        pytest.skip("bundled weights not present")
    return load_checkpoint(WEIGHTS)


@pytest.mark.parametrize("size", [(60, 84), (64, 96)])  # one size padded to a multiple of 8, one already a multiple
@pytest.mark.parametrize("tile", [None, 48])
def test_no_line_along_the_border(model, size, tile):
    h, w = size
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    # a smooth, dim, coloured gradient: the output must stay smooth up to the last pixel
    img = torch.stack((0.10 + 0.15 * xx, 0.08 + 0.10 * yy, 0.05 + 0.05 * xx * yy))[None]
    with torch.inference_mode():
        out = model.correct(img, seed=0, tile=tile, overlap=16, auto_strength=False)  # the network itself
    for side, (edge, inner) in _edge_jumps(out).items():
        assert edge <= inner + 1.5, f"{side} edge jumps {edge:.1f} levels, the next line {inner:.1f}"
