"""Flicker of video exposure correction: input vs per-frame vs sequence correction (RestoreX.correct_sequence).

    RESTOREX_DATA=/path/to/data python benchmarks/bench_video.py --box --priors-only   # the RESULTS.md table
    python benchmarks/bench_video.py --data DIR --frames 96 --holds 97 193      # longer clips, longer holds
    python benchmarks/bench_video.py --data DIR --windows 5 9 15 --ema          # choose the filter
    python benchmarks/bench_video.py --data DIR --time-1080p 3                  # + seconds per 1080p frame

Clips are synthesised from held-out ground truth (photos/kodak24, photos/mcmaster, and the GT frames of held-out
stack scenes, training/configs/default_stage1.toml `val_scenes`): a crop panned ``--pan`` px per frame,
re-exposed through the camera model of training/synthetic.py at a base EV with a hunting auto-exposure
(+-``--hunt`` EV, a jittered sine of 6-14 frames' period) and fresh sensor noise every frame. The "step" clip
adds a real lighting change of +1.5 EV half-way, in the ground truth as in the input (the scene gets brighter),
which the correction must follow, not freeze. The "drift" clip has no change of light but a camera whose
exposure creeps up 1.5 EV over the clip (a slow auto-exposure, still hunting): the ground truth stays put, and
no window may be cut there. Neither enters the mean of the hunting clips.

Per clip and method: flicker = std over frames of (mean brightness of the frame - that of its GT frame), in
/255; jitter = the same error's frame-to-frame part, std of its differences between consecutive frames /
sqrt(2) (equal to flicker for an error that is new every frame, near 0 for a slow drift as a pan crosses bright
and dark parts of a scene, which flicker also counts); PSNR = mean over frames (8-bit outputs, RGB); for the
step clip, "follows" = the method's brightness change across the step (frames beyond half a window on each
side) over the per-frame method's, and "lag" = the frames after the step until the sequence output is within
25% of the step of the per-frame output for good.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from restorex_core import load_checkpoint  # noqa: E402
from restorex_core.images import luma_mean  # noqa: E402
from restorex_core.sequence import iter_corrected  # noqa: E402
from training.synthetic import render_exposure  # noqa: E402

PHOTOS = ("kodak24/0002.png", "kodak24/0014.png", "kodak24/0022.png", "mcmaster/0003.png", "mcmaster/0011.png")
SCENES = ("mef_waterloo/Lighthouse", "pmef_set3/HorseshoeLake", "deepfuse/Seq_11")


@dataclass
class Clip:
    name: str
    frames: torch.Tensor  # (T, 3, H, W) input
    gt: torch.Tensor  # (T, 3, H, W)
    step: int | None = None  # frame index of a lighting change
    drift: bool = False  # the camera's exposure drifts (the ground truth does not)


def load_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0


def stack_gt(data: Path, scene: str) -> Path:
    for line in (data / "stacks" / "stacks.csv").read_text().splitlines()[1:]:
        f = line.split(",")
        if f"{f[0]}/{f[1]}" == scene and f[8] == "gt":
            return data / "stacks" / f[2]
    raise SystemExit(f"no GT frame for {scene} in stacks.csv")


def make_clip(name: str, photo: np.ndarray, *, frames: int, size: tuple[int, int], pan: int, base_ev: float,
              hunt: float, seed: int, step_ev: float = 0.0, drift_ev: float = 0.0) -> Clip:
    rng = np.random.default_rng(seed)
    h, w = size
    ph, pw = photo.shape[:2]
    if ph < h or pw < w + pan * (frames - 1) // 4:  # small photos: upscale so the pan stays inside
        scale = max(h / ph, (w + pan * frames) / pw)
        im = Image.fromarray((photo * 255).astype(np.uint8)).resize((math.ceil(pw * scale), math.ceil(ph * scale)),
                                                                     Image.Resampling.LANCZOS)
        photo = np.asarray(im, dtype=np.float32) / 255.0
        ph, pw = photo.shape[:2]
    travel = pw - w
    period, phase = rng.uniform(6, 14), rng.uniform(0, 2 * math.pi)
    y0 = (ph - h) // 2
    step = frames // 2 if step_ev else None
    ins, gts = [], []
    for t in range(frames):
        x0 = (t * pan) % (2 * travel) if travel else 0
        x0 = x0 if x0 <= travel else 2 * travel - x0  # bounce at the edges
        crop = photo[y0 : y0 + h, x0 : x0 + w]
        light = step_ev if step is not None and t >= step else 0.0
        gt = render_exposure(crop, light) if light else crop
        hunting = hunt * math.sin(2 * math.pi * t / period + phase) * rng.uniform(0.7, 1.0)
        ev = base_ev + light + drift_ev * t / max(frames - 1, 1) + hunting
        noisy = render_exposure(crop, ev, rng, shot=10 ** rng.uniform(-3.3, -2.7), read=10 ** rng.uniform(-3, -2.5))
        ins.append(torch.from_numpy(noisy).permute(2, 0, 1))
        gts.append(torch.from_numpy(np.ascontiguousarray(gt)).permute(2, 0, 1))
    return Clip(name, torch.stack(ins), torch.stack(gts), step, bool(drift_ev))


def clips(args: argparse.Namespace) -> list[Clip]:
    data = args.data
    size, common = (args.height, args.width), {"frames": args.frames, "pan": args.pan, "hunt": args.hunt}
    out = []
    for i, rel in enumerate(PHOTOS[: args.photos]):
        out.append(make_clip(f"photo {rel} -2 EV", load_rgb(data / "photos" / rel), size=size, base_ev=-2.0,
                             seed=i, **common))
    for i, scene in enumerate(SCENES[: args.scenes]):
        ev = -2.0 if i % 2 == 0 else 1.5
        out.append(make_clip(f"scene {scene} {ev:+g} EV", load_rgb(stack_gt(data, scene)), size=size, base_ev=ev,
                             seed=100 + i, **common))
    if args.step:
        out.append(make_clip(f"step +1.5 EV {PHOTOS[0]} -2 EV", load_rgb(data / "photos" / PHOTOS[0]), size=size,
                             base_ev=-2.0, seed=200, step_ev=1.5, **common))
    if args.drift:
        out.append(make_clip(f"drift -2.5 -> -1 EV {PHOTOS[2]}", load_rgb(data / "photos" / PHOTOS[2]), size=size,
                             base_ev=-2.5, seed=300, drift_ev=1.5, **common))
    return out


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    a8 = (a.clamp(0, 1) * 255).round()
    mse = float(((a8 - (b * 255).round()) ** 2).mean())
    return 10 * math.log10(255**2 / max(mse, 1e-10))


def scores(out: torch.Tensor, clip: Clip, window: int) -> dict[str, float]:
    err = (luma_mean(out) - luma_mean(clip.gt)) * 255
    frame_psnr = [psnr(o, g) for o, g in zip(out, clip.gt, strict=True)]
    jitter = float((err[1:] - err[:-1]).std() / math.sqrt(2))  # frame to frame: blind to slow drift
    result = {"flicker": float(err.std()), "jitter": jitter, "psnr": float(np.mean(frame_psnr))}
    result["level"] = luma_mean(out)
    return result


def run(model, frames: torch.Tensor, **kw) -> tuple[torch.Tensor, float]:
    start, out = time.perf_counter(), torch.empty_like(frames)
    with torch.inference_mode():
        for t, frame in iter_corrected(model, frames, **kw):
            out[t] = frame[0]
    return out, time.perf_counter() - start


def step_response(level: torch.Tensor, ref: torch.Tensor, step: int, window: int) -> tuple[float, int]:
    r = max(window // 2, 2)
    jump = float(level[step + r :].mean() - level[: step - r].mean())
    ref_jump = float(ref[step + r :].mean() - ref[: step - r].mean())
    far = (level - ref).abs() > 0.25 * abs(ref_jump)
    late = [t for t in range(step, len(level)) if bool(far[t])]
    return jump / ref_jump, (max(late) - step + 1) if late else 0


def time_1080p(model, n: int, window: int) -> tuple[float, float]:
    frames = torch.rand(n, 3, 1080, 1920) * 0.3
    run(model, frames[:1], window=1)  # warm-up: the first pass of a process pays for allocation and kernel choice
    _, per = run(model, frames, window=1)
    _, seq = run(model, frames, window=window)
    return per / n, seq / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("RESTOREX_DATA"),
                        help="the shared data folder (default: $RESTOREX_DATA)")
    parser.add_argument("--weights", type=Path, default=ROOT / "weights" / "restorex-default.safetensors")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--pan", type=int, default=3, help="pixels per frame")
    parser.add_argument("--hunt", type=float, default=0.35, help="auto-exposure hunting amplitude in EV")
    parser.add_argument("--photos", type=int, default=len(PHOTOS))
    parser.add_argument("--scenes", type=int, default=len(SCENES))
    parser.add_argument("--no-step", dest="step", action="store_false", help="leave out the lighting-step clip")
    parser.add_argument("--no-drift", dest="drift", action="store_false",
                        help="leave out the clip whose camera exposure drifts by +1.5 EV (a slow auto-exposure)")
    parser.add_argument("--only", nargs="+", metavar="TEXT", help="run only the clips whose name contains one of these")
    parser.add_argument("--windows", type=int, nargs="+", default=[9])
    parser.add_argument("--ema", action="store_true", help="also the causal exponential filter")
    parser.add_argument("--box", action="store_true", help="also the plain centred box (cut_ev=None)")
    parser.add_argument("--priors-only", dest="variants", action="store_true",
                        help="also the sequence correction without the brightness hold (priors smoothed only, hold=1)")
    parser.add_argument("--holds", type=int, nargs="+", default=[], metavar="N",
                        help="also these brightness holds (odd frame counts) besides the default")
    parser.add_argument("--tile", type=int, default=None, metavar="PX",
                        help="restore every frame in tiles of PX (tiled frames share smoothed attention maps)")
    parser.add_argument("--time-1080p", type=int, default=0, metavar="N", help="time N frames of 1080p")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=["auto", "fp32", "bf16"], default="fp32",
                        help="model precision (auto: the command line's default, bf16 on a CPU with native bf16)")
    args = parser.parse_args()
    if args.data is None or not (args.data / "photos").is_dir():
        parser.error("give the data folder with --data DIR or RESTOREX_DATA (it holds photos/ and stacks/)")
    torch.set_num_threads(args.threads)
    from restorex_core.precision import auto_dtype

    dtype = {"auto": auto_dtype("cpu"), "fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    model = load_checkpoint(args.weights, dtype=dtype).eval()
    methods: list[tuple[str, dict]] = [("per-frame", {"window": 1})]
    for w in args.windows:
        methods.append((f"sequence w={w}", {"window": w}))
        if args.box:
            methods.append((f"box w={w}", {"window": w, "cut_ev": None}))
        for hold in args.holds:
            methods.append((f"sequence w={w} hold={hold}", {"window": w, "hold": hold}))
        if args.variants:
            methods.append((f"priors only w={w}", {"window": w, "hold": 1}))
        if args.ema:
            methods.append((f"ema w={w}", {"window": w, "smoothing": "ema"}))
    print(f"weights {args.weights.name}; {args.frames} frames of {args.width}x{args.height}"
          + (f" in tiles of {args.tile} px" if args.tile else "") + f", pan {args.pan} px/frame, "
          f"hunting +-{args.hunt} EV; flicker in /255, PSNR in dB (8-bit RGB)\n")
    print("| clip | input flicker | input jitter | input PSNR | "
          + " | ".join(f"{m} flicker | {m} jitter | {m} PSNR" for m, _ in methods) + " | s/frame (per-frame, seq) |")
    print("|---" * (4 + 3 * len(methods) + 1) + "|")
    totals: dict[str, list[tuple[float, float, float]]] = {m: [] for m in ["input", *(m for m, _ in methods)]}
    notes = []
    for clip in clips(args):
        if args.only and not any(text in clip.name for text in args.only):
            continue
        base = scores(clip.frames, clip, 1)
        row = [clip.name, f"{base['flicker']:.2f}", f"{base['jitter']:.2f}", f"{base['psnr']:.2f}"]
        levels, secs = {}, {}
        hunting = clip.step is None and not clip.drift
        if hunting:
            totals["input"].append((base["flicker"], base["jitter"], base["psnr"]))
        for name, kw in methods:
            out, seconds = run(model, clip.frames, tile=args.tile, overlap=16, **kw)
            s = scores(out, clip, kw["window"])
            levels[name], secs[name] = s["level"], seconds / len(clip.frames)
            row += [f"{s['flicker']:.2f}", f"{s['jitter']:.2f}", f"{s['psnr']:.2f}"]
            if hunting:
                totals[name].append((s["flicker"], s["jitter"], s["psnr"]))
        row.append(f"{secs['per-frame']:.2f}, {secs[methods[1][0]]:.2f}" if len(methods) > 1 else "")
        print("| " + " | ".join(row) + " |", flush=True)
        if clip.step is not None:
            for name, kw in methods[1:]:
                follows, lag = step_response(levels[name], levels["per-frame"], clip.step, kw["window"])
                notes.append(f"step clip, {name}: follows {100 * follows:.0f}% of the per-frame brightness change, "
                             f"within {lag} frame(s) of the step")
    if totals["input"]:
        mean = [" | ".join(f"{v:.2f}" for v in np.mean(totals[m], axis=0)) for m in ["input", *[m for m, _ in methods]]]
        print("| **mean of the hunting clips** | " + " | ".join(mean) + " | |")
    print()
    for n in notes:
        print(f"- {n}")
    if args.time_1080p:
        per, seq = time_1080p(model, args.time_1080p, args.windows[0])
        print(f"- 1920x1080, {args.time_1080p} frames, {args.threads} threads: per-frame {per:.2f} s/frame, "
              f"sequence (w={args.windows[0]}, both passes) {seq:.2f} s/frame")


if __name__ == "__main__":
    main()
