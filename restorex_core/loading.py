"""CLIP ViT-B/32 loading (docs/method.md §2.4): any accepted file or open_clip tag -> :class:`ClipVision`.

``load_clip`` accepts an open_clip tag, an open_clip checkpoint (full CLIP or visual-only), OpenAI's
TorchScript archive, or a Hugging Face ``CLIPModel`` / ``CLIPVisionModel`` safetensors file, converts it to
open_clip's visual keys and strict-loads it. The jobs around it have their own modules:
:mod:`.weight_files` (safe reading), :mod:`.clip_formats` (the accepted layouts and key conversion),
:mod:`.identify` (what a file holds, for error messages) and :mod:`.clip_hub` (tags, caches, explicit download).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from .arch.clip_vit import ClipVision, ClipVisionConfig, config_from_state_dict, detect
from .clip_formats import ACCEPTED_CLIP, to_open_clip
from .clip_hub import resolve_tag
from .errors import ClipWeightsError
from .files import atomic_path
from .identify import KNOWN_VITS, describe_state_dict
from .weight_files import SUFFIXES, read_weights

logger = logging.getLogger(__name__)


def _shape_mismatches(found: ClipVisionConfig, wanted: ClipVisionConfig, has_proj: bool) -> list[str]:
    names = ["image_size", "patch_size", "width", "layers", "mlp_ratio"] + (["output_dim"] if has_proj else [])
    return [f"{n}={getattr(found, n)} (expected {getattr(wanted, n)})"
            for n in names if getattr(found, n) != getattr(wanted, n)]


def clip_from_state_dict(sd: dict[str, Tensor], *, config: ClipVisionConfig | None = None,
                         meta: dict[str, str] | None = None, origin: str = "state dict",
                         quick_gelu: bool | None = None) -> ClipVision:
    """Build a frozen-or-trainable :class:`ClipVision` from any accepted CLIP state dict (strict load)."""
    visual, kind = to_open_clip(sd)
    want = config or ClipVisionConfig()
    expected = (f"a CLIP {KNOWN_VITS.get((want.width, want.layers, want.patch_size), 'ViT')} image encoder "
                f"(width {want.width}, {want.layers} blocks, patch {want.patch_size})")
    if not detect(visual):
        raise ClipWeightsError(f"{origin} is {describe_state_dict(sd, meta)}, expected {expected}. "
                               f"Accepted files: {ACCEPTED_CLIP}.")
    found = config_from_state_dict(visual)
    assumed = config is None and quick_gelu is None  # neither the file nor the caller says which activation
    if config is None:
        config = found if quick_gelu is None else replace(found, quick_gelu=quick_gelu)
    else:
        if bad := _shape_mismatches(found, config, "proj" in visual):
            raise ClipWeightsError(f"{origin} is {describe_state_dict(sd, meta)} with {', '.join(bad)}; expected "
                                   f"{expected}. Accepted files: {ACCEPTED_CLIP}.")
        if quick_gelu is not None and quick_gelu != config.quick_gelu:
            logger.warning("%s was trained with %s but the config asks for %s; features will differ",
                           origin, *(("QuickGELU", "GELU") if quick_gelu else ("GELU", "QuickGELU")))
    clip = ClipVision(config)
    if "proj" not in visual:  # CLIPVisionModel has no projection head; RestoreX never uses it (taps are pre-head)
        clip.visual.proj = None
    try:
        clip.visual.load_state_dict({k: v.float() for k, v in visual.items()}, strict=True)
    except RuntimeError as e:
        raise ClipWeightsError(f"{origin} ({kind}) does not match a {config.layers}-block ViT: {str(e)[:600]}. "
                               f"Accepted files: {ACCEPTED_CLIP}.") from e
    logger.info("Loaded CLIP image encoder from %s: format %s, %s, %s%s", origin, kind,
                KNOWN_VITS.get((config.width, config.layers, config.patch_size), f"width {config.width}"),
                "QuickGELU" if config.quick_gelu else "GELU", "" if not assumed else
                " (assumed: the file does not record it; pass config=ClipVisionConfig(quick_gelu=...) to override)")
    return clip


def load_clip(source: str | os.PathLike[str], *, allow_download: bool = False,
              config: ClipVisionConfig | None = None) -> ClipVision:
    """Load the CLIP ViT image encoder from a file or an open_clip ViT-B-32 pretrained tag.

    Args:
        source: a file (open_clip full/visual-only, OpenAI TorchScript ``.pt``, HF ``CLIPModel`` /
            ``CLIPVisionModel`` safetensors) or a tag such as ``"openai"`` / ``"ViT-B-32/laion2b_s34b_b79k"``.
            Tags are looked up in the local caches only, unless ``allow_download``.
        config: the expected trunk (its taps, activation and freezing are used); ``None`` infers it from the file.
    Raises:
        MissingWeightsError: the file or the tag's cached weights are missing (message says what to fetch and where).
        ClipWeightsError: the file is not a matching CLIP ViT.
        CheckpointError: the file is truncated, corrupt or of an unsupported type.
    """
    quick_gelu = None
    path = Path(source)
    if not (isinstance(source, os.PathLike) or path.suffix.lower() in SUFFIXES or path.is_file()):
        path, quick_gelu = resolve_tag(str(source), allow_download=allow_download)
    sd, meta, container = read_weights(path)
    if container == "torchscript":
        logger.info("%s is a TorchScript archive (OpenAI CLIP); weights converted to fp32", path)
    if quick_gelu is None and any(k.startswith("vision_model.") for k in sd):
        quick_gelu = _hf_quick_gelu(path)
    return clip_from_state_dict(sd, config=config, meta=meta, origin=str(path), quick_gelu=quick_gelu)


def _hf_quick_gelu(path: Path) -> bool | None:
    """HF stores the activation in config.json next to the weights; None when there is none."""
    cfg_file = path.with_name("config.json")
    if not cfg_file.is_file():
        return None
    cfg = json.loads(cfg_file.read_text())
    act = cfg.get("vision_config", cfg).get("hidden_act")
    return None if act is None else act == "quick_gelu"



def convert_openai_to_safetensors(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """One-time conversion of a CLIP file (e.g. OpenAI's TorchScript ``ViT-B-32.pt``) into a visual-only
    fp32 ``.safetensors`` with ``visual.*`` keys (ClipVision's own state-dict layout). Written atomically."""
    sd, meta, container = read_weights(Path(src))
    visual, kind = to_open_clip(sd)
    if not detect(visual):
        raise ClipWeightsError(f"{src} is {describe_state_dict(sd, meta)}; expected a CLIP ViT image encoder. "
                               f"Accepted files: {ACCEPTED_CLIP}.")
    out = {f"visual.{k}": v.detach().to(torch.float32).contiguous().clone() for k, v in visual.items()}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        save_file(out, tmp, metadata={"format": "open_clip-visual", "source": Path(src).name,
                                      "source_format": f"{container}/{kind}"})
    logger.info("Converted %s (%s) into %s (%d tensors, fp32)", src, kind, dst, len(out))
    return dst



__all__ = ["ACCEPTED_CLIP", "load_clip", "clip_from_state_dict", "convert_openai_to_safetensors"]
