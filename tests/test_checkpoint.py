"""save_checkpoint / load_checkpoint: bit-exact round trip, atomic writes, and every error a user can hit."""

import dataclasses
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import restorex_core.checkpoint as ckpt
from restorex_core import (
    CheckpointError,
    ClipVision,
    MissingWeightsError,
    RestoreX,
    RestoreXConfig,
    load_checkpoint,
    read_header,
    save_checkpoint,
)


def frozen_tiny() -> RestoreXConfig:
    cfg = RestoreXConfig.tiny()
    return dataclasses.replace(cfg, clip=dataclasses.replace(cfg.clip, trainable=False))


def test_round_trip_is_bit_exact(tmp_path, tiny_model):
    path = save_checkpoint(tiny_model, tmp_path / "m.safetensors", metadata={"dataset": "unit", "step": 3})
    loaded = load_checkpoint(path)
    a, b = tiny_model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.config == tiny_model.config and not loaded.training
    x = torch.rand(2, 3, 20, 28)
    with torch.inference_mode():
        assert torch.equal(tiny_model.correct(x, seed=1), loaded.correct(x, seed=1))
    header = read_header(path)
    assert header["format"] == "restorex" and header["format_version"] == "1"
    assert header["dataset"] == "unit" and header["step"] == "3" and header["clip_stored"] == "true"


def test_frozen_clip_is_not_stored_and_must_be_given(tmp_path):
    model = RestoreX(frozen_tiny())
    path = save_checkpoint(model, tmp_path / "f.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert not any(k.startswith("clip.") for k in f.keys())
    with pytest.raises(MissingWeightsError, match="not stored in it.*models/clip_vision"):
        load_checkpoint(path)
    clip = ClipVision(frozen_tiny().clip)
    clip.visual.load_state_dict({k.removeprefix("clip.visual."): v for k, v in model.state_dict().items()
                                 if k.startswith("clip.visual.")}, strict=False)
    loaded = load_checkpoint(path, clip=clip)
    x = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        assert torch.equal(loaded.correct(x), model.eval().correct(x))


def test_fp16_export_halves_the_file_and_loads_in_fp32(tmp_path, tiny_model):
    full = save_checkpoint(tiny_model, tmp_path / "a.safetensors")
    half = save_checkpoint(tiny_model, tmp_path / "b.safetensors", dtype=torch.float16)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    model = load_checkpoint(half)
    assert model.dtype == torch.float32
    assert load_checkpoint(full, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(MissingWeightsError, match="nope.safetensors not found"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_truncated_checkpoint(tmp_path, tiny_model):
    path = save_checkpoint(tiny_model, tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_random_bytes(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_plain_restormer_checkpoint_is_named(tmp_path):
    keys = ["patch_embed.proj.weight", "encoder_level1.0.attn.temperature", "down1_2.body.0.weight",
            "latent.0.attn.temperature", "refinement.0.attn.temperature", "output.weight"]
    path = tmp_path / "restormer.safetensors"
    save_file({k: torch.zeros(2, 2) for k in keys}, path)
    with pytest.raises(CheckpointError, match="plain Restormer checkpoint"):
        load_checkpoint(path)


def test_clip_file_given_as_weights_is_named(tmp_path):
    clip = ClipVision(RestoreXConfig.tiny().clip)
    path = tmp_path / "clip.safetensors"
    save_file({f"visual.{k}": v.contiguous() for k, v in clip.visual.state_dict().items()}, path)
    with pytest.raises(CheckpointError, match="CLIP encoder file"):
        load_checkpoint(path)


def test_other_foreign_checkpoint(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"model.layer.weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a RestoreX checkpoint"):
        load_checkpoint(path)


def _rewrite_header(path, **changes):
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = dict(f.metadata())
    meta.update(changes)
    save_file(tensors, path, metadata=meta)


def test_config_that_does_not_match_the_weights(tmp_path, tiny_model):
    path = save_checkpoint(tiny_model, tmp_path / "m.safetensors")
    cfg = tiny_model.config.to_dict()
    cfg["restormer"]["dim"] = 16
    _rewrite_header(path, config=json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not match its weights.*wrong shape"):
        load_checkpoint(path)


def test_newer_format_version_and_broken_config(tmp_path, tiny_model):
    path = save_checkpoint(tiny_model, tmp_path / "m.safetensors")
    _rewrite_header(path, format_version="99")
    with pytest.raises(CheckpointError, match="format version 99.*upgrade"):
        load_checkpoint(path)
    _rewrite_header(path, format_version="1", config="{not json")
    with pytest.raises(CheckpointError, match="invalid config"):
        load_checkpoint(path)


def test_interrupted_save_leaves_no_file(tmp_path, tiny_model, monkeypatch):
    target = tmp_path / "m.safetensors"
    target.write_bytes(b"previous good file")

    def explode(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_file", explode)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tiny_model, target)
    assert target.read_bytes() == b"previous good file"
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_save_refuses_other_suffixes(tmp_path, tiny_model):
    with pytest.raises(ValueError, match=".safetensors"):
        save_checkpoint(tiny_model, tmp_path / "m.pt")
