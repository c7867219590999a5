"""The command line, run in-process through cli.main on real files with a tiny checkpoint."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from restorex_cli import cli, imageio
from restorex_cli.imageio import read_image, write_image
from restorex_core import RestoreX, RestoreXConfig, load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    return save_checkpoint(RestoreX(RestoreXConfig.tiny()), tmp_path_factory.mktemp("ckpt") / "m.safetensors",
                           metadata={"step": 1234, "dataset": "unit-test"})


def make_inputs(folder: Path) -> dict[str, tuple[int, int]]:
    """A folder of mixed images; returns name -> (bit depth, channels) of those the CLI must take."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    specs = {"a16_rgba.png": (16, 4), "b8_rgb.png": (8, 3), "c16_rgb.tif": (16, 3), "d8_gray.tif": (8, 1),
             "e16_gray.png": (16, 1), "f_rgb.jpg": (8, 3)}
    for name, (depth, channels) in specs.items():
        write_image(folder / name, torch.rand(1, channels, 20, 28, generator=g), bit_depth=depth)
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    write_image(folder / "sub" / "nested.png", torch.rand(1, 3, 16, 16, generator=g))
    return specs


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("module", ["restorex_cli", "restorex_core"])  # restorex_core: the older alias
def test_help_runs_as_a_module(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "correct" in result.stdout and "info" in result.stdout


def test_correct_a_folder_keeps_names_depths_formats_and_alpha(tmp_path, capsys, checkpoint):
    specs = make_inputs(tmp_path / "in")
    code, _, err = run(capsys, "correct", tmp_path / "in", "--out", tmp_path / "out", "--weights", checkpoint,
                       "--device", "cpu")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(specs)  # no notes.txt, no sub/
    model = load_checkpoint(checkpoint)
    for name, (depth, channels) in specs.items():
        source, result = read_image(tmp_path / "in" / name), read_image(tmp_path / "out" / name)
        assert (result.format, result.bit_depth) == (source.format, depth)
        assert result.tensor.shape == (1, channels, 20, 28)
        with torch.inference_mode():
            expected = model.correct(source.tensor, seed=0)
        # the same result as the library call, once rounded and encoded the same way (JPEG at quality 95)
        reference = read_image(write_image(tmp_path / "out" / f"expected-{name}", expected, bit_depth=depth))
        assert torch.equal(result.tensor, reference.tensor), name
        assert (result.tensor[:, :3] - source.tensor[:, :3]).abs().max() > 0.01, name  # it did correct something
        if channels == 4:
            assert torch.equal(result.tensor[:, 3], source.tensor[:, 3])  # bit-exact 16-bit alpha


def test_recursive_keeps_the_folder_structure(tmp_path, capsys, checkpoint):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    write_image(tmp_path / "in" / "top.png", torch.rand(1, 3, 24, 20))
    write_image(tmp_path / "in" / "sub" / "nested.jpg", torch.rand(1, 3, 16, 16))
    assert [rel.name for _, rel in cli.collect_inputs([tmp_path / "in"])] == ["top.png"]
    code, _, err = run(capsys, "correct", tmp_path / "in", "--out", tmp_path / "out", "--weights", checkpoint,
                       "--recursive", "--tile", "16", "--overlap", "4", "--steps", "2", "--seed", "3")
    assert code == 0, err
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.*")) == [
        "sub/nested.jpg", "top.png"]


def test_missing_weights_exit_2_naming_the_file(tmp_path, capsys, monkeypatch):
    make_inputs(tmp_path / "in")
    absent = tmp_path / "nowhere" / "absent.safetensors"
    code, _, err = run(capsys, "correct", tmp_path / "in", "--out", tmp_path / "out", "--weights", absent)
    assert code == 2 and str(absent) in err and "--weights" in err
    default = tmp_path / "weights" / "restorex-default.safetensors"
    monkeypatch.setattr(cli, "DEFAULT_WEIGHTS", default)
    code, _, err = run(capsys, "correct", tmp_path / "in", "--out", tmp_path / "out")
    assert code == 2 and str(default) in err and cli.TRAIN_COMMAND in err and "weights/README.md" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_corrupt_weights_exit_2_without_traceback(tmp_path, capsys, checkpoint):
    make_inputs(tmp_path / "in")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    for bad in (garbage, truncated):
        for argv in (("correct", tmp_path / "in", "--out", tmp_path / "out", "--weights", bad), ("info", bad)):
            code, _, err = run(capsys, *argv)
            assert code == 2 and str(bad) in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_existing_outputs_are_refused_unless_overwrite(tmp_path, capsys, checkpoint):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    write_image(tmp_path / "in" / "x.png", torch.rand(1, 3, 16, 16))
    (tmp_path / "out" / "x.png").write_bytes(b"keep me")
    base = ("correct", tmp_path / "in", "--out", tmp_path / "out", "--weights", checkpoint)
    code, _, err = run(capsys, *base)
    assert code == 2 and "already exist" in err and "--overwrite" in err
    assert (tmp_path / "out" / "x.png").read_bytes() == b"keep me"
    assert run(capsys, *base, "--skip-existing")[0] == 0
    assert (tmp_path / "out" / "x.png").read_bytes() == b"keep me"
    assert run(capsys, *base, "--overwrite")[0] == 0
    assert read_image(tmp_path / "out" / "x.png").tensor.shape == (1, 3, 16, 16)


def test_out_equal_to_the_input_folder_is_refused(tmp_path, capsys, checkpoint):
    make_inputs(tmp_path / "in")
    before = {p.name: p.read_bytes() for p in (tmp_path / "in").iterdir() if p.is_file()}
    code, _, err = run(capsys, "correct", tmp_path / "in", "--out", tmp_path / "in", "--weights", checkpoint,
                       "--overwrite")
    assert code == 2 and "overwrite the input" in err
    assert {p.name: p.read_bytes() for p in (tmp_path / "in").iterdir() if p.is_file()} == before


def test_a_bad_image_is_reported_and_the_others_still_written(tmp_path, capsys, checkpoint):
    (tmp_path / "in").mkdir()
    write_image(tmp_path / "in" / "good.png", torch.rand(1, 3, 16, 16))
    (tmp_path / "in" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    code, _, err = run(capsys, "correct", tmp_path / "in", "--out", tmp_path / "out", "--weights", checkpoint)
    assert code == 1 and "bad.png" in err and "1 failed" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good.png"]


def test_ctrl_c_exits_130_and_leaves_no_partial_file(tmp_path, capsys, checkpoint, monkeypatch):
    (tmp_path / "in").mkdir()
    write_image(tmp_path / "in" / "deep.png", torch.rand(1, 3, 16, 16), bit_depth=16)

    def interrupted(array, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(imageio, "encode_png", interrupted)
    code, _, err = run(capsys, "correct", tmp_path / "in", "--out", tmp_path / "out", "--weights", checkpoint)
    assert code == 130 and "interrupted" in err
    assert list((tmp_path / "out").iterdir()) == []


def test_usage_errors_exit_2(tmp_path, capsys, checkpoint):
    write_image(tmp_path / "x.png", torch.rand(1, 3, 8, 8))
    base = ("correct", tmp_path / "x.png", "--out", tmp_path / "out", "--weights", checkpoint)
    assert run(capsys, "correct", tmp_path / "missing.png", "--out", tmp_path / "out")[0] == 2
    assert run(capsys, *base, "--tile", "64", "--overlap", "40")[0] == 2
    assert run(capsys, *base, "--dtype", "fp8")[0] == 2
    assert run(capsys)[0] == 2
    if not torch.cuda.is_available():
        code, _, err = run(capsys, *base, "--device", "cuda")
        assert code == 2 and "CUDA is not available" in err
    assert not (tmp_path / "out").exists()


def test_info_prints_config_counts_metadata_and_sha256(tmp_path, capsys, checkpoint):
    code, out, err = run(capsys, "info", checkpoint)
    assert code == 0, err
    model = RestoreX(RestoreXConfig.tiny())
    for name in cli.SUBMODULES:
        assert f"{sum(p.numel() for p in getattr(model, name).parameters()):,}" in out, name
    assert f"{sum(p.numel() for p in model.parameters()):,}" in out and "total" in out
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() in out
    assert "restormer:" in out and "num_blocks: [1, 1, 1, 1]" in out and "taps: [1, 2, 3, 4]" in out
    assert "step: 1234" in out and "dataset: unit-test" in out and "version 1" in out
    assert "CLIP trunk: stored" in out

    frozen = RestoreXConfig.tiny().replace(clip={"trainable": False})
    external = save_checkpoint(RestoreX(frozen), tmp_path / "frozen.safetensors")
    info = cli.checkpoint_info(external)
    assert info["clip_trunk"] == "external" and info["parameters"]["clip"]["stored_values"] == 0
    assert info["parameters"]["clip"]["parameters"] > 0
    assert info["size_bytes"] == external.stat().st_size
