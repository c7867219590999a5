"""Split a tone head off a checkpoint, or join one onto other weights: how a fitted head travels to a lent GPU.

    python -m training.tone_head split v7_init.safetensors .pack/v7_tone.safetensors     # here: 0.7 MB, not 20
    python -m training.tone_head join weights/restorex-default.safetensors .pack/v7_tone.safetensors init.safetensors
    python -m training.tone_head join v7n.safetensors v8_head.safetensors v8_init.safetensors --replace

``training.curve_probe --export`` writes the whole model with its fitted tone path (20 MB in fp32); the device
tool carries at most 64 MiB, most of it the packed data, so ``scripts/device_train.sh`` carries only the head
(``TONE_HEAD=FILE``) and joins it there onto the weights it came from (``RESTOREX_V3``, the bundled file). The head
file keeps the export's header (its config has the ``tone`` section), so the joined file is the export again,
tensor for tensor, when the base is the file the probe read. The joined file is loaded as a RestoreX checkpoint
before it takes its name, so a base of another architecture fails there, not in training. ``--replace`` swaps the
head of a base that already has one (a Restormer trained behind an earlier curve, e.g. v7n, given v8's head, fitted
on the same frozen priors).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from restorex_core import load_checkpoint
from restorex_core.errors import CheckpointError

PREFIX = "tone."


def split(full: str | Path, head: str | Path) -> Path:
    """The ``tone.*`` tensors of ``full`` and its header, written to ``head``."""
    with safe_open(str(full), "pt") as f:
        keys = [k for k in f.keys() if k.startswith(PREFIX)]
        if not keys:
            raise SystemExit(f"{full} has no tone path (no '{PREFIX}*' tensors): export it with "
                             "python -m training.curve_probe --export")
        save_file({k: f.get_tensor(k) for k in keys}, str(head), metadata=f.metadata())
    return Path(head)


def join(base: str | Path, head: str | Path, out: str | Path, *, replace: bool = False) -> Path:
    """``base``'s tensors plus ``head``'s tone path, under ``head``'s header, written to ``out`` (atomically).
    ``replace``: a tone path ``base`` already has is dropped first; without it such a base is refused."""
    tensors = load_file(str(base))
    if any(k.startswith(PREFIX) for k in tensors):
        if not replace:
            raise SystemExit(f"{base} already has a tone path: join a head onto the weights it was fitted on, or "
                             "pass --replace to swap its head for this one")
        tensors = {k: v for k, v in tensors.items() if not k.startswith(PREFIX)}
    with safe_open(str(head), "pt") as f:
        tensors.update({k: f.get_tensor(k) for k in f.keys()})
        metadata = f.metadata()
    out = Path(out)
    tmp = out.with_name(f".tmp.{out.name}")
    save_file(tensors, str(tmp), metadata=metadata)
    try:
        load_checkpoint(tmp)  # every tensor the header's model needs, and no other
    except CheckpointError as e:
        tmp.unlink()
        why = re.search(r"\((.*?)\)", str(e))
        raise SystemExit(f"{base} is not the model {head} was fitted on ({why.group(1) if why else e}): join the "
                         "head onto the weights training.curve_probe read (its --weights)") from None
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 3 and argv[0] == "split":
        print(f"wrote {split(*argv[1:])}")
    elif len(argv) in (4, 5) and argv[0] == "join" and argv[4:] in ([], ["--replace"]):
        print(f"wrote {join(*argv[1:4], replace=len(argv) == 5)}")
    else:
        raise SystemExit(__doc__.split("\n\n")[1])


if __name__ == "__main__":
    main()
