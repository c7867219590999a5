"""A real ComfyUI runs this pack from the zip that `comfy node publish` would upload.

The zip (git-tracked files minus .comfyignore, tests/comfy_harness.py) is unpacked into a fresh custom_nodes/ of
a throw-away --base-directory, and a headless ComfyUI (../shared/comfyui, or COMFYUI_DIR) runs on the CPU with
the Python running these tests (or COMFYUI_PYTHON), which needs ComfyUI's requirements: .ci/run installs them
(scripts/comfy_deps.sh). The test runs every API-format example workflow (the video one included) on a tiny
checkpoint and compares the saved images with restorex_core run in-process (1 LSB: ComfyUI's SaveImage
truncates); checks what the UI reads (templates and their thumbnails, help pages, translations, search aliases);
and measures that POST /free gives a loaded model's memory back. Skipped only where there is no ComfyUI.

    .venv/bin/python -m pytest tests/test_comfy_integration.py -q -s
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from comfy_harness import ComfyError, ComfyServer, Outcome, build_zip, start
from PIL import Image, ImageSequence

from restorex_core import RestoreX, RestoreXConfig, load_checkpoint, save_checkpoint
from restorex_core.precision import auto_dtype  # what the workflows' dtype "auto" loads on ComfyUI's CPU

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
COMFY_DIR = Path(os.environ.get("COMFYUI_DIR", ROOT.parent / "shared" / "comfyui"))
PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)
API = ROOT / "example_workflows" / "api"
VIDEO_WORKFLOW = API / "restorex_video.json"  # its own test: a clip, not a photo
WORKFLOWS = sorted(p for p in API.glob("*.json") if p != VIDEO_WORKFLOW)
CHECKPOINT = "restorex-test.safetensors"
BIG = "restorex-big.safetensors"  # 52 M parameters: 197 MiB in fp32, far above the server's RSS noise
PACK = "restorex"  # the folder name a registry install gives the pack (the node id in pyproject.toml)


@dataclass
class Server:
    comfy: ComfyServer
    base: Path
    model: RestoreX

    def run(self, workflow: Path | dict, **sets: dict[str, object]) -> Outcome:
        """Run an API workflow with some inputs replaced: ``sets={"1": {"image": "x.png"}}``."""
        prompt = json.loads(workflow.read_text()) if isinstance(workflow, Path) else workflow
        for nid, inputs in sets.items():
            prompt[nid]["inputs"].update(inputs)
        return self.comfy.run(prompt)

    def images(self, outcome: Outcome) -> dict[str, list[np.ndarray]]:
        """Output node id -> the images it saved or previewed, as uint8 RGB arrays."""
        return {nid: [np.asarray(Image.open(io.BytesIO(self.comfy.view(img))).convert("RGB"))
                      for img in node.get("images", [])]
                for nid, node in outcome.history["outputs"].items()}

    def loads(self, name: str) -> int:
        return len(re.findall(r"RestoreX: loading .*" + re.escape(name), self.comfy.log_text()))


def _photo(path: Path, h: int, w: int, gain: float) -> None:
    """A deterministic test picture: gradients and blocks, scaled by ``gain`` (under/over exposure)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([x / w, y / h, 0.5 + 0.5 * np.sin(x / 7.0) * np.cos(y / 5.0)], axis=-1)
    rgb[h // 4 : h // 2, w // 3 : 2 * w // 3] = (0.9, 0.6, 0.2)
    Image.fromarray((np.clip(rgb * gain, 0, 1) * 255).astype(np.uint8)).save(path)


def _image(path: Path) -> torch.Tensor:
    """A PNG as ComfyUI's LoadImage reads it, as (1, 3, H, W)."""
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(rgb).permute(2, 0, 1)[None]


def _saved(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] -> the uint8 array ComfyUI's SaveImage writes (it truncates)."""
    return np.clip(255.0 * x[0].permute(1, 2, 0).numpy(), 0, 255).astype(np.uint8)


def _big_model() -> RestoreX:
    """A wide trainable encoder on a tiny model: 52 M parameters (197 MiB in fp32) that run in a second."""
    config = RestoreXConfig.tiny().replace(clip={"width": 1024, "layers": 8, "heads": 8}, pem={"in_dim": 1024})
    return RestoreX(config).eval()


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> tuple[list[str], Path]:
    """The publish zip's file list, and the zip unpacked into a fresh custom_nodes/ as a registry install."""
    if not (COMFY_DIR / "main.py").exists():
        pytest.skip(f"no ComfyUI at {COMFY_DIR} (the ComfyUI source; set COMFYUI_DIR to use another checkout)")
    tmp = tmp_path_factory.mktemp("comfy")
    files = build_zip(ROOT, tmp / "restorex.zip")
    custom_nodes = tmp / "base" / "custom_nodes"
    with zipfile.ZipFile(tmp / "restorex.zip") as z:
        z.extractall(custom_nodes / PACK)
    print(f"publish zip: {len(files)} files, {(tmp / 'restorex.zip').stat().st_size / 2**20:.1f} MiB")
    return files, tmp / "base"


@pytest.fixture(scope="module")
def server(published):
    _, base = published
    for sub in ("models/restorex", "input", "output"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    save_checkpoint(RestoreX(RestoreXConfig.tiny()).eval(), base / "models" / "restorex" / CHECKPOINT)
    save_checkpoint(_big_model(), base / "models" / "restorex" / BIG)
    try:
        comfy = start(COMFY_DIR, PYTHON, base)
    except ComfyError as e:
        raise ComfyError(f"{e}\nComfyUI runs with {PYTHON}: install ComfyUI's requirements into it with "
                         "`bash scripts/comfy_deps.sh` (no second torch), or set COMFYUI_PYTHON") from e
    try:
        model = load_checkpoint(base / "models" / "restorex" / CHECKPOINT, dtype=auto_dtype("cpu"))
        yield Server(comfy, base, model)
    finally:
        comfy.stop()


def test_the_publish_zip_ships_the_pack_and_leaves_the_development_folders_out(published):
    files, base = published
    top = {f.split("/")[0] for f in files}
    for needed in ("__init__.py", "nodes", "restorex_core", "weights", "example_workflows", "web", "locales",
                   "requirements.txt", "pyproject.toml", "LICENSE"):
        assert needed in top, f"{needed} is missing from the publish zip"
    assert "weights/restorex-default.safetensors" in files
    for left_out in ("training", "tests", "benchmarks", "docs", "scripts", "restorex_cli", ".ci", ".github"):
        assert left_out not in top, f"{left_out}/ should be left out by .comfyignore"
    assert (base / "custom_nodes" / PACK / "nodes" / "loader.py").is_file()


def expected(server: Server, workflow: str, photo: torch.Tensor, reference: torch.Tensor) -> np.ndarray:
    """What the workflow's SaveImage must hold, computed with restorex_core (widget values from the files)."""
    model = server.model
    with torch.inference_mode():
        if workflow == "restorex_reference_guided":
            enhanced = model.enhance_priors(model.extract_priors(photo), seed=0)
            priors = enhanced.lerp(model.extract_priors(reference, source="reference"), 0.5)
            return _saved(model.restore(photo, priors))
        return _saved(model.correct(photo, seed=0))


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=[w.stem for w in WORKFLOWS])
def test_example_workflow_runs_on_a_real_comfyui(server, workflow):
    prompt = json.loads(workflow.read_text())
    _photo(server.base / "input" / "rx_photo.png", 80, 96, gain=0.3)
    _photo(server.base / "input" / "rx_reference.png", 64, 64, gain=1.0)
    sets: dict[str, dict[str, object]] = {}
    images = iter(["rx_photo.png", "rx_reference.png"])
    for nid, node in prompt.items():
        if node["class_type"] == "LoadImage":
            sets[nid] = {"image": next(images)}
        if node["class_type"] == "LoadRestoreXModel":
            sets[nid] = {"model_name": CHECKPOINT}
    outcome = server.run(prompt, **sets)
    saved = server.images(outcome)
    photo = _image(server.base / "input" / "rx_photo.png")
    reference = _image(server.base / "input" / "rx_reference.png")
    want = expected(server, workflow.stem, photo, reference)
    save_ids = [nid for nid, node in prompt.items() if node["class_type"] == "SaveImage"]
    assert len(save_ids) == 1 and len(saved[save_ids[0]]) == 1
    got = saved[save_ids[0]][0]
    assert got.shape == (80, 96, 3)
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1, f"{int((diff > 1).sum())} pixels differ by more than 1 LSB (max {diff.max()})"
    assert np.abs(got.astype(int) - _saved(photo).astype(int)).mean() > 1  # the photo was changed
    charts = [saved[nid][0] for nid, node in prompt.items() if node["class_type"] == "PreviewImage"]
    on_node = [saved[nid][0] for nid, node in prompt.items() if node["class_type"] == "RestoreXVisualizePriors"]
    assert len(on_node) == len(charts)  # Visualize Priors shows its chart on the node and still outputs it
    for chart, shown in zip(charts, on_node, strict=True):  # a 4-row chart, 896 wide
        assert chart.shape == (34 + 4 * 132 + 10, 896, 3) and chart.std() > 10
        assert np.array_equal(chart, shown)
    if len(charts) == 2:
        assert not np.array_equal(charts[0], charts[1])  # input vs enhanced priors
    # loaded once: the same file under other node ids and in other workflows comes from ComfyUI's output cache
    assert server.loads(CHECKPOINT) == 1, server.comfy.log_text()[-3000:]


def test_missing_checkpoint_is_refused_before_running_with_the_folders_searched(server):
    _photo(server.base / "input" / "rx_photo.png", 80, 96, gain=0.3)
    prompt = json.loads((API / "restorex_one_node.json").read_text())
    prompt["1"]["inputs"]["image"], prompt["2"]["inputs"]["model_name"] = "rx_photo.png", "nowhere.safetensors"
    outcome = server.comfy.submit(prompt)
    assert outcome.status == "validation_error"
    assert "nowhere.safetensors" in outcome.errors and str(server.base / "models" / "restorex") in outcome.errors


def test_the_ui_finds_templates_thumbnails_help_pages_translations_and_aliases(server):
    """What ComfyUI's frontend (1.27.10 with 0.3.64) fetches for the Templates browser, the node help panel,
    the Chinese/English UI and node search (search aliases reach the UI from ComfyUI versions that send them)."""
    from nodes import NODE_CLASS_MAPPINGS

    comfy = server.comfy
    names = sorted(comfy.get_json("/workflow_templates")[PACK])
    assert names == sorted(p.stem for p in (ROOT / "example_workflows").glob("*.json"))
    for name in names:  # the browser shows <name>.jpg as the card's thumbnail
        thumb = Image.open(io.BytesIO(comfy.view_path(f"/api/workflow_templates/{PACK}/{name}.jpg")))
        assert thumb.format == "JPEG" and min(thumb.size) >= 256
    i18n = comfy.get_json("/i18n")
    info = comfy.get_json("/object_info")
    for node_id, cls in NODE_CLASS_MAPPINGS.items():
        page = comfy.view_path(f"/extensions/{PACK}/docs/{node_id}.md").decode()
        assert page.startswith("# ") and "## Inputs" in page
        for picture in re.findall(r"!\[[^]]*\]\(([^)]+)\)", page):
            assert comfy.view_path(f"/extensions/{PACK}/docs/{picture}")[:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0")
        for lang in ("en", "zh"):
            entry = i18n[lang]["nodeDefs"][node_id]
            assert entry["display_name"] and entry["description"]
            inputs = {name for section in ("required", "optional") for name in info[node_id]["input"].get(section, {})}
            assert set(entry["inputs"]) <= inputs
        assert info[node_id]["description"] and len(cls.SEARCH_ALIASES) >= 3


def _clip(path: Path, frames: int, h: int, w: int) -> None:
    """A lossless animated WebP: the test picture panned 2 px per frame, its exposure hunting around -1.3 EV."""
    y, x = np.mgrid[0:h, 0 : w + 2 * frames].astype(np.float32)
    wide = np.stack([x / x.max(), y / h, 0.5 + 0.5 * np.sin(x / 7.0) * np.cos(y / 5.0)], axis=-1)
    pictures = []
    for t in range(frames):
        gain = 0.4 * 2 ** (0.35 * np.sin(t * 1.9))
        crop = wide[:, 2 * t : 2 * t + w]
        pictures.append(Image.fromarray((np.clip(crop * gain, 0, 1) * 255).astype(np.uint8)))
    pictures[0].save(path, save_all=True, append_images=pictures[1:], lossless=True, duration=40)


def _frames(path: Path) -> list[np.ndarray]:
    return [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(path))]


def test_video_workflow_corrects_a_48_frame_clip_on_a_real_comfyui(server, tmp_path):
    """Load Image (every frame of an animated WebP) -> Exposure Correct (Video) -> SaveAnimatedWEBP (lossless)."""
    from restorex_core.sequence import correct_sequence

    _clip(server.base / "input" / "rx_clip.webp", 48, 40, 56)
    outcome = server.run(VIDEO_WORKFLOW, **{"1": {"image": "rx_clip.webp"}, "2": {"model_name": CHECKPOINT}})
    (saved,) = outcome.history["outputs"]["4"]["images"]
    (tmp_path / "out.webp").write_bytes(server.comfy.view(saved))
    got = np.stack(_frames(tmp_path / "out.webp"))
    clip = torch.from_numpy(np.stack(_frames(server.base / "input" / "rx_clip.webp"))).float().div(255)
    with torch.inference_mode():  # the workflow's widgets: window 9, hold 0, seed 0
        want = correct_sequence(server.model, clip.permute(0, 3, 1, 2), window=9, hold=0, seed=0)
    want = np.clip(255.0 * want.permute(0, 2, 3, 1).numpy(), 0, 255).astype(np.uint8)  # SaveAnimatedWEBP truncates
    assert got.shape == (48, 40, 56, 3)
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1, f"{int((diff > 1).sum())} values differ by more than 1 LSB (max {diff.max()})"


def _rss_after_free(comfy: ComfyServer, below: int, timeout: float = 30) -> int:
    """POST /free (unload models + free the node cache, as the UI's button does), then the server's RSS once it
    has fallen below ``below`` bytes or ``timeout`` seconds have passed (the worker acts on the flags between
    prompts and then runs gc)."""
    comfy.free(unload_models=True, free_memory=True)
    deadline = time.monotonic() + timeout
    while (rss := comfy.rss()) >= below and time.monotonic() < deadline:
        time.sleep(0.5)
    return rss


def test_free_gives_a_loaded_models_memory_back_and_the_next_run_loads_it_again(server):
    """Load a 197 MiB model, run it, POST /free {unload_models, free_memory}: the process RSS falls back by the
    model's size, and the next run loads the model again and gives the same picture."""
    _photo(server.base / "input" / "rx_photo.png", 80, 96, gain=0.3)
    sets = {"1": {"image": "rx_photo.png"}, "2": {"model_name": BIG, "dtype": "fp32"}}
    size = sum(p.numel() * 4 for p in _big_model().parameters())
    base = _rss_after_free(server.comfy, below=0, timeout=3)  # whatever earlier tests left loaded is freed
    first = server.images(server.run(API / "restorex_one_node.json", **sets))["4"][0]
    loaded = server.comfy.rss()
    after = _rss_after_free(server.comfy, below=loaded - size * 3 // 4)
    print(f"RSS: {base / 2**20:.0f} MiB before, {loaded / 2**20:.0f} MiB with the {size / 2**20:.0f} MiB model "
          f"loaded, {after / 2**20:.0f} MiB after POST /free")
    assert loaded - base > size * 3 // 4  # the measurement sees the model
    assert loaded - after > size * 3 // 4, "POST /free did not give the model's memory back"
    again = server.images(server.run(API / "restorex_one_node.json", **sets))["4"][0]
    assert server.loads(BIG) == 2  # loaded again after the free, not kept somewhere else
    assert np.array_equal(first, again)
