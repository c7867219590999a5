"""Dataset layouts, errors, synthetic exposure and paired transforms (all on images made in tmp_path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.data import (
    DatasetError,
    LCDPDataset,
    MSECDataset,
    PairedFolderDataset,
    PairedTransform,
    SICEDataset,
    StackDataset,
    SyntheticExposureDataset,
    build_dataset,
    ev_label,
    load_image,
    render_exposure,
    rule_roles,
)
from training.synthetic import inverse_tone_curve, srgb_decode, srgb_encode, tone_curve


def save(path: Path, value: int | np.ndarray, size: tuple[int, int] = (24, 16)) -> Path:
    """An RGB image of (width, height) ``size``: constant ``value`` or the given (H, W, 3) uint8 array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = value if isinstance(value, np.ndarray) else np.full((size[1], size[0], 3), value, np.uint8)
    Image.fromarray(arr).save(path, quality=100) if path.suffix.lower() in (".jpg", ".jpeg") else \
        Image.fromarray(arr).save(path)
    return path


def names(ds) -> list[tuple[str, str, str]]:
    return sorted((p.input.name, p.target.name, p.exposure or "") for p in ds.pairs)


# ------------------------------------------------------------------------------------------- layouts
def test_lcdp_split_folders_pair_same_names(tmp_path):
    for n in ("a1", "b2"):
        save(tmp_path / "test" / "input" / f"{n}.png", 40)
        save(tmp_path / "test" / "gt" / f"{n}.png", 120)
    save(tmp_path / "train" / "input" / "c3.png", 40)
    save(tmp_path / "train" / "gt" / "c3.png", 120)
    ds = LCDPDataset(tmp_path, "test")
    assert names(ds) == [("a1.png", "a1.png", "mixed"), ("b2.png", "b2.png", "mixed")]
    item = ds[0]
    assert item["input"].shape == (3, 16, 24) and item["input"].dtype == torch.float32
    assert item["name"] == "a1" and abs(float(item["target"].mean()) - 120 / 255) < 1e-6
    assert [p.name for p in LCDPDataset(tmp_path, "train").pairs] == ["c3"]  # found once, not twice


def test_lcdp_release_layout_with_subsets(tmp_path):
    # The authors' release: <root>/<subset>/{input,gt} for training, <root>/<subset>/test-{input,gt} for test.
    save(tmp_path / "adobe5k" / "input" / "a0001.png", 40)
    save(tmp_path / "adobe5k" / "gt" / "a0001.png", 120)
    save(tmp_path / "raise" / "input" / "r0001.png", 40)
    save(tmp_path / "raise" / "gt" / "r0001.png", 120)
    save(tmp_path / "adobe5k" / "test-input" / "a0002.png", 40)
    save(tmp_path / "adobe5k" / "test-gt" / "a0002.png", 120)
    assert [p.name for p in build_dataset("lcdp", tmp_path, "train").pairs] == ["a0001", "r0001"]
    assert [p.name for p in build_dataset("lcdp", tmp_path, "test").pairs] == ["a0002"]
    with pytest.raises(DatasetError, match="valid-input"):
        build_dataset("lcdp", tmp_path, "valid")


def _msec(root: Path, split: str, gt_dir: str, bases: list[str]) -> None:
    for b in bases:
        save(root / split / gt_dir / f"{b}.jpg", 120)
        for sfx in ("N1.5", "N1", "0", "P1", "P1.5"):
            save(root / split / "INPUT_IMAGES" / f"{b}_{sfx}.JPG", 30 + 30 * len(sfx))


def test_msec_test_and_train_layouts(tmp_path):
    _msec(tmp_path, "testing", "expert_c_testing_set", ["a0001-jmac_DSC1459", "a0002-x_1"])
    save(tmp_path / "testing" / "expert_a_testing_set" / "a0001-jmac_DSC1459.jpg", 90)
    _msec(tmp_path, "training", "GT_IMAGES", ["a0003-y"])
    ds = MSECDataset(tmp_path, "test")
    assert len(ds) == 10
    by_name = {p.name: p for p in ds.pairs}
    p = by_name["a0001-jmac_DSC1459_N1.5"]
    assert p.target == tmp_path / "testing" / "expert_c_testing_set" / "a0001-jmac_DSC1459.jpg"
    assert p.exposure == "EV-1.5"
    assert sorted({q.exposure for q in ds.pairs}) == ["EV+0", "EV+1", "EV+1.5", "EV-1", "EV-1.5"]
    train = build_dataset("msec", tmp_path, "train")
    assert {q.target.name for q in train.pairs} == {"a0003-y.jpg"} and len(train) == 5
    only = MSECDataset(tmp_path, "test", targets=["a0002-x_1.jpg"])
    assert {q.target.name for q in only.pairs} == {"a0002-x_1.jpg"}


def test_msec_errors_name_the_files(tmp_path):
    _msec(tmp_path, "testing", "expert_c_testing_set", ["a0001"])
    save(tmp_path / "testing" / "INPUT_IMAGES" / "a0009_P1.JPG", 50)
    with pytest.raises(DatasetError, match="a0009_P1.JPG"):
        MSECDataset(tmp_path, "test")
    (tmp_path / "testing" / "INPUT_IMAGES" / "a0009_P1.JPG").unlink()
    save(tmp_path / "testing" / "INPUT_IMAGES" / "a0001_P2.JPG", 50)
    with pytest.raises(DatasetError, match="a0001_P2.JPG"):
        MSECDataset(tmp_path, "test")
    (tmp_path / "testing" / "INPUT_IMAGES" / "a0001_P2.JPG").unlink()
    save(tmp_path / "testing" / "expert_c_testing_set" / "a0042.jpg", 50)
    with pytest.raises(DatasetError, match="a0042.jpg"):
        MSECDataset(tmp_path, "test")


def _sice_scene(root: Path, sid: str, n: int) -> None:
    for k in range(1, n + 1):
        save(root / sid / f"{k}.JPG", 20 * k)


def test_sice_enc_protocol_second_middle_second_to_last(tmp_path):
    _sice_scene(tmp_path, "4", 7)
    _sice_scene(tmp_path, "38", 12)  # numeric order: 10.JPG, 11.JPG come after 9.JPG
    _sice_scene(tmp_path, "99", 7)  # not listed: left out
    (tmp_path / "scenes.txt").write_text("4.JPG\n38.JPG\n")
    ds = SICEDataset(tmp_path, scenes=tmp_path / "scenes.txt")
    assert [(p.name, p.input.name, p.target.name, p.exposure) for p in ds.pairs] == [
        ("4/under", "2.JPG", "4.JPG", "under"), ("4/over", "6.JPG", "4.JPG", "over"),
        ("38/under", "2.JPG", "6.JPG", "under"), ("38/over", "11.JPG", "6.JPG", "over")]
    _sice_scene(tmp_path, "5", 4)
    with pytest.raises(DatasetError, match=r"5 has 4 frames"):
        SICEDataset(tmp_path, scenes=["5.JPG"])
    with pytest.raises(DatasetError, match="77"):
        SICEDataset(tmp_path, scenes=["77.JPG"])


def test_sice_precut_layout(tmp_path):
    for sub, v in (("low", 30), ("mid", 120), ("over", 220)):
        for sid in ("4", "38"):
            save(tmp_path / "test" / sub / f"{sid}.JPG", v)
    ds = build_dataset("sice", tmp_path, "test", scenes=["38.JPG"])
    assert [(p.input.parent.name, p.target.parent.name, p.exposure) for p in ds.pairs] == [
        ("low", "mid", "under"), ("over", "mid", "over")]


def test_pairs_match_by_stem_and_label_by_brightness(tmp_path):
    save(tmp_path / "input" / "dark.png", 30)
    save(tmp_path / "gt" / "dark.jpg", 120)
    save(tmp_path / "input" / "bright.jpg", 230)
    save(tmp_path / "gt" / "bright.png", 120)
    ds = PairedFolderDataset(tmp_path)
    assert names(ds) == [("bright.jpg", "bright.png", ""), ("dark.png", "dark.jpg", "")]
    assert {ds[i]["name"]: ds[i]["exposure"] for i in range(2)} == {"bright": "over", "dark": "under"}


# -------------------------------------------------------------------------------------------- errors
def test_unpaired_files_are_named(tmp_path):
    save(tmp_path / "input" / "a.png", 30)
    save(tmp_path / "gt" / "a.png", 120)
    save(tmp_path / "input" / "only_input.png", 30)
    save(tmp_path / "gt" / "only_gt.png", 30)
    with pytest.raises(DatasetError, match="only_input.png") as e:
        PairedFolderDataset(tmp_path)
    assert "only_gt.png" in str(e.value)


def test_size_mismatch_names_both_files(tmp_path):
    save(tmp_path / "input" / "a.png", 30, size=(24, 16))
    save(tmp_path / "gt" / "a.png", 120, size=(24, 18))
    with pytest.raises(DatasetError, match=r"input[/\\]a.png is 24x16 but .*gt[/\\]a.png is 24x18"):
        PairedFolderDataset(tmp_path)


def test_empty_folder_and_unreadable_image_are_named(tmp_path):
    (tmp_path / "input").mkdir()
    save(tmp_path / "gt" / "a.png", 120)
    with pytest.raises(DatasetError, match=r"input holds no images"):
        PairedFolderDataset(tmp_path)
    (tmp_path / "input" / "a.png").write_bytes(b"not a png at all")
    with pytest.raises(DatasetError, match=r"cannot read image .*input[/\\]a.png"):
        PairedFolderDataset(tmp_path)
    save(tmp_path / "input" / "a.png", 30)
    save(tmp_path / "gt" / "a.png", np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8))
    data = (tmp_path / "gt" / "a.png").read_bytes()
    (tmp_path / "gt" / "a.png").write_bytes(data[: len(data) // 2])  # header fine, pixels truncated
    with pytest.raises(DatasetError, match=r"gt[/\\]a.png"):
        PairedFolderDataset(tmp_path)[0]  # found when reading the header or the pixels


def test_exif_orientation_and_16_bit(tmp_path):
    arr = np.zeros((16, 24, 3), np.uint8)
    arr[:, :12] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(arr).save(tmp_path / "rot.jpg", exif=exif, quality=100)
    img = load_image(tmp_path / "rot.jpg")
    assert img.shape == (3, 24, 16)
    assert img[:, :12].mean() > 0.9 and img[:, 12:].mean() < 0.1  # the white half is now on top
    (tmp_path / "input").mkdir()
    (tmp_path / "rot.jpg").rename(tmp_path / "input" / "rot.jpg")
    save(tmp_path / "gt" / "rot.png", 120, size=(16, 24))  # the displayed size: no mismatch
    assert PairedFolderDataset(tmp_path)[0]["input"].shape == (3, 24, 16)
    grey = np.full((8, 8), 30000, np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    assert torch.allclose(load_image(tmp_path / "g16.png"), torch.full((3, 8, 8), 30000 / 65535))


# -------------------------------------------------------------------------------------------- stacks
def test_rule_roles_match_the_readme_rule():
    arno = rule_roles([34.2, 89.6, 168.0])  # mef_waterloo/Arno in stacks.csv
    assert (arno.gt, arno.under, arno.over) == (1, 0, 2)
    r = rule_roles([5.0, 30.0, 60.0, 117.0, 140.0, 200.0, 250.0])
    assert (r.gt, r.under, r.over) == (3, 2, 5)  # 60 <= 0.55*117; min(175.5, 186) -> 200
    assert rule_roles([100.0, 120.0]).under is None


def _stack(root: Path, sid: str, means: list[int], ext: str = ".png") -> None:
    for k, m in enumerate(means):
        save(root / sid / f"{k:02d}{ext}", m)


def test_stacks_rule_and_all_pairs_and_scene_selection(tmp_path):
    _stack(tmp_path, "srcA/s1", [200, 20, 118, 60, 250])  # file order differs from brightness order
    _stack(tmp_path, "srcA/s2", [30, 115, 190])
    _stack(tmp_path, "srcB/s3", [40, 120, 230])
    ds = StackDataset(tmp_path, pairs="rule", scenes=["srcA"])
    assert [(p.name, p.target.name, p.exposure) for p in ds.pairs] == [
        ("srcA/s1/03.png", "02.png", "under"), ("srcA/s1/00.png", "02.png", "over"),
        ("srcA/s2/00.png", "01.png", "under"), ("srcA/s2/02.png", "01.png", "over")]
    all_pairs = StackDataset(tmp_path, exclude=["srcA/s2", "srcB"])
    assert sorted((p.input.name, p.exposure) for p in all_pairs.pairs) == [
        ("00.png", "over"), ("01.png", "under"), ("03.png", "under"), ("04.png", "over")]
    assert all_pairs.gt_files() == [tmp_path / "srcA" / "s1" / "02.png"]
    with pytest.raises(DatasetError, match="srcC"):
        StackDataset(tmp_path, scenes=["srcC"])


def test_stack_frames_of_different_sizes_are_named(tmp_path):
    _stack(tmp_path, "s", [30, 120])
    save(tmp_path / "s" / "02.png", 220, size=(10, 10))
    with pytest.raises(DatasetError, match="02.png 10x10"):
        StackDataset(tmp_path)


# ----------------------------------------------------------------------------------------- synthetic
def test_camera_curves_invert():
    x = np.linspace(0, 1, 1001)
    assert np.allclose(inverse_tone_curve(tone_curve(x)), x, atol=1e-9)
    assert np.allclose(srgb_decode(srgb_encode(x)), x, atol=1e-9)


def test_render_exposure_direction_and_ev0_round_trip():
    rng = np.random.default_rng(0)
    img = (np.round(rng.uniform(0.05, 0.95, (16, 16, 3)) * 255) / 255).astype(np.float32)
    assert np.abs(render_exposure(img, 0.0) - img).max() <= 1.0 / 255 + 1e-6
    dark, bright = render_exposure(img, -2.0), render_exposure(img, 1.5)
    assert dark.mean() < img.mean() - 0.1 and bright.mean() > img.mean() + 0.1
    assert (render_exposure(img, 3.0) == 1.0).mean() > 0.3  # highlights clip
    np.testing.assert_array_equal(render_exposure(img, -1.0), render_exposure(img, -1.0))
    assert np.all(np.isin(np.round(dark * 255), np.arange(256)))  # 8-bit levels


def test_synthetic_dataset_is_seeded_and_follows_the_ev(tmp_path):
    rng = np.random.default_rng(1)
    for k in range(2):
        save(tmp_path / "photos" / f"p{k}.png", rng.integers(40, 220, (20, 20, 3), dtype=np.uint8))
    ds = build_dataset("synthetic", tmp_path / "photos", seed=3)
    a, b = ds[0], ds[0]
    assert torch.equal(a["input"], b["input"]) and a["name"] == b["name"]
    assert not torch.equal(build_dataset("synthetic", tmp_path / "photos", seed=4)[0]["input"], a["input"])
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["input"], a["input"])
    for i in range(len(ds)):
        item = ds[i]
        assert -3.0 <= item["ev"] <= 2.5 and abs(item["ev"]) >= 0.5 and item["exposure"] == ev_label(item["ev"])
        darker = item["input"].mean() < item["target"].mean()
        assert darker == (item["ev"] < 0)
    grid = SyntheticExposureDataset(ds.files, evs=(-1.5, 0.0, 1.0), noise=False)
    assert len(grid) == 6 and [grid[i]["exposure"] for i in range(3)] == ["EV-1.5", "EV+0", "EV+1"]
    assert torch.allclose(grid[1]["input"], grid[1]["target"], atol=1.01 / 255)
    noisy, clean = SyntheticExposureDataset(ds.files, evs=(-2.0,), seed=0), SyntheticExposureDataset(
        ds.files, evs=(-2.0,), noise=False)
    assert (noisy[0]["input"] - clean[0]["input"]).abs().mean() > 0


# ---------------------------------------------------------------------------------------- transforms
def _item(h: int, w: int) -> dict:
    x = torch.rand(3, h, w)
    return {"input": x, "target": 1.0 - x, "name": "n", "exposure": "under"}


def test_paired_transform_applies_the_same_geometry():
    gen = torch.Generator().manual_seed(0)
    t = PairedTransform(8, generator=gen)
    seen = set()
    for _ in range(20):
        src = _item(13, 17)
        out = t(src)
        assert out["input"].shape == (3, 8, 8)
        assert torch.allclose(out["target"], 1.0 - out["input"])
        # the crop is a rotated / flipped window of the source
        found = any(torch.equal(torch.rot90(out["input"], -k, (-2, -1)).flip(d) if d else
                                torch.rot90(out["input"], -k, (-2, -1)), src["input"][:, i:i + 8, j:j + 8])
                    for k in range(4) for d in ((), (-1,), (-2,), (-1, -2)) for i in range(6) for j in range(10))
        assert found
        seen.add(out["input"][0, 0, 0].item())
    assert len(seen) > 10  # crops differ from call to call


def test_upright_transform_keeps_up_up():
    # a vertical ramp: brightness falls from top to bottom, as from sky to ground
    ramp = torch.linspace(1.0, 0.0, 16).view(1, 16, 1).expand(3, 16, 16).contiguous()
    item = {"input": ramp, "target": ramp.clone(), "name": "n", "exposure": "over"}
    gen = torch.Generator().manual_seed(0)
    dihedral = [PairedTransform(8, generator=gen)(item)["input"] for _ in range(40)]
    upright = [PairedTransform(8, upright=True, generator=gen)(item)["input"] for _ in range(40)]
    def sky_above(x):
        return bool(x[:, 0].mean() > x[:, -1].mean())
    assert all(sky_above(x) for x in upright)
    assert sum(not sky_above(x) for x in dihedral) > 10  # the default set turns it upside down or sideways
    # horizontal flips remain: a left-right ramp comes out both ways
    lr = ramp.transpose(1, 2).contiguous()
    side = [PairedTransform(8, upright=True, generator=gen)({**item, "input": lr, "target": lr})["input"]
            for _ in range(20)]
    assert {bool(x[:, :, 0].mean() > x[:, :, -1].mean()) for x in side} == {True, False}


def test_upright_reaches_the_training_stream():
    from training.config import DataSection
    from training.stream import TrainStream

    d = DataSection(kind="procedural", crop=16, upright=True)
    stream = TrainStream(d, 0, None, None, 4)
    assert stream[0]["input"].shape == (3, 16, 16)
    ramp = torch.linspace(1.0, 0.0, 32).view(1, 32, 1).expand(3, 32, 32).contiguous()
    rng = np.random.default_rng(0)
    for _ in range(10):
        x, _ = stream._crop(ramp, ramp, rng)
        assert x[:, 0].mean() > x[:, -1].mean()


def test_paired_transform_small_images_resize_or_pad():
    src = _item(6, 10)
    up = PairedTransform(16, flip=False, rot90=False)(src)
    assert up["input"].shape == (3, 16, 16) and up["target"].shape == (3, 16, 16)
    padded = PairedTransform(16, small="pad", flip=False, rot90=False)(src)
    assert padded["input"].shape == (3, 16, 16)
    assert torch.allclose(padded["target"], 1.0 - padded["input"])
    same = PairedTransform(None, flip=False, rot90=False)(src)
    assert torch.equal(same["input"], src["input"])


def test_build_dataset_rejects_unknown_kind(tmp_path):
    with pytest.raises(ValueError, match="lcdp, msec, sice, pairs, stacks, synthetic"):
        build_dataset("fivek", tmp_path)


def test_training_reads_16_bit_colour_png_exactly_with_the_cli_reader(tmp_path):
    """One image reader: training.load_image keeps all 16 bits of a colour PNG (Pillow alone cuts them to 8)."""
    from restorex_io import write_image
    from training.datasets import load_image

    values = np.random.default_rng(0).integers(0, 65536, (3, 12, 10), dtype=np.uint16)
    path = write_image(tmp_path / "deep.png", torch.from_numpy(values.astype(np.float32) / 65535)[None], bit_depth=16)
    loaded = load_image(path)
    assert loaded.shape == (3, 12, 10) and loaded.dtype == torch.float32
    assert np.array_equal(np.rint(loaded.numpy() * 65535).astype(np.uint16), values)
    rgba = write_image(tmp_path / "deep_alpha.png", torch.rand(1, 4, 6, 6), bit_depth=16)
    assert load_image(rgba).shape == (3, 6, 6)  # alpha dropped


def test_sky_repeat_draws_the_photos_with_a_blue_sky_more_often(tmp_path):
    from training.config import DataSection, TrainConfig
    from training.stream import build_data, shows_blue_sky

    photos = tmp_path / "photos"
    photos.mkdir()
    sky = np.zeros((48, 64, 3), np.uint8)
    sky[:24] = (107, 158, 219)  # a light blue sky over...
    sky[24:] = (90, 75, 50)  # ...brown land
    Image.fromarray(sky).save(photos / "sky.png")
    Image.fromarray(np.full((48, 64, 3), (200, 200, 195), np.uint8)).save(photos / "wall.png")  # white, not blue
    Image.fromarray(np.full((48, 64, 3), (30, 40, 120), np.uint8)).save(photos / "navy.png")  # blue, but dark
    assert [shows_blue_sky(photos / f) for f in ("sky.png", "wall.png", "navy.png")] == [True, False, False]
    counts = {}
    for repeat in (1, 3):
        d = DataSection(kind="synthetic", root=str(photos), crop=16, sky_repeat=repeat)
        stream, _ = build_data(d, seed=0)
        counts[repeat] = sorted(p.name for p in stream.photos)
        assert stream.epoch_len == len(stream.photos)  # synthetic only: an epoch is every listed photo once
    assert counts[1] == ["navy.png", "sky.png", "wall.png"]
    assert counts[3] == ["navy.png", "sky.png", "sky.png", "sky.png", "wall.png"]
    with pytest.raises(ValueError, match="sky_repeat"):
        TrainConfig.from_dict({"data": {"sky_repeat": 0}})


def test_noise_max_ev_keeps_sensor_noise_to_the_dark_renders():
    from training.config import DataSection
    from training.stream import TrainStream

    def items(**kw):
        d = DataSection(kind="procedural", crop=32, ev_range=(-3.0, 2.0), min_abs_ev=0.5, **kw)
        stream = TrainStream(d, 0, None, None, 8)
        return [stream[i] for i in range(24)]

    clean, noisy, dark_only = items(noise=False), items(noise=True), items(noise=True, noise_max_ev=0.0)
    under = [bool(c["input"].mean() < c["target"].mean()) for c in clean]
    assert 4 <= sum(under) <= 20  # both sides drawn
    for c, n, d, u in zip(clean, noisy, dark_only, under, strict=True):
        assert not torch.equal(c["input"], n["input"])  # noise at every EV by default
        assert torch.equal(c["input"], d["input"]) != u  # with noise_max_ev = 0: noisy when dark, clean when bright
