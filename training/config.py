"""Training configuration: TOML files (with ``inherit``), ``--section.key=value`` overrides, no exec."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli package
    import tomli as tomllib

from restorex_core import RestoreXConfig

from .data import DATASETS
from .losses import LossWeights

EXPORT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
KINDS = (*DATASETS, "procedural")  # procedural: generated stand-in photos + synthetic exposure (demo, tests)


@dataclass(frozen=True)
class TrainSection:
    stage: int = 1
    out_dir: str = "runs/restorex"
    init_from: str = ""  # stage 2: the stage-1 export (.safetensors)
    init_all: bool = False  # stage 2: init_from is a finished model; load every weight (fine-tuning it)
    zero_residual: bool = False  # stage 2: zero the Restormer's output conv after loading (starts as the tone path)
    clip_weights: str = "${RESTOREX_CLIP}"  # frozen CLIP file when clip.trainable = false; "random": untrained
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N (torchrun picks cuda:$LOCAL_RANK)
    bf16: bool = True  # bf16 autocast on CUDA; CPU runs stay fp32
    threads: int = 0  # CPU threads for torch (0: torch's default)
    compile: bool = False  # torch.compile the training step (checkpoints are still the plain module's)
    resume: bool = True  # continue from out_dir/last.pt when it exists
    max_steps: int = 100_000  # optimiser steps of the whole run (the lr schedule spans them)
    stop_after: int = 0  # leave, checkpointed, after this many steps in this process (0: run to the end)
    max_minutes: float = 0.0  # wall-clock budget: steps 10-30 are timed, then max_steps is cut so the run
    #   ends (lr annealed, validated, exported) within it; a slower run is stopped and exported at the budget
    lr: float = 2e-4
    min_lr: float = 1e-6  # cosine floor
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    schedule: str = "cosine"  # cosine | constant
    warmup_steps: int = 0  # linear lr warm-up
    diffusion_warmup_iters: int = 0  # stage 2: first train only FFEDM + PEM-S2 on L_p (DiffIR deblur: 100k)
    cache_items: int = 0  # training.prior_fit: renders of the data stream whose encoder features are cached
    freeze: tuple[str, ...] = ()  # stage submodules held fixed (e.g. ["pem_input", "ffedm"]: only the Restormer learns)
    grad_clip: float = 0.01  # max global grad norm (Restormer: 0.01); 0 disables
    ema_decay: float = 0.999
    log_every: int = 50
    val_every: int = 2000  # 0 disables (the end of the run is always validated)
    val_limit: int = 0  # validate on the first N pairs only (0: all)
    val_max_side: int = 0  # downscale validation pairs to this long side (0: full resolution)
    ckpt_every: int = 500
    export_name: str = "restorex.safetensors"
    export_dtype: str = "float32"  # float32 | float16 | bfloat16 (smaller files)


@dataclass(frozen=True)
class DataSection:
    kind: str = "lcdp"  # one of KINDS
    root: str = "${RESTOREX_DATA}"
    train_split: str = "train"
    val_split: str = "valid"
    scenes: tuple[str, ...] = ()  # stacks: training scenes or sources (default all); sice: ids or a list file
    val_scenes: tuple[str, ...] = ()  # stacks: held out of training and validated on; sice: validation scenes
    pairs: str = "all"  # stacks training pairs: all (every non-GT frame) | rule (the README's under/over)
    val_pairs: str = "rule"
    stack_target: str = "rule"  # stacks: rule (the GT rule's frame) | fused (the scene's exposure fusion)
    fusion_alpha: float = 1.0  # stack_target = fused: blend fusion * alpha + rule frame * (1 - alpha)
    fused_cache: str = ""  # where fused targets are cached; "" = stacks_fused/ beside data.root
    stack_identity: bool = False  # stack_target = fused: the fused image is also an input, its own target
    identity_ratio: float = 0.0  # share of synthetic items whose input is the clean photo itself (target = input)
    synthetic_ratio: float = 0.0  # share of training items rendered by the synthetic exposure model
    synthetic_root: str = ""  # well-exposed photos for it; "" = the GT frames of the training scenes (stacks)
    synthetic_exclude: tuple[str, ...] = ()  # sub-folders of synthetic_root held out (e.g. the validation photo sets)
    synthetic_mix: bool = False  # stacks: photos of synthetic_root *and* the training scenes' GT frames
    ev_range: tuple[float, float] = (-3.0, 2.5)
    min_abs_ev: float = 0.5
    noise: bool = True  # Poisson-Gaussian sensor noise in synthetic renders
    noise_max_ev: float = 99.0  # with noise: renders brighter than this EV come noise-free (99: noise at every EV)
    crop: int = 224
    batch_size: int = 4  # per process
    resize_short: tuple[int, int] = (0, 0)  # random rescale of the short side into [lo, hi] before cropping
    upright: bool = False  # augment with horizontal flips only (no vertical flips, no rot90): skies stay up
    sky_repeat: int = 1  # synthetic photos showing a blue sky (training.stream.shows_blue_sky) drawn this many times
    num_workers: int = 2


@dataclass(frozen=True)
class TrainConfig:
    train: TrainSection = field(default_factory=TrainSection)
    data: DataSection = field(default_factory=DataSection)
    loss: LossWeights = field(default_factory=LossWeights)
    model: dict[str, Any] = field(default_factory=lambda: {"preset": "paper"})  # RestoreXConfig dict + preset

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        known = {"train": TrainSection, "data": DataSection, "loss": LossWeights}
        if set(raw) - {*known, "model"}:
            raise ValueError(f"unknown config sections {sorted(set(raw) - {*known, 'model'})}; use "
                             "[train], [data], [loss], [model]")
        cfg = cls(**{k: _section(c, raw.get(k, {}), k) for k, c in known.items()}, model=raw.get("model", {}))
        t, d = cfg.train, cfg.data
        checks = [(t.stage in (1, 2), f"train.stage must be 1 or 2, not {t.stage}"),
                  (d.kind in KINDS, f"data.kind {d.kind!r} is not one of {', '.join(KINDS)}"),
                  (d.crop % 8 == 0, f"data.crop {d.crop} must be a multiple of 8 (three 2x downsamplings)"),
                  (0.0 <= d.synthetic_ratio <= 1.0, "data.synthetic_ratio must be in [0, 1]"),
                  (d.sky_repeat >= 1, "data.sky_repeat must be 1 (off) or more"),
                  (d.stack_target in ("rule", "fused"), "data.stack_target must be rule or fused"),
                  (0.0 <= d.fusion_alpha <= 1.0, "data.fusion_alpha must be in [0, 1]"),
                  (0.0 <= d.identity_ratio < 1.0, "data.identity_ratio must be in [0, 1)"),
                  (t.schedule in ("cosine", "constant"), "train.schedule must be cosine or constant"),
                  (t.max_minutes >= 0, "train.max_minutes must be >= 0 (0: no wall-clock budget)"),
                  (set(t.freeze) <= {"pem_reference", "pem_input", "ffedm", "restormer", "clip", "tone"},
                   f"train.freeze names unknown submodules {sorted(set(t.freeze))}: use pem_reference, pem_input, "
                   "ffedm, restormer, clip or tone"),
                  (t.export_dtype in EXPORT_DTYPES, f"train.export_dtype must be one of {list(EXPORT_DTYPES)}"),
                  (cfg.loss.sap_tokens in ("prior", "all"), "loss.sap_tokens must be prior or all")]
        errors = [msg for ok, msg in checks if not ok]
        if errors:
            raise ValueError("bad training config: " + "; ".join(errors))
        model_config(cfg.model)  # a bad [model] fails here, before any data is read
        return cfg


def _section(cls: type, values: dict[str, Any], name: str) -> Any:
    defaults = cls()
    return dataclasses.replace(defaults, **_typed(cls, values, name, defaults))


def _typed(cls: type, values: dict[str, Any], name: str, defaults: Any) -> dict[str, Any]:
    """``values`` checked against the field types of dataclass ``cls`` (the types of ``defaults``' values)."""
    names = [f.name for f in dataclasses.fields(cls)]
    if set(values) - set(names):
        raise ValueError(f"unknown keys {sorted(set(values) - set(names))} in [{name}]; valid keys: {names}")
    return {key: _coerce(getattr(defaults, key), value, f"{name}.{key}") for key, value in values.items()}


def _coerce(default: Any, value: Any, where: str) -> Any:
    """``value`` as the type of ``default``; an int field refuses floats (``1e3`` parses as 1000.0)."""
    if isinstance(default, tuple):
        items = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        if default and all(type(d) is int for d in default):
            return tuple(_coerce(default[0], v, f"{where}[{i}]") for i, v in enumerate(items))
        return items
    if isinstance(default, bool) or isinstance(value, bool):
        if isinstance(default, bool) != isinstance(value, bool):
            raise ValueError(f"{where} = {value!r} should be a {type(default).__name__}")
        return value
    if isinstance(default, int):
        if isinstance(value, float) and value.is_integer():
            raise ValueError(f"{where} = {value!r} must be a whole number (an int): write {int(value)}, not "
                             f"{value!r} or 1e3-style notation, which TOML reads as a float")
        if not isinstance(value, int):
            raise ValueError(f"{where} = {value!r} should be an int")
        return value
    if isinstance(default, float):
        if not isinstance(value, (int, float)):
            raise ValueError(f"{where} = {value!r} should be a float")
        return float(value)
    return str(value) if isinstance(default, str) else value


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """A config file with its ``inherit`` chain resolved (relative to the file), child keys winning."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found (the recipes are in training/configs/)")
    raw = tomllib.loads(path.read_text())
    parent = raw.pop("inherit", None)
    return _merge(read_toml(path.parent / parent), raw) if parent else raw


def load_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """TOML file + ``--section.key=value`` overrides (values parsed as TOML, else taken as strings)."""
    raw = read_toml(path)
    for arg in overrides:
        if not arg.startswith("--") or "=" not in arg:
            raise ValueError(f"override {arg!r} must look like --section.key=value, e.g. --train.lr=1e-4")
        key, text = arg[2:].split("=", 1)
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        *parents, last = key.split(".")
        node = raw
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return TrainConfig.from_dict(raw)


def model_config(section: dict[str, Any]) -> RestoreXConfig:
    """``[model]``: ``preset = "paper" | "tiny"`` (default paper) plus RestoreXConfig sections overriding it."""
    section = dict(section)
    preset = section.pop("preset", "paper")
    presets = {"paper": RestoreXConfig.paper, "tiny": RestoreXConfig.tiny}
    if preset not in presets:
        raise ValueError(f"model.preset {preset!r} is not one of {list(presets)}")
    base = presets[preset]()
    parts = {f.name: f for f in dataclasses.fields(RestoreXConfig)}
    typed = {}
    for name, values in section.items():
        if name not in parts or not isinstance(values, dict):
            raise ValueError(f"[model] takes preset and the sections {sorted(parts)} (e.g. [model.ffedm]); "
                             f"{name!r} is not one")
        part = getattr(base, name)
        typed[name] = _typed(type(part), values, f"model.{name}", part)
    try:
        return RestoreXConfig.from_dict(_merge(base.to_dict(), typed))
    except (TypeError, ValueError) as e:
        raise ValueError(f"bad [model]: {e}") from e


def expand(path: str) -> str:
    out = os.path.expandvars(path)
    if "$" in out:
        raise ValueError(f"{path!r} names an environment variable that is not set: set it or override the key "
                         "(e.g. RESTOREX_DATA=/data or --data.root=/data/LCDP)")
    return out
