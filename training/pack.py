"""Pack a compact training copy of a data folder (``stacks/`` + ``photos/``) for a machine it must travel to.

The device machine that may be lent for training (an H200, reached through a 64 MiB working-tree limit and
with nothing to download from) cannot read ``../shared/data`` (185 MB).  Training never needs it at full size:
the default recipe resizes every item's short side to at most 384 px (``data.resize_short``) before cropping.
This tool writes the same layout, downscaled so the short side is at most ``--short-side`` and stored as
JPEG (4:4:4, ``--quality``), so that ``RESTOREX_DATA=<out>`` works with every config unchanged:

* ``stacks/<source>/<scene>/NN.jpg``: every frame, all frames of a scene scaled alike (same size stays
  same size); the GT rule (mean brightness ordering) is checked to pick the same GT / under / over frames
  as in the source, and the scenes where it does not are listed (an error with ``--strict``);
* ``photos/<source>/<name>.jpg``: every photo of the sets not named in ``--exclude-photos`` (the held-out
  kodak24 and mcmaster by default: scoring happens on the full-size originals, not on the pack);
* every ``README*`` / ``TERMS*`` text next to the data is copied (the data's terms travel with it), and
  ``PACK.txt`` records what was done.

The pack is built in a hidden folder beside ``--out`` and renamed into place when complete and within
``--budget-mib``; an interrupted or over-budget run leaves nothing behind.

Usage::

    python -m training.pack --data ../shared/data --out .pack/data --short-side 320 --budget-mib 36   # 36.0 MiB, 8 s

With the repository (19 MiB) and the open_clip wheels (2.3 MiB) that is 57 MiB of the device's 64 MiB.  The GPU
recipes resize the short side to 256-288 px, so 320 px loses nothing they use.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .datasets import IMAGE_EXTS, DatasetError, image_size
from .stacks import find_scenes, rule_roles

logger = logging.getLogger(__name__)

TEXT_PATTERNS = ("README*", "TERMS*", "NOTICE*", "LICENSE*")


@dataclass(frozen=True)
class Job:
    src: Path
    dst: Path
    size: tuple[int, int]  # (width, height) to write


def scaled_size(size: tuple[int, int], short_side: int) -> tuple[int, int]:
    """(w, h) scaled so that min(w, h) <= short_side, aspect kept; unchanged when already small enough."""
    w, h = size
    s = min(1.0, short_side / min(w, h))
    return (max(1, round(w * s)), max(1, round(h * s))) if s < 1.0 else (w, h)


def _open_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)  # as training.datasets.load_image reads it
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit gray -> 8 bit
                im = Image.fromarray((np.asarray(im, dtype=np.float64) / 257.0).round().clip(0, 255).astype(np.uint8))
            return im.convert("RGB")
    except (OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"cannot decode image {path}: {e}. Replace or remove the file.") from e


def _write(job: Job, quality: int) -> tuple[int, float, float]:
    """Write one image; returns (bytes written, mean 0-255 of the source's pixels, of the written pixels)."""
    im = _open_rgb(job.src)
    src_mean = float(np.asarray(im).mean())
    if im.size != job.size:
        im = im.resize(job.size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    job.dst.parent.mkdir(parents=True, exist_ok=True)
    im.save(job.dst, "JPEG", quality=quality, subsampling=0, optimize=True)
    with Image.open(job.dst) as back:  # the mean the GT rule will see in the pack
        mean = float(np.asarray(back.convert("RGB")).mean())
    return job.dst.stat().st_size, src_mean, mean


def plan(data: Path, dst: Path, *, short_side: int, exclude_photos: Sequence[str]) -> tuple[list[Job], dict]:
    """The jobs that pack ``data`` into ``dst``, and the stack scenes (scene id -> its jobs, darkest first)."""
    jobs: list[Job] = []
    scenes: dict[str, list[Job]] = {}
    stacks = data / "stacks"
    if stacks.is_dir():
        for sid, files in find_scenes(stacks).items():
            size = scaled_size(image_size(files[0]), short_side)  # all frames of a scene share a size
            scenes[sid] = [Job(f, dst / "stacks" / sid / (f.stem + ".jpg"), size) for f in files]
            jobs += scenes[sid]
    photos = data / "photos"
    if photos.is_dir():
        unknown = [s for s in exclude_photos if not (photos / s).is_dir()]
        if unknown:
            raise DatasetError(f"--exclude-photos names no folder of {photos}: {', '.join(unknown)}")
        for f in sorted(p for p in photos.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS):
            rel = f.relative_to(photos)
            if rel.parts[0] in exclude_photos:
                continue
            jobs.append(Job(f, dst / "photos" / rel.with_suffix(".jpg"), scaled_size(image_size(f), short_side)))
    if not jobs:
        raise DatasetError(f"{data} has no stacks/ or photos/ images to pack (point --data at the folder holding them)")
    stems = {}
    for j in jobs:  # 00.png and 00.jpg in one folder would both become 00.jpg
        if j.dst in stems:
            raise DatasetError(f"{j.src} and {stems[j.dst]} would both be packed as {j.dst.name}; rename one")
        stems[j.dst] = j.src
    return jobs, scenes


def pack(data: str | Path, out: str | Path, *, short_side: int = 384, quality: int = 85,
         exclude_photos: Sequence[str] = ("kodak24", "mcmaster"), budget_mib: float = 0.0,
         strict: bool = False, workers: int | None = None, force: bool = False) -> dict:
    """Pack ``data`` into ``out`` (module docstring).  Returns a summary dict (files, bytes, changed scenes)."""
    data, out = Path(data), Path(out)
    if not data.is_dir():
        raise DatasetError(f"data folder {data} does not exist (pass the folder holding stacks/ and photos/)")
    if not 16 <= short_side <= 8192:
        raise ValueError(f"--short-side {short_side}: use 16..8192 px")
    if not 50 <= quality <= 100:
        raise ValueError(f"--quality {quality}: use 50..100")
    if out.exists() and not force:
        raise FileExistsError(f"{out} already exists: remove it or pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    try:
        jobs, scenes = plan(data, tmp, short_side=short_side, exclude_photos=tuple(exclude_photos))
        with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            results = list(pool.map(_write, jobs, [quality] * len(jobs), chunksize=8))
        total = sum(r[0] for r in results)
        means = {j.dst: (r[1], r[2]) for j, r in zip(jobs, results, strict=True)}
        changed = [sid for sid, sj in scenes.items()  # the GT rule must pick the same frames in the pack
                   if rule_roles([means[j.dst][0] for j in sj]) != rule_roles([means[j.dst][1] for j in sj])]
        if changed and strict:
            raise DatasetError(f"the GT rule picks other frames in the pack for {len(changed)} scene(s): "
                               f"{', '.join(changed[:8])}; raise --quality or --short-side, or drop --strict")
        for pattern in TEXT_PATTERNS:
            for f in data.rglob(pattern):
                rel = f.relative_to(data)
                if f.is_file() and not (len(rel.parts) > 2 and rel.parts[0] == "photos"
                                        and rel.parts[1] in exclude_photos):
                    dst = tmp / rel
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, dst)
        mib = total / 2**20
        if budget_mib and mib > budget_mib:
            raise DatasetError(f"the pack is {mib:.1f} MiB, over --budget-mib {budget_mib:g}: lower --quality "
                               f"(now {quality}) or --short-side (now {short_side})")
        summary = {"files": len(jobs), "mib": mib, "scenes": len(scenes), "changed_scenes": changed}
        (tmp / "PACK.txt").write_text(
            f"A training copy of {data.resolve()} made by `python -m training.pack`: short side <= {short_side} px, "
            f"JPEG quality {quality} (4:4:4), photo sets left out: {', '.join(exclude_photos) or 'none'}.\n"
            f"{len(jobs)} images, {mib:.1f} MiB, {len(scenes)} stack scenes"
            + (f"; the GT rule picks other frames in: {', '.join(changed)}" if changed else "") + ".\n"
            "The data's own README and TERMS files are copied beside it: their terms apply to this copy. "
            "Never commit it.\n")
        if out.exists():  # --force
            shutil.rmtree(out)
        os.replace(tmp, out)
        return summary
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m training.pack", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="the folder holding stacks/ and photos/ (e.g. ../shared/data)")
    p.add_argument("--out", required=True, help="the pack folder to create (e.g. .pack/data, git-ignored)")
    p.add_argument("--short-side", type=int, default=384, help="largest short side in px (default 384)")
    p.add_argument("--quality", type=int, default=85, help="JPEG quality (default 85)")
    p.add_argument("--exclude-photos", default="kodak24,mcmaster",
                   help="comma-separated photos/ sets to leave out (default: the held-out kodak24,mcmaster)")
    p.add_argument("--budget-mib", type=float, default=0.0, help="fail if the pack is larger (0: no limit)")
    p.add_argument("--strict", action="store_true", help="fail if the GT rule picks other frames in the pack")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        s = pack(args.data, args.out, short_side=args.short_side, quality=args.quality,
                 exclude_photos=[x for x in args.exclude_photos.split(",") if x], budget_mib=args.budget_mib,
                 strict=args.strict, workers=args.workers, force=args.force)
    except (DatasetError, FileExistsError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {args.out}: {s['files']} images, {s['mib']:.1f} MiB, {s['scenes']} stack scenes"
          + (f"; GT rule differs in {len(s['changed_scenes'])}: {', '.join(s['changed_scenes'])}"
             if s["changed_scenes"] else "; GT rule unchanged in every scene"))
    return s


if __name__ == "__main__":
    main()
