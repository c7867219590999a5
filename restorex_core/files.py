"""File plumbing that needs no torch: atomic writes and safetensors headers.

Torch-free on purpose: the command line checks its files with these before it imports torch (seconds), so
``--help`` and a mistyped path answer at once.
"""

from __future__ import annotations

import json
import os
import secrets
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .errors import CheckpointError, MissingWeightsError

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")
_MAX_HEADER = 100 << 20  # safetensors' own limit on the JSON header


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a new temporary path next to ``path``; rename it over ``path`` when the block ends normally.

    On any exception, KeyboardInterrupt and SystemExit included, the temporary file is removed and ``path``
    is left as it was. The temporary name is hidden (``.name.<pid>-<random>.tmp``) and in the same folder,
    so the final rename is atomic on every file system.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write`` on a new binary file next to ``path``, flush it to disk, then rename it over ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "xb") as f:  # "x": never reuse an existing name; permissions follow the umask
            write(f)
            f.flush()
            os.fsync(f.fileno())
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write` of UTF-8 text."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def safetensors_metadata(path: str | os.PathLike[str], *, what: str = "checkpoint") -> dict[str, str]:
    """The ``__metadata__`` of a .safetensors file, read from its JSON header without reading any tensor.

    Raises:
        MissingWeightsError: ``path`` does not exist, or is a folder.
        CheckpointError: a pickle-based file (``.pt`` ...), or a truncated or corrupt header.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise MissingWeightsError(f"{what} {path} is a folder; give the .safetensors file inside it")
    if not path.is_file():
        raise MissingWeightsError(f"{what} {path} not found: check the path")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(pickle_refusal(path))
    size = path.stat().st_size
    corrupt = f"{path} is truncated or corrupt ({size} bytes); re-download it or export it again"
    with open(path, "rb") as f:
        head = f.read(8)
        (length,) = struct.unpack("<Q", head) if len(head) == 8 else (0,)
        if not 2 <= length <= min(_MAX_HEADER, size - 8):
            raise CheckpointError(f"{corrupt} [no safetensors header]")
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{corrupt} [header: {e}]") from e
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(header, dict) or not isinstance(meta or {}, dict):
        raise CheckpointError(f"{corrupt} [header is not a safetensors header]")
    try:  # a cut-off file has a whole header but not the tensor bytes it lists
        needed = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise CheckpointError(f"{corrupt} [tensor entry without data_offsets]") from e
    if needed != size - 8 - length:
        raise CheckpointError(f"{corrupt} [its tensors take {needed} bytes, the file holds {size - 8 - length}]")
    return {str(k): str(v) for k, v in (meta or {}).items()}


def pickle_refusal(path: Path) -> str:
    """Why a pickle-based weight file is not a RestoreX checkpoint, and what to use instead."""
    return (f"{path} is a pickle file (torch.save / {path.suffix}), which RestoreX does not load as a checkpoint: "
            "unpickling can run arbitrary code. RestoreX checkpoints are .safetensors files: the trainer "
            "exports one next to its last.pt (runs/<name>/restorex*.safetensors), and restorex_core.save_checkpoint"
            "(model, 'name.safetensors') writes one from a loaded model")
