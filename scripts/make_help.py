"""Write the node help pages ComfyUI's frontend shows (web/docs/<NodeId>.md) from the text below and the nodes'
own input and output tooltips (so the pages cannot drift from the nodes).

    python scripts/make_help.py          # rewrite web/docs/*.md
    python scripts/make_help.py --check  # exit 1 if a page is out of date

The frontend fetches /extensions/<pack>/docs/<NodeId>/<locale>.md, then /extensions/<pack>/docs/<NodeId>.md;
ComfyUI serves the pack's WEB_DIRECTORY (web/) under /extensions/<pack>/. Pictures are web/docs/images/*,
made by scripts/make_thumbnails.py from real runs of the example workflows.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "web" / "docs"

# Per node: what it does, when to use it, and its picture (web/docs/images/...) with a caption.
PAGES: dict[str, tuple[str, str, str, str]] = {
    "LoadRestoreXModel": (
        "Loads a RestoreX checkpoint (CLIP-RestoreX, AAAI 2025: CLIP priors, FFEDM prior diffusion and a "
        "prior-injected Restormer) for the other RestoreX nodes. The bundled default, "
        "`restorex-default.safetensors`, ships in the pack's `weights/` folder and stores its own image encoder, "
        "so `clip_name` stays `(from checkpoint)`. Other checkpoints go in `models/restorex/`.",
        "At the start of every RestoreX graph. The model is loaded once and shared by every workflow that loads "
        "the same file with the same options; **Free model and node cache** releases it, like a checkpoint.",
        "one_node.jpg", "Load RestoreX Model feeding Exposure Correct: a dark room before | after."),
    "RestoreXExposureCorrect": (
        "Corrects under- and over-exposure in one step: CLIP priors of the photo, FFEDM turns them into the "
        "priors of a well-exposed picture, and the Restormer corrects the photo guided by them. Optional mask "
        "(feathered) and strength to correct only part of the picture, or only partly.",
        "For most photos: it gives the same pixels as the staged graph (Extract CLIP Priors -> FFEDM Enhance "
        "-> Restormer Inject) with the same seed, steps and tile. Use the staged nodes to look at or mix the "
        "priors.",
        "one_node.jpg", "An under-exposed room before | after (default weights, seed 0)."),
    "RestoreXExposureCorrectVideo": (
        "Corrects a clip (an IMAGE batch of frames) without flicker: the same FFEDM noise for every frame, the "
        "priors smoothed over a window of frames, and the brightness at the same scene points held steady, so a "
        "hunting auto-exposure is evened out while cuts and real changes of light are followed.",
        "For video frames (Load Video -> Get Video Components, or Load Image on an animated WebP/GIF). Exposure "
        "Correct on each frame alone would flicker.",
        "video.jpg", "The middle frame of a panning clip with a hunting exposure, before | after."),
    "RestoreXExtractCLIPPriors": (
        "Reads the photo with the model's CLIP image encoder and turns four of its blocks' features into four "
        "prior vectors that describe the exposure (the Prior Extraction Module).",
        "First node of the staged graph. `stage = input` for the badly exposed photo (enhance its priors with "
        "FFEDM Enhance next); `stage = reference` for a well-exposed reference photo whose priors you want to "
        "blend in or inject directly.",
        "priors_chart.png", "The priors as Visualize Priors draws them: each vector and its Fourier amplitudes."),
    "RestoreXFFEDMEnhance": (
        "Fourier-domain diffusion (FFEDM): starting from noise, it turns the priors of a badly exposed photo "
        "into the priors of a well-exposed picture of the same scene.",
        "Between Extract CLIP Priors (stage input) and Restormer Inject. The seed makes the result repeatable "
        "on every device; steps 0 uses all the steps the model was trained with.",
        "staged.jpg", "The staged graph on an over-exposed seaside, before | after."),
    "RestoreXRestormerInject": (
        "The prior-injected Restormer: corrects the image guided by a set of priors. Runs in tiles sized to the "
        "free memory when the image is large, and halves the tile if it runs out of memory.",
        "Last node of the staged graph, with enhanced, reference or blended priors (one set per image, or one set "
        "for a whole batch).",
        "staged.jpg", "The staged graph on an over-exposed seaside, before | after."),
    "RestoreXBlendPriors": (
        "Mixes two sets of priors linearly: `(1 - weight) * priors + weight * toward`.",
        "To steer the look toward a reference photo: blend a photo's enhanced priors toward the reference's "
        "(Extract CLIP Priors with stage reference), then Restormer Inject.",
        "reference_guided.jpg", "An over-exposed photo corrected halfway toward a reference's priors."),
    "RestoreXVisualizePriors": (
        "Draws priors as a chart, one row per prior vector: its values and its Fourier amplitudes (what FFEDM "
        "diffuses). The chart is shown on the node and is also its IMAGE output.",
        "To see what FFEDM changed (chart the input and the enhanced priors side by side), or to check a "
        "reference's or a blend's priors.",
        "priors_chart.png", "Enhanced priors of the seaside photo: four rows, values and Fourier amplitudes."),
}


def _english() -> dict:
    spec = importlib.util.spec_from_file_location("make_locales", ROOT / "scripts" / "make_locales.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.english()


def page(node_id: str, defs: dict) -> str:
    what, when, picture, caption = PAGES[node_id]
    d = defs[node_id]
    lines = [f"# {d['display_name']}", "", f"![{caption}](images/{picture})", "", f"*{caption}*", "",
             "## What it does", "", what, "", "## When to use it", "", when, "", "## Inputs", ""]
    lines += [f"- **{name}**: {spec.get('tooltip', '')}" for name, spec in d["inputs"].items()]
    lines += ["", "## Outputs", ""]
    lines += [f"- **{spec['name']}**: {spec.get('tooltip', '')}" for spec in d["outputs"].values()]
    return "\n".join(lines) + "\n"


def main() -> int:
    defs = _english()
    missing = set(defs) ^ set(PAGES)
    if missing:
        sys.stderr.write(f"help page text missing or stale for {sorted(missing)}: edit PAGES\n")
        return 1
    stale = []
    for node_id in defs:
        path, text = DOCS / f"{node_id}.md", page(node_id, defs)
        if "--check" in sys.argv:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        sys.stderr.write("out of date (run python scripts/make_help.py): " + ", ".join(stale) + "\n")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
