"""LoadRestoreXModel: a checkpoint from models/restorex under ComfyUI's model management.

No cache of its own: the loaded model lives in ComfyUI's node output cache, like a checkpoint or a VAE. It is
loaded once and shared by every workflow that asks for the same file with the same options, and it is released
when ComfyUI frees its cache (POST /free with free_memory: the "Free model and node cache" button) or when the
loader's inputs change. "Unload models" alone moves it off the GPU, as for any ComfyUI model.
tests/test_comfy_integration.py measures this in a real ComfyUI (process RSS before and after POST /free).
"""

from __future__ import annotations

import logging
import os

import torch

from restorex_core import MissingWeightsError, load_checkpoint, read_header
from restorex_core.describe import describe_checkpoint, summary
from restorex_core.precision import resolve_dtype

from . import paths
from .runtime import ManagedRestoreX, comfy_mm

logger = logging.getLogger(__name__)
CATEGORY = "image/restoration/RestoreX"


def _devices(device: str) -> tuple[torch.device, torch.device]:
    """(load device, offload device) for the device choice."""
    mm = comfy_mm()
    if device == "cpu":
        return torch.device("cpu"), torch.device("cpu")
    load = mm.get_torch_device()
    if device == "gpu" and load.type == "cpu":
        raise RuntimeError("device 'gpu' was chosen but ComfyUI runs on the CPU (started with --cpu, or no GPU "
                           "found): choose device 'auto' or 'cpu'")
    return load, mm.unet_offload_device()


def load_managed(model_name: str, clip_name: str, device: str, dtype: str) -> ManagedRestoreX:
    """Resolve the files and load the model under ComfyUI's model management (see the node below)."""
    path = paths.find_model(model_name)
    clip_path = None if clip_name == paths.FROM_CHECKPOINT else paths.find_clip(clip_name)
    load_device, offload_device = _devices(device)
    torch_dtype = resolve_dtype(dtype, load_device)
    if clip_path is None and read_header(path).get("clip_stored") == "false":
        raise MissingWeightsError(paths.clip_needed_message(model_name))
    logger.info("RestoreX: loading %s (%s, %s)", path, load_device, torch_dtype)
    model = load_checkpoint(path, clip=clip_path, device=offload_device, dtype=torch_dtype)
    logger.info("RestoreX: %s", summary(describe_checkpoint(path, model=model, sha256=False)))
    return ManagedRestoreX.create(model, load_device=load_device, offload_device=offload_device,
                                  source=os.path.basename(path))


class LoadRestoreXModel:
    """Loads a RestoreX checkpoint. The model then lives under ComfyUI's model management: it goes to the GPU
    when a RestoreX node runs and is offloaded when another model needs the memory."""

    @classmethod
    def INPUT_TYPES(cls):  # ComfyUI's name
        return {"required": {
            "model_name": (paths.model_files(), {"tooltip": "RestoreX checkpoint in models/restorex/ (or this "
                                                            "pack's weights/ folder)."}),
            "clip_name": (paths.clip_files(), {"tooltip": f"CLIP ViT-B/32 image encoder from models/clip_vision/. "
                                                          f"'{paths.FROM_CHECKPOINT}': the encoder stored in the "
                                                          "checkpoint (the default weights store theirs)."}),
            "device": (["auto", "cpu", "gpu"], {"default": "auto", "tooltip": "auto: ComfyUI's device (the GPU "
                                                "unless --cpu). cpu: keep it on the CPU."}),
            "dtype": (["auto", "fp32", "bf16", "fp16"], {"default": "auto", "tooltip": "Precision. auto = bf16 "
                                                         "on a CPU with native bf16 (2x faster, within 2/255 of fp32), "
                                                         "else fp32. fp16/bf16 halve the memory."}),
        }}

    RETURN_TYPES = ("RESTOREX_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The loaded RestoreX model (CLIP priors, FFEDM and Restormer).",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = " ".join(__doc__.split())

    @classmethod
    def VALIDATE_INPUTS(cls, model_name):  # replaces the combo check: says where it looked
        return paths.validate_model(model_name)

    @classmethod
    def IS_CHANGED(cls, model_name, clip_name, device, dtype):  # a replaced file reloads
        return paths.fingerprint(model_name, clip_name)

    def load(self, model_name: str, clip_name: str, device: str, dtype: str) -> tuple[ManagedRestoreX]:
        return (load_managed(model_name, clip_name, device, dtype),)
