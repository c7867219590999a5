"""The correction gate (restorex_core/arch/gate.py): how much of its correction each image gets, in the model, in a
clip, in checkpoints, and its fit (training/gate.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restorex_core import RestoreX, RestoreXConfig, load_checkpoint, save_checkpoint
from restorex_core.arch.gate import BRIGHTENING_RAMP, GateConfig, held_back
from restorex_core.images import luma_mean
from tests.test_curve_check import mini_data
from tests.test_curve_probe import _photo
from training import gate as gate_fit

KNOTS = 4


def gated_model(gain: float, *, strength: float | None = None, brightening_only: bool = False) -> RestoreX:
    """A tiny model whose whole correction is ``x * gain`` (a straight tone curve, the Restormer's residual zeroed),
    with a gate that gives every image ``strength`` (None: an untrained gate)."""
    torch.manual_seed(0)
    config = RestoreXConfig.tiny().replace(tone={"knots": KNOTS, "prior_dim": 16, "hidden": 8},
                                           gate={"hidden": 8, "prior_dim": 16, "brightening_only": brightening_only})
    model = RestoreX(config).eval()
    with torch.no_grad():
        model.restormer.output.weight.zero_()
        model.tone.net[-1].bias.fill_(math.log(math.expm1(gain)))  # every segment's slope = gain
        if strength is not None:
            model.gate.net[-1].bias.fill_(-30.0 if strength == 0 else 30.0 if strength == 1 else
                                          math.log((strength + 0.25) / (1.25 - strength)))
    return model


def image(seed: int = 0, scale: float = 0.5) -> torch.Tensor:
    return torch.rand(2, 3, 24, 32, generator=torch.Generator().manual_seed(seed)) * scale


def test_an_untrained_gate_corrects_every_image_in_full():
    model = gated_model(1.6)
    x = image()
    with torch.inference_mode():
        torch.testing.assert_close(model.correction_strength(x), torch.ones(2))
        torch.testing.assert_close(model.correct(x), (x * 1.6).clamp(0, 1), atol=1e-5, rtol=0)


def test_a_closed_gate_leaves_a_brightened_image_as_it_is_and_lets_a_darkening_through():
    x = image()
    with torch.inference_mode():
        for gain in (1.6, 0.6):
            closed = gated_model(gain, strength=0)
            assert torch.equal(closed.correct(x), x)  # bit for bit
            torch.testing.assert_close(closed.correct(x, auto_strength=False), (x * gain).clamp(0, 1), atol=1e-5,
                                       rtol=0)
        assert torch.equal(gated_model(1.6, strength=0, brightening_only=True).correct(x), x)
        dark = gated_model(0.6, strength=0, brightening_only=True)  # a darkening: this gate may not hold it back
        torch.testing.assert_close(dark.correct(x), x * 0.6, atol=1e-5, rtol=0)


def test_a_half_open_gate_gives_half_the_correction_inside_the_mask_and_strength():
    model = gated_model(1.6, strength=0.5)
    x = image()
    mask = torch.zeros(24, 32)
    mask[:, 16:] = 1
    with torch.inference_mode():
        torch.testing.assert_close(model.correction_strength(x), torch.full((2,), 0.5))
        want = x + 0.5 * ((x * 1.6).clamp(0, 1) - x)
        torch.testing.assert_close(model.correct(x), want, atol=1e-5, rtol=0)
        out = model.correct(x, mask=mask, strength=0.5)
        torch.testing.assert_close(out[..., 16:], (x + 0.25 * ((x * 1.6).clamp(0, 1) - x))[..., 16:], atol=1e-5,
                                   rtol=0)
        assert torch.equal(out[..., :16], x[..., :16])


def test_held_back_ramps_from_a_darkening_to_a_brightening_correction():
    x = torch.full((4, 3, 8, 8), 0.4)
    rises = torch.tensor([-0.05, 0.0, BRIGHTENING_RAMP / 2, 0.1])
    corrected = x + rises.view(4, 1, 1, 1)
    g = torch.full((4,), 0.2)
    kept = held_back(g, x, corrected, brightening_only=True)
    torch.testing.assert_close(kept, torch.tensor([1.0, 1.0, 0.6, 0.2]))
    torch.testing.assert_close(held_back(g, x, corrected, brightening_only=False), g)
    torch.testing.assert_close(luma_mean(corrected) - luma_mean(x), rises, atol=1e-6, rtol=0)


def test_a_gated_model_round_trips_and_a_paper_model_has_no_gate(tmp_path: Path):
    model = gated_model(1.6)
    with torch.no_grad():
        torch.nn.init.normal_(model.gate.net[-1].weight, std=2.0)  # a different strength per image
    path = save_checkpoint(model, tmp_path / "gated.safetensors")
    back = load_checkpoint(path).eval()
    assert back.config == model.config and back.config.gate.hidden == 8
    x = image(1)
    with torch.inference_mode():
        strengths = model.correction_strength(x)
        assert not torch.allclose(strengths[0], strengths[1])
        torch.testing.assert_close(back.correction_strength(x), strengths)
        torch.testing.assert_close(back.correct(x), model.correct(x))
        with pytest.raises(ValueError, match="raw input priors"):
            model.correction_strength(x, model.enhance_priors(model.extract_priors(x)))
    plain = RestoreX(RestoreXConfig.tiny())
    assert plain.gate is None and plain.correction_strength(x) is None
    assert not any(k.startswith("gate.") for k in plain.state_dict())
    with pytest.raises(ValueError, match="gate reads"):
        RestoreXConfig.tiny().replace(gate={"hidden": 4})  # priors of D=256 from a D=16 PEM
    with pytest.raises(ValueError, match="hidden >= 0"):
        GateConfig(hidden=-1)


def test_a_clip_keeps_the_gate_per_frame_smoothed_like_the_priors():
    from restorex_core.sequence import correct_sequence, plan_sequence, smooth_over_time

    model = gated_model(1.6)
    with torch.no_grad():
        torch.nn.init.normal_(model.gate.net[-1].weight, std=2.0)
    g = torch.Generator().manual_seed(5)
    scene = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 5, generator=g), size=(32, 40), mode="bicubic")
    frames = scene.clamp(0, 1) * torch.tensor([0.2, 0.4, 0.6, 0.8]).view(4, 1, 1, 1)
    with torch.inference_mode():
        own = model.correction_strength(frames)
        one = plan_sequence(model, frames, window=1)
        torch.testing.assert_close(one.strengths, own)
        torch.testing.assert_close(correct_sequence(model, frames, window=1), model.correct(frames))
        full = correct_sequence(model, frames, window=1, auto_strength=False)
        torch.testing.assert_close(full, model.correct(frames, auto_strength=False))
        plan = plan_sequence(model, frames, window=3, hold=1, cut_ev=None)
        torch.testing.assert_close(plan.strengths, smooth_over_time(own, 3))


# ------------------------------------------------------------------------------------------------ the fit
def synthetic_samples(n: int = 400) -> gate_fit.GateSamples:
    """Half the samples 'good' (their best strength 0: the correction only adds error), half 'bad' (best 1), told
    apart by one feature; every correction brightens."""
    g = torch.Generator().manual_seed(0)
    good = torch.arange(n) % 2 == 0
    feats = torch.randn(n, 4 * 16 + 3 * 32, generator=g)  # noise beside the one feature that tells
    feats[:, 0] = good.float() * 3
    a = torch.full((n,), 0.01)
    b = torch.where(good, torch.zeros(n), a)  # the best strength b / a: 0 or 1
    c = torch.where(good, torch.zeros(n), torch.full((n,), 0.012))
    kind = torch.where(good, gate_fit.KINDS.index("photo"), gate_fit.KINDS.index("stack"))
    return gate_fit.GateSamples(feats, torch.stack([a, b, c], 1), torch.full((n,), 0.05), kind, torch.arange(n) // 2,
                                ~good)


def test_the_fit_learns_which_images_to_leave_alone(tmp_path: Path):
    samples = synthetic_samples()
    config = GateConfig(hidden=16, prior_dim=16)
    gate = gate_fit.fit(samples, config, steps=1000)
    with torch.no_grad():
        w = gate.strength(samples.features)
    good = samples.kind == 2
    assert float(w[good].max()) < 0.05 and float(w[~good].mean()) > 0.98
    table = gate_fit.summary(samples, gate)
    assert "| photos | 200 | 0.00 |" in table and "| stack frames | 200 | 1.00 |" in table
    samples.save(tmp_path / "s.pt")
    back = gate_fit.GateSamples.load(tmp_path / "s.pt")
    assert torch.equal(back.features, samples.features) and torch.equal(back.kind, samples.kind)
    dark = gate_fit.GateSamples(samples.features, samples.abc, -samples.rise, samples.kind, samples.group,
                                samples.rule)
    config = GateConfig(hidden=16, prior_dim=16, brightening_only=True)
    closed = gate_fit.fit(dark, config, steps=10)  # every correction darkens: nothing to fit, nothing held back
    kept = gate_fit.kept_strength(closed.strength(dark.features), dark.rise, True)
    assert torch.equal(kept, torch.ones(len(dark)))


def test_cross_validation_scores_each_fold_with_a_gate_that_never_saw_it():
    samples = synthetic_samples()
    config = GateConfig(hidden=16, prior_dim=16)
    table = gate_fit.cross_validate(samples, config, folds=4, under_weights=(1.0, 4.0), steps=1000)
    assert "| under-weight | rule frames | photos |" in table, table
    change = {}
    for line in table.splitlines():
        if line.startswith(("| 1 |", "| 4 |")):
            cells = line.strip("|").split(" | ")
            change[float(cells[0])] = [float(c.split("(")[1].rstrip(") ")) for c in cells[1:]]
    # the good half, never seen by its fold's gate, is left alone (about +20 dB); the bad half loses some of its
    # correction where the gate errs, and the under-weight makes it err less
    assert change[1][1] > 15 and change[4][1] > 15, table
    assert change[1][0] < change[4][0] <= 0, table
    seeded = gate_fit.cross_validate(samples, config, folds=4, under_weights=(4.0,), seeds=(0, 1), steps=300)
    rows = {line.split(" | ")[0].strip("| "): line for line in seeded.splitlines() if line.startswith("| 4")}
    assert list(rows) == ["4, seed 0", "4, seed 1", "4, mean of 2 seeds"], seeded
    photos = {k: float(v.strip("|").split(" | ")[2].split(" / ")[1].split(" ")[0]) for k, v in rows.items()}
    assert photos["4, seed 0"] != photos["4, seed 1"], seeded  # two fits, not one printed twice
    assert abs(photos["4, mean of 2 seeds"] - (photos["4, seed 0"] + photos["4, seed 1"]) / 2) < 0.011, seeded
    with pytest.raises(ValueError, match="as many groups"):
        gate_fit.cross_validate(samples.subset(torch.arange(6)), config, folds=4)


def test_an_ensemble_is_one_wider_gate_whose_logit_is_the_fits_mean():
    samples = synthetic_samples()
    config = GateConfig(hidden=16, prior_dim=16)
    fits = [gate_fit.fit(samples, config, steps=200, seed=s) for s in (3, 4, 5)]
    merged = gate_fit.fit_ensemble(samples, config, gate_fit.ensemble_seeds(1, 3), steps=200)
    assert gate_fit.ensemble_seeds(1, 3) == [3, 4, 5] and gate_fit.ensemble_seeds(2, 1) == [2]
    assert merged.config.hidden == 48 and merged.config.prior_dim == 16
    with torch.no_grad():
        logits = torch.stack([g.net(g.normalised(samples.features))[:, 0] for g in fits])
        merged_logit = merged.net(merged.normalised(samples.features))[:, 0]
        strengths = torch.stack([g.strength(samples.features) for g in fits])
    torch.testing.assert_close(merged_logit, logits.mean(0))
    assert (logits.std(0) > 1e-3).all()  # three different fits, not one three times
    s = merged.strength(samples.features)
    assert not torch.allclose(s, strengths.mean(0), atol=1e-4)  # the mean of the logits, not of the strengths
    assert gate_fit.merge_gates(fits[:1]) is fits[0]
    other = gate_fit.fit(samples.subset(torch.arange(200)), config, steps=5)
    with pytest.raises(ValueError, match="different samples"):
        gate_fit.merge_gates([fits[0], other])
    with pytest.raises(ValueError, match="at least one"):
        gate_fit.merge_gates([])
    table = gate_fit.cross_validate(samples, config, folds=4, under_weights=(4.0,), seeds=(0, 1), ensemble=2,
                                    steps=100)
    rows = [line.split(" | ")[0].strip("| ") for line in table.splitlines() if line.startswith("| 4")]
    assert rows == ["4, ensemble of 2 0-1", "4, ensemble of 2 2-3", "4, mean of 2 ensembles"], table


def test_kept_strength_is_the_models_held_back():
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 0.5
    corrected = (x + torch.linspace(-0.02, 0.03, 6).view(6, 1, 1, 1)).clamp(0, 1)
    g = torch.linspace(0, 1, 6)
    rise = luma_mean(corrected) - luma_mean(x)
    torch.testing.assert_close(gate_fit.kept_strength(g, rise, True), held_back(g, x, corrected,
                                                                                brightening_only=True))


def test_the_cli_reads_the_training_data_fits_and_writes_gated_weights(tmp_path: Path, capsys):
    root, config = mini_data(tmp_path)  # held-out scenes and photo, none of them read: add two of each to train on
    for n in range(2):
        scene = root / "stacks" / "src" / f"Train{n}"
        scene.mkdir(parents=True)
        for i, gain in enumerate((0.3, 1.0, 2.0)):
            Image.fromarray(np.clip(_photo(20 + n) * 0.4 * gain, 0, 255).round().astype(np.uint8)).save(
                scene / f"{i:02d}.png")
    (root / "photos" / "bsds500").mkdir(parents=True)
    for n in range(2):
        Image.fromarray(_photo(30 + n)).save(root / "photos" / "bsds500" / f"{n}.png")
    torch.manual_seed(0)
    weights = save_checkpoint(RestoreX(RestoreXConfig.tiny()).eval(), tmp_path / "plain.safetensors",
                              dtype=torch.float16)  # stored as the bundled weights are
    out, cache = tmp_path / "gated.safetensors", tmp_path / "samples.pt"
    args = ["--weights", str(weights), "--out", str(out), "--config", str(config), "--samples", str(cache),
            "--steps", "20", "--renders", "2", "--fused-cache", str(tmp_path / "fused")]
    gate_fit.main(["--data", str(root), *args])
    printed = capsys.readouterr().out
    samples = gate_fit.GateSamples.load(cache)
    counts = {k: int((samples.kind == i).sum()) for i, k in enumerate(gate_fit.KINDS)}
    # per scene: its 2 other frames toward the GT-rule frame, its fusion and the GT frame itself as good photos
    assert counts == {"stack": 4, "fusion": 2, "photo": 2, "render": 4, "best": 2}, counts
    best = samples.kind == gate_fit.KINDS.index("best")
    assert torch.equal(samples.abc[best, 2], torch.zeros(2)) and samples.abc[best, 0].min() > 0  # its own target
    assert sorted(samples.group[best].tolist()) == sorted(set(samples.group[samples.kind == 0].tolist()))
    assert samples.features.shape[1] == 4 * 16 + 3 * 32
    assert "| renders |" in printed and "| best frames | 2 |" in printed and f"wrote {out}" in printed
    gated = load_checkpoint(out).eval()
    assert gated.gate is not None and not gated.config.gate.brightening_only
    assert gate_fit.stored_dtype(out) == torch.float16 and out.stat().st_size < 1.2 * weights.stat().st_size
    with torch.inference_mode():
        s = gated.correction_strength(torch.rand(1, 3, 32, 32))
    assert s.shape == (1,) and 0 <= float(s) <= 1
    out.unlink()
    gate_fit.main(args)  # the samples read back: no --data needed
    assert out.is_file()
    assert samples.pixels is None  # kept only for an output curve's fit
    wide = tmp_path / "ensemble.safetensors"
    gate_fit.main(["--weights", str(weights), "--out", str(wide), "--samples", str(cache), "--steps", "20",
                   "--ensemble", "3"])
    ensemble = load_checkpoint(wide).eval()
    assert ensemble.config.gate.hidden == 3 * 128
    with torch.inference_mode():
        assert 0 <= float(ensemble.correction_strength(torch.rand(1, 3, 32, 32))) <= 1
    with pytest.raises(SystemExit):
        gate_fit.main([*args, "--ensemble", "2", "--curve-steps", "2"])
    assert "leave out --curve-steps" in capsys.readouterr().err
    curved, with_pixels = tmp_path / "curved.safetensors", tmp_path / "pixels.pt"
    capsys.readouterr()
    with pytest.raises(SystemExit):
        gate_fit.main([*args, "--curve-steps", "2"])
    assert "keeps no pixels" in capsys.readouterr().err
    gate_fit.main(["--data", str(root), "--weights", str(weights), "--out", str(curved), "--config", str(config),
                   "--samples", str(with_pixels), "--steps", "20", "--renders", "2", "--fused-cache",
                   str(tmp_path / "fused"), "--curve-steps", "2"])
    assert "PSNR full / curved / gated / best" in capsys.readouterr().out
    pixels = gate_fit.GateSamples.load(with_pixels).pixels
    assert pixels.shape == (14, 3, 3, gate_fit.PIXELS) and pixels.dtype == torch.float16
    model = load_checkpoint(curved).eval()
    assert model.config.gate.curve_steps == 2 and model.has_output_curve
    with torch.inference_mode():
        assert model.output_curves(torch.rand(1, 3, 32, 32)).shape == (1, 7)
    v4_samples = tmp_path / "v4_samples.pt"  # v4's recipe read no best frames
    gate_fit.main(["--data", str(root), "--weights", str(weights), "--out", str(tmp_path / "v4.safetensors"),
                   "--config", str(config), "--samples", str(v4_samples), "--steps", "5", "--renders", "2",
                   "--fused-cache", str(tmp_path / "fused"), "--no-best-frames"])
    old = gate_fit.GateSamples.load(v4_samples)
    assert len(old) == 12 and not (old.kind == gate_fit.KINDS.index("best")).any()
    keep = samples.kind != gate_fit.KINDS.index("best")
    torch.testing.assert_close(old.abc, samples.abc[keep])
    with pytest.raises(SystemExit):
        gate_fit.main(["--weights", str(out), "--out", str(tmp_path / "twice.safetensors"), "--samples", str(cache)])
    assert "already has a correction gate" in capsys.readouterr().err


ROOT = Path(__file__).resolve().parents[1]


def test_the_bundled_model_leaves_the_good_sample_alone_and_corrects_the_bad_ones():
    """The shipped weights' gate on the README's samples (held-out scenes House and Lighthouse, not trained on): the
    House exposure fusion and its best-exposed camera frame come back bit for bit (v4's gate corrected that frame in
    full), the under- and over-exposed frames get the full correction."""
    from restorex_io import read_image

    weights = ROOT / "weights" / "restorex-default.safetensors"
    if not weights.is_file():
        pytest.skip("weights/restorex-default.safetensors is not in this checkout")
    model = load_checkpoint(weights).eval()
    if model.gate is None:
        pytest.skip("the bundled weights have no correction gate")
    sample = ROOT / "docs" / "sample"
    good, best, under, over = (read_image(sample / n).tensor[:, :3] for n in
                               ("house_good.png", "house_best.png", "house_under.png", "lighthouse_over.png"))
    with torch.inference_mode():
        for photo in (good, best):
            assert float(model.correction_strength(photo)[0]) == 0.0
            assert torch.equal(model.correct(photo, seed=0), photo)
        for bad in (under, over):
            assert float(model.correction_strength(bad)[0]) == 1.0
            assert torch.equal(model.correct(bad, seed=0), model.correct(bad, seed=0, auto_strength=False))
        for photo in (good, best):  # what v3 did to them: a visible restyling
            full = model.correct(photo, seed=0, auto_strength=False)
            assert float((full - photo).abs().mean()) * 255 > 5
        # the lighthouse's blown sky: v3's network makes it a grey-beige veil (99th-percentile luma 214 /255);
        # the shipped highlight step gives it back bright, and leaves what is not clipped as the network made it
        lifted = model.correct(over, seed=0)
        plain = RestoreX(model.config.replace(highlights={"level": 0.0}),
                         clip=None if model.config.clip.trainable else model.clip).eval()
        plain.load_state_dict(model.state_dict())
        veil = plain.correct(over, seed=0)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    top = [float(torch.quantile((img * luma).sum(1).flatten(), 0.99)) * 255 for img in (veil, lifted)]
    assert top[0] < 220 and top[1] > 230, top
    unclipped = over.amin(1, keepdim=True).expand_as(over) < 0.9
    assert torch.equal(lifted[unclipped], veil[unclipped])


def test_check_heldout_reports_what_the_gate_does_to_the_best_frames(tmp_path: Path, capsys):
    root, config = mini_data(tmp_path)
    files = {}
    for strength in (0.0, 1.0):
        files[strength] = save_checkpoint(gated_model(1.6, strength=strength), tmp_path / f"g{strength:g}.safetensors")
    for strength, path in files.items():
        gate_fit.main(["--data", str(root), "--weights", str(path), "--config", str(config), "--check-heldout"])
        table = capsys.readouterr().out
        rows = [line for line in table.splitlines() if line.startswith("| src/Held")]
        assert len(rows) == 2 and all(r.split(" | ")[1] == "02.png" for r in rows), table  # the GT rule's frame
        full, gated = zip(*((float(v) for v in r.split(" | ")[-1].strip(" |").split(" / ")) for r in rows), strict=True)
        assert all(f < 30 for f in full)  # the network brightens them 1.6x
        assert list(gated) == ([50.0, 50.0] if strength == 0 else list(full))
        assert ("2 left exactly" if strength == 0 else "2 corrected in full") in table
    plain = save_checkpoint(RestoreX(RestoreXConfig.tiny()).eval(), tmp_path / "plain.safetensors")
    with pytest.raises(SystemExit):
        gate_fit.main(["--data", str(root), "--weights", str(plain), "--config", str(config), "--check-heldout"])
    assert "has no correction gate" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ the output curve
def curved_model(gain: float, coeff: float, *, strength: float | None = 1.0) -> RestoreX:
    """:func:`gated_model` with a one-step output curve whose every coefficient is ``coeff`` (saturation 1)."""
    base = gated_model(gain, strength=strength)
    model = RestoreX(base.config.replace(gate={**vars(base.config.gate), "curve_steps": 1, "curve_hidden": 8})).eval()
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("gate.curve_net.") for k in missing)
    with torch.no_grad():
        model.gate.curve_net[-1].bias[:3].fill_(math.atanh(coeff))
    return model


def test_the_output_curve_keeps_black_and_white_and_is_the_identity_at_zero(monkeypatch):
    from restorex_core.arch import gate as gate_mod

    x = torch.rand(2, 3, 10, 12, generator=torch.Generator().manual_seed(3))
    x[:, :, 0, 0], x[:, :, 0, 1] = 0.0, 1.0
    identity = gate_mod.curve_from_logits(torch.zeros(2, 7))  # 2 steps: 6 coefficients and the saturation
    torch.testing.assert_close(identity, torch.tensor([[0.0] * 6 + [1.0]] * 2))
    torch.testing.assert_close(gate_mod.apply_output_curve(x, identity), x, atol=1e-6, rtol=0)
    up = gate_mod.curve_from_logits(torch.full((1, 7), 2.0))  # both steps brighten; saturation > 1
    y = gate_mod.apply_output_curve(x, up)
    assert torch.equal(y[:, :, 0, :2], x[:, :, 0, :2])  # black stays black, white stays white
    inside = (x > 0.05) & (x < 0.95) & (y < 1)
    assert bool((y >= x - 1e-6)[(x - x.mean(1, keepdim=True)).abs() < 0.01].all())  # grey pixels only brighten
    assert float(luma_mean(y).min()) > float(luma_mean(x).max()) + 0.05 and inside.any()
    down = gate_mod.curve_from_logits(torch.tensor([[-1.0] * 6 + [0.0]]))
    grey = torch.linspace(0, 1, 11).view(1, 1, 1, 11).expand(1, 3, 1, 11)
    dark = gate_mod.apply_output_curve(grey, down)
    assert bool((dark[..., 1:-1] < grey[..., 1:-1]).all()) and bool((dark.diff(dim=-1) > 0).all())  # monotone
    monkeypatch.setattr(gate_mod, "CURVE_BAND", 13)  # one row per band
    torch.testing.assert_close(gate_mod.apply_output_curve(x, up), y)
    with pytest.raises(ValueError, match="do not fit 2 images"):
        gate_mod.apply_output_curve(x, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="curve_steps >= 0"):
        GateConfig(hidden=4, curve_steps=-1)


def test_a_model_with_an_output_curve_applies_it_to_every_correction_and_leaves_a_good_photo_alone(tmp_path: Path):
    from restorex_core.arch.gate import apply_output_curve
    from restorex_core.sequence import correct_sequence

    x = image()
    model = curved_model(1.6, 0.5)
    with torch.inference_mode():
        params = model.output_curves(x)
        assert params.shape == (2, 4)
        torch.testing.assert_close(params[:, :3], torch.full((2, 3), 0.5))
        want = apply_output_curve((x * 1.6).clamp(0, 1), params)
        torch.testing.assert_close(model.correct(x), want, atol=1e-5, rtol=0)
        torch.testing.assert_close(model.correct(x, auto_strength=False), want, atol=1e-5, rtol=0)
        priors = model.enhance_priors(model.extract_priors(x))
        torch.testing.assert_close(model.restore(x, priors), want, atol=1e-5, rtol=0)  # the staged path too
        torch.testing.assert_close(correct_sequence(model, x, window=1), model.correct(x))
        assert torch.equal(curved_model(1.6, 0.5, strength=0).correct(x), x)  # the gate still leaves it bit for bit
    back = load_checkpoint(save_checkpoint(model, tmp_path / "curved.safetensors")).eval()
    assert back.config.gate.curve_steps == 1 and back.has_output_curve
    with torch.inference_mode():
        torch.testing.assert_close(back.correct(x), model.correct(x))
    assert not gated_model(1.6).has_output_curve and gated_model(1.6).output_curves(x) is None


def curve_samples(n: int = 240, pixels: int = 256) -> gate_fit.GateSamples:
    """Samples whose every correction ``o`` misses its target by a global curve: ``y = o ** 0.6`` (too dark) where
    feature 0 is high, ``y = o ** 1.6`` (too bright) where it is low; every input is ``o / 2``."""
    g = torch.Generator().manual_seed(1)
    dark = torch.arange(n) % 2 == 0
    feats = torch.randn(n, 4 * 16 + 3 * 32, generator=g)
    feats[:, 0] = dark.float() * 3
    o = torch.rand(n, 3, pixels, generator=g) * 0.9 + 0.05
    y = torch.where(dark.view(n, 1, 1), o**0.6, o**1.6)
    x = o / 2
    d, e = o - x, y - x
    abc = torch.stack([(d * d).mean((1, 2)), (d * e).mean((1, 2)), (e * e).mean((1, 2))], 1)
    pix = torch.stack([x, o, y], 1).half()
    return gate_fit.GateSamples(feats, abc, torch.full((n,), 0.1), torch.full((n,), gate_fit.KINDS.index("render")),
                                torch.arange(n) // 2, torch.zeros(n, dtype=torch.bool), pix)


def test_the_curve_fit_learns_each_images_global_error_and_cross_validates(tmp_path: Path):
    from restorex_core.arch.gate import apply_output_curve

    samples = curve_samples()
    config = GateConfig(hidden=16, prior_dim=16, curve_steps=2, curve_hidden=16)
    gate = gate_fit.fit(samples, config, steps=200, curve_steps=600)
    abc, _ = gate_fit.curved_terms(samples, gate)
    one = torch.ones(len(samples))
    before, after = gate_fit._psnr(samples.abc, one), gate_fit._psnr(abc, one)
    assert float((after - before).mean()) > 8, (before.mean(), after.mean())
    with torch.no_grad():
        grey = apply_output_curve(torch.full((len(samples), 3, 1, 1), 0.5), gate.output_curve(samples.features))
    dark = samples.features[:, 0] > 1
    # 0.5 ** 0.6 = 0.66 and 0.5 ** 1.6 = 0.33: each image's curve lifts or lowers a mid grey as its target needs
    assert float(grey[dark].mean()) > 0.62 and float(grey[~dark].mean()) < 0.38, (grey[dark].mean(), grey[~dark].mean())
    assert "| renders | 240 |" in gate_fit.summary(samples, gate)
    samples.save(tmp_path / "s.pt")
    assert torch.equal(gate_fit.GateSamples.load(tmp_path / "s.pt").pixels, samples.pixels)
    table = gate_fit.cross_validate(samples, config, folds=3, under_weights=(4.0,), steps=100, curve_steps=400)
    assert "PSNR full / curved / gated" in table
    row = next(line for line in table.splitlines() if line.startswith("| 4 |"))
    full, curved = (float(v) for v in row.split(" | ")[1].split(" / ")[:2])
    assert curved > full + 4, table  # on renders no fold's curve saw (160 samples per fit, 160 noise features)
    no_pixels = gate_fit.GateSamples(*(getattr(samples, k) for k in gate_fit.GateSamples.FIELDS[:-1]))
    with pytest.raises(ValueError, match="keep no pixels"):
        gate_fit.fit(no_pixels, config, steps=1)
