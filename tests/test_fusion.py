"""Exposure-fusion targets (training.fusion) and the v4 data pieces: fused stack targets, identity items."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from training.datasets import load_image
from training.fusion import (
    FUSION_VERSION,
    blend_with_rule,
    cached_path,
    default_cache,
    fused_target,
    fusion_weights,
    mertens_fuse,
)
from training.stacks import StackDataset


def _scene(h: int = 48, w: int = 64) -> torch.Tensor:
    """A linear-light scene with a deep-shadow gradient on the left and a bright highlight gradient on the right."""
    ramp = torch.linspace(0.0, 1.0, w // 2).view(1, 1, -1).expand(3, h, -1)
    tint = torch.tensor([1.0, 0.9, 0.8]).view(3, 1, 1)
    return torch.cat([0.01 + 0.04 * ramp, 2.0 + 6.0 * ramp], dim=2) * tint


def _expose(scene: torch.Tensor, ev: float) -> torch.Tensor:
    return (scene * 2.0**ev).clamp(0, 1) ** (1 / 2.2)


def test_fusing_copies_of_one_frame_gives_that_frame():
    g = torch.Generator().manual_seed(0)
    frame = torch.rand(3, 37, 53, generator=g)  # odd sizes: every pyramid level rounds
    assert torch.allclose(mertens_fuse([frame, frame, frame]), frame, atol=1e-5)
    assert torch.allclose(mertens_fuse([frame]), frame, atol=1e-5)


def test_weights_prefer_the_well_exposed_frame_and_sum_to_one():
    texture = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    mid, dark = 0.4 + 0.2 * texture, 0.03 + 0.015 * texture  # one textured, coloured scene, two exposures
    w = fusion_weights(torch.stack([mid, dark]).double())
    assert torch.allclose(w.sum(0), torch.ones_like(w[0]))
    assert (w[0] > 0.9).all()


def test_fusion_keeps_the_shadow_detail_of_the_bright_frame_and_the_highlights_of_the_dark_one():
    scene = _scene()
    dark, bright = _expose(scene, -3.0), _expose(scene, 3.0)
    fused = mertens_fuse([dark, bright])
    shadows, highlights = (slice(None), slice(None), slice(0, 32)), (slice(None), slice(None), slice(32, 64))
    # each frame has lost one side: the dark frame crushes the shadows, the bright one blows the highlights
    assert bright[highlights].std() < 1e-6 and dark[shadows].std() < 0.05
    # the fusion has a gradient on both sides, and is brighter in the shadows than the dark frame
    assert fused[shadows].std() > 0.5 * bright[shadows].std()
    assert fused[highlights].std() > 0.5 * dark[highlights].std()
    assert fused[shadows].mean() > dark[shadows].mean() + 0.1
    # the bright frame blows all of it; the fusion keeps a gradient up to where even the dark frame is near white
    assert (fused[highlights] > 0.999).float().mean() < 0.5


def _landscape(h: int = 128, w: int = 160) -> torch.Tensor:
    """A linear-light scene with large-scale light: a dim foreground (bottom) under a bright sky (top), textured."""
    g = torch.Generator().manual_seed(1)
    rows = torch.linspace(1.0, 0.0, h).view(1, h, 1)
    base = 0.02 + 0.6 * rows**2  # 0.02 (foreground) .. 0.62 (sky)
    texture = 1.0 + 0.3 * (F.avg_pool2d(torch.rand(1, 3, h, w, generator=g), 5, 1, 2)[0] - 0.5)
    return base * texture * torch.tensor([0.9, 1.0, 1.1]).view(3, 1, 1)


def test_fusion_keeps_the_global_contrast_of_a_well_exposed_frame():
    """Exposure fusion keeps the picture's large-scale light: a dim foreground stays darker than the sky.  A
    pyramid stopped short of its full depth blends the coarse levels per pixel, and the well-exposedness weights
    pull every region toward mid-grey; at an 8-pixel top level this stack came out at 0.58x the middle
    frame's luma contrast."""
    scene = _landscape()
    frames = [_expose(scene, ev) for ev in (-1.0, 0.0, 1.0)]
    fused = mertens_fuse(frames)
    luma = lambda x: x.mean(0)  # noqa: E731
    ratio = float(luma(fused).std() / luma(frames[1]).std())
    assert 0.9 < ratio < 1.2, ratio
    assert float(luma(fused)[:32].mean() - luma(fused)[-32:].mean()) > 0.8 * float(
        luma(frames[1])[:32].mean() - luma(frames[1])[-32:].mean())


def test_blend_with_rule_and_its_bounds():
    a, b = torch.zeros(3, 4, 4), torch.ones(3, 4, 4)
    assert blend_with_rule(a, b, 1.0) is a
    assert torch.allclose(blend_with_rule(a, b, 0.25), torch.full((3, 4, 4), 0.75))
    with pytest.raises(ValueError, match=r"alpha 1.5 must lie in \[0, 1\]"):
        blend_with_rule(a, b, 1.5)
    with pytest.raises(ValueError, match="N frames of"):
        mertens_fuse(torch.zeros(3, 4, 4))


def _write_stack(root: Path, sid: str, scene: torch.Tensor, evs: list[float]) -> list[Path]:
    d = root / sid
    d.mkdir(parents=True)
    paths = []
    for i, ev in enumerate(evs):
        arr = (_expose(scene, ev).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        paths.append(d / f"{i:02d}.png")
        Image.fromarray(arr).save(paths[-1])
    return paths


def test_fused_targets_are_cached_beside_the_data_and_read_back(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("RESTOREX_FUSED_CACHE", raising=False)
    stacks = tmp_path / "stacks"
    paths = _write_stack(stacks, "src/A", _scene(), [-3.0, 0.0, 3.0])
    cache = default_cache(stacks)
    assert cache == tmp_path / "stacks_fused"
    first = fused_target("src/A", paths, cache)
    file = cache / FUSION_VERSION / "src" / "A.png"
    assert file == cached_path(cache, "src/A")
    assert file.is_file() and not list(cache.rglob(".*.tmp"))  # written whole, under its final name
    with Image.open(file) as im:
        assert im.mode.startswith("I;16") or im.mode == "RGB" or "16" in str(im.info)
    stamp = file.stat().st_mtime_ns
    again = fused_target("src/A", paths, cache)
    assert torch.equal(first, again) and file.stat().st_mtime_ns == stamp  # read, not made again


def test_the_cli_fuses_every_scene_with_several_processes(tmp_path: Path, capsys):
    from training.fusion import main

    stacks = tmp_path / "stacks"
    scenes = {f"src/{n}": _write_stack(stacks, f"src/{n}", _scene() * k, [-3.0, 0.0, 3.0])
              for n, k in (("A", 1.0), ("B", 0.5), ("C", 2.0))}
    main(["--stacks", str(stacks), "--jobs", "2"])
    assert "3 fused targets" in capsys.readouterr().out
    cache = default_cache(stacks)
    for sid, paths in scenes.items():  # each the same image a single process makes
        torch.testing.assert_close(fused_target(sid, paths, cache), mertens_fuse([load_image(p) for p in paths]),
                                   atol=1 / 65535 + 1e-6, rtol=0)
    main(["--stacks", str(stacks), "--jobs", "2"])
    assert "(0 made now)" in capsys.readouterr().out


def test_targets_cached_by_an_older_fusion_are_not_read_back(tmp_path: Path):
    """The first fusion (a shallow pyramid, flat targets) cached ``<cache>/<scene>.png``; a file left there must not
    stand in for the current fusion's target."""
    paths = _write_stack(tmp_path / "stacks", "src/A", _scene(), [-3.0, 0.0, 3.0])
    cache = tmp_path / "cache"
    stale = cache / "src" / "A.png"
    stale.parent.mkdir(parents=True)
    Image.fromarray(np.full((48, 64, 3), 128, np.uint8)).save(stale)
    fused = fused_target("src/A", paths, cache)
    assert torch.equal(fused, fused_target("src/A", paths, tmp_path / "fresh")) and fused.std() > 0.2


def test_an_unwritable_cache_names_the_ways_to_move_it(tmp_path: Path, monkeypatch):
    """A read-only data folder (a shared mount): the env variable moves the cache; where the cache cannot be
    made, the error names the folder and every way to give another one, and nothing is half-written."""
    stacks = tmp_path / "stacks"
    paths = _write_stack(stacks, "src/A", _scene(), [-3.0, 0.0, 3.0])
    monkeypatch.setenv("RESTOREX_FUSED_CACHE", str(tmp_path / "elsewhere"))
    assert default_cache(stacks) == tmp_path / "elsewhere"
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")  # mkdir fails, root or not
    with pytest.raises(PermissionError) as e:
        fused_target("src/A", paths, blocked)
    for part in (str(blocked / FUSION_VERSION / "src"), "RESTOREX_FUSED_CACHE", "data.fused_cache", "--fused-cache"):
        assert part in str(e.value)
    assert blocked.read_text().startswith("a file")


def test_stack_dataset_trains_every_frame_toward_the_fusion(tmp_path: Path):
    stacks = tmp_path / "stacks"
    _write_stack(stacks, "src/A", _scene(), [-2.0, -0.5, 1.0, 2.5])
    rule = StackDataset(stacks, pairs="all")
    fused = StackDataset(stacks, pairs="all", target="fused", identity=True)
    assert len(rule) == 3 and len(fused) == 5  # every frame, the rule frame included, plus the fusion itself
    target = fused.targets["src/A"]
    assert target == cached_path(tmp_path / "stacks_fused", "src/A")
    assert {p.target for p in fused.pairs} == {target}
    identity = [p for p in fused.pairs if p.exposure == "identity"]
    assert len(identity) == 1 and identity[0].input == target
    item = fused[len(fused) - 1]
    assert torch.equal(item["input"], item["target"])
    half = StackDataset(stacks, pairs="all", target="fused", fusion_alpha=0.5)
    t_half, t_full, t_rule = (half[0]["target"], fused[0]["target"], rule[0]["target"])
    assert torch.allclose(t_half, 0.5 * t_full + 0.5 * t_rule, atol=2e-4)  # 16-bit cache rounding
    assert half.gt_files() == [half.targets["src/A"]]
    with pytest.raises(ValueError, match="target='best'"):
        StackDataset(stacks, target="best")


def test_identity_items_in_the_training_stream():
    from training.config import DataSection
    from training.stream import TrainStream

    d = DataSection(kind="procedural", crop=16, identity_ratio=0.5, ev_range=(-4.0, 3.0), min_abs_ev=0.0)
    stream = TrainStream(d, 0, None, None, 8)
    same = [torch.equal(it["input"], it["target"]) for it in (stream[k] for k in range(40))]
    assert 8 <= sum(same) <= 32  # about half the renders are the clean photo itself, the rest are re-exposed
    with pytest.raises(ValueError, match="identity_ratio"):
        from training.config import TrainConfig

        TrainConfig.from_dict({"data": {"identity_ratio": 1.0}})
