#!/usr/bin/env bash
# The one GPU check a session runs on a lent accelerator machine (no network there).  Never part of CI.
#
#   bash .ci/gpu-check.sh            # OUT=<dir> collects logs and the trained toy weights (tar)
#
# 1. with TRAIN=1 only: trains the toy world from scratch on cuda and calibrates it (minutes of device time);
# 2. runs every method on the committed toy world with --device cuda (float32 with TF32 matmuls, the default), with
#    the toy backbone's presets (device bugs show up here);
# 3. measures throughput (engine vs the authors' loop) on cuda/float16, on the tiny pipeline;
# 4. the SD-size perf suite (tests/perf/test_sd_perf.py: SD-1.4 architecture, random weights, 512 px, 30 DDIM steps,
#    CFG): engine vs authors' loop, batch-size sweep, SDPA backends and MFU in float16, then the engine test in
#    float32 + TF32.  Every step has its own timeout; together they stay under 8 minutes (default RUN_TIMEOUT 120).
# Packages the machine lacks (it has no network) can be put beside the repository as wheels in .whl/: they are
# installed offline first.  The harness itself is installed editable into the python3 on PATH (a throwaway machine).
# Exit status: 0 only if every step passed; the steps that failed are listed at the end.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"

step() { echo "=== $1 ($(date +%T))"; current="$1"; }
failed=()
check() { [ "$1" = 0 ] || failed+=("$current (exit $1)"); }  # after each step: its pipeline's status (pipefail)

if [ "${TRAIN:-0}" = 1 ]; then
    step "toy world: training from scratch"
    WEIGHTS=/tmp/toy-weights
    timeout ${TRAIN_TIMEOUT:-300} python3 -m benchmarks.toyworld.train --out "$WEIGHTS" --device cuda --seed 0 2>&1 | tr '\r' '\n' | { grep -v "it/s\]$" || true; } | tee "$OUT/train.log"
    check $?
    tar czf "$OUT/toy-weights.tar.gz" -C "$WEIGHTS" . && ls -la "$OUT"
    export HARNESS_TOY_WEIGHTS=$WEIGHTS
    step "toy world: calibration"
    timeout 60 python3 -m benchmarks.toyworld.calibrate --model "$WEIGHTS" --device cuda --out "$OUT/calibration.json" 2>&1 | tee "$OUT/calibrate.log"
    check $?
fi

step "every method on the toy world (toy backbone presets), cuda/float32+TF32"
timeout ${RUN_TIMEOUT:-120} harness run --methods "${GPU_METHODS:-sd,uce,rece,trce-t,trce-v,trce,esd-u,sld,safree,speed,adavd}" \
    --bench toy-explicit,toy-implicit,toy-preserve --limit 100 --device cuda --out /tmp/gpu-run --no-progress \
    2>&1 | tee "$OUT/toy-run.log"
check $?

step "throughput on cuda/float16"
timeout 45 python3 -m pytest tests/perf/test_engine_perf.py -k engine --device cuda --dtype float16 --benchmark-only -s -q -p no:cacheprovider \
    2>&1 | tail -15 | tee "$OUT/perf.log"
check $?

step "SD-size perf suite on cuda/float16"
timeout 150 python3 -m pytest tests/perf/test_sd_perf.py --device cuda --dtype float16 --benchmark-only -s -q -p no:cacheprovider \
    --benchmark-json "$OUT/sd-perf-float16.json" 2>&1 | { grep -v "^\s*$" || true; } | tail -25 | tee "$OUT/sd-perf-float16.log"
check $?

step "SD-size engine vs authors' loop on cuda/float32 + TF32"
timeout 120 python3 -m pytest tests/perf/test_sd_perf.py -k engine_vs --device cuda --dtype float32 --benchmark-only -s -q -p no:cacheprovider \
    --benchmark-json "$OUT/sd-perf-float32.json" 2>&1 | { grep -v "^\s*$" || true; } | tail -12 | tee "$OUT/sd-perf-float32.log"
check $?
step done
if [ ${#failed[@]} -gt 0 ]; then
    printf 'failed: %s\n' "${failed[@]}"
    exit 1
fi
