"""Writes the example workflows: UI format (ComfyUI lists example_workflows/*.json as templates) and their
API-format twins in example_workflows/api/ (for scripts and the integration test), from one description.

    python example_workflows/make_examples.py              # rewrites the committed files
    python example_workflows/make_examples.py --out DIR    # writes them elsewhere (DIR/*.json, DIR/api/*.json)

Standard library only. tests/test_nodes.py checks that every widget here matches the nodes' INPUT_TYPES, and
tests/test_examples.py that the committed files are exactly what this writes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Socket inputs (name, type) and outputs (name, type) of each node type used.
SOCKETS = {
    "LoadImage": ([], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "SaveImage": ([("images", "IMAGE")], []),
    "PreviewImage": ([("images", "IMAGE")], []),
    "LoadRestoreXModel": ([], [("model", "RESTOREX_MODEL")]),
    "RestoreXExtractCLIPPriors": ([("model", "RESTOREX_MODEL"), ("image", "IMAGE")], [("priors", "RESTOREX_PRIORS")]),
    "RestoreXFFEDMEnhance": ([("model", "RESTOREX_MODEL"), ("priors", "RESTOREX_PRIORS")],
                             [("priors", "RESTOREX_PRIORS")]),
    "RestoreXRestormerInject": ([("model", "RESTOREX_MODEL"), ("image", "IMAGE"), ("priors", "RESTOREX_PRIORS")],
                                [("image", "IMAGE")]),
    "RestoreXExposureCorrect": ([("model", "RESTOREX_MODEL"), ("image", "IMAGE"), ("mask", "MASK")],
                                [("image", "IMAGE")]),
    "RestoreXExposureCorrectVideo": ([("model", "RESTOREX_MODEL"), ("frames", "IMAGE"), ("mask", "MASK")],
                                     [("frames", "IMAGE")]),
    "SaveAnimatedWEBP": ([("images", "IMAGE")], []),
    "RestoreXBlendPriors": ([("priors", "RESTOREX_PRIORS"), ("toward", "RESTOREX_PRIORS")],
                            [("priors", "RESTOREX_PRIORS")]),
    "RestoreXVisualizePriors": ([("priors", "RESTOREX_PRIORS")], [("chart", "IMAGE")]),
}
DISPLAY = {"LoadImage": "Load Image", "SaveImage": "Save Image", "PreviewImage": "Preview Image",
           "LoadRestoreXModel": "Load RestoreX Model", "RestoreXExtractCLIPPriors": "RestoreX Extract CLIP Priors",
           "RestoreXFFEDMEnhance": "RestoreX FFEDM Enhance", "RestoreXRestormerInject": "RestoreX Restormer Inject",
           "RestoreXExposureCorrect": "RestoreX Exposure Correct",
           "RestoreXExposureCorrectVideo": "RestoreX Exposure Correct (Video)", "SaveAnimatedWEBP": "SaveAnimatedWEBP",
           "RestoreXBlendPriors": "RestoreX Blend Priors",
           "RestoreXVisualizePriors": "RestoreX Visualize Priors"}
SIZES = {"LoadImage": [340, 340], "PreviewImage": [340, 140], "SaveImage": [340, 140], "SaveAnimatedWEBP": [340, 340]}
CONTROL = "control_after_generate"  # the UI-only widget that follows a seed
UI_ONLY = {"upload", CONTROL}


def loader(nid: int, pos: tuple[int, int]) -> dict:
    return node(nid, "LoadRestoreXModel", pos, model_name="restorex-default.safetensors",
                clip_name="(from checkpoint)", device="auto", dtype="auto")


def node(nid: int, kind: str, pos: tuple[int, int], title: str | None = None, links: dict | None = None,
         **widgets: object) -> dict:
    return {"id": nid, "type": kind, "pos": pos, "title": title, "links": links or {}, "widgets": widgets}


def image(nid: int, pos: tuple[int, int], name: str, title: str) -> dict:
    return node(nid, "LoadImage", pos, title, image=name, upload="image")


WORKFLOWS = {
    "restorex_video": [  # Load Image reads every frame of an animated WebP / PNG / GIF as one IMAGE batch
        image(1, (40, 60), "example_clip.webp", "Badly exposed clip (animated WebP)"),
        loader(2, (40, 460)),
        node(3, "RestoreXExposureCorrectVideo", (420, 60), links={"model": (2, 0), "frames": (1, 0)}, window=9,
             hold=0, seed=0, control_after_generate="fixed", steps=0, strength=1.0, feather=16, tile=0, overlap=32,
             auto_strength=True),
        node(4, "SaveAnimatedWEBP", (800, 60), links={"images": (3, 0)}, filename_prefix="RestoreX/video", fps=24.0,
             lossless=True, quality=90, method="default"),
    ],
    "restorex_one_node": [
        image(1, (40, 60), "example.png", "Badly exposed photo"),
        loader(2, (40, 460)),
        node(3, "RestoreXExposureCorrect", (420, 60), links={"model": (2, 0), "image": (1, 0)}, seed=0,
             control_after_generate="fixed", steps=0, strength=1.0, feather=16, tile=0, overlap=32,
             auto_strength=True),
        node(4, "SaveImage", (800, 60), links={"images": (3, 0)}, filename_prefix="RestoreX/one_node"),
    ],
    "restorex_staged": [
        image(1, (40, 60), "example.png", "Badly exposed photo"),
        loader(2, (40, 460)),
        node(3, "RestoreXExtractCLIPPriors", (420, 60), links={"model": (2, 0), "image": (1, 0)}, stage="input"),
        node(4, "RestoreXFFEDMEnhance", (420, 260), links={"model": (2, 0), "priors": (3, 0)}, seed=0,
             control_after_generate="fixed", steps=0),
        node(5, "RestoreXRestormerInject", (800, 60), links={"model": (2, 0), "image": (1, 0), "priors": (4, 0)},
             tile=0, overlap=32),
        node(6, "SaveImage", (1180, 60), links={"images": (5, 0)}, filename_prefix="RestoreX/staged"),
        node(7, "RestoreXVisualizePriors", (800, 300), "Input priors", links={"priors": (3, 0)}, width=896),
        node(8, "PreviewImage", (1180, 300), "Input priors chart", links={"images": (7, 0)}),
        node(9, "RestoreXVisualizePriors", (800, 460), "Enhanced priors", links={"priors": (4, 0)}, width=896),
        node(10, "PreviewImage", (1180, 460), "Enhanced priors chart", links={"images": (9, 0)}),
    ],
    "restorex_reference_guided": [
        image(1, (40, 60), "example.png", "Badly exposed photo"),
        image(2, (40, 460), "example.png", "Well-exposed reference photo"),
        loader(3, (40, 860)),
        node(4, "RestoreXExtractCLIPPriors", (420, 60), "Photo priors", links={"model": (3, 0), "image": (1, 0)},
             stage="input"),
        node(5, "RestoreXFFEDMEnhance", (420, 260), links={"model": (3, 0), "priors": (4, 0)}, seed=0,
             control_after_generate="fixed", steps=0),
        node(6, "RestoreXExtractCLIPPriors", (420, 460), "Reference priors",
             links={"model": (3, 0), "image": (2, 0)}, stage="reference"),
        node(7, "RestoreXBlendPriors", (800, 260), links={"priors": (5, 0), "toward": (6, 0)}, weight=0.5),
        node(8, "RestoreXRestormerInject", (1180, 60), links={"model": (3, 0), "image": (1, 0), "priors": (7, 0)},
             tile=0, overlap=32),
        node(9, "SaveImage", (1560, 60), links={"images": (8, 0)}, filename_prefix="RestoreX/reference_guided"),
    ],
}


def to_api(nodes: list[dict]) -> dict:
    prompt = {}
    for n in nodes:
        inputs = {k: v for k, v in n["widgets"].items() if k not in UI_ONLY}
        inputs.update({name: [str(src), slot] for name, (src, slot) in n["links"].items()})
        title = n["title"] or DISPLAY[n["type"]]
        prompt[str(n["id"])] = {"class_type": n["type"], "inputs": inputs, "_meta": {"title": title}}
    return prompt


def to_ui(nodes: list[dict]) -> dict:
    links, out_links = [], {}
    by_id = {n["id"]: n for n in nodes}
    for n in nodes:
        sockets = SOCKETS[n["type"]][0]
        for name, (src, slot) in n["links"].items():
            link_id = len(links) + 1
            kind = SOCKETS[by_id[src]["type"]][1][slot][1]
            links.append([link_id, src, slot, n["id"], [s[0] for s in sockets].index(name), kind])
            out_links.setdefault((src, slot), []).append(link_id)
    link_of = {(link[3], link[4]): link[0] for link in links}
    ui_nodes = []
    for order, n in enumerate(nodes):
        ins, outs = SOCKETS[n["type"]]
        entry = {
            "id": n["id"], "type": n["type"], "pos": list(n["pos"]),
            "size": SIZES.get(n["type"], [340, 40 + 24 * (max(len(ins), len(outs)) + len(n["widgets"]))]),
            "flags": {}, "order": order, "mode": 0,
            "inputs": [{"name": name, "type": kind, "link": link_of.get((n["id"], i))}
                       for i, (name, kind) in enumerate(ins)],
            "outputs": [{"name": name, "type": kind, "links": out_links.get((n["id"], i), []), "slot_index": i}
                        for i, (name, kind) in enumerate(outs)],
            "properties": {"Node name for S&R": n["type"]},
            "widgets_values": list(n["widgets"].values()),
        }
        if n["title"]:
            entry["title"] = n["title"]
        ui_nodes.append(entry)
    return {"last_node_id": max(by_id), "last_link_id": len(links), "nodes": ui_nodes, "links": links,
            "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}


def write(out: Path = HERE) -> list[Path]:
    """Write every workflow into ``out`` (UI format) and ``out/api`` (API format); return the files written."""
    (out / "api").mkdir(parents=True, exist_ok=True)
    written = []
    for name, nodes in WORKFLOWS.items():
        for path, data in ((out / f"{name}.json", to_ui(nodes)), (out / "api" / f"{name}.json", to_api(nodes))):
            path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
            written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description="Write RestoreX's example workflows.")
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write into (default: example_workflows/)")
    write(parser.parse_args().out)


if __name__ == "__main__":
    main()
