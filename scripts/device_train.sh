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
# it), then fine-tunes the whole method jointly for train.max_minutes (TRAIN_CONFIG, default gpu_stage6.toml; several
# configs, space-separated, train side by side on the one GPU) from the bundled weights, and leaves each export and
# its logs in $OUT as <config name>.safetensors / .log / .csv (runs/device_out when run here).  Issue 22's recipe
# at GPU scale (v4e, v4f): PRIOR_CONFIG= TRAIN_CONFIG=training/configs/experiments/gpu_v4.toml bash scripts/device_train.sh
# Behind a fitted tone curve (v7, v7m: TONE_HEAD, below): the command at the top of gpu_v7.toml.
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

# A tone head fitted here (training.curve_probe --export, then python -m training.tone_head split: the whole export
# would not fit the carried tree) joins the bundled weights there: the init of the configs that read RESTOREX_TONE_INIT.
if [ -n "${TONE_HEAD:-}" ]; then
    export RESTOREX_TONE_INIT=${RESTOREX_TONE_INIT:-${TMPDIR:-/tmp}/restorex_tone_init.safetensors}
    "$PYTHON" -m training.tone_head join "$RESTOREX_V3" "$TONE_HEAD" "$RESTOREX_TONE_INIT"
fi
"$PYTHON" - <<'PY' | tee "$OUT/machine.txt"
import os, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"torch {torch.__version__}, GPU: {gpu}, CPU cores: {os.cpu_count()}")
PY
# The run's out_dir, read from its config (every key inherited and ${VAR} expanded as training does).
run_dir() { "$PYTHON" -c "import sys; from training.config import load_config; print(load_config(sys.argv[1]).train.out_dir)" "$1"; }
start=$SECONDS
# The fused stack targets, made once for every run, one scene per core (else each run's loader makes them).
"$PYTHON" -m training.fusion --stacks "$RESTOREX_DATA/stacks" --jobs "$(nproc)" | tee -a "$OUT/machine.txt"
echo "fused targets: $((SECONDS - start)) s" | tee -a "$OUT/machine.txt"
if [ -n "$PRIOR_CONFIG" ]; then
    "$PYTHON" -m training.prior_fit --config "$PRIOR_CONFIG" ${PRIOR_ARGS:-} 2>&1 | tee "$OUT/prior_fit.log"
    echo "prior fit: $((SECONDS - start)) s" | tee -a "$OUT/machine.txt"
    cp "$(run_dir "$PRIOR_CONFIG")/log.csv" "$OUT/prior_fit_log.csv"
fi
# One fine-tune, or several configs (space-separated) side by side on the same GPU: a small model leaves it idle
# most of a step, so two runs cost little more wall-clock time than one. Each writes $OUT/<config name>.*.
pids=()
for config in $TRAIN_CONFIG; do
    name=$(basename "$config" .toml)
    "$PYTHON" -m training.train --config "$config" ${TRAIN_ARGS:-} > "$OUT/$name.log" 2>&1 &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
echo "${PRIOR_CONFIG:+prior fit + }fine-tune: $((SECONDS - start)) s" | tee -a "$OUT/machine.txt"
for config in $TRAIN_CONFIG; do
    name=$(basename "$config" .toml) run=$(run_dir "$config")
    tail -n 3 "$OUT/$name.log"
    cp "$run/log.csv" "$OUT/$name.csv" 2>/dev/null || true
    if [ -f "$run/restorex-default.safetensors" ]; then
        cp "$run/restorex-default.safetensors" "$OUT/$name.safetensors"
        echo "wrote $OUT/$name.safetensors; score it here with training.evaluate --suite heldout"
    fi
done
exit $status
