"""CLIP weight loading: every accepted format, the tag/cache/download path, and every refusal (docs/method.md §2.4)."""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import socket
import threading
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from open_clip.model import ModifiedResNet
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from restorex_core import RestoreX, RestoreXConfig, save_checkpoint
from restorex_core.arch.clip_vit import ClipVision, ClipVisionConfig
from restorex_core.clip_formats import hf_to_open_clip, open_clip_to_hf
from restorex_core.errors import CheckpointError, ClipWeightsError, MissingWeightsError
from restorex_core.loading import clip_from_state_dict, convert_openai_to_safetensors, load_clip
from restorex_core.weight_files import read_state_dict

# 64-wide heads, as every OpenAI/open_clip ViT: config_from_state_dict then recovers the config exactly.
TINY = ClipVisionConfig(image_size=64, patch_size=16, width=64, layers=12, heads=1, output_dim=32, input_size=64)
OPENAI_REPO = "models--timm--vit_base_patch32_clip_224.openai"


@pytest.fixture(scope="module")
def tiny() -> ClipVision:
    torch.manual_seed(0)
    clip = ClipVision(TINY)
    with torch.no_grad():  # LayerNorms start at 1/0: randomise them so a swapped key cannot go unnoticed
        for name, p in clip.visual.named_parameters():
            if "ln" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return clip


@pytest.fixture(scope="module")
def images() -> Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Empty caches and a socket guard that records (and refuses) every connection attempt."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise ConnectionRefusedError(f"test is offline: {address}")

    def no_dns(host: object, *args: object, **kwargs: object) -> None:
        attempts.append(host)
        raise socket.gaierror(f"test is offline: {host}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    yield tmp_path
    assert attempts == [], f"network access attempted: {attempts}"


def visual_sd(clip: ClipVision) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in clip.visual.state_dict().items()}


def assert_same_taps(a: ClipVision, b: ClipVision, x: Tensor, atol: float = 0.0) -> None:
    with torch.inference_mode():
        for fa, fb in zip(a(x), b(x), strict=True):
            torch.testing.assert_close(fa, fb, rtol=0.0, atol=atol)


def assert_same_weights(a: ClipVision, b: ClipVision) -> None:
    sa, sb = a.visual.state_dict(), b.visual.state_dict()
    assert set(sa) == set(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------------------------------------- file formats

def test_paper_shaped_tiny_config_constructs_and_loads_with_caller_config(tmp_path: Path) -> None:
    cfg = ClipVisionConfig(width=64, layers=12, heads=2, output_dim=32)  # heads not recoverable: caller's config
    src = ClipVision(cfg)
    save_file({f"visual.{k}": v for k, v in visual_sd(src).items()}, tmp_path / "b32.safetensors")
    loaded = load_clip(tmp_path / "b32.safetensors", config=cfg)
    assert loaded.config == cfg and loaded.visual.transformer.resblocks[0].attn.num_heads == 2
    assert_same_taps(src, loaded, torch.rand(1, 3, 48, 80))


def test_open_clip_full_clip_safetensors(tmp_path: Path, tiny: ClipVision, images: Tensor) -> None:
    sd = {f"visual.{k}": v for k, v in visual_sd(tiny).items()}
    sd |= {"token_embedding.weight": torch.randn(10, 8), "text_projection": torch.randn(8, 4),
           "logit_scale": torch.tensor(4.6), "transformer.resblocks.0.attn.in_proj_weight": torch.randn(24, 8)}
    save_file(sd, tmp_path / "open_clip_model.safetensors")
    loaded = load_clip(str(tmp_path / "open_clip_model.safetensors"))
    assert loaded.config == TINY
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    assert_same_weights(tiny, loaded)
    assert_same_taps(tiny, loaded, images)


def test_visual_only_bin_with_wrappers_and_prefixes(tmp_path: Path, tiny: ClipVision, images: Tensor) -> None:
    wrapped = {"epoch": 3, "state_dict": {f"module._orig_mod.{k}": v for k, v in visual_sd(tiny).items()}}
    torch.save(wrapped, tmp_path / "visual.bin")
    sd, meta = read_state_dict(tmp_path / "visual.bin")
    assert meta == {} and set(sd) == set(tiny.visual.state_dict())
    assert_same_taps(tiny, load_clip(tmp_path / "visual.bin"), images)


def test_caller_config_taps_and_activation_win(tmp_path: Path, tiny: ClipVision) -> None:
    torch.save(visual_sd(tiny), tmp_path / "visual.pth")
    cfg = replace(TINY, taps=(2, 5), quick_gelu=False)
    loaded = load_clip(tmp_path / "visual.pth", config=cfg)
    assert loaded.config.taps == (2, 5) and not loaded.config.quick_gelu
    assert len(loaded(torch.rand(1, 3, 64, 64))) == 2


class _Holder(nn.Module):  # stands in for OpenAI's scripted CLIP: parameters under visual.*, fp16
    def forward(self, x: Tensor) -> Tensor:
        return x


def _torchscript_archive(sd: dict[str, Tensor], path: Path) -> None:
    root = _Holder()
    for key, value in sd.items():
        *parents, leaf = key.split(".")
        module = root
        for name in parents:
            if not hasattr(module, name):
                module.add_module(name, nn.Module())
            module = getattr(module, name)
        module.register_parameter(leaf, nn.Parameter(value.half(), requires_grad=False))
    root.register_buffer("input_resolution", torch.tensor(64))  # OpenAI's archive carries such scalars too
    with warnings.catch_warnings():  # torch.jit is deprecated in torch 2.15; the archive format is OpenAI's
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(root).save(str(path))


def test_openai_torchscript_archive_fp16_to_fp32(tmp_path: Path, tiny: ClipVision, images: Tensor) -> None:
    _torchscript_archive({f"visual.{k}": v for k, v in visual_sd(tiny).items()}, tmp_path / "ViT-B-32.pt")
    with pytest.raises(RuntimeError, match="TorchScript"), warnings.catch_warnings():  # why it needs its own path
        warnings.simplefilter("ignore", UserWarning)
        torch.load(tmp_path / "ViT-B-32.pt", weights_only=True)
    loaded = load_clip(tmp_path / "ViT-B-32.pt")
    ref = tiny.visual.state_dict()
    for k, v in loaded.visual.state_dict().items():
        assert v.dtype == torch.float32
        assert torch.equal(v, ref[k].half().float())  # exactly the fp16-rounded weights
    assert_same_taps(tiny, loaded, images, atol=0.05)

    out = convert_openai_to_safetensors(tmp_path / "ViT-B-32.pt", tmp_path / "conv" / "clip-vit-b32.safetensors")
    with safe_open(out, "pt") as f:
        assert f.metadata()["format"] == "open_clip-visual"
        assert set(f.keys()) == {f"visual.{k}" for k in ref}
        assert all(f.get_tensor(k).dtype == torch.float32 for k in f.keys())
    assert [p.name for p in out.parent.iterdir()] == ["clip-vit-b32.safetensors"]  # no temp file left
    assert_same_weights(loaded, load_clip(out))


def test_hf_key_names_and_bit_exact_round_trip(tiny: ClipVision) -> None:
    sd = visual_sd(tiny)
    hf = open_clip_to_hf(sd)
    for key in ("vision_model.embeddings.patch_embedding.weight", "vision_model.embeddings.class_embedding",
                "vision_model.embeddings.position_embedding.weight", "vision_model.pre_layrnorm.weight",
                "vision_model.encoder.layers.11.self_attn.q_proj.weight",
                "vision_model.encoder.layers.0.self_attn.v_proj.bias",
                "vision_model.encoder.layers.0.self_attn.out_proj.weight",
                "vision_model.encoder.layers.3.layer_norm1.weight", "vision_model.encoder.layers.3.layer_norm2.bias",
                "vision_model.encoder.layers.0.mlp.fc1.weight", "vision_model.encoder.layers.0.mlp.fc2.bias",
                "vision_model.post_layernorm.weight", "visual_projection.weight"):
        assert key in hf, key
    assert hf["visual_projection.weight"].shape == (TINY.output_dim, TINY.width)
    assert hf["vision_model.encoder.layers.0.self_attn.k_proj.weight"].shape == (TINY.width, TINY.width)
    assert len(hf) == len(sd) + 12 * 4  # in_proj weight and bias each split into three
    back = hf_to_open_clip(hf)
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)


def test_hf_clip_model_safetensors(tmp_path: Path, tiny: ClipVision, images: Tensor,
                                  caplog: pytest.LogCaptureFixture) -> None:
    hf = open_clip_to_hf(visual_sd(tiny))
    hf |= {"text_model.embeddings.token_embedding.weight": torch.randn(10, 8), "logit_scale": torch.tensor(4.6),
           "text_projection.weight": torch.randn(4, 8), "vision_model.embeddings.position_ids": torch.arange(17)[None]}
    save_file(hf, tmp_path / "model.safetensors")
    with caplog.at_level(logging.INFO, logger="restorex_core.loading"):
        loaded = load_clip(tmp_path / "model.safetensors")
    assert "format Hugging Face CLIPModel" in caplog.text
    assert loaded.config == TINY
    assert_same_weights(tiny, loaded)
    assert_same_taps(tiny, loaded, images)


def test_hf_clip_vision_model_safetensors_without_head(tmp_path: Path, tiny: ClipVision, images: Tensor) -> None:
    hf = {k: v for k, v in open_clip_to_hf(visual_sd(tiny)).items() if k != "visual_projection.weight"}
    save_file(hf, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"hidden_act": "gelu"}))  # HF records the activation here
    loaded = load_clip(tmp_path / "model.safetensors", config=TINY)
    assert loaded.visual.proj is None and loaded.config.quick_gelu  # the caller's config wins
    assert_same_taps(tiny, loaded, images)
    assert not load_clip(tmp_path / "model.safetensors").config.quick_gelu  # inferred: config.json says gelu


def test_parity_with_open_clip_forward_intermediates(tmp_path: Path, tiny: ClipVision, images: Tensor) -> None:
    save_file(open_clip_to_hf(visual_sd(tiny)), tmp_path / "model.safetensors")
    clip = load_clip(tmp_path / "model.safetensors")
    with torch.inference_mode():
        ours = clip(images)
        ref = clip.visual.forward_intermediates(
            clip.preprocess(images), indices=[t - 1 for t in clip.config.taps], stop_early=True,
            intermediates_only=True, output_fmt="NLC", output_extra_tokens=True)
    assert len(ours) == len(ref["image_intermediates"]) == 4
    for o, patches, prefix in zip(ours, ref["image_intermediates"], ref["image_intermediates_prefix"], strict=True):
        assert o.shape == (2, TINY.num_tokens, TINY.width)
        torch.testing.assert_close(o, torch.cat([prefix, patches], dim=1), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------- tags, caches, downloads

def test_tag_without_download_names_the_file_and_stays_offline(offline: Path) -> None:
    with pytest.raises(MissingWeightsError) as e:
        load_clip("openai")
    msg = str(e.value)
    for part in ("open_clip_model.safetensors", "timm/vit_base_patch32_clip_224.openai", "models/clip_vision",
                 "ViT-B-32.pt", "allow_download=True", str(offline / "hub")):
        assert part in msg, part
    with pytest.raises(MissingWeightsError, match="laion/CLIP-ViT-B-32-laion2B-s34B-b79K"):
        load_clip("ViT-B-32/laion2b_s34b_b79k")


def test_unknown_or_foreign_tags(offline: Path) -> None:
    with pytest.raises(ClipWeightsError, match="laion2b_s34b_b79k"):
        load_clip("openai_v2")
    with pytest.raises(ClipWeightsError, match="ViT-B/32"):
        load_clip("ViT-L-14/openai")
    with pytest.raises(MissingWeightsError, match="neither an existing file"):
        load_clip("models/clip_vision/missing")


def _place_in_hub_cache(hub: Path, repo: str, name: str, data: bytes) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    (hub / repo / "refs").mkdir(parents=True)
    (hub / repo / "refs" / "main").write_text(commit)
    (hub / repo / "snapshots" / commit).mkdir(parents=True)
    (hub / repo / "snapshots" / commit / name).write_bytes(data)


def test_tag_found_in_caches(offline: Path, tiny: ClipVision, images: Tensor) -> None:
    save_file({f"visual.{k}": v for k, v in visual_sd(tiny).items()}, offline / "w.safetensors")
    _place_in_hub_cache(offline / "hub", OPENAI_REPO, "open_clip_model.safetensors",
                        (offline / "w.safetensors").read_bytes())
    clip = load_clip("ViT-B-32/openai")
    assert clip.config.quick_gelu  # the openai tag was trained with QuickGELU
    assert_same_taps(tiny, clip, images)

    legacy = offline / "home" / ".cache" / "clip"  # open_clip's URL cache for OpenAI's archive
    legacy.mkdir(parents=True)
    _torchscript_archive({f"visual.{k}": v for k, v in visual_sd(tiny).items()}, legacy / "ViT-B-32.pt")
    with pytest.raises(MissingWeightsError):
        load_clip("laion2b_s34b_b79k")  # no URL fallback for laion tags
    (offline / "hub" / OPENAI_REPO).rename(offline / "hub" / "moved")
    assert_same_taps(tiny, load_clip("openai"), images, atol=0.05)


class _FakeHub(http.server.BaseHTTPRequestHandler):
    files: dict[str, tuple[bytes, str]] = {}  # URL path -> (content, etag)

    def _reply(self, body: bool) -> None:
        data, etag = self.files.get(self.path, (b"", ""))
        self.send_response(200 if etag else 404)
        self.send_header("X-Repo-Commit", "f" * 40)
        if etag:
            self.send_header("ETag", f'"{etag}"')
        else:
            self.send_header("X-Error-Code", "EntryNotFound")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self) -> None:  # http.server's naming
        self._reply(False)

    def do_GET(self) -> None:
        self._reply(True)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from huggingface_hub import constants

    if constants.is_offline_mode():
        pytest.skip("HF_HUB_OFFLINE was set before huggingface_hub was imported")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setattr(_FakeHub, "files", {})
    yield _FakeHub.files
    server.shutdown()
    server.server_close()


def test_allow_download_fetches_verifies_and_caches(fake_hub: dict, tmp_path: Path, tiny: ClipVision,
                                                    images: Tensor) -> None:
    torch.save({f"visual.{k}": v for k, v in visual_sd(tiny).items()}, tmp_path / "w.bin")
    data = (tmp_path / "w.bin").read_bytes()
    # this repo has only the .bin: the safetensors request 404s and the loader falls back, as open_clip does
    fake_hub["/laion/CLIP-ViT-B-32-laion2B-s34B-b79K/resolve/main/open_clip_pytorch_model.bin"] = (
        data, hashlib.sha256(data).hexdigest())
    clip = load_clip("laion2b_s34b_b79k", allow_download=True)
    assert not clip.config.quick_gelu  # laion2b was trained with GELU
    assert_same_weights(tiny, clip)
    fake_hub.clear()  # now cached: loads without the hub
    assert_same_weights(tiny, load_clip("laion2b_s34b_b79k"))


def test_download_with_wrong_checksum_or_missing_file(fake_hub: dict, tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError, match="has none of"):
        load_clip("openai", allow_download=True)
    fake_hub["/timm/vit_base_patch32_clip_224.openai/resolve/main/open_clip_model.safetensors"] = (
        b"not the advertised bytes", "ab" * 32)
    with pytest.raises(CheckpointError, match="SHA256.*download it again"):
        load_clip("openai", allow_download=True)


# ------------------------------------------------------------------------------------------------ refusals

def test_wrong_vit_shape_against_caller_config() -> None:
    big = torch.zeros(1)  # ViT-L/14 shapes as stride-0 views: only shapes are read before the refusal
    sd = {"visual.conv1.weight": big.expand(1024, 3, 14, 14), "visual.class_embedding": big.expand(1024),
          "visual.positional_embedding": big.expand(257, 1024), "visual.ln_pre.weight": big.expand(1024),
          "visual.transformer.resblocks.0.attn.in_proj_weight": big.expand(3072, 1024),
          "visual.transformer.resblocks.0.mlp.c_fc.weight": big.expand(4096, 1024),
          "visual.proj": big.expand(1024, 768)}
    sd |= {f"visual.transformer.resblocks.{i}.ln_1.weight": big.expand(1024) for i in range(24)}
    with pytest.raises(ClipWeightsError) as e:
        clip_from_state_dict(sd, config=ClipVisionConfig(), origin="vit-l.safetensors")
    for part in ("ViT-L/14", "width=1024 (expected 768)", "ViT-B/32 image encoder", "open_clip_model.safetensors"):
        assert part in str(e.value), part


def _save(tmp_path: Path, name: str, sd: dict[str, Tensor]) -> Path:
    save_file(sd, tmp_path / name)
    return tmp_path / name


def test_foreign_checkpoints_say_what_they_are(tmp_path: Path) -> None:
    resnet = ModifiedResNet(layers=(1, 1, 1, 1), output_dim=32, heads=2, image_size=64, width=8)
    rn = _save(tmp_path, "rn50.safetensors", {f"visual.{k}": v for k, v in resnet.state_dict().items()})
    # the contract's test checkpoint; its tiny trainable CLIP is stored inside, still not a CLIP file
    restorex = save_checkpoint(RestoreX(RestoreXConfig.tiny()), tmp_path / "restorex.safetensors")
    restormer_keys = ("patch_embed.proj.weight", "encoder_level1.0.attn.temperature", "down1_2.body.0.weight",
                      "latent.0.attn.temperature", "refinement.0.attn.temperature", "output.weight")
    torch.save({"params": {k: torch.randn(2, 2) for k in restormer_keys}}, tmp_path / "restormer.pth")
    rand = _save(tmp_path, "random.safetensors", {"foo.weight": torch.randn(3, 3), "bar.bias": torch.randn(3)})
    for path, what in ((rn, "ResNet CLIP"), (restorex, "RestoreX checkpoint"),
                       (tmp_path / "restormer.pth", "Restormer checkpoint"), (rand, "unrecognised state dict")):
        with pytest.raises(ClipWeightsError) as e:
            load_clip(path, config=TINY)
        msg = str(e.value)
        assert what in msg and "expected a CLIP ViT image encoder" in msg and "ViT-B-32.pt" in msg, msg


def test_corrupt_truncated_unsupported_and_missing_files(tmp_path: Path, tiny: ClipVision) -> None:
    good = _save(tmp_path, "good.safetensors", visual_sd(tiny))
    data = good.read_bytes()
    (tmp_path / "half.safetensors").write_bytes(data[: len(data) // 2])
    noise = torch.randint(0, 256, (4096,), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    (tmp_path / "noise.safetensors").write_bytes(noise.numpy().tobytes())
    (tmp_path / "noise.pt").write_bytes(noise.numpy().tobytes())
    (tmp_path / "pickle-noise.bin").write_bytes(b"\x80\x02" + noise.numpy().tobytes())  # passes the magic check
    torch.save(visual_sd(tiny), tmp_path / "good.pt")
    pt = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "half.ckpt").write_bytes(pt[: len(pt) // 2])
    (tmp_path / "empty.bin").write_bytes(b"")
    for name in ("half.safetensors", "noise.safetensors", "noise.pt", "pickle-noise.bin", "half.ckpt", "empty.bin"):
        with pytest.raises(CheckpointError, match="truncated or corrupt.*re-download it or re-export it"):
            load_clip(tmp_path / name)
        with pytest.raises(CheckpointError):
            read_state_dict(tmp_path / name)
    (tmp_path / "weights.onnx").write_bytes(data)
    with pytest.raises(CheckpointError, match=r"\.safetensors, \.pt, \.pth, \.bin, \.ckpt"):
        read_state_dict(tmp_path / "weights.onnx")
    with pytest.raises(MissingWeightsError, match="nowhere.safetensors"):
        load_clip(tmp_path / "nowhere.safetensors")
    assert isinstance(MissingWeightsError("x"), FileNotFoundError)


def test_pickled_objects_and_non_state_dicts_are_refused(tmp_path: Path) -> None:
    torch.save({"state_dict": {"w": torch.ones(1)}, "opt": nn.Linear(1, 1)}, tmp_path / "objects.pt")
    with pytest.raises(CheckpointError, match="pickled Python objects.*safetensors"):
        read_state_dict(tmp_path / "objects.pt")
    torch.save(torch.ones(3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match="no state dict"):
        read_state_dict(tmp_path / "tensor.pt")
