"""ComfyUI nodes of RestoreX (classic node API). Node classes are thin: schema, IMAGE layout, one core call.

ComfyUI's modules are imported lazily inside the nodes, so this package imports without ComfyUI.
"""

from __future__ import annotations

import sys

from .aliases import SEARCH_ALIASES
from .correct import ExposureCorrect
from .loader import LoadRestoreXModel
from .method_nodes import ExtractCLIPPriors, FFEDMEnhance, RestormerInject
from .priors_tools import BlendPriors, VisualizePriors
from .video import ExposureCorrectVideo

NODE_CLASS_MAPPINGS = {
    "LoadRestoreXModel": LoadRestoreXModel,
    "RestoreXExtractCLIPPriors": ExtractCLIPPriors,
    "RestoreXFFEDMEnhance": FFEDMEnhance,
    "RestoreXRestormerInject": RestormerInject,
    "RestoreXExposureCorrect": ExposureCorrect,
    "RestoreXExposureCorrectVideo": ExposureCorrectVideo,
    "RestoreXBlendPriors": BlendPriors,
    "RestoreXVisualizePriors": VisualizePriors,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadRestoreXModel": "Load RestoreX Model",
    "RestoreXExtractCLIPPriors": "RestoreX Extract CLIP Priors",
    "RestoreXFFEDMEnhance": "RestoreX FFEDM Enhance",
    "RestoreXRestormerInject": "RestoreX Restormer Inject",
    "RestoreXExposureCorrect": "RestoreX Exposure Correct",
    "RestoreXExposureCorrectVideo": "RestoreX Exposure Correct (Video)",
    "RestoreXBlendPriors": "RestoreX Blend Priors",
    "RestoreXVisualizePriors": "RestoreX Visualize Priors",
}

for _node_id, _aliases in SEARCH_ALIASES.items():  # the classic API's SEARCH_ALIASES class attribute
    NODE_CLASS_MAPPINGS[_node_id].SEARCH_ALIASES = _aliases

if "folder_paths" in sys.modules:  # inside ComfyUI: list models/restorex in GET /models before any node runs
    from . import paths

    paths.register()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
