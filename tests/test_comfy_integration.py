"""A real ComfyUI server with this pack runs every API-format example workflow over HTTP.

Skipped unless COMFYUI_DIR (a ComfyUI checkout) and COMFYUI_PYTHON (``<venv>/bin/python`` of a venv that runs
it, with this pack's requirements.txt installed) are set. Drives the server with the shared harness
(../shared/tools/comfy_harness; COMFY_HARNESS_DIR overrides), on CPU, in a throw-away --base-directory holding
a tiny checkpoint the test makes. Saved images are compared with restorex_core run in-process (1 LSB:
ComfyUI's SaveImage truncates).

    COMFYUI_DIR=/work/comfy/ComfyUI COMFYUI_PYTHON=/work/comfy/venv/bin/python \
        .venv/bin/python -m pytest tests/test_comfy_integration.py -q -s
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from restorex_core import RestoreX, RestoreXConfig, load_checkpoint, save_checkpoint
from restorex_core.precision import auto_dtype  # what the workflows' dtype "auto" loads on ComfyUI's CPU

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
VIDEO_WORKFLOW = ROOT / "example_workflows" / "api" / "restorex_video.json"  # its own test: a clip, not a photo
WORKFLOWS = sorted(p for p in (ROOT / "example_workflows" / "api").glob("*.json") if p != VIDEO_WORKFLOW)
HARNESS = Path(os.environ.get("COMFY_HARNESS_DIR", ROOT.parent / "shared" / "tools" / "comfy_harness"))
CHECKPOINT = "restorex-test.safetensors"


@dataclass
class Server:
    url: str
    base: Path
    log: Path
    model: RestoreX


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    comfy_dir, python = os.environ.get("COMFYUI_DIR"), os.environ.get("COMFYUI_PYTHON")
    if not comfy_dir or not python:
        pytest.skip("set COMFYUI_DIR and COMFYUI_PYTHON to run the ComfyUI integration test")
    venv = Path(python).parent.parent
    assert (venv / "bin" / "python").exists(), f"COMFYUI_PYTHON must be <venv>/bin/python*, got {python}"
    assert (HARNESS / "run_comfy.sh").exists(), f"comfy_harness not found at {HARNESS}; set COMFY_HARNESS_DIR"
    tmp = tmp_path_factory.mktemp("comfy")
    base = tmp / "base"
    for sub in ("models/restorex", "custom_nodes", "input", "output"):
        (base / sub).mkdir(parents=True)
    torch.manual_seed(0)
    model = RestoreX(RestoreXConfig.tiny()).eval()
    save_checkpoint(model, base / "models" / "restorex" / CHECKPOINT)
    port = _free_port()
    env = {**os.environ, "COMFY_RUN_DIR": str(tmp / "run")}
    run = [str(HARNESS / "run_comfy.sh")]
    started = subprocess.run(run + ["start", comfy_dir, str(venv), "--port", str(port), "--pack", str(ROOT), "--",
                                    "--disable-api-nodes", "--base-directory", str(base)],
                             env=env, capture_output=True, text=True, timeout=420)
    print(started.stdout + started.stderr)
    assert started.returncode == 0, started.stdout + started.stderr
    log = tmp / "run" / f"comfy_{port}.log"
    try:
        pack_warnings = [line for line in started.stdout.splitlines() if "WARN" in line and ROOT.name in line]
        assert not pack_warnings, "\n".join(pack_warnings + [log.read_text()[-3000:]])
        model = load_checkpoint(base / "models" / "restorex" / CHECKPOINT, dtype=auto_dtype("cpu"))
        yield Server(f"http://127.0.0.1:{port}", base, log, model)
    finally:
        subprocess.run(run + ["stop", "--port", str(port)], env=env, capture_output=True, timeout=60)


def submit(server: Server, workflow: Path, out: Path, *sets: str, expect: str = "success"):
    cmd = [sys.executable, str(HARNESS / "submit_workflow.py"), str(workflow), "--server", server.url,
           "--timeout", "600", "--download", str(out), "--json-out", str(out / "record.json"), "--expect", expect]
    for s in sets:
        cmd += ["--set", s]
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=700)
    print(f"$ submit_workflow.py {workflow.name} -> rc {done.returncode}\n{done.stdout}{done.stderr}")
    assert done.returncode == 0, done.stdout + done.stderr + server.log.read_text()[-3000:]
    return json.loads((out / "record.json").read_text()), done.stderr


def outputs(record: dict, out: Path) -> dict[str, list[np.ndarray]]:
    """Output node id -> the images it saved or previewed, as uint8 arrays."""
    return {nid: [np.asarray(Image.open(out / img["filename"]).convert("RGB")) for img in node["images"]]
            for nid, node in record["history"]["outputs"].items()}


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
def test_example_workflow_runs_on_a_real_comfyui(server, workflow, tmp_path):
    prompt = json.loads(workflow.read_text())
    _photo(server.base / "input" / "rx_photo.png", 80, 96, gain=0.3)
    _photo(server.base / "input" / "rx_reference.png", 64, 64, gain=1.0)
    sets = []
    images = iter(["rx_photo.png", "rx_reference.png"])
    for nid, node in prompt.items():
        if node["class_type"] == "LoadImage":
            sets.append(f'{nid}.image="{next(images)}"')
        if node["class_type"] == "LoadRestoreXModel":
            sets.append(f'{nid}.model_name="{CHECKPOINT}"')
    record, _ = submit(server, workflow, tmp_path, *sets)
    saved = outputs(record, tmp_path)
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
    for chart in charts:  # VisualizePriors -> PreviewImage: a 4-row chart, 896 wide
        assert chart.shape == (34 + 4 * 132 + 10, 896, 3) and chart.std() > 10
    if len(charts) == 2:
        assert not np.array_equal(charts[0], charts[1])  # input vs enhanced priors
    loads = re.findall(r"RestoreX: loading .*" + re.escape(CHECKPOINT), server.log.read_text())
    assert len(loads) == 1, loads  # the same file under other node ids and workflows is not loaded again


def test_missing_checkpoint_is_refused_before_running_with_the_folders_searched(server, tmp_path):
    workflow = ROOT / "example_workflows" / "api" / "restorex_one_node.json"
    _photo(server.base / "input" / "rx_photo.png", 80, 96, gain=0.3)
    _, stderr = submit(server, workflow, tmp_path, '1.image="rx_photo.png"', '2.model_name="nowhere.safetensors"',
                       expect="validation_error")
    assert "nowhere.safetensors" in stderr and str(server.base / "models" / "restorex") in stderr



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
    record, _ = submit(server, VIDEO_WORKFLOW, tmp_path, '1.image="rx_clip.webp"', f'2.model_name="{CHECKPOINT}"')
    (saved,) = record["history"]["outputs"]["4"]["images"]
    got = np.stack(_frames(tmp_path / saved["filename"]))
    clip = torch.from_numpy(np.stack(_frames(server.base / "input" / "rx_clip.webp"))).float().div(255)
    with torch.inference_mode():  # the workflow's widgets: window 9, hold 0, seed 0
        want = correct_sequence(server.model, clip.permute(0, 3, 1, 2), window=9, hold=0, seed=0)
    want = np.clip(255.0 * want.permute(0, 2, 3, 1).numpy(), 0, 255).astype(np.uint8)  # SaveAnimatedWEBP truncates
    assert got.shape == (48, 40, 56, 3)
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1, f"{int((diff > 1).sum())} values differ by more than 1 LSB (max {diff.max()})"
