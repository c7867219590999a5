"""What the node search, the translated UI and the help panel read: SEARCH_ALIASES on every node,
locales/{en,zh} in ComfyUI's i18n format covering exactly the nodes, inputs and outputs the code has, and
web/docs/<NodeId>.md help pages (with their pictures) written from the nodes' own tooltips."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def make_locales():
    spec = importlib.util.spec_from_file_location("make_locales", ROOT / "scripts" / "make_locales.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def english(make_locales):
    return make_locales.english()


def _read(lang: str) -> dict:
    return json.loads((ROOT / "locales" / lang / "nodeDefs.json").read_text(encoding="utf-8"))


def test_english_locale_is_the_nodes_own_text(english):
    assert _read("en") == english, "locales/en is out of date: run python scripts/make_locales.py"
    assert set(english) == {"LoadRestoreXModel", "RestoreXExtractCLIPPriors", "RestoreXFFEDMEnhance",
                            "RestoreXRestormerInject", "RestoreXExposureCorrect", "RestoreXExposureCorrectVideo",
                            "RestoreXBlendPriors", "RestoreXVisualizePriors"}
    assert all(d["description"] and all("tooltip" in i for i in d["inputs"].values()) for d in english.values())


def _texts(defs: dict, path: str = ""):
    for key, value in defs.items():
        if isinstance(value, dict):
            yield from _texts(value, f"{path}.{key}")
        else:
            yield f"{path}.{key}", value


def test_chinese_locale_says_the_same_as_the_english(make_locales, english):
    zh = _read("zh")
    assert make_locales.shape(zh) == make_locales.shape(english)  # same nodes, inputs, outputs and fields
    cjk = re.compile(r"[\u4e00-\u9fff]")
    for (key, en_text), (_, zh_text) in zip(_texts(english), _texts(zh), strict=True):
        assert zh_text.strip(), key
        if key.endswith((".tooltip", ".description", ".display_name")):
            assert cjk.search(zh_text), f"{key} is not translated: {zh_text!r}"
        # the numbers, units and names a tooltip states must say the same in Chinese
        for token in re.findall(r"\d+(?:[./]\d+)*|x_T|RGBA|fp32|bf16|fp16|--cpu|FFEDM|Restormer", en_text):
            assert token in zh_text, f"{key}: {token!r} of {en_text!r} is missing from {zh_text!r}"


def test_every_node_has_search_aliases_for_what_people_type(make_locales):
    make_locales.english()  # imports the nodes package the same way
    from nodes import NODE_CLASS_MAPPINGS

    for node_id, cls in NODE_CLASS_MAPPINGS.items():
        aliases = cls.SEARCH_ALIASES
        assert len(aliases) >= 3 and all(a == a.lower().strip() and a for a in aliases), node_id
    for word in ("exposure", "brighten", "low light", "underexposed", "overexposed"):  # from issue 24
        found = {node_id for node_id, cls in NODE_CLASS_MAPPINGS.items() if word in cls.SEARCH_ALIASES}
        assert {"RestoreXExposureCorrect", "RestoreXExposureCorrectVideo"} <= found, word


def test_every_node_has_an_up_to_date_help_page_with_a_picture(english):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_help.py"), "--check"], capture_output=True,
                          text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    for node_id in english:
        page = (ROOT / "web" / "docs" / f"{node_id}.md").read_text(encoding="utf-8")
        for heading in ("## What it does", "## When to use it", "## Inputs", "## Outputs"):
            assert heading in page, f"{node_id}: {heading}"
        pictures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", page)
        assert pictures and all((ROOT / "web" / "docs" / p).is_file() for p in pictures), node_id
    thumbnails = {p.stem for p in (ROOT / "example_workflows").glob("*.jpg")}
    assert thumbnails == {p.stem for p in (ROOT / "example_workflows").glob("*.json")}  # one per template
