"""Paired exposure-correction datasets read from disk.

Every dataset yields ``dict(input=(3, H, W) float32 in [0, 1], target=(3, H, W) float32 in [0, 1],
name=str, exposure=str)``.  Pairs are found and checked when the dataset is built (unpaired files,
empty folders, unreadable headers and size mismatches raise :class:`DatasetError` naming the files);
pixels are decoded lazily in ``__getitem__``.

Layouts (``root`` is what the user passes; names are matched by file stem, extension case ignored):

* **LCDP** (Wang, Xu & Lau, ECCV 2022; 1415 train / 100 valid / 218 test pairs). The authors' release
  (LCDPNet README and ``src/config/ds/*.yaml``) unpacks to ``<root>/input`` + ``<root>/gt`` (train),
  ``<root>/valid-input`` + ``<root>/valid-gt`` and ``<root>/test-input`` + ``<root>/test-gt``, with the
  training part possibly split over sub-folders (``adobe5k/``, ``raise/``).  We also accept
  ``<root>/<split>/{input,gt}``.  Input and GT share a file name.  Exposure label: ``"mixed"``.
* **MSEC** (Afifi et al., CVPR 2021): ``<root>/training/{INPUT_IMAGES,GT_IMAGES}``,
  ``<root>/validation/{INPUT_IMAGES,GT_IMAGES}``, ``<root>/testing/INPUT_IMAGES`` with the five expert
  renditions in ``<root>/testing/expert_{a..e}_testing_set``.  Inputs are ``<base>_<EV>.JPG`` with EV
  suffix ``N1.5, N1, 0, P1, P1.5`` (-1.5 .. +1.5 EV); the target is ``<base>.jpg`` (expert C by default,
  the paper's protocol).  Labels: ``"EV-1.5" .. "EV+1.5"``.
* **SICE, ENC protocol** (Cai et al. 2018; Huang et al. CVPR 2022): either the raw release,
  ``<root>/<scene>/<k>.JPG`` frames numbered dark to bright, where the middle frame is the GT (for an
  even count, the darker of the two middle frames) and the second / second-to-last frames are the
  under / over inputs; or the ENC/FECNet pre-cut layout ``<root>/[<split>/]{low,mid,over}/<scene>.JPG``.
  Scene ids come from a file such as ``splits/sice_enc_test_scenes.txt`` (``4.JPG`` means scene ``4``).
* **pairs**: ``<root>/[<split>/]input`` + ``<root>/[<split>/]gt`` (or ``target``).  Label: ``"under"``
  when the input is darker than the GT on average, else ``"over"``.
* **stacks**: one folder per scene (any depth below ``root``), frames sorted by mean brightness.  GT
  rule (shared/data/README.md): the frame whose mean is closest to 118/255; ``pairs="rule"`` keeps only
  the brightest frame with mean <= 0.55 x GT mean (under) and the darkest with mean >=
  min(1.5 x GT mean, GT mean + 0.5 x (255 - GT mean)) (over); ``pairs="all"`` uses every other frame.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from restorex_io import READABLE, ImageFileError, read_image

logger = logging.getLogger(__name__)

IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})
GT_TARGET_MEAN = 118.0  # the stacks GT rule: frame mean closest to 118/255
MSEC_EV = {"N1.5": -1.5, "N1": -1.0, "0": 0.0, "P1": 1.0, "P1.5": 1.5}
_MSEC_NAME = re.compile(r"^(?P<base>.+)_(?P<ev>N1\.5|N1|0|P1|P1\.5)$")
_MAX_LISTED = 8  # file names quoted in one error message


class DatasetError(ValueError):
    """A dataset folder is missing, empty, unpaired or holds an unreadable / mismatched image."""


@dataclass(frozen=True)
class Pair:
    input: Path
    target: Path
    name: str
    exposure: str | None  # None: decided per item from mean brightness (under / over)


def ev_label(ev: float) -> str:
    """-1.5 -> "EV-1.5", 0 -> "EV+0", 1 -> "EV+1" (one decimal at most)."""
    return f"EV{round(float(ev), 1) + 0.0:+g}"


def short_list(paths: Sequence[object]) -> str:
    shown = ", ".join(str(p) for p in paths[:_MAX_LISTED])
    return shown + (f" (+{len(paths) - _MAX_LISTED} more)" if len(paths) > _MAX_LISTED else "")


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name; error if there is none."""
    if not folder.is_dir():
        raise DatasetError(f"folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise DatasetError(f"folder {folder} holds no images ({', '.join(sorted(IMAGE_EXTS))})")
    return files


def _by_stem(files: list[Path]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in files:
        if f.stem in out:
            raise DatasetError(f"two images share the name {f.stem!r}: {out[f.stem]} and {f}; keep one")
        out[f.stem] = f
    return out


def match_by_stem(input_dir: Path, gt_dir: Path) -> list[tuple[Path, Path]]:
    """Pair ``input_dir/x.*`` with ``gt_dir/x.*``; every file must have a partner."""
    inputs, gts = _by_stem(list_images(input_dir)), _by_stem(list_images(gt_dir))
    lonely_in = [inputs[s] for s in sorted(inputs.keys() - gts.keys())]
    lonely_gt = [gts[s] for s in sorted(gts.keys() - inputs.keys())]
    if lonely_in or lonely_gt:
        msg = []
        if lonely_in:
            msg.append(f"{len(lonely_in)} input(s) with no GT of the same name in {gt_dir}: {short_list(lonely_in)}")
        if lonely_gt:
            msg.append(f"{len(lonely_gt)} GT(s) with no input of the same name in {input_dir}: {short_list(lonely_gt)}")
        raise DatasetError("; ".join(msg) + ". Add the missing partners or remove the extra files.")
    return [(inputs[s], gts[s]) for s in sorted(inputs)]


# ---------------------------------------------------------------------------------------------- images
def open_image(path: Path) -> Image.Image:
    try:
        im = Image.open(path)
    except (OSError, SyntaxError, ValueError) as e:  # UnidentifiedImageError is an OSError
        raise DatasetError(f"cannot read image {path}: {e}. Replace or remove the file.") from e
    return im


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) after EXIF orientation, read from the header only."""
    with open_image(path) as im:
        w, h = im.size
        try:
            orientation = im.getexif().get(0x0112, 1)  # PNG keeps EXIF after the pixels: may read them
        except (OSError, SyntaxError, ValueError) as e:
            raise DatasetError(f"cannot read image {path}: {e}. Replace or remove the file.") from e
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)  # 5-8: rotated by 90 degrees


def load_image(path: str | Path) -> Tensor:
    """Decode an image to (3, H, W) float32 in [0, 1] with the command line's reader: EXIF orientation
    applied, 8 or 16 bit kept exactly (16-bit colour PNG and TIFF included), gray repeated to RGB, alpha dropped.
    """
    try:
        image = read_image(path, formats=READABLE).tensor[0]
    except (ImageFileError, OSError) as e:  # unreadable, corrupt, unsupported or vanished file
        raise DatasetError(f"cannot read image {path}: {e}. Replace or remove the file.") from e
    colour = image[:-1] if image.shape[0] in (2, 4) else image  # drop alpha
    return colour.expand(3, -1, -1).contiguous() if colour.shape[0] == 1 else colour.contiguous()


def _check_sizes(pairs: Sequence[Pair]) -> None:
    sizes: dict[Path, tuple[int, int]] = {}
    bad = []
    for p in pairs:
        for f in (p.input, p.target):
            if f not in sizes:
                sizes[f] = image_size(f)
        if sizes[p.input] != sizes[p.target]:
            bad.append(f"{p.input} is {sizes[p.input][0]}x{sizes[p.input][1]} but "
                       f"{p.target} is {sizes[p.target][0]}x{sizes[p.target][1]}")
    if bad:
        raise DatasetError(f"{len(bad)} pair(s) differ in size: {short_list(bad)}. Resize or crop them to match.")


# -------------------------------------------------------------------------------------------- datasets
class PairedImageDataset(Dataset):
    """A list of (input, target) files, checked at construction and decoded lazily.

    Args:
        pairs: the pairs; an empty list is an error that names ``source``.
        transform: optional callable applied to the item dict (e.g. ``PairedTransform``).
        check_sizes: read every header now and fail on size mismatches (cheap: no pixel decoding).
    """

    def __init__(self, pairs: Iterable[Pair], *, transform: Callable[[dict], dict] | None = None,
                 check_sizes: bool = True, source: str = "") -> None:
        self.pairs = list(pairs)
        if not self.pairs:
            raise DatasetError(f"no image pairs found in {source or 'the given list'}")
        self.transform = transform
        if check_sizes:
            _check_sizes(self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        p = self.pairs[index]
        x, y = load_image(p.input), load_image(p.target)
        if x.shape != y.shape:
            raise DatasetError(f"{p.input} is {tuple(x.shape[1:])} but {p.target} is {tuple(y.shape[1:])} (H, W)")
        exposure = p.exposure or ("under" if x.mean() < y.mean() else "over")
        item = {"input": x, "target": y, "name": p.name, "exposure": exposure}
        return self.transform(item) if self.transform is not None else item


def _split_alias(split: str, table: dict[str, str]) -> str:
    key = split.lower()
    if key not in table:
        raise DatasetError(f"unknown split {split!r}; use one of {sorted(set(table))}")
    return table[key]


class LCDPDataset(PairedImageDataset):
    """LCDP: input and GT folders of same-named files (layouts in the module docstring)."""

    def __init__(self, root: str | Path, split: str = "test", **kw) -> None:
        root = Path(root)
        split = _split_alias(split, {"train": "train", "training": "train", "valid": "valid", "val": "valid",
                                     "validation": "valid", "test": "test", "testing": "test"})
        layout_names = {"train", "valid", "test", "input", "gt"}
        subsets = sorted(d for d in root.iterdir() if d.is_dir() and d.name not in layout_names
                         and not d.name.endswith(("-input", "-gt"))) if root.is_dir() else []
        bases = [root, *subsets]  # subsets: the release's adobe5k/ and raise/
        tried, folders = [], []
        for base in bases:
            cands = [(base / split / "input", base / split / "gt")]
            cands.append((base / "input", base / "gt") if split == "train"
                         else (base / f"{split}-input", base / f"{split}-gt"))
            for inp, gt in cands:
                tried.append(str(inp))
                if (inp.is_dir() or gt.is_dir()) and (inp, gt) not in folders:
                    folders.append((inp, gt))
        if not folders:
            raise DatasetError(f"no LCDP {split} folders under {root}; looked for {short_list(tried)} "
                               "and the matching gt folders")
        pairs = [Pair(i, g, i.stem, "mixed") for inp, gt in folders for i, g in match_by_stem(inp, gt)]
        super().__init__(pairs, source=str(root), **kw)


class MSECDataset(PairedImageDataset):
    """MSEC: five EV renditions per photo against one expert's retouch (expert C by default)."""

    def __init__(self, root: str | Path, split: str = "test", *, expert: str = "c",
                 targets: str | Path | Iterable[str] | None = None, **kw) -> None:
        root = Path(root)
        split = _split_alias(split, {"train": "training", "training": "training", "valid": "validation",
                                     "val": "validation", "validation": "validation", "test": "testing",
                                     "testing": "testing"})
        inp_dir = root / split / "INPUT_IMAGES"
        gt_dir = (root / split / f"expert_{expert.lower()}_testing_set" if split == "testing"
                  else root / split / "GT_IMAGES")
        gts = _by_stem(list_images(gt_dir))
        if targets is not None:
            keep = {Path(t).stem for t in read_list(targets)}
            gts = {s: p for s, p in gts.items() if s in keep}
        pairs, odd, lonely = [], [], []
        for f in list_images(inp_dir):
            m = _MSEC_NAME.match(f.stem)
            if m is None:
                odd.append(f)
            elif m["base"] in gts:
                pairs.append(Pair(f, gts[m["base"]], f.stem, ev_label(MSEC_EV[m["ev"]])))
            elif targets is None:
                lonely.append(f)
        if odd:
            raise DatasetError(f"MSEC inputs must end in _N1.5, _N1, _0, _P1 or _P1.5; these do not: {short_list(odd)}")
        if lonely:
            raise DatasetError(f"{len(lonely)} MSEC input(s) have no target <name>.jpg in {gt_dir}: "
                               + short_list(lonely))
        used = {p.target for p in pairs}
        unused = sorted(p for p in gts.values() if p not in used)
        if unused:
            raise DatasetError(f"{len(unused)} MSEC target(s) in {gt_dir} have no input in {inp_dir}: "
                               + short_list(unused))
        super().__init__(pairs, source=str(inp_dir), **kw)


def read_list(spec: str | Path | Iterable[str]) -> list[str]:
    """Entries of a list file (one per line, ``#`` comments) or of an iterable of strings."""
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        if not path.is_file():
            raise DatasetError(f"list file {path} does not exist")
        lines = path.read_text().splitlines()
    else:
        lines = list(spec)
    return [s.split("#", 1)[0].strip() for s in lines if s.split("#", 1)[0].strip()]


def _numeric_key(p: Path) -> tuple[int, str]:
    return (int(p.stem), p.name) if p.stem.isdigit() else (1 << 30, p.name)


class SICEDataset(PairedImageDataset):
    """SICE under the ENC protocol: second and second-to-last frames against the middle frame."""

    def __init__(self, root: str | Path, split: str | None = None, *,
                 scenes: str | Path | Iterable[str] | None = None, **kw) -> None:
        root = Path(root)
        base = root / split if split and (root / split / "mid").is_dir() else root
        ids = None if scenes is None else [Path(s).stem for s in read_list(scenes)]
        if (base / "mid").is_dir():  # ENC/FECNet pre-cut layout: {low,mid,over}/<scene>.JPG
            pairs = self._precut(base, ids)
        else:
            if ids is None:
                ids = sorted((d.name for d in root.iterdir() if d.is_dir() and d.name != "Label"),
                             key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))
                logger.warning("SICE: no scene list given, using all %d scene folders in %s", len(ids), root)
            pairs = [pair for sid in ids for pair in self._scene(root / sid)]
        super().__init__(pairs, source=str(root), **kw)

    @staticmethod
    def _scene(folder: Path) -> list[Pair]:
        if not folder.is_dir():
            raise DatasetError(f"SICE scene folder {folder} does not exist (scene listed in the scene file)")
        frames = sorted(list_images(folder), key=_numeric_key)
        if len(frames) < 5:
            raise DatasetError(f"SICE scene {folder} has {len(frames)} frames; the ENC protocol needs at least 5 "
                               "(second, middle, second-to-last must differ)")
        gt = frames[(len(frames) - 1) // 2]
        return [Pair(frames[1], gt, f"{folder.name}/under", "under"),
                Pair(frames[-2], gt, f"{folder.name}/over", "over")]

    @staticmethod
    def _precut(base: Path, ids: list[str] | None) -> list[Pair]:
        mids = _by_stem(list_images(base / "mid"))
        ids = sorted(mids) if ids is None else ids
        missing = [base / "mid" / f"{i}.JPG" for i in ids if i not in mids]
        if missing:
            raise DatasetError(f"SICE: listed scenes have no GT in {base / 'mid'}: {short_list(missing)}")
        pairs = []
        for sub, label in (("low", "under"), ("over", "over")):
            found = _by_stem(list_images(base / sub))
            lost = [base / sub / f"{i}.JPG" for i in ids if i not in found]
            if lost:
                raise DatasetError(f"SICE: no {label} input for these scenes in {base / sub}: {short_list(lost)}")
            pairs += [Pair(found[i], mids[i], f"{i}/{label}", label) for i in ids]
        return pairs


class PairedFolderDataset(PairedImageDataset):
    """Generic ``input/`` + ``gt/`` (or ``target/``) folders matched by file stem."""

    def __init__(self, root: str | Path, split: str | None = None, *, input_dir: str = "input",
                 gt_dir: str | None = None, **kw) -> None:
        base = Path(root) / split if split and (Path(root) / split).is_dir() else Path(root)
        if gt_dir is None:
            gt_dir = "target" if (base / "target").is_dir() and not (base / "gt").is_dir() else "gt"
        pairs = [Pair(i, g, i.stem, None) for i, g in match_by_stem(base / input_dir, base / gt_dir)]
        super().__init__(pairs, source=str(base), **kw)
