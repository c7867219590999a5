"""The clipped-highlight step (restorex_core/arch/highlights.py): where the input is blown, the correction comes
back bright instead of a grey veil, without glowing over what the clipped region touches; and the tool that gives
trained weights the step (training/highlights.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from restorex_core import RestoreX, RestoreXConfig, load_checkpoint, save_checkpoint
from restorex_core.arch import highlights as hl
from restorex_core.arch.highlights import HighlightConfig, clipped_mask, keep_highlights
from training import highlights as hl_tool

ON = HighlightConfig(level=0.92)


def blown_sky(h: int = 96, w: int = 128) -> torch.Tensor:
    """A clipped white field (the top two thirds) over a mid-grey ground, a dark mast standing in the field."""
    x = torch.full((1, 3, h, w), 0.45)
    x[:, :, : 2 * h // 3] = 1.0
    x[:, :, h // 6 : 2 * h // 3, w // 2 - 2 : w // 2 + 2] = 0.1  # the mast, inside the blown field
    return x


def test_the_step_is_off_by_default_and_leaves_the_correction_as_it_is():
    assert not RestoreXConfig().highlights.enabled and not RestoreXConfig.tiny().highlights.enabled
    x, o = blown_sky(), torch.full((1, 3, 96, 128), 0.8)
    assert keep_highlights(x, o, HighlightConfig()) is o


def test_a_blown_field_comes_back_at_the_level_and_nothing_glows_over_the_mast():
    x = blown_sky()
    o = torch.full_like(x, 0.8)  # the network's grey veil, everywhere
    out = keep_highlights(x, o, ON)
    # deep inside the blown field: lifted to the level, neutral
    torch.testing.assert_close(out[0, :, 4, 4], torch.full((3,), 0.92))
    torch.testing.assert_close(out[0, :, 4, 100], torch.full((3,), 0.92))
    # the mast and the ground are not clipped: the correction there is untouched, right up to the field's edge
    assert torch.equal(out[:, :, 16:64, 62:66], o[:, :, 16:64, 62:66])
    assert torch.equal(out[:, :, 64:], o[:, :, 64:])
    # the field's edge ramps up inside the field (eroded, then blurred): no step, no overshoot
    row = out[0, 0, 30, 66:100]
    assert float(row[0]) < 0.85 and torch.all(row[1:] >= row[:-1] - 1e-6) and float(row.max()) <= 0.92 + 1e-6


def test_it_never_darkens_and_ignores_unclipped_photos_and_isolated_specks():
    x = blown_sky()
    bright = torch.full_like(x, 0.97)  # the network already made it brighter than the level: kept
    assert torch.equal(keep_highlights(x, bright, ON), bright)
    photo = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.9  # nothing clipped
    o = photo * 0.8
    assert torch.equal(keep_highlights(photo, o, ON), o)
    specks = photo.clone()
    specks[:, :, ::9, ::11] = 1.0  # single clipped pixels (noise at the clipping level): eroded away
    assert float(clipped_mask(specks, ON).max()) == 0.0
    assert torch.equal(keep_highlights(specks, o, ON), o)


def test_the_mask_is_the_same_share_of_the_picture_at_any_size():
    small = blown_sky(96, 128)
    big = F.interpolate(small, scale_factor=16, mode="nearest")  # 1536 x 2048: the mask is made at a lower resolution
    m_small = clipped_mask(small, ON)
    m_big = clipped_mask(big, ON)
    assert m_big.shape == (1, 1, 1536, 2048)
    back = F.interpolate(m_big, size=(96, 128), mode="area")
    assert float((back - m_small).abs().mean()) < 0.03, float((back - m_small).abs().mean())
    assert float(m_big[..., :100, :100].min()) == 1.0 and float(m_big[..., 1100:, :].max()) == 0.0


def test_the_blend_in_bands_is_the_blend_in_one_piece(monkeypatch):
    x = blown_sky()
    o = torch.linspace(0, 1, x.numel()).view_as(x)  # every level of the correction, bright and dark
    whole = keep_highlights(x, o, ON)
    monkeypatch.setattr(hl, "BAND", 128 * 5)  # 5 rows per band
    assert torch.equal(keep_highlights(x, o, ON), whole)
    half = keep_highlights(x, o.half(), ON)
    assert half.dtype == torch.float16 and float((half.float() - whole).abs().max()) < 2e-3


def test_bad_settings_and_shapes_are_named():
    with pytest.raises(ValueError, match="level must lie in"):
        HighlightConfig(level=1.5)
    with pytest.raises(ValueError, match="low < high"):
        HighlightConfig(level=0.9, low=0.99, high=0.98)
    with pytest.raises(ValueError, match="radius"):
        HighlightConfig(level=0.9, radius=0.5)
    with pytest.raises(ValueError, match="one shape"):
        keep_highlights(blown_sky(), torch.zeros(1, 3, 8, 8), ON)


def tiny(level: float) -> RestoreX:
    torch.manual_seed(0)
    return RestoreX(RestoreXConfig.tiny().replace(highlights={"level": level})).eval()


def test_the_model_lifts_its_own_correction_and_keeps_an_alpha_channel():
    x = blown_sky(64, 64)
    plain, lifted = tiny(0.0), tiny(0.92)
    with torch.inference_mode():
        priors = plain.enhance_priors(plain.extract_priors(x, source="input"))
        a = plain.restore(x, priors)
        b = lifted.restore(x, priors)
        torch.testing.assert_close(b, keep_highlights(x, a, lifted.config.highlights))
        assert float((b - a).abs().max()) > 0.05  # the tiny network's output in the blown field was lifted
        rgba = torch.cat([x, torch.full_like(x[:, :1], 0.5)], 1)
        out = lifted.restore(rgba, priors)
    assert out.shape == rgba.shape and torch.equal(out[:, 3], rgba[:, 3])


def test_the_tool_writes_the_same_tensors_with_the_step_in_the_header(tmp_path: Path, capsys):
    weights = save_checkpoint(tiny(0.0), tmp_path / "plain.safetensors", metadata={"trainer": "test"},
                              dtype=torch.float16)
    out = tmp_path / "lifted.safetensors"
    hl_tool.main(["--weights", str(weights), "--out", str(out), "--level", "0.92", "--radius", "0.02"])
    assert f"wrote {out}" in capsys.readouterr().out
    a, b = load_file(str(weights)), load_file(str(out))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    model = load_checkpoint(out)
    assert model.config.highlights == HighlightConfig(level=0.92, radius=0.02)
    from restorex_core.checkpoint import read_header

    assert read_header(out)["trainer"] == "test"
    off = tmp_path / "off.safetensors"
    hl_tool.main(["--weights", str(out), "--out", str(off), "--level", "0"])
    assert not load_checkpoint(off).config.highlights.enabled
    for bad in (["--out", str(weights), "--level", "0.9"], ["--out", str(off), "--level", "2"]):
        with pytest.raises(SystemExit):
            hl_tool.main(["--weights", str(weights), *bad])
    err = capsys.readouterr().err
    assert "must be a new file" in err and "level must lie in" in err
