"""RestoreX image files: PNG and TIFF at 8 or 16 bit, JPEG at 8 bit <-> (1, C, H, W) float tensors in [0, 1].

Used by the command line (``restorex_cli``) and the trainer (``training``); the ComfyUI nodes and the core
(``restorex_core``) never need it. It depends on numpy, Pillow and tifffile, and on torch for the tensors
(imported only where one is made), never on the rest of RestoreX.

* :mod:`.read` decodes (EXIF orientation applied, 16 bit kept, associated alpha un-premultiplied);
* :mod:`.write` encodes and publishes whole files, never replacing one unless asked;
* :mod:`.png16` is the 16-bit PNG codec (Pillow truncates 16-bit colour PNG to 8 bit);
* :mod:`.tiff` reads and writes TIFF through ``tifffile`` (16-bit colour, associated alpha).
"""

from .errors import ImageFileError, OutputExistsError
from .formats import ACCEPTED, READABLE, SUPPORTED_EXTENSIONS, WRITABLE, format_for_path, is_supported
from .png16 import decode_png, encode_png
from .read import LoadedImage, read_image, set_pixel_limit, split_alpha, too_large_message, unpremultiply
from .write import publish, write_image

__all__ = [
    "ACCEPTED", "READABLE", "SUPPORTED_EXTENSIONS", "WRITABLE", "ImageFileError", "LoadedImage",
    "OutputExistsError", "decode_png", "encode_png", "format_for_path", "is_supported", "publish", "read_image",
    "set_pixel_limit", "split_alpha", "too_large_message", "unpremultiply", "write_image",
]
