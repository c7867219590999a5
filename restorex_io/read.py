"""Image files -> (1, C, H, W) float tensors: PNG and TIFF at 8 or 16 bit, JPEG at 8 bit.

Pillow decodes almost everything, but it silently truncates 16-bit RGB(A) to 8 bit, so 16-bit PNG goes
through :mod:`restorex_io.png16` and 16-bit colour TIFF through :mod:`restorex_io.tiff` (``tifffile``).
Gray + alpha stays gray + alpha (C = 2): callers split the alpha off before the model (which takes C in
{1, 3, 4}) and put it back after, so a gray file comes back gray.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import png16, tiff
from .errors import ImageFileError
from .formats import ACCEPTED, WRITABLE

if TYPE_CHECKING:  # torch is imported where a tensor is made: the CLI checks its arguments without it (seconds)
    from torch import Tensor

_EXIF_ORIENTATION = 0x0112
_TO_RGB = {"CMYK", "YCbCr", "LAB", "HSV", "RGBX"}
_TO_RGBA = {"RGBa", "PA"}


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image file.

    Attributes:
        tensor: (1, C, H, W) float32 in [0, 1], upright (EXIF orientation applied); C is 1 (gray), 2 (gray +
            alpha), 3 (RGB) or 4 (RGBA), colour always straight (not premultiplied). :func:`split_alpha`
            gives the model's part.
        bit_depth: 8 or 16, the sample depth stored in the file.
        format: "PNG", "TIFF" or "JPEG" (from the file's content, not its name).
        path: the file it came from.
        icc_profile: the embedded colour profile, to write back unchanged; None if the file has none.
        associated_alpha: the file stores its colour premultiplied by alpha (a TIFF with ExtraSamples = 1):
            ``tensor`` holds it un-premultiplied; pass this to ``write_image`` to store it the same way.
    """

    tensor: Tensor
    bit_depth: int
    format: str
    path: Path
    icc_profile: bytes | None = None
    associated_alpha: bool = False


def read_image(path: str | os.PathLike[str], *, formats: Collection[str] = WRITABLE) -> LoadedImage:
    """Read an image file into a (1, C, H, W) float32 tensor in [0, 1].

    Args:
        formats: the formats taken: by default those :func:`restorex_io.write_image` writes back (the command
            line's promise: same format out as in); the trainer also reads 8-bit BMP and WebP
            (:data:`restorex_io.READABLE`).

    Raises:
        ImageFileError: unreadable (permissions), corrupt, unsupported or too large a file (the message names
            the file, the problem and what to do). A missing file raises FileNotFoundError.
    """
    path = Path(path)
    associated = premultiplied = False  # the file's alpha is associated; the samples read are still premultiplied
    try:
        with Image.open(path) as im:
            fmt = im.format
            if fmt not in formats:
                raise ImageFileError(f"{path}: {fmt} images are not supported; use {ACCEPTED}")
            icc = im.info.get("icc_profile") or None
            if fmt == "PNG" and png16.png_header(path)[2] == 16:
                array = png16.decode_png(path.read_bytes(), name=str(path))
            elif fmt == "TIFF" and tiff.needs_tifffile(im):
                array, associated = tiff.read_tiff(path)
                premultiplied = associated
            else:
                im.load()
                array = _pil_to_array(im, path)  # Pillow un-premultiplies associated alpha itself
                associated = fmt == "TIFF" and array.shape[2] in (2, 4) and tiff.pillow_alpha_is_associated(im)
            orientation = _orientation(im)
    except (FileNotFoundError, ImageFileError):
        raise
    except PermissionError as e:
        raise ImageFileError(f"{path}: permission denied, this user cannot read the file; give read permission "
                             "(e.g. chmod u+r) or copy it somewhere readable") from e
    except Image.DecompressionBombError as e:
        raise ImageFileError(too_large_message(path, e)) from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if "TIFF" not in formats or not tiff.is_tiff(path):
            raise ImageFileError(f"{path}: not a readable image ({e}); use {ACCEPTED}") from e
        # Pillow cannot open some TIFFs (16-bit gray + alpha, float): tifffile reads them or says why not
        (array, associated), fmt, icc, orientation = tiff.read_tiff(path), "TIFF", None, 1
        premultiplied = associated
    import torch

    array = _orient(array, orientation)
    bit_depth = 16 if array.dtype == np.uint16 else 8
    scale = 65535.0 if bit_depth == 16 else 255.0
    planar = np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32)  # (C, H, W) in memory too
    tensor = torch.from_numpy(planar).div_(scale).unsqueeze(0)
    if premultiplied:
        tensor = unpremultiply(tensor)
    return LoadedImage(tensor=tensor, bit_depth=bit_depth, format=fmt, path=path, icc_profile=icc,
                       associated_alpha=associated)


def _pil_to_array(im: Image.Image, path: Path) -> np.ndarray:
    """A decoded Pillow image -> (H, W, C) uint8 or uint16 with C in {1, 2, 3, 4}."""
    mode = im.mode
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)[..., None]  # also turns big-endian I;16B native
    if mode == "1":
        im = im.convert("L")
    elif mode == "La" or (mode == "L" and "transparency" in im.info):
        im = im.convert("LA")
    elif mode in ("P", "RGB") and "transparency" in im.info:  # a palette or colour-key transparency
        im = im.convert("RGBA")
    elif mode == "P":
        im = im.convert("RGB")
    elif mode in _TO_RGBA:
        im = im.convert("RGBA")
    elif mode in _TO_RGB:
        im = im.convert("RGB")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        raise ImageFileError(f"{path}: {mode} pixels (32-bit integer or float samples) are not supported; "
                              f"save it as {ACCEPTED}")
    array = np.asarray(im)
    return array[..., None] if array.ndim == 2 else array


def _orientation(im: Image.Image) -> int:
    if im.format == "PNG" and "exif" not in im.info:  # Pillow's getexif() would decode the whole PNG for it
        return 1
    return int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) so that the array is upright, as viewers show it."""
    ops: dict[int, Callable[[np.ndarray], np.ndarray]] = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, k=-1),
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
        8: lambda a: np.rot90(a, k=1),
    }
    op = ops.get(orientation)
    return array if op is None else op(array)


def set_pixel_limit(pixels: int) -> None:
    """Read images of up to ``pixels`` pixels, for files the user trusts: Pillow's guard against decompression
    bombs (process-wide) refuses an image of more than twice ``Image.MAX_IMAGE_PIXELS`` and warns above it."""
    Image.MAX_IMAGE_PIXELS = max(1, pixels // 2)
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def too_large_message(path: Path, error: Exception) -> str:
    """Pillow's decompression-bomb refusal, said plainly: the pixel count, the limit and the way on."""
    found = re.search(r"\((\d+) pixels\).*?(\d+) pixels", str(error))
    pixels, limit = (int(found[1]), int(found[2])) if found else (None, 2 * (Image.MAX_IMAGE_PIXELS or 0))
    size = f"{pixels:,} pixels" if pixels else "its size"
    return (f"{path}: {size} is larger than Pillow's safety limit of {limit:,} pixels, its guard against "
            "decompression bombs (small files that decode into huge images). If you trust the file, raise the "
            f"limit (restorex correct --max-pixels {pixels or 'N'}; in Python, set PIL.Image.MAX_IMAGE_PIXELS), "
            "or scale the image down first")


def unpremultiply(tensor: Tensor) -> Tensor:
    """(1, C, H, W) with C in (2, 4), colour premultiplied by the last channel -> straight colour.

    Where alpha is 0 the colour is lost; it comes back 0 (black), as every viewer composites it.
    """
    import torch

    alpha = tensor[:, -1:]
    colour = torch.where(alpha > 0, tensor[:, :-1] / alpha.clamp_min(1e-12), torch.zeros_like(tensor[:, :-1]))
    return torch.cat([colour.clamp_(0.0, 1.0), alpha], dim=1)


def split_alpha(tensor: Tensor) -> tuple[Tensor, Tensor | None]:
    """(1, C, H, W) -> (colour: gray or RGB, alpha or None): the model's part and the part put back as is."""
    if tensor.shape[1] in (2, 4):
        return tensor[:, :-1], tensor[:, -1:]
    return tensor, None
