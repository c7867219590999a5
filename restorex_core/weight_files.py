"""Safe weight-file reading: tensors out of a file without executing pickled Python.

``read_state_dict`` reads safetensors, ``torch.load(weights_only=True)`` files, or, only after the zip layout
proves it is one, a TorchScript archive (OpenAI's ``ViT-B-32.pt``); it removes training wrappers and
DataParallel / torch.compile prefixes. Every weight file RestoreX loads, CLIP or checkpoint, goes through it.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path
from pickle import UnpicklingError

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from .errors import CheckpointError, MissingWeightsError

SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
WRAPPER_KEYS = ("state_dict", "model_state_dict", "params_ema", "params-ema", "params", "model", "net")
STRIP_PREFIXES = ("module.", "_orig_mod.")


def read_state_dict(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read the tensors of a weight file without unpickling arbitrary Python objects.

    ``.safetensors`` returns its header metadata; ``.pt/.pth/.bin/.ckpt`` go through
    ``torch.load(weights_only=True)``, except TorchScript archives (a zip with ``constants.pkl`` and ``code/``),
    which ``torch.jit.load`` reads: it does not unpickle arbitrary Python objects, only tensors and TorchScript
    types, whose code is compiled TorchScript that cannot import Python modules (a scripted ``__setstate__``
    still runs, so use archives from a known source, e.g. OpenAI's URL). Wrappers (``state_dict``,
    ``params_ema``, ``model``...) and ``module.`` / ``_orig_mod.`` prefixes are removed.

    Raises:
        MissingWeightsError: the file does not exist.
        CheckpointError: unsupported suffix, truncated or corrupt file, or pickled Python objects.
    """
    sd, meta, _ = read_weights(Path(path))
    return sd, meta


def read_weights(path: Path) -> tuple[dict[str, Tensor], dict[str, str], str]:
    """As ``read_state_dict``, plus the container kind: ``safetensors``, ``torch`` or ``torchscript``."""
    if not path.is_file():
        raise MissingWeightsError(f"Weight file not found: {path}. Check the path, or place the file there.")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise CheckpointError(f"{path}: unsupported file type {suffix!r}; accepted suffixes: {', '.join(SUFFIXES)}.")
    corrupt = (f"{path} is truncated or corrupt ({path.stat().st_size} bytes); re-download it or re-export it"
               " (an interrupted download or copy leaves such a file).")
    if suffix == ".safetensors":
        try:
            with safe_open(path, framework="pt", device="cpu") as f:
                meta = dict(f.metadata() or {})
                return canonicalize({k: f.get_tensor(k) for k in f.keys()}, path), meta, "safetensors"
        except SafetensorError as e:
            raise CheckpointError(f"{corrupt} [{e}]") from e
    with path.open("rb") as fh:
        magic = fh.read(4)
    is_zip = zipfile.is_zipfile(path)
    if not is_zip and magic[:1] != b"\x80":  # torch.save writes a zip, or (legacy) a pickle: PROTO opcode first
        why = "zip without its directory" if magic[:2] == b"PK" else "not a torch file"
        raise CheckpointError(f"{corrupt} [{why}]")
    if is_zip and _is_torchscript(path):
        return canonicalize(_read_torchscript(path, corrupt), path), {}, "torchscript"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except UnpicklingError as e:
        if "Unsupported global" not in str(e):
            raise CheckpointError(f"{corrupt} [{type(e).__name__}]") from e
        raise CheckpointError(
            f"{path} holds pickled Python objects besides tensors, which are not loaded for safety. Re-save it "
            "as a plain state dict (torch.save(model.state_dict(), path)) or as .safetensors. "
            f"[{str(e).split('WeightsUnpickler error:')[-1].strip()[:200]}]") from e
    except Exception as e:  # garbage bytes surface as KeyError, EOFError, OSError, RuntimeError... all mean corrupt
        raise CheckpointError(f"{corrupt} [{type(e).__name__}: {str(e)[:200]}]") from e
    return canonicalize(obj, path), {}, "torch"


def _is_torchscript(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _read_torchscript(path: Path, corrupt: str) -> dict[str, Tensor]:
    try:
        with warnings.catch_warnings():
            # torch 2.15 marks torch.jit as deprecated; the archive format itself is what OpenAI published.
            warnings.simplefilter("ignore", FutureWarning)
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    except RuntimeError as e:
        raise CheckpointError(f"{corrupt} [TorchScript: {str(e)[:200]}]") from e


def canonicalize(obj: object, path: Path) -> dict[str, Tensor]:
    """Unwrap training wrappers, keep tensors, strip DataParallel / torch.compile prefixes."""
    while isinstance(obj, dict):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not any(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors (found {type(obj).__name__}); "
                              "export the model's state_dict() to .safetensors.")
    sd = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    for prefix in STRIP_PREFIXES * 2:  # both orders: module._orig_mod. and _orig_mod.module.
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd
