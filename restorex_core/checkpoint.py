"""RestoreX checkpoints: safetensors with the config and a format version in the header.

The frozen CLIP trunk of the paper's config is not stored (it comes from its own file, see
:func:`restorex_core.loading.load_clip`); a config whose encoder is trained stores it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from .arch.clip_vit import ClipVision
from .clip_formats import ACCEPTED_CLIP
from .config import RestoreXConfig
from .errors import CheckpointError, MissingWeightsError
from .files import PICKLE_SUFFIXES, atomic_path, pickle_refusal, safetensors_metadata
from .identify import identify_state_dict
from .model import RestoreX
from .weight_files import read_state_dict

logger = logging.getLogger(__name__)

FORMAT = "restorex"
FORMAT_VERSION = 1
CLIP_HELP = ("Give the CLIP ViT-B/32 image encoder (OpenAI weights) with clip=PATH (CLI: --clip PATH; ComfyUI: a "
             f"file in models/clip_vision/). Accepted: {ACCEPTED_CLIP}.")


def _stored_keys(model: RestoreX) -> dict[str, Tensor]:
    keep_clip = model.config.clip.trainable
    return {k: v for k, v in model.state_dict().items() if keep_clip or not k.startswith("clip.")}


def save_checkpoint(
    model: RestoreX,
    path: str | os.PathLike[str],
    *,
    metadata: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``model`` atomically to ``path`` (.safetensors). ``dtype`` (e.g. fp16) shrinks the file."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"RestoreX checkpoints are .safetensors files, not {path.name!r}")
    tensors = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in _stored_keys(model).items()
    }
    header = {str(k): str(v) for k, v in (metadata or {}).items()}
    header.update(format=FORMAT, format_version=str(FORMAT_VERSION),
                  config=json.dumps(model.config.to_dict()), clip_stored=str(model.config.clip.trainable).lower())
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=header)
    return path


def read_header(path: str | os.PathLike[str]) -> dict[str, str]:
    """The safetensors header metadata of a checkpoint, without reading its tensors."""
    return safetensors_metadata(_existing(path))


def _existing(path: str | os.PathLike[str]) -> Path:
    path = Path(path).expanduser()
    if path.is_dir():
        raise MissingWeightsError(f"checkpoint {path} is a folder; give the .safetensors checkpoint file in it")
    if not path.is_file():
        raise MissingWeightsError(f"checkpoint {path} not found: check the path, or make one with "
                                  "`python -m training.train` (see weights/README.md)")
    return path


def _read(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors and header of a checkpoint, through the one safe reader (a pickle-based file is read with
    ``weights_only`` only to say what it holds: RestoreX checkpoints are .safetensors)."""
    try:
        return read_state_dict(path)
    except CheckpointError as e:
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise CheckpointError(pickle_refusal(path)) from e
        raise


_ADVICE = {
    "restormer": "RestoreX needs a checkpoint made by its own trainer (`python -m training.train`), such as "
                 "weights/restorex-default.safetensors",
    "clip": "a CLIP encoder file goes in as the CLIP file (clip=..., --clip, or models/clip_vision/ in ComfyUI), "
            "with a RestoreX checkpoint as the weights",
    "restorex": "its RestoreX header (format and config) is missing: write it with restorex_core.save_checkpoint",
}


def _foreign_error(path: Path, sd: dict[str, Tensor], meta: dict[str, str]) -> CheckpointError:
    kind, what = identify_state_dict(sd, meta)
    what = "RestoreX weights without the RestoreX header" if kind == "restorex" else what
    advice = _ADVICE.get(kind, "RestoreX checkpoints are .safetensors files written by "
                               "restorex_core.save_checkpoint or the training package")
    return CheckpointError(f"{path} is not a RestoreX checkpoint: it holds {what}; {advice}")


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    clip: ClipVision | str | os.PathLike[str] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> RestoreX:
    """Load a RestoreX checkpoint into a ready model in eval mode.

    Args:
        clip: the frozen CLIP encoder for checkpoints that do not store it: a ClipVision, or a file/tag for
            :func:`restorex_core.load_clip`. Ignored (with a log line) when the checkpoint stores its encoder.
    """
    if device is not None:  # a clear error naming this machine's devices, before any reading
        from .precision import resolve_device

        device = resolve_device(device)
    path = _existing(path)
    sd, meta = _read(path)
    if meta.get("format") != FORMAT:
        raise _foreign_error(path, sd, meta)
    version = int(meta.get("format_version", "0"))
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {version}; this RestoreX reads up to "
                              f"{FORMAT_VERSION}: upgrade RestoreX")
    try:
        config = RestoreXConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path} has a missing or invalid config in its header ({e}); export it again") from e

    encoder = None
    if config.clip.trainable:
        if clip is not None:
            logger.info("%s stores its own image encoder; the CLIP given is not used", path.name)
    elif clip is None:
        raise MissingWeightsError(f"{path.name} uses the frozen CLIP ViT-B/32 encoder, which is not stored in it. "
                                  + CLIP_HELP)
    elif isinstance(clip, ClipVision):
        encoder = clip
    else:
        from .loading import load_clip

        encoder = load_clip(clip, config=config.clip)

    model = RestoreX(config, clip=encoder)
    expected = {k: v.shape for k, v in _stored_keys(model).items()}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = sorted(k for k in set(expected) & set(sd) if sd[k].shape != expected[k])
    if missing or unexpected or wrong:
        details = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise CheckpointError(f"{path}: the config in its header does not match its weights ({details}); "
                              "the file was edited or written by a different model: export it again")
    model.load_state_dict(sd, strict=False)
    model.eval()
    return model.to(device=device, dtype=dtype)
