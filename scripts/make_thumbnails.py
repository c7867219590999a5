"""Make the Templates-browser thumbnail of every example workflow (example_workflows/<name>.jpg), the pictures
of the node help pages (web/docs/images/) and the registry icon (web/icon.png) by running the workflows in a
real ComfyUI with this pack and its default weights, on the sample photos in docs/sample/ (Waterloo IVC,
see its NOTICE.txt).

    python scripts/make_thumbnails.py [--comfyui ../shared/comfyui]

Needs ComfyUI's requirements in this Python (bash scripts/comfy_deps.sh). A few minutes on a CPU.
Each thumbnail is the workflow's own input and output side by side (before | after); the video one shows the
middle frame of a short clip made from a sample photo (a slow pan with a hunting exposure).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageSequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from comfy_harness import start  # noqa: E402 - the harness lives with the tests

API = ROOT / "example_workflows" / "api"
SAMPLES = ROOT / "docs" / "sample"
THUMB = (512, 384)  # the Templates browser shows cards at about 4:3
log = logging.getLogger("make_thumbnails")


def side_by_side(before: Image.Image, after: Image.Image, size: tuple[int, int] = THUMB, *,
                 labels: bool = True) -> Image.Image:
    """The left half of ``before`` and the right half of ``after`` (same framing), labelled, cropped to ``size``."""
    w, h = size
    scale = max(w / before.width, h / before.height)
    b, a = (im.convert("RGB").resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
            for im in (before, after))
    left, top = (b.width - w) // 2, (b.height - h) // 2
    b, a = b.crop((left, top, left + w, top + h)), a.crop((left, top, left + w, top + h))
    out = b.copy()
    out.paste(a.crop((w // 2, 0, w, h)), (w // 2, 0))
    draw = ImageDraw.Draw(out)
    draw.line((w // 2, 0, w // 2, h), fill=(255, 255, 255), width=3)
    font = ImageFont.load_default(size=22)
    for x, text in ((12, "before"), (w // 2 + 12, "after")) if labels else ():
        draw.text((x, h - 36), text, fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0))
    return out


def clip_from(photo: Image.Image, frames: int = 12, width: int = 256) -> list[Image.Image]:
    """A short badly exposed clip: the photo panned 3 px a frame, its exposure hunting around -1 EV."""
    small = photo.convert("RGB").resize((width + 3 * frames, round(photo.height * (width + 3 * frames) / photo.width)))
    pixels = np.asarray(small, dtype=np.float32) / 255.0
    out = []
    for t in range(frames):
        gain = 0.6 * 2 ** (0.35 * np.sin(t * 1.9))
        crop = pixels[:, 3 * t : 3 * t + width]
        out.append(Image.fromarray((np.clip(crop * gain, 0, 1) * 255).astype(np.uint8)))
    return out


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui", type=Path, default=ROOT.parent / "shared" / "comfyui")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "custom_nodes").mkdir()
        (base / "custom_nodes" / "restorex").symlink_to(ROOT)
        (base / "input").mkdir()
        under = Image.open(SAMPLES / "house_under.png").convert("RGB")
        over = Image.open(SAMPLES / "lighthouse_over.png").convert("RGB")
        under.save(base / "input" / "house_under.png")
        over.save(base / "input" / "lighthouse_over.png")
        frames = clip_from(under)
        frames[0].save(base / "input" / "clip.webp", save_all=True, append_images=frames[1:], lossless=True)
        server = start(args.comfyui, sys.executable, base)
        try:
            charts: list[Image.Image] = []

            def run(name: str, **sets: dict) -> Image.Image:
                prompt = json.loads((API / f"{name}.json").read_text())
                for nid, inputs in sets.items():
                    prompt[nid]["inputs"].update(inputs)
                log.info("running %s", name)
                outcome = server.run(prompt)
                outputs = outcome.history["outputs"]
                charts.extend(Image.open(io.BytesIO(server.view(outputs[nid]["images"][0]))) for nid, node
                              in prompt.items() if node["class_type"] == "RestoreXVisualizePriors")
                saved = [node["images"][0] for node in outputs.values()
                         if node.get("images") and node["images"][0]["type"] == "output"]
                return Image.open(io.BytesIO(server.view(saved[0])))

            corrected = run("restorex_one_node", **{"1": {"image": "house_under.png"}})
            thumbs = {"restorex_one_node": side_by_side(under, corrected),
                      "restorex_staged": side_by_side(over, run("restorex_staged",
                                                                **{"1": {"image": "lighthouse_over.png"}}))}
            corrected.save(base / "input" / "house_corrected.png")
            guided = run("restorex_reference_guided", **{"1": {"image": "lighthouse_over.png"},
                                                         "2": {"image": "house_corrected.png"}})
            thumbs["restorex_reference_guided"] = side_by_side(over, guided)
            clip = [f.convert("RGB") for f in ImageSequence.Iterator(run("restorex_video",
                                                                         **{"1": {"image": "clip.webp"}}))]
            thumbs["restorex_video"] = side_by_side(frames[len(frames) // 2], clip[len(clip) // 2])
        finally:
            server.stop()
    missing = {p.stem for p in (ROOT / "example_workflows").glob("*.json")} - set(thumbs)
    if missing:
        raise SystemExit(f"no thumbnail made for {sorted(missing)}: add them to scripts/make_thumbnails.py")
    for name, image in thumbs.items():
        image.save(ROOT / "example_workflows" / f"{name}.jpg", quality=88, optimize=True)
        log.info("wrote example_workflows/%s.jpg", name)
    pictures = ROOT / "web" / "docs" / "images"
    pictures.mkdir(parents=True, exist_ok=True)
    for name, image in thumbs.items():  # the help pages show the same before | after pictures, smaller
        image.resize((384, 288), Image.LANCZOS).save(pictures / f"{name.removeprefix('restorex_')}.jpg", quality=85)
    charts[-1].convert("RGB").save(pictures / "priors_chart.png", optimize=True)  # the staged graph's enhanced priors
    log.info("wrote web/docs/images/")
    icon = side_by_side(under, corrected, size=(400, 400), labels=False)  # the registry's square icon
    icon.save(ROOT / "web" / "icon.png", optimize=True)
    log.info("wrote web/icon.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
