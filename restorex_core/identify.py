"""What a weight file holds: the one detector behind every "this file is ..." message."""

from __future__ import annotations

import re

from torch import Tensor

from .arch.clip_vit import config_from_state_dict, detect
from .arch.restormer import detect_plain_restormer
from .clip_formats import to_open_clip

KNOWN_VITS = {(768, 12, 32): "ViT-B/32", (768, 12, 16): "ViT-B/16", (1024, 24, 14): "ViT-L/14",
              (1280, 32, 14): "ViT-H/14"}


def describe_state_dict(sd: dict[str, Tensor], meta: dict[str, str] | None = None) -> str:
    """A short human description of what a state dict holds, for error messages."""
    return identify_state_dict(sd, meta)[1]


def identify_state_dict(sd: dict[str, Tensor], meta: dict[str, str] | None = None) -> tuple[str, str]:
    """(kind, description) of a state dict: the one detector behind every "this file is ..." message.

    kind is "restorex", "restormer", "clip" (a ViT image encoder, any accepted layout), "clip-resnet",
    "timm-vit", "clip-text" or "unknown".
    """
    keys = set(sd)
    restorex_keys = any(k.startswith(("pem_input.", "ffedm.", "restormer.")) for k in keys)
    if (meta or {}).get("format") == "restorex" or restorex_keys:
        return "restorex", ("a RestoreX checkpoint (load it with load_checkpoint / the RestoreX loader node, not "
                            "as CLIP)")
    if detect_plain_restormer(sd):
        return "restormer", "a plain Restormer checkpoint (no CLIP priors, no FFEDM)"
    if any(re.match(r"(visual\.)?(layer1\.0\.|attnpool\.)", k) for k in keys):
        return "clip-resnet", "a ResNet CLIP image encoder (RN50-style ModifiedResNet)"
    if any(k.startswith("blocks.0.attn.qkv.") for k in keys):
        return "timm-vit", "a timm ViT state dict (timm key names are not supported)"
    visual, _ = to_open_clip(sd)
    if detect(visual):
        c = config_from_state_dict(visual)
        name = KNOWN_VITS.get((c.width, c.layers, c.patch_size), "an unlisted ViT")
        return "clip", (f"a CLIP ViT image encoder: {name} (width {c.width}, {c.layers} blocks, patch "
                        f"{c.patch_size}, image {c.image_size})")
    if any(k.startswith(("token_embedding.", "text_model.")) for k in keys):
        return "clip-text", "a CLIP text encoder without an image encoder"
    return "unknown", f"an unrecognised state dict ({len(keys)} tensors; first keys: {', '.join(sorted(keys)[:4])})"
