"""RestoreX: CLIP priors -> FFEDM enhancement -> prior-injected Restormer (the paper's Fig. 2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .arch.clip_vit import ClipVision
from .arch.pem import PriorExtraction
from .arch.prior_diffusion import FFEDM
from .arch.restormer import PriorRestormer
from .config import RestoreXConfig
from .errors import ClipWeightsError
from .images import check_images, pad_border, pad_to_multiple, split_channels
from .pipeline import sample_priors
from .priors import Priors
from .scheduler import DDPMScheduler
from .tiling import tiled_apply

Progress = Callable[[int, int], None]
BORDER = 8  # mirrored margin around every image the Restormer sees (images.pad_border): no edge line
_CLIP_SHAPE_FIELDS = ("image_size", "patch_size", "width", "layers", "heads", "mlp_ratio")


class RestoreX(nn.Module):
    """The full model. State-dict namespaces: ``clip``, ``pem_reference`` (PEM-S1, applied to well-exposed
    images), ``pem_input`` (PEM-S2, applied to the degraded input), ``ffedm``, ``restormer``.

    Images everywhere are (B, C, H, W) float in [0, 1] with C in {1, 3, 4} and any H, W >= 1; outputs have
    the same shape, clamped to [0, 1]. Nothing here disables gradients: wrap inference in
    ``torch.inference_mode()``.
    """

    supports_half = True  # fp16 and bf16 run; FFTs and the FFEDM chain stay in fp32
    supports_bfloat16 = True

    def __init__(self, config: RestoreXConfig, *, clip: ClipVision | None = None) -> None:
        super().__init__()
        self.config = config
        if clip is None:
            clip = ClipVision(config.clip)
        else:
            mismatch = [f for f in _CLIP_SHAPE_FIELDS if getattr(clip.config, f) != getattr(config.clip, f)]
            if mismatch:
                got = {f: getattr(clip.config, f) for f in mismatch}
                want = {f: getattr(config.clip, f) for f in mismatch}
                raise ClipWeightsError(f"the CLIP encoder given has {got} but this model needs {want}")
            clip.config = config.clip  # taps, input size and trainability come from the model's config
            clip.requires_grad_(config.clip.trainable)
            clip.train(self.training)
        clip.prune_intermediate_layers()
        self.clip = clip
        self.pem_reference = PriorExtraction(config.pem)
        self.pem_input = PriorExtraction(config.pem)
        self.ffedm = FFEDM(config.ffedm)
        self.restormer = PriorRestormer(config.restormer)
        self.scheduler = DDPMScheduler(
            num_train_timesteps=config.ffedm.timesteps,
            beta_start=config.ffedm.beta_start,
            beta_end=config.ffedm.beta_end,
            prediction_type="sample" if config.ffedm.objective == "x0" else "epsilon",
            stochastic=config.ffedm.objective == "eps",
        )

    @property
    def device(self) -> torch.device:
        return self.restormer.output.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.restormer.output.weight.dtype

    # -- 1. Prior Extraction Module ----------------------------------------------------------------
    def extract_priors(self, images: Tensor, *, source: Literal["input", "reference"] | None = None,
                       stage: Literal["input", "reference"] | None = None) -> Priors:
        """CLIP block features -> prior vectors.

        Args:
            images: (B, C, H, W) float in [0, 1]; squash-resized to CLIP's input size inside.
            source: "input" (default) runs PEM-S2 (a badly exposed photo, to be enhanced by FFEDM); "reference" runs
                PEM-S1 (the image is taken as well exposed: the training-stage-1 path, or a reference photo).
            stage: the former name of ``source`` (and the ComfyUI input's name), kept for existing code.
        """
        if stage is not None:
            if source is not None:
                raise TypeError("pass source, or its former name stage, not both")
            source = stage
        source = source or "input"
        if source not in ("input", "reference"):
            raise ValueError(f"source must be 'input' or 'reference', not {source!r}")
        rgb = split_channels(check_images(images)).rgb
        clip_dtype = self.clip.visual.conv1.weight.dtype
        tokens = self.clip(rgb.to(self.device, clip_dtype))  # N_taps x (B, N, W)
        pem = self.pem_input if source == "input" else self.pem_reference
        return Priors(tuple(pem(tokens)), self.config.clip.taps, source, enhanced=False)

    # -- 2. FFEDM -----------------------------------------------------------------------------------
    def enhance_priors(
        self,
        priors: Priors,
        *,
        steps: int | None = None,
        seed: int | None = None,
        target: Priors | None = None,
        callback: Progress | None = None,
    ) -> Priors:
        """Turn input priors into the priors of a well-exposed image with the FFEDM reverse chain.

        Args:
            steps: reverse steps (default: all ``ffedm.timesteps``).
            seed: seeds x_T; the same seed gives the same priors on every device.
            target: training only: start from q(x_T | target) as DiffIR does; gradients reach the denoisers
                and PEM-S2 through every step.
        """
        if priors.source != "input" or priors.enhanced:
            raise ValueError(f"FFEDM enhances raw input priors; these are {priors.source} priors"
                             f"{' already enhanced' if priors.enhanced else ''}: pass them to restore() directly")
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        cond = self.ffedm.encode(priors.stacked().to(self.device))  # (B, N, d) fp32
        x_target = self.ffedm.encode(target.stacked().to(self.device)) if target is not None else None
        z = sample_priors(self.ffedm, self.scheduler, cond, steps=steps, generator=generator,
                          target=x_target, callback=callback)
        vectors = self.ffedm.decode(z).unbind(dim=1)  # N x (B, D) fp32
        return Priors(tuple(vectors), priors.blocks, "input", enhanced=True)

    # -- 3. prior-injected Restormer ----------------------------------------------------------------
    def restore(
        self,
        images: Tensor,
        priors: Priors,
        *,
        tile: int | None = None,
        overlap: int = 32,
        progress: Progress | None = None,
        guide_size: int = 1024,
    ) -> Tensor:
        """Run the Restormer with the priors injected.

        ``tile`` bounds memory: the Restormer runs over overlapping tiles blended with feathered weights,
        while everything global stays global: the priors, and the attention maps of every MDTA block, taken
        from one pass over the whole image downscaled to at most ``guide_size`` pixels on its long side
        (exact for images that size or smaller).
        """
        images = check_images(images)
        if priors.blocks != self.config.clip.taps or priors.dim != self.config.pem.dim:
            raise ValueError(f"priors of blocks {priors.blocks} (D={priors.dim}) do not fit this model "
                             f"(blocks {self.config.clip.taps}, D={self.config.pem.dim})")
        split = split_channels(images)
        vectors = list(priors.expand(images.shape[0]).to(self.device, self.dtype).vectors)

        def run(x: Tensor) -> Tensor:
            padded, (h, w) = pad_to_multiple(x.to(self.device, self.dtype), self.restormer.multiple_of)
            return self.restormer(padded, vectors)[:, :, :h, :w]

        rgb, (h0, w0), m = split.rgb, split.rgb.shape[-2:], BORDER
        if tile is None or (h0 <= tile and w0 <= tile):
            out = run(pad_border(rgb, m))[:, :, m:m + h0, m:m + w0]
            if progress is not None:
                progress(1, 1)
        else:  # pad the whole image first, so border tiles see the same padding as an untiled run
            padded, _ = pad_to_multiple(pad_border(rgb, m), self.restormer.multiple_of)
            ph, pw = padded.shape[-2:]
            scale = min(1.0, guide_size / max(ph, pw))
            guide = padded if scale == 1.0 else F.interpolate(
                padded, size=(max(8, round(ph * scale)), max(8, round(pw * scale))), mode="bilinear", antialias=True)
            guide, _ = pad_to_multiple(guide.to(self.device, self.dtype), self.restormer.multiple_of)
            with self.restormer.shared_attention(guide, vectors):
                out = tiled_apply(run, padded, tile=tile, overlap=overlap, progress=progress)[:, :, m:m + h0, m:m + w0]
        out = out.to(images.device, images.dtype).clamp(0.0, 1.0)
        return split.merge(out)

    def correct(
        self,
        images: Tensor,
        *,
        seed: int | None = 0,
        steps: int | None = None,
        tile: int | None = None,
        overlap: int = 32,
    ) -> Tensor:
        """The whole method: priors from the input, enhanced by FFEDM, injected into the Restormer."""
        priors = self.enhance_priors(self.extract_priors(images, source="input"), steps=steps, seed=seed)
        return self.restore(images, priors, tile=tile, overlap=overlap)
