"""TIFF through ``tifffile``: 16-bit colour (Pillow truncates it to 8 bit), and associated alpha both ways.

Alpha in a TIFF is either unassociated (straight: colour as is, ExtraSamples = 2) or associated (premultiplied:
colour times alpha, ExtraSamples = 1). The model works on straight colour, so an associated file's colour is
divided by its alpha on reading, and multiplied back on writing, labelled associated again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from .errors import ImageFileError
from .formats import ACCEPTED

EXTRA_SAMPLES = 338  # TIFF tag: 0 unspecified, 1 associated (premultiplied) alpha, 2 unassociated alpha
ASSOCIATED = 1


def is_tiff(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF


def needs_tifffile(im: Image.Image) -> bool:
    """Pillow reads 16-bit gray TIFF correctly, but truncates 16-bit multi-sample TIFF to 8 bit."""
    bits = im.tag_v2.get(258, (1,))  # BitsPerSample
    bits = bits if isinstance(bits, tuple) else (bits,)
    samples = int(im.tag_v2.get(277, 1))  # SamplesPerPixel
    return max(bits) > 8 and (samples > 1 or not im.mode.startswith("I;16"))


def pillow_alpha_is_associated(im: Image.Image) -> bool:
    """Whether a TIFF opened by Pillow stores associated alpha (Pillow itself un-premultiplies it on decoding)."""
    extra = im.tag_v2.get(EXTRA_SAMPLES, ())
    return ASSOCIATED in (extra if isinstance(extra, tuple) else (extra,))


def _tifffile(path: Path) -> Any:  # the tifffile module
    try:
        import tifffile
    except ImportError as e:
        raise ImageFileError(f"{path}: 16-bit colour TIFF needs the 'tifffile' package (pip install tifffile); "
                             "or use 16-bit PNG") from e
    return tifffile


def read_tiff(path: Path) -> tuple[np.ndarray, bool]:
    """(H, W, C) uint8/uint16 samples as stored, and whether the alpha is associated (colour premultiplied)."""
    tifffile = _tifffile(path)
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            array, axes, photometric = page.asarray(), page.axes, int(page.photometric)
            associated = ASSOCIATED in tuple(int(e) for e in (page.extrasamples or ()))
    except (ValueError, NotImplementedError, tifffile.TiffFileError) as e:
        raise ImageFileError(f"{path}: cannot decode this TIFF ({e}); re-save it uncompressed or with ZIP "
                             "(deflate) compression, or pip install imagecodecs") from e
    if array.ndim == 2:
        array = array[..., None]
    elif axes.endswith("SYX"):
        array = np.moveaxis(array, 0, -1)
    if array.dtype.kind == "f":
        raise ImageFileError(f"{path}: {array.dtype.itemsize * 8}-bit floating-point TIFF is not supported (RestoreX "
                             "reads integer samples); save it as an 8- or 16-bit integer TIFF or PNG")
    if array.dtype not in (np.uint8, np.uint16) or array.ndim != 3:
        raise ImageFileError(f"{path}: {array.dtype} samples of shape {array.shape} are not supported; use "
                             f"unsigned integer samples ({ACCEPTED})")
    channels = array.shape[2]
    if (photometric, channels) not in ((1, 1), (1, 2), (2, 3), (2, 4)):  # 1 = min-is-black gray, 2 = RGB
        raise ImageFileError(f"{path}: TIFF photometric {photometric} with {channels} samples is not supported; "
                             "save it as gray, RGB or RGBA")
    return array, associated and channels in (2, 4)


def write_tiff(f: BinaryIO, array: np.ndarray, *, path: Path, associated: bool, icc_profile: bytes | None) -> None:
    """Write (H, W, C) uint8/uint16 samples (C in 1..4) with zlib compression; C in (2, 4) carries alpha,
    labelled associated (the colour samples must then already be premultiplied) or unassociated."""
    alpha = array.shape[2] in (2, 4)
    _tifffile(path).imwrite(f, array, photometric="rgb" if array.shape[2] >= 3 else "minisblack",
                            compression="zlib", metadata=None, planarconfig="contig",
                            extrasamples=(("assocalpha" if associated else "unassalpha"),) if alpha else None,
                            iccprofile=icc_profile)
