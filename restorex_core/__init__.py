"""RestoreX core: the CLIP-RestoreX exposure-correction method in pure PyTorch (no ComfyUI).

The public names load on first use (PEP 562), so that ``restorex_core.errors`` and ``restorex_core.files``
import without torch: the command line checks its arguments before paying for torch's import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import CheckpointError, ClipWeightsError, ImageInputError, MissingWeightsError, RestoreXError

if TYPE_CHECKING:
    from .arch.clip_vit import ClipVision, ClipVisionConfig
    from .arch.pem import PEMConfig
    from .arch.prior_diffusion import FFEDMConfig
    from .arch.restormer import RestormerConfig
    from .checkpoint import load_checkpoint, read_header, save_checkpoint
    from .config import RestoreXConfig
    from .loading import load_clip
    from .model import RestoreX
    from .priors import Priors
    from .scheduler import DDPMScheduler
    from .sequence import correct_sequence

__version__ = "0.1.0"

_LAZY = {
    "ClipVision": ".arch.clip_vit", "ClipVisionConfig": ".arch.clip_vit", "PEMConfig": ".arch.pem",
    "FFEDMConfig": ".arch.prior_diffusion", "RestormerConfig": ".arch.restormer", "load_checkpoint": ".checkpoint",
    "read_header": ".checkpoint", "save_checkpoint": ".checkpoint", "RestoreXConfig": ".config",
    "load_clip": ".loading", "RestoreX": ".model", "Priors": ".priors", "DDPMScheduler": ".scheduler",
    "correct_sequence": ".sequence",
}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "CheckpointError", "ClipVision", "ClipVisionConfig", "ClipWeightsError", "DDPMScheduler", "FFEDMConfig",
    "ImageInputError", "MissingWeightsError", "PEMConfig", "Priors", "RestoreX", "RestoreXConfig",
    "RestoreXError", "RestormerConfig", "correct_sequence", "load_checkpoint", "load_clip", "read_header",
    "save_checkpoint",
]
