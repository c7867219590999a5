"""Show images on a node, as ComfyUI's PreviewImage does: PNGs in ComfyUI's temp folder, listed in the node's
``{"ui": {"images": [...]}}`` result (the frontend draws them on the node; the temp folder is emptied at start-up).
"""

from __future__ import annotations

import os
import random
import string

import numpy as np
from PIL import Image
from torch import Tensor


def temp_previews(images: Tensor, prefix: str) -> list[dict[str, str]]:
    """Save a ComfyUI IMAGE batch (B, H, W, C) float in [0, 1] as temp PNGs; return the UI's image entries."""
    import folder_paths

    _, h, w, _ = images.shape
    prefix += "_" + "".join(random.choice(string.ascii_lowercase) for _ in range(5))
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, folder_paths.get_temp_directory(),
                                                                           w, h)
    entries = []
    for i, image in enumerate(images):
        filename = f"{name}_{counter + i:05}_.png"
        pixels = np.clip(255.0 * image.float().cpu().numpy(), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, filename), compress_level=1)  # fast: a preview
        entries.append({"filename": filename, "subfolder": subfolder, "type": "temp"})
    return entries
