"""The CLIP weight layouts RestoreX accepts, and the key conversions between them.

open_clip's visual keys are the canonical layout (:class:`ClipVision` loads them); a Hugging Face
``CLIPModel`` / ``CLIPVisionModel`` file and an open_clip full CLIP are converted to it.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from .errors import ClipWeightsError

ACCEPTED_CLIP = (  # the one statement of which CLIP files load: errors, nodes and the trainer all quote it
    "open_clip 'ViT-B-32-quickgelu' openai weights (open_clip_model.safetensors from the Hugging Face repo "
    "timm/vit_base_patch32_clip_224.openai, or open_clip_pytorch_model.bin; full CLIP or visual-only), OpenAI's "
    "TorchScript ViT-B-32.pt, or a Hugging Face CLIPModel / CLIPVisionModel model.safetensors "
    "(openai/clip-vit-base-patch32)"
)

_HF_TOP = {  # open_clip visual name -> HF name under vision_model.
    "conv1.weight": "embeddings.patch_embedding.weight",
    "class_embedding": "embeddings.class_embedding",
    "positional_embedding": "embeddings.position_embedding.weight",
    "ln_pre.weight": "pre_layrnorm.weight",  # sic: HF's own spelling
    "ln_pre.bias": "pre_layrnorm.bias",
    "ln_post.weight": "post_layernorm.weight",
    "ln_post.bias": "post_layernorm.bias",
}
_HF_BLOCK = (  # open_clip resblock sub-prefix -> HF encoder-layer sub-prefix
    ("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."), ("attn.out_proj.", "self_attn.out_proj."),
    ("mlp.c_fc.", "mlp.fc1."), ("mlp.c_proj.", "mlp.fc2."),
)
_OC_BLOCK_KEY = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)")
_HF_BLOCK_KEY = re.compile(r"encoder\.layers\.(\d+)\.(.+)")


def _rename(name: str, pairs: tuple[tuple[str, str], ...]) -> str:
    return next((new + name[len(old):] for old, new in pairs if name.startswith(old)), name)


def hf_to_open_clip(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """HF ``CLIPModel`` / ``CLIPVisionModel`` keys -> open_clip visual keys (no ``visual.`` prefix).

    q/k/v projections are concatenated into ``in_proj_*`` (open_clip uses ``nn.MultiheadAttention``);
    ``visual_projection.weight`` is a Linear weight (out, in), open_clip's ``proj`` is a matrix (in, out).
    ``position_ids`` (a buffer in older files) and ``text_model.*`` are dropped.
    """
    top = {hf: oc for oc, hf in _HF_TOP.items()}
    block = tuple((hf, oc) for oc, hf in _HF_BLOCK)
    out: dict[str, Tensor] = {}
    qkv: dict[str, dict[str, Tensor]] = {}
    for key, value in sd.items():
        if not key.startswith("vision_model.") or key.endswith("position_ids"):
            continue
        name = key[len("vision_model."):]
        if m := _HF_BLOCK_KEY.fullmatch(name):
            if a := re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", m[2]):
                qkv.setdefault(f"transformer.resblocks.{m[1]}.attn.in_proj_{a[2]}", {})[a[1]] = value
                continue
            name = f"transformer.resblocks.{m[1]}.{_rename(m[2], block)}"
        out[top.get(name, name)] = value  # unknown names pass through; the strict load reports them
    for name, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ClipWeightsError(f"Hugging Face CLIP file lacks the {sorted({'q', 'k', 'v'} - set(parts))} "
                                   f"projection for {name}; the file is incomplete, re-download it.")
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    if "visual_projection.weight" in sd:
        out["proj"] = sd["visual_projection.weight"].t().contiguous()
    return out


def open_clip_to_hf(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of :func:`hf_to_open_clip`: open_clip visual keys -> HF ``vision_model.*`` (+ ``visual_projection``)."""
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if key == "proj":
            out["visual_projection.weight"] = value.t().contiguous()
        elif (m := _OC_BLOCK_KEY.fullmatch(key)) and (a := re.fullmatch(r"attn\.in_proj_(weight|bias)", m[2])):
            for part, chunk in zip("qkv", value.chunk(3, dim=0), strict=True):
                out[f"vision_model.encoder.layers.{m[1]}.self_attn.{part}_proj.{a[1]}"] = chunk.contiguous()
        elif m:
            out[f"vision_model.encoder.layers.{m[1]}.{_rename(m[2], _HF_BLOCK)}"] = value
        else:
            out[f"vision_model.{_HF_TOP.get(key, key)}"] = value
    return out


def to_open_clip(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], str]:
    """Any accepted key layout -> (open_clip visual keys without prefix, format name)."""
    if any(k.startswith("vision_model.") for k in sd):
        kind = "Hugging Face CLIPModel" if "visual_projection.weight" in sd else "Hugging Face CLIPVisionModel"
        return hf_to_open_clip(sd), kind
    if "visual.conv1.weight" in sd:  # open_clip / OpenAI full CLIP (text tower ignored)
        return {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}, "open_clip full CLIP"
    return dict(sd), "open_clip visual-only"
