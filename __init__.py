"""RestoreX for ComfyUI: CLIP-RestoreX exposure correction as composable nodes.

ComfyUI imports this folder as a package (custom_nodes/<folder>/__init__.py) and reads NODE_CLASS_MAPPINGS.
The library, restorex_core, sits next to this file; the folder goes on sys.path (at the end, so it shadows
nothing) so that ``import restorex_core`` works whatever the folder is called.
"""

import os
import sys

_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
if _PACK_DIR not in sys.path:
    sys.path.append(_PACK_DIR)

if __package__:  # ComfyUI always imports the pack folder as a package
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    # Imported as a plain file: pytest does this with the repository root when the clone's folder name is not a
    # Python identifier (e.g. "comfyui-restorex"). Nothing registers nodes then; the tests import nodes/ directly.
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

# Served by ComfyUI under /extensions/<folder>/: the node help pages (web/docs/<NodeId>.md) and the icon.
# No .js in it: the pack adds no frontend code.
WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
