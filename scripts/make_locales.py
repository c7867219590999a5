"""Write locales/en/nodeDefs.json from the nodes' own names, descriptions and tooltips (ComfyUI's i18n format).

    python scripts/make_locales.py          # rewrite locales/en/nodeDefs.json
    python scripts/make_locales.py --check  # exit 1 if it is out of date or locales/zh does not match its keys

ComfyUI serves every pack's locales/<lang>/{main,nodeDefs,...}.json at GET /i18n; the frontend shows
``nodeDefs.<NodeId>.display_name``, ``.description``, ``.inputs.<name>.name``/``.tooltip`` and
``.outputs.<index>.name``/``.tooltip`` in the user's language, falling back to the node's own English text.
locales/zh/nodeDefs.json is written by hand and must say the same as the English; tests/test_locales.py checks
that both files cover exactly the nodes, inputs and outputs the code has.
"""

from __future__ import annotations

import json
import sys
import tempfile
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EN, ZH = ROOT / "locales" / "en" / "nodeDefs.json", ROOT / "locales" / "zh" / "nodeDefs.json"


def _folder_paths_stand_in() -> types.ModuleType:
    """The loader's INPUT_TYPES lists model files through ComfyUI's folder_paths: an empty stand-in will do."""
    fp = types.ModuleType("folder_paths")
    fp.models_dir, fp.supported_pt_extensions, fp.folder_names_and_paths = tempfile.gettempdir(), set(), {}
    fp.get_filename_list = lambda name: []
    fp.get_folder_paths = lambda name: []
    return fp


def english() -> dict:
    """nodeDefs for every node, from the classes (tooltips, DESCRIPTION, OUTPUT_TOOLTIPS, display names)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    had = sys.modules.get("folder_paths")
    sys.modules["folder_paths"] = had or _folder_paths_stand_in()
    try:
        return _node_defs(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS)
    finally:
        if had is None:
            del sys.modules["folder_paths"]


def _node_defs(NODE_CLASS_MAPPINGS: dict, NODE_DISPLAY_NAME_MAPPINGS: dict) -> dict:
    defs = {}
    for node_id, cls in NODE_CLASS_MAPPINGS.items():
        inputs = {}
        for section in ("required", "optional"):
            for name, spec in cls.INPUT_TYPES().get(section, {}).items():
                options = spec[1] if len(spec) > 1 else {}
                inputs[name] = {"name": name, **({"tooltip": options["tooltip"]} if "tooltip" in options else {})}
        tooltips = getattr(cls, "OUTPUT_TOOLTIPS", ())
        outputs = {str(i): {"name": name, **({"tooltip": tooltips[i]} if i < len(tooltips) else {})}
                   for i, name in enumerate(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES))}
        defs[node_id] = {"display_name": NODE_DISPLAY_NAME_MAPPINGS[node_id], "description": cls.DESCRIPTION,
                         "inputs": inputs, "outputs": outputs}
    return defs


def shape(defs: dict) -> dict:
    """The keys of a nodeDefs file without its text: what a translation must match."""
    return {k: shape(v) if isinstance(v, dict) else None for k, v in defs.items()}


def main() -> int:
    text = json.dumps(english(), ensure_ascii=False, indent=2) + "\n"
    if "--check" not in sys.argv:
        EN.write_text(text, encoding="utf-8")
        return 0
    problems = []
    if EN.read_text(encoding="utf-8") != text:
        problems.append(f"{EN} is out of date: run python scripts/make_locales.py")
    if shape(json.loads(ZH.read_text(encoding="utf-8"))) != shape(json.loads(text)):
        problems.append(f"{ZH} does not have the same nodes, inputs, outputs and fields as the English")
    sys.stderr.write(("\n".join(problems) or "locales up to date") + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
