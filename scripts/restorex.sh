#!/usr/bin/env bash
# Quick start, main job: bash scripts/restorex.sh correct docs/sample/house_under.png --out corrected/
# Any `python -m restorex_cli` command works: correct, info (see --help).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python -m restorex_cli "$@"
