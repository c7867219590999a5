"""Baselines, the evaluate() loop and CLI with a tiny checkpoint, and the Figure 6 / 7 analyses."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.exposure import equalize_adapthist

from training.baselines import BASELINES, auto_gamma, best_gamma, clahe, gamma_oracle, histogram_equalization
from training.data import PairedFolderDataset, SyntheticExposureDataset
from training.evaluate import evaluate, main
from training.figures import figure6, figure7, nn_accuracy, tsne
from training.figures import main as figures_main
from training.metrics import psnr, ssim


def _scene(h: int = 40, w: int = 48, seed: int = 0) -> torch.Tensor:
    """A smooth, full-range colour image (3, H, W) in [0, 1], 8-bit levels."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([xx, 0.5 * (xx + yy), yy]) * 0.9 + 0.05 + 0.03 * torch.randn(3, h, w, generator=g)
    return (base.clamp(0, 1) * 255).round() / 255


def _pairs_folder(root, n: int = 3):
    for i in range(n):
        gt = _scene(seed=i)
        for sub, img in (("gt", gt), ("input", gt ** (2.2 if i % 2 == 0 else 0.45))):
            (root / sub).mkdir(parents=True, exist_ok=True)
            arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            Image.fromarray(arr).save(root / sub / f"img{i}.png")
    return root


# ------------------------------------------------------------------------------------------ baselines
def test_identity_and_gamma_oracle():
    y = _scene()
    x = y ** 2.0  # under-exposed by a pure gamma
    x = (x * 255).round() / 255
    ident = BASELINES["identity"].fn(x, y)
    assert torch.equal(ident, x) and float(psnr(ident, y)) < 20
    g = best_gamma(x, y)
    assert g == pytest.approx(0.5, abs=0.02)
    oracle = gamma_oracle(x, y)
    assert float(psnr(oracle, y)) > float(psnr(x, y)) + 10
    assert float(psnr(oracle, y)) >= float(psnr(auto_gamma(x), y))
    for gg in (g * 0.9, g * 1.1):  # the search found (at least) a local maximum
        assert float(psnr(oracle, y)) >= float(psnr(x ** gg, y))
    with pytest.raises(ValueError, match="oracle"):
        gamma_oracle(x)


def test_auto_gamma_maps_mean_luminance_to_half():
    x = _scene() * 0.3
    out = auto_gamma(x)
    w = torch.tensor([0.2126, 0.7152, 0.0722]).view(3, 1, 1)
    m = float((x * w).sum(0).mean())
    gamma = np.log(0.5) / np.log(m)
    assert torch.allclose(out, x ** gamma)
    assert float(out.mean()) > float(x.mean()) + 0.2


def test_histogram_equalization_flattens_value_and_keeps_hue():
    x = _scene() * 0.25 + 0.1
    out = histogram_equalization(x)
    v = out.max(0).values
    assert abs(float(v.mean()) - 0.5) < 0.05 and float(v.max()) == pytest.approx(1.0)
    ratio_in, ratio_out = x[0] / x.max(0).values, out[0] / v  # channel / value: unchanged
    assert torch.allclose(ratio_in, ratio_out, atol=1e-5)


def test_clahe_close_to_skimage_and_local():
    x = _scene(64, 64)
    ours = clahe(x)
    ref = torch.from_numpy(equalize_adapthist(x.permute(1, 2, 0).double().numpy())).permute(2, 0, 1).float()
    assert float(psnr(ours, ref)) > 28
    assert float(psnr(ours, x)) < 30  # it did change the image
    dark = x * 0.2
    assert float(clahe(dark).mean()) > float(dark.mean()) + 0.03


# ------------------------------------------------------------------------------------------- evaluate
def test_evaluate_baselines_only(tmp_path):
    ds = PairedFolderDataset(_pairs_folder(tmp_path / "data"))
    res = evaluate(None, ds, baselines="all", dataset_name="Pairs")
    assert len(res.records) == 3 * len(BASELINES)
    summary = res.summary()
    oracle = summary[BASELINES["gamma-oracle"].label]
    identity = summary[BASELINES["identity"].label]
    assert oracle[0] > identity[0] + 10 and oracle[2] == 3
    first = res.records[0]
    x, y = ds[0]["input"], ds[0]["target"]
    assert first.psnr == pytest.approx(float(psnr(x, y))) and first.ssim == pytest.approx(float(ssim(x, y)))
    assert set(res.exposures()) == {"under", "over"}
    table = res.table()
    assert table.splitlines()[0] == "| Method | Pairs PSNR | Pairs SSIM |"
    assert f"| {BASELINES['identity'].label} | {identity[0]:.2f} | {identity[1]:.4f} |" in table
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate(None, ds)


def test_evaluate_model_and_cli_with_tiny_checkpoint(tmp_path, capsys):
    from restorex_core import RestoreX, RestoreXConfig, save_checkpoint

    model = RestoreX(RestoreXConfig.tiny())
    ckpt = save_checkpoint(model, tmp_path / "tiny.safetensors")
    data = _pairs_folder(tmp_path / "data")
    model.train()
    res = evaluate(model, PairedFolderDataset(data), baselines=["identity"], tile=32)
    assert model.training  # mode restored for the trainer
    assert res.methods() == ["RestoreX", BASELINES["identity"].label]
    assert np.isfinite(res.psnr) and 0 < res.ssim <= 1

    main(["--weights", str(ckpt), "--dataset", "pairs", "--root", str(data), "--device", "cpu",
          "--out", str(tmp_path / "out"), "--tile", "32", "--limit", "2"])
    printed = capsys.readouterr().out
    assert "| Method | Pairs PSNR | Pairs SSIM |" in printed and "| RestoreX |" in printed
    for b in BASELINES.values():
        assert f"| {b.label} |" in printed
    assert "under (n=1) PSNR" in printed and "over (n=1) PSNR" in printed
    rows = list(csv.DictReader(open(tmp_path / "out" / "results.csv")))
    assert len(rows) == 2 * (1 + len(BASELINES)) and {r["name"] for r in rows} == {"img0", "img1"}
    summary = list(csv.DictReader(open(tmp_path / "out" / "summary.csv")))
    assert {r["exposure"] for r in summary} == {"all", "under", "over"}
    assert (tmp_path / "out" / "summary.md").read_text().startswith("# Evaluation: Pairs")


# -------------------------------------------------------------------------------------------- figures
def test_tsne_separates_clusters():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (30, 10)), rng.normal(6, 1, (30, 10))])
    labels = np.array([0] * 30 + [1] * 30)
    emb = tsne(x, perplexity=10, iters=500, seed=0)
    assert emb.shape == (60, 2)
    assert nn_accuracy(emb, labels) >= 0.95
    assert np.array_equal(emb, tsne(x, perplexity=10, iters=500, seed=0))
    assert nn_accuracy(rng.normal(0, 1, (60, 10)), labels) < 0.8  # the score is not trivially high


def test_figures_6_and_7_with_tiny_clip(tmp_path):
    from restorex_core import ClipVision, RestoreXConfig

    clip = ClipVision(RestoreXConfig.tiny().clip).eval()
    photos = []
    for i in range(6):
        arr = (_scene(32, 32, seed=i).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        photos.append(tmp_path / "photos" / f"p{i}.png")
        photos[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(arr).save(photos[-1])
    ds = SyntheticExposureDataset(photos, evs=(-1.5, -1.0, 0.0, 1.0, 1.5), seed=0)
    acc = figure6(clip, ds, tmp_path / "fig", blocks=(1, 3), limit=20, perplexity=3)
    assert set(acc) == {1, 3} and all(0 <= a <= 1 for a in acc.values())
    rel = figure7(clip, ds, tmp_path / "fig", blocks=(1, 4))
    assert list(rel) == ["EV-1.5", "EV-1", "EV+0", "EV+1", "EV+1.5"]
    assert rel["EV+0"] == {1: 1.0, 4: 1.0} and rel["EV-1.5"][1] > 1.0
    for name in ("figure6.png", "figure7.png"):
        with Image.open(tmp_path / "fig" / name) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    rows = list(csv.DictReader(open(tmp_path / "fig" / "figure7.csv")))
    assert len(rows) == 5 * 2


def test_figures_cli_uses_the_checkpoint_encoder(tmp_path, capsys):
    from restorex_core import RestoreX, RestoreXConfig, save_checkpoint

    ckpt = save_checkpoint(RestoreX(RestoreXConfig.tiny()), tmp_path / "tiny.safetensors")
    for i in range(3):
        arr = (_scene(32, 32, seed=i).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        (tmp_path / "photos").mkdir(exist_ok=True)
        Image.fromarray(arr).save(tmp_path / "photos" / f"p{i}.png")
    figures_main(["fig7", "--weights", str(ckpt), "--dataset", "synthetic", "--root", str(tmp_path / "photos"),
                  "--blocks", "1,2", "--device", "cpu", "--out", str(tmp_path / "fig")])
    out = capsys.readouterr().out
    assert "EV-1.5 block 1:" in out and (tmp_path / "fig" / "figure7.png").is_file()
