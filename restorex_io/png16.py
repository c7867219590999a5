"""PNG codec for 8- and 16-bit gray, gray + alpha, RGB and RGBA (zlib + numpy, filters 0-4, no interlacing).

Pillow silently truncates 16-bit RGB(A) PNG to 8 bit and cannot write it, so these ~150 lines read and write
it. Kept rather than a library: imagecodecs (which does 16-bit RGB(A) PNG) is a 26 MB wheel of ~80 compiled
codecs; pypng decodes row by row in Python (seconds per photo). tests/test_imageio.py checks it against Pillow
and tifffile.
"""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

from .errors import ImageFileError
from .formats import ACCEPTED

logger = logging.getLogger(__name__)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel (3 = palette is left to Pillow)


def png_header(path: Path) -> tuple[int, int, int, int, int]:
    """(width, height, bit depth, colour type, interlace) from the IHDR chunk."""
    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 33 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise ImageFileError(f"{path}: not a valid PNG (no IHDR header); use {ACCEPTED}")
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
    return width, height, depth, color, interlace


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """PNG Paeth predictor on int16 arrays: whichever of a, b, c is closest to a + b - c."""
    pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def decode_png(data: bytes, *, name: str = "<png>") -> np.ndarray:
    """Decode a non-interlaced 8/16-bit gray, gray+alpha, RGB or RGBA PNG to (H, W, C) uint8/uint16."""
    def fail(why: str) -> ImageFileError:
        return ImageFileError(f"{name}: {why}")

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
    highest = int(filters.max(initial=0))
    if highest > 4:
        raise fail(f"corrupt PNG (unknown row filter {highest})")
    filtered = rows[:, 1:].reshape(height, width, bpp)
    pixels = _unfilter_row_local(filtered, filters) if highest <= 2 else _unfilter(filtered, filters)
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


def _unfilter_row_local(filtered: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """Undo PNG row filters None (0), Sub (1) and Up (2) only, on (H, W, bpp) bytes, in a few whole-array passes:
    Sub is a running sum along the row, Up a running sum down the column that restarts at every None or Sub row
    (whose reconstruction needs no upper row). uint8 sums wrap mod 256, as PNG specifies. About 10x faster than
    the anti-diagonal sweep that Average and Paeth need (:func:`_unfilter`)."""
    out = filtered.copy()
    sub = filters == 1
    if sub.any():
        out[sub] = np.cumsum(out[sub], axis=1, dtype=np.uint8)
    up = filters == 2
    if not up.any():
        return out
    total = np.cumsum(out, axis=0, dtype=np.uint8)
    rows = np.arange(len(filters))
    anchor = np.maximum.accumulate(np.where(up, -1, rows))  # the last None / Sub row at or above each row
    base = np.where((anchor >= 1)[:, None, None], total[np.maximum(anchor - 1, 0)], 0).astype(np.uint8)
    return total - base


Filter = Literal["paeth", "up"]


def encode_png(array: np.ndarray, *, icc_profile: bytes | None = None, level: int = 6,
               row_filter: Filter = "paeth") -> bytes:
    """Encode (H, W, C) uint8/uint16 (C in 1..4) as PNG, every row filtered the same way: ``paeth`` (the
    smaller file: outputs for people) or ``up`` (about 6 % larger on photos, decoded ~10x faster by
    :func:`decode_png`: caches read back many times, such as training's fused targets)."""
    if row_filter not in ("paeth", "up"):
        raise ValueError(f"row_filter must be 'paeth' or 'up', not {row_filter!r}")
    h, w, c = array.shape
    itemsize = array.dtype.itemsize
    raw = np.ascontiguousarray(array, dtype=f">u{itemsize}").view(np.uint8).reshape(h, w * c * itemsize)
    bpp, compressor, parts = c * itemsize, zlib.compressobj(level), []
    for top in range(0, h, 256):  # blocks of rows bound the int16 temporaries
        x = raw[max(top - 1, 0):top + 256].astype(np.int16)
        b = np.zeros_like(x)
        b[1:] = x[:-1]
        if row_filter == "up":
            kind, pred = 2, b
        else:
            a, cc = np.zeros_like(x), np.zeros_like(x)
            a[:, bpp:] = x[:, :-bpp]
            cc[1:, bpp:] = x[:-1, :-bpp]
            kind, pred = 4, _paeth(a, b, cc)
        filtered = ((x - pred) & 0xFF).astype(np.uint8)[(1 if top else 0):]
        block = np.concatenate([np.full((len(filtered), 1), kind, np.uint8), filtered], axis=1)
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
