"""What a checkpoint holds, as plain data: the one description the command line's ``info`` prints and the
ComfyUI loader logs."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from .checkpoint import FORMAT, read_header
from .config import RestoreXConfig
from .errors import CheckpointError
from .model import RestoreX

SUBMODULES = ("clip", "pem_reference", "pem_input", "ffedm", "restormer", "tone", "gate")
_HEADER_KEYS = {"format", "format_version", "config", "clip_stored"}


def sha256_of(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_checkpoint(path: str | os.PathLike[str], *, model: RestoreX | None = None,
                        sha256: bool = True) -> dict[str, Any]:
    """A RestoreX checkpoint's file, format, config, parameter counts per submodule, metadata and sha256.

    Args:
        model: the model already loaded from ``path``, if there is one: its parameters are counted instead of
            building the config's model on the CPU (under a second for the paper's model).
        sha256: hash the file (seconds for a large file); False leaves ``"sha256"`` None.
    """
    path = Path(path)
    header = read_header(path)
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a RestoreX checkpoint (its header has no format={FORMAT}); "
                              "RestoreX checkpoints are written by restorex_core.save_checkpoint")
    try:
        config = RestoreXConfig.from_dict(json.loads(header["config"]))
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path} has a missing or invalid config in its header ({e}); export it again") from e
    # torch.device("meta") would be free, but DDPMScheduler reads its timestep tensors with int(), which meta
    # tensors refuse.
    model = model if model is not None else RestoreX(config)
    with safe_open(str(path), framework="pt") as f:
        stored = {k: f.get_slice(k).get_shape() for k in f.keys()}
    counts: dict[str, dict[str, int]] = {}
    for name in SUBMODULES:
        values = [torch.Size(s).numel() for k, s in stored.items() if k.startswith(f"{name}.")]
        module = getattr(model, name)  # tone, gate: None for the paper's model (no tone path, no gate)
        params = 0 if module is None else sum(p.numel() for p in module.parameters())
        counts[name] = {"parameters": params, "stored_values": sum(values), "stored_tensors": len(values)}
    counts["total"] = {key: sum(c[key] for c in counts.values()) for key in counts["clip"]}
    return {
        "file": str(path.resolve()),
        "size_bytes": path.stat().st_size,
        "sha256": sha256_of(path) if sha256 else None,
        "format": header["format"],
        "format_version": int(header.get("format_version", "0")),
        "clip_trunk": "stored" if counts["clip"]["stored_tensors"] else "external",
        "parameters": counts,
        "config": config.to_dict(),
        "metadata": {k: v for k, v in sorted(header.items()) if k not in _HEADER_KEYS},
    }


def summary(info: dict[str, Any]) -> str:
    """One line: file name, parameters, CLIP trunk, format version."""
    total = info["parameters"]["total"]["parameters"]
    return (f"{Path(info['file']).name}: {total / 1e6:.1f} M parameters, CLIP trunk {info['clip_trunk']}, "
            f"{info['format']} version {info['format_version']}")
