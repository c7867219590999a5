"""The command line, run in-process through cli.main on real files with a tiny checkpoint."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from restorex_cli import cli
from restorex_core import RestoreX, RestoreXConfig, load_checkpoint, save_checkpoint
from restorex_core.describe import SUBMODULES, describe_checkpoint
from restorex_core.errors import CheckpointError, MissingWeightsError, TileError
from restorex_core.precision import auto_dtype
from restorex_core.tiling import check_tiling, min_tile
from restorex_io import png16, read_image, write_image

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


def test_help_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "restorex_cli", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "correct" in result.stdout and "info" in result.stdout


def test_correct_a_folder_keeps_names_depths_formats_and_alpha(tmp_path, capsys, checkpoint):
    specs = make_inputs(tmp_path / "in")
    code, _, err = run(capsys, "correct", tmp_path / "in", "--out", tmp_path / "out", "--weights", checkpoint,
                       "--device", "cpu")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(specs)  # no notes.txt, no sub/
    model = load_checkpoint(checkpoint, dtype=auto_dtype("cpu"))
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


def test_a_gated_checkpoint_leaves_a_good_photo_unless_full_strength(tmp_path, capsys):
    from tests.test_gate import gated_model

    gated = save_checkpoint(gated_model(1.6, strength=0), tmp_path / "gated.safetensors")
    (tmp_path / "in").mkdir()
    write_image(tmp_path / "in" / "good.png", torch.rand(1, 3, 20, 28, generator=torch.Generator().manual_seed(3))
                * 0.5, bit_depth=16)
    source = read_image(tmp_path / "in" / "good.png").tensor
    for flag, folder in (((), "kept"), (("--full-strength",), "full")):
        code, _, err = run(capsys, "correct", tmp_path / "in", "--out", tmp_path / folder, "--weights", gated,
                           "--device", "cpu", *flag)
        assert code == 0, err
    assert torch.equal(read_image(tmp_path / "kept" / "good.png").tensor, source)
    full = read_image(tmp_path / "full" / "good.png").tensor
    assert (full - source * 1.6).abs().max() < 1e-3  # the full correction, within the 16-bit rounding


def test_recursive_keeps_the_folder_structure(tmp_path, capsys, checkpoint):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    write_image(tmp_path / "in" / "top.png", torch.rand(1, 3, 48, 40))
    write_image(tmp_path / "in" / "sub" / "nested.jpg", torch.rand(1, 3, 16, 16))
    assert [rel.name for _, rel in cli.collect_inputs([tmp_path / "in"])] == ["top.png"]
    code, _, err = run(capsys, "correct", tmp_path / "in", "--out", tmp_path / "out", "--weights", checkpoint,
                       "--recursive", "--tile", "32", "--overlap", "8", "--steps", "2", "--seed", "3")
    assert code == 0, err
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.*")) == [
        "sub/nested.jpg", "top.png"]


def test_missing_weights_exit_2_naming_the_file(tmp_path, capsys, monkeypatch):
    make_inputs(tmp_path / "in")
    absent = tmp_path / "nowhere" / "absent.safetensors"
    code, _, err = run(capsys, "correct", tmp_path / "in", "--out", tmp_path / "out", "--weights", absent)
    assert code == 2 and str(absent) in err and "--weights" in err and str(cli.DEFAULT_WEIGHTS) in err
    assert "weights/README.md" in err and "runs/" not in err
    default = tmp_path / "weights" / "restorex-default.safetensors"
    monkeypatch.setattr(cli, "DEFAULT_WEIGHTS", default)
    code, _, err = run(capsys, "correct", tmp_path / "in", "--out", tmp_path / "out")
    assert code == 2 and str(default) in err and "git checkout -- weights/restorex-default.safetensors" in err
    assert "weights/README.md" in err and "runs/" not in err and "default_stage" not in err  # no old recipe's folder
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

    monkeypatch.setattr(png16, "encode_png", interrupted)
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
    for name in SUBMODULES:
        module = getattr(model, name)  # tone: None, the paper's model has no tone path
        assert f"{0 if module is None else sum(p.numel() for p in module.parameters()):,}" in out, name
    assert f"{sum(p.numel() for p in model.parameters()):,}" in out and "total" in out
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() in out
    assert "restormer:" in out and "num_blocks: [1, 1, 1, 1]" in out and "taps: [1, 2, 3, 4]" in out
    assert "step: 1234" in out and "dataset: unit-test" in out and "version 1" in out
    assert "CLIP trunk: stored" in out

    frozen = RestoreXConfig.tiny().replace(clip={"trainable": False})
    external = save_checkpoint(RestoreX(frozen), tmp_path / "frozen.safetensors")
    info = describe_checkpoint(external)  # the library's description, which `info` prints
    assert info["clip_trunk"] == "external" and info["parameters"]["clip"]["stored_values"] == 0
    assert info["parameters"]["clip"]["parameters"] > 0
    assert info["size_bytes"] == external.stat().st_size


# -- faults a new user hit (issue 9) ---------------------------------------------------------------------
_PROBE = ("import sys\nfrom restorex_cli.cli import main\nrc = main(sys.argv[1:])\n"
          "print('torch imported' if 'torch' in sys.modules else 'torch not imported', rc)")


@pytest.mark.parametrize("argv", [["--help"], ["correct", "missing.png", "--out", "out"],
                                  ["correct", "--seed", str(2**70), "x.png", "--out", "out"]])
def test_arguments_are_checked_before_torch_is_imported(tmp_path, argv):
    result = subprocess.run([sys.executable, "-c", _PROBE, *argv], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.stdout.strip().endswith(f"torch not imported {0 if argv == ['--help'] else 2}"), result


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if the model is loaded: these errors must come before that work."""
    import restorex_core.checkpoint

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(restorex_core.checkpoint, "load_checkpoint", refuse)


def test_bad_out_is_refused_before_the_model_loads(tmp_path, capsys, checkpoint, no_model_load):
    write_image(tmp_path / "x.png", torch.rand(1, 3, 8, 8))
    (tmp_path / "a_file").write_text("not a folder")
    base = ("correct", tmp_path / "x.png", "--weights", checkpoint)
    code, _, err = run(capsys, *base, "--out", tmp_path / "a_file")
    assert code == 2 and "is a file, not a folder" in err
    code, _, err = run(capsys, *base, "--out", tmp_path / "a_file" / "sub")
    assert code == 2 and "cannot be made" in err and str(tmp_path / "a_file") in err
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):
        pytest.skip("running as a user who may write anywhere (root): no folder is unwritable")
    code, _, err = run(capsys, *base, "--out", locked / "out")
    assert code == 2 and "no permission to write" in err


def test_weights_that_are_a_folder_or_a_pickle_say_so(tmp_path, capsys, checkpoint, no_model_load):
    write_image(tmp_path / "x.png", torch.rand(1, 3, 8, 8))
    base = ("correct", tmp_path / "x.png", "--out", tmp_path / "out", "--weights")
    code, _, err = run(capsys, *base, tmp_path)
    assert code == 2 and "is a folder" in err and "not found" not in err
    pickled = tmp_path / "model.pt"
    torch.save({"model": RestoreX(RestoreXConfig.tiny()).state_dict(), "config": RestoreXConfig.tiny()}, pickled)
    code, _, err = run(capsys, *base, pickled)
    assert code == 2 and "pickle file" in err and ".safetensors" in err, err
    assert "corrupt" not in err and "re-download" not in err
    assert not (tmp_path / "out").exists()


def test_a_pickled_checkpoint_is_described_by_the_library_too(tmp_path):
    pickled = tmp_path / "model.pt"
    torch.save({"model": RestoreX(RestoreXConfig.tiny()).state_dict(), "config": RestoreXConfig.tiny()}, pickled)
    with pytest.raises(CheckpointError, match="pickle file.*not load.*safetensors"):
        load_checkpoint(pickled)
    with pytest.raises(MissingWeightsError, match="is a folder"):
        load_checkpoint(tmp_path)


def test_seed_steps_and_tile_are_checked_at_parse_time(tmp_path, capsys, checkpoint, no_model_load):
    write_image(tmp_path / "x.png", torch.rand(1, 3, 8, 8))
    base = ("correct", tmp_path / "x.png", "--out", tmp_path / "out", "--weights", checkpoint)
    code, _, err = run(capsys, *base, "--seed", 2**70)
    assert code == 2 and f"--seed must be in 0..{2**64 - 1}" in err
    timesteps = RestoreXConfig.tiny().ffedm.timesteps
    code, _, err = run(capsys, *base, "--steps", 99)
    assert code == 2 and f"1..{timesteps}" in err and "T = " in err
    code, _, err = run(capsys, *base, "--tile", 8, "--overlap", 0)
    assert code == 2 and "--overlap 0" in err and "at least 8" in err
    assert "--tile 8 is too small" in err  # both problems at once, in the library's words (TileError)
    with pytest.raises(TileError) as core:
        check_tiling(8, 0, names=("--tile", "--overlap"))
    assert f"error: {core.value}" in err
    code, _, err = run(capsys, *base, "--tile", 8, "--overlap", 8)
    assert code == 2 and "--tile 8 is too small" in err and "at least 32 pixels" in err
    assert min_tile(8) == 32 and min_tile(32) == 72
    assert not (tmp_path / "out").exists()


def test_gray_alpha_comes_back_gray_alpha(tmp_path, capsys, checkpoint):
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (20, 28, 2), dtype=np.uint8)
    (tmp_path / "in").mkdir()
    Image.fromarray(pixels, mode="LA").save(tmp_path / "in" / "ga.png")
    code, _, err = run(capsys, "correct", tmp_path / "in", "--out", tmp_path / "out", "--weights", checkpoint)
    assert code == 0, err
    with Image.open(tmp_path / "out" / "ga.png") as im:
        assert im.mode == "LA"
        out = np.asarray(im)
    assert np.array_equal(out[..., 1], pixels[..., 1])  # alpha untouched
    gray = torch.from_numpy(pixels[..., 0].astype(np.float32) / 255)[None, None]
    with torch.inference_mode():
        expected = load_checkpoint(checkpoint, dtype=auto_dtype("cpu")).correct(gray, seed=0)
    assert np.array_equal(out[..., 0], np.rint(expected[0, 0].numpy() * 255).astype(np.uint8))


def test_sigterm_while_writing_exits_143_and_leaves_no_temp_file(tmp_path, capsys, checkpoint, monkeypatch):
    (tmp_path / "in").mkdir()
    write_image(tmp_path / "in" / "deep.png", torch.rand(1, 3, 16, 16), bit_depth=16)
    encode = png16.encode_png

    def terminated_mid_write(array, **kwargs):  # a real SIGTERM, delivered while the temporary file is open
        data = encode(array, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return data

    monkeypatch.setattr(png16, "encode_png", terminated_mid_write)
    previous = signal.getsignal(signal.SIGTERM)
    code, _, err = run(capsys, "correct", tmp_path / "in", "--out", tmp_path / "out", "--weights", checkpoint)
    assert code == 143 and "terminated" in err
    assert list((tmp_path / "out").iterdir()) == []  # no hidden .tmp file either
    assert signal.getsignal(signal.SIGTERM) == previous  # the handler is the command's only


def test_sigterm_to_a_running_cli_process(tmp_path, checkpoint):
    (tmp_path / "in").mkdir()
    for i in range(60):
        write_image(tmp_path / "in" / f"{i:03d}.png", torch.rand(1, 3, 64, 64), bit_depth=16)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "restorex_cli", "correct", str(tmp_path / "in"), "--out",
                             str(out), "--weights", str(checkpoint), "--device", "cpu"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out.is_dir() and any(out.iterdir())) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be terminated"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "terminated" in err and "Traceback" not in err
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert all(read_image(p).tensor.shape == (1, 3, 64, 64) for p in out.iterdir())  # every file is whole


# -- automatic tiling ----------------------------------------------------------------------------------------


def test_tile_and_max_memory_arguments_parse_or_exit_2(tmp_path, capsys, checkpoint):
    assert cli.tile_arg("auto") == "auto" and cli.tile_arg("None") is None and cli.tile_arg("512") == 512
    assert cli.memory_arg("4G") == 4 << 30 and cli.memory_arg("1500M") == 1500 << 20
    assert cli.memory_arg("1.5GiB") == int(1.5 * (1 << 30)) and cli.memory_arg("268435456") == 1 << 28
    assert cli.build_parser().parse_args(["correct", "x.png", "--out", "o"]).tile == "auto"  # the default
    write_image(tmp_path / "a.png", torch.rand(1, 3, 16, 16))
    for bad in (["--tile", "big"], ["--max-memory", "lots"], ["--max-memory", "1M"]):
        code, _, err = run(capsys, "correct", tmp_path / "a.png", "--out", tmp_path / "out", "--weights",
                           checkpoint, *bad)
        assert code == 2 and bad[0] in err


def test_max_memory_tiles_one_photo_and_the_bar_moves_per_tile(tmp_path, capsys, checkpoint):
    image = torch.rand(1, 3, 300, 340, generator=torch.Generator().manual_seed(5))  # ~124 MB untiled: over 64M
    write_image(tmp_path / "in.png", image, bit_depth=16)
    code, _, err = run(capsys, "correct", tmp_path / "in.png", "--out", tmp_path / "out", "--weights", checkpoint,
                       "--max-memory", "64M", "--dtype", "fp32")  # the default --tile auto plans for it
    assert code == 0, err
    model = load_checkpoint(checkpoint)
    with torch.inference_mode():
        want = model.correct(read_image(tmp_path / "in.png").tensor, seed=0, tile="auto", max_memory=64 << 20)
    got = read_image(tmp_path / "out" / "in.png").tensor
    assert (got - want).abs().max() <= 1 / 65535 + 1e-6
    parts = sorted({float(m) for m in re.findall(r"(\d\.\d\d)/1 ", err)})
    assert parts[0] == 0.0 and parts[-1] == 1.0 and len(parts) > 3  # the guide pass and every tile moved the bar


# -- output files, pipes, unreadable and oversized inputs ------------------------------------------------------
def test_an_output_that_appears_during_the_run_is_never_replaced(tmp_path, capsys, caplog, checkpoint, monkeypatch):
    """Another run writes the same name after this one checked --out: without --overwrite it is kept, and said so."""
    (tmp_path / "in").mkdir()
    write_image(tmp_path / "in" / "a.png", torch.rand(1, 3, 16, 16))
    write_image(tmp_path / "in" / "b.png", torch.rand(1, 3, 16, 16))
    theirs = tmp_path / "out" / "a.png"
    checked = cli.check_correct

    def then_another_run_writes(args):
        checked(args)  # --out was empty when checked ...
        theirs.parent.mkdir(exist_ok=True)
        theirs.write_bytes(b"the other run's image")  # ... and is not when this run publishes

    monkeypatch.setattr(cli, "check_correct", then_another_run_writes)
    base = ("correct", tmp_path / "in", "--out", tmp_path / "out", "--weights", checkpoint)
    code, _, err = run(capsys, *base)
    assert code == 1 and str(theirs) in err and "--overwrite" in err and "already exists" in err
    assert theirs.read_bytes() == b"the other run's image"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]  # b written, no temporary
    for name in ("a.png", "b.png"):
        (tmp_path / "out" / name).unlink()
    code, _, err = run(capsys, *base, "--skip-existing")
    assert code == 0 and theirs.read_bytes() == b"the other run's image"
    assert f"skipped {theirs}: it appeared during the run" in caplog.text
    code, _, err = run(capsys, *base, "--overwrite")
    assert code == 0, err
    assert read_image(theirs).tensor.shape == (1, 3, 16, 16)


def test_two_runs_into_one_folder_at_once_never_replace_each_others_files(tmp_path, checkpoint):
    (tmp_path / "in").mkdir()
    for i in range(3):
        write_image(tmp_path / "in" / f"{i}.png", torch.rand(1, 3, 16, 16))
    command = [sys.executable, "-m", "restorex_cli", "correct", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
               "--weights", str(checkpoint)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(r.wait(timeout=300), r.stderr.read()) for r in runs]
    assert sorted(code for code, _ in results)[-1] != 0  # not both "ok": the second to arrive is told
    for code, err in results:
        assert code in (0, 1, 2) and "Traceback" not in err
        if code:
            assert "already exist" in err and "--overwrite" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "1.png", "2.png"]  # whole, no temps


def test_info_into_a_closed_pipe_exits_quietly(checkpoint):
    """`restorex info FILE | head -3`: the reader has gone before the output is written."""
    run_ = subprocess.Popen([sys.executable, "-m", "restorex_cli", "info", str(checkpoint)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_.stdout.close()  # as head does once it has its lines
    err = run_.stderr.read()
    assert run_.wait(timeout=120) == 128 + signal.SIGPIPE
    assert err == ""  # no BrokenPipeError traceback, no "Exception ignored"


def test_an_image_over_pillows_safety_limit_says_so_and_max_pixels_reads_it(tmp_path, capsys, checkpoint,
                                                                            monkeypatch):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # a 20 x 28 image is then a "bomb" (over 2 x 100)
    (tmp_path / "in").mkdir()
    write_image(tmp_path / "in" / "big.png", torch.rand(1, 3, 20, 28))
    base = ("correct", tmp_path / "in", "--out", tmp_path / "out", "--weights", checkpoint)
    code, _, err = run(capsys, *base)
    assert code == 1 and "560 pixels" in err and "safety limit of 200 pixels" in err and "--max-pixels" in err
    assert "use PNG or TIFF" not in err
    code, _, err = run(capsys, *base, "--max-pixels", 600)
    assert code == 0, err
    assert read_image(tmp_path / "out" / "big.png").tensor.shape == (1, 3, 20, 28)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads every file")
def test_unreadable_inputs_are_named_before_any_work(tmp_path, capsys, checkpoint):
    (tmp_path / "in").mkdir()
    locked = write_image(tmp_path / "in" / "locked.png", torch.rand(1, 3, 16, 16))
    locked.chmod(0)
    code, _, err = run(capsys, "correct", locked, "--out", tmp_path / "out", "--weights", checkpoint)
    assert code == 2 and str(locked) in err and "permission denied" in err and "chmod" in err
    assert "Errno" not in err and not (tmp_path / "out").exists()


def test_a_tiff_with_associated_alpha_comes_back_associated(tmp_path, capsys, checkpoint):
    import tifffile

    rng = np.random.default_rng(3)
    alpha = rng.integers(1, 65536, (20, 28, 1)).astype(np.float64)
    colour = rng.random((20, 28, 3)) * alpha  # premultiplied: colour <= alpha
    (tmp_path / "in").mkdir()
    stored = np.concatenate([colour, alpha], axis=2).round().astype(np.uint16)
    tifffile.imwrite(tmp_path / "in" / "a.tif", stored, photometric="rgb", extrasamples=("assocalpha",))
    code, _, err = run(capsys, "correct", tmp_path / "in", "--out", tmp_path / "out", "--weights", checkpoint)
    assert code == 0, err
    with tifffile.TiffFile(tmp_path / "out" / "a.tif") as tif:
        page = tif.pages[0]
        out = page.asarray()
        assert [int(e) for e in page.extrasamples] == [1]  # labelled associated, as the input
    assert np.array_equal(out[..., 3], stored[..., 3])  # alpha untouched
    assert (out[..., :3] <= out[..., 3:] + 1).all()  # stored premultiplied: colour never above its alpha


def test_a_folder_gives_each_image_the_pixels_of_one_library_batch(tmp_path, capsys, checkpoint):
    """Batch == alone (issue 23): the CLI corrects file by file; the library, given the three as one batch at
    the default dtype, gives the same 8-bit pixels."""
    images = torch.rand(3, 3, 40, 56, generator=torch.Generator().manual_seed(4))
    (tmp_path / "in").mkdir()
    for i in range(3):
        write_image(tmp_path / "in" / f"{i}.png", images[i : i + 1])
    code, _, err = run(capsys, "correct", tmp_path / "in", "--out", tmp_path / "out", "--weights", checkpoint)
    assert code == 0, err
    model = load_checkpoint(checkpoint, dtype=auto_dtype("cpu"))
    sources = torch.cat([read_image(tmp_path / "in" / f"{i}.png").tensor for i in range(3)])
    with torch.inference_mode():
        batch = (model.correct(sources, seed=0) * 255).round()
    for i in range(3):
        out = read_image(tmp_path / "out" / f"{i}.png").tensor * 255
        assert float((out - batch[i : i + 1]).abs().max()) <= 1.0


def test_fp16_on_a_slow_cpu_warns_and_max_memory_beyond_the_machine_is_refused(tmp_path, capsys, caplog, checkpoint):
    from restorex_core import precision
    from restorex_core.memory import total_memory

    write_image(tmp_path / "x.png", torch.rand(1, 3, 16, 16))
    base = ("correct", tmp_path / "x.png", "--weights", checkpoint, "--device", "cpu")
    precision._warn_once.cache_clear()  # once per process: start this process's count here
    code, _, err = run(capsys, *base, "--out", tmp_path / "a", "--dtype", "fp16")
    assert code == 0, err
    warned = [r.getMessage() for r in caplog.records if r.getMessage() == precision.FP16_ON_CPU]
    assert len(warned) == (0 if precision.cpu_has_native_fp16() else 1)  # none where fp16 runs natively
    code, _, err = run(capsys, *base, "--out", tmp_path / "b", "--max-memory", "1000T")
    ram = total_memory("cpu")
    assert code == 2 and f"this machine's {ram / (1 << 30):.1f} GiB of RAM" in err and "--max-memory" in err
    assert not (tmp_path / "b").exists()
