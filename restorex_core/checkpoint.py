"""RestoreX checkpoints: safetensors with the config and a format version in the header.

The frozen CLIP trunk of the paper's config is not stored (it comes from its own file, see
:func:`restorex_core.loading.load_clip`); a config whose encoder is trained stores it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from .arch.clip_vit import ClipVision
from .arch.clip_vit import detect as detect_clip
from .arch.restormer import detect_plain_restormer
from .config import RestoreXConfig
from .errors import CheckpointError, MissingWeightsError
from .model import RestoreX

logger = logging.getLogger(__name__)

FORMAT = "restorex"
FORMAT_VERSION = 1
CLIP_HELP = (
    "Give the CLIP ViT-B/32 image encoder (OpenAI weights) with clip=PATH (CLI: --clip PATH; ComfyUI: a file in "
    "models/clip_vision/). Accepted: open_clip 'ViT-B-32-quickgelu' openai weights (open_clip_model.safetensors "
    "from the hub repo timm/vit_base_patch32_clip_224.openai), OpenAI's ViT-B-32.pt, or Hugging Face "
    "openai/clip-vit-base-patch32 model.safetensors."
)


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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_header(path: str | os.PathLike[str]) -> dict[str, str]:
    """The safetensors header metadata of a checkpoint, without reading its tensors."""
    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise CheckpointError(f"{path} is truncated or corrupt ({e}); re-download it or export it again") from e


def _existing(path: str | os.PathLike[str]) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingWeightsError(f"checkpoint {path} not found: check the path, or make one with "
                                  "`python -m training.train` (see weights/README.md)")
    return path


def _read(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        except Exception as e:
            raise CheckpointError(f"{path} is truncated or corrupt ({e}); re-download it or export it again") from e
    from .loading import read_state_dict  # generic safe reader: .pt/.pth/.bin/.ckpt with weights_only=True

    return read_state_dict(path)


def _foreign_error(path: Path, sd: dict[str, Tensor]) -> CheckpointError:
    stripped = {k.removeprefix("visual."): v for k, v in sd.items()}
    if detect_plain_restormer(sd):
        what = ("a plain Restormer checkpoint (no CLIP priors, no FFEDM). RestoreX needs a checkpoint made by "
                "its own trainer (`python -m training.train`), such as weights/restorex-default.safetensors")
    elif detect_clip(stripped):
        what = ("a CLIP encoder file, not a RestoreX model: pass it as the CLIP file (clip=..., --clip, or "
                "models/clip_vision/ in ComfyUI) and give a RestoreX checkpoint as the weights")
    else:
        sample = ", ".join(sorted(sd)[:4])
        what = (f"not a RestoreX checkpoint (no RestoreX header; first keys: {sample}). RestoreX checkpoints are "
                "written by restorex_core.save_checkpoint or the training package")
    return CheckpointError(f"{path} is {what}")


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
    path = _existing(path)
    sd, meta = _read(path)
    if meta.get("format") != FORMAT:
        raise _foreign_error(path, sd)
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
