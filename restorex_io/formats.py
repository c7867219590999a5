"""Which image files this package reads and writes, by extension and by content."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ImageFileError

SUPPORTED_EXTENSIONS = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF", ".jpg": "JPEG", ".jpeg": "JPEG"}
ACCEPTED = "PNG or TIFF (8 or 16 bit) and JPEG, gray, gray + alpha, RGB or RGBA (.png, .tif, .tiff, .jpg, .jpeg)"
WRITABLE = ("PNG", "TIFF", "JPEG")
READABLE = (*WRITABLE, "BMP", "WEBP")


def is_supported(path: str | os.PathLike[str]) -> bool:
    """Whether the file name has an extension this package reads and writes."""
    return Path(path).suffix.lower() in SUPPORTED_EXTENSIONS


def format_for_path(path: str | os.PathLike[str]) -> str:
    """"PNG", "TIFF" or "JPEG" from a file name's extension."""
    fmt = SUPPORTED_EXTENSIONS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ImageFileError(f"{path}: cannot write {Path(path).suffix or 'extension-less'} files; use {ACCEPTED}")
    return fmt
