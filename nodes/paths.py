"""Where RestoreX weight files live in a ComfyUI install, and errors that say where they were looked for.

* RestoreX checkpoints: ``models/restorex/`` (registered with ``folder_paths``, keeping any ``restorex:``
  paths that extra_model_paths.yaml added), then this pack's own ``weights/`` folder.
* CLIP ViT-B/32 files (only for checkpoints that do not store their CLIP): ``models/clip_vision/``, then the
  RestoreX folders.
"""

from __future__ import annotations

import os

from restorex_core.errors import MissingWeightsError
from restorex_core.loading import ACCEPTED_CLIP

FOLDER = "restorex"
CLIP_FOLDER = "clip_vision"
FROM_CHECKPOINT = "(from checkpoint)"
DEFAULT_WEIGHTS = "restorex-default.safetensors"
PACK_WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")
WEIGHTS_SOURCE = (f"'{DEFAULT_WEIGHTS}' ships in this pack's weights/ folder (see the README's 'Weights' "
                  "section); other checkpoints come from training/train.py")
CLIP_SOURCE = f"the OpenAI CLIP ViT-B/32 image encoder (accepted files: {ACCEPTED_CLIP})"


def register() -> None:
    """Register ``models/restorex`` (idempotent); keeps paths extra_model_paths.yaml already gave the key."""
    import folder_paths

    if FOLDER in folder_paths.folder_names_and_paths:
        paths = list(folder_paths.folder_names_and_paths[FOLDER][0])
    else:
        paths = [os.path.join(folder_paths.models_dir, FOLDER)]
    if PACK_WEIGHTS_DIR not in paths:
        paths.append(PACK_WEIGHTS_DIR)
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(folder_paths.supported_pt_extensions))


def _folders(name: str) -> list[str]:
    import folder_paths

    return list(folder_paths.get_folder_paths(name)) if name in folder_paths.folder_names_and_paths else []


def model_files() -> list[str]:
    """Files for the model combo; the expected default name when the folders are empty, so running the
    node then explains where the file goes."""
    import folder_paths

    register()
    return sorted(folder_paths.get_filename_list(FOLDER)) or [DEFAULT_WEIGHTS]


def clip_files() -> list[str]:
    import folder_paths

    register()
    names = folder_paths.get_filename_list(CLIP_FOLDER) + folder_paths.get_filename_list(FOLDER)
    return [FROM_CHECKPOINT] + sorted(set(names))


def find_model(name: str) -> str:
    """Full path of a RestoreX checkpoint, or MissingWeightsError naming the folders searched."""
    import folder_paths

    register()
    path = folder_paths.get_full_path(FOLDER, name)
    if path is None:
        raise MissingWeightsError(
            f"RestoreX checkpoint '{name}' not found. Searched: {', '.join(_folders(FOLDER))}. Put the file in "
            f"one of those folders (or add a 'restorex:' path in extra_model_paths.yaml) and refresh ComfyUI "
            f"(press R). {WEIGHTS_SOURCE}.")
    return path


def find_clip(name: str) -> str:
    """Full path of a CLIP file from models/clip_vision or the RestoreX folders."""
    import folder_paths

    register()
    for folder in (CLIP_FOLDER, FOLDER):
        path = folder_paths.get_full_path(folder, name) if folder in folder_paths.folder_names_and_paths else None
        if path is not None:
            return path
    searched = _folders(CLIP_FOLDER) + _folders(FOLDER)
    raise MissingWeightsError(
        f"CLIP file '{name}' not found. Searched: {', '.join(searched)}. Put {CLIP_SOURCE} in "
        f"{_folders(CLIP_FOLDER)[0] if _folders(CLIP_FOLDER) else 'models/clip_vision'} and refresh ComfyUI (press R).")


def clip_needed_message(checkpoint: str) -> str:
    """Why a checkpoint without a stored CLIP needs a clip_name, and where to put the file."""
    where = ", ".join(_folders(CLIP_FOLDER) + _folders(FOLDER))
    return (f"'{checkpoint}' does not store its (frozen) CLIP image encoder: choose a CLIP file in clip_name "
            f"instead of '{FROM_CHECKPOINT}'. Searched for CLIP files in: {where}. Put {CLIP_SOURCE} there and "
            "refresh ComfyUI (press R).")


def validate_model(name: str) -> bool | str:
    """True, or the message naming the folders searched (ComfyUI shows it before running anything)."""
    try:
        find_model(name)
    except MissingWeightsError as e:
        return str(e)
    return True


def fingerprint(model_name: str, clip_name: str) -> str:
    """Paths and modification times of the files a loader uses: a replaced file means a new model."""
    try:
        files = [find_model(model_name)] + ([] if clip_name == FROM_CHECKPOINT else [find_clip(clip_name)])
    except MissingWeightsError:
        return "missing"  # validation has already said where the file should be
    return " ".join(f"{f}@{os.stat(f).st_mtime_ns}" for f in files)
