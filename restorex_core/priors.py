"""Prior vectors travelling from extraction to FFEDM to the Restormer (and between ComfyUI nodes)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

PriorSource = Literal["input", "reference", "blend"]  # which image (and which PEM) the priors describe


@dataclass(frozen=True)
class Priors:
    """One (B, D) prior vector per tapped CLIP block.

    Attributes:
        vectors: P_1..P_N, each (B, D).
        blocks: the 1-based CLIP blocks they come from, e.g. (3, 6, 9, 12).
        source: "input" (PEM-S2 on a badly exposed image), "reference" (PEM-S1 on an image taken as well
            exposed), or "blend" (a mix of the two kinds).
        enhanced: True once FFEDM has turned input priors into well-exposed ones.
    """

    vectors: tuple[Tensor, ...]
    blocks: tuple[int, ...]
    source: PriorSource
    enhanced: bool = False

    def __post_init__(self) -> None:
        if len(self.vectors) != len(self.blocks):
            raise ValueError(f"{len(self.vectors)} prior vectors for {len(self.blocks)} blocks")
        if not self.vectors or any(v.ndim != 2 or v.shape != self.vectors[0].shape for v in self.vectors):
            shapes = [tuple(v.shape) for v in self.vectors]
            raise ValueError(f"prior vectors must all be (B, D) of one shape, got {shapes}")

    @property
    def batch_size(self) -> int:
        return self.vectors[0].shape[0]

    @property
    def dim(self) -> int:
        return self.vectors[0].shape[1]

    @property
    def ready(self) -> bool:
        """True when the priors describe a well-exposed image and can drive the Restormer."""
        return self.enhanced or self.source in ("reference", "blend")

    def __len__(self) -> int:
        return len(self.vectors)

    def __getitem__(self, index: int | slice | Tensor) -> Priors:
        """Index the batch; an int keeps the batch dimension."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return replace(self, vectors=tuple(v[index] for v in self.vectors))

    def to(self, *args: object, **kwargs: object) -> Priors:
        return replace(self, vectors=tuple(v.to(*args, **kwargs) for v in self.vectors))

    def detach(self) -> Priors:
        return replace(self, vectors=tuple(v.detach() for v in self.vectors))

    def stacked(self) -> Tensor:
        """(B, N, D)."""
        return torch.stack(self.vectors, dim=1)

    def expand(self, batch_size: int) -> Priors:
        """Broadcast a batch of one to ``batch_size``."""
        if self.batch_size == batch_size:
            return self
        if self.batch_size != 1:
            raise ValueError(f"priors for {self.batch_size} images cannot serve a batch of {batch_size}; "
                             "give one prior set per image, or a single one for the whole batch")
        return replace(self, vectors=tuple(v.expand(batch_size, -1) for v in self.vectors))

    def lerp(self, other: Priors, t: float) -> Priors:
        """(1 - t) * self + t * other, e.g. a photo's priors moved toward a reference photo's."""
        if self.blocks != other.blocks or self.dim != other.dim:
            raise ValueError(f"cannot blend priors of blocks {self.blocks} (D={self.dim}) "
                             f"with blocks {other.blocks} (D={other.dim}): they come from different models")
        b = max(self.batch_size, other.batch_size)
        a, o = self.expand(b), other.expand(b)
        if t == 0:
            return a
        if t == 1:
            return o
        pairs = zip(a.vectors, o.vectors, strict=True)
        vectors = tuple(torch.lerp(x.float(), y.float().to(x.device), float(t)) for x, y in pairs)
        same = a.source == o.source and a.enhanced == o.enhanced
        return Priors(vectors, self.blocks, a.source if same else "blend", a.enhanced if same else True)

    @staticmethod
    def cat(items: list[Priors]) -> Priors:
        """Concatenate along the batch."""
        first = items[0]
        if any(p.blocks != first.blocks or p.source != first.source or p.enhanced != first.enhanced for p in items):
            raise ValueError("only priors of the same blocks, source and enhancement can be concatenated")
        vectors = tuple(torch.cat([p.vectors[i] for p in items], dim=0) for i in range(len(first)))
        return replace(first, vectors=vectors)
