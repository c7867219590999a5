"""training.curve_probe: the curve it applies, the head it fits, and the whole probe on a miniature data folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from training.curve_probe import KNOTS, CurveHead, apply_curve, fit, histograms, main
from training.metrics import psnr


def test_apply_curve_is_piecewise_linear_and_the_head_starts_at_identity():
    x = torch.rand(2, 3, 8, 9, generator=torch.Generator().manual_seed(0))
    identity = torch.linspace(0, 1, KNOTS + 1).expand(2, 3, -1)
    torch.testing.assert_close(apply_curve(x, identity), x)
    squared = identity**2  # the curve x^2 sampled at the knots: exact at the knots, linear between them
    knots_at = torch.tensor([[[0.5, 1 / KNOTS, 1.0]]]).expand(1, 3, -1).reshape(1, 3, 3, 1)
    out = apply_curve(knots_at, squared[:1])
    torch.testing.assert_close(out[0, :, 1:, 0], torch.tensor([[1 / KNOTS**2, 1.0]]).expand(3, -1))
    head = CurveHead(5)
    torch.testing.assert_close(head(torch.randn(4, 5)), torch.linspace(0, 1, KNOTS + 1).expand(4, 3, -1))
    torch.nn.init.normal_(head.net[-1].weight)  # any weights: curves from 0, never decreasing
    curves = head(torch.randn(16, 5))
    assert (curves[..., 0] == 0).all() and (curves.diff(dim=2) > 0).all()
    white = CurveHead(5, white=True)
    torch.testing.assert_close(white(torch.randn(4, 5)), torch.linspace(0, 1, KNOTS + 1).expand(4, 3, -1))
    torch.nn.init.normal_(white.net[-1].weight)
    curves = white(torch.randn(16, 5))
    torch.testing.assert_close(curves[..., -1], torch.ones(16, 3))  # white stays white, whatever the weights
    assert (curves.diff(dim=2) > 0).all()
    assert histograms(x[0]).shape == (96,) and abs(float(histograms(x[0]).pow(2).sum()) - 3.0) < 1e-4


def test_fit_learns_the_curve_that_the_features_name():
    g = torch.Generator().manual_seed(1)
    samples = []
    for k in range(48):  # two kinds of image, told apart by one feature: brighten (gamma 0.5) or leave alone
        x = torch.rand(3, 12, 16, generator=g)
        dark = k % 2 == 0
        samples.append((torch.tensor([1.0 if dark else -1.0, 0.0]), x, x.sqrt() if dark else x))
    head = fit(samples, steps=400, batch=16, lr=3e-3)
    for f, x, y in samples[:4]:
        with torch.no_grad():
            out = apply_curve(x[None], head(f[None]))[0]
        assert float(psnr(out, y)) > 30, float(psnr(out, y))


def _photo(seed: int, h: int = 40, w: int = 56) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4, generator=g), size=(h, w), mode="bicubic")[0]
    return (base.clamp(0.05, 0.95).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def test_probe_runs_end_to_end_and_writes_the_sheet(tmp_path: Path, capsys):
    from restorex_core import RestoreX, RestoreXConfig, save_checkpoint

    root = tmp_path / "data"
    for n, sid in enumerate(("src/Train", "src/HeldA", "src/HeldB")):
        scene = root / "stacks" / sid
        scene.mkdir(parents=True)
        base = _photo(n).astype(np.float64)
        for i, gain in enumerate((0.3, 1.0, 2.0)):
            Image.fromarray(np.clip(base * gain, 0, 255).round().astype(np.uint8)).save(scene / f"{i:02d}.png")
    for s, n in (("kodak24", 1), ("mcmaster", 1), ("bsds500", 2)):
        (root / "photos" / s).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(_photo(10 * i + len(s))).save(root / "photos" / s / f"{i}.png")
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('[data]\nval_scenes = ["src/HeldA", "src/HeldB"]\nsynthetic_exclude = ["kodak24", "mcmaster"]\n')
    torch.manual_seed(0)
    weights = save_checkpoint(RestoreX(RestoreXConfig.tiny()).eval(), tmp_path / "m.safetensors")
    out = tmp_path / "probe"
    main(["--data", str(root), "--weights", str(weights), "--config", str(cfg), "--steps", "20", "--limit", "2",
          "--max-side", "32", "--sweep-side", "32", "--fused-cache", str(tmp_path / "fused"), "--out", str(out),
          "--strip", str(root / "photos" / "kodak24" / "0.png"), str(tmp_path / "strip.png")])
    text = capsys.readouterr().out
    assert "| curve probe |" in text and "Targets for curve probe" in text
    assert {p.name for p in out.iterdir()} >= {"heldout_summary.md", "ev_sweep.md", "targets.md"}
    with Image.open(tmp_path / "strip.png") as im:  # input | the weights | probe | auto-gamma, 320 px each
        assert im.size[0] == 4 * 320
