"""The committed example workflows are exactly what example_workflows/make_examples.py writes (the README's
command): regenerated into a temporary folder and compared byte for byte, file for file."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "example_workflows"


def make_examples():
    spec = importlib.util.spec_from_file_location("make_examples", EXAMPLES / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generator_and_the_committed_workflows_agree(tmp_path):
    written = make_examples().write(tmp_path)
    committed = sorted(p.relative_to(EXAMPLES) for p in EXAMPLES.rglob("*.json"))
    assert sorted(p.relative_to(tmp_path) for p in written) == committed
    differ = [str(rel) for rel in committed if (tmp_path / rel).read_bytes() != (EXAMPLES / rel).read_bytes()]
    assert not differ, f"run `python example_workflows/make_examples.py` and commit the result: {differ} differ"


def test_the_video_workflow_sets_every_input_of_the_video_node():
    import json

    api = json.loads((EXAMPLES / "api" / "restorex_video.json").read_text())
    (video,) = [n for n in api.values() if n["class_type"] == "RestoreXExposureCorrectVideo"]
    assert {"window", "hold", "seed", "steps", "strength", "feather", "tile", "overlap"} <= set(video["inputs"])
