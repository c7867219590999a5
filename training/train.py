"""Train CLIP-RestoreX in the paper's two stages (docs/method.md §7), nanoGPT-style.

Stage 1 feeds priors of the GT (CLIP + PEM-S1) to the Restormer; stage 2 starts from a stage-1 export,
copies PEM-S1 into PEM-S2, freezes CLIP and PEM-S1 as the teacher and trains FFEDM, PEM-S2 and the
Restormer through the unrolled diffusion chain.  Every hyperparameter is in a TOML file under
training/configs/ (a file may ``inherit = "other.toml"``); ``--section.key=value`` overrides any of them
(values are TOML literals: ``--train.lr=1e-4 --model.clip.taps=[1,2,3,4] --data.root=/data/LCDP``).
``${VAR}`` in paths expands from the environment (``RESTOREX_DATA``: the data folder; ``RESTOREX_CLIP``:
the frozen CLIP ViT-B/32 file of the paper configs).

A one-minute smoke run on generated images (CPU, no data needed):
    python -m training.train --config training/configs/demo.toml
Single process (CPU or one GPU), the paper's recipe on LCDP:
    python -m training.train --config training/configs/lcdp_stage1.toml --data.root=/data/LCDP --train.clip_weights=CLIP
    python -m training.train --config training/configs/lcdp_stage2.toml --data.root=/data/LCDP --train.clip_weights=CLIP
One node, 8 GPUs (DistributedDataParallel; data.batch_size is per GPU):
    torchrun --standalone --nproc_per_node=8 -m training.train --config training/configs/msec_stage1.toml
Two nodes, 8 GPUs each (node_rank=1 on the second):
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --master_addr=HOST --master_port=29500 \
        -m training.train --config training/configs/msec_stage1.toml
The bundled default weights (CPU, about an hour in all):
    RESTOREX_DATA=/work/shared/data python -m training.train --config training/configs/default_stage1.toml
    RESTOREX_DATA=/work/shared/data python -m training.train --config training/configs/default_stage2.toml

A run writes ``out_dir/last.pt`` (training state, atomically, every ``ckpt_every`` steps; rerunning the
same command resumes from it and reaches the same weights as an uninterrupted run), ``log.csv``,
``best.safetensors`` (EMA weights at the best validation PSNR) and the final EMA export
``out_dir/<export_name>``, loadable with ``restorex_core.load_checkpoint``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch.distributed import destroy_process_group, init_process_group
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from restorex_core import MissingWeightsError, RestoreX, RestoreXConfig, load_clip, read_header, save_checkpoint
from restorex_core.files import atomic_path, atomic_write_text
from restorex_core.loading import ACCEPTED_CLIP

from .config import EXPORT_DTYPES, KINDS, TrainConfig, TrainSection, expand, load_config, model_config  # noqa: F401
from .ema import EMA
from .evaluate import evaluate
from .losses import Objective
from .metrics import image_metrics
from .stream import Resized, TrainStream, build_data, exposed, procedural_photo, step_batches  # noqa: F401

logger = logging.getLogger("training.train")


# ------------------------------------------------------------------------------------------- model
TRAINED = {1: ("pem_reference", "restormer"), 2: ("pem_input", "ffedm", "restormer")}


def build_model(cfg: TrainConfig, *, fresh: bool = True) -> tuple[RestoreX, tuple[str, ...]]:
    """The model of ``cfg`` set up for its stage, and the names of the submodules it trains.

    Stage 2 starting fresh loads ``train.init_from`` (everything but FFEDM and PEM-S2) and copies PEM-S1
    into PEM-S2, or, with ``train.init_all``, every weight of a finished model (fine-tuning it); CLIP and
    PEM-S1 are frozen (the teacher).  Stage 1 trains the encoder too when
    ``clip.trainable``.  ``restormer.prior_dim = 0`` (no priors) trains the Restormer alone.  ``train.freeze``
    holds named submodules of the stage fixed (and in eval mode).
    """
    mcfg = model_config(cfg.model)
    clip = None
    if not mcfg.clip.trainable and cfg.train.clip_weights != "random":  # "random": untrained, smoke tests only
        source = os.path.expandvars(cfg.train.clip_weights)
        if not source or "$" in source:
            raise MissingWeightsError("this config uses the frozen CLIP ViT-B/32 of the paper: set RESTOREX_CLIP or "
                                      f"pass --train.clip_weights=FILE; accepted files: {ACCEPTED_CLIP}")
        clip = load_clip(source, config=mcfg.clip)
    model = RestoreX(mcfg, clip=clip)
    stage = cfg.train.stage
    if stage == 2 and fresh:
        if not cfg.train.init_from:
            raise ValueError("stage 2 starts from a stage-1 export: set train.init_from (e.g. "
                             "runs/lcdp_stage1/restorex.safetensors)")
        path = expand(cfg.train.init_from)
        theirs, mine = RestoreXConfig.from_dict(json.loads(read_header(path)["config"])).to_dict(), mcfg.to_dict()
        diff = [f"{s}.{k}" for s in ("clip", "pem", "restormer", "tone") for k in mine[s]
                if theirs[s][k] != mine[s][k] and k not in ("checkpointing", "trainable")]
        if diff:
            raise ValueError(f"{path} was trained with a different model ({', '.join(diff)} differ): give stage 2 "
                             "the [model] section of its stage-1 config")
        sd = load_file(path)
        if not cfg.train.init_all:
            sd = {k: v for k, v in sd.items() if not k.startswith(("ffedm.", "pem_input."))}
        missing, unexpected = model.load_state_dict(sd, strict=False)
        fresh_parts = ("clip.",) if cfg.train.init_all else ("ffedm.", "pem_input.", "clip.")
        bad = [k for k in missing if not k.startswith(fresh_parts)] + unexpected
        if bad or (mcfg.clip.trainable and any(k.startswith("clip.") for k in missing)):
            wanted = "finished-model" if cfg.train.init_all else "stage-1"
            raise ValueError(f"{path} does not hold the {wanted} weights this model needs ({bad[:4] or 'clip'})")
        if not cfg.train.init_all:
            model.pem_input.load_state_dict(model.pem_reference.state_dict())
        if cfg.train.zero_residual:  # the residual starts at zero and grows only where the loss asks for local work
            if not mcfg.tone.enabled:
                raise ValueError("train.zero_residual starts the model as its tone path alone: the model has none")
            torch.nn.init.zeros_(model.restormer.output.weight)
            if model.restormer.output.bias is not None:
                torch.nn.init.zeros_(model.restormer.output.bias)
    if mcfg.tone.enabled and (stage == 1 or mcfg.restormer.prior_dim == 0):
        raise ValueError("the tone path reads the input priors, which stage 1 and a prior-free Restormer do not "
                         "have: fit it with python -m training.curve_probe --export, then train stage 2 behind it")
    if cfg.loss.residual_mean > 0 and not mcfg.tone.enabled:
        raise ValueError("loss.residual_mean keeps the global tone to the tone path: the model has none (give the "
                         "config a [model.tone] section and init_from a curve_probe --export file, or set it to 0)")
    if mcfg.restormer.prior_dim == 0:
        trained: tuple[str, ...] = ("restormer",)
    else:
        trained = TRAINED[stage] + (("clip",) if stage == 1 and mcfg.clip.trainable else ())
        trained += ("tone",) if mcfg.tone.enabled else ()
    trained = tuple(name for name in trained if name not in cfg.train.freeze)
    if not trained:
        raise ValueError(f"train.freeze = {list(cfg.train.freeze)} leaves nothing to train in stage {stage}")
    model.requires_grad_(False)
    for name in trained:
        getattr(model, name).requires_grad_(True)
    return model, trained


def set_train_mode(model: RestoreX, trained: tuple[str, ...]) -> None:
    model.train()
    for name, module in model.named_children():
        if name not in trained:
            module.eval()  # the frozen teacher never leaves eval mode


def get_lr(step: int, t: TrainSection) -> float:
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    if t.schedule == "constant":
        return t.lr
    progress = min(1.0, (step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps))
    return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1.0 + math.cos(math.pi * progress))


def step_seed(seed: int, step: int, rank: int) -> int:
    """The global RNG is reseeded per step (FFEDM noise, eps timesteps): resuming needs no replay."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0] >> 1)


# ------------------------------------------------------------------------------------ train state
def _stored(model: RestoreX, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    keep_clip = model.config.clip.trainable  # a frozen CLIP comes back from its own file
    return {k: v for k, v in sd.items() if keep_clip or not k.startswith("clip.")}


def rng_state() -> dict[str, Any]:
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
            "numpy": torch.from_numpy(keys.astype(np.int64)), "numpy_pos": int(pos),
            "numpy_gauss": [int(has_gauss), float(cached)],
            "python": torch.tensor(py_state, dtype=torch.int64), "python_version": int(version),
            "python_gauss": gauss_next}


def set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    np.random.set_state(("MT19937", s["numpy"].numpy().astype(np.uint32), s["numpy_pos"],
                         s["numpy_gauss"][0], s["numpy_gauss"][1]))
    random.setstate((s["python_version"], tuple(s["python"].tolist()), s["python_gauss"]))


def save_state(path: Path, **state: Any) -> None:
    """torch.save to a temporary name in the same folder, then os.replace: a kill never leaves half a file."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path, model: RestoreX, ema: EMA, opt: torch.optim.Optimizer) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if RestoreXConfig.from_dict(json.loads(state["model_config"])) != model.config:  # from_dict: former names too
        raise ValueError(f"{path} was written by a run with a different [model]; use another train.out_dir "
                         "or delete it to start over")
    for target, sd in ((model, state["model"]), (ema.model, state["ema"])):
        missing, unexpected = target.load_state_dict(sd, strict=False)
        if unexpected or set(missing) & set(_stored(model, target.state_dict())):
            raise ValueError(f"{path} does not match this model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    opt.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    return state


# ------------------------------------------------------------------------------------------- loop
def validate(model: RestoreX, val: Dataset, stage: int, autocast: Any) -> tuple[float, float]:
    """Mean PSNR / SSIM of ``model``: stage 2 runs the whole method (``training.evaluate``, seed 0);
    stage 1 restores with the GT's own priors, an oracle number as in DiffIR's stage-1 test."""
    with autocast:
        if stage == 2:
            result = evaluate(model, val)
            return result.psnr, result.ssim
        scores = []
        with torch.inference_mode():
            for i in range(len(val)):
                x, y = val[i]["input"][None].to(model.device), val[i]["target"]
                out = model.restore(x, model.extract_priors(y[None].to(model.device), source="reference"))
                scores.append(image_metrics(out[0].float().cpu(), y))
    return float(np.mean([s[0] for s in scores])), float(np.mean([s[1] for s in scores]))


class RunLog:
    """``log.csv`` (rewound to the resumed step) and TensorBoard scalars when tensorboard is installed."""

    FIELDS = ("step", "lr", "loss", "l1", "ssim", "colour", "cast", "highlight", "lab", "highlight_cast", "tone",
              "residual_mean", "prior", "sap", "eps", "grad_norm", "sec_per_it", "val_psnr", "val_ssim")

    def __init__(self, out: Path, start: int) -> None:
        self.path = out / "log.csv"
        rows = []
        if start and self.path.is_file():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start]
        table = io.StringIO()
        w = csv.DictWriter(table, self.FIELDS)
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(self.path, table.getvalue())
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(out / "tb"))
        except ImportError:
            self.tb = None

    def write(self, row: dict[str, float]) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.FIELDS).writerow(row)
        for key, value in row.items():
            if self.tb is not None and key != "step":
                self.tb.add_scalar(key, value, row["step"])


def setup_distributed(t: TrainSection) -> tuple[bool, int, int, torch.device]:
    """(ddp, rank, world_size, device): torchrun sets RANK / LOCAL_RANK / WORLD_SIZE, one process per GPU."""
    if int(os.environ.get("RANK", -1)) == -1:
        return False, 0, 1, torch.device(("cuda" if torch.cuda.is_available() else "cpu") if t.device == "auto"
                                         else t.device)
    init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    device = torch.device(f"cuda:{os.environ['LOCAL_RANK']}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return True, int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), device


class Budget:
    """``train.max_minutes``: time steps 10-30 of this process, then cut the run's ``max_steps`` so that it
    ends, lr annealed, within the budget (5 % kept for the last validation and the export); if the run slows
    down later and reaches the budget anyway, it is stopped there (schedule truncated, with a warning) and still
    exported.  Under DDP every rank takes rank 0's decision."""

    WINDOW = (10, 30)

    def __init__(self, minutes: float, ddp: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.ddp, self.clock = minutes * 60.0, ddp, clock
        self.t0 = clock()
        self.first = self.t_first = None
        self.calibrated = False

    def _agree(self, value: int) -> int:
        if not self.ddp:
            return value
        x = torch.tensor([value], dtype=torch.int64, device="cuda" if torch.cuda.is_available() else "cpu")
        torch.distributed.broadcast(x, src=0)
        return int(x.item())

    def check(self, step: int, max_steps: int) -> int | None:
        """The new ``max_steps`` when it changes at this step, else None."""
        now = self.clock()
        if not self.calibrated:
            if self.first is None:
                if step >= self.WINDOW[0]:
                    self.first, self.t_first = step, now
                return None
            if step - self.first < self.WINDOW[1] - self.WINDOW[0]:
                return None
            self.calibrated = True
            per_step = (now - self.t_first) / (step - self.first)
            left = 0.95 * self.seconds - (now - self.t0)
            cut = self._agree(min(max_steps, step + max(1, int(left / per_step))))
            logger.info("train.max_minutes %.1f: %.3f s/step, %.0f s left -> max_steps %d (configured %d)",
                        self.seconds / 60, per_step, left, cut, max_steps)
            return cut if cut != max_steps else None
        if self._agree(int(now - self.t0 >= self.seconds and step < max_steps)):
            logger.warning("train.max_minutes %.1f reached at step %d of %d: stopping here; the lr schedule is "
                           "truncated, not annealed", self.seconds / 60, step, max_steps)
            return step
        return None


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run (or resume) the configured stage; returns the step reached, the logged rows and the export path."""
    t = cfg.train
    ddp, rank, world, device = setup_distributed(t)
    master = rank == 0
    if t.threads:
        torch.set_num_threads(t.threads)
    out = Path(expand(t.out_dir))
    out.mkdir(parents=True, exist_ok=True)
    last = out / "last.pt"
    resuming = t.resume and last.is_file()

    torch.manual_seed(t.seed)  # identical initialisation on every rank
    raw_model, trained = build_model(cfg, fresh=not resuming)
    raw_model.to(device)
    params = [p for p in raw_model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
    ema = EMA(raw_model, t.ema_decay)
    step, best = 0, -math.inf
    budget = Budget(t.max_minutes, ddp) if t.max_minutes else None
    if resuming:
        state = load_state(last, raw_model, ema, opt)
        step, best = int(state["step"]), float(state["best"])
        if budget is not None and "max_steps" in state:  # the schedule the budget chose before the interruption
            t = dataclasses.replace(t, max_steps=int(state["max_steps"]))
            budget.calibrated = True
        logger.info("resuming %s at step %d", last, step)
    objective = Objective(raw_model, stage=t.stage, weights=cfg.loss)
    step_fn = torch.compile(objective) if t.compile else objective
    if ddp:  # DDP wraps the whole loss computation; the plain module stays raw_model
        step_fn = DDP(step_fn, device_ids=[device.index] if device.type == "cuda" else None,
                      find_unused_parameters=t.diffusion_warmup_iters > 0)
    stream, val = build_data(cfg.data, t.seed)
    val = Resized(val, t.val_max_side, t.val_limit) if val is not None else None
    end = min(t.max_steps, step + t.stop_after) if t.stop_after else t.max_steps
    loader = DataLoader(stream, batch_sampler=step_batches(step, end, cfg.data.batch_size, rank, world),
                        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if t.bf16 and device.type == "cuda" else nullcontext()
    runlog = RunLog(out, step) if master else None
    meta = {"stage": t.stage, "dataset": cfg.data.kind, "trainer": "training.train",
            "val_protocol": "oracle GT priors" if t.stage == 1 else "model.correct(seed=0)",
            "train_config": json.dumps(cfg.to_dict())}
    history: list[dict[str, float]] = []
    val_scores: dict[str, float] = {}
    bar = master and sys.stderr.isatty()  # a redirected log gets one line per log_every instead of a progress bar
    pbar = tqdm(total=t.max_steps, initial=step, disable=not bar, desc=f"stage {t.stage}", dynamic_ncols=True)
    set_train_mode(raw_model, trained)
    t_log, n_log = time.time(), 0
    for batch in loader:
        lr = get_lr(step, t)
        for group in opt.param_groups:
            group["lr"] = lr
        torch.manual_seed(step_seed(t.seed, step, rank))
        lq, gt = batch["input"].to(device, non_blocking=True), batch["target"].to(device, non_blocking=True)
        with autocast:
            terms = step_fn(lq, gt, t.stage == 2 and step < t.diffusion_warmup_iters)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, t.grad_clip if t.grad_clip > 0 else math.inf)
        opt.step()
        ema.update(raw_model, step)
        step, n_log = step + 1, n_log + 1
        pbar.update(1)
        if budget is not None and (cut := budget.check(step, t.max_steps)) is not None:
            t, end = dataclasses.replace(t, max_steps=cut), min(end, cut)
            pbar.total = cut
        if master and (step % t.log_every == 0 or step == end):
            row = {"step": step, "lr": lr, **{k: float(v.detach()) for k, v in terms.items()},
                   "grad_norm": float(grad_norm), "sec_per_it": (time.time() - t_log) / n_log}
            history.append(row)
            runlog.write(row)
            pbar.set_postfix(loss=f"{row['loss']:.4f}", s_it=f"{row['sec_per_it']:.2f}")
            if not bar:
                logger.info("step %d / %d: loss %.4f, %.3f s/step", step, t.max_steps, row["loss"], row["sec_per_it"])
            t_log, n_log = time.time(), 0
        if master and val is not None and (step == t.max_steps or (t.val_every and step % t.val_every == 0)):
            psnr, ssim = validate(ema.model, val, t.stage, autocast)
            val_scores = {"val_psnr": psnr, "val_ssim": ssim}
            runlog.write({"step": step, **val_scores})
            tqdm.write(f"step {step}: validation PSNR {psnr:.2f} dB, SSIM {ssim:.4f} (EMA, {len(val)} pairs)")
            if psnr > best:
                best = psnr
                save_checkpoint(ema.model, out / "best.safetensors", metadata={**meta, "step": step, **val_scores},
                                dtype=EXPORT_DTYPES[t.export_dtype])
            t_log, n_log = time.time(), 0
        if master and (step % t.ckpt_every == 0 or step == end):
            save_state(last, step=step, best=best, model=_stored(raw_model, raw_model.state_dict()),
                       ema=_stored(raw_model, ema.state_dict()), optimizer=opt.state_dict(), rng=rng_state(),
                       model_config=json.dumps(raw_model.config.to_dict(), sort_keys=True),
                       config=json.dumps(cfg.to_dict()), max_steps=t.max_steps)
        if step >= end:  # a budget cut the run short of the loader's last batch
            break
    pbar.close()
    export = None
    if master and step == t.max_steps:
        export = save_checkpoint(ema.model, out / t.export_name, metadata={**meta, "step": step, **val_scores},
                                 dtype=EXPORT_DTYPES[t.export_dtype])
        logger.info("exported the EMA weights to %s", export)
    if ddp:
        destroy_process_group()
    return {"step": step, "history": history, "best_psnr": best, "val": val_scores, "export": export,
            "model": raw_model, "ema": ema.model}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.train", allow_abbrev=False,
                                     description="Train CLIP-RestoreX, one stage per run (see training/train.py).",
                                     epilog="Any config key can be overridden: --train.lr=1e-4 --data.root=DIR ...")
    parser.add_argument("--config", required=True, help="a TOML file, e.g. training/configs/lcdp_stage1.toml")
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("training.evaluate").setLevel(logging.WARNING)  # one line per validation is enough
    result = train(load_config(args.config, overrides))
    if result["export"] is not None:
        print(f"weights: {result['export']}")


if __name__ == "__main__":
    main(sys.argv[1:])
