#!/usr/bin/env bash
# The one GPU check a session runs on a lent accelerator machine (no network there).  Never part of CI.
#
#   bash .ci/gpu-check.sh            # OUT=<dir> collects logs and the trained toy weights (tar)
#
# 1. trains the toy world from scratch on cuda and calibrates it (the committed weights come from this run);
# 2. runs the toy comparison with --device cuda --dtype float16 (device and dtype bugs show up here);
# 3. measures throughput (engine vs the authors' loop) on cuda/float16.
# Missing packages (diffusers, nudenet) travel as wheels in .whl/ (see README of the device tool).
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

step() { echo "=== $1 ($(date +%T))"; }

step "toy world: training from scratch"
WEIGHTS=/tmp/toy-weights
timeout ${TRAIN_TIMEOUT:-300} python3 -m benchmarks.toyworld.train --out "$WEIGHTS" --device cuda --seed 0 2>&1 | tr '\r' '\n' | grep -v "it/s\]$" | tee "$OUT/train.log"
tar czf "$OUT/toy-weights.tar.gz" -C "$WEIGHTS" . && ls -la "$OUT"
export HARNESS_TOY_WEIGHTS=$WEIGHTS

step "toy world: calibration"
timeout 60 python3 -m benchmarks.toyworld.calibrate --model "$WEIGHTS" --device cuda --out "$OUT/calibration.json" 2>&1 | tee "$OUT/calibrate.log"

step "toy comparison on cuda/float16"
timeout 90 harness run --methods "${GPU_METHODS:-sd,uce,rece,trce-t}" --bench toy --device cuda --dtype float16 --out /tmp/gpu-run --no-progress \
    2>&1 | tee "$OUT/toy-run.log"

step "throughput on cuda/float16"
timeout 60 python3 -m pytest tests/perf/test_engine_perf.py -k engine --device cuda --dtype float16 --benchmark-only -s -q -p no:cacheprovider \
    2>&1 | tail -15 | tee "$OUT/perf.log"
step done
