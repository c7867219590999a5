"""training.target_check: the rule-frame and fusion targets of the held-out stacks, their blends and the two bars."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.test_curve_check import mini_data
from training.heldout import Row, ev_csv, write
from training.target_check import blend_rows, main


def test_blends_trade_one_target_for_the_other():
    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(3):
        rule = torch.rand(3, 24, 24, generator=g) * 0.6 + 0.3  # brighter, as the rule frames are
        fused = (rule * 0.7 + 0.1 * torch.rand(3, 24, 24, generator=g)).clamp(0, 1)
        items.append((rule * 0.3, rule, fused))
    rows = {r[0]: r for r in blend_rows(items)}
    assert math.isinf(rows["blend a = 0"][1]) and math.isinf(rows["blend a = 1"][3])
    vs_rule = [rows[f"blend a = {a:g}"][1] for a in (0.25, 0.5, 0.75, 1.0)]
    vs_fused = [rows[f"blend a = {a:g}"][3] for a in (0.0, 0.25, 0.5, 0.75)]
    assert vs_rule == sorted(vs_rule, reverse=True) and vs_fused == sorted(vs_fused)  # one rises as the other falls
    half = rows["blend a = 0.5"]
    assert abs(half[1] - half[3]) < 0.2  # halfway: the same distance to both (8-bit rounding apart)
    assert half[1] > rows["blend a = 1"][1] + 5  # and 6 dB closer to each than the far target
    bright = [rows[f"blend a = {a:g}"][5] for a in (0.0, 0.5, 1.0)]
    assert bright == sorted(bright, reverse=True)  # the fusion is the darker target here
    assert rows["auto-gamma"][1] < 40  # a method, not a target


def _reference_folder(folder: Path, rule_psnr: float) -> Path:
    """An evaluate --targets folder holding one model, "v3", at ``rule_psnr`` on both stacks/ subsets."""
    rows = [Row("v3", f"{kind}/{side}", "x", rule_psnr if kind == "stacks" else 5.0, 0.8, 1.0, 1.0)
            for kind in ("stacks", "fused") for side in ("under", "over")]
    write(rows, folder)
    (folder / "ev_sweep.csv").write_text(ev_csv([]))
    return folder


def test_target_check_prints_both_sides_with_the_bars(tmp_path: Path):
    root, cfg = mini_data(tmp_path, gains=(0.3, 1.0, 2.0, 5.0))  # an under and an over frame each
    ref = _reference_folder(tmp_path / "eval_v3", 21.0)
    args = ["--data", str(root), "--config", str(cfg), "--fused-cache", str(tmp_path / "fused"), "--side", "32"]
    text = main([*args, "--compare", str(ref)])
    assert "## under-exposed held-out stack frames (2)" in text and "## over-exposed held-out stack frames (2)" in text
    assert text.count("PSNR >= 20.50") == 2  # v3's 21.0 less 0.5 dB, on both sides
    v3 = [line for line in text.splitlines() if line.startswith("| v3 |")]
    assert len(v3) == 2 and all(line.endswith("| rule only |") for line in v3), text  # 21 >= 20.5, fused 5 dB < bar
    assert all(line.split(" | ")[-1].strip(" |") in ("both", "rule only", "fusion only", "neither")
               for line in text.splitlines() if line.startswith("| blend"))
    with pytest.raises(SystemExit, match="--reference"):
        main([*args, "--compare", str(ref), "--reference", "v9"])
