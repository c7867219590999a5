"""The ComfyUI nodes, run in-process on real tensors and real tiny checkpoints.

Only ComfyUI's own modules are stood in for (comfy, comfy.model_management, comfy.model_patcher, comfy.utils,
folder_paths), by small stubs that behave like ComfyUI's (folder lookup, progress, interrupts, OOM type).
The pack is imported the way ComfyUI imports a custom-node folder (its __init__.py as a package).
"""

from __future__ import annotations

import dataclasses
import gc
import importlib.util
import json
import os
import sys
import types
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from restorex_core import CheckpointError, ClipVision, MissingWeightsError, RestoreX, RestoreXConfig, save_checkpoint
from restorex_core.errors import TileError
from restorex_core.memory import HEADROOM, budget_from_free
from restorex_core.precision import auto_dtype
from restorex_core.tiling import tile_starts

ROOT = Path(__file__).resolve().parents[1]
EXTS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}


class InterruptProcessingException(Exception):
    pass


class Comfy:
    """Stand-ins for ComfyUI's modules, with the state the tests look at."""

    def __init__(self, base: Path) -> None:
        self.models = base / "models"
        self.temp = base / "temp"
        self.loads: list[tuple[list, int, bool]] = []  # load_models_gpu calls
        self.bars: list = []  # every comfy.utils.ProgressBar made
        self.free_memory = 64 * 2**30
        self.interrupt_after: int | None = None  # interrupt at the n-th interrupt check
        self.modules = {"comfy": types.ModuleType("comfy"), "folder_paths": self._folder_paths()}
        for name, build in (("model_management", self._mm), ("model_patcher", self._patcher), ("utils", self._utils)):
            module = build()
            self.modules[f"comfy.{name}"] = module
            setattr(self.modules["comfy"], name, module)

    def _folder_paths(self) -> types.ModuleType:
        fp = types.ModuleType("folder_paths")
        fp.models_dir = str(self.models)
        fp.supported_pt_extensions = set(EXTS)
        fp.folder_names_and_paths = {"clip_vision": ([str(self.models / "clip_vision")], set(EXTS))}
        fp.get_folder_paths = lambda name: list(fp.folder_names_and_paths[name][0])

        def get_filename_list(name: str) -> list[str]:
            folders, exts = fp.folder_names_and_paths[name]
            found = set()
            for folder in folders:
                for dirpath, _, files in os.walk(folder):
                    found |= {os.path.relpath(os.path.join(dirpath, f), folder) for f in files
                              if not exts or os.path.splitext(f)[1] in exts}
            return sorted(found)

        def get_full_path(name: str, filename: str) -> str | None:
            if name not in fp.folder_names_and_paths:
                return None
            filename = os.path.relpath(os.path.join("/", filename), "/")
            for folder in fp.folder_names_and_paths[name][0]:
                if os.path.isfile(os.path.join(folder, filename)):
                    return os.path.join(folder, filename)
            return None

        def get_save_image_path(prefix: str, output_dir: str, width: int = 0, height: int = 0):
            return output_dir, prefix, 1, "", prefix  # (folder, file name, counter, subfolder, prefix)

        fp.get_filename_list, fp.get_full_path = get_filename_list, get_full_path
        fp.get_temp_directory, fp.get_save_image_path = lambda: str(self.temp), get_save_image_path
        return fp

    def _mm(self) -> types.ModuleType:
        mm = types.ModuleType("comfy.model_management")
        cpu = torch.device("cpu")
        mm.get_torch_device = mm.unet_offload_device = mm.intermediate_device = lambda: cpu
        mm.get_free_memory = lambda dev=None, torch_free_too=False: self.free_memory
        mm.soft_empty_cache = lambda force=False: None
        mm.OOM_EXCEPTION = torch.cuda.OutOfMemoryError
        mm.InterruptProcessingException = InterruptProcessingException

        def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                            force_full_load=False):
            self.loads.append((list(models), memory_required, force_full_load))
            for patcher in models:
                patcher.model.to(patcher.load_device)
                patcher.model.device = patcher.load_device

        def throw_exception_if_processing_interrupted():
            if self.interrupt_after is not None:
                self.interrupt_after -= 1
                if self.interrupt_after < 0:
                    raise InterruptProcessingException()

        mm.load_models_gpu = load_models_gpu
        mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
        return mm

    def _patcher(self) -> types.ModuleType:
        module = types.ModuleType("comfy.model_patcher")

        class ModelPatcher:
            def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
                self.model, self.load_device, self.offload_device = model, load_device, offload_device

        module.ModelPatcher = ModelPatcher
        return module

    def _utils(self) -> types.ModuleType:
        module = types.ModuleType("comfy.utils")
        comfy = self

        class ProgressBar:
            def __init__(self, total, node_id=None):
                self.total, self.updates = total, []
                comfy.bars.append(self)

            def update_absolute(self, value, total=None, preview=None):
                self.updates.append((value, total if total is not None else self.total))

        module.ProgressBar = ProgressBar
        return module


@pytest.fixture
def comfy(tmp_path, monkeypatch):
    stub = Comfy(tmp_path)
    for name, module in stub.modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    (stub.models / "restorex").mkdir(parents=True)
    (stub.models / "clip_vision").mkdir(parents=True)
    stub.temp.mkdir()
    yield stub
    for name in [n for n in sys.modules if n == "restorex_pack" or n.startswith("restorex_pack.")]:
        del sys.modules[name]


def import_pack() -> types.ModuleType:
    """Import the repository root as ComfyUI does: custom_nodes/<folder>/__init__.py as a package."""
    spec = importlib.util.spec_from_file_location("restorex_pack", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["restorex_pack"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def pack(comfy):
    return import_pack()


def node(pack, node_id):
    return pack.NODE_CLASS_MAPPINGS[node_id]()


@pytest.fixture
def tiny(comfy):
    model = RestoreX(RestoreXConfig.tiny()).eval()
    save_checkpoint(model, comfy.models / "restorex" / "tiny.safetensors")
    return model


@pytest.fixture
def loaded(pack, tiny):
    return node(pack, "LoadRestoreXModel").load("tiny.safetensors", "(from checkpoint)", "auto", "fp32")[0]


def image(b=1, h=40, w=48, c=3):
    return torch.rand(b, h, w, c)


def staged(pack, model, img, *, seed=0, steps=0, tile=0, overlap=32, stage="input"):
    (priors,) = node(pack, "RestoreXExtractCLIPPriors").extract(model, img, stage)
    (priors,) = node(pack, "RestoreXFFEDMEnhance").enhance(model, priors, seed, steps)
    return node(pack, "RestoreXRestormerInject").inject(model, img, priors, tile, overlap)[0]


def correct(pack, model, img, *, seed=0, steps=0, strength=1.0, feather=0, tile=0, overlap=32, mask=None):
    return node(pack, "RestoreXExposureCorrect").correct(model, img, seed, steps, strength, feather, tile, overlap,
                                                         mask=mask)[0]


def reference_correct(model, img, *, seed=0, tile=None, overlap=32):
    with torch.inference_mode():
        return model.correct(img.movedim(-1, 1), seed=seed, tile=tile, overlap=overlap).movedim(1, -1)


# -- the pack as ComfyUI sees it ---------------------------------------------------------------------


def test_every_node_is_registered_with_a_tooltip_on_every_input(pack):
    ids = {"LoadRestoreXModel", "RestoreXExtractCLIPPriors", "RestoreXFFEDMEnhance", "RestoreXRestormerInject",
           "RestoreXExposureCorrect", "RestoreXExposureCorrectVideo", "RestoreXBlendPriors", "RestoreXVisualizePriors"}
    assert set(pack.NODE_CLASS_MAPPINGS) == ids == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
    for cls in pack.NODE_CLASS_MAPPINGS.values():
        spec = cls.INPUT_TYPES()
        inputs = {**spec["required"], **spec.get("optional", {})}
        assert all(options.get("tooltip") for _, options in inputs.values()), cls.__name__
        assert isinstance(cls.RETURN_TYPES, tuple) and len(cls.RETURN_TYPES) == len(cls.OUTPUT_TOOLTIPS)
        assert cls.CATEGORY == "image/restoration/RestoreX" and callable(getattr(cls, cls.FUNCTION))


def test_models_folder_is_registered_keeping_extra_model_paths(comfy, tmp_path):
    fp = comfy.modules["folder_paths"]
    extra = tmp_path / "extra_restorex"
    extra.mkdir()
    (extra / "mine.safetensors").write_bytes(b"x")
    (extra / "notes.txt").write_text("not a model")
    fp.folder_names_and_paths["restorex"] = ([str(extra)], set())  # as extra_model_paths.yaml leaves it
    pack = import_pack()
    folders, exts = fp.folder_names_and_paths["restorex"]
    assert folders[0] == str(extra) and folders[-1] == str(ROOT / "weights") and ".safetensors" in exts
    combo = pack.NODE_CLASS_MAPPINGS["LoadRestoreXModel"].INPUT_TYPES()["required"]["model_name"][0]
    assert "mine.safetensors" in combo
    assert "notes.txt" not in fp.get_filename_list("restorex")


def test_example_workflows_match_the_nodes(pack):
    """UI workflows and their API twins agree with each other and with the nodes' INPUT_TYPES."""
    widget_types = {"INT", "FLOAT", "STRING", "BOOLEAN"}
    ui_files = sorted((ROOT / "example_workflows").glob("*.json"))
    assert [p.stem for p in ui_files] == ["restorex_one_node", "restorex_reference_guided", "restorex_staged",
                                          "restorex_video"]
    for path in ui_files:
        ui, api = json.loads(path.read_text()), json.loads((path.parent / "api" / path.name).read_text())
        assert {str(n["id"]) for n in ui["nodes"]} == set(api)
        nodes = {n["id"]: n for n in ui["nodes"]}
        for link_id, src, slot, dst, dst_slot, kind in ui["links"]:
            name = nodes[dst]["inputs"][dst_slot]["name"]
            assert api[str(dst)]["inputs"][name] == [str(src), slot]
            assert nodes[dst]["inputs"][dst_slot]["link"] == link_id
            assert link_id in nodes[src]["outputs"][slot]["links"] and nodes[src]["outputs"][slot]["type"] == kind
        for n in ui["nodes"]:
            entry = api[str(n["id"])]
            assert entry["class_type"] == n["type"]
            if n["type"] not in pack.NODE_CLASS_MAPPINGS:
                continue
            cls = pack.NODE_CLASS_MAPPINGS[n["type"]]
            spec = cls.INPUT_TYPES()
            inputs = {**spec["required"], **spec.get("optional", {})}
            values, sockets = [], []
            for name, (kind, options) in inputs.items():
                if isinstance(kind, list) or kind in widget_types:
                    value = entry["inputs"][name]
                    if kind == "BOOLEAN":
                        assert isinstance(value, bool)
                    else:
                        assert value in kind if isinstance(kind, list) else options["min"] <= value <= options["max"]
                    values += [value, "fixed"] if options.get("control_after_generate") else [value]
                else:
                    sockets.append((name, kind))
                    assert name in entry["inputs"] or name in spec.get("optional", {})
            assert n["widgets_values"] == values, (path.name, n["type"])
            assert [(i["name"], i["type"]) for i in n["inputs"]] == sockets
            assert [o["type"] for o in n["outputs"]] == list(cls.RETURN_TYPES)


# -- the loader ---------------------------------------------------------------------------------------


def test_loader_errors_name_the_folders_searched(pack, comfy):
    loader = node(pack, "LoadRestoreXModel")
    with pytest.raises(MissingWeightsError) as info:
        loader.load("missing.safetensors", "(from checkpoint)", "auto", "auto")
    message = str(info.value)
    assert "missing.safetensors" in message and str(comfy.models / "restorex") in message
    assert str(ROOT / "weights") in message and "restorex-default.safetensors" in message
    assert type(loader).VALIDATE_INPUTS("missing.safetensors") == message  # shown by ComfyUI before running
    (comfy.models / "restorex" / "broken.safetensors").write_bytes(b"\x00" * 64)
    assert type(loader).VALIDATE_INPUTS("broken.safetensors") is True
    with pytest.raises(MissingWeightsError, match="CLIP file 'ViT-B-32.safetensors' not found") as info:
        loader.load("broken.safetensors", "ViT-B-32.safetensors", "auto", "auto")
    assert str(comfy.models / "clip_vision") in str(info.value)
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        loader.load("broken.safetensors", "(from checkpoint)", "auto", "auto")
    with pytest.raises(RuntimeError, match="choose device 'auto' or 'cpu'"):
        loader.load("broken.safetensors", "(from checkpoint)", "gpu", "auto")


def test_loader_keeps_no_model_of_its_own_and_puts_it_under_model_management(pack, tiny, comfy):
    """Sharing and freeing are ComfyUI's output cache's job (measured in tests/test_comfy_integration.py): the
    node must hold no reference that would keep a model alive after ComfyUI dropped it."""
    loader = node(pack, "LoadRestoreXModel")
    first = loader.load("tiny.safetensors", "(from checkpoint)", "auto", "fp32")[0]
    half = loader.load("tiny.safetensors", "(from checkpoint)", "cpu", "bf16")[0]
    assert half.dtype == torch.bfloat16 and first.dtype == torch.float32
    auto = loader.load("tiny.safetensors", "(from checkpoint)", "cpu", "auto")[0]
    assert auto.dtype == auto_dtype("cpu")
    assert first.patcher.model.restorex is first.model and first.patcher.load_device == torch.device("cpu")
    weights = zip(first.model.state_dict().values(), tiny.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in weights)
    comfy.loads.clear()
    correct(pack, first, image())
    patchers, memory, full = comfy.loads[0]
    assert patchers == [first.patcher] and memory > 0 and full  # loaded (and memory freed) before running
    gone = weakref.ref(first.model)
    del first, patchers, comfy.loads[:]
    gc.collect()
    assert gone() is None  # nothing in the pack keeps a dropped model alive
    before = type(loader).IS_CHANGED("tiny.safetensors", "(from checkpoint)", "auto", "fp32")
    os.utime(comfy.models / "restorex" / "tiny.safetensors", ns=(1, 1))  # a changed file is loaded again
    assert type(loader).IS_CHANGED("tiny.safetensors", "(from checkpoint)", "auto", "fp32") != before


def test_loader_with_a_separate_clip_file(pack, comfy):
    config = RestoreXConfig.tiny()
    config = dataclasses.replace(config, clip=dataclasses.replace(config.clip, trainable=False))
    clip = ClipVision(config.clip)
    save_file({k: v.contiguous() for k, v in clip.visual.state_dict().items()},
              comfy.models / "clip_vision" / "tiny_clip.safetensors")
    model = RestoreX(config, clip=clip).eval()
    save_checkpoint(model, comfy.models / "restorex" / "frozen.safetensors")
    loader = node(pack, "LoadRestoreXModel")
    with pytest.raises(MissingWeightsError, match="clip_name") as info:
        loader.load("frozen.safetensors", "(from checkpoint)", "auto", "auto")
    assert str(comfy.models / "clip_vision") in str(info.value)
    assert "tiny_clip.safetensors" in type(loader).INPUT_TYPES()["required"]["clip_name"][0]
    managed = loader.load("frozen.safetensors", "tiny_clip.safetensors", "auto", "fp32")[0]
    img = image()
    torch.testing.assert_close(correct(pack, managed, img, seed=5), reference_correct(model, img, seed=5))


# -- the method's stages --------------------------------------------------------------------------------


def test_staged_graph_equals_exposure_correct_and_the_core(pack, loaded, tiny):
    img = image(b=2)
    out = staged(pack, loaded, img, seed=7)
    assert out.shape == img.shape and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    assert torch.equal(out, correct(pack, loaded, img, seed=7))
    torch.testing.assert_close(out, reference_correct(tiny, img, seed=7))
    assert not torch.equal(out, staged(pack, loaded, img, seed=8))  # the seed reaches FFEDM
    assert (out - img).abs().mean() > 1e-3  # the image was processed


def test_enhance_reports_each_step_and_refuses_reference_priors(pack, loaded, comfy):
    img = image()
    (priors,) = node(pack, "RestoreXExtractCLIPPriors").extract(loaded, img, "input")
    assert not priors.enhanced and priors.vectors[0].device.type == "cpu" and len(priors) == 4
    comfy.bars.clear()
    (enhanced,) = node(pack, "RestoreXFFEDMEnhance").enhance(loaded, priors, 3, 0)
    assert enhanced.enhanced and [u[0] for u in comfy.bars[-1].updates] == [1, 2, 3, 4]
    node(pack, "RestoreXFFEDMEnhance").enhance(loaded, priors, 3, 2)
    assert comfy.bars[-1].updates[-1] == (2, 2)
    (reference,) = node(pack, "RestoreXExtractCLIPPriors").extract(loaded, img, "reference")
    with pytest.raises(ValueError, match="reference priors"):
        node(pack, "RestoreXFFEDMEnhance").enhance(loaded, reference, 3, 0)
    out = node(pack, "RestoreXRestormerInject").inject(loaded, img, reference, 0, 32)[0]  # injected directly
    assert out.shape == img.shape and not torch.equal(out, staged(pack, loaded, img, seed=3))


def test_batch_of_three(pack, loaded, tiny):
    img = image(b=3)
    out = correct(pack, loaded, img, seed=1)
    assert out.shape == (3, 40, 48, 3) and not torch.equal(out[0], out[1]) and not torch.equal(out[1], out[2])
    torch.testing.assert_close(out, reference_correct(tiny, img, seed=1))
    (priors,) = node(pack, "RestoreXExtractCLIPPriors").extract(loaded, img, "input")
    (priors,) = node(pack, "RestoreXFFEDMEnhance").enhance(loaded, priors, 1, 0)
    for i in range(3):  # each image is restored with its own priors, independently of the others
        single = node(pack, "RestoreXRestormerInject").inject(loaded, img[i : i + 1], priors[i], 0, 32)[0]
        torch.testing.assert_close(single, out[i : i + 1], atol=1e-5, rtol=0)


def test_rgba_keeps_its_alpha_untouched(pack, loaded):
    rgba = image(c=4)
    for out in (correct(pack, loaded, rgba, seed=2), staged(pack, loaded, rgba, seed=2),
                correct(pack, loaded, rgba, seed=2, strength=0.5, mask=torch.rand(1, 20, 24), feather=3)):
        assert out.shape == rgba.shape and torch.equal(out[..., 3], rgba[..., 3])
    rgb = correct(pack, loaded, rgba[..., :3], seed=2)
    torch.testing.assert_close(correct(pack, loaded, rgba, seed=2)[..., :3], rgb)


# -- strength and mask -----------------------------------------------------------------------------------


def test_zero_mask_and_zero_strength_give_the_input_back(pack, loaded):
    img = image(b=2)
    assert torch.equal(correct(pack, loaded, img, strength=0.0), img)
    assert torch.equal(correct(pack, loaded, img, mask=torch.zeros(1, 64, 64), feather=8), img)


def test_mask_corrects_only_inside_and_strength_blends(pack, loaded):
    img = image()
    full = correct(pack, loaded, img, seed=4)
    mask = torch.zeros(1, 40, 48)
    mask[:, :, :24] = 1.0
    out = correct(pack, loaded, img, seed=4, mask=mask)
    assert torch.equal(out[:, :, :24], full[:, :, :24]) and torch.equal(out[:, :, 24:], img[:, :, 24:])
    feathered = correct(pack, loaded, img, seed=4, mask=mask, feather=6)
    band = slice(20, 28)
    edge = (feathered[:, :, band] - img[:, :, band]).abs() / (full[:, :, band] - img[:, :, band]).abs().clamp_min(1e-6)
    assert 0.05 < float(edge.median()) < 0.95  # a soft edge, neither input nor correction
    assert torch.equal(feathered[:, :, 40:], img[:, :, 40:])  # far from the mask nothing changes
    half = correct(pack, loaded, img, seed=4, strength=0.5)
    torch.testing.assert_close(half, (img + full) / 2, atol=1e-6, rtol=0)


def test_auto_strength_lets_a_gated_model_leave_a_good_photo_alone(pack, comfy):
    from tests.test_gate import gated_model

    save_checkpoint(gated_model(1.6, strength=0), comfy.models / "restorex" / "gated.safetensors")
    gated = node(pack, "LoadRestoreXModel").load("gated.safetensors", "(from checkpoint)", "auto", "fp32")[0]
    img = image() * 0.5
    corrected = node(pack, "RestoreXExposureCorrect")
    assert torch.equal(corrected.correct(gated, img, 0, 0, 1.0, 0, 0, 32)[0], img)  # the gate: leave it
    full = corrected.correct(gated, img, 0, 0, 1.0, 0, 0, 32, auto_strength=False)[0]
    torch.testing.assert_close(full, (img * 1.6).clamp(0, 1), atol=1e-5, rtol=0)
    video = node(pack, "RestoreXExposureCorrectVideo")
    clip = torch.cat([img, img * 0.9])
    assert torch.equal(video.correct(gated, clip, 1, 1, 0, 0, 1.0, 0, 0, 32)[0], clip)
    torch.testing.assert_close(video.correct(gated, clip, 1, 1, 0, 0, 1.0, 0, 0, 32, auto_strength=False)[0],
                               (clip * 1.6).clamp(0, 1), atol=1e-5, rtol=0)


# -- tiling, memory, interrupts ----------------------------------------------------------------------------


def test_tiling_runs_every_tile_and_matches_the_core(pack, loaded, tiny, comfy):
    img = image(h=72, w=80)
    comfy.bars.clear()
    out = staged(pack, loaded, img, seed=6, tile=32, overlap=8)
    tiles = len(tile_starts(72 + 16, 32, 8)) * len(tile_starts(80 + 16, 32, 8))  # + the 8-pixel mirrored border
    # one update for the guide pass (the whole image's attention maps), then one per tile
    assert tiles == 16 and comfy.bars[-1].updates[-1] == (17, 17) and len(comfy.bars[-1].updates) == 17
    torch.testing.assert_close(out, reference_correct(tiny, img, seed=6, tile=32, overlap=8))
    assert not torch.equal(out, staged(pack, loaded, img, seed=6))  # untiled differs: tiling did happen


def test_automatic_tile_comes_from_free_memory(pack, loaded, tiny, comfy):
    img = image(h=136, w=136)
    comfy.free_memory = 32 * 2**20  # the untiled 136^2 image (152^2 with its border) needs ~20 MB of tiny-Restormer
    comfy.bars.clear()  # activations (restorex_core.memory), more than half of that
    out = correct(pack, loaded, img, seed=9)
    assert comfy.bars[-1].updates[-1] == (5, 5)  # the guide pass, then 128-pixel tiles, 2 x 2
    # the core's plan for the budget the node passed: HEADROOM x ComfyUI's free memory
    with torch.inference_mode():
        want = tiny.correct(img.movedim(-1, 1), seed=9, tile="auto", max_memory=budget_from_free(32 * 2**20))
    torch.testing.assert_close(out, want.movedim(1, -1), atol=0, rtol=0)


def test_out_of_memory_halves_the_tile(pack, loaded, tiny, comfy, monkeypatch):
    tried = []
    run = loaded.model._restore_rgb  # the core's one pass: its back-off (RestoreX._run_backing_off) retries it

    def failing(rgb, vectors, tile, overlap, guide, *args, limit=64):
        tried.append((tile, overlap, guide))
        if tile is None or tile > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return run(rgb, vectors, tile, overlap, guide, *args)

    monkeypatch.setattr(loaded.model, "_restore_rgb", failing)
    img = image(h=120, w=120)
    out = staged(pack, loaded, img, seed=2, tile=256, overlap=32)
    # halved (and the overlap held to a quarter of the tile, the guide pass halved) until it fits
    assert tried == [(256, 32, 1024), (128, 32, 128), (64, 16, 128)]
    with torch.inference_mode():
        priors = tiny.enhance_priors(tiny.extract_priors(img.movedim(-1, 1)), seed=2)
        want = tiny.restore(img.movedim(-1, 1), priors, tile=64, overlap=16, guide_size=128).movedim(1, -1)
    torch.testing.assert_close(out, want)
    monkeypatch.setattr(loaded.model, "_restore_rgb", lambda *a: failing(*a, limit=0))
    with pytest.raises(torch.cuda.OutOfMemoryError):
        correct(pack, loaded, img)


@pytest.mark.parametrize(("tile", "overlap", "problems"), [(8, 0, ("overlap 0 leaves", "tile 8 is too small")),
                                                           (16, 16, ("tile 16 is too small",)),
                                                           (64, 32, ("tile 64 is too small",)),
                                                           (0, 4, ("overlap 4 leaves",))])
def test_a_bad_tile_or_overlap_gets_the_cores_named_error_from_every_node(pack, loaded, tile, overlap, problems):
    img = image(b=1, h=24, w=24)
    with torch.inference_mode():
        with pytest.raises(TileError) as core:
            loaded.model.correct(img.movedim(-1, 1), tile=tile or "auto", overlap=overlap)
    assert all(p in str(core.value) for p in problems) and "Valid: overlap >= 8" in str(core.value)
    (priors,) = node(pack, "RestoreXExtractCLIPPriors").extract(loaded, img, "input")
    (priors,) = node(pack, "RestoreXFFEDMEnhance").enhance(loaded, priors, 0, 0)
    for run in (lambda: node(pack, "RestoreXRestormerInject").inject(loaded, img, priors, tile, overlap),
                lambda: correct(pack, loaded, img, tile=tile, overlap=overlap),
                lambda: video(pack, loaded, img, window=1, tile=tile, overlap=overlap)):
        with pytest.raises(TileError) as error:
            run()
        assert str(error.value) == str(core.value)


def test_interrupt_stops_between_tiles(pack, loaded, comfy):
    img = image(h=72, w=80)
    comfy.interrupt_after = 10**6
    correct(pack, loaded, img, tile=32, overlap=8)
    checks = 10**6 - comfy.interrupt_after  # every interrupt point of a whole run: stages, blocks, tiles
    assert checks > 17 * 8  # at least every transformer block (8 in the tiny model) of the guide and 16 tiles
    comfy.interrupt_after = checks // 2  # Cancel pressed halfway through
    comfy.bars.clear()
    with pytest.raises(InterruptProcessingException):
        correct(pack, loaded, img, tile=32, overlap=8)
    done = [u[0] for u in comfy.bars[-1].updates]
    assert done == list(range(1, len(done) + 1)) and 1 <= len(done) < 17  # stopped within a tile


def test_a_batch_gives_each_image_the_pixels_it_gets_alone_at_the_default_dtype(pack, tiny, comfy):
    managed = node(pack, "LoadRestoreXModel").load("tiny.safetensors", "(from checkpoint)", "auto", "auto")[0]
    assert managed.dtype == auto_dtype("cpu")
    img = image(b=3, h=56, w=64)
    # the free memory of one image's pass and a half: a plan for the batch of three would tile it
    comfy.free_memory = int(managed.model.memory_required(1, 56, 64) * 1.5 / HEADROOM)
    outs = (correct(pack, managed, img, seed=3), staged(pack, managed, img, seed=3))
    for out, run in zip(outs, (correct, staged), strict=True):
        alone = torch.cat([run(pack, managed, img[i : i + 1], seed=3) for i in range(3)])
        assert float((out - alone).abs().max()) * 255 < 0.5  # issue 23 asks 1/255; none is left


# -- video -------------------------------------------------------------------------------------------


def video(pack, model, frames, *, window=3, hold=0, seed=0, steps=0, strength=1.0, feather=0, tile=0, overlap=32,
          mask=None):
    return node(pack, "RestoreXExposureCorrectVideo").correct(model, frames, window, hold, seed, steps, strength,
                                                              feather, tile, overlap, mask=mask)[0]


def test_video_node_equals_the_core_and_window_1_equals_exposure_correct(pack, loaded, tiny):
    from restorex_core.sequence import correct_sequence

    frames = image(b=5, h=24, w=32)
    out = video(pack, loaded, frames, window=3, hold=5, seed=4)
    with torch.inference_mode():
        want = correct_sequence(tiny, frames.movedim(-1, 1), window=3, hold=5, seed=4).movedim(1, -1)
    assert out.shape == frames.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, want, atol=0, rtol=0)
    per_frame = torch.cat([correct(pack, loaded, frames[t : t + 1], seed=4) for t in range(5)])
    assert torch.equal(video(pack, loaded, frames, window=1, seed=4), per_frame)


def test_video_node_reports_each_frame_and_stops_between_frames(pack, loaded, comfy):
    frames = image(b=4, h=16, w=16)
    comfy.bars.clear()
    video(pack, loaded, frames)
    assert [u[0] for u in comfy.bars[-1].updates] == [1, 2, 3, 4]
    comfy.interrupt_after = 1 + 8 + 2 * 2  # runtime.prepare's entry, 2 x 4 first-pass frames, then per frame: the check
    # before it and its progress update (every update is an interrupt point); the third frame's check stops
    comfy.bars.clear()
    with pytest.raises(InterruptProcessingException):
        video(pack, loaded, frames)
    assert [u[0] for u in comfy.bars[-1].updates] == [1, 2]


def test_video_node_sizes_memory_for_one_frame_and_keeps_the_clip_on_the_host(pack, loaded, comfy):
    video(pack, loaded, image(b=2, h=16, w=16))
    video(pack, loaded, image(b=8, h=16, w=16))
    assert comfy.loads[-1][1] == comfy.loads[-2][1]


def test_video_node_masks_strength_and_alpha(pack, loaded):
    frames = image(b=3, h=24, w=32, c=4)
    assert torch.equal(video(pack, loaded, frames, strength=0.0), frames)
    assert torch.equal(video(pack, loaded, frames, mask=torch.zeros(1, 24, 32)), frames)
    full = video(pack, loaded, frames)
    assert torch.equal(full[..., 3], frames[..., 3])
    masks = torch.zeros(3, 12, 16)
    masks[1] = 1.0  # only the middle frame, at half resolution
    out = video(pack, loaded, frames, mask=masks)
    assert torch.equal(out[0], frames[0]) and torch.equal(out[2], frames[2])
    torch.testing.assert_close(out[1], full[1])
    with pytest.raises(ValueError, match="2 masks for 3 frames"):
        video(pack, loaded, frames, mask=torch.ones(2, 24, 32))


# -- priors tools --------------------------------------------------------------------------------------


def test_blend_priors_at_0_and_1_equals_its_inputs(pack, loaded):
    (photo,) = node(pack, "RestoreXExtractCLIPPriors").extract(loaded, image(b=3), "input")
    (photo,) = node(pack, "RestoreXFFEDMEnhance").enhance(loaded, photo, 0, 0)
    (ref,) = node(pack, "RestoreXExtractCLIPPriors").extract(loaded, image(b=1), "reference")
    blend = node(pack, "RestoreXBlendPriors").blend
    at0, at1, mid = blend(photo, ref, 0.0)[0], blend(photo, ref, 1.0)[0], blend(photo, ref, 0.5)[0]
    for a, b, m, r in zip(at0.vectors, photo.vectors, mid.vectors, ref.vectors, strict=True):
        assert torch.equal(a, b)
        torch.testing.assert_close(m, (b + r.expand(3, -1)) / 2)
    assert all(torch.equal(v, r.expand(3, -1)) for v, r in zip(at1.vectors, ref.vectors, strict=True))
    assert mid.source == "blend" and at1.batch_size == 3
    out = node(pack, "RestoreXRestormerInject").inject(loaded, image(b=3), mid, 0, 32)[0]
    assert out.shape == (3, 40, 48, 3)


def test_visualize_priors_draws_one_chart_per_image_and_shows_it_on_the_node(pack, loaded, comfy):
    (priors,) = node(pack, "RestoreXExtractCLIPPriors").extract(loaded, image(b=2), "input")
    out = node(pack, "RestoreXVisualizePriors").visualize(priors, 640)
    (chart,) = out["result"]
    assert chart.shape[0] == 2 and chart.shape[2:] == (640, 3) and chart.shape[1] > 400
    assert chart.dtype == torch.float32 and 0 <= chart.min() < 0.2 and 0.9 < chart.max() <= 1
    assert not torch.equal(chart[0], chart[1])  # the two images' priors differ, so do their charts
    assert type(node(pack, "RestoreXVisualizePriors")).OUTPUT_NODE  # runs with its output unconnected
    shown = out["ui"]["images"]  # PreviewImage's format: temp PNGs the frontend draws on the node
    assert [e["type"] for e in shown] == ["temp", "temp"] and len({e["filename"] for e in shown}) == 2
    for entry, want in zip(shown, chart, strict=True):
        png = np.asarray(Image.open(comfy.temp / entry["subfolder"] / entry["filename"]), dtype=np.int16)
        assert np.abs(png - np.clip(255.0 * want.numpy(), 0, 255).astype(np.int16)).max() <= 1
    with pytest.raises(ValueError, match="at least 400"):
        node(pack, "RestoreXVisualizePriors").visualize(priors, 100)
