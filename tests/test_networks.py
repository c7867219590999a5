"""The networks: parameter counts, eq. 7, prior routing, FFT packing, config round trips."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from restorex_core.arch import pem as pem_mod
from restorex_core.arch import prior_diffusion as ffedm_mod
from restorex_core.arch import restormer as rst
from restorex_core.arch.clip_vit import ClipVision, ClipVisionConfig
from restorex_core.arch.clip_vit import config_from_state_dict as clip_config_from_sd

TINY = dict(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 2, 2), prior_dim=16)


@pytest.mark.slow
def test_paper_restormer_parameter_counts_match_method_md():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(rst.PriorRestormer(rst.RestormerConfig(prior_dim=0))) == 10_456_716
    assert count(rst.PriorRestormer(rst.RestormerConfig())) == 13_110_924


@pytest.mark.slow
def test_paper_model_builds_with_expected_sizes():
    from restorex_core import RestoreX, RestoreXConfig

    m = RestoreX(RestoreXConfig.paper())
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    assert count(m.restormer) == 13_110_924
    assert count(m.pem_input) == 1_050_624  # docs/method.md §3.2: 262,656 per head
    assert count(m.ffedm) == 4 * 267_288  # docs/method.md §4.3
    assert all(not p.requires_grad for p in m.clip.parameters())


def test_injection_is_eq7_by_hand():
    torch.manual_seed(1)
    inj = rst.PriorInjection(prior_dim=5, channels=3, scale_offset=False)
    y, p = torch.randn(2, 3, 4, 4), torch.randn(2, 5)
    w = inj.kernel.weight  # (6, 5): first half W1, second half W2
    w1p, w2p = p @ w[:3].T, p @ w[3:].T  # (B, C)
    expected = w1p[:, :, None, None] * y + w2p[:, :, None, None]
    assert torch.allclose(inj(y, p), expected, atol=1e-6)
    inj.scale_offset = True
    assert torch.allclose(inj(y, p), expected + y, atol=1e-6)


def test_block_applies_injection_to_layernormed_input():
    cfg = rst.RestormerConfig(**TINY)
    block = rst.TransformerBlock(8, 1, cfg)
    x, p = torch.randn(1, 8, 8, 8), torch.randn(1, 16)
    y = block.inject_attn(block.norm1(x), p)
    x1 = x + block.attn(y)
    expected = x1 + block.ffn(block.inject_ffn(block.norm2(x1), p))
    assert torch.allclose(block(x, p), expected, atol=1e-6)


def test_layernorm_matches_per_pixel_formula():
    ln = rst.LayerNorm2d(6)
    torch.nn.init.normal_(ln.weight)
    torch.nn.init.normal_(ln.bias)
    x = torch.randn(2, 6, 5, 7)
    mu = x.mean(1, keepdim=True)
    var = x.var(1, keepdim=True, unbiased=False)
    ref = (x - mu) / torch.sqrt(var + 1e-5) * ln.weight[:, None, None] + ln.bias[:, None, None]
    assert torch.allclose(ln(x), ref, atol=1e-5)


@pytest.mark.parametrize(
    "mapping, expected",
    [
        ("level", {"encoder_level1": 0, "encoder_level2": 1, "encoder_level3": 2, "latent": 3,
                   "decoder_level3": 2, "decoder_level2": 1, "decoder_level1": 0, "refinement": 0}),
        ("sequential", {"encoder_level1": 0, "encoder_level2": 0, "encoder_level3": 1, "latent": 1,
                        "decoder_level3": 2, "decoder_level2": 2, "decoder_level1": 3, "refinement": 3}),
    ],
)
def test_each_prior_reaches_the_levels_its_mapping_names(mapping, expected):
    net = rst.PriorRestormer(rst.RestormerConfig(**TINY, mapping=mapping))
    priors = [torch.full((1, 16), float(i + 1)) for i in range(4)]  # prior i is all (i + 1)
    seen = {}
    for level in rst.LEVELS:
        for block in getattr(net, level).blocks:
            for inj in (block.inject_attn, block.inject_ffn):
                inj.kernel.register_forward_hook(
                    lambda mod, inp, out, s=level: seen.setdefault(s, set()).add(inp[0][0, 0].item()))
    net(torch.rand(1, 3, 16, 16), priors)
    assert seen == {level: {float(i + 1)} for level, i in expected.items()}


def test_restormer_state_dict_keys_are_the_checkpoint_format():
    """The Level modules' attribute names are the checkpoint keys: renaming a class must not move them."""
    sd = rst.PriorRestormer(rst.RestormerConfig(**TINY)).state_dict()
    assert {k.split(".")[0] for k in sd} == {*rst.LEVELS, "patch_embed", "output", "down1_2", "down2_3", "down3_4",
                                             "up4_3", "up3_2", "up2_1", "reduce_chan_level3", "reduce_chan_level2"}
    block = {"norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "attn.temperature", "attn.qkv.weight",
             "attn.qkv_dwconv.weight", "attn.project_out.weight", "ffn.project_in.weight", "ffn.dwconv.weight",
             "ffn.project_out.weight", "inject_attn.kernel.weight", "inject_ffn.kernel.weight"}
    for level in rst.LEVELS:
        assert {k.removeprefix(f"{level}.blocks.0.") for k in sd if k.startswith(f"{level}.blocks.0.")} == block
    assert len(sd) == 114


def test_concat_mapping_feeds_all_priors_everywhere():
    net = rst.PriorRestormer(rst.RestormerConfig(**TINY, mapping="concat"))
    assert net.encoder_level1.blocks[0].inject_attn.kernel.in_features == 64
    priors = [torch.randn(2, 16) for _ in range(4)]
    assert net(torch.rand(2, 3, 16, 16), priors).shape == (2, 3, 16, 16)


def test_changing_one_prior_changes_only_its_levels():
    net = rst.PriorRestormer(rst.RestormerConfig(**TINY))
    x = torch.rand(1, 3, 16, 16)
    base = [torch.randn(1, 16) for _ in range(4)]
    out = net(x, base)
    for i in range(4):
        moved = [p + (5.0 if j == i else 0.0) for j, p in enumerate(base)]
        assert not torch.allclose(net(x, moved), out), f"prior {i} has no effect"


def test_no_prior_restormer_ignores_priors_and_has_no_kernels():
    net = rst.PriorRestormer(rst.RestormerConfig(**{**TINY, "prior_dim": 0}))
    assert not any("inject" in k for k in net.state_dict())
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(net(x), net(x, None))


@pytest.mark.parametrize("size", [8, 16, 24, 32, 40, 48, 56, 64])
def test_restormer_keeps_every_multiple_of_8(size):
    net = rst.PriorRestormer(rst.RestormerConfig(**TINY))
    assert net(torch.rand(1, 3, size, size + 8), [torch.randn(1, 16)] * 4).shape == (1, 3, size, size + 8)


def test_activation_checkpointing_gives_same_outputs_and_gradients():
    cfg = rst.RestormerConfig(**TINY)
    a = rst.PriorRestormer(cfg)
    b = rst.PriorRestormer(dataclasses.replace(cfg, checkpointing=True))
    b.load_state_dict(a.state_dict())
    x, p = torch.rand(1, 3, 16, 16), [torch.randn(1, 16) for _ in range(4)]
    ya, yb = a(x, p), b(x, p)
    assert torch.allclose(ya, yb, atol=1e-6)
    ya.square().mean().backward()
    yb.square().mean().backward()
    ga, gb = a.patch_embed.weight.grad, b.patch_embed.weight.grad
    assert torch.allclose(ga, gb, atol=1e-6)


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "training" / "configs").glob("*.toml")),
                         ids=lambda p: p.name)
def test_every_recipe_config_round_trips_through_the_checkpoint_header(path):
    """PEM, FFEDM and the Restormer have no config_from_state_dict: T, the betas, the objective, the PEM token
    and the Restormer's mapping are not in any tensor's shape. A RestoreX checkpoint carries its config in
    its header (checkpoint.save_checkpoint), so that header is what must round-trip, for every recipe."""
    from restorex_core.config import RestoreXConfig
    from training.config import load_config, model_config

    config = model_config(load_config(path).model)
    assert RestoreXConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_clip_config_round_trips_through_state_dict():
    cfg = ClipVisionConfig(image_size=64, patch_size=16, width=64, layers=4, heads=1, output_dim=16,
                           taps=(1, 2, 3, 4), input_size=64)
    sd = ClipVision(cfg).visual.state_dict()
    assert clip_config_from_sd(sd) == cfg


def test_pem_pools_tokens_as_configured():
    tokens = torch.randn(2, 5, 4)
    assert torch.equal(pem_mod.pool_tokens(tokens, "cls"), tokens[:, 0])
    assert torch.allclose(pem_mod.pool_tokens(tokens, "mean"), tokens[:, 1:].mean(1))
    assert pem_mod.pool_tokens(tokens, "cls+mean").shape == (2, 8)


@pytest.mark.parametrize("d", [16, 17, 256])
def test_rfft_packing_round_trip_and_scale(d):
    p = torch.randn(3, 4, d)
    z = ffedm_mod.to_freq(p)
    assert z.shape == (3, 4, 2 * (d // 2 + 1))
    assert torch.allclose(ffedm_mod.from_freq(z, d), p, atol=1e-5)
    # orthonormal transform: coefficients have the prior's scale (within sqrt(2) from the half spectrum)
    ratio = z.square().sum(-1) / p.square().sum(-1)
    assert bool(((ratio >= 0.49) & (ratio <= 1.01)).all())


def test_ffedm_without_fft_is_identity_transform():
    m = ffedm_mod.FFEDM(ffedm_mod.FFEDMConfig(prior_dim=16, fft=False))
    p = torch.randn(2, 4, 16)
    assert torch.equal(m.encode(p), p) and torch.equal(m.decode(p), p)
    assert m.denoisers[0].mlp[0].in_features == 2 * 16 + 1


def test_denoiser_time_input_is_t_over_10T():
    den = ffedm_mod.Denoiser(width=4, n_res=1, timesteps=4)
    x, c = torch.randn(1, 4), torch.randn(1, 4)
    first = den.mlp[0]
    seen = []
    first.register_forward_hook(lambda m, i, o: seen.append(i[0][0, 4].item()))
    den(x, torch.tensor([3]), c)
    assert seen == [pytest.approx(3 / 40)]
