#!/usr/bin/env bash
# One prepared training run for a lent GPU (the device tool's H200: one call, at most 10 minutes, nothing to
# download there). training/README.md, "Training on a lent GPU", has the whole procedure; in short, here:
#
#   python -m training.pack --data ../shared/data --out .pack/data --short-side 320 --budget-mib 36   # 36 MiB
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 -d .whl open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
#   device run: command "bash scripts/device_train.sh", carry [".pack", ".whl"], timeout_s 600
#
# It fits the prior path (PRIOR_CONFIG, default training/configs/experiments/gpu_stage5.toml; PRIOR_CONFIG= skips
# it), then fine-tunes the whole method jointly for train.max_minutes (TRAIN_CONFIG, default gpu_stage6.toml) from
# the bundled weights, and leaves the export and the logs in $OUT (runs/device_out when run here).  Issue 22's recipe
# at GPU scale (v4e, v4f): PRIOR_CONFIG= TRAIN_CONFIG=training/configs/experiments/gpu_v4.toml bash scripts/device_train.sh
# Smoke test on a CPU (a minute or two, tiny settings):
#
#   PYTHON=.venv/bin/python PRIOR_ARGS="--train.device=cpu --train.cache_items=64 --train.max_steps=20 \
#       --data.num_workers=1" TRAIN_ARGS="--train.device=cpu --train.max_minutes=0.5 --data.batch_size=2 \
#       --data.crop=64 --data.resize_short=[64,96] --data.num_workers=1" bash scripts/device_train.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-runs/device_out}
mkdir -p "$OUT"

if ! "$PYTHON" -c "import open_clip" 2>/dev/null; then
    if ! ls .whl/*.whl >/dev/null 2>&1; then
        echo "error: open_clip is not installed and there are no wheels in .whl/ to install it from;" \
             "download them here (the pip download line at the top of $0) and carry .whl" >&2
        exit 2
    fi
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
# Which run: the prior fit (PRIOR_CONFIG; empty to skip it) and the joint fine-tune (TRAIN_CONFIG) it feeds.
PRIOR_CONFIG=${PRIOR_CONFIG-training/configs/experiments/gpu_stage5.toml}
TRAIN_CONFIG=${TRAIN_CONFIG:-training/configs/experiments/gpu_stage6.toml}
export RESTOREX_DATA=${RESTOREX_DATA:-$PWD/.pack/data}
export RESTOREX_V3=${RESTOREX_V3:-$PWD/weights/restorex-default.safetensors}
if [ ! -d "$RESTOREX_DATA/stacks" ]; then
    echo "error: no training data at $RESTOREX_DATA (no stacks/ folder): make it with" \
         "'python -m training.pack --data ../shared/data --out .pack/data' and carry .pack" >&2
    exit 2
fi

"$PYTHON" - <<'PY' | tee "$OUT/machine.txt"
import os, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"torch {torch.__version__}, GPU: {gpu}, CPU cores: {os.cpu_count()}")
PY
# The run's out_dir, read from its config (every key inherited and ${VAR} expanded as training does).
run_dir() { "$PYTHON" -c "import sys; from training.config import load_config; print(load_config(sys.argv[1]).train.out_dir)" "$1"; }
TRAIN_RUN=$(run_dir "$TRAIN_CONFIG")
start=$SECONDS
if [ -n "$PRIOR_CONFIG" ]; then
    "$PYTHON" -m training.prior_fit --config "$PRIOR_CONFIG" ${PRIOR_ARGS:-} 2>&1 | tee "$OUT/prior_fit.log"
    echo "prior fit: $((SECONDS - start)) s" | tee -a "$OUT/machine.txt"
    cp "$(run_dir "$PRIOR_CONFIG")/log.csv" "$OUT/prior_fit_log.csv"
fi
"$PYTHON" -m training.train --config "$TRAIN_CONFIG" ${TRAIN_ARGS:-} 2>&1 | tee "$OUT/train.log"
echo "${PRIOR_CONFIG:+prior fit + }fine-tune: $((SECONDS - start)) s" | tee -a "$OUT/machine.txt"
cp "$TRAIN_RUN/restorex-default.safetensors" "$OUT/"
cp "$TRAIN_RUN/log.csv" "$OUT/train_log.csv"
echo "wrote $OUT/restorex-default.safetensors; score it here with training.evaluate --suite heldout"
