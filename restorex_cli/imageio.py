"""Image files <-> (1, C, H, W) float tensors: PNG and TIFF at 8 or 16 bit, JPEG at 8 bit.

Pillow decodes almost everything, but it silently truncates 16-bit RGB(A) to 8 bit (PNG and TIFF alike)
and cannot write it. So:

* 16-bit PNG is read and written by the small codec below (zlib + numpy, filters 0-4, no interlacing).
  Kept rather than a library: imagecodecs (which does 16-bit RGB(A) PNG) is a 26 MB wheel of ~80 compiled
  codecs that ComfyUI-Manager would install into every user's ComfyUI for these ~110 lines; pypng decodes
  row by row in Python (seconds per photo). tests/test_imageio.py checks it against Pillow and tifffile;
* 16-bit RGB(A) TIFF goes through ``tifffile`` (imported only for those files; it ships with scikit-image);
* everything else goes through Pillow.

Gray + alpha stays gray + alpha (C = 2): callers split the alpha off before the model (which takes
C in {1, 3, 4}) and put it back after, so a gray file comes back gray. Writes are atomic
(:func:`restorex_core.files.atomic_write`).
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from restorex_core.errors import ImageInputError
from restorex_core.files import atomic_write

if TYPE_CHECKING:  # torch is imported where a tensor is made: the CLI checks its arguments without it (seconds)
    from torch import Tensor

logger = logging.getLogger(__name__)

SUPPORTED_EXTENSIONS = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF", ".jpg": "JPEG", ".jpeg": "JPEG"}
ACCEPTED = "PNG or TIFF (8 or 16 bit) and JPEG, gray, gray + alpha, RGB or RGBA (.png, .tif, .tiff, .jpg, .jpeg)"
WRITABLE = ("PNG", "TIFF", "JPEG")
READABLE = (*WRITABLE, "BMP", "WEBP")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel (3 = palette is left to Pillow)
_EXIF_ORIENTATION = 0x0112
_TO_RGB = {"CMYK", "YCbCr", "LAB", "HSV", "RGBX"}
_TO_RGBA = {"RGBa", "PA"}


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image file.

    Attributes:
        tensor: (1, C, H, W) float32 in [0, 1], upright (EXIF orientation applied); C is 1 (gray), 2 (gray +
            alpha), 3 (RGB) or 4 (RGBA). :func:`split_alpha` gives the model's part.
        bit_depth: 8 or 16, the sample depth stored in the file.
        format: "PNG", "TIFF" or "JPEG" (from the file's content, not its name).
        path: the file it came from.
        icc_profile: the embedded colour profile, to write back unchanged; None if the file has none.
    """

    tensor: Tensor
    bit_depth: int
    format: str
    path: Path
    icc_profile: bytes | None = None


def is_supported(path: str | os.PathLike[str]) -> bool:
    """Whether the file name has an extension this module reads and writes."""
    return Path(path).suffix.lower() in SUPPORTED_EXTENSIONS


def format_for_path(path: str | os.PathLike[str]) -> str:
    """"PNG", "TIFF" or "JPEG" from a file name's extension."""
    fmt = SUPPORTED_EXTENSIONS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ImageInputError(f"{path}: cannot write {Path(path).suffix or 'extension-less'} files; use {ACCEPTED}")
    return fmt


# -- reading ---------------------------------------------------------------------------------------------
def read_image(path: str | os.PathLike[str], *, formats: Collection[str] = WRITABLE) -> LoadedImage:
    """Read an image file into a (1, C, H, W) float32 tensor in [0, 1].

    Args:
        formats: the formats taken: by default those :func:`write_image` writes back (the command line's
            promise: same format out as in); the trainer also reads 8-bit BMP and WebP (:data:`READABLE`).

    Raises:
        ImageInputError: unreadable, corrupt or unsupported file (the message names the file and the formats
            accepted). A missing file raises FileNotFoundError.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            fmt = im.format
            if fmt not in formats:
                raise ImageInputError(f"{path}: {fmt} images are not supported; use {ACCEPTED}")
            icc = im.info.get("icc_profile") or None
            if fmt == "PNG" and _png_header(path)[2] == 16:
                array = decode_png(path.read_bytes(), name=str(path))
            elif fmt == "TIFF" and _tiff_needs_tifffile(im):
                array = _read_tiff16(path)
            else:
                im.load()
                array = _pil_to_array(im, path)
            orientation = _orientation(im)
    except (FileNotFoundError, ImageInputError):
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
        if "TIFF" not in formats or not _is_tiff(path):
            raise ImageInputError(f"{path}: not a readable image ({e}); use {ACCEPTED}") from e
        # Pillow cannot open some TIFFs (16-bit gray + alpha, float): tifffile reads them or says why not
        array, fmt, icc, orientation = _read_tiff16(path), "TIFF", None, 1
    import torch

    array = _orient(array, orientation)
    bit_depth = 16 if array.dtype == np.uint16 else 8
    scale = 65535.0 if bit_depth == 16 else 255.0
    planar = np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32)  # (C, H, W) in memory too
    tensor = torch.from_numpy(planar).div_(scale).unsqueeze(0)
    return LoadedImage(tensor=tensor, bit_depth=bit_depth, format=fmt, path=path, icc_profile=icc)


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
        raise ImageInputError(f"{path}: {mode} pixels (32-bit integer or float samples) are not supported; "
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


def _is_tiff(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF


def _tiff_needs_tifffile(im: Image.Image) -> bool:
    """Pillow reads 16-bit gray TIFF correctly, but truncates 16-bit multi-sample TIFF to 8 bit."""
    bits = im.tag_v2.get(258, (1,))  # BitsPerSample
    bits = bits if isinstance(bits, tuple) else (bits,)
    samples = int(im.tag_v2.get(277, 1))  # SamplesPerPixel
    return max(bits) > 8 and (samples > 1 or not im.mode.startswith("I;16"))


def _tifffile(path: Path):  # -> the tifffile module
    """tifffile, which only 16-bit colour TIFF needs (Pillow truncates it to 8 bit)."""
    try:
        import tifffile
    except ImportError as e:
        raise ImageInputError(f"{path}: 16-bit colour TIFF needs the 'tifffile' package (pip install tifffile); "
                              "or use 16-bit PNG") from e
    return tifffile


def _read_tiff16(path: Path) -> np.ndarray:
    tifffile = _tifffile(path)
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            array, axes, photometric = page.asarray(), page.axes, int(page.photometric)
    except (ValueError, NotImplementedError, tifffile.TiffFileError) as e:
        raise ImageInputError(f"{path}: cannot decode this TIFF ({e}); re-save it uncompressed or with ZIP "
                              "(deflate) compression, or pip install imagecodecs") from e
    if array.ndim == 2:
        array = array[..., None]
    elif axes.endswith("SYX"):
        array = np.moveaxis(array, 0, -1)
    if array.dtype.kind == "f":
        raise ImageInputError(f"{path}: {array.dtype.itemsize * 8}-bit floating-point TIFF is not supported (RestoreX "
                              "reads integer samples); save it as an 8- or 16-bit integer TIFF or PNG")
    if array.dtype not in (np.uint8, np.uint16) or array.ndim != 3:
        raise ImageInputError(f"{path}: {array.dtype} samples of shape {array.shape} are not supported; use "
                              f"unsigned integer samples ({ACCEPTED})")
    channels = array.shape[2]
    if (photometric, channels) not in ((1, 1), (1, 2), (2, 3), (2, 4)):  # 1 = min-is-black gray, 2 = RGB
        raise ImageInputError(f"{path}: TIFF photometric {photometric} with {channels} samples is not supported; "
                              "save it as gray, RGB or RGBA")
    return array


# -- 16-bit PNG codec (also handles 8-bit, non-palette) ----------------------------------------------------
def _png_header(path: Path) -> tuple[int, int, int, int, int]:
    """(width, height, bit depth, colour type, interlace) from the IHDR chunk."""
    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 33 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise ImageInputError(f"{path}: not a valid PNG (no IHDR header); use {ACCEPTED}")
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
    return width, height, depth, color, interlace


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """PNG Paeth predictor on int16 arrays: whichever of a, b, c is closest to a + b - c."""
    pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def decode_png(data: bytes, *, name: str = "<png>") -> np.ndarray:
    """Decode a non-interlaced 8/16-bit gray, gray+alpha, RGB or RGBA PNG to (H, W, C) uint8/uint16."""
    def fail(why: str) -> ImageInputError:
        return ImageInputError(f"{name}: {why}")

    if data[:8] != _PNG_SIGNATURE:
        raise fail(f"not a PNG file; use {ACCEPTED}")
    pos, header, idat = 8, None, []
    while True:
        if pos + 12 > len(data):
            raise fail("truncated PNG (no IEND chunk); the file is incomplete, export it again")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if pos + 12 + length > len(data):
            raise fail(f"truncated PNG (its {kind.decode('latin-1')} chunk is cut off); export it again")
        body = data[pos + 8:pos + 8 + length]
        if zlib.crc32(kind + body) != struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0]:
            raise fail(f"corrupt PNG ({kind.decode('latin-1')} chunk fails its CRC); the file is damaged")
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"tRNS":
            logger.warning("%s: its tRNS transparency key is ignored", name)
        elif kind == b"IEND":
            break
    if header is None:
        raise fail("PNG without an IHDR chunk")
    width, height, depth, color, _, _, interlace = header
    if interlace:
        raise fail("interlaced (Adam7) 16-bit PNG is not supported; re-save it without interlacing")
    if depth not in (8, 16) or color not in _PNG_CHANNELS:
        raise fail(f"PNG bit depth {depth} / colour type {color} is not handled here; use {ACCEPTED}")
    channels, itemsize = _PNG_CHANNELS[color], depth // 8
    bpp, stride = channels * itemsize, width * channels * itemsize
    expected = height * (stride + 1)
    try:
        raw = zlib.decompressobj().decompress(b"".join(idat), expected + 1)
    except zlib.error as e:
        raise fail(f"corrupt PNG image data ({e})") from e
    if len(raw) != expected:
        raise fail(f"PNG image data has {len(raw)} bytes, expected {expected}; the file is truncated or damaged")
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
    filters = rows[:, 0]
    if filters.max(initial=0) > 4:
        raise fail(f"corrupt PNG (unknown row filter {int(filters.max())})")
    pixels = _unfilter(rows[:, 1:].reshape(height, width, bpp), filters)
    dtype = np.dtype(">u2") if itemsize == 2 else np.dtype(np.uint8)
    return pixels.view(dtype).reshape(height, width, channels).astype(dtype.newbyteorder("="))


def _unfilter(filtered: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """Undo PNG row filters on (H, W, bpp) bytes.

    Average and Paeth depend on the reconstructed left, upper and upper-left pixels, so the reconstruction
    sweeps anti-diagonals r + x = k: every pixel on one depends only on the previous two. Pixels are laid out
    in an (H + 1, W + 1) grid with a zero border (PNG's "outside the image is 0"), where one anti-diagonal is
    a plain strided slice of the flattened grid (step W), and its neighbours are the same slice shifted.
    """
    h, w, bpp = filtered.shape
    grid = np.zeros(((h + 1) * (w + 1), bpp), np.uint8)
    source = np.zeros_like(grid)
    source.reshape(h + 1, w + 1, bpp)[1:, 1:] = filtered
    for k in range(h + w - 1):
        r0, r1 = max(0, k - w + 1), min(h - 1, k)
        start = (r0 + 1) * (w + 1) + (k - r0) + 1
        stop = (r1 + 1) * (w + 1) + (k - r1) + 2
        here = slice(start, stop, w)
        a = grid[start - 1:stop - 1:w].astype(np.int16)  # left
        b = grid[start - w - 1:stop - w - 1:w].astype(np.int16)  # up
        kind = filters[r0:r1 + 1, None]
        pred = np.where(kind == 1, a, np.where(kind == 2, b, np.where(kind == 3, (a + b) >> 1, 0)))
        if (kind == 4).any():
            c = grid[start - w - 2:stop - w - 2:w].astype(np.int16)  # up-left
            pred = np.where(kind == 4, _paeth(a, b, c), pred)
        grid[here] = (source[here] + pred).astype(np.uint8)  # wraps mod 256 as PNG specifies
    return grid.reshape(h + 1, w + 1, bpp)[1:, 1:]


def encode_png(array: np.ndarray, *, icc_profile: bytes | None = None, level: int = 6) -> bytes:
    """Encode (H, W, C) uint8/uint16 (C in 1..4) as PNG, every row Paeth-filtered."""
    h, w, c = array.shape
    itemsize = array.dtype.itemsize
    raw = np.ascontiguousarray(array, dtype=f">u{itemsize}").view(np.uint8).reshape(h, w * c * itemsize)
    bpp, compressor, parts = c * itemsize, zlib.compressobj(level), []
    for top in range(0, h, 256):  # blocks of rows bound the int16 temporaries
        x = raw[max(top - 1, 0):top + 256].astype(np.int16)
        a, b = np.zeros_like(x), np.zeros_like(x)
        a[:, bpp:] = x[:, :-bpp]
        b[1:] = x[:-1]
        cc = np.zeros_like(x)
        cc[1:, bpp:] = x[:-1, :-bpp]
        filtered = ((x - _paeth(a, b, cc)) & 0xFF).astype(np.uint8)[(1 if top else 0):]
        block = np.concatenate([np.full((len(filtered), 1), 4, np.uint8), filtered], axis=1)
        parts.append(compressor.compress(block.tobytes()))
    parts.append(compressor.flush())

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    color = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    out = [_PNG_SIGNATURE, chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, itemsize * 8, color, 0, 0, 0))]
    if icc_profile:
        out.append(chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc_profile)))
    out += [chunk(b"IDAT", b"".join(parts)), chunk(b"IEND", b"")]
    return b"".join(out)


def split_alpha(tensor: Tensor) -> tuple[Tensor, Tensor | None]:
    """(1, C, H, W) -> (colour: gray or RGB, alpha or None): the model's part and the part put back as is."""
    if tensor.shape[1] in (2, 4):
        return tensor[:, :-1], tensor[:, -1:]
    return tensor, None


# -- writing -----------------------------------------------------------------------------------------------
def write_image(
    path: str | os.PathLike[str],
    tensor: Tensor,
    *,
    bit_depth: int = 8,
    quality: int = 95,
    icc_profile: bytes | None = None,
) -> Path:
    """Write a (1, C, H, W) or (C, H, W) float tensor in [0, 1] (C in {1, 2, 3, 4}) atomically.

    The format follows the extension (.png, .tif/.tiff, .jpg/.jpeg). ``bit_depth`` is 8 or 16 (16 only for
    PNG and TIFF; JPEG holds neither 16 bit nor alpha). Values are clamped to [0, 1] and rounded.
    """
    path = Path(path)
    fmt = format_for_path(path)
    if bit_depth not in (8, 16):
        raise ImageInputError(f"{path}: bit_depth must be 8 or 16, not {bit_depth}")
    array = _tensor_to_array(tensor, bit_depth, path)
    if fmt == "JPEG" and (bit_depth != 8 or array.shape[2] in (2, 4)):
        raise ImageInputError(f"{path}: JPEG stores 8-bit gray or RGB only; write 16-bit or alpha images "
                              "as .png or .tif")

    def encode(f: BinaryIO) -> None:
        if fmt == "PNG" and bit_depth == 16:
            f.write(encode_png(array, icc_profile=icc_profile))
        elif fmt == "TIFF" and bit_depth == 16 and array.shape[2] > 1:
            alpha = array.shape[2] in (2, 4)
            _tifffile(path).imwrite(f, array, photometric="rgb" if array.shape[2] >= 3 else "minisblack",
                                    compression="zlib", metadata=None, planarconfig="contig",
                                    extrasamples=("unassalpha",) if alpha else None, iccprofile=icc_profile)
        else:
            image = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
            extra: dict[str, object] = {"icc_profile": icc_profile} if icc_profile else {}
            if fmt == "JPEG":
                extra["quality"] = quality
            elif fmt == "TIFF":
                extra["compression"] = "tiff_adobe_deflate"
            image.save(f, format=fmt, **extra)

    atomic_write(path, encode)
    return path


def _tensor_to_array(tensor: Tensor, bit_depth: int, path: Path) -> np.ndarray:
    """(1, C, H, W) or (C, H, W) float in [0, 1] -> (H, W, C) uint8/uint16."""
    import torch
    from torch import Tensor

    if not isinstance(tensor, Tensor) or not tensor.is_floating_point():
        raise ImageInputError(f"{path}: expected a float torch.Tensor in [0, 1], got "
                              f"{getattr(tensor, 'dtype', type(tensor).__name__)}")
    if tensor.ndim == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 2, 3, 4) or 0 in tensor.shape:
        raise ImageInputError(f"{path}: expected one (1, C, H, W) image with C in {{1, 2, 3, 4}}, got shape "
                              f"{tuple(tensor.shape)}")
    array = tensor.detach().to("cpu", torch.float32).numpy().transpose(1, 2, 0)
    if not np.isfinite(array).all():
        raise ImageInputError(f"{path}: the image contains NaN or inf values; nothing was written")
    scale, dtype = (65535.0, np.uint16) if bit_depth == 16 else (255.0, np.uint8)
    return np.rint(np.clip(array, 0.0, 1.0) * scale).astype(dtype)
