"""``correct --sequence``: a folder of frames corrected as one clip (sequence.correct_sequence) from the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import restorex_io
from restorex_cli import cli
from restorex_core import RestoreX, RestoreXConfig, load_checkpoint, save_checkpoint
from restorex_core.precision import auto_dtype
from restorex_core.sequence import correct_sequence
from restorex_io import read_image, write_image


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    return save_checkpoint(RestoreX(RestoreXConfig.tiny()), tmp_path_factory.mktemp("ckpt") / "m.safetensors")


def make_clip(folder: Path, frames: int = 5, size: tuple[int, int] = (20, 28)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 3, *size, generator=g) * 0.5
    paths = []
    for t in range(frames):  # written out of order: the clip is taken sorted by name
        path = folder / f"frame_{frames - 1 - t:03d}.png"
        write_image(path, (base * (1 + 0.3 * (t % 2))).clamp(0, 1))
        paths.append(path)
    return sorted(paths)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_folder_of_frames_is_corrected_as_one_clip_keeping_names(tmp_path, capsys, checkpoint):
    files = make_clip(tmp_path / "in")
    code, _, err = run(capsys, "correct", "--sequence", tmp_path / "in", "--out", tmp_path / "out",
                       "--weights", checkpoint, "--window", 3, "--hold", 5, "--seed", 2)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f.name for f in files]
    frames = torch.cat([read_image(f).tensor for f in files])
    model = load_checkpoint(checkpoint, dtype=auto_dtype("cpu"))
    with torch.inference_mode():
        want = correct_sequence(model, frames, window=3, hold=5, seed=2)
    got = torch.cat([read_image(tmp_path / "out" / f.name).tensor for f in files])
    assert float((got - want).abs().max()) <= 0.5 / 255 + 1e-6  # 8-bit PNGs round


def test_frames_of_different_sizes_are_refused_before_any_work(tmp_path, capsys, checkpoint, monkeypatch):
    make_clip(tmp_path / "in", 3)
    write_image(tmp_path / "in" / "frame_009.png", torch.rand(1, 3, 20, 30))
    monkeypatch.setattr(cli, "correct_sequence_files", lambda *a: pytest.fail("work started"))
    code, _, err = run(capsys, "correct", "--sequence", tmp_path / "in", "--out", tmp_path / "out",
                       "--weights", checkpoint)
    assert code == 2
    assert "frame_009.png is 30x20" in err and "frame_000.png is 28x20" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(("extra", "message"), [(["--window", "4"], "--window must be an odd"),
                                                (["--window", "0"], "--window must be an odd"),
                                                (["--hold", "8"], "--hold must be 0 (the whole shot) or an odd"),
                                                (["--skip-existing"], "not --skip-existing")])
def test_bad_sequence_arguments_exit_2(tmp_path, capsys, checkpoint, extra, message):
    make_clip(tmp_path / "in", 2)
    code, _, err = run(capsys, "correct", "--sequence", tmp_path / "in", "--out", tmp_path / "out",
                       "--weights", checkpoint, *extra)
    assert code == 2 and message in err


def test_ctrl_c_between_frames_exits_130_leaving_only_whole_frames(tmp_path, capsys, checkpoint, monkeypatch):
    make_clip(tmp_path / "in", 4)
    written = []
    real_write = restorex_io.write_image

    def write_then_interrupt(path, *args, **kwargs):
        if written:
            raise KeyboardInterrupt
        written.append(path)
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(restorex_io, "write_image", write_then_interrupt)
    code, _, err = run(capsys, "correct", "--sequence", tmp_path / "in", "--out", tmp_path / "out",
                       "--weights", checkpoint, "--window", 3)
    assert code == 130 and "interrupted after 1 of 4 frames" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["frame_000.png"]
    assert read_image(tmp_path / "out" / "frame_000.png").tensor.shape == (1, 3, 20, 28)


def test_a_frame_whose_output_appears_during_the_run_stops_the_clip_and_is_kept(tmp_path, capsys, checkpoint,
                                                                                 monkeypatch):
    make_clip(tmp_path / "in", 3)
    theirs = tmp_path / "out" / "frame_001.png"
    checked = cli.check_correct

    def then_another_run_writes(args):
        checked(args)
        theirs.parent.mkdir(exist_ok=True)
        theirs.write_bytes(b"the other run's frame")

    monkeypatch.setattr(cli, "check_correct", then_another_run_writes)
    code, _, err = run(capsys, "correct", "--sequence", tmp_path / "in", "--out", tmp_path / "out",
                       "--weights", checkpoint, "--window", 3)
    assert code == 1 and str(theirs) in err and "--overwrite" in err and "after 1 of 3 frames" in err
    assert theirs.read_bytes() == b"the other run's frame"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["frame_000.png", "frame_001.png"]
