"""The global tone path (restorex_core/arch/tone.py): its curves, its clipped-region guard, the model around it,
its checkpoints, and its training behind a frozen curve."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import restorex_core.model as model_module
from restorex_core import RestoreX, RestoreXConfig, load_checkpoint, save_checkpoint
from restorex_core.arch.tone import ToneConfig, ToneCurve, apply_curves, histograms, identity_curves

KNOTS = 8


def tone_model(seed: int = 0) -> RestoreX:
    torch.manual_seed(seed)
    return RestoreX(RestoreXConfig.tiny().replace(tone={"knots": KNOTS, "prior_dim": 16, "hidden": 32})).eval()


def random_head(model: RestoreX, scale: float = 1.0) -> None:
    """Give the tone head weights that pick a different curve per image and channel."""
    with torch.no_grad():
        torch.nn.init.normal_(model.tone.net[-1].weight, std=scale)


def test_curves_are_piecewise_linear_between_their_knots():
    x = torch.rand(2, 3, 8, 9, generator=torch.Generator().manual_seed(0)) * 0.85  # below the guard
    identity = identity_curves(2, KNOTS)
    torch.testing.assert_close(apply_curves(x, identity), x)
    squared = identity**2  # x^2 sampled at the knots: exact at the knots, linear between them
    at = torch.tensor([1 / KNOTS, 3 / KNOTS, 2.5 / KNOTS]).view(1, 1, 3, 1).expand(1, 3, 3, 1)
    out = apply_curves(at, squared[:1])
    want = torch.tensor([1 / KNOTS**2, 9 / KNOTS**2, (4 + 9) / 2 / KNOTS**2])
    torch.testing.assert_close(out[0, 0, :, 0], want)


def test_the_guard_gives_clipped_pixels_one_curve_for_all_channels():
    curves = identity_curves(1, KNOTS)
    curves = curves * torch.tensor([1.0, 0.8, 0.6]).view(1, 3, 1)  # free curves that would tint white
    white = torch.ones(1, 3, 1, 1)
    half_clipped = torch.tensor([1.0, 0.7, 0.4]).view(1, 3, 1, 1)  # a blown sky: red clipped, blue not
    mid = torch.full((1, 3, 1, 1), 0.5)
    out = apply_curves(torch.cat([white, half_clipped, mid], dim=3), curves)
    torch.testing.assert_close(out[0, :, 0, 0], torch.full((3,), 0.8))  # white stays neutral (the mean curve)
    torch.testing.assert_close(out[0, :, 0, 1], torch.tensor([1.0, 0.7, 0.4]) * 0.8)  # one gain: hue kept
    torch.testing.assert_close(out[0, :, 0, 2], torch.tensor([0.5, 0.4, 0.3]))  # below the guard: own curves
    # a curve steep near white (as fitted to over-exposed photos) would turn a pale near-white pink into a strong
    # one, channel by channel; the guard scales the pixel as a whole and keeps its pale pink
    steep = identity_curves(1, KNOTS) ** 4
    pale = torch.tensor([1.0, 0.95, 0.9]).view(1, 3, 1, 1)
    torch.testing.assert_close(apply_curves(pale, steep)[0, :, 0, 0], torch.tensor([1.0, 0.95, 0.9]))
    assert float(apply_curves(pale, steep, None)[0, 2, 0, 0]) < 0.7  # free curves: 0.9 -> about 0.66
    free = apply_curves(white, curves, None)
    torch.testing.assert_close(free[0, :, 0, 0], torch.tensor([1.0, 0.8, 0.6]))  # no guard: the cast
    # monotone and continuous in between: no band, no jump where the guard starts (levels 1/400 apart; the
    # steepest the blend from 0.6x to 0.8x can get is about 3.8x, under 0.01 a level)
    levels = torch.linspace(0.85, 1.0, 61).view(1, 1, 1, -1).expand(1, 3, 1, -1)
    steps = apply_curves(levels, curves)[0, 2, 0].diff()
    assert (steps > 0).all() and steps.max() < 0.01


def test_an_untrained_head_is_the_identity_and_any_head_is_monotone_from_zero():
    config = ToneConfig(knots=KNOTS, prior_dim=16, num_priors=4, hidden=32)
    head = ToneCurve(config).eval()
    images = torch.rand(3, 3, 20, 30)
    vectors = [torch.randn(3, 16) for _ in range(4)]
    assert head.features(vectors, images).shape == (3, config.feature_dim)
    torch.testing.assert_close(head(vectors, images), identity_curves(3, KNOTS))
    torch.nn.init.normal_(head.net[-1].weight)
    curves = head(vectors, images)
    assert (curves[..., 0] == 0).all() and (curves.diff(dim=2) > 0).all()
    assert not torch.allclose(curves[0], curves[1])
    with pytest.raises(ValueError, match="knots > 0"):
        ToneCurve(ToneConfig())
    with pytest.raises(ValueError, match="guard"):
        ToneConfig(knots=4, guard=(1.0, 0.9))


def test_histograms_read_the_same_photo_alike_at_every_size():
    g = torch.Generator().manual_seed(2)
    photo = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 8, generator=g), size=(600, 800), mode="bicubic")
    photo = photo.clamp(0, 1)
    small = torch.nn.functional.interpolate(photo, size=(150, 200), mode="bilinear", antialias=True)
    a, b = histograms(photo, 32, 256), histograms(small, 32, 256)
    assert a.shape == (1, 96) and abs(float(a.pow(2).sum()) - 3.0) < 1e-4  # square roots of 3 distributions
    assert float((a - b).abs().max()) < 0.05



def test_gamma_binned_histograms_spread_a_dark_photo_over_more_bins():
    from training.synthetic import render_exposure

    g = torch.Generator().manual_seed(4)
    photo = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 8, generator=g), size=(96, 128), mode="bicubic")
    under3, under4 = (torch.from_numpy(render_exposure(photo[0].clamp(0.02, 1).permute(1, 2, 0).numpy(), ev))
                      .permute(2, 0, 1)[None] for ev in (-3.0, -4.0))  # the camera model's -3 and -4 EV renders
    hist = {gamma: (histograms(under3, 32, 256, gamma), histograms(under4, 32, 256, gamma)) for gamma in (1.0, 2.2)}
    occupied = {gamma: int((b > 0).sum()) for gamma, (_, b) in hist.items()}
    apart = {gamma: float((a - b).abs().sum()) for gamma, (a, b) in hist.items()}
    assert occupied[2.2] >= 1.8 * occupied[1.0], occupied  # the -4 EV render: 7 bins per channel -> 14
    assert apart[2.2] > 1.2 * apart[1.0], apart  # and -3 EV is told from -4 EV by more
    assert all(abs(float(h.pow(2).sum()) - 3.0) < 1e-4 for pair in hist.values() for h in pair)
    with pytest.raises(ValueError, match="hist_gamma"):
        ToneConfig(knots=4, hist_gamma=0.0)


def test_the_model_applies_the_curve_before_the_restormer_everywhere():
    model = tone_model()
    random_head(model)
    with torch.no_grad():  # the Restormer's residual set to zero: what comes out is the curved input
        model.restormer.output.weight.zero_()
        if model.restormer.output.bias is not None:
            model.restormer.output.bias.zero_()
    x = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        curves = model.tone_curves(x)
        assert curves.shape == (2, 3, KNOTS + 1) and not torch.allclose(curves, identity_curves(2, KNOTS))
        want = apply_curves(x, curves, model.config.tone.guard).clamp(0, 1)
        torch.testing.assert_close(model.correct(x), want, atol=1e-5, rtol=0)
        torch.testing.assert_close(model.correct(x, tile=32, overlap=8), want, atol=1e-5, rtol=0)
        enhanced = model.enhance_priors(model.extract_priors(x), seed=0)
        torch.testing.assert_close(model.restore(x, enhanced), want, atol=1e-5, rtol=0)  # node graph = correct()
        alpha = torch.cat([x, torch.rand(2, 1, 40, 56)], dim=1)  # an alpha channel passes untouched
        out = model.correct(alpha)
        torch.testing.assert_close(out[:, 3], alpha[:, 3])
        with pytest.raises(ValueError, match="raw input priors"):
            model.tone_curves(x, enhanced)


def test_the_curve_runs_in_bands_without_changing_a_pixel(monkeypatch):
    model = tone_model()
    random_head(model)
    x = torch.rand(1, 3, 50, 64, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        curves = model.tone_curves(x)
        whole = model._toned(x, curves)
        monkeypatch.setattr(model_module, "TONE_BAND", 64 * 7)  # 7 rows a band, the last one short
        torch.testing.assert_close(model._toned(x, curves), whole, atol=0, rtol=0)


def test_a_tone_model_round_trips_and_a_paper_model_has_no_tone_weights(tmp_path: Path):
    model = tone_model()
    random_head(model)
    path = save_checkpoint(model, tmp_path / "tone.safetensors")
    back = load_checkpoint(path)
    assert back.config == model.config and back.config.tone.knots == KNOTS
    x = torch.rand(1, 3, 32, 40)
    with torch.inference_mode():
        torch.testing.assert_close(back.correct(x), model.correct(x))
    plain = RestoreX(RestoreXConfig.tiny())
    assert plain.tone is None and plain.tone_curves(x) is None
    assert not any(k.startswith("tone.") for k in plain.state_dict())
    with pytest.raises(ValueError, match="tone reads"):
        RestoreXConfig.tiny().replace(tone={"knots": 4})  # priors of D=256 from a D=16 PEM


def test_training_behind_a_frozen_curve_moves_only_the_restormer(tmp_path: Path):
    from tests.test_train import part_unchanged, tiny_config
    from training.train import build_model, train

    finished = tone_model()
    random_head(finished, 0.3)
    init = save_checkpoint(finished, tmp_path / "v5_init.safetensors")
    tone = ('--model.tone={knots = 8, prior_dim = 16, hidden = 32}',)
    cfg = tiny_config(tmp_path, stage=2, init=init.as_posix(), steps=3,
                      overrides=("--train.init_all=true", '--train.freeze=["pem_input", "ffedm", "tone"]', *tone))
    model, trained = build_model(cfg)
    assert trained == ("restormer",)
    train(cfg)
    done = load_checkpoint(tmp_path / "run" / "restorex.safetensors")
    for part in ("tone", "pem_input", "restormer"):
        assert part_unchanged(done, finished, part) == (part != "restormer"), part
    _, trained = build_model(tiny_config(tmp_path, stage=2, init=init.as_posix(), name="joint",
                                         overrides=("--train.init_all=true", *tone)))
    assert "tone" in trained  # unfrozen, stage 2 trains the curve too
    zeroed, _ = build_model(tiny_config(tmp_path, stage=2, init=init.as_posix(), name="zero",
                                        overrides=("--train.init_all=true", "--train.zero_residual=true", *tone)))
    x = torch.rand(1, 3, 32, 40, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():  # the residual starts at zero: the model is its curve alone
        zeroed.eval()
        want = apply_curves(x, zeroed.tone_curves(x), zeroed.config.tone.guard).clamp(0, 1)
        torch.testing.assert_close(zeroed.correct(x), want, atol=1e-5, rtol=0)
    plain = save_checkpoint(RestoreX(RestoreXConfig.tiny()), tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="zero_residual"):
        build_model(tiny_config(tmp_path, stage=2, init=plain.as_posix(), name="notone",
                                overrides=("--train.init_all=true", "--train.zero_residual=true")))
    with pytest.raises(ValueError, match="tone path reads the input priors"):
        build_model(tiny_config(tmp_path, stage=1, name="s1", overrides=tone))


def test_the_residual_mean_term_sees_global_shifts_not_local_work(tmp_path: Path):
    from tests.test_train import tiny_config
    from training.losses import residual_mean_loss
    from training.train import build_model

    g = torch.Generator().manual_seed(8)
    toned = torch.rand(2, 3, 16, 20, generator=g)
    local = torch.zeros_like(toned)
    local[..., :8, :], local[..., 8:, :] = 0.1, -0.1  # lift the top, darken the bottom: the image's mean kept
    assert residual_mean_loss(toned + local, toned).item() < 1e-6
    shifted = toned + torch.tensor([0.02, 0.04, 0.06]).view(1, 3, 1, 1)  # a global lift and a cast
    torch.testing.assert_close(residual_mean_loss(shifted, toned), torch.tensor(0.04))
    plain = save_checkpoint(RestoreX(RestoreXConfig.tiny()), tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="residual_mean keeps the global tone to the tone path"):
        build_model(tiny_config(tmp_path, stage=2, init=plain.as_posix(), name="notone",
                                overrides=("--train.init_all=true", "--loss.residual_mean=1.0")))


def test_a_tone_head_travels_alone_and_joins_its_weights_again(tmp_path: Path):
    """training.tone_head: what device_train.sh's TONE_HEAD carries to a lent GPU and rebuilds there."""
    from training import tone_head

    model = tone_model()
    random_head(model, 0.3)
    full = save_checkpoint(model, tmp_path / "init.safetensors")
    base = RestoreX(RestoreXConfig.tiny())
    base.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("tone.")})
    base_file = save_checkpoint(base, tmp_path / "base.safetensors")
    head = tone_head.split(full, tmp_path / "head.safetensors")
    assert head.stat().st_size < full.stat().st_size / 4
    joined = load_checkpoint(tone_head.join(base_file, head, tmp_path / "joined.safetensors"))
    assert joined.config == model.config
    for k, v in model.state_dict().items():
        torch.testing.assert_close(joined.state_dict()[k], v, rtol=0, atol=0)
    with pytest.raises(SystemExit, match="already has a tone path.*--replace"):
        tone_head.join(full, head, tmp_path / "twice.safetensors")
    other_head = tone_model()  # --replace: a Restormer trained behind one curve, given another head
    random_head(other_head, 0.7)
    other_file = tone_head.split(save_checkpoint(other_head, tmp_path / "o.safetensors"), tmp_path / "oh.safetensors")
    swapped = load_checkpoint(tone_head.join(full, other_file, tmp_path / "swapped.safetensors", replace=True))
    for k, v in swapped.state_dict().items():
        src = other_head if k.startswith("tone.") else model
        torch.testing.assert_close(v, src.state_dict()[k], rtol=0, atol=0)
    assert not torch.equal(swapped.tone.net[-1].weight, model.tone.net[-1].weight)
    other = RestoreXConfig.tiny().replace(pem={"dim": 24}, ffedm={"prior_dim": 24}, restormer={"prior_dim": 24})
    wrong = save_checkpoint(RestoreX(other), tmp_path / "wrong.safetensors")
    with pytest.raises(SystemExit, match=r"wrong.safetensors is not the model .*head.safetensors was fitted on \("):
        tone_head.join(wrong, head, tmp_path / "bad.safetensors")  # and nothing left under the output's name
    assert not list(tmp_path.glob("*bad*"))
    with pytest.raises(SystemExit, match="no tone path"):
        tone_head.split(base_file, tmp_path / "none.safetensors")


def test_a_clip_smooths_the_curves_over_time_like_the_priors():
    from restorex_core.sequence import correct_sequence, plan_sequence, smooth_over_time

    model = tone_model()
    random_head(model)
    g = torch.Generator().manual_seed(5)
    scene = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 5, generator=g), size=(32, 40), mode="bicubic")
    frames = scene.clamp(0, 1) * torch.tensor([0.4, 0.5, 0.6, 0.7]).view(4, 1, 1, 1)  # one shot, brightening
    with torch.inference_mode():
        own = torch.cat([model.tone_curves(f[None]) for f in frames])
        one = plan_sequence(model, frames, window=1)
        torch.testing.assert_close(one.curves, own)  # window 1: each frame's own curve, as correct() picks it
        torch.testing.assert_close(correct_sequence(model, frames, window=1), model.correct(frames))
        plan = plan_sequence(model, frames, window=3, hold=1, cut_ev=None)
        assert not plan.breaks[1:].any()
        torch.testing.assert_close(plan.curves, smooth_over_time(own, 3))
        assert (plan.curves.diff(dim=2) > 0).all() and (plan.curves[..., 0] == 0).all()


def test_a_tone_model_runs_in_bf16_within_2_of_255_of_fp32():
    model = tone_model()
    random_head(model)
    x = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        full = model.correct(x)
        half = model.to(torch.bfloat16).correct(x)  # the curve itself is looked up in fp32
    assert half.dtype == torch.float32 and float((full - half).abs().max()) * 255 < 2.0
