"""Bracketed exposure stacks as paired data (the SICE/ENC idea: a real, well-exposed frame is the GT).

A scene is any folder below ``root`` holding two or more images (e.g. ``stacks/<source>/<scene>/NN.png``).
Its frames are sorted by mean brightness (0-255 over all pixels and channels) and the GT is picked
by the rule of shared/data/README.md:

* **gt**: the frame whose mean is closest to 118;
* **under**: the brightest frame with mean <= 0.55 x the GT mean;
* **over**: the darkest frame with mean >= min(1.5 x GT mean, GT mean + 0.5 x (255 - GT mean)).

``pairs="rule"`` yields only those (under|over -> gt) pairs; ``pairs="all"`` yields every other frame
of the scene as an input for the GT, labelled ``under`` if darker than the GT, else ``over``.

``target="fused"`` replaces the rule frame as target by the scene's exposure fusion
(:mod:`training.fusion`, cached beside the data), optionally blended with the rule frame
(``fusion_alpha < 1``).  With ``pairs="all"`` every frame of the scene, the rule frame included, is then an
input for it, and ``identity=True`` adds the fused image itself as an input whose target is itself (a
well-exposed photo must come out unchanged).
Select or hold out scenes with ``scenes`` / ``exclude``: entries are scene ids (``mef_waterloo/Arno``)
or any leading part of one (``mef_waterloo`` selects that whole source); split by scene, never by frame.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .datasets import (
    GT_TARGET_MEAN,
    IMAGE_EXTS,
    DatasetError,
    Pair,
    PairedImageDataset,
    open_image,
    read_list,
    short_list,
)
from .fusion import default_cache, fused_target_file


@dataclass(frozen=True)
class Frame:
    path: Path
    mean: float  # 0-255
    size: tuple[int, int]  # (width, height)


@dataclass(frozen=True)
class RuleRoles:
    gt: int
    under: int | None
    over: int | None


def rule_roles(means: list[float]) -> RuleRoles:
    """Indices of gt / under / over in ``means`` (sorted ascending) under the README's GT rule."""
    gt = min(range(len(means)), key=lambda i: (abs(means[i] - GT_TARGET_MEAN), i))
    g = means[gt]
    under = [i for i in range(len(means)) if i != gt and means[i] <= 0.55 * g]
    over_min = min(1.5 * g, g + 0.5 * (255.0 - g))
    over = [i for i in range(len(means)) if i != gt and means[i] >= over_min]
    return RuleRoles(gt, max(under, key=lambda i: means[i]) if under else None,
                     min(over, key=lambda i: means[i]) if over else None)


def _frame(path: Path) -> Frame:
    with open_image(path) as im:
        try:
            arr = np.asarray(im.convert("RGB") if im.mode not in ("I;16", "I;16B", "I;16L", "I") else im)
        except (OSError, SyntaxError, ValueError) as e:
            raise DatasetError(f"cannot decode image {path}: {e}. Replace or remove the file.") from e
        mean = float(arr.mean()) * (255.0 / 65535.0 if arr.dtype != np.uint8 else 1.0)
        return Frame(path, mean, im.size)


def find_scenes(root: Path) -> dict[str, list[Path]]:
    """Scene id (path relative to ``root``) -> its image files, for every folder with >= 2 images."""
    if not root.is_dir():
        raise DatasetError(f"stacks folder {root} does not exist")
    scenes = {}
    for d in sorted([root, *(p for p in root.rglob("*") if p.is_dir())]):
        files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
        if len(files) >= 2:
            scenes[d.relative_to(root).as_posix()] = files
    if not scenes:
        raise DatasetError(f"no scene folders (a folder with two or more images) under {root}")
    return scenes


def _select(ids: list[str], spec: str | Path | Iterable[str] | None, what: str) -> set[str]:
    if spec is None:
        return set()
    wanted = [s.strip("/") for s in read_list(spec)]
    hits = {w: {i for i in ids if i == w or i.startswith(w + "/")} for w in wanted}
    unknown = [w for w, h in hits.items() if not h]
    if unknown:
        raise DatasetError(f"{what} names no scene: {short_list(unknown)} (scene ids look like {ids[0]!r})")
    return set().union(*hits.values())


class StackDataset(PairedImageDataset):
    """Pairs from bracketed stacks (module docstring).  ``split`` is accepted and ignored: split by scene.

    Args:
        root: the stacks folder.
        scenes: scene ids / prefixes (or a list file) to keep; None keeps all.
        exclude: scene ids / prefixes (or a list file) to hold out.
        pairs: ``"all"`` (every non-GT frame) or ``"rule"`` (only the rule's under / over frames).
    """

    def __init__(self, root: str | Path, split: str | None = None, *,
                 scenes: str | Path | Iterable[str] | None = None,
                 exclude: str | Path | Iterable[str] | None = None, pairs: str = "all", target: str = "rule",
                 fusion_alpha: float = 1.0, fused_cache: str | Path | None = None, identity: bool = False,
                 **kw) -> None:
        if pairs not in ("all", "rule"):
            raise ValueError(f"pairs={pairs!r}; use 'all' or 'rule'")
        if target not in ("rule", "fused"):
            raise ValueError(f"target={target!r}; use 'rule' (the GT rule's frame) or 'fused' (exposure fusion)")
        root = Path(root)
        found = find_scenes(root)
        ids = sorted(found)
        keep = _select(ids, scenes, "scenes") if scenes is not None else set(ids)
        keep -= _select(ids, exclude, "exclude")
        if not keep:
            raise DatasetError(f"scene selection left no scene in {root}")
        self.scenes: dict[str, list[Frame]] = {}
        self.roles: dict[str, RuleRoles] = {}
        self.targets: dict[str, Path] = {}  # each scene's target file: its rule frame or its fused image
        out: list[Pair] = []
        for sid in sorted(keep):
            frames = sorted((_frame(p) for p in found[sid]), key=lambda f: (f.mean, f.path.name))
            sizes = {f.size for f in frames}
            if len(sizes) > 1:
                raise DatasetError(f"frames of scene {root / sid} differ in size: "
                                   + short_list([f"{f.path.name} {f.size[0]}x{f.size[1]}" for f in frames]))
            roles = rule_roles([f.mean for f in frames])
            self.scenes[sid], self.roles[sid] = frames, roles
            gt = frames[roles.gt]
            self.targets[sid] = gt.path
            if pairs == "rule":
                chosen = [(i, lab) for i, lab in ((roles.under, "under"), (roles.over, "over")) if i is not None]
            else:
                chosen = [(i, "under" if i < roles.gt else "over") for i in range(len(frames)) if i != roles.gt]
            if target == "fused":
                tpath = fused_target_file(sid, [f.path for f in frames], gt.path, fused_cache or default_cache(root),
                                          fusion_alpha)
                self.targets[sid] = tpath
                if pairs == "all":
                    chosen.append((roles.gt, "gt"))
                out += [Pair(frames[i].path, tpath, f"{sid}/{frames[i].path.name}", lab) for i, lab in chosen]
                if identity:
                    out.append(Pair(tpath, tpath, f"{sid}/fused", "identity"))
                continue
            out += [Pair(frames[i].path, gt.path, f"{sid}/{frames[i].path.name}", lab) for i, lab in chosen]
        # Sizes were checked per scene above; no second header pass.
        super().__init__(out, source=f"{root} (pairs={pairs})", check_sizes=False, **kw)

    def gt_files(self) -> list[Path]:
        """The target of every selected scene, its GT frame or its fused image (e.g. as well-exposed sources for
        synthetic data)."""
        return list(self.targets.values())

