"""restorex_core.sequence.correct_sequence on the tiny config and real tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from restorex_core import ImageInputError
from restorex_core.images import linear_to_srgb, luma_mean
from restorex_core.sequence import (
    SHOT_AGREEMENT,
    apply_gain,
    correct_sequence,
    exposure_change,
    exposure_ev,
    iter_corrected,
    lighting_steps,
    luminance,
    plan_sequence,
    register,
    smooth_over_time,
)


def clip(t=6, c=3, h=24, w=40):
    return torch.rand(t, c, h, w)


@pytest.mark.parametrize(("c", "dtype"), [(3, torch.float32), (4, torch.float32), (1, torch.float32),
                                          (3, torch.float16), (3, torch.float64)])
def test_shape_dtype_and_range_are_kept(tiny_model, c, dtype):
    x = clip(5, c).to(dtype)
    with torch.inference_mode():
        y = correct_sequence(tiny_model, x, window=3)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    if c == 4:
        assert torch.equal(y[:, 3], x[:, 3])  # alpha untouched


def test_window_1_is_the_per_frame_result_bit_for_bit(tiny_model):
    x = clip(5)
    with torch.inference_mode():
        seq = correct_sequence(tiny_model, x, window=1, seed=7)
        tiled = correct_sequence(tiny_model, x, window=1, seed=7, tile=32, overlap=8)
        per = [tiny_model.correct(x[t : t + 1], seed=7) for t in range(len(x))]
        per_tiled = [tiny_model.correct(x[t : t + 1], seed=7, tile=32, overlap=8) for t in range(len(x))]
    assert torch.equal(seq, torch.cat(per))
    assert torch.equal(tiled, torch.cat(per_tiled))
    hwc = x.movedim(1, -1).contiguous().movedim(-1, 1)  # frames of a ComfyUI IMAGE: channels-last strides
    with torch.inference_mode():
        seq = correct_sequence(tiny_model, hwc, window=1, seed=7)
        per = [tiny_model.correct(hwc[t : t + 1], seed=7) for t in range(len(x))]
    assert torch.equal(seq, torch.cat(per))


def test_a_constant_clip_gives_identical_frames(tiny_model):
    x = clip(1).expand(7, -1, -1, -1).clone()
    with torch.inference_mode():
        y = correct_sequence(tiny_model, x, window=5)
        one = tiny_model.correct(x[:1])
    for t in range(1, len(y)):
        assert torch.equal(y[t], y[0])
    assert torch.equal(y[:1], one)  # smoothing a constant changes nothing: the per-frame result


def test_chunked_equals_unchunked_and_a_lazy_frame_list_equals_a_tensor(tiny_model):
    x = clip(6)
    with torch.inference_mode():
        one_by_one = correct_sequence(tiny_model, x, window=3, batch=1)
        all_at_once = correct_sequence(tiny_model, x, window=3, batch=6)
        chunks_of_4 = correct_sequence(tiny_model, x, window=3, batch=4)
        lazy = torch.cat([f for _, f in iter_corrected(tiny_model, list(x), window=3)])
    assert torch.allclose(one_by_one, all_at_once, atol=1e-5)
    assert torch.allclose(one_by_one, chunks_of_4, atol=1e-5)
    assert torch.equal(one_by_one, lazy)


def test_seed_is_shared_by_every_frame_and_matters(tiny_model):
    x = clip(4)
    with torch.inference_mode():
        a, b = correct_sequence(tiny_model, x, window=3, seed=1), correct_sequence(tiny_model, x, window=3, seed=1)
        c = correct_sequence(tiny_model, x, window=3, seed=2)
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
        correct_sequence(tiny_model, x, window=3, progress=lambda done, total: seen.append((done, total)),
                                    interrupt=interrupt)
    assert seen == [(1, 5), (2, 5)]  # stopped before the third frame, after reporting each finished one
    seen.clear()
    with torch.inference_mode():
        correct_sequence(tiny_model, x, window=3, batch=2, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(2, 5), (4, 5), (5, 5)]


def test_hunting_exposure_flickers_less_than_per_frame(tiny_model):
    torch.manual_seed(1)
    base = torch.rand(1, 3, 32, 32) * 0.5 + 0.1
    gains = 1 + 0.3 * torch.sin(torch.arange(12) * 2.1)  # a hunting auto-exposure
    x = (base * gains.view(-1, 1, 1, 1)).clamp(0, 1)
    with torch.inference_mode():
        per = correct_sequence(tiny_model, x, window=1)
        seq = correct_sequence(tiny_model, x, window=5)
    assert float(luma_mean(seq).std()) < 0.5 * float(luma_mean(per).std())


def test_centred_window_follows_a_step_within_half_a_window():
    x = torch.cat([torch.zeros(10), torch.ones(10)])[:, None]
    y = smooth_over_time(x, 5)[:, 0]
    assert torch.equal(y[:8], torch.zeros(8)) and torch.equal(y[12:], torch.ones(8))
    assert torch.allclose(y[8:12], torch.tensor([0.2, 0.4, 0.6, 0.8]))
    ema = smooth_over_time(x, 5, mode="ema")[:, 0]
    assert float(ema[12]) < 0.95  # the causal filter is still catching up where the centred one has arrived
    assert torch.equal(smooth_over_time(x, 1), x)


@pytest.mark.parametrize("window", [3, 7, 41])
def test_a_broken_window_averages_each_frame_over_its_own_stretch_only(window):
    torch.manual_seed(4)
    x = torch.randn(20, 3)
    breaks = torch.zeros(20, dtype=torch.bool)
    breaks[[5, 6, 13]] = True  # stretches 0-4, 5, 6-12, 13-19
    got = smooth_over_time(x, window, breaks=breaks)
    stretch = breaks.long().cumsum(0)
    r = window // 2
    for t in range(20):
        near = [s for s in range(max(0, t - r), min(20, t + r + 1)) if stretch[s] == stretch[t]]
        torch.testing.assert_close(got[t], x[near].mean(dim=0))
    ema = smooth_over_time(x, window, mode="ema", breaks=breaks)
    assert torch.equal(ema[[5, 6, 13]], x[[5, 6, 13]])  # the causal filter starts afresh at each break


def test_edge_aware_window_keeps_a_lighting_step_and_still_smooths_hunting():
    ev = torch.cat([torch.zeros(10), torch.full((10,), 2.0)])  # a +2 EV change of light at frame 10
    hunt = 0.3 * torch.sin(torch.arange(20) * 2.1)
    x = (ev + hunt)[:, None]
    box = smooth_over_time(x, 5)[:, 0]
    cut = smooth_over_time(x, 5, breaks=lighting_steps(ev + hunt, 2, 1.5))[:, 0]
    assert (box[9] - x[9, 0]).abs() > 0.3 and (box[10] - x[10, 0]).abs() > 0.3  # the box ramps across the step
    assert (cut[8:12] - ev[8:12]).abs().max() < 0.25  # the edge-aware window stays on its side of it
    away = torch.cat([torch.arange(2, 8), torch.arange(12, 18)])
    assert (cut - ev)[away].std() < 0.6 * hunt[away].std()  # and still averages the hunting away
    flat = torch.full((20, 3), 0.25)  # a constant series stays exact
    assert torch.equal(smooth_over_time(flat, 5, breaks=lighting_steps(ev + hunt, 2, 1.5)), flat)


def test_exposure_is_measured_in_linear_light_so_a_slow_drift_of_dark_frames_is_no_change_of_light():
    torch.manual_seed(0)
    scene = torch.rand(1, 3, 24, 32) ** 2 * 0.05  # a dark scene in linear light, much of it in sRGB's linear toe
    t = torch.arange(24, dtype=torch.float32)
    hunt = 0.35 * torch.sin(t * 2 * torch.pi / 9)
    drift = 1.5 * t / 23 + hunt  # the camera's exposure creeps up 1.5 EV over 24 frames while it hunts
    ev = exposure_ev(linear_to_srgb(scene * torch.exp2(drift).view(-1, 1, 1, 1)))
    assert torch.allclose(ev - ev[0], drift - drift[0], atol=0.02)  # EV in, EV out, dark or not
    assert not lighting_steps(ev, 4, 1.5).any()  # a drift and hunting: no cut
    step = drift + 2.0 * (t >= 12)  # the same, and the light coming on at frame 12
    found = lighting_steps(exposure_ev(linear_to_srgb(scene * torch.exp2(step).view(-1, 1, 1, 1))), 4, 1.5)
    assert found.nonzero().flatten().tolist() == [12]


def test_a_step_in_the_clip_is_followed_at_once(tiny_model):
    torch.manual_seed(2)
    base = torch.rand(1, 3, 32, 32) * 0.2 + 0.05
    gains = torch.cat([torch.ones(6), torch.full((6,), 3.0)])  # the light comes on at frame 6
    x = (base * gains.view(-1, 1, 1, 1)).clamp(0, 1)
    with torch.inference_mode():
        per = luma_mean(correct_sequence(tiny_model, x, window=5, cut_ev=None))
        seq = luma_mean(correct_sequence(tiny_model, x, window=5))
        own = luma_mean(correct_sequence(tiny_model, x, window=1))
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
        seq = correct_sequence(tiny_model, x, window=5, tile=32, overlap=8)
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


def test_an_untiled_restore_replays_given_attention_maps_as_the_tiles_do(tiny_model):
    torch.manual_seed(5)
    x, other = torch.rand(1, 3, 40, 56), torch.rand(1, 3, 40, 56) * 0.3
    with torch.inference_mode():  # what the hold measures a tiled clip with: a thumbnail under the tiles' maps
        priors = tiny_model.enhance_priors(tiny_model.extract_priors(x, source="input"), seed=0)
        own = tiny_model.restore(x, priors)
        same = tiny_model.restore(x, priors, attention=tiny_model.attention_maps(x, priors))
        replayed = tiny_model.restore(x, priors, attention=tiny_model.attention_maps(other, priors))
    torch.testing.assert_close(same, own)  # its own maps (the guide is the frame itself here): the same pass
    assert float((replayed - own).abs().max()) > 1e-4  # another frame's maps: used, not ignored


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"window": 4}, ValueError, "odd"),
    ({"window": 0}, ValueError, "odd"),
    ({"batch": 0}, ValueError, "batch"),
    ({"hold": 4}, ValueError, "hold must be 0"),
    ({"hold": -1}, ValueError, "hold must be 0"),
])
def test_bad_arguments_are_refused(tiny_model, kwargs, error, match):
    with torch.inference_mode(), pytest.raises(error, match=match):
        correct_sequence(tiny_model, clip(3), **kwargs)


def test_bad_frames_are_refused_before_any_work(tiny_model):
    with pytest.raises(ImageInputError, match=r"\(T, C, H, W\)"):
        correct_sequence(tiny_model, torch.rand(3, 24, 40))
    with pytest.raises(ImageInputError, match="no frames"):
        correct_sequence(tiny_model, torch.rand(0, 3, 24, 40))
    with pytest.raises(ImageInputError, match="frame 1 is"):
        list(iter_corrected(tiny_model, [torch.rand(3, 24, 40), torch.rand(3, 24, 48)], window=3))
    with pytest.raises(ImageInputError, match="NaN"):
        correct_sequence(tiny_model, torch.full((2, 3, 8, 8), float("nan")))


def scene(h=96, w=160, seed=0):
    """A smooth random scene in linear light (0.02..0.5) with a left-to-right brightness ramp: a pan across it
    brightens the frame, which a same-point measure must not read as a change of exposure."""
    g = torch.Generator().manual_seed(seed)
    texture = F.interpolate(torch.rand(1, 1, h // 8, w // 8, generator=g), size=(h, w), mode="bicubic",
                            align_corners=False).clamp(0, 1)
    ramp = torch.linspace(0.2, 1.0, w).view(1, 1, 1, w)
    return (0.02 + 0.48 * texture * ramp)[0, 0]


def look(linear: torch.Tensor, dy: float, dx: float, h: int, w: int) -> torch.Tensor:
    """The (h, w) view of a linear-light scene seen from (dy, dx) (bilinear, fractions of a pixel allowed)."""
    ys, xs = torch.arange(h) + 8 + dy, torch.arange(w) + 8 + dx
    H, W = linear.shape
    grid = torch.stack(torch.meshgrid(xs * 2 / (W - 1) - 1, ys * 2 / (H - 1) - 1, indexing="xy"), -1)[None]
    return F.grid_sample(linear[None, None], grid.float(), mode="bilinear", align_corners=True)[0, 0]


def test_register_finds_a_pan_to_a_quarter_pixel_whatever_the_exposure():
    world = scene()
    a = look(world, 0, 0, 64, 96)
    for dy, dx in [(0.0, 3.0), (1.3, -2.6), (-0.4, 0.5)]:
        b = look(world, dy, dx, 64, 96) * 2.0  # one EV brighter, too
        got = register(linear_to_srgb(a), linear_to_srgb(b.clamp(0, 1)))
        assert got == pytest.approx((-dy, -dx), abs=0.25)  # the view moved by (dy, dx): the scene moved back


def test_exposure_change_is_measured_at_the_same_scene_points_not_from_the_mean():
    world = scene()
    a = look(world, 0, 0, 64, 96)
    for ev in (0.0, 0.5, -0.7):
        b = look(world, 0, 6, 64, 96) * 2**ev  # the pan brings brighter parts into view: the mean rises anyway
        change, agreement = exposure_change(a, b, register(linear_to_srgb(a), linear_to_srgb(b)))
        assert change == pytest.approx(ev, abs=0.02) and agreement > 0.95
        naive = float(torch.log2(b.mean() / a.mean()))
        assert abs(naive - ev) > 0.05  # what a mean-based measure would have read
    other = look(scene(seed=5), 0, 0, 64, 96)  # a cut in the edit: nothing matches
    _, agreement = exposure_change(a, other, register(linear_to_srgb(a), linear_to_srgb(other)))
    assert agreement < SHOT_AGREEMENT
    black = torch.zeros(64, 96)  # nothing measurable: no change, agreement unknown
    change, agreement = exposure_change(a, black, (0.0, 0.0))
    assert change == 0.0 and agreement != agreement


def pan_clip(t_count=10, hunt=0.4, seed=0):
    """A pan (4 px per frame) across :func:`scene` seen by a camera hunting +-``hunt`` EV, sRGB-encoded."""
    world = scene(seed=seed)
    t = torch.arange(t_count, dtype=torch.float32)
    ev = hunt * torch.sin(t * 2.1)
    frames = [look(world, 0, 4 * i, 40, 56) * 2 ** float(ev[i]) for i in range(t_count)]
    return linear_to_srgb(torch.stack(frames)[:, None].expand(-1, 3, -1, -1)).contiguous()


def same_point_changes(frames):
    lum = luminance(frames)
    return [exposure_change(lum[t - 1], lum[t], register(linear_to_srgb(lum[t - 1]), linear_to_srgb(lum[t])))[0]
            for t in range(1, len(frames))]


@pytest.mark.parametrize("tile", [None, 32])
def test_hold_keeps_the_brightness_at_the_same_scene_points_and_the_pan_still_brightens(tiny_model, tile):
    x = pan_clip()
    with torch.inference_mode():  # tiled: the hold is measured with the attention maps the tiles replay
        held = correct_sequence(tiny_model, x, window=3, tile=tile, overlap=8)  # the default hold: the whole shot
        loose = correct_sequence(tiny_model, x, window=3, hold=1, tile=tile, overlap=8)
    steady = torch.tensor(same_point_changes(held)).abs()
    moving = torch.tensor(same_point_changes(loose)).abs()
    assert float(steady.max()) < 0.01 and float(moving.max()) > 0.3  # per frame, the model follows the camera
    ramp = float(torch.log2(luminance(held[-1:]).mean() / luminance(held[:1]).mean()))
    camera = 0.4 * math.sin(9 * 2.1)  # pan_clip's hunting at the last frame (0 at the first)
    scene_ramp = float(torch.log2(luminance(x[-1:]).mean() / luminance(x[:1]).mean())) - camera
    assert scene_ramp > 0.3 and ramp == pytest.approx(scene_ramp, abs=0.1)  # brighter parts come into view: kept


def test_a_cut_in_the_edit_breaks_the_smoothing(tiny_model):
    x = torch.cat([pan_clip(6, seed=1), pan_clip(6, seed=2)])  # two shots of different scenes
    with torch.inference_mode():
        plan = plan_sequence(tiny_model, x, window=5, hold=9)
        alone = plan_sequence(tiny_model, x[6:], window=5, hold=9)
    assert plan.breaks.nonzero().flatten().tolist() == [6]
    torch.testing.assert_close(plan.priors[6:].stacked(), alone.priors.stacked())  # no prior of shot 1 leaks in
    torch.testing.assert_close(plan.gains[6:], alone.gains)
