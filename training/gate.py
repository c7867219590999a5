"""Fit a correction gate (``restorex_core.arch.gate``) onto trained weights: how much of their correction each
image gets, so that a well-exposed photo comes back as it is.

    python -m training.gate --data DATA --weights weights/restorex-default.safetensors \\
        --out restorex-gated.safetensors

The network is frozen; the gate is a small MLP on the input's raw priors and histograms (the tone path's
features). Every training sample is read once at 256 px: the network's full correction ``o`` of the input ``x``
and its target ``y`` reduce to three numbers, so that the error of the gated output ``x + w (o - x)`` is
``a w^2 - 2 b w + c`` for any strength ``w`` (a = mean((o - x)^2), b = mean((o - x)(y - x)), c = mean((y - x)^2)),
and the fit runs on those alone (a few seconds for thousands of steps). The samples: every frame of the training
stack scenes toward its rule frame (the target the network was trained toward, and what the held-out rule-frame
subsets score), each scene's exposure fusion and its best-exposed frame (the GT rule's frame: a real photo taken
well exposed) toward themselves, and every training photo as it is (its own target) and rendered through the camera
model at ``--renders`` EVs (alternately uniform over [-1.5, +1.5], where a photo is nearly right, and over [-4,
+3]). Nothing from the held-out data. ``--no-best-frames`` leaves the best-exposed frames out (v4's samples).

The loss is the mean of log(error + 1e-5) (the mean PSNR, capped at 50 dB), weighted ``--under-weight`` times
where the gate gives less than the best strength: leaving a badly exposed photo uncorrected costs a user more
than a good photo restyled. With ``--brightening-only`` a sample whose correction darkens it has strength 1 whatever
the gate says (``restorex_core.arch.gate.held_back``), and the fit sees only the others. ``--cv K`` cross-validates
the fit by scene and photo for several under-weights instead (:func:`cross_validate`): how the shipped weight was
chosen.
``--check-heldout`` runs gated weights on the held-out scenes' best-exposed frames instead (real good photos the
fit never saw) and prints what the gate does to each.
``--samples FILE`` keeps the samples (tensors only, read back with ``weights_only=True``) for refits.
``--curve-steps N`` gives the gate an output curve (``restorex_core.arch.gate``), fitted first on :data:`PIXELS`
pixels kept per sample (input, full correction and target at the same random positions), the strength then fitted
on the curved correction; the samples must have been read with their pixels (``--pixels``).
``--ensemble E`` fits E gates with E seeds and writes their mean logit as one gate E times as wide
(:func:`merge_gates`); cross-validated it changed little (docs/weights_history.md, "Twenty-sixth session").
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from restorex_core.arch.gate import (
    LOW,
    SPAN,
    CorrectionGate,
    GateConfig,
    apply_output_curve,
    curve_from_logits,
    kept_share,
    strength_from_logit,
)
from restorex_core.files import atomic_path
from restorex_core.images import LUMA, luma_mean

from .config import read_toml
from .curve_probe import resize_max
from .datasets import load_image
from .heldout import DEFAULT_CONFIG, PSNR_CAP
from .metrics import psnr
from .stacks import StackDataset
from .stream import exposed
from .synthetic import find_images

logger = logging.getLogger(__name__)

PIXELS = 8192  # pixels of each sample kept for an output curve's fit (--curve-steps)
SIDE = 256  # every sample is read at this long side (the gate's features are read there too)
EPS = 1e-5  # the loss's floor: 50 dB
START = 0.9  # every image's strength when the fit starts
NEAR_EVS, ALL_EVS = (-1.5, 1.5), (-4.0, 3.0)
KINDS = ("stack", "fusion", "photo", "render", "best")  # append only: sample files store the index
LABELS = {"stack": "stack frames", "fusion": "fusions", "photo": "photos", "render": "renders",
          "best": "best frames"}


@dataclass(frozen=True)
class GateSamples:
    """The fit's data, one row per sample: gate features (S, F), error terms (S, 3) = (a, b, c), the correction's
    mean-luma rise (S,), the sample's kind (S,) as an index into :data:`KINDS`, its group (S,) (the stack scene or
    the photo it comes from: what a cross-validation holds out together) and whether it is one of the GT rule's
    under / over frames (S,) bool (what the held-out rule-frame subsets score)."""

    features: Tensor
    abc: Tensor
    rise: Tensor
    kind: Tensor
    group: Tensor
    rule: Tensor
    pixels: Tensor | None = None  # (S, 3, 3, P) fp16: P pixels of input, full correction, target (the curve's fit)

    FIELDS = ("features", "abc", "rise", "kind", "group", "rule", "pixels")

    def __len__(self) -> int:
        return self.features.shape[0]

    def best_strength(self) -> Tensor:
        """(S,) the strength that minimises each sample's error, in [0, 1]."""
        return (self.abc[:, 1] / self.abc[:, 0].clamp(min=1e-12)).clamp(0.0, 1.0)

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            torch.save({k: getattr(self, k) for k in self.FIELDS if getattr(self, k) is not None}, tmp)

    @classmethod
    def load(cls, path: str | Path) -> GateSamples:
        return cls(**torch.load(path, map_location="cpu", weights_only=True))

    def subset(self, keep: Tensor) -> GateSamples:
        """The samples where ``keep`` (S,) bool is true, or at the indices ``keep`` (long)."""
        return GateSamples(*(None if getattr(self, k) is None else getattr(self, k)[keep] for k in self.FIELDS))


def gate_config(model: nn.Module, hidden: int = 128, *, brightening_only: bool = False,
                curve_steps: int = 0) -> GateConfig:
    """The gate this fit gives ``model``: reading its priors, histograms at :data:`SIDE`."""
    c = model.config
    return GateConfig(hidden=hidden, prior_dim=c.pem.dim, num_priors=len(c.clip.taps), feature_side=SIDE,
                      brightening_only=brightening_only, curve_steps=curve_steps)


def read_sample(model: nn.Module, gate: CorrectionGate, x: Tensor, y: Tensor, *, seed: int = 0, pixels: int = 0,
                index: int = 0) -> tuple[Tensor, Tensor, float, Tensor | None]:
    """(3, H, W) input and target -> (gate features, (a, b, c), mean-luma rise, pixels) of ``model``'s full
    correction; pixels: None, or (3, 3, ``pixels``) fp16, the input, the correction and the target at the same
    random positions (drawn with replacement, seeded by ``index``): what the output curve's fit reads."""
    x, y = resize_max(x, SIDE), resize_max(y, SIDE)
    with torch.inference_mode():
        batch = x[None].to(model.device, model.dtype)
        priors = model.extract_priors(batch, source="input")
        feats = gate.features(priors.vectors, x[None].to(model.device))[0].float().cpu()
        o = model.correct(batch, seed=seed, auto_strength=False)[0].float().cpu().clamp(0, 1)
    if o.shape != y.shape:
        raise ValueError(f"an input of {tuple(x.shape)} has a target of {tuple(y.shape)}: pairs must match")
    d, e = o - x, y - x
    abc = torch.stack([(d * d).mean(), (d * e).mean(), (e * e).mean()])
    pix = None
    if pixels:
        where = torch.randint(x.shape[-2] * x.shape[-1], (pixels,), generator=torch.Generator().manual_seed(index))
        pix = torch.stack([x, o, y]).flatten(2)[:, :, where].half()
    return feats, abc, float(luma_mean(o[None]) - luma_mean(x[None])), pix


def gate_samples(model: nn.Module, data_root: Path, *, config: Path = DEFAULT_CONFIG,
                 fused_cache: str | Path | None = None, renders: int = 3, seed: int = 0,
                 limit: int | None = None, pixels: int = 0, best_frames: bool = True) -> GateSamples:
    """The fit's samples from the training data (module docstring); ``limit``: at most N stack pairs and photos;
    ``pixels``: keep that many pixels of each sample (:func:`read_sample`), which an output curve's fit needs;
    ``best_frames``: each training scene's GT-rule frame as a good photo, its own target (v4.1; v4 had none)."""
    data = read_toml(config)["data"]
    gate = CorrectionGate(gate_config(model))
    rng = np.random.default_rng(seed)
    rows: list[tuple[Tensor, Tensor, float, Tensor, int, int, bool]] = []
    t0 = time.monotonic()
    stacks = StackDataset(data_root / "stacks", exclude=data["val_scenes"], pairs="all", target="rule")
    scenes = sorted(stacks.scenes)
    rule_frames = {f"{sid}/{stacks.scenes[sid][k].path.name}" for sid in scenes
                   for k in (stacks.roles[sid].under, stacks.roles[sid].over) if k is not None}
    pairs = stacks.pairs if limit is None else stacks.pairs[:limit]

    def read(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, float, Tensor | None]:
        return read_sample(model, gate, x, y, seed=seed, pixels=pixels, index=len(rows))

    for i, pair in enumerate(pairs):
        item = stacks[i]
        rows.append((*read(item["input"], item["target"]), KINDS.index("stack"),
                     scenes.index(pair.name.rsplit("/", 1)[0]), pair.name in rule_frames))
    fusions = StackDataset(data_root / "stacks", exclude=data["val_scenes"], pairs="rule", target="fused",
                           fusion_alpha=1.0, fused_cache=fused_cache, identity=True)
    fused = [pair for pair in fusions.pairs if pair.exposure == "identity"]
    for pair in fused if limit is None else fused[:limit]:
        y = load_image(pair.target)
        rows.append((*read(y, y), KINDS.index("fusion"), scenes.index(pair.name.rsplit("/", 1)[0]), False))
    if best_frames:  # the frame every other frame of its scene is trained toward: a real well-exposed photo
        for sid in scenes if limit is None else scenes[:limit]:
            y = load_image(stacks.targets[sid])
            rows.append((*read(y, y), KINDS.index("best"), scenes.index(sid), False))
    logger.info("%d stack samples (%.0f s)", len(rows), time.monotonic() - t0)
    held = tuple((data_root / "photos" / e).resolve() for e in data.get("synthetic_exclude", ()))
    photos = [p for p in find_images(data_root / "photos") if not any(p.resolve().is_relative_to(h) for h in held)]
    for n, p in enumerate(photos if limit is None else photos[:limit]):
        y = resize_max(load_image(p), SIDE)
        group = len(scenes) + n
        rows.append((*read(y, y), KINDS.index("photo"), group, False))
        for k in range(renders):
            ev = float(rng.uniform(*(NEAR_EVS if k % 2 == 0 else ALL_EVS)))
            rows.append((*read(exposed(y, ev, rng, noise=True), y), KINDS.index("render"), group, False))
    logger.info("%d samples in all (%.0f s)", len(rows), time.monotonic() - t0)
    feats, abc, rise, pix, kind, group, rule = zip(*rows, strict=True)
    return GateSamples(torch.stack(feats), torch.stack(abc), torch.tensor(rise), torch.tensor(kind),
                       torch.tensor(group), torch.tensor(rule), torch.stack(pix) if pixels else None)


def kept_strength(strength: Tensor, rise: Tensor, brightening_only: bool) -> Tensor:
    """:func:`restorex_core.arch.gate.held_back` on precomputed rises (S,)."""
    return kept_share(strength, rise) if brightening_only else strength


def _curved(pixels: Tensor, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Sample pixels (S, 3, 3, P) and output-curve parameters (S, 3 k + 1) -> input, curved correction and
    target, each (S, 3, P) fp32."""
    x, o, y = pixels.float().unbind(1)
    return x, apply_output_curve(o[..., None], params)[..., 0], y


def curved_terms(samples: GateSamples, gate: CorrectionGate, *, chunk: int = 256) -> tuple[Tensor, Tensor]:
    """The error terms (S, 3) and mean-luma rises (S,) of the correction through ``gate``'s output curve, from the
    samples' pixels; the samples' own (the network's correction as it is) for a gate without one."""
    if gate.curve_net is None:
        return samples.abc, samples.rise
    if samples.pixels is None:
        raise ValueError("these samples keep no pixels: read them again to fit an output curve")
    luma = torch.tensor(LUMA).view(1, 3, 1)
    abc, rise = [], []
    with torch.no_grad():
        for i in range(0, len(samples), chunk):
            x, co, y = _curved(samples.pixels[i : i + chunk], gate.output_curve(samples.features[i : i + chunk]))
            d, e = co - x, y - x
            abc.append(torch.stack([(d * d).mean((1, 2)), (d * e).mean((1, 2)), (e * e).mean((1, 2))], dim=1))
            rise.append(((co - x) * luma).sum(1).mean(1))
    return torch.cat(abc), torch.cat(rise)


def fit_curve(samples: GateSamples, gate: CorrectionGate, *, steps: int = 1500, batch: int = 64, lr: float = 1e-3,
              weight_decay: float = 1e-2, seed: int = 0) -> None:
    """Fit ``gate``'s output curve (its feature statistics already set) to minimise the mean log error of the
    curved full correction against the target, over every sample's pixels."""
    if samples.pixels is None:
        raise ValueError("these samples keep no pixels: read them again to fit an output curve")
    net = gate.curve_net
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed + 1)
    net.train()
    for _ in range(steps):
        idx = torch.randint(len(samples), (batch,), generator=gen)
        params = curve_from_logits(net(gate.normalised(samples.features[idx])))
        _, co, y = _curved(samples.pixels[idx], params)
        loss = (((co - y) ** 2).mean((1, 2)) + EPS).log().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()


def fit(samples: GateSamples, config: GateConfig, *, steps: int = 3000, batch: int = 256, lr: float = 1e-3,
        weight_decay: float = 1e-2, under_weight: float = 4.0, seed: int = 0,
        curve_steps: int = 1500) -> CorrectionGate:
    """The gate minimising the mean log error of the gated outputs (module docstring), in eval mode. With
    ``config.curve_steps`` its output curve is fitted first (``curve_steps`` AdamW steps, :func:`fit_curve`), and
    the strength on the curved correction."""
    if len(samples) == 0:
        raise ValueError("no samples to fit the gate on")
    torch.manual_seed(seed)
    gate = CorrectionGate(config)
    with torch.no_grad():  # start inside (0, 1): at the clamp's edge (an untrained gate's 1) the gradient is zero
        gate.net[-1].bias.fill_(math.log((START + LOW) / (SPAN - START - LOW)))
    f = samples.features.float()
    gate.feature_mean.copy_(f.mean(0))
    gate.feature_std.copy_(f.std(0).nan_to_num(1.0).clamp(min=1e-4))
    if gate.curve_net is not None:
        fit_curve(samples, gate, steps=curve_steps, lr=lr, weight_decay=weight_decay, seed=seed)
    abc, rise = curved_terms(samples, gate)
    best = (abc[:, 1] / abc[:, 0].clamp(min=1e-12)).clamp(0.0, 1.0)
    use = torch.arange(len(samples))
    if config.brightening_only:  # a darkening correction is kept whole: those samples teach nothing
        use = use[rise > 0]
    if len(use) == 0:
        logger.warning("no sample's correction brightens it: the gate keeps every correction")
        return gate.eval()
    opt = torch.optim.AdamW(gate.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    gate.train()
    for _ in range(steps):
        idx = use[torch.randint(len(use), (batch,), generator=gen)]
        z = (f[idx] - gate.feature_mean) / gate.feature_std
        w = kept_strength(strength_from_logit(gate.net(z)[:, 0]), rise[idx], config.brightening_only)
        a, b, c = abc[idx].T
        err = (a * w * w - 2 * b * w + c).clamp(min=0) + EPS
        under = (w < best[idx]).float()
        loss = (err.log() * (1 + (under_weight - 1) * under)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return gate.eval()


def merge_gates(gates: Sequence[CorrectionGate]) -> CorrectionGate:
    """One gate whose logit is the mean of ``gates``' logits: their hidden layers side by side (width the sum of
    theirs), their last layers concatenated and divided by their number. Exact, not an approximation: the gate's MLP
    has one hidden layer, so the mean of K of them is itself such an MLP. The gates must share their feature
    statistics (fits on the same samples do) and have no output curve."""
    if not gates:
        raise ValueError("merge_gates needs at least one gate")
    if len(gates) == 1:
        return gates[0]
    first = gates[0]
    if any(g.curve_net is not None for g in gates):
        raise ValueError("gates with an output curve cannot be merged: fit the ensemble without --curve-steps")
    if any(not (torch.equal(g.feature_mean, first.feature_mean) and torch.equal(g.feature_std, first.feature_std))
           for g in gates[1:]):
        raise ValueError("the gates were fitted on different samples (their feature statistics differ)")
    width = sum(g.config.hidden for g in gates)
    merged = CorrectionGate(GateConfig(**{**vars(first.config), "hidden": width}))
    k = len(gates)
    with torch.no_grad():
        merged.feature_mean.copy_(first.feature_mean)
        merged.feature_std.copy_(first.feature_std)
        merged.net[0].weight.copy_(torch.cat([g.net[0].weight for g in gates], 0))
        merged.net[0].bias.copy_(torch.cat([g.net[0].bias for g in gates], 0))
        merged.net[-1].weight.copy_(torch.cat([g.net[-1].weight for g in gates], 1) / k)
        merged.net[-1].bias.copy_(torch.stack([g.net[-1].bias for g in gates]).mean(0))
    return merged.eval()


def fit_ensemble(samples: GateSamples, config: GateConfig, seeds: Sequence[int], **fit_kwargs) -> CorrectionGate:
    """:func:`fit` once per seed, merged into one gate (:func:`merge_gates`): the seeds' mean logit. One fit's
    strengths depend on its seed (cross-validated, by up to 0.25 dB on the rule frames); their mean does less."""
    return merge_gates([fit(samples, config, seed=s, **fit_kwargs) for s in seeds])


def _psnr(abc: Tensor, w: Tensor) -> Tensor:
    """(S, 3) error terms and (S,) strengths -> (S,) PSNR of the blend, capped at 50 dB."""
    a, b, c = abc.T
    return -10 * torch.log10((a * w * w - 2 * b * w + c).clamp(min=0) + EPS)


def summary(samples: GateSamples, gate: CorrectionGate) -> str:
    """Per kind of sample: count, mean best and fitted strength kept, PSNR of the network's full correction /
    through the output curve (the same without one) / gated / best strength (capped at 50 dB)."""
    abc, rise = curved_terms(samples, gate)
    with torch.no_grad():
        w = kept_strength(gate.strength(samples.features), rise, gate.config.brightening_only)
    best = (abc[:, 1] / abc[:, 0].clamp(min=1e-12)).clamp(0.0, 1.0)
    one = torch.ones_like(w)
    lines = ["| samples | n | best strength | gate's | PSNR full / curved / gated / best |", "|---|---:|---:|---:|---|"]
    for k, name in enumerate(KINDS):
        m = samples.kind == k
        if m.any():
            lines.append(f"| {LABELS[name]} | {int(m.sum())} | {best[m].mean():.2f} | {w[m].mean():.2f} | "
                         f"{_psnr(samples.abc, one)[m].mean():.2f} / {_psnr(abc, one)[m].mean():.2f} / "
                         f"{_psnr(abc, w)[m].mean():.2f} / {_psnr(abc, best)[m].mean():.2f} |")
    return "\n".join(lines)


def ensemble_seeds(seed: int, ensemble: int) -> list[int]:
    """The fit seeds of ensemble ``seed``: ``seed E`` to ``seed E + E - 1`` (``[seed]`` for E = 1), so that the
    ensembles of seeds 0, 1, 2 share no fit."""
    return [seed] if ensemble == 1 else list(range(seed * ensemble, (seed + 1) * ensemble))


def _seed_label(seed: int, ensemble: int) -> str:
    s = ensemble_seeds(seed, ensemble)
    return f"{s[0]}" if len(s) == 1 else f"{s[0]}-{s[-1]}"


def cross_validate(samples: GateSamples, config: GateConfig, *, folds: int = 5,
                   under_weights: Sequence[float] = (4.0,), seeds: Sequence[int] = (0,), ensemble: int = 1,
                   **fit_kwargs) -> str:
    """How a gate does on scenes and photos it was not fitted on: the groups (stack scenes and photos, each with
    its frames, fusion and renders) split into ``folds`` (every ``folds``-th group), a gate fitted on all but one
    fold and scored on that fold, for each under-weight. A markdown table, PSNR full / gated per kind of sample
    (with an output curve: full / curved / gated), the stack frames being the GT rule's under / over ones only (as
    the held-out subsets). With several ``seeds`` each under-weight gets a row per fit seed and their mean: one
    seed's fit can land 0.25 dB apart from another's on the rule frames. With ``ensemble`` E > 1 every fold's
    gate is an ensemble of E fits (:func:`fit_ensemble`), seed ``s`` standing for seeds ``s E`` to ``s E + E - 1``."""
    if ensemble < 1:
        raise ValueError(f"ensemble must be 1 or more fits, not {ensemble}")
    groups = samples.group.unique()
    if folds < 2 or len(groups) < folds:
        raise ValueError(f"cross-validation over {folds} folds needs at least 2 folds and as many groups; the "
                         f"samples have {len(groups)}")
    fold_of = torch.full((int(groups.max()) + 1,), -1, dtype=torch.long)
    fold_of[groups] = torch.arange(len(groups)) % folds
    fold = fold_of[samples.group]
    scored = {"rule frames": (samples.kind == KINDS.index("stack")) & samples.rule}
    scored |= {LABELS[k]: samples.kind == KINDS.index(k) for k in KINDS[1:]}
    scored = {name: m for name, m in scored.items() if m.any()}
    curve = config.curve_steps > 0
    columns = "full / curved / gated" if curve else "full / gated"
    lines = [f"Correction gate, {folds}-fold cross-validation by scene and photo: PSNR {columns} (change)", "",
             "| under-weight | " + " | ".join(scored) + " |", "|---:|" + "---|" * len(scored)]
    one = torch.ones(len(samples))
    full = _psnr(samples.abc, one)
    for uw in under_weights:
        runs = []
        for seed in seeds:
            w, abc = torch.ones(len(samples)), samples.abc.clone()
            for f in range(folds):
                held = fold == f
                gate = fit_ensemble(samples.subset(~held), config, ensemble_seeds(seed, ensemble),
                                    under_weight=uw, **fit_kwargs)
                abc[held], rise = curved_terms(samples.subset(held), gate)
                with torch.no_grad():
                    w[held] = kept_strength(gate.strength(samples.features[held]), rise, config.brightening_only)
            runs.append(torch.stack([_psnr(abc, one), _psnr(abc, w)]))
            logger.info("under-weight %g, seed %d done", uw, seed)
        name = f"ensemble of {ensemble}" if ensemble > 1 else "seed"
        rows = [(f"{uw:g}" + (f", {name} {_seed_label(s, ensemble)}" if len(seeds) > 1 or ensemble > 1 else ""), r)
                for s, r in zip(seeds, runs, strict=True)]
        if len(seeds) > 1:
            rows.append((f"{uw:g}, mean of {len(seeds)} " + ("ensembles" if ensemble > 1 else "seeds"),
                         torch.stack(runs).mean(0)))
        for label, (curved, gated) in rows:
            cells = [f"{full[m].mean():.2f} / {f'{curved[m].mean():.2f} / ' if curve else ''}"
                     f"{gated[m].mean():.2f} ({(gated - full)[m].mean():+.2f})" for m in scored.values()]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def stored_dtype(path: str | Path) -> torch.dtype:
    """The dtype a checkpoint stores its floating-point tensors in (fp16 for the bundled weights)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        for key in f.keys():
            t = f.get_slice(key)
            dtype = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}.get(t.get_dtype())
            if dtype is not None:
                return dtype
    return torch.float32


def export(model: nn.Module, gate: CorrectionGate, path: str | Path, *, dtype: torch.dtype | None = None) -> Path:
    """``model`` with ``gate`` as its correction gate, written as a RestoreX checkpoint (in ``dtype``; default
    ``model``'s)."""
    from restorex_core import RestoreX, save_checkpoint

    full = RestoreX(model.config.replace(gate=vars(gate.config)),
                    clip=None if model.config.clip.trainable else model.clip)
    missing, unexpected = full.load_state_dict(model.state_dict(), strict=False)
    if unexpected or not all(k.startswith(("gate.", "clip.")) for k in missing):
        raise ValueError(f"the weights do not fit their own config plus a gate: missing {missing}, "
                         f"unexpected {unexpected}")
    full.gate.load_state_dict(gate.state_dict())
    return save_checkpoint(full.eval(), path, metadata={"trainer": "training.gate"},
                           dtype=dtype or next(model.parameters()).dtype)


def heldout_best_frames(model: nn.Module, data_root: Path, *, config: Path = DEFAULT_CONFIG, max_side: int = 512,
                        seed: int = 0) -> str:
    """What gated weights do to real well-exposed photos they never saw: each held-out stack scene's GT-rule frame
    (the frame the held-out rule-frame subsets score against) as the input, at ``max_side``. A markdown table:
    the gate's strength, and the PSNR of the full and of the gated correction against the frame itself."""
    if model.gate is None:
        raise ValueError("these weights have no correction gate: give the gated weights (--out of a fit)")
    data = read_toml(config)["data"]
    stacks = StackDataset(data_root / "stacks", scenes=data["val_scenes"], pairs="rule", target="rule")
    lines = ["| held-out scene | best frame | its mean (/255) | strength | PSNR full / gated (vs itself) |",
             "|---|---|---:|---:|---|"]
    full_db, gated_db, kept = [], [], {"exact": 0, "partly": 0, "full": 0}
    for sid in sorted(stacks.scenes):
        frame = stacks.scenes[sid][stacks.roles[sid].gt]
        x = resize_max(load_image(frame.path), max_side)[None].to(model.device, model.dtype)
        with torch.inference_mode():
            w = float(model.correction_strength(x)[0])
            full = model.correct(x, seed=seed, auto_strength=False).float().clamp(0, 1)
            gated = model.correct(x, seed=seed).float().clamp(0, 1)  # what a user gets
        f, g = (min(float(psnr(o, x.float())), PSNR_CAP) for o in (full, gated))  # capped as the suite's means
        full_db.append(f)
        gated_db.append(g)
        kept["exact" if w == 0 else "full" if w == 1 else "partly"] += 1
        lines.append(f"| {sid} | {frame.path.name} | {frame.mean:.1f} | {w:.2f} | {f:.2f} / {g:.2f} |")
    n = len(full_db)
    lines += ["", f"{n} frames: {kept['exact']} left exactly, {kept['partly']} partly corrected, {kept['full']} "
                  "corrected in full; mean PSNR against themselves (each capped at 50 dB) "
                  f"full {sum(full_db) / n:.2f}, gated {sum(gated_db) / n:.2f}"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m training.gate", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="the folder holding stacks/ and photos/ (not needed with an existing --samples)")
    p.add_argument("--weights", required=True, help="the trained weights to gate (frozen)")
    p.add_argument("--out", help="the gated weights to write (a RestoreX checkpoint; not with --cv)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="the config naming the held-out data")
    p.add_argument("--fused-cache", help="the fused targets' cache (default: $RESTOREX_FUSED_CACHE, else beside)")
    p.add_argument("--samples", metavar="FILE", help="read the samples from FILE if it exists, else write them there")
    p.add_argument("--renders", type=int, default=3, help="renders per training photo (default 3)")
    p.add_argument("--limit", type=int, help="at most N stack pairs and N photos (smoke runs)")
    p.add_argument("--hidden", type=int, default=128, help="the gate MLP's width (default 128)")
    p.add_argument("--steps", type=int, default=3000, help="AdamW steps (default 3000)")
    p.add_argument("--under-weight", type=float, default=4.0,
                   help="the loss's weight where the gate under-corrects (default 4)")
    p.add_argument("--cv", type=int, metavar="K",
                   help="instead of writing weights: a K-fold cross-validation by scene and photo (cross_validate) "
                        "for each of --cv-weights")
    p.add_argument("--cv-weights", default="2,4,8,16", metavar="W,W,...",
                   help="the under-weights --cv compares (default 2,4,8,16)")
    p.add_argument("--curve-steps", type=int, default=0,
                   help="give the gate an output curve of this many quadratic steps per channel, fitted first "
                        "(gate.curve_steps; default 0: none)")
    p.add_argument("--pixels", type=int, metavar="P",
                   help=f"keep P pixels of each sample, for output-curve fits (default {PIXELS} with --curve-steps, "
                        "else 0; 8192 make a 2106-sample file about 310 MB)")
    p.add_argument("--brightening-only", action="store_true",
                   help="let the gate hold back only corrections that brighten (gate.brightening_only)")
    p.add_argument("--no-best-frames", action="store_true",
                   help="read no best-exposed stack frames as good photos (v4's samples; v4.1 reads them)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cv-seeds", metavar="S,S,...",
                   help="--cv fits each fold once per seed and adds their mean (default: --seed alone)")
    p.add_argument("--ensemble", type=int, default=1, metavar="E",
                   help="fit E gates (seeds E x --seed to E x --seed + E - 1) and ship their mean logit as one "
                        "gate E times as wide (merge_gates); with --cv, every fold's gate is such an ensemble "
                        "(default 1: one fit)")
    p.add_argument("--check-heldout", action="store_true",
                   help="instead of fitting: run the gated --weights on the held-out scenes' best-exposed frames and "
                        "print what they do to them (needs --data)")
    args = p.parse_args(argv)
    if args.ensemble < 1:
        p.error(f"--ensemble must be 1 or more, not {args.ensemble}")
    if args.ensemble > 1 and args.curve_steps:
        p.error("--ensemble merges gates without an output curve: leave out --curve-steps")
    if args.check_heldout:
        if not args.data:
            p.error("--check-heldout needs --data: the folder holding stacks/")
        from restorex_core import load_checkpoint

        model = load_checkpoint(args.weights).eval()
        if model.gate is None:
            p.error(f"{args.weights} has no correction gate: give gated weights (the --out of a fit)")
        print(heldout_best_frames(model, Path(args.data), config=Path(args.config), seed=args.seed))
        return
    if not args.cv and not args.out:
        p.error("--out FILE is needed: where to write the gated weights")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import os

    from restorex_core import load_checkpoint

    model = load_checkpoint(args.weights).eval()
    if model.gate is not None:
        p.error(f"{args.weights} already has a correction gate: give the weights without one")
    if args.samples and Path(args.samples).exists():
        samples = GateSamples.load(args.samples)
        logger.info("%d samples read from %s", len(samples), args.samples)
        if args.curve_steps and samples.pixels is None:
            p.error(f"{args.samples} keeps no pixels, which an output curve's fit needs: give a new --samples FILE "
                    "with --data to read the samples again with their pixels")
    else:
        if not args.data:
            p.error("--data is needed to read the samples (or an existing --samples FILE)")
        cache = args.fused_cache or os.environ.get("RESTOREX_FUSED_CACHE") or None
        pixels = args.pixels if args.pixels is not None else PIXELS if args.curve_steps else 0
        samples = gate_samples(model, Path(args.data), config=Path(args.config), fused_cache=cache,
                               renders=args.renders, seed=args.seed, limit=args.limit, pixels=pixels,
                               best_frames=not args.no_best_frames)
        if args.samples:
            samples.save(args.samples)
    config = gate_config(model, args.hidden, brightening_only=args.brightening_only, curve_steps=args.curve_steps)
    if args.cv:
        weights = [float(v) for v in args.cv_weights.split(",")]
        seeds = [int(v) for v in args.cv_seeds.split(",")] if args.cv_seeds else [args.seed]
        print(cross_validate(samples, config, folds=args.cv, under_weights=weights, seeds=seeds,
                             ensemble=args.ensemble, steps=args.steps))
        return
    gate = fit_ensemble(samples, config, ensemble_seeds(args.seed, args.ensemble), steps=args.steps,
                        under_weight=args.under_weight)
    print(summary(samples, gate))
    print(f"wrote {export(model, gate, args.out, dtype=stored_dtype(args.weights))}")  # as --weights stores it


if __name__ == "__main__":
    main()
