"""The training benchmarks run end to end on the tiny demo config (procedural data, no files needed).

They are measuring tools, not tests of speed: these only check that each builds what training builds and prints
its table with real figures."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "training" / "configs" / "demo.toml"
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_loader  # noqa: E402
import bench_train_step  # noqa: E402


def _row(text: str, first: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {first}"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_bench_loader_profiles_the_stream_and_times_a_loader(capsys):
    bench_loader.main(["--config", str(DEMO), "--items", "6", "--workers", "0", "--batches", "2"])
    out = capsys.readouterr().out
    whole = float(_row(out, "whole item")[1])
    assert whole > 0  # the procedural stream renders every item through the camera model
    assert 0 < float(_row(out, "camera model")[1]) <= whole * 1.05
    workers, seconds, per_s = _row(out, "0 ")
    assert float(seconds) > 0 and float(per_s) > 0


def test_bench_train_step_times_the_configs_step(capsys):
    bench_train_step.main(["--config", str(DEMO), "--batch", "2", "--crop", "32", "--steps", "2", "--warmup", "1",
                           "--threads", "1", "--profile", "3"])
    out = capsys.readouterr().out
    assert "stage 1, batch 2 x 32²" in out
    line = next(ln for ln in out.splitlines() if re.match(r"\| \d", ln))
    fwd, bwd, opt, step, per_s = (float(c) for c in line.strip("|").split("|")[:5])
    assert fwd > 0 and bwd > 0 and step >= fwd + bwd and per_s == pytest.approx(2 / step, rel=0.05)
    assert "torch.profiler, 2 steps" in out and "aten::" in out
