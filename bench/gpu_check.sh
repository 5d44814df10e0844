#!/usr/bin/env bash
# GPU check: one prepared script for a lent CUDA machine, under 8 minutes. Runs, in order:
#   1. the default-config pipeline on the bundled dataset (CUDA, AMP on, batch auto-sized,
#      PPO on cuda), no push, time-boxed;
#   2. the classifier benchmark at default sizes with AMP on and off;
#   3. PPO learn() with the default settings on cuda vs cpu;
#   4. env steps/s of the vectorised envs (dummy vs batched) on the pod's CPU cores.
# Results go to $OUT (default /tmp/gpu_check): logs, markdown tables, the run summary and a
# tarball of results/. Wheels for packages the pod lacks may be carried in .whl/ (installed to
# /tmp/site first). Usage:  OUT=/tmp/gpu bash bench/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
DATASET=${DATASET:-SYNTH-BTC-EUR_1H_20240101-20251231}
PIPELINE_S=${PIPELINE_S:-240}
LOG="$OUT/gpu_check.log"

# The bench scripts import the project as installed (pip install -e .); the repo root on the path
# does the same on a pod image where nothing can be installed.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >/dev/null 2>&1 && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

stage() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }
{
  stage "machine"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  nproc; free -g | head -2
  $PY -c "import sys, torch, stable_baselines3 as sb3, gymnasium as gym, numpy, pandas; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), 'bf16', torch.cuda.is_available() and torch.cuda.is_bf16_supported(), 'sb3', sb3.__version__, 'gymnasium', gym.__version__, 'numpy', numpy.__version__, 'pandas', pandas.__version__)"

  stage "1. default-config pipeline on $DATASET (cuda, limit ${PIPELINE_S}s)"
  t0=$(date +%s)
  timeout -s INT "$PIPELINE_S" $PY runpod_main.py --dataset "$DATASET" --no-push > "$OUT/pipeline.log" 2>&1
  echo "pipeline exit code $? after $(( $(date +%s) - t0 )) s"
  tail -40 "$OUT/pipeline.log"
  cp results/run_summary_*.json "$OUT/" 2>/dev/null
  tar czf "$OUT/results.tar.gz" results logs models/*.json ppo_approach/logs 2>/dev/null

  stage "2. classifier benchmark, default sizes, AMP on / off"
  # 10,000 windows: min_steps_per_epoch (50) caps the batch at 200 here as in the pipeline (the
  # bundled dataset's ~11,000 training windows train at ~220); the auto-size growth past the
  # configured 1,024 needs more than 102,400 windows and enough free memory.
  for amp in on off; do
    timeout 75 $PY bench/bench_classifier.py --device cuda --amp "$amp" --sizes default \
      --default-windows 10000 --epochs 3 --repeats 1 --out "$OUT/classifier_amp_$amp.md" 2>&1 | tail -6
  done

  stage "3. PPO default settings, cuda vs cpu"
  timeout 130 $PY bench/bench_ppo_device.py --runs 2 --rollouts 2 --out "$OUT/ppo_device.md" 2>&1 | tail -8

  stage "4. vectorised envs: env steps/s, dummy vs batched"
  timeout 40 $PY bench/bench_vec_env.py --parts steps --runs 1 --subproc-max 0 \
    --out "$OUT/vec_env.md" 2>&1 | tail -12
  stage "done"
} 2>&1 | tee "$LOG"
