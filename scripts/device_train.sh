#!/usr/bin/env bash
# One prepared training run for a lent GPU (the device tool's H200: one call, at most 10 minutes, nothing to
# download there). training/README.md, "Training on a lent GPU", has the whole procedure; in short, here:
#
#   python -m training.pack --data ../shared/data --out .pack/data --budget-mib 44     # the data, ~42 MiB
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 -d .whl open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
#   device run: command "bash scripts/device_train.sh", carry [".pack", ".whl"], timeout_s 600
#
# It fits the prior path (training/configs/experiments/gpu_stage5.toml), then fine-tunes the whole method jointly for
# train.max_minutes (gpu_stage6.toml) from the bundled weights, and leaves the export and the logs in $OUT
# (runs/device_out when run here). Smoke test on a CPU (a minute or two, tiny settings):
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
start=$SECONDS
"$PYTHON" -m training.prior_fit --config training/configs/experiments/gpu_stage5.toml ${PRIOR_ARGS:-} 2>&1 | tee "$OUT/prior_fit.log"
echo "prior fit: $((SECONDS - start)) s" | tee -a "$OUT/machine.txt"
"$PYTHON" -m training.train --config training/configs/experiments/gpu_stage6.toml ${TRAIN_ARGS:-} 2>&1 | tee "$OUT/train.log"
echo "prior fit + joint fine-tune: $((SECONDS - start)) s" | tee -a "$OUT/machine.txt"
cp runs/gpu_stage6/restorex-default.safetensors "$OUT/"
cp runs/gpu_stage6/log.csv "$OUT/train_log.csv"
cp runs/gpu_stage5/log.csv "$OUT/prior_fit_log.csv"
echo "wrote $OUT/restorex-default.safetensors; score it here with training.evaluate --suite heldout"
