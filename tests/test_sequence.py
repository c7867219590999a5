"""RestoreX.correct_sequence (restorex_core/sequence.py) on the tiny config and real tensors."""

from __future__ import annotations

import pytest
import torch

from restorex_core import ImageInputError
from restorex_core.sequence import (
    apply_gain,
    exposure_ev,
    iter_corrected,
    lighting_steps,
    luma_mean,
    plan_sequence,
    smooth_over_time,
)


def clip(t=6, c=3, h=24, w=40):
    return torch.rand(t, c, h, w)


@pytest.mark.parametrize(("c", "dtype"), [(3, torch.float32), (4, torch.float32), (1, torch.float32),
                                          (3, torch.float16), (3, torch.float64)])
def test_shape_dtype_and_range_are_kept(tiny_model, c, dtype):
    x = clip(5, c).to(dtype)
    with torch.inference_mode():
        y = tiny_model.correct_sequence(x, window=3)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    if c == 4:
        assert torch.equal(y[:, 3], x[:, 3])  # alpha untouched


def test_window_1_is_the_per_frame_result_bit_for_bit(tiny_model):
    x = clip(5)
    with torch.inference_mode():
        seq = tiny_model.correct_sequence(x, window=1, seed=7)
        tiled = tiny_model.correct_sequence(x, window=1, seed=7, tile=16, overlap=4)
        per = [tiny_model.correct(x[t : t + 1], seed=7) for t in range(len(x))]
        per_tiled = [tiny_model.correct(x[t : t + 1], seed=7, tile=16, overlap=4) for t in range(len(x))]
    assert torch.equal(seq, torch.cat(per))
    assert torch.equal(tiled, torch.cat(per_tiled))
    hwc = x.movedim(1, -1).contiguous().movedim(-1, 1)  # frames of a ComfyUI IMAGE: channels-last strides
    with torch.inference_mode():
        seq = tiny_model.correct_sequence(hwc, window=1, seed=7)
        per = [tiny_model.correct(hwc[t : t + 1], seed=7) for t in range(len(x))]
    assert torch.equal(seq, torch.cat(per))


def test_a_constant_clip_gives_identical_frames(tiny_model):
    x = clip(1).expand(7, -1, -1, -1).clone()
    with torch.inference_mode():
        y = tiny_model.correct_sequence(x, window=5)
        one = tiny_model.correct(x[:1])
    for t in range(1, len(y)):
        assert torch.equal(y[t], y[0])
    assert torch.equal(y[:1], one)  # smoothing a constant changes nothing: the per-frame result


def test_chunked_equals_unchunked_and_a_lazy_frame_list_equals_a_tensor(tiny_model):
    x = clip(6)
    with torch.inference_mode():
        one_by_one = tiny_model.correct_sequence(x, window=3, batch=1)
        all_at_once = tiny_model.correct_sequence(x, window=3, batch=6)
        chunks_of_4 = tiny_model.correct_sequence(x, window=3, batch=4)
        lazy = torch.cat([f for _, f in iter_corrected(tiny_model, list(x), window=3)])
    assert torch.allclose(one_by_one, all_at_once, atol=1e-5)
    assert torch.allclose(one_by_one, chunks_of_4, atol=1e-5)
    assert torch.equal(one_by_one, lazy)


def test_seed_is_shared_by_every_frame_and_matters(tiny_model):
    x = clip(4)
    with torch.inference_mode():
        a, b = tiny_model.correct_sequence(x, window=3, seed=1), tiny_model.correct_sequence(x, window=3, seed=1)
        c = tiny_model.correct_sequence(x, window=3, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_progress_per_frame_and_interrupt_between_frames(tiny_model):
    x, calls, seen = clip(5), [], []

    class Stop(Exception):
        pass

    def interrupt():
        calls.append(len(seen))
        if len(calls) > 5 + 5 + 2:  # both first-pass loops (priors, brightness), then two frames restored
            raise Stop

    with torch.inference_mode(), pytest.raises(Stop):
        tiny_model.correct_sequence(x, window=3, progress=lambda done, total: seen.append((done, total)),
                                    interrupt=interrupt)
    assert seen == [(1, 5), (2, 5)]  # stopped before the third frame, after reporting each finished one
    seen.clear()
    with torch.inference_mode():
        tiny_model.correct_sequence(x, window=3, batch=2, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(2, 5), (4, 5), (5, 5)]


def test_hunting_exposure_flickers_less_than_per_frame(tiny_model):
    torch.manual_seed(1)
    base = torch.rand(1, 3, 32, 32) * 0.5 + 0.1
    gains = 1 + 0.3 * torch.sin(torch.arange(12) * 2.1)  # a hunting auto-exposure
    x = (base * gains.view(-1, 1, 1, 1)).clamp(0, 1)
    with torch.inference_mode():
        per = tiny_model.correct_sequence(x, window=1)
        seq = tiny_model.correct_sequence(x, window=5)
    assert float(luma_mean(seq).std()) < 0.5 * float(luma_mean(per).std())


def test_centred_window_follows_a_step_within_half_a_window():
    x = torch.cat([torch.zeros(10), torch.ones(10)])[:, None]
    y = smooth_over_time(x, 5)[:, 0]
    assert torch.equal(y[:8], torch.zeros(8)) and torch.equal(y[12:], torch.ones(8))
    assert torch.allclose(y[8:12], torch.tensor([0.2, 0.4, 0.6, 0.8]))
    ema = smooth_over_time(x, 5, mode="ema")[:, 0]
    assert float(ema[12]) < 0.95  # the causal filter is still catching up where the centred one has arrived
    assert torch.equal(smooth_over_time(x, 1), x)


def test_edge_aware_window_keeps_a_lighting_step_and_still_smooths_hunting():
    ev = torch.cat([torch.zeros(10), torch.full((10,), 2.0)])  # a +2 EV change of light at frame 10
    hunt = 0.3 * torch.sin(torch.arange(20) * 2.1)
    x = (ev + hunt)[:, None]
    box = smooth_over_time(x, 5)[:, 0]
    cut = smooth_over_time(x, 5, guide=ev + hunt, cut=1.5)[:, 0]
    assert (box[9] - x[9, 0]).abs() > 0.3 and (box[10] - x[10, 0]).abs() > 0.3  # the box ramps across the step
    assert (cut[8:12] - ev[8:12]).abs().max() < 0.25  # the edge-aware window stays on its side of it
    away = torch.cat([torch.arange(2, 8), torch.arange(12, 18)])
    assert (cut - ev)[away].std() < 0.6 * hunt[away].std()  # and still averages the hunting away
    flat = torch.full((20, 3), 0.25)
    assert torch.equal(smooth_over_time(flat, 5, guide=ev + hunt), flat)  # a constant series stays exact


def srgb_encode(linear: torch.Tensor) -> torch.Tensor:
    x = linear.clamp(0, 1)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


def test_exposure_is_measured_in_linear_light_so_a_slow_drift_of_dark_frames_is_no_change_of_light():
    torch.manual_seed(0)
    scene = torch.rand(1, 3, 24, 32) ** 2 * 0.05  # a dark scene in linear light, much of it in sRGB's linear toe
    t = torch.arange(24, dtype=torch.float32)
    hunt = 0.35 * torch.sin(t * 2 * torch.pi / 9)
    drift = 1.5 * t / 23 + hunt  # the camera's exposure creeps up 1.5 EV over 24 frames while it hunts
    ev = exposure_ev(srgb_encode(scene * torch.exp2(drift).view(-1, 1, 1, 1)))
    assert torch.allclose(ev - ev[0], drift - drift[0], atol=0.02)  # EV in, EV out, dark or not
    assert not lighting_steps(ev, 4, 1.5).any()  # a drift and hunting: no cut
    step = drift + 2.0 * (t >= 12)  # the same, and the light coming on at frame 12
    found = lighting_steps(exposure_ev(srgb_encode(scene * torch.exp2(step).view(-1, 1, 1, 1))), 4, 1.5)
    assert found.nonzero().flatten().tolist() == [12]


def test_a_step_in_the_clip_is_followed_at_once(tiny_model):
    torch.manual_seed(2)
    base = torch.rand(1, 3, 32, 32) * 0.2 + 0.05
    gains = torch.cat([torch.ones(6), torch.full((6,), 3.0)])  # the light comes on at frame 6
    x = (base * gains.view(-1, 1, 1, 1)).clamp(0, 1)
    with torch.inference_mode():
        per = luma_mean(tiny_model.correct_sequence(x, window=5, cut_ev=None))
        seq = luma_mean(tiny_model.correct_sequence(x, window=5))
        own = luma_mean(tiny_model.correct_sequence(x, window=1))
    assert (seq - own).abs().max() < 0.25 * (own[6] - own[5]).abs()  # both sides of the step keep their own level
    assert (per - own).abs().max() > 0.25 * (own[6] - own[5]).abs()  # where a plain box would blur it


def test_tiled_frames_share_attention_maps_smoothed_over_time(tiny_model):
    torch.manual_seed(3)
    base = torch.rand(1, 3, 40, 56) * 0.5 + 0.1
    gains = 1 + 0.3 * torch.sin(torch.arange(7) * 2.1)
    # fresh sensor noise per frame (a pure gain would not move the maps: LayerNorm and cosines ignore scale)
    x = (base * gains.view(-1, 1, 1, 1) + 0.1 * torch.randn(7, 3, 40, 56)).clamp(0, 1)
    with torch.inference_mode():
        plan = plan_sequence(tiny_model, x, window=5, tile=32)
        own = [tiny_model.attention_maps(x[t : t + 1], plan.priors[t]) for t in range(len(x))]
        seq = tiny_model.correct_sequence(x, window=5, tile=32, overlap=8)
        for t in (0, 3):  # the second pass restores with the smoothed maps, not the frame's own
            maps = [a[t : t + 1] for a in plan.attention]
            want = apply_gain(tiny_model.restore(x[t : t + 1], plan.priors[t], tile=32, overlap=8, attention=maps),
                              float(plan.gains[t]))
            mine = apply_gain(tiny_model.restore(x[t : t + 1], plan.priors[t], tile=32, overlap=8),
                              float(plan.gains[t]))
            assert torch.equal(seq[t : t + 1], want) and not torch.equal(want, mine)
    assert len(plan.attention) == len(own[0]) and plan.attention[0].shape[0] == len(x)
    for k, smoothed in enumerate(plan.attention):  # the maps move less from frame to frame than each frame's own
        raw = torch.cat([maps[k] for maps in own])
        assert (smoothed[1:] - smoothed[:-1]).abs().mean() < (raw[1:] - raw[:-1]).abs().mean()
    assert plan_sequence(tiny_model, x, window=5, tile=None).attention is None  # untiled: nothing to share
    assert plan_sequence(tiny_model, x, window=5, tile=64).attention is None  # a frame within one tile


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"window": 4}, ValueError, "odd"),
    ({"window": 0}, ValueError, "odd"),
    ({"batch": 0}, ValueError, "batch"),
])
def test_bad_arguments_are_refused(tiny_model, kwargs, error, match):
    with torch.inference_mode(), pytest.raises(error, match=match):
        tiny_model.correct_sequence(clip(3), **kwargs)


def test_bad_frames_are_refused_before_any_work(tiny_model):
    with pytest.raises(ImageInputError, match=r"\(T, C, H, W\)"):
        tiny_model.correct_sequence(torch.rand(3, 24, 40))
    with pytest.raises(ImageInputError, match="no frames"):
        tiny_model.correct_sequence(torch.rand(0, 3, 24, 40))
    with pytest.raises(ImageInputError, match="frame 1 is"):
        list(iter_corrected(tiny_model, [torch.rand(3, 24, 40), torch.rand(3, 24, 48)], window=3))
    with pytest.raises(ImageInputError, match="NaN"):
        tiny_model.correct_sequence(torch.full((2, 3, 8, 8), float("nan")))
