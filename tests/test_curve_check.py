"""training.curve_check: the tone path alone on the held-out subsets, with its brightness error and best gamma."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.curve_check import best_gamma_psnr, luma, main
from training.metrics import psnr


def test_best_gamma_finds_a_brightness_error_and_only_that():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(3, 32, 32, generator=g) * 0.8 + 0.1
    dark = target ** 1.5  # the right picture, too dark
    assert luma(dark) < luma(target) - 10
    assert best_gamma_psnr(dark, target) > float(psnr(dark, target)) + 10 and best_gamma_psnr(dark, target) > 40
    noisy = (target + 0.1 * torch.randn(3, 32, 32, generator=g)).clamp(0, 1)  # right brightness, wrong detail
    assert best_gamma_psnr(noisy, target) < float(psnr(noisy, target)) + 0.5


def _scene(seed: int) -> np.ndarray:
    """A 40 x 56 8-bit picture: a colour ramp with a bright square, in [0.05, 0.9]."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.05, 0.6, 56)[None, :, None] * rng.uniform(0.5, 1.0, 3)
    img = np.broadcast_to(ramp, (40, 56, 3)).copy()
    img[8:20, 10:24] = 0.9
    return (img * 255).round().astype(np.uint8)


def mini_data(tmp_path: Path, gains: tuple[float, ...] = (0.3, 1.0, 2.0)) -> tuple[Path, Path]:
    """A data folder of two held-out stacks (a frame per gain) and one held-out photo, and the config naming them."""
    root = tmp_path / "data"
    for n, sid in enumerate(("src/HeldA", "src/HeldB")):
        scene = root / "stacks" / sid
        scene.mkdir(parents=True)
        base = _scene(n).astype(np.float64)
        for i, gain in enumerate(gains):
            Image.fromarray(np.clip(base * gain, 0, 255).round().astype(np.uint8)).save(scene / f"{i:02d}.png")
    (root / "photos" / "kodak24").mkdir(parents=True)
    Image.fromarray(_scene(7)).save(root / "photos" / "kodak24" / "0.png")
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('[data]\nval_scenes = ["src/HeldA", "src/HeldB"]\nsynthetic_exclude = ["kodak24"]\n')
    return root, cfg


def test_curve_check_prints_a_row_per_file_and_their_mean(tmp_path: Path, capsys):
    from restorex_core import RestoreX, RestoreXConfig, save_checkpoint

    root, cfg = mini_data(tmp_path)
    files = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = RestoreX(RestoreXConfig.tiny().replace(tone={"knots": 4, "prior_dim": 16, "hidden": 8})).eval()
        torch.nn.init.normal_(model.tone.net[-1].weight, std=0.5)  # curves that differ from the identity and each other
        files.append(save_checkpoint(model, tmp_path / f"head{seed}.safetensors"))
    main([*map(str, files), "--data", str(root), "--config", str(cfg), "--fused-cache", str(tmp_path / "fused"),
          "--side", "32", "--mean"])
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| head") or line.startswith("| mean")]
    assert [r.split(" | ")[0] for r in rows] == ["| head0", "| head1", "| mean of 2"], table
    for r in rows:  # 8 subsets: PSNR / brightness error / best-gamma PSNR, the best gamma never below the PSNR
        cells = [c.split(" / ") for c in r.strip("|").split(" | ")[1:-1]]
        assert len(cells) == 8
        assert all(float(g) >= float(p) - 1e-6 for p, _, g in cells), r
    plain = save_checkpoint(RestoreX(RestoreXConfig.tiny()).eval(), tmp_path / "plain.safetensors")
    with pytest.raises(SystemExit, match="no tone path"):
        main([str(plain), "--data", str(root), "--config", str(cfg)])
