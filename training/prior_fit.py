"""Fit the prior path (PEM-S2 + FFEDM) of a finished model on cached encoder features.

In stage 2 the encoder and PEM-S1 are frozen, so for a fixed set of training renders their outputs do not
change: the pooled tap tokens of each input and the teacher's priors of its target (``P_gt``) can be computed
once and the prior path trained on them for as many passes as it needs, each step costing two small MLPs
instead of two encoder passes and the data pipeline.  This is DiffIR's stage-2 diffusion warm-up (100k
iterations there) made affordable on a CPU: about 75 renders a second to cache on a 2-core CPU, then about
120 steps a second at batch 64.  The loss is stage 2's L_p through the same unrolled x0 chain (started from
q(x_T | P_gt)); the Restormer is neither run nor changed.

Why it exists: the v3 default's FFEDM had collapsed to a near-constant prior (weights/README.md, "Found after
v3"): a short warm-up followed by joint training never taught it to read the input.

Usage (the config's [train] and [data] sections: ``init_from`` a finished model, ``max_steps``, ``lr``,
``cache_items`` renders of the data stream, ``data.batch_size``; held-out validation as in ``training.train``)::

    RESTOREX_DATA=/work/shared/data RESTOREX_V3=v3.safetensors \\
        python -m training.prior_fit --config training/configs/experiments/default_stage5.toml

It writes ``out_dir/features.pt`` (the cache; a rerun with the same config reuses it), ``out_dir/log.csv`` and
the whole model with the new prior path, ``out_dir/<export_name>``.  The fit itself takes a few minutes and is
rerun from the cache after an interruption.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from restorex_core import RestoreX, save_checkpoint
from restorex_core.arch.pem import pool_tokens
from restorex_core.files import atomic_path, atomic_write_text
from restorex_core.priors import Priors

from .config import EXPORT_DTYPES, TrainConfig, expand, load_config
from .losses import prior_loss
from .stream import Resized, build_data, step_batches
from .train import build_model, get_lr

logger = logging.getLogger("training.prior_fit")


@torch.inference_mode()
def features(model: RestoreX, lq: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    """(pooled tap tokens of ``lq`` (B, N, F), teacher priors of ``gt`` (B, N, D)), both fp32 on the CPU."""
    rgb = lq.to(model.device, model.clip.visual.conv1.weight.dtype)
    z = torch.stack([pool_tokens(t, model.config.pem.token) for t in model.clip(rgb)], dim=1)
    teacher = model.extract_priors(gt.to(model.device), source="reference").stacked()
    return z.float().cpu(), teacher.float().cpu()


def build_cache(model: RestoreX, cfg: TrainConfig, path: Path) -> dict[str, Tensor]:
    """Features of ``train.cache_items`` stream renders and of the validation pairs, written atomically."""
    data_key = json.dumps(dataclasses.asdict(cfg.data))  # a cache is reused only for the same data settings
    if path.is_file():
        cache = torch.load(path, map_location="cpu", weights_only=True)
        if int(cache["items"]) == cfg.train.cache_items and cache["config"] == data_key:
            logger.info("reusing %s (%d renders)", path, cfg.train.cache_items)
            return cache
    stream, val = build_data(cfg.data, cfg.train.seed)
    batch = cfg.data.batch_size
    steps = math.ceil(cfg.train.cache_items / batch)
    loader = DataLoader(stream, batch_sampler=step_batches(0, steps, batch, 0, 1), num_workers=cfg.data.num_workers)
    zs, ts, t0 = [], [], time.time()
    for i, b in enumerate(loader):
        z, t = features(model, b["input"], b["target"])
        zs.append(z)
        ts.append(t)
        if (i + 1) % 50 == 0:
            logger.info("cached %d / %d renders (%.0f / s)", (i + 1) * batch, steps * batch,
                        (i + 1) * batch / (time.time() - t0))
    cache = {"z": torch.cat(zs)[: cfg.train.cache_items], "t": torch.cat(ts)[: cfg.train.cache_items],
             "items": torch.tensor(cfg.train.cache_items), "config": data_key}
    if val is not None:
        val = Resized(val, cfg.train.val_max_side, cfg.train.val_limit)
        pairs = [features(model, val[i]["input"][None], val[i]["target"][None]) for i in range(len(val))]
        cache["val_z"], cache["val_t"] = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
    with atomic_path(path) as tmp:
        torch.save(cache, tmp)
    return cache


def as_priors(model: RestoreX, stacked: Tensor) -> Priors:
    """Cached teacher priors (B, N, D) as the Priors they came from."""
    return Priors(tuple(stacked.unbind(1)), model.config.clip.taps, "reference")


def enhanced(model: RestoreX, z: Tensor, teacher: Tensor | None, seed: int | None = None) -> Priors:
    """The prior path on cached features: PEM-S2 heads, then FFEDM's chain (from q(x_T | teacher) when given)."""
    raw = Priors(tuple(head(z[:, i]) for i, head in enumerate(model.pem_input.heads)), model.config.clip.taps,
                 "input")
    return model.enhance_priors(raw, target=None if teacher is None else as_priors(model, teacher), seed=seed)


def prior_scores(model: RestoreX, z: Tensor, teacher: Tensor, mean: Tensor) -> tuple[float, float]:
    """(L_p, R^2) of the enhanced priors (seed 0, from noise as at inference) against the teacher's;
    R^2 is against always answering ``mean`` (the training teachers' mean prior): 0 = no better than it."""
    with torch.no_grad():
        e = enhanced(model, z, None, seed=0).stacked()
    r2 = 1.0 - float(((teacher - e) ** 2).sum() / ((teacher - mean) ** 2).sum().clamp_min(1e-12))
    return float((teacher - e).abs().mean()), r2


def fit(cfg: TrainConfig) -> dict[str, Any]:
    """Cache, fit, export; returns the log rows and the export path."""
    t = cfg.train
    if t.stage != 2 or not t.init_from:
        raise ValueError("training.prior_fit fits the prior path of a finished model: set train.stage = 2 and "
                         "train.init_from (and train.init_all = true)")
    if t.cache_items <= 0:
        raise ValueError("set train.cache_items: how many renders of the data stream to cache (e.g. 12800)")
    torch.manual_seed(t.seed)
    if t.threads:
        torch.set_num_threads(t.threads)
    model, _ = build_model(cfg)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if t.device == "auto" else t.device)
    model.to(device).requires_grad_(False).eval()
    out = Path(expand(t.out_dir))
    out.mkdir(parents=True, exist_ok=True)
    cache = build_cache(model, cfg, out / "features.pt")
    z, teacher = cache["z"].to(device), cache["t"].to(device)
    mean = teacher.mean(0, keepdim=True)
    val_z, val_t = (cache["val_z"].to(device), cache["val_t"].to(device)) if "val_z" in cache else (None, None)
    params = [p for m in (model.pem_input, model.ffedm) for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=t.lr, betas=t.betas)
    gen = torch.Generator().manual_seed(t.seed)
    rows: list[dict[str, float]] = []
    fields = ("step", "lr", "prior", "val_prior", "val_r2")
    log = io.StringIO()
    writer = csv.DictWriter(log, fields)
    writer.writeheader()
    t0 = time.time()
    for step in range(t.max_steps):
        lr = get_lr(step, t)
        for group in opt.param_groups:
            group["lr"] = lr
        torch.manual_seed(t.seed * 1_000_003 + step)  # the chain's noise, per step
        idx = torch.randint(len(z), (cfg.data.batch_size,), generator=gen).to(device)
        loss = prior_loss(enhanced(model, z[idx], teacher[idx]), as_priors(model, teacher[idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % t.log_every == 0 or step + 1 == t.max_steps:
            row: dict[str, float] = {"step": step + 1, "lr": lr, "prior": loss.item()}
            if val_z is not None and (t.val_every and (step + 1) % t.val_every == 0 or step + 1 == t.max_steps):
                row["val_prior"], row["val_r2"] = prior_scores(model, val_z, val_t, mean)
                logger.info("step %d: L_p %.4f, validation L_p %.4f, R^2 %.3f (%.0f steps / s)", step + 1,
                            loss.item(), row["val_prior"], row["val_r2"], (step + 1) / (time.time() - t0))
            rows.append(row)
            writer.writerow(row)
    atomic_write_text(out / "log.csv", log.getvalue())
    model.requires_grad_(False)
    meta = {"stage": 2, "trainer": "training.prior_fit", "train_config": json.dumps(cfg.to_dict()),
            "step": t.max_steps, **({k: rows[-1][k] for k in ("val_prior", "val_r2") if k in rows[-1]})}
    export = save_checkpoint(model.cpu(), out / t.export_name, metadata=meta, dtype=EXPORT_DTYPES[t.export_dtype])
    logger.info("exported %s", export)
    return {"rows": rows, "export": export}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.prior_fit", allow_abbrev=False,
                                     description="Fit PEM-S2 + FFEDM of a finished model on cached encoder features.",
                                     epilog="Any config key can be overridden: --train.lr=1e-3 --train.max_steps=500")
    parser.add_argument("--config", required=True,
                        help="a TOML file, e.g. training/configs/experiments/default_stage5.toml")
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = fit(load_config(args.config, overrides))
    print(f"weights: {result['export']}")


if __name__ == "__main__":
    main(sys.argv[1:])
