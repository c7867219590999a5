#!/usr/bin/env bash
# Quick start, tests: bash scripts/test.sh [pytest args]   (offline, CPU; a few minutes)
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bash scripts/comfy_deps.sh  # ComfyUI's requirements, once, where a ComfyUI is at hand (the real-ComfyUI test)
exec python -m pytest -q "$@"
