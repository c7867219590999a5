"""RestoreX core: the CLIP-RestoreX exposure-correction method in pure PyTorch (no ComfyUI)."""

from .arch.clip_vit import ClipVision, ClipVisionConfig
from .arch.pem import PEMConfig
from .arch.prior_diffusion import FFEDMConfig
from .arch.restormer import RestormerConfig
from .checkpoint import load_checkpoint, read_header, save_checkpoint
from .config import RestoreXConfig
from .errors import CheckpointError, ClipWeightsError, ImageInputError, MissingWeightsError, RestoreXError
from .model import RestoreX
from .priors import Priors
from .scheduler import DDPMScheduler

__version__ = "0.1.0"


def load_clip(source, *, allow_download=False, config=None):  # noqa: ANN001, ANN201 - thin lazy re-export
    """See :func:`restorex_core.loading.load_clip`."""
    from .loading import load_clip as _load_clip

    return _load_clip(source, allow_download=allow_download, config=config)


__all__ = [
    "CheckpointError", "ClipVision", "ClipVisionConfig", "ClipWeightsError", "DDPMScheduler", "FFEDMConfig",
    "ImageInputError", "MissingWeightsError", "PEMConfig", "Priors", "RestoreX", "RestoreXConfig",
    "RestoreXError", "RestormerConfig", "load_checkpoint", "load_clip", "read_header", "save_checkpoint",
]
