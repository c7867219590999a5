"""training.pack: a compact training copy of a data folder that the training code reads unchanged."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.datasets import DatasetError
from training.pack import main, pack
from training.stacks import StackDataset
from training.synthetic import find_images


def _photo(seed: int, w: int, h: int, gain: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([0.3 + 0.4 * xx, 0.2 + 0.5 * yy, 0.5 - 0.3 * xx * yy], -1) + 0.05 * rng.standard_normal((h, w, 3))
    return np.clip(base * gain, 0, 1)


def _save(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(img * 255).astype(np.uint8)).save(path)


def data_folder(root: Path) -> Path:
    """Two 3-frame stacks (PNG and JPEG, 120x80), two photo sets (one to leave out), terms files."""
    for scene, ext in (("src/a", "png"), ("src/b", "jpg")):
        for i, gain in enumerate((0.35, 1.0, 1.9)):
            _save(root / "stacks" / scene / f"{i:02d}.{ext}", _photo(i, 120, 80, gain))
    _save(root / "photos" / "train_set" / "p0.png", _photo(7, 90, 150))
    _save(root / "photos" / "train_set" / "p1.jpg", _photo(8, 40, 30))  # smaller than the short side: kept
    _save(root / "photos" / "held" / "h0.png", _photo(9, 60, 60))
    (root / "README.md").write_text("data readme")
    (root / "stacks" / "src" / "TERMS.txt").write_text("stack terms")
    (root / "photos" / "held" / "TERMS.txt").write_text("held-out terms")
    return root


def test_pack_downscales_keeps_the_layout_and_the_gt_rule(tmp_path):
    data = data_folder(tmp_path / "data")
    out = tmp_path / "pack" / "data"
    summary = pack(data, out, short_side=40, quality=90, exclude_photos=["held"], workers=1)
    assert summary["files"] == 8 and summary["scenes"] == 2 and summary["changed_scenes"] == []
    for scene in ("src/a", "src/b"):
        sizes = {Image.open(f).size for f in sorted((out / "stacks" / scene).iterdir())}
        assert sizes == {(60, 40)}  # 120x80 -> short side 40, every frame alike
    assert Image.open(out / "photos" / "train_set" / "p0.jpg").size == (40, 67)
    assert Image.open(out / "photos" / "train_set" / "p1.jpg").size == (40, 30)
    assert not (out / "photos" / "held").exists()
    assert (out / "README.md").read_text() == "data readme"
    assert (out / "stacks" / "src" / "TERMS.txt").read_text() == "stack terms"
    assert "short side <= 40 px" in (out / "PACK.txt").read_text()
    # the training readers take the pack as they take the source, and pick the same GT / under / over frames
    src, packed = StackDataset(data / "stacks", pairs="rule"), StackDataset(out / "stacks", pairs="rule")
    assert [(Path(p.input).stem, Path(p.target).stem, p.exposure) for p in src.pairs] == \
           [(Path(p.input).stem, Path(p.target).stem, p.exposure) for p in packed.pairs]
    assert len(find_images(out / "photos")) == 2
    assert list(tmp_path.glob("pack/.*")) == []  # no partial folder left


def test_pack_refuses_what_it_cannot_do_and_leaves_nothing(tmp_path, capsys):
    data = data_folder(tmp_path / "data")
    out = tmp_path / "pack"
    with pytest.raises(DatasetError, match="over --budget-mib"):
        pack(data, out, short_side=40, budget_mib=0.001, workers=1, exclude_photos=())
    assert not out.exists() and list(tmp_path.glob(".pack*")) == []
    with pytest.raises(DatasetError, match="--exclude-photos names no folder"):
        pack(data, out, exclude_photos=["kodak24"], workers=1)
    with pytest.raises(DatasetError, match="does not exist"):
        pack(tmp_path / "nowhere", out)
    pack(data, out, short_side=40, workers=1, exclude_photos=())
    with pytest.raises(FileExistsError, match="--force"):
        pack(data, out, short_side=40, workers=1, exclude_photos=())
    first = (out / "PACK.txt").read_text()
    main(["--data", str(data), "--out", str(out), "--short-side", "32", "--exclude-photos", "", "--force",
          "--workers", "1"])
    assert "GT rule unchanged in every scene" in capsys.readouterr().out
    assert (out / "PACK.txt").read_text() != first and Image.open(out / "stacks/src/a/00.jpg").size == (48, 32)
    with pytest.raises(SystemExit, match="error: .*--force"):
        main(["--data", str(data), "--out", str(out), "--exclude-photos", ""])
