"""training.curve_probe: the curve it applies, the head it fits, and the whole probe on a miniature data folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

from restorex_core.arch.tone import ToneConfig, apply_curves, identity_curves
from training.curve_check import luma
from training.curve_probe import KNOTS, Probe, StackSource, cross_validate, cv_markdown, fit, main
from training.metrics import psnr


def test_the_white_probe_ends_every_curve_at_one():
    config = ToneConfig(knots=KNOTS, prior_dim=1, num_priors=2, bins=2)  # features: 2 priors + 3 x 2 bins = 8
    white = Probe(config, white=True)
    torch.testing.assert_close(white(torch.randn(4, 8)), identity_curves(4, KNOTS))
    torch.nn.init.normal_(white.head.net[-1].weight)  # any weights: white stays white, curves rise
    curves = white(torch.randn(16, 8))
    torch.testing.assert_close(curves[..., -1], torch.ones(16, 3))
    assert (curves.diff(dim=2) > 0).all()
    assert not torch.allclose(Probe(config).head.net[-1].weight, white.head.net[-1].weight)


def test_fit_learns_the_curve_that_the_features_name():
    g = torch.Generator().manual_seed(1)
    samples = []
    for k in range(48):  # two kinds of image, told apart by one feature: brighten (gamma 0.5) or leave alone
        x = torch.rand(3, 12, 16, generator=g) * 0.8
        dark = k % 2 == 0
        samples.append((torch.tensor([1.0 if dark else -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]), x,
                        x.sqrt() if dark else x))
    config = ToneConfig(knots=KNOTS, prior_dim=1, num_priors=2, bins=2, hidden=32)  # 2 + 3 x 2 = 8 features
    head = fit(samples, config, steps=400, batch=16, lr=3e-3, guard=config.guard)
    for f, x, y in samples[:4]:
        with torch.no_grad():
            out = apply_curves(x[None], head(f[None]), config.guard)[0]
        assert float(psnr(out, y)) > 30, float(psnr(out, y))


def _photo(seed: int, h: int = 40, w: int = 56) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4, generator=g), size=(h, w), mode="bicubic")[0]
    return (base.clamp(0.05, 0.95).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def test_probe_runs_end_to_end_and_writes_the_sheet(tmp_path: Path, capsys):
    from restorex_core import RestoreX, RestoreXConfig, load_checkpoint, save_checkpoint

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
          "--fusion-alpha", "0.25", "--seed", "1",
          "--strip", str(root / "photos" / "kodak24" / "0.png"), str(tmp_path / "strip.png"),
          "--export", str(tmp_path / "toned.safetensors")])
    text = capsys.readouterr().out
    assert "| curve probe |" in text and "Targets for curve probe" in text
    assert {p.name for p in out.iterdir()} >= {"heldout_summary.md", "ev_sweep.md", "targets.md"}
    with Image.open(tmp_path / "strip.png") as im:  # input | the weights | probe | auto-gamma, 320 px each
        assert im.size[0] == 4 * 320
    toned = load_checkpoint(tmp_path / "toned.safetensors")  # the weights + the fitted head as their tone path
    assert toned.config.tone.knots == KNOTS and toned.config.tone.prior_dim == toned.config.pem.dim
    plain = load_checkpoint(weights)
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in toned.state_dict().items()
               if not k.startswith("tone."))
    with pytest.raises(SystemExit):
        main(["--data", str(root), "--weights", str(weights), "--white", "--export", str(tmp_path / "w.safetensors")])


def _over_exposed(top: float) -> list[tuple[Tensor, Tensor, Tensor]]:
    """16 over-exposed samples: darken everything by 0.6, but the top third is clipped in the input."""
    g = torch.Generator().manual_seed(2)
    samples = []
    for _ in range(16):
        x = torch.rand(3, 24, 24, generator=g) * top
        x[:, :8] = 1.0
        y = x * 0.6
        y[:, :8] = 0.6 * torch.rand(3, 1, 1, generator=g) + 0.2  # what the sky really was: anything, seen by no input
        samples.append((torch.zeros(8), x, y))
    return samples


def test_keep_blown_fits_a_curve_that_leaves_a_clipped_sky_bright():
    samples = _over_exposed(0.85)
    config = ToneConfig(knots=KNOTS, prior_dim=1, num_priors=2, bins=2, hidden=32)
    tops = {}
    for keep in (0.0, 0.5, 1.0):
        head = fit(samples, config, steps=300, batch=16, lr=3e-3, guard=config.guard, keep_blown=keep)
        with torch.no_grad():
            sky, rest = apply_curves(torch.stack([s[1] for s in samples]), head(torch.zeros(1, 8)).expand(16, 3, -1),
                                     config.guard).split((8, 16), dim=2)
        tops[keep] = float(sky.mean())
        ys = torch.stack([s[2] for s in samples])[:, :, 8:]
        assert float((rest - ys).abs().mean()) < 0.03, keep  # below the clip the curve darkens as asked, either way
    assert tops[1.0] > 0.95 and tops[0.0] < 0.7, tops  # a white sky stays white; fitted plainly it turns grey
    assert tops[0.0] + 0.1 < tops[0.5] < tops[1.0] - 0.1, tops  # half kept: a light grey between the two


def test_max_slope_softens_the_cliff_below_a_kept_white():
    samples = _over_exposed(0.96)  # darkened up to 0.96, white kept above: the curve's last segment becomes a cliff
    config = ToneConfig(knots=KNOTS, prior_dim=1, num_priors=2, bins=2, hidden=32)
    steep = {}
    for cap in (0.0, 2.5):
        head = fit(samples, config, steps=300, batch=16, lr=3e-3, guard=config.guard, keep_blown=1.0, max_slope=cap)
        with torch.no_grad():
            steep[cap] = float(head(torch.zeros(1, 8)).diff(dim=2).max()) * KNOTS
    assert steep[0.0] > 4 and steep[2.5] < 0.8 * steep[0.0], steep


def test_slope_from_caps_the_bright_segments_only():
    """A dark photo needs a steep bottom (x4), an over-exposed one a cliff at the top: capped from 0.5 up, the cliff
    softens and the lift stays; capped everywhere, the lift goes too."""
    g = torch.Generator().manual_seed(3)
    bright = [(torch.tensor([-1.0] + [0.0] * 7), x, y) for _, x, y in _over_exposed(0.96)]
    dark = []
    for _ in range(16):
        x = torch.rand(3, 24, 24, generator=g) * 0.2
        dark.append((torch.tensor([1.0] + [0.0] * 7), x, 4 * x))
    config = ToneConfig(knots=KNOTS, prior_dim=1, num_priors=2, bins=2, hidden=32)
    slopes = {}
    for name, cap, start in (("free", 0.0, 0.0), ("top", 2.5, 0.5), ("all", 2.5, 0.0)):
        head = fit(bright + dark, config, steps=400, batch=16, lr=3e-3, guard=config.guard, keep_blown=1.0,
                   max_slope=cap, slope_from=start)
        with torch.no_grad():
            s = head(torch.stack([bright[0][0], dark[0][0]])).diff(dim=2) * KNOTS
        slopes[name] = (float(s[0].max()), float(s[1, :, : KNOTS // 4].mean()))  # bright's steepest, dark's bottom
    assert slopes["free"][0] > 4 and slopes["top"][0] < 0.8 * slopes["free"][0], slopes  # the cliff softens
    lift = slopes["free"][1]  # about 3.5 of the 4 asked, in 400 steps
    assert slopes["top"][1] > 0.95 * lift and slopes["all"][1] < 0.8 * lift, slopes  # kept unless the bottom is capped
    with pytest.raises(ValueError, match="slope_from"):
        fit(bright, config, steps=1, max_slope=2.5, slope_from=1.0)


def test_cross_validation_scores_each_scene_with_a_head_that_never_saw_it():
    """Six scenes told apart only by a one-hot feature, each with its own brightening: a head fitted on all of them
    gets every scene right; scored on scenes it was not fitted on it cannot, and the cross-validation says so."""
    g = torch.Generator().manual_seed(3)
    samples, sources = [], []
    for scene in range(6):
        gain = 1.5 if scene % 2 else 3.0
        for _ in range(3):
            x = torch.rand(3, 12, 16, generator=g) * 0.2 + 0.05
            f = torch.zeros(12)
            f[scene] = 1.0
            samples.append((f, x, (x * gain).clamp(0, 1)))
            sources.append(StackSource(f"s{scene}", "under", 0.0))
    config = ToneConfig(knots=KNOTS, prior_dim=6, num_priors=1, bins=2, hidden=32)  # 6 + 3 x 2 = 12 features
    kw = {"steps": 300, "batch": 16, "lr": 3e-3}
    head = fit(samples, config, **kw)

    with torch.no_grad():
        seen = [abs(luma(apply_curves(x[None], head(f[None]), None)[0]) - luma(y)) for f, x, y in samples]
    rows = cross_validate(samples, sources, config, folds=3, **kw)
    assert len(rows) == len(samples) and {r[0] for r in rows} == {"under"}
    unseen = [abs(out - target) for _, _, out, target, _ in rows]
    assert sum(seen) / len(seen) < 3 and sum(unseen) / len(unseen) > 3 * sum(seen) / len(seen), (seen, unseen)
    table = cv_markdown(rows, 3)
    assert "3-fold" in table and "| rule under | 18 |" in table and "| rule over" not in table
    with pytest.raises(ValueError, match="as many training stack scenes"):
        cross_validate(samples, sources, config, folds=7, **kw)


def test_probe_cross_validates_on_a_data_folder(tmp_path: Path, capsys):
    from restorex_core import RestoreX, RestoreXConfig, save_checkpoint
    from tests.test_curve_check import mini_data

    root, cfg = mini_data(tmp_path, gains=(0.3, 1.0, 2.0, 5.0))  # two held-out scenes: add four to train on
    for n in range(4):
        scene = root / "stacks" / "src" / f"Train{n}"
        scene.mkdir(parents=True)
        base = _photo(20 + n).astype(np.float64) * 0.4
        for i, gain in enumerate((0.3, 1.0, 2.0, 5.0)):
            Image.fromarray(np.clip(base * gain, 0, 255).round().astype(np.uint8)).save(scene / f"{i:02d}.png")
    (root / "photos" / "bsds500").mkdir(parents=True)
    Image.fromarray(_photo(30)).save(root / "photos" / "bsds500" / "0.png")
    torch.manual_seed(0)
    weights = save_checkpoint(RestoreX(RestoreXConfig.tiny()).eval(), tmp_path / "m.safetensors")
    args = ["--data", str(root), "--weights", str(weights), "--config", str(cfg), "--steps", "10",
            "--fused-cache", str(tmp_path / "fused")]
    main([*args, "--cv", "2"])
    table = capsys.readouterr().out
    assert "2-fold cross-validation" in table, table
    for side in ("under", "over"):  # each training scene has one rule frame of each role
        assert f"| rule {side} | 4 |" in table, table
    with pytest.raises(SystemExit):
        main([*args, "--cv", "2", "--export", str(tmp_path / "x.safetensors")])
