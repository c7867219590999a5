"""(1, C, H, W) float tensors -> image files, published whole: a reader never sees half a file, and an
existing file is replaced only when asked (``overwrite=True``), even one that appeared while writing."""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import Image

from . import png16, tiff
from .errors import ImageFileError, OutputExistsError
from .formats import format_for_path

if TYPE_CHECKING:
    from torch import Tensor

# link() fails with these where the file system has no hard links (FAT, exFAT, some network shares)
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK, errno.EACCES}


def write_image(
    path: str | os.PathLike[str],
    tensor: Tensor,
    *,
    bit_depth: int = 8,
    quality: int = 95,
    icc_profile: bytes | None = None,
    associated_alpha: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write a (1, C, H, W) or (C, H, W) float tensor in [0, 1] (C in {1, 2, 3, 4}, straight alpha) whole.

    The format follows the extension (.png, .tif/.tiff, .jpg/.jpeg). ``bit_depth`` is 8 or 16 (16 only for
    PNG and TIFF; JPEG holds neither 16 bit nor alpha). Values are clamped to [0, 1] and rounded.

    Args:
        associated_alpha: for a TIFF with alpha, store the colour premultiplied by alpha and label it so
            (ExtraSamples = 1), as :attr:`LoadedImage.associated_alpha` says the file read had it. Other formats
            hold straight alpha only; there it changes nothing.
        overwrite: replace an existing ``path``. Without it an existing file is never replaced, even one made
            by another program while this one was writing: :class:`OutputExistsError`, and nothing is written.
    """
    path = Path(path)
    fmt = format_for_path(path)
    if bit_depth not in (8, 16):
        raise ImageFileError(f"{path}: bit_depth must be 8 or 16, not {bit_depth}")
    associated = associated_alpha and fmt == "TIFF" and _channels(tensor) in (2, 4)
    array = _tensor_to_array(tensor, bit_depth, path, premultiply=associated)
    if fmt == "JPEG" and (bit_depth != 8 or array.shape[2] in (2, 4)):
        raise ImageFileError(f"{path}: JPEG stores 8-bit gray or RGB only; write 16-bit or alpha images "
                             "as .png or .tif")

    def encode(f: BinaryIO) -> None:
        if fmt == "PNG" and bit_depth == 16:
            f.write(png16.encode_png(array, icc_profile=icc_profile))
        elif fmt == "TIFF" and (associated or (bit_depth == 16 and array.shape[2] > 1)):
            tiff.write_tiff(f, array, path=path, associated=associated, icc_profile=icc_profile)
        else:
            image = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
            extra: dict[str, object] = {"icc_profile": icc_profile} if icc_profile else {}
            if fmt == "JPEG":
                extra["quality"] = quality
            elif fmt == "TIFF":
                extra["compression"] = "tiff_adobe_deflate"
            image.save(f, format=fmt, **extra)

    return publish(path, encode, overwrite=overwrite)


def publish(path: str | os.PathLike[str], write: Callable[[BinaryIO], None], *, overwrite: bool = False) -> Path:
    """Call ``write`` on a new hidden file next to ``path``, flush it to disk, then give it the name ``path``.

    With ``overwrite`` the name is taken by an atomic rename, over any file there. Without it, by a hard link,
    which the operating system refuses when the name exists: no check-then-rename race with another program
    writing the same name. (Where the file system has no hard links, the name is first reserved by an
    exclusive create, then renamed over.) On any exception, KeyboardInterrupt included, the temporary file is
    removed and ``path`` is left as it was.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        try:
            f = open(tmp, "xb")  # "x": never reuse an existing name; permissions follow the umask
        except PermissionError as e:
            raise ImageFileError(f"{path}: permission denied, this user cannot write in {path.parent}; choose "
                                 "another output folder or change its permissions") from e
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _publish_new(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _publish_new(tmp: Path, path: Path) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _exists(path) from None
    except OSError as e:
        if e.errno not in _NO_HARD_LINKS:
            raise
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # reserve the name, or fail
        except FileExistsError:
            raise _exists(path) from None
        try:
            os.replace(tmp, path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return
    tmp.unlink()


def _exists(path: Path) -> OutputExistsError:
    return OutputExistsError(f"{path} already exists (perhaps made by another program, or another run into the same "
                             "folder, while this one was working); it was left as it is and this image was not "
                             "written: pass --overwrite to replace existing files (overwrite=True in Python), or "
                             "write into another folder")


def _channels(tensor: Tensor) -> int:
    return int(tensor.shape[-3]) if getattr(tensor, "ndim", 0) >= 3 else 0


def _tensor_to_array(tensor: Tensor, bit_depth: int, path: Path, *, premultiply: bool = False) -> np.ndarray:
    """(1, C, H, W) or (C, H, W) float in [0, 1] -> (H, W, C) uint8/uint16, colour times alpha if ``premultiply``."""
    import torch
    from torch import Tensor

    if not isinstance(tensor, Tensor) or not tensor.is_floating_point():
        raise ImageFileError(f"{path}: expected a float torch.Tensor in [0, 1], got "
                             f"{getattr(tensor, 'dtype', type(tensor).__name__)}")
    if tensor.ndim == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 2, 3, 4) or 0 in tensor.shape:
        raise ImageFileError(f"{path}: expected one (1, C, H, W) image with C in {{1, 2, 3, 4}}, got shape "
                             f"{tuple(tensor.shape)}")
    array = tensor.detach().to("cpu", torch.float32).numpy().transpose(1, 2, 0)
    if not np.isfinite(array).all():
        raise ImageFileError(f"{path}: the image contains NaN or inf values; nothing was written")
    array = np.clip(array, 0.0, 1.0)
    if premultiply:
        array = np.concatenate([array[..., :-1] * array[..., -1:], array[..., -1:]], axis=2)
    scale, dtype = (65535.0, np.uint16) if bit_depth == 16 else (255.0, np.uint8)
    return np.rint(array * scale).astype(dtype)
