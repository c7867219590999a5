"""The training package on tiny configs (CPU): both stages end to end, exact resume, losses, stage-2 setup."""

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restorex_core import MissingWeightsError, RestoreX, RestoreXConfig, load_checkpoint, save_checkpoint
from training.losses import LossWeights, Objective, sap_loss
from training.train import (
    TrainStream,
    build_model,
    load_config,
    main,
    model_config,
    procedural_photo,
    set_train_mode,
    train,
)

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"
TINY = """
[model]
preset = "tiny"
[train]
stage = {stage}
out_dir = "{out}"
init_from = "{init}"
max_steps = {steps}
lr = 2e-3
grad_clip = 0.0
ema_decay = 0.9
log_every = 1
val_every = 0
ckpt_every = 2
[data]
kind = "{kind}"
root = "{root}"
crop = 32
batch_size = 2
num_workers = 0
"""


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run 20x faster on one thread when the CPU is shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_config(tmp_path: Path, *, stage: int = 1, steps: int = 4, kind: str = "procedural", root: str = "",
                init: str = "", name: str = "run", overrides: tuple[str, ...] = ()):
    path = tmp_path / f"{name}.toml"
    path.write_text(TINY.format(stage=stage, out=(tmp_path / name).as_posix(), init=init, steps=steps,
                                kind=kind, root=root))
    return load_config(path, list(overrides))


def part_unchanged(done: RestoreX, start: RestoreX, part: str) -> bool:
    """Whether submodule ``part`` of ``done`` holds exactly the weights it had in ``start``."""
    before = start.state_dict()
    return all(torch.equal(p, before[f"{part}.{k}"]) for k, p in getattr(done, part).state_dict().items())


def write_pairs(root: Path, n: int = 6) -> Path:
    """Generated well-exposed photos (gt/) and darkened or brightened copies (input/) as PNGs, in the
    generic paired layout: n training pairs under train/, two validation pairs under valid/."""
    for i in range(n + 2):
        split = "train" if i < n else "valid"
        gt = procedural_photo(i, 48).permute(1, 2, 0).numpy()
        lq = gt**2.2 * 0.6 if i % 2 else 1 - (1 - gt) ** 2.5
        for sub, img in (("input", lq), ("gt", gt)):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.round(img * 255).astype(np.uint8)).save(root / split / sub / f"{i:02d}.png")
    return root


def test_overrides_and_inheritance_parse(tmp_path):
    (tmp_path / "base.toml").write_text('[train]\nlr = 1e-3\nmax_steps = 10\n[data]\nkind = "stacks"\n'
                                        '[model]\npreset = "tiny"\n')
    (tmp_path / "child.toml").write_text('inherit = "base.toml"\n[train]\nstage = 2\n')
    cfg = load_config(tmp_path / "child.toml", ["--train.lr=1e-4", "--model.restormer.dim=16", "--data.root=/x/y",
                                                "--data.val_scenes=[\"a/b\", \"c\"]", "--train.bf16=false",
                                                "--model.clip.taps=[1,2]", "--model.pem.num_priors=2",
                                                "--model.ffedm.num_priors=2", "--model.restormer.num_priors=2"])
    assert cfg.train.stage == 2 and cfg.train.max_steps == 10 and cfg.train.lr == 1e-4
    assert cfg.data.root == "/x/y" and cfg.data.val_scenes == ("a/b", "c") and cfg.train.bf16 is False
    mcfg = model_config(cfg.model)
    assert mcfg.restormer.dim == 16 and mcfg.clip.taps == (1, 2) and mcfg.clip.width == 32  # rest of "tiny"
    with pytest.raises(ValueError, match="unknown keys"):
        load_config(tmp_path / "child.toml", ["--train.learning_rate=1"])
    with pytest.raises(ValueError, match="--section.key=value"):
        load_config(tmp_path / "child.toml", ["--train.lr", "1e-4"])
    with pytest.raises(ValueError, match="should be an int"):
        load_config(tmp_path / "child.toml", ["--train.max_steps=many"])


def test_int_fields_refuse_floats_and_model_sections_are_typed(tmp_path):
    (tmp_path / "c.toml").write_text('[model]\npreset = "tiny"\n')
    with pytest.raises(ValueError, match=r"train.max_steps = 1000.0 must be a whole number.*write 1000"):
        load_config(tmp_path / "c.toml", ["--train.max_steps=1e3"])
    assert load_config(tmp_path / "c.toml", ["--train.lr=1"]).train.lr == 1.0  # an int is a fine float
    with pytest.raises(ValueError, match=r"model.restormer.dim = 16.0 must be a whole number"):
        load_config(tmp_path / "c.toml", ["--model.restormer.dim=16.0"])
    with pytest.raises(ValueError, match=r"model.clip.taps\[1\] = 2.5 should be an int"):
        load_config(tmp_path / "c.toml", ["--model.clip.taps=[1, 2.5]"])
    with pytest.raises(ValueError, match=r"model.clip.trainable = 'yes' should be a bool"):
        load_config(tmp_path / "c.toml", ["--model.clip.trainable=yes"])
    with pytest.raises(ValueError, match=r"unknown keys \['width'\] in \[model.ffedm\]"):
        load_config(tmp_path / "c.toml", ["--model.ffedm.width=3"])
    with pytest.raises(ValueError, match=r"\[model\] takes preset and the sections"):
        load_config(tmp_path / "c.toml", ["--model.unet.dim=3"])
    with pytest.raises(ValueError, match="bad \\[model\\]: ffedm.objective"):
        load_config(tmp_path / "c.toml", ["--model.ffedm.objective=v"])


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_builds(path):
    cfg = load_config(path)
    mcfg = model_config(cfg.model)
    if cfg.train.stage == 2:
        assert cfg.train.init_from, "a stage-2 recipe names its stage-1 export"
    if path.name.startswith("default_"):
        assert mcfg.clip.trainable and "${RESTOREX_DATA}" in cfg.data.root  # no CLIP file, no hard-coded path
        # the configs whose export is the bundled file write it in fp16; intermediate exports may stay fp32
        bundled = cfg.train.export_name == "restorex-default.safetensors"
        assert cfg.data.val_scenes and (not bundled or cfg.train.export_dtype == "float16")
        n_params = sum(p.numel() for p in RestoreX(mcfg).state_dict().values())
        assert 2 * n_params < 30e6, "the bundled fp16 weights must stay under 30 MB"


def test_sap_loss_reaches_the_image_and_not_a_frozen_clip():
    cfg = RestoreXConfig.tiny()
    frozen = RestoreX(cfg.replace(clip={"trainable": False}))
    out = torch.rand(2, 3, 40, 40, requires_grad=True)
    gt = torch.rand(2, 3, 40, 40)
    for tokens in ("prior", "all"):
        out.grad = None
        loss = sap_loss(frozen.clip, out, gt, tokens=tokens)
        loss.backward()
        assert loss.item() > 0 and out.grad.abs().sum() > 0
        assert all(p.grad is None for p in frozen.clip.parameters())
    assert sap_loss(frozen.clip, gt, gt).item() == 0.0
    trainable = RestoreX(cfg)  # a trained encoder gets no L_SAP gradient unless asked (feature collapse)
    sap_loss(trainable.clip, out, gt).backward()
    assert all(p.grad is None for p in trainable.clip.parameters())
    sap_loss(trainable.clip, out, gt, encoder_grad=True).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable.clip.parameters())


def test_stage2_copies_pem_s1_and_freezes_the_teacher(tmp_path):
    stage1 = RestoreX(RestoreXConfig.tiny())
    with torch.no_grad():
        for p in stage1.pem_reference.parameters():
            p.add_(torch.randn_like(p))
    init = save_checkpoint(stage1, tmp_path / "s1.safetensors")
    cfg = tiny_config(tmp_path, stage=2, init=init.as_posix())
    model, trained = build_model(cfg)
    assert set(trained) == {"pem_input", "ffedm", "restormer"}
    for name, p in model.pem_input.state_dict().items():
        assert torch.equal(p, stage1.pem_reference.state_dict()[name])
        assert torch.equal(p, model.pem_reference.state_dict()[name])
    assert torch.equal(model.restormer.output.weight, stage1.restormer.output.weight)
    set_train_mode(model, trained)
    assert not model.clip.training and not model.pem_reference.training and model.restormer.training
    objective = Objective(model, stage=2, weights=LossWeights())
    terms = objective(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    terms["loss"].backward()
    assert {"prior", "l1", "sap", "loss"} <= set(terms)
    assert all(p.grad is None for m in (model.clip, model.pem_reference) for p in m.parameters())
    assert all(p.grad is not None for m in (model.pem_input, model.ffedm) for p in m.parameters())
    warm = Objective(model, stage=2, weights=LossWeights())(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32),
                                                          diffusion_only=True)
    assert set(warm) == {"prior", "loss"}


def test_stage2_init_all_fine_tunes_every_weight_of_a_finished_model(tmp_path):
    finished = RestoreX(RestoreXConfig.tiny())
    with torch.no_grad():
        for p in (*finished.pem_input.parameters(), *finished.ffedm.parameters()):
            p.add_(torch.randn_like(p))
    init = save_checkpoint(finished, tmp_path / "v2.safetensors")
    model, trained = build_model(tiny_config(tmp_path, stage=2, init=init.as_posix(),
                                             overrides=("--train.init_all=true",)))
    assert set(trained) == {"pem_input", "ffedm", "restormer"}
    for name, p in model.state_dict().items():  # nothing re-initialised or copied: PEM-S2 and FFEDM kept
        assert torch.equal(p, finished.state_dict()[name]), name
    fresh, _ = build_model(tiny_config(tmp_path, stage=2, init=init.as_posix(), name="fresh"))
    first = next(iter(finished.pem_input.state_dict()))  # the default set-up copies PEM-S1 over PEM-S2 instead
    assert not torch.equal(fresh.pem_input.state_dict()[first], finished.pem_input.state_dict()[first])


def test_freeze_holds_the_prior_path_while_the_restormer_learns(tmp_path):
    finished = RestoreX(RestoreXConfig.tiny())
    init = save_checkpoint(finished, tmp_path / "v3.safetensors")
    cfg = tiny_config(tmp_path, stage=2, init=init.as_posix(), steps=3,
                      overrides=("--train.init_all=true", '--train.freeze=["pem_input", "ffedm"]'))
    model, trained = build_model(cfg)
    assert trained == ("restormer",)
    set_train_mode(model, trained)
    assert not model.ffedm.training and not model.pem_input.training and model.restormer.training
    train(cfg)
    done = load_checkpoint(tmp_path / "run" / "restorex.safetensors")
    for part in ("pem_input", "ffedm", "restormer"):
        assert part_unchanged(done, finished, part) == (part != "restormer"), part
    with pytest.raises(ValueError, match="leaves nothing to train"):
        build_model(tiny_config(tmp_path, stage=2, init=init.as_posix(), name="all",
                                overrides=('--train.freeze=["pem_input", "ffedm", "restormer"]',)))
    with pytest.raises(ValueError, match="unknown submodules"):
        tiny_config(tmp_path, stage=2, init=init.as_posix(), name="typo", overrides=('--train.freeze=["ffdem"]',))


def test_cast_loss_measures_a_tint_and_pulls_it_out():
    from training.losses import cast_loss

    target = torch.rand(2, 3, 16, 16)
    assert float(cast_loss(target, target)) == 0.0
    warm = (target * torch.tensor([1.1, 1.0, 0.85]).view(1, 3, 1, 1)).requires_grad_(True)
    loss = cast_loss(warm, target)
    assert float(loss.detach()) > 0.01
    loss.backward()
    assert warm.grad[:, 2].mean() < 0 < warm.grad[:, 0].mean()  # descent adds blue and takes red away


def test_highlight_loss_weighs_only_where_the_input_is_clipped():
    from training.losses import highlight_loss

    lq = torch.full((1, 3, 16, 16), 0.4)
    lq[..., :8, :] = 1.0  # a blown sky over the top half
    target = torch.rand(1, 3, 16, 16)
    out = target.clone()
    out[..., 8:, :] += 0.3  # wrong only below the sky: not this term's business
    assert float(highlight_loss(out, target, lq)) == 0.0
    grey = target.clone()
    grey[..., :8, :] = 0.7  # the sky turned grey
    sky = highlight_loss(grey.requires_grad_(True), target, lq)
    assert float(sky.detach()) == pytest.approx(float((grey.detach()[..., :8, :] - target[..., :8, :]).abs().mean()),
                                                rel=0.5)
    sky.backward()
    assert grey.grad[..., 8:, :].abs().sum() == 0 and grey.grad[..., :8, :].abs().sum() > 0
    assert float(highlight_loss(grey.detach(), target, torch.full_like(lq, 0.4))) == 0.0  # nothing clipped, no term


def test_highlight_cast_loss_names_the_mean_colour_of_bright_colourless_regions_only():
    from training.losses import highlight_cast_loss, opponent_chroma

    lq = torch.full((2, 3, 32, 32), 0.3)
    lq[0, :, :16, :] = 0.97  # image 0: a blown, near-white sky over the top half; image 1: nothing blown
    lq[0, 0, :16, :] = 0.93  # a faint cyan tint: still near-colourless
    target = torch.rand(2, 3, 32, 32) * 0.5
    target[0, :, :16, :] = torch.tensor([0.55, 0.68, 0.90]).view(3, 1, 1)  # the target's blue sky
    out = target.clone()
    out[:, :, 16:, :] += 0.3  # wrong only outside the region: not this term's business
    out[0, :, :16, :] += 0.05 * torch.randn(3, 16, 32)  # zero-mean noise in the region: its mean is what counts
    assert float(highlight_cast_loss(out, target, lq)) < 1e-3
    grey = target.clone()
    grey[0, :, :16, :] = 0.72  # the sky turned grey
    grey.requires_grad_(True)
    loss = highlight_cast_loss(grey, target, lq)
    want = float(((opponent_chroma(target[:1, :, :16]).mean(dim=(2, 3))) ** 2).sum())  # grey has no chroma
    assert float(loss.detach()) == pytest.approx(want, rel=1e-4)  # averaged over image 0 alone
    loss.backward()
    assert grey.grad[0, :, 16:].abs().sum() == 0 and grey.grad[1].abs().sum() == 0
    assert grey.grad[0, 2, :16].mean() < 0 < grey.grad[0, 0, :16].mean()  # descent adds blue, takes red away
    # a bright but coloured input region (a yellow wall) and an input with nothing bright give no term
    assert float(highlight_cast_loss(grey.detach(), target, torch.full_like(lq, 0.4))) == 0.0
    yellow = lq.clone()
    yellow[0, 2, :16, :] = 0.6
    assert float(highlight_cast_loss(grey.detach(), target, yellow)) == 0.0


def test_tone_loss_names_global_brightness_and_contrast_not_local_content():
    from training.losses import tone_loss

    torch.manual_seed(0)
    ramp = torch.linspace(0.2, 0.8, 32).view(1, 1, 1, 32).expand(2, 3, 32, 32)
    target = ramp + 0.05 * torch.rand(2, 3, 32, 32)
    assert float(tone_loss(target, target)) == 0.0
    mirrored = target.flip(-1)  # every pixel elsewhere, the same tones
    assert float((mirrored - target).abs().mean()) > 0.1 and float(tone_loss(mirrored, target)) < 1e-4
    darker = (target - 0.04).requires_grad_(True)  # 10 /255 too dark
    loss = tone_loss(darker, target)
    assert float(loss.detach()) == pytest.approx(0.04, rel=1e-3)
    loss.backward()
    assert float(darker.grad.sum()) < 0  # descent brightens the picture
    mean = target.mean(dim=(1, 2, 3), keepdim=True)
    harsher = (mean + 1.36 * (target - mean)).requires_grad_(True)  # v3's global contrast against the references
    loss = tone_loss(harsher, target)
    assert float(loss.detach()) > 0.05
    loss.backward()
    bright = target > mean
    assert float(harsher.grad[bright].mean()) > 0 > float(harsher.grad[~bright].mean())  # descent flattens


def test_blown_target_keeps_the_inputs_clipped_regions_and_nothing_else():
    from training.losses import blown_target

    lq = torch.full((1, 3, 32, 32), 0.5)
    lq[..., :12, :] = 1.0  # a blown sky over the top
    lq[..., 20:, :16] = torch.tensor([1.0, 1.0, 0.3]).view(3, 1, 1)  # bright yellow: two channels clipped, not blown
    target = torch.rand(1, 3, 32, 32) * 0.6
    out = blown_target(target, lq)
    assert torch.equal(out[..., :8, :], lq[..., :8, :])  # well inside the blown region: the input
    assert torch.allclose(out[..., 16:, :], target[..., 16:, :])  # elsewhere, the yellow included: the target
    assert bool(((out[..., 8:16, :] - target[..., 8:16, :]).abs() > 0).any())  # a soft edge between
    half = blown_target(target, lq, strength=0.5)  # loss.blown_share = 0.5: halfway between input and target
    torch.testing.assert_close(half[..., :8, :], (lq[..., :8, :] + target[..., :8, :]) / 2)
    assert torch.allclose(half[..., 16:, :], target[..., 16:, :])


def test_eps_objective_trains_the_denoisers_with_the_core_scheduler():
    model = RestoreX(RestoreXConfig.tiny().replace(ffedm={"objective": "epsilon"}))
    model.requires_grad_(False)
    model.ffedm.requires_grad_(True)
    terms = Objective(model, stage=2, weights=LossWeights(sap=0.0))(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    assert {"eps", "prior", "l1", "loss"} == set(terms) and model.scheduler.prediction_type == "epsilon"
    terms["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.ffedm.parameters())


def test_a_kill_while_checkpointing_leaves_the_previous_state(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, steps=8, name="k", overrides=("--train.stop_after=2",))
    train(cfg)

    def dying_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "k").iterdir() if p.name.endswith(".tmp")] == []
    assert torch.load(tmp_path / "k" / "last.pt", weights_only=True)["step"] == 2
    assert train(cfg)["history"][0]["step"] == 3


def test_a_frozen_clip_is_neither_trained_nor_checkpointed(tmp_path):
    frozen = ("--model.clip.trainable=false", "--train.clip_weights=random")
    first = train(tiny_config(tmp_path, steps=2, name="f", overrides=(*frozen, "--train.stop_after=1")))
    before = {k: v.clone() for k, v in first["model"].clip.state_dict().items()}
    state = torch.load(tmp_path / "f" / "last.pt", weights_only=True)
    assert not any(k.startswith("clip.") for k in state["model"]) and state["step"] == 1
    second = train(tiny_config(tmp_path, steps=2, name="f", overrides=frozen))  # resumes without the CLIP
    assert second["step"] == 2 and all(torch.equal(v, before[k]) for k, v in second["model"].clip.state_dict().items())
    with pytest.raises(MissingWeightsError, match="CLIP"):
        load_checkpoint(second["export"])  # the export needs the CLIP file, as the paper's model does


def test_two_stages_end_to_end_lower_the_loss_and_export(tmp_path):
    root = write_pairs(tmp_path / "pairs")
    r1 = train(tiny_config(tmp_path, steps=60, kind="pairs", root=root.as_posix(), name="s1",
                           overrides=("--train.export_dtype=\"float16\"",)))
    losses = [row["l1"] for row in r1["history"]]
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10]), losses
    assert r1["export"] is not None and r1["val"]["val_psnr"] > 0
    m1 = load_checkpoint(r1["export"])
    assert m1.restormer.output.weight.dtype == torch.float32  # stored fp16, loaded fp32
    r2 = train(tiny_config(tmp_path, stage=2, steps=12, kind="pairs", root=root.as_posix(), name="s2",
                           init=r1["export"].as_posix()))
    priors = [row["prior"] for row in r2["history"]]
    assert np.mean(priors[-4:]) < np.mean(priors[:4]), priors
    m2 = load_checkpoint(r2["export"])
    assert torch.equal(m2.pem_reference.heads[0].mlp[0].weight, m1.pem_reference.heads[0].mlp[0].weight)
    with torch.inference_mode():
        y = m2.correct(torch.rand(1, 3, 30, 44))
    assert y.shape == (1, 3, 30, 44)


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    init = save_checkpoint(RestoreX(RestoreXConfig.tiny()), tmp_path / "s1.safetensors").as_posix()
    ckpt = "--model.restormer.checkpointing=true"  # activation checkpointing must not change the result
    full = train(tiny_config(tmp_path, stage=2, steps=6, init=init, name="full", overrides=(ckpt,)))
    part = train(tiny_config(tmp_path, stage=2, steps=6, init=init, name="cut",
                             overrides=(ckpt, "--train.stop_after=3")))
    assert part["step"] == 3 and part["export"] is None and (tmp_path / "cut" / "last.pt").is_file()
    rest = train(tiny_config(tmp_path, stage=2, steps=6, init=init, name="cut",
                             overrides=(ckpt, "--data.num_workers=1")))  # workers must not change the data
    assert [row["step"] for row in rest["history"]] == [4, 5, 6]
    for a, b in ((full["model"], rest["model"]), (full["ema"], rest["ema"])):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.allclose(sa[k], sb[k], atol=1e-6, rtol=0), k
    assert [r["loss"] for r in full["history"][3:]] == pytest.approx([r["loss"] for r in rest["history"]], abs=1e-6)
    with open(tmp_path / "cut" / "log.csv", newline="") as f:
        logged = [int(r["step"]) for r in csv.DictReader(f) if r["loss"]]
    assert logged == [1, 2, 3, 4, 5, 6]  # the resumed run rewinds the log: no step twice


def test_stream_items_depend_only_on_seed_and_position():
    cfg = load_config(CONFIGS / "demo.toml", ["--data.kind=\"procedural\"", "--data.crop=32"])
    a, b = TrainStream(cfg.data, 0, None, None, 16), TrainStream(cfg.data, 0, None, None, 16)
    x = b[17]
    _ = a[3], a[40]
    assert torch.equal(a[17]["input"], x["input"]) and torch.equal(a[17]["target"], x["target"])
    assert x["input"].shape == (3, 32, 32) and not torch.equal(a[18]["target"], x["target"])
    assert not torch.equal(TrainStream(cfg.data, 1, None, None, 16)[17]["input"], x["input"])


def test_cli_runs_the_demo_config(tmp_path, capsys):
    out = tmp_path / "demo"
    main(["--config", str(CONFIGS / "demo.toml"), f"--train.out_dir={out.as_posix()}", "--train.max_steps=2",
          "--data.crop=32", "--train.threads=1"])
    assert f"weights: {out / 'restorex.safetensors'}" in capsys.readouterr().out
    assert load_checkpoint(out / "restorex.safetensors").config == RestoreXConfig.tiny()


def test_ema_update_is_the_closed_form_average():
    """ema <- d * ema + (1 - d) * model, with d = min(decay, (1 + step) / (10 + step)); frozen weights stay."""
    from training.ema import EMA

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    net[1].weight.requires_grad_(False)  # a frozen parameter: copied once, never averaged
    ema = EMA(net, decay=0.9)
    start = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        net[1].running_mean.add_(2.0)
    ema.update(net, step=100)
    d = ema.decay_at(100)
    assert d == 0.9  # past the warm-up, (1 + 100) / (10 + 100) > 0.9
    got, now = ema.model.state_dict(), net.state_dict()
    for name in ("0.weight", "0.bias", "1.bias", "1.running_mean"):
        assert torch.allclose(got[name], d * start[name] + (1 - d) * now[name], atol=1e-6), name
    assert torch.equal(got["1.weight"], start["1.weight"])
    assert ema.decay_at(0) == pytest.approx(0.1)  # warm-up: (1 + 0) / (10 + 0)


def test_prior_fit_trains_only_the_prior_path_on_cached_features(tmp_path):
    from training.prior_fit import fit

    finished = RestoreX(RestoreXConfig.tiny())
    init = save_checkpoint(finished, tmp_path / "v3.safetensors")
    cfg = tiny_config(tmp_path, stage=2, init=init.as_posix(), steps=120,
                      overrides=("--train.init_all=true", "--train.cache_items=24", "--train.log_every=20",
                                 "--train.val_every=60", "--data.batch_size=8"))
    result = fit(cfg)
    rows = result["rows"]
    assert rows[-1]["prior"] < rows[0]["prior"]  # L_p falls on the cached renders
    assert math.isfinite(rows[-1]["val_r2"]) and rows[-1]["val_prior"] > 0
    done = load_checkpoint(result["export"])
    for part in ("clip", "pem_reference", "restormer", "pem_input", "ffedm"):
        same = all(torch.equal(p, finished.state_dict()[f"{part}.{k}"])
                   for k, p in getattr(done, part).state_dict().items())
        assert same == (part not in ("pem_input", "ffedm")), part
    cache = tmp_path / "run" / "features.pt"
    stamp = cache.stat().st_mtime_ns
    fit(tiny_config(tmp_path, stage=2, init=init.as_posix(), steps=2,
                    overrides=("--train.init_all=true", "--train.cache_items=24", "--data.batch_size=8")))
    assert cache.stat().st_mtime_ns == stamp  # the same data: the cache is reused, not rebuilt
    with pytest.raises(ValueError, match="cache_items"):
        fit(tiny_config(tmp_path, stage=2, init=init.as_posix(), name="nocache",
                        overrides=("--train.init_all=true",)))


def test_budget_cuts_the_schedule_to_the_wall_clock_and_stops_a_slow_run():
    from training.train import Budget

    now = [0.0]
    budget = Budget(1.0, ddp=False, clock=lambda: now[0])  # 60 s
    cuts = {}
    for step in range(1, 31):  # 1 s a step
        now[0] = float(step)
        cuts[step] = budget.check(step, 100_000)
    assert all(c is None for s, c in cuts.items() if s < 30)
    assert cuts[30] == 30 + int((0.95 * 60 - 30) / 1.0)  # steps 10..30 timed, 5 % kept for validation + export
    now[0] = 59.0
    assert budget.check(50, 57) is None
    now[0] = 61.0  # slower than timed: stop where the budget runs out
    assert budget.check(51, 57) == 51
    assert budget.check(57, 57) is None  # already at the end: nothing to cut
    fast = Budget(10.0, ddp=False, clock=lambda: now[0])
    for step in range(1, 31):
        now[0] = 61.0 + step * 0.01
        last = fast.check(step, 500)
    assert last is None  # the configured max_steps fits the budget: kept


def test_max_minutes_run_ends_annealed_exported_and_resumable(tmp_path):
    cfg = tiny_config(tmp_path, stage=1, steps=100_000, overrides=("--train.max_minutes=0.05",))
    result = train(cfg)
    step = result["step"]
    assert 30 < step < 100_000 and result["export"] is not None and result["export"].is_file()
    state = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)
    assert state["step"] == state["max_steps"] == step
    assert result["history"][-1]["lr"] < 0.05 * cfg.train.lr  # the cosine reached its end: annealed, not cut off
    again = train(cfg)  # resuming keeps the schedule the budget chose
    assert again["step"] == step


def test_lab_chroma_loss_sees_a_teal_sky_and_pulls_it_blue():
    from restorex_core.images import srgb_to_lab
    from training.losses import lab_chroma_loss

    sky = torch.tensor([0.42, 0.62, 0.86]).view(1, 3, 1, 1).expand(1, 3, 16, 16)  # a light blue sky
    teal = torch.tensor([0.42, 0.70, 0.74]).view(1, 3, 1, 1).expand(1, 3, 16, 16)  # v3's darkened cyan-white
    assert float(lab_chroma_loss(sky, sky)) == 0.0
    # the blue-yellow axis is what differs: CIELAB b* of the teal is ~20 higher (less blue) than the sky's
    assert float(srgb_to_lab(teal)[0, 2, 0, 0] - srgb_to_lab(sky)[0, 2, 0, 0]) > 15
    d = (srgb_to_lab(teal) - srgb_to_lab(sky))[0, 1:, 0, 0].abs()
    assert float(lab_chroma_loss(teal, sky)) == pytest.approx(float(d.mean()) / 100, rel=1e-4)  # a*, b* units / 100
    # and it stays finite and differentiable at black and white, where the cube root is steepest
    edges = torch.cat([torch.zeros(1, 3, 8, 16), torch.ones(1, 3, 8, 16)], dim=2).requires_grad_(True)
    lab_chroma_loss(edges, sky).backward()
    assert torch.isfinite(edges.grad).all()
    teal = teal.clone().requires_grad_(True)
    lab_chroma_loss(teal, sky).backward()
    assert teal.grad[:, 1].mean() > 0 > teal.grad[:, 2].mean()  # descent takes green out and adds blue
