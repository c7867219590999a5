"""RestoreX: CLIP priors -> FFEDM enhancement -> prior-injected Restormer (the paper's Fig. 2)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .arch.clip_vit import ClipVision
from .arch.gate import CorrectionGate, apply_output_curve, held_back
from .arch.highlights import keep_highlights
from .arch.pem import PriorExtraction
from .arch.prior_diffusion import FFEDM
from .arch.restormer import PriorRestormer
from .arch.tone import ToneCurve, apply_curves
from .blending import blend, correction_weight
from .config import RestoreXConfig
from .errors import ClipWeightsError
from .images import check_images, pad_border, pad_to_multiple, split_channels
from .memory import (
    BACKOFF_MIN_TILE,
    GUIDE_SIZE,
    MIN_TILE,
    TilePlan,
    default_budget,
    is_out_of_memory,
    pass_bytes,
    plan_tiles,
)
from .pipeline import sample_priors
from .priors import Priors
from .scheduler import DDPMScheduler
from .tiling import check_tiling, tile_starts, tiled_apply

Progress = Callable[[int, int], None]
Interrupt = Callable[[], None]  # raises to stop, e.g. comfy.model_management.throw_exception_if_processing_interrupted
Tile = int | Literal["auto"] | None
logger = logging.getLogger(__name__)
TONE_BAND = 1 << 22  # pixels per band of the tone path's lookup (RestoreX._toned): about 100 MB at a time
BORDER = 8  # mirrored margin around every image the Restormer sees (images.pad_border): no edge line
_CLIP_SHAPE_FIELDS = ("image_size", "patch_size", "width", "layers", "heads", "mlp_ratio")


class RestoreX(nn.Module):
    """The full model. State-dict namespaces: ``clip``, ``pem_reference`` (PEM-S1, applied to well-exposed
    images), ``pem_input`` (PEM-S2, applied to the degraded input), ``ffedm``, ``restormer``, and ``tone`` (the
    global tone path, not in the paper: a curve per channel read off the input, applied before the Restormer;
    only when ``config.tone.knots > 0``) and ``gate`` (the correction gate, not in the paper: how much of the
    correction each image gets, read off the input; only when ``config.gate.hidden > 0``; with
    ``gate.curve_steps > 0`` it also picks an output curve, applied after the Restormer). With
    ``config.highlights.level > 0`` the input's clipped regions are lifted back to a bright highlight after the
    Restormer (:mod:`restorex_core.arch.highlights`; not in the paper).

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
        self.tone = ToneCurve(config.tone) if config.tone.enabled else None
        self.gate = CorrectionGate(config.gate) if config.gate.enabled else None
        self.scheduler = DDPMScheduler.from_config(config.ffedm)

    @property
    def device(self) -> torch.device:
        return self.restormer.output.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.restormer.output.weight.dtype

    # -- 1. Prior Extraction Module ----------------------------------------------------------------
    def extract_priors(self, images: Tensor, *, source: Literal["input", "reference"] = "input") -> Priors:
        """CLIP block features -> prior vectors.

        Args:
            images: (B, C, H, W) float in [0, 1]; squash-resized to CLIP's input size inside.
            source: "input" (default) runs PEM-S2 (a badly exposed photo, to be enhanced by FFEDM); "reference" runs
                PEM-S1 (the image is taken as well exposed: the training-stage-1 path, or a reference photo).
        """
        if source not in ("input", "reference"):
            raise ValueError(f"source must be 'input' or 'reference', not {source!r}")
        rgb = split_channels(check_images(images)).rgb
        clip_dtype = self.clip.visual.conv1.weight.dtype
        rgb = rgb.to(self.device, clip_dtype)
        if self.training or rgb.shape[0] == 1:
            tokens = self.clip(rgb)  # N_taps x (B, N, W)
        else:  # image by image: batched attention kernels round differently per batch size in bf16, which moved
            # an image's priors by up to 0.008 and its output by 4/255 (docs/engine.md, "Batch == alone")
            tokens = [torch.cat(taps) for taps in zip(*(self.clip(rgb[i : i + 1]) for i in range(rgb.shape[0])),
                                                      strict=True)]
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
        interrupt: Interrupt | None = None,
    ) -> Priors:
        """Turn input priors into the priors of a well-exposed image with the FFEDM reverse chain.

        Args:
            steps: reverse steps (default: all ``ffedm.timesteps``).
            seed: seeds x_T (and the stochastic steps' noise) of every image alike: each image of a batch gets
                the noise it would get alone, and the same seed gives the same priors on every device.
            target: training only: start from q(x_T | target) as DiffIR does; gradients reach the denoisers
                and PEM-S2 through every step.
            callback: called as (done, steps) after every step. interrupt: called before the chain and after
                every step; it stops the run by raising.
        """
        if priors.source != "input" or priors.enhanced:
            raise ValueError(f"FFEDM enhances raw input priors; these are {priors.source} priors"
                             f"{' already enhanced' if priors.enhanced else ''}: pass them to restore() directly")
        generators = None if seed is None else [torch.Generator().manual_seed(seed) for _ in range(priors.batch_size)]
        cond = self.ffedm.encode(priors.stacked().to(self.device))  # (B, N, d) fp32
        x_target = self.ffedm.encode(target.stacked().to(self.device)) if target is not None else None
        if interrupt is not None:
            interrupt()

            def report(done: int, total: int, _callback: Progress | None = callback) -> None:
                if _callback is not None:
                    _callback(done, total)
                interrupt()

            callback = report
        z = sample_priors(self.ffedm, self.scheduler, cond, steps=steps, generator=generators,
                          target=x_target, callback=callback)
        vectors = self.ffedm.decode(z).unbind(dim=1)  # N x (B, D) fp32
        return Priors(tuple(vectors), priors.blocks, "input", enhanced=True)

    # -- 3a. the global tone path and 3b. the correction gate (not in the paper) ---------------------
    def _raw_prior_features(self, images: Tensor, priors: Priors | None, reader: str) -> tuple[list[Tensor], Tensor]:
        """What the tone path and the gate read: the raw input priors' vectors (one per image; read here unless
        ``priors`` are at hand) and the images' RGB, on the model's device. ``reader`` names the part in errors."""
        if priors is None:
            priors = self.extract_priors(images, source="input")
        elif priors.source != "input" or priors.enhanced:
            raise ValueError(f"{reader} reads the raw input priors (ExtractCLIPPriors / extract_priors), not "
                             f"{'enhanced' if priors.enhanced else priors.source} priors")
        rgb = split_channels(check_images(images)).rgb
        vectors = priors.expand(rgb.shape[0]).to(self.device, self.dtype).vectors
        return list(vectors), rgb.to(self.device)

    def tone_curves(self, images: Tensor, priors: Priors | None = None) -> Tensor | None:
        """The per-channel curves the tone path picks for ``images``: (B, 3, K + 1) fp32, None for a model without
        one. ``priors``: the images' raw input priors when already at hand (:meth:`extract_priors`), else read here.
        """
        if self.tone is None:
            return None
        return self.tone(*self._raw_prior_features(images, priors, "the tone path"))

    def correction_strength(self, images: Tensor, priors: Priors | None = None) -> Tensor | None:
        """How much of the correction the gate gives each of ``images``: (B,) fp32 in [0, 1] (0: a photo to leave
        as it is), None for a model without a gate. ``priors``: the images' raw input priors when already at
        hand (:meth:`extract_priors`), else read here."""
        if self.gate is None:
            return None
        return self.gate(*self._raw_prior_features(images, priors, "the correction gate"))

    def gate_reads(self, images: Tensor, priors: Priors | None = None, *,
                   strength: bool = True) -> tuple[Tensor | None, Tensor | None]:
        """The gate's strengths (:meth:`correction_strength`; None unless ``strength``) and output curves
        (:meth:`output_curves`) for ``images``, from one reading of the gate's features: (None, None) for a model
        without a gate, and nothing read when neither is wanted."""
        if self.gate is None or not (strength or self.has_output_curve):
            return None, None
        features = self.gate.features(*self._raw_prior_features(images, priors, "the correction gate"))
        return (self.gate.strength(features) if strength else None), self.gate.output_curve(features)

    @property
    def has_output_curve(self) -> bool:
        return self.gate is not None and self.gate.curve_net is not None

    def output_curves(self, images: Tensor, priors: Priors | None = None) -> Tensor | None:
        """The output curve the gate picks for each of ``images`` (:func:`restorex_core.arch.gate.apply_output_curve`
        applies it to the Restormer's output): (B, 3 S + 1) fp32, None for a model without one. ``priors``: the
        images' raw input priors when already at hand, else read here."""
        if not self.has_output_curve:
            return None
        gate = self.gate
        return gate.output_curve(gate.features(*self._raw_prior_features(images, priors, "the output curve")))

    def _toned(self, rgb: Tensor, curves: Tensor | None) -> Tensor:
        """``rgb`` through ``curves`` (computed here when None), in bands of rows: an 8K photo's lookup stays
        a few hundred MB. Unchanged for a model without a tone path."""
        if self.tone is None:
            return rgb
        if curves is None:
            curves = self.tone_curves(rgb)
        if curves.shape[0] == 1 and rgb.shape[0] > 1:
            curves = curves.expand(rgb.shape[0], -1, -1)
        curves = curves.to(rgb.device)
        rows = max(1, TONE_BAND // max(1, rgb.shape[0] * rgb.shape[-1]))
        bands = [apply_curves(band, curves, self.config.tone.guard) for band in rgb.split(rows, dim=2)]
        return torch.cat(bands, dim=2).to(rgb.dtype)

    # -- 3. prior-injected Restormer ----------------------------------------------------------------
    def restore(
        self,
        images: Tensor,
        priors: Priors,
        *,
        tile: Tile = None,
        overlap: int = 32,
        progress: Progress | None = None,
        guide_size: int = GUIDE_SIZE,
        max_memory: int | None = None,
        interrupt: Interrupt | None = None,
        attention: list[Tensor] | None = None,
        curves: Tensor | None = None,
        output_curve: Tensor | None = None,
    ) -> Tensor:
        """Run the Restormer with the priors injected (after the tone path's curves and before the output curve
        and the clipped highlights' lift, for a model with them).

        ``tile`` bounds memory: the Restormer runs over overlapping tiles blended with feathered weights,
        while everything global stays global: the priors, and the attention maps of every MDTA block, taken
        from one pass over the whole image downscaled to at most ``guide_size`` pixels on its long side
        (exact for images that size or smaller).

        Args:
            tile: None (one pass), a tile size in pixels, or "auto": the largest tile whose pass fits in
                ``max_memory`` bytes (default: half the memory available on the model's device, at most 3 GiB
                on a CPU: :func:`restorex_core.memory.default_budget`), untiled when the whole image fits.
                "auto" plans for one image: a batch that does not fit in one pass runs image by image, each
                with the plan it would get alone. Running out of memory with a tile size or "auto" halves the
                tile (and the guide pass) and tries again, down to ``memory.BACKOFF_MIN_TILE`` (64).
            overlap: pixels two tiles share; with a tile size or "auto" at least 8, and a tile size at least
                ``max(32, 2 x overlap + 8)`` (:func:`restorex_core.tiling.check_tiling`, :class:`TileError`).
                "auto" uses at most a quarter of its tile.
            progress: called as (done, total) after the guide pass and every tile (total = tiles + 1), or
                (1, 1) untiled.
            interrupt: called before every transformer block (guide pass and tiles); it stops by raising.
            attention: use these maps (from :meth:`attention_maps`) in every MDTA block instead of the pass's
                own, tiled or not: a clip smooths them over time, and measures a thumbnail restored with them.
            curves: the tone path's curves (:meth:`tone_curves`); by default read off ``images`` themselves.
                Ignored by a model without a tone path.
            output_curve: the output curve's parameters (:meth:`output_curves`); by default read off ``images``
                themselves. Ignored by a model without one.
        """
        images = check_images(images)
        check_tiling(tile, overlap, multiple_of=self.restormer.multiple_of)
        if not priors.ready:
            raise ValueError("these are raw input priors (PEM-S2 on a badly exposed photo), which describe the bad "
                             "exposure: run FFEDM Enhance (RestoreX.enhance_priors) on them first, or give reference "
                             "or blended priors")
        return self._restore(images, priors, tile=tile, overlap=overlap, progress=progress, guide_size=guide_size,
                             max_memory=max_memory, interrupt=interrupt, attention=attention, curves=curves,
                             output_curve=output_curve)

    def _restore(self, images: Tensor, priors: Priors, *, tile: Tile, overlap: int, progress: Progress | None,
                 guide_size: int, max_memory: int | None, interrupt: Interrupt | None,
                 attention: list[Tensor] | None, curves: Tensor | None = None,
                 output_curve: Tensor | None = None) -> Tensor:
        if priors.blocks != self.config.clip.taps or priors.dim != self.config.pem.dim:
            raise ValueError(f"priors of blocks {priors.blocks} (D={priors.dim}) do not fit this model "
                             f"(blocks {self.config.clip.taps}, D={self.config.pem.dim})")
        split = split_channels(images)
        vectors = list(priors.expand(images.shape[0]).to(self.device, self.dtype).vectors)
        if (self.has_output_curve and output_curve is None) or (self.tone is not None and curves is None):
            raw = self.extract_priors(images, source="input")  # read once for both
            if self.tone is not None and curves is None:
                curves = self.tone_curves(images, raw)
            if self.has_output_curve and output_curve is None:
                output_curve = self.output_curves(images, raw)
        rgb = self._toned(split.rgb, curves)  # one curve per image, before any tiling: tiles agree
        b, _, h, w = rgb.shape
        if tile != "auto":
            out = self._run_backing_off(rgb, vectors, tile, overlap, False, guide_size, progress, interrupt,
                                        attention)
        else:
            budget = max_memory if max_memory is not None else default_budget(self.device)
            plan = self.tile_plan(1, h, w, max_memory=budget, guide_size=guide_size)
            if b == 1 or (plan.tile is None and self.tile_plan(b, h, w, max_memory=budget).tile is None):
                out = self._run_backing_off(rgb, vectors, plan.tile, overlap, True, plan.guide_size, progress,
                                            interrupt, attention)
            else:  # image by image, each with its own plan: a batch never changes an image's tiles
                outs = []
                for i in range(b):
                    report = None if progress is None else (lambda d, t, i=i: progress(i * t + d, b * t))
                    maps = None if attention is None else [a[i : i + 1] for a in attention]
                    outs.append(self._run_backing_off(rgb[i : i + 1], [v[i : i + 1] for v in vectors], plan.tile,
                                                      overlap, True, plan.guide_size, report, interrupt, maps))
                out = torch.cat(outs)
        out = out.to(images.device, images.dtype).clamp(0.0, 1.0)
        if self.has_output_curve:
            out = apply_output_curve(out, output_curve)
        out = keep_highlights(split.rgb, out, self.config.highlights)  # off unless the weights ask for it
        return split.merge(out)

    def _run_backing_off(self, rgb: Tensor, vectors: list[Tensor], tile: int | None, overlap: int, planned: bool,
                         guide: int, progress: Progress | None, interrupt: Interrupt | None,
                         attention: list[Tensor] | None) -> Tensor:
        """:meth:`_restore_rgb`, halving the tile (and the guide pass) when a pass runs out of memory, for a
        planned tile (then with at most a quarter of it as overlap) or a tile size; one pass (None, not planned)
        is not retried. The only out-of-memory back-off: every host runs through it."""
        chosen, long_side = tile, max(rgb.shape[-2:]) + 2 * BORDER
        while True:
            try:
                return self._restore_rgb(rgb, vectors, chosen, min(overlap, chosen // 4) if planned and chosen
                                         else overlap, guide, progress, interrupt, attention)
            except (RuntimeError, MemoryError) as e:  # retried outside the handler, so the failed pass is freed
                if (tile is None and not planned) or not (isinstance(e, MemoryError) or is_out_of_memory(e)):
                    raise
                error = e
            smaller = (chosen or long_side) // 2 // 8 * 8
            if smaller < BACKOFF_MIN_TILE:
                raise error
            # halve the guide pass as well: either pass may be the one that did not fit
            guide = max(MIN_TILE, min(guide, long_side) // 2 // 8 * 8)
            logger.warning("RestoreX ran out of memory with tile %s; retrying with tile %d (guide %d)", chosen,
                           smaller, guide)
            chosen, planned = smaller, True
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def tile_plan(self, batch: int, height: int, width: int, *, max_memory: int | None = None,
                  guide_size: int = GUIDE_SIZE) -> TilePlan:
        """What ``restore(tile="auto")`` runs for images of this size: the tile (None: one pass) and guide that fit
        in ``max_memory`` bytes (default: :func:`restorex_core.memory.default_budget` of the model's device)."""
        budget = max_memory if max_memory is not None else default_budget(self.device)
        return plan_tiles(self.config.restormer, self.dtype, height=height + 2 * BORDER, width=width + 2 * BORDER,
                          batch=batch, budget=budget, guide_size=guide_size)

    def memory_required(self, batch: int, height: int, width: int, *, tile: int | None = None) -> int:
        """Bytes a restore of ``batch`` images of ``height`` x ``width`` needs free besides the weights, with
        ``tile`` (None: one pass): what a host such as ComfyUI asks its model management to free first."""
        return pass_bytes(self.config.restormer, self.dtype, height=height + 2 * BORDER, width=width + 2 * BORDER,
                          batch=batch, tile=tile)

    @property
    def _layout(self) -> torch.memory_format:
        """channels_last on CPUs, where the convolutions run fastest in it (2-3x); the MDTA reads it as is."""
        return torch.channels_last if self.device.type == "cpu" else torch.contiguous_format

    def _guide(self, padded: Tensor, guide_size: int) -> Tensor:
        """The guide pass's input: the bordered, padded image downscaled to at most ``guide_size`` on its long side."""
        ph, pw = padded.shape[-2:]
        scale = min(1.0, guide_size / max(ph, pw))
        guide = padded if scale == 1.0 else F.interpolate(
            padded, size=(max(8, round(ph * scale)), max(8, round(pw * scale))), mode="bilinear", antialias=True)
        guide, _ = pad_to_multiple(guide.to(self.device, self.dtype), self.restormer.multiple_of)
        return guide.contiguous(memory_format=self._layout)

    def attention_maps(self, images: Tensor, priors: Priors, *, guide_size: int = GUIDE_SIZE,
                       interrupt: Interrupt | None = None, curves: Tensor | None = None) -> list[Tensor]:
        """The attention maps a tiled :meth:`restore` of ``images`` shares across its tiles (one per MDTA block,
        (B, heads, C/h, C/h) fp32): what :func:`restorex_core.sequence.iter_corrected` smooths over time and
        passes back as ``restore(..., attention=)``."""
        rgb = self._toned(split_channels(check_images(images)).rgb, curves)
        vectors = list(priors.expand(images.shape[0]).to(self.device, self.dtype).vectors)
        padded, _ = pad_to_multiple(pad_border(rgb, BORDER), self.restormer.multiple_of)
        return self.restormer.record_attention(self._guide(padded, guide_size), vectors, interrupt=interrupt)

    def _restore_rgb(self, rgb: Tensor, vectors: list[Tensor], tile: int | None, overlap: int, guide_size: int,
                     progress: Progress | None, interrupt: Interrupt | None,
                     attention: list[Tensor] | None = None) -> Tensor:
        """(B, 3, H, W) -> the Restormer's (B, 3, H, W), unclamped, on the model's device."""
        layout = self._layout

        def run(x: Tensor) -> Tensor:  # the Restormer's residual, run in the model's dtype, added in fp32 to
            # the input: a 16-bit image keeps its tones in bf16 (a bf16 sum has 8 bits: docs/engine.md, "Precision")
            padded, (h, w) = pad_to_multiple(x.to(self.device, torch.float32), self.restormer.multiple_of)
            low = padded.to(self.dtype).contiguous(memory_format=layout)
            residual = self.restormer(low, vectors, interrupt=interrupt, add_input=False)
            return (padded + residual.float())[:, :, :h, :w]

        (h0, w0), m = rgb.shape[-2:], BORDER
        if tile is None or (h0 <= tile and w0 <= tile):
            with nullcontext() if attention is None else self.restormer.replay_attention(attention):
                out = run(pad_border(rgb, m))[:, :, m:m + h0, m:m + w0]
            if progress is not None:
                progress(1, 1)
            return out
        # pad the whole image first, so border tiles see the same padding as an untiled run
        padded, _ = pad_to_multiple(pad_border(rgb, m), self.restormer.multiple_of)
        ph, pw = padded.shape[-2:]
        tiles = len(tile_starts(ph, tile, overlap)) * len(tile_starts(pw, tile, overlap))
        if attention is None:
            attention = self.restormer.record_attention(self._guide(padded, guide_size), vectors, interrupt=interrupt)
        with self.restormer.replay_attention(attention):
            if progress is not None:
                progress(1, tiles + 1)
            out = tiled_apply(run, padded, tile=tile, overlap=overlap, interrupt=interrupt,
                              progress=None if progress is None else lambda done, _: progress(done + 1, tiles + 1))
        return out[:, :, m:m + h0, m:m + w0]

    def correct(
        self,
        images: Tensor,
        *,
        seed: int | None = 0,
        steps: int | None = None,
        tile: Tile = None,
        overlap: int = 32,
        max_memory: int | None = None,
        strength: float = 1.0,
        mask: Tensor | None = None,
        feather: int = 0,
        auto_strength: bool = True,
        progress: Progress | None = None,
        interrupt: Interrupt | None = None,
    ) -> Tensor:
        """The whole method: priors from the input, enhanced by FFEDM, injected into the Restormer, then blended
        back at ``strength`` inside ``mask`` (:func:`restorex_core.compose.correction_weight`; an alpha channel is
        kept). For weights with a correction gate, ``auto_strength`` (the default) scales each image's weight by
        the strength the gate reads off it (:meth:`correction_strength`): a well-exposed photo comes back as it is;
        ``auto_strength=False`` corrects every image in full. Nothing runs when the weight is zero everywhere
        (strength 0, an empty mask, or the gate leaving every image alone).

        ``tile``, ``overlap``, ``max_memory``, ``progress`` (per Restormer tile) and ``interrupt`` as in
        :meth:`restore`. ``mask``: None (everywhere), or (B or 1, H, W) / (H, W) / (B or 1, 1, H, W) float in
        [0, 1] of any size; ``feather``: its soft edge in pixels.
        """
        images = check_images(images)
        check_tiling(tile, overlap, multiple_of=self.restormer.multiple_of)  # before any work
        b, _, h, w = images.shape
        weight = correction_weight(mask, batch=b, height=h, width=w, strength=strength, feather=feather)
        if not bool((weight > 0).any()):
            return images.clone()
        if interrupt is not None:
            interrupt()
        raw = self.extract_priors(images, source="input")
        gate, finish = self.gate_reads(images, raw, strength=auto_strength)
        if gate is not None and not self.config.gate.brightening_only and not bool((gate > 0).any()):
            return images.clone()  # the gate leaves every image as it is: no need to run the Restormer
        curves = self.tone_curves(images, raw)
        priors = self.enhance_priors(raw, steps=steps, seed=seed, interrupt=interrupt)
        out = self.restore(images, priors, tile=tile, overlap=overlap, max_memory=max_memory, progress=progress,
                           interrupt=interrupt, curves=curves, output_curve=finish)
        if gate is not None:
            kept = held_back(gate, images, out, brightening_only=self.config.gate.brightening_only)
            weight = weight * kept.cpu().view(-1, 1, 1, 1)  # (B, 1, H or 1, W or 1)
        if mask is None and weight.numel() == 1 and float(weight) == 1.0:
            return out
        return blend(images, out, weight.to(images.device))
