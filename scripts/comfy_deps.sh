#!/usr/bin/env bash
# Install what a real ComfyUI needs to run tests/test_comfy_integration.py into the project's venv (.venv, made
# by scripts/env.sh): ComfyUI's requirements.txt (+ requests, which its 0.3.64 server imports but does not list),
# never a second torch. torch/torchvision/torchaudio lines are dropped and a constraints file pins the torch and
# torchvision already installed, so pip cannot replace them (torchaudio is only used by ComfyUI's audio nodes).
# Does nothing where there is no ComfyUI (COMFYUI_DIR, default ../shared/comfyui): the test then skips.
# scripts/test.sh runs it first; it installs once per ComfyUI requirements.txt (a stamp in the venv).
#   bash scripts/comfy_deps.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
COMFY="${COMFYUI_DIR:-$ROOT/../shared/comfyui}"
if [ ! -f "$COMFY/requirements.txt" ]; then
  echo "[restorex] no ComfyUI at $COMFY: the ComfyUI integration test will skip" >&2
  exit 0
fi
STAMP="$VENV/.restorex-comfy-deps"
WANT="$(sha256sum "$COMFY/requirements.txt" | cut -c1-64)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
grep -vE '^\s*(torch|torchvision|torchaudio)\s*($|[<>=~!;\[])' "$COMFY/requirements.txt" > "$TMP/requirements.txt"
python - > "$TMP/constraints.txt" <<'PY'
import torch, torchvision
for m in (torch, torchvision):
    print(f"{m.__name__}=={m.__version__.split('+')[0]}")
PY
echo "[restorex] installing ComfyUI's requirements (torch kept at $(tr '\n' ' ' < "$TMP/constraints.txt"))" >&2
python -m pip install --quiet -r "$TMP/requirements.txt" requests -c "$TMP/constraints.txt"
python - <<'PY'
import torch
print(f"[restorex] ComfyUI requirements installed; torch {torch.__version__}")
PY
echo "$WANT" > "$STAMP"
