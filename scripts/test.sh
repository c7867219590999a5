#!/usr/bin/env bash
# Quick start, tests: bash scripts/test.sh [pytest args]   (offline, CPU; a few minutes)
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python -m pytest -q "$@"
