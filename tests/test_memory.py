"""Bounded memory, progress and interrupts: automatic tiles, out-of-memory back-off, progress per tile, how much
work runs after an interrupt is requested, and the fast Restormer kernels against the plain equations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from restorex_core import RestoreX, RestoreXConfig
from restorex_core.arch.restormer import TransformerBlock
from restorex_core.memory import (
    IMAGE_BYTES_PER_PIXEL,
    MIN_TILE,
    available_memory,
    is_out_of_memory,
    plan_tiles,
    restormer_bytes_per_pixel,
)
from restorex_core.model import BORDER
from restorex_core.tiling import tile_starts

TINY = RestoreXConfig.tiny()


class Stop(Exception):
    """What a host's interrupt raises (ComfyUI: InterruptProcessingException)."""


def reference_priors(model: RestoreX, x: torch.Tensor):
    return model.enhance_priors(model.extract_priors(x), seed=0)


# -- planning ----------------------------------------------------------------------------------------------


def test_plan_is_untiled_when_the_whole_image_fits_and_tiled_to_the_budget_otherwise():
    cfg, per_px = TINY.restormer, restormer_bytes_per_pixel(TINY.restormer, torch.float32)
    assert per_px == restormer_bytes_per_pixel(TINY.restormer, torch.bfloat16) * 2 - 16  # linear in the itemsize
    whole = 1000 * 1500 * per_px
    assert plan_tiles(cfg, torch.float32, height=1000, width=1500, budget=whole).tile is None
    budget = whole // 4
    plan = plan_tiles(cfg, torch.float32, height=1000, width=1500, budget=budget)
    assert plan.tile is not None and plan.tile % 64 == 0 and plan.tile >= MIN_TILE
    # the tile's pass and the whole-image buffers fit together; the next larger tile would not
    assert plan.tile**2 * per_px + IMAGE_BYTES_PER_PIXEL * 1000 * 1500 <= budget
    assert (plan.tile + 64) ** 2 * per_px + IMAGE_BYTES_PER_PIXEL * 1000 * 1500 > budget
    room = budget - IMAGE_BYTES_PER_PIXEL * 1000 * 1500  # the guide pass fits too, as large as it can
    assert plan.guide_size**2 * 1000 / 1500 * per_px <= room < (plan.guide_size + 16) ** 2 * 1000 / 1500 * per_px
    assert plan_tiles(cfg, torch.float32, height=1000, width=1500, budget=int(whole * 0.7)).guide_size == 1024
    small = plan_tiles(cfg, torch.float32, height=4000, width=6000, budget=2500 * 2**20)  # a 24 MP photo
    assert MIN_TILE <= small.tile < 1024 and small.guide_size < 1024  # the guide pass shrinks to fit as well
    assert small.guide_size**2 * 4000 / 6000 * per_px <= 2500 * 2**20 - IMAGE_BYTES_PER_PIXEL * 24e6
    tiny = plan_tiles(cfg, torch.float32, height=4000, width=6000, budget=2**20)  # less than the image itself
    assert (tiny.tile, tiny.guide_size) == (MIN_TILE, MIN_TILE)  # the smallest; the OOM back-off takes over
    assert plan_tiles(cfg, torch.float32, height=1000, width=1500, batch=4, budget=whole).tile is not None


def test_available_memory_and_out_of_memory_errors_are_recognised():
    assert 0 < available_memory("cpu") < 2**50
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    try:
        torch.empty(2**62, dtype=torch.uint8)  # the CPU allocator's own error
    except RuntimeError as e:
        assert is_out_of_memory(e)
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


# -- automatic tiles and out-of-memory back-off ------------------------------------------------------------


def test_auto_tile_follows_max_memory(tiny_model):
    x = torch.rand(1, 3, 150, 170)
    with torch.inference_mode():
        priors = reference_priors(tiny_model, x)
        untiled = tiny_model.restore(x, priors)
        assert torch.equal(tiny_model.restore(x, priors, tile="auto", max_memory=2**40), untiled)
        budget = 10 * 2**20  # the untiled pass needs ~16 MB with its border: tiles of 128
        plan = plan_tiles(TINY.restormer, torch.float32, height=150 + 2 * BORDER, width=170 + 2 * BORDER,
                          budget=budget)
        assert plan.tile == 128 and plan.guide_size == 128  # the guide pass is held to the budget too
        calls = []
        auto = tiny_model.restore(x, priors, tile="auto", max_memory=budget, progress=lambda d, t: calls.append(d))
        want = tiny_model.restore(x, priors, tile=128, overlap=32, guide_size=128)
    assert torch.equal(auto, want) and calls == [1, 2, 3, 4, 5]  # the guide pass, then 2 x 2 tiles


def fail_above(model: RestoreX, pixels: int, error: Exception):
    """Make the model's Restormer fail like an allocator does on any pass over more than ``pixels`` pixels."""
    forward, seen = model.restormer.forward, []

    def limited(x, priors=None, **kwargs):
        seen.append(tuple(x.shape[-2:]))
        if x.shape[-2] * x.shape[-1] > pixels:
            raise error
        return forward(x, priors, **kwargs)

    model.restormer.forward = limited
    return seen


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate")])
def test_out_of_memory_halves_the_tile_until_it_fits(error):
    model = RestoreX(TINY).eval()
    x = torch.rand(1, 3, 200, 230)
    with torch.inference_mode():
        priors = reference_priors(model, x)
        want = model.restore(x, priors, tile=120, overlap=30, guide_size=128)
        seen = fail_above(model, 15000, error)
        out = model.restore(x, priors, tile="auto", max_memory=2**40)
    assert seen[0] == (216, 248)  # the untiled try: 200 x 230 with its border, padded to a multiple of 8
    # then the tile halved (246 -> 120) and the guide pass too (to 128: 128 x 112), and every tile ran
    assert seen[1] == (112, 128) and set(seen[2:]) == {(120, 120)}
    assert torch.equal(out, want)


def test_out_of_memory_at_the_smallest_tile_and_other_errors_are_raised():
    model = RestoreX(TINY).eval()
    x = torch.rand(1, 3, 100, 100)
    with torch.inference_mode():
        priors = reference_priors(model, x)
        fail_above(model, 0, torch.OutOfMemoryError("CUDA out of memory"))
        with pytest.raises(torch.OutOfMemoryError):
            model.restore(x, priors, tile="auto", max_memory=2**40)
        fail_above(model, 0, RuntimeError("shapes cannot be multiplied"))
        with pytest.raises(RuntimeError, match="shapes"):  # not retried: only memory errors are
            model.restore(x, priors, tile="auto", max_memory=2**40)
        with pytest.raises(ValueError, match="'auto'"):
            model.restore(x, priors, tile="big")


# -- progress ----------------------------------------------------------------------------------------------


def test_progress_counts_the_guide_pass_and_every_tile_of_one_image(tiny_model):
    x = torch.rand(1, 3, 72, 80)
    updates = []
    with torch.inference_mode():
        tiny_model.correct(x, tile=32, overlap=8, progress=lambda d, t: updates.append((d, t)))
        tiles = len(tile_starts(72 + 16, 32, 8)) * len(tile_starts(80 + 16, 32, 8))
        assert updates == [(i, tiles + 1) for i in range(1, tiles + 2)]
        updates.clear()
        tiny_model.correct(x, progress=lambda d, t: updates.append((d, t)))
    assert updates == [(1, 1)]


# -- interrupts ----------------------------------------------------------------------------------------------


class Requester:
    """Counts units of work (transformer blocks, FFEDM steps) and requests an interrupt during the n-th;
    ``after`` counts the units that still started after the request."""

    def __init__(self, model: RestoreX, at: int) -> None:
        self.at, self.units, self.requested, self.after = at, 0, False, 0
        for m in model.modules():
            if isinstance(m, TransformerBlock) or m is model.ffedm:
                m.register_forward_pre_hook(self.unit)

    def unit(self, module, args):
        self.units += 1
        if self.requested:
            self.after += 1
        if self.units == self.at:
            self.requested = True  # the user presses Cancel while this unit runs

    def __call__(self) -> None:
        if self.requested:
            raise Stop


def count_units(tile: int | None) -> int:
    model = RestoreX(TINY).eval()
    requester = Requester(model, at=-1)
    with torch.inference_mode():
        model.correct(torch.rand(1, 3, 72, 80), tile=tile, overlap=8, interrupt=requester)
    return requester.units


@pytest.mark.parametrize("tile", [None, 32])
def test_an_interrupt_stops_before_the_next_block_or_step_in_every_stage(tile):
    total = count_units(tile)
    steps = TINY.ffedm.timesteps  # FFEDM steps come first, then the guide pass, then the tiles
    blocks = 8  # transformer blocks of the tiny Restormer per pass (4 encoder side, 3 decoder, 1 refinement)
    assert total == steps + blocks * (1 if tile is None else 1 + 16)
    # a request during the last block has nothing left to stop; during any other unit, none more may start
    for at in sorted({1, steps, steps + 1, steps + blocks // 2, steps + blocks + 1, total - 1} & set(range(1, total))):
        model = RestoreX(TINY).eval()
        requester = Requester(model, at)
        with torch.inference_mode(), pytest.raises(Stop):
            model.correct(torch.rand(1, 3, 72, 80), tile=tile, overlap=8, interrupt=requester)
        assert requester.after == 0, f"requested during unit {at}: {requester.after} more ran"


# -- the fast kernels against the plain equations --------------------------------------------------------


def plain_block(block: TransformerBlock, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """One transformer block as docs/method.md §5 writes it: LN, eq. 7, MDTA with L2-normalised q and k, GDFN."""
    def ln(norm, t):
        return F.layer_norm(t.permute(0, 2, 3, 1), t.shape[1:2], norm.weight, norm.bias, 1e-5).permute(0, 3, 1, 2)

    def inject(inj, y):
        scale, shift = inj.kernel(prior)[:, :, None, None].chunk(2, dim=1)
        return y * scale + shift

    attn, ffn = block.attn, block.ffn
    b, c, h, w = x.shape
    q, k, v = attn.qkv_dwconv(attn.qkv(inject(block.inject_attn, ln(block.norm1, x)))).chunk(3, dim=1)
    q, k, v = (t.reshape(b, attn.heads, c // attn.heads, h * w) for t in (q, k, v))
    a = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) * attn.temperature).softmax(dim=-1)
    x = x + attn.project_out((a @ v).reshape(b, c, h, w))
    x1, x2 = ffn.dwconv(ffn.project_in(inject(block.inject_ffn, ln(block.norm2, x)))).chunk(2, dim=1)
    return x + ffn.project_out(F.gelu(x1) * x2)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_fast_block_equals_the_plain_equations(batch, layout):
    cfg = TINY.restormer
    for heads in (1, 2, 4):
        block = TransformerBlock(16, heads, cfg).eval()
        with torch.no_grad():
            for p in block.parameters():
                p.normal_(0, 0.5)
        x = torch.randn(batch, 16, 24, 40).contiguous(memory_format=layout)
        prior = torch.randn(batch, cfg.prior_dim)
        with torch.no_grad():
            # equal up to fp32 rounding (the Gram matrix and the folded affine sum in another order)
            torch.testing.assert_close(block(x, prior), plain_block(block, x, prior), atol=5e-4, rtol=1e-3)
        x.requires_grad_(True)  # and it trains: gradients flow through the fused norm and the Gram matrix
        block(x, prior).square().mean().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()


def test_a_clip_frame_that_runs_out_of_memory_halves_the_tile_and_the_clip_goes_on():
    from restorex_core.sequence import correct_sequence

    model = RestoreX(TINY).eval()
    torch.manual_seed(6)
    x = torch.rand(3, 3, 300, 420)
    with torch.inference_mode():
        whole = correct_sequence(model, x, window=3, tile="auto")  # fits: one pass per frame
        seen = fail_above(model, 60000, torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
        out = correct_sequence(model, x, window=3, tile="auto")
    full = (320, 440)  # 300 x 420 with its border, padded to a multiple of 8
    assert seen.count(full) == 3  # each frame tried the planned single pass, ran out of memory ...
    assert all(h * w <= 60000 for h, w in seen if (h, w) != full)  # ... and ran in halved tiles instead
    assert out.shape == x.shape
    assert float((out - whole).abs().mean()) < 0.01  # the same correction, only tiled
