"""CLIP weights by open_clip tag: found in the local caches, downloaded only when the caller allows it.

Nothing here reaches the network unless ``allow_download`` is passed (explicitly, by a user); a download is
checked against the SHA256 the hub cache names its blob by.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

from .clip_formats import ACCEPTED_CLIP
from .errors import CheckpointError, ClipWeightsError, MissingWeightsError

logger = logging.getLogger(__name__)

MODEL_NAMES = ("ViT-B-32", "ViT-B-32-quickgelu")
HF_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # open_clip's hub names, preferred first
_HEX64 = re.compile(r"[0-9a-f]{64}")


def hub_cache_dir() -> Path:
    """The HF hub cache, read from the environment at call time (huggingface_hub reads it once at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface") \
        .expanduser() / "hub"


def resolve_tag(source: str, *, allow_download: bool) -> tuple[Path, bool]:
    """Tag -> (local weight file, trained with QuickGELU). Touches the network only when ``allow_download``."""
    import open_clip  # heavy import, needed only for tags
    from huggingface_hub import try_to_load_from_cache

    model, _, tag = source.rpartition("/")
    model = model or "ViT-B-32"
    cfg = open_clip.get_pretrained_cfg(model, tag) if model in MODEL_NAMES else {}
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model("ViT-B-32"))
        if "/" in model or "\\" in source or (model not in MODEL_NAMES and model not in open_clip.list_models()):
            raise MissingWeightsError(f"CLIP weights not found: {source!r} is neither an existing file nor an "
                                      f"open_clip ViT-B-32 tag ({tags}). Accepted files: {ACCEPTED_CLIP}.")
        raise ClipWeightsError(f"{source!r} is not an open_clip ViT-B-32 pretrained tag; RestoreX needs a ViT-B/32 "
                               f"image encoder. Tags: {tags}. Or pass a file: {ACCEPTED_CLIP}.")
    quick_gelu = model.endswith("-quickgelu") or bool(cfg.get("quick_gelu", False))
    hub = cfg["hf_hub"]  # open_clip's convention: "org/repo/" = default file names, "org/repo/file" = that file
    repo_id, filename = (hub.rstrip("/"), "") if hub.endswith("/") else hub.rsplit("/", 1)
    filenames = (filename,) if filename else HF_WEIGHTS
    cache, looked = hub_cache_dir(), []
    for name in filenames:
        hit = try_to_load_from_cache(repo_id, name, cache_dir=cache)
        looked.append(f"{cache}/models--{repo_id.replace('/', '--')}/snapshots/*/{name}")
        if isinstance(hit, str):
            return Path(hit), quick_gelu
    if cfg.get("url"):  # open_clip's own URL cache, used when the hub is not preferred
        legacy = Path("~/.cache/clip").expanduser() / cfg["url"].rsplit("/", 1)[-1]
        looked.append(str(legacy))
        if legacy.is_file():
            return legacy, quick_gelu
    hub_url = f"https://huggingface.co/{repo_id}/resolve/main/{filenames[0]}"
    where = (f"Download {filenames[0]} from {hub_url}" + (f" (or OpenAI's ViT-B-32.pt from {cfg['url']})"
             if cfg.get("url") else "") + ", put it in ComfyUI/models/clip_vision/ and select it in the CLIP loader, "
             "or pass its path (e.g. --clip PATH); or allow downloading (allow_download=True).")
    if not allow_download:
        raise MissingWeightsError(f"CLIP weights for '{model}/{tag}' are not in the local cache (looked in: "
                                  f"{'; '.join(looked)}). {where}")
    return _download(repo_id, filenames, where), quick_gelu


def _download(repo_id: str, filenames: tuple[str, ...], where: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    endpoint = os.environ.get("HF_ENDPOINT")  # read now, not at huggingface_hub's import
    for name in filenames:  # safetensors first, then the .bin, as open_clip does
        try:
            logger.info("Downloading %s from %s/%s", name, endpoint or "https://huggingface.co", repo_id)
            path = Path(hf_hub_download(repo_id, name, cache_dir=hub_cache_dir(), endpoint=endpoint))
        except LocalEntryNotFoundError as e:  # hub unreachable (subclass of EntryNotFoundError: catch it first)
            raise MissingWeightsError(f"Could not reach the hub for {repo_id}/{name} ({str(e)[:200]}). {where}") from e
        except EntryNotFoundError:
            continue
        except Exception as e:  # any network/hub failure: the manual route in the message still works
            raise MissingWeightsError(f"Downloading {name} from {repo_id} failed ({type(e).__name__}: "
                                      f"{str(e)[:300]}). {where}") from e
        _verify_blob(path)
        return path
    raise MissingWeightsError(f"{repo_id} has none of {', '.join(filenames)}. {where}")


def _verify_blob(path: Path) -> None:
    """The hub cache names an LFS blob by its SHA256 (the ETag): check the bytes against it."""
    blob = Path(os.path.realpath(path)).name
    if not _HEX64.fullmatch(blob):
        return
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != blob:
        raise CheckpointError(f"{path} does not match its SHA256 {blob}: the download is corrupt. Delete "
                              f"{os.path.realpath(path)} and download it again.")
