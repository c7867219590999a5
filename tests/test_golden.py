"""Seeded golden: the tiny model's correction of a fixed 32x32 image, within 1/255 per pixel.

Regenerate (after an intended change) with: pytest tests/test_golden.py --update-goldens
"""

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from restorex_core import RestoreX, RestoreXConfig

GOLDEN = Path(__file__).parent / "goldens" / "tiny_correct_32.safetensors"


def test_tiny_pipeline_matches_golden(request):
    torch.manual_seed(1234)
    model = RestoreX(RestoreXConfig.tiny()).eval()
    g = torch.Generator().manual_seed(99)
    image = torch.rand(1, 3, 32, 32, generator=g)
    with torch.inference_mode():
        out = model.correct(image, seed=7)
    if request.config.getoption("--update-goldens") or not GOLDEN.exists():
        assert request.config.getoption("--update-goldens"), f"{GOLDEN} is missing: run with --update-goldens"
        save_file({"out": out.contiguous()}, GOLDEN)
    golden = load_file(GOLDEN)["out"]
    err = (out - golden).abs() * 255
    hist = torch.histc(err, bins=5, min=0, max=float(err.max()) + 1e-9).tolist()
    assert err.max() <= 1.0, f"max error {err.max():.3f}/255; error histogram {hist}"
