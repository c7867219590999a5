"""SEARCH_ALIASES: the words people type in ComfyUI's node search that should find each node.

Set on the node classes by nodes/__init__.py (classic node API attribute). ComfyUI sends it to the frontend in
/object_info as ``search_aliases`` from ComfyUI PR #12010 (January 2026) on; ComfyUI 0.3.64 ignores it, and its
search still finds the nodes by display name, category and description.
"""

from __future__ import annotations

EXPOSURE = ["exposure", "exposure correction", "fix exposure", "brighten", "darken", "low light", "underexposed",
            "overexposed", "too dark", "too bright"]

SEARCH_ALIASES: dict[str, list[str]] = {
    "LoadRestoreXModel": ["restorex", "clip-restorex", "load exposure model", "exposure model", "exposure"],
    "RestoreXExtractCLIPPriors": ["clip priors", "exposure priors", "extract priors", "prior extraction", "pem",
                                  "exposure"],
    "RestoreXFFEDMEnhance": ["ffedm", "prior diffusion", "enhance priors", "fourier diffusion", "exposure"],
    "RestoreXRestormerInject": ["restormer", "restore", "prior injection", *EXPOSURE],
    "RestoreXExposureCorrect": ["auto exposure", "relight", "dark photo", "restore", "hdr look", *EXPOSURE],
    "RestoreXExposureCorrectVideo": ["video exposure", "deflicker", "flicker", "video", "low light video",
                                     "underexposed video", "overexposed video", *EXPOSURE],
    "RestoreXBlendPriors": ["mix priors", "blend", "reference exposure", "match exposure", "exposure reference"],
    "RestoreXVisualizePriors": ["priors chart", "plot priors", "show priors", "debug priors", "fourier", "preview"],
}
