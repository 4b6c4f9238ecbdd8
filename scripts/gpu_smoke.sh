#!/usr/bin/env bash
# Smoke test of the GPU path, one step at a time; each prints PASS, FAIL or SKIP (with its reason) and its
# seconds, the script goes on after a failure and exits non-zero if any step failed.
#
#   bash scripts/gpu_smoke.sh                  # on a GPU machine: the bundled model, bf16, one GPU
#   bash scripts/gpu_smoke.sh --cpu            # the same steps on a CPU: tiny model (the vLLM step a small one with
#                                              # 64-dimensional heads), fp32, DeepSpeed through
#                                              # the tests' CPU adaptation (tests/training/train_deepspeed_cpu.py)
#   options: --out DIR (logs, outputs and the MLflow store; default a new temporary folder)
#            --tolerance F (memory check: |measured - predicted| <= F x predicted; default 0.25)
#
# Steps: CUDA visible; 2 PPO iterations with trainer=deepspeed_zero2 on one device; the same with rollout=vllm
# (skipped when vLLM is not installed); a ZeRO-3 run saving a checkpoint after iteration 1, resumed with
# resume=auto up to iteration 2; the memory plan (python -m medrlvr.plan) against the ZeRO-2 run's
# perf/max_memory_allocated_gib (CUDA only).
set -uo pipefail
cd "$(dirname "$0")/.."

CPU=0
OUT=""
TOLERANCE=0.25
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) CPU=1 ;;
    --out) OUT="$2"; shift ;;
    --tolerance) TOLERANCE="$2"; shift ;;
    *) echo "usage: bash scripts/gpu_smoke.sh [--cpu] [--out DIR] [--tolerance F]" >&2; exit 2 ;;
  esac
  shift
done
OUT="$(mkdir -p "${OUT:-$(mktemp -d -t gpu_smoke.XXXXXX)}" && cd "${OUT:-.}" && pwd)"
URI="sqlite:///$OUT/mlflow.db"
SKIPPED=77
# the longest prompt of the bundled set is 357 tokens (the tiny model uses the same tokenizer and prompts)
PROMPT_TOKENS=360

if [ "$CPU" = 1 ]; then
  TRAIN=(python -m torch.distributed.run --standalone --nproc_per_node 1 tests/training/train_deepspeed_cpu.py)
  SETTING=(experiment=smoke trainer.accelerator=cpu trainer.precision=32-true trainer.num_threads=1
           model.gradient_checkpointing=false)
  export OMP_NUM_THREADS=1
else
  TRAIN=(python -m medrlvr.train)
  SETTING=(data.eval_size=8 rollout.vllm.dtype=bfloat16)
fi
COMMON=(trainer.devices=1 "logger.tracking_uri=$URI" "hydra.run.dir=$OUT/hydra")

train() {  # train NAME [overrides...]: one training run with its own output folder and MLflow experiment
  local name="$1"; shift
  "${TRAIN[@]}" "${SETTING[@]}" "${COMMON[@]}" "trainer.output_dir=$OUT/$name" "logger.experiment_name=smoke-$name" "$@"
}

metric() {  # metric EXPERIMENT KEY: "<steps> <max value>" of KEY over the experiment's runs
  python - "$URI" "$1" "$2" <<'EOF'
import sys
from mlflow.tracking import MlflowClient
uri, experiment, key = sys.argv[1:]
client = MlflowClient(uri)
found = client.get_experiment_by_name(experiment)
runs = client.search_runs([found.experiment_id]) if found else []
history = [m for run in runs for m in client.get_metric_history(run.info.run_id, key)]
if not history:
    sys.exit(f"no {key} logged in experiment {experiment}")
print(",".join(str(s) for s in sorted({m.step for m in history})), max(m.value for m in history), len(runs))
EOF
}

step_cuda() {
  if [ "$CPU" = 1 ]; then echo "--cpu: no GPU needed"; return $SKIPPED; fi
  python -c "import sys, torch; ok = torch.cuda.is_available(); print(torch.cuda.get_device_name(0) if ok else 'torch.cuda.is_available() is False'); sys.exit(0 if ok else 1)"
}

step_zero2() {
  train zero2 trainer=deepspeed_zero2 trainer.max_steps=2 && metric smoke-zero2 reward/mean | grep -q '^1,2 '
}

step_vllm() {
  if ! python -c "import vllm" 2>/dev/null; then echo "vLLM is not installed (bash scripts/install.sh vllm)"; return $SKIPPED; fi
  local model=()
  if [ "$CPU" = 1 ]; then  # the tiny model's 16-dimensional heads are below what vLLM's CPU attention supports
    python -c "import sys; from medrlvr.models.loading import save_small_model; save_small_model(sys.argv[1])" \
      "$OUT/small-model" || return 1
    model=("model.name_or_path=$OUT/small-model")
  fi
  train vllm trainer=deepspeed_zero2 trainer.max_steps=2 rollout=vllm "${model[@]}" \
    && metric smoke-vllm reward/mean | grep -q '^1,2 '
}

step_zero3_resume() {
  train zero3 trainer=deepspeed_zero3 trainer.max_steps=1 trainer.checkpoint_every=1 || return 1
  train zero3 trainer=deepspeed_zero3 trainer.max_steps=2 trainer.checkpoint_every=1 resume=auto || return 1
  local logged
  logged="$(metric smoke-zero3 reward/mean)" || return 1
  echo "reward/mean steps, max, runs: $logged"
  [ "${logged%% *}" = "1,2" ] && [ "${logged##* }" = 1 ]  # both iterations in one MLflow run
}

step_memory_plan() {
  if [ "$CPU" = 1 ]; then
    echo "no CUDA allocator on the CPU (benchmarks/memory_plan_check.py compares the plan with peak RSS)"
    return $SKIPPED
  fi
  local gib measured
  gib="$(python -c "import torch; print(torch.cuda.get_device_properties(0).total_memory / 2**30)")" || return 1
  python -m medrlvr.plan "${SETTING[@]}" trainer=deepspeed_zero2 trainer.devices=1 "gpu_memory_gib=[$gib]" \
    "prompt_tokens=$PROMPT_TOKENS" "json=$OUT/plan.json" || return 1
  measured="$(metric smoke-zero2 perf/max_memory_allocated_gib)" || return 1
  python - "$OUT/plan.json" "$(echo "$measured" | cut -d' ' -f2)" "$TOLERANCE" <<'EOF'
import json, sys
plan, measured, tolerance = json.load(open(sys.argv[1])), float(sys.argv[2]), float(sys.argv[3])
predicted = plan["gpus"][0]["peak_bytes"] / 2**30
print(f"predicted peak {predicted:.2f} GiB, torch.cuda.max_memory_allocated {measured:.2f} GiB")
sys.exit(0 if abs(measured - predicted) <= tolerance * predicted else 1)
EOF
}

FAILED=0
run_step() {
  local name="$1" start status code milliseconds
  start=$(date +%s%N)
  "step_$name" >"$OUT/$name.log" 2>&1
  code=$?
  milliseconds=$((($(date +%s%N) - start) / 1000000))
  case $code in
    0) status=PASS ;;
    "$SKIPPED") status=SKIP ;;
    *) status=FAIL; FAILED=$((FAILED + 1)) ;;
  esac
  printf '%s %s %d.%d s' "$status" "$name" $((milliseconds / 1000)) $((milliseconds % 1000 / 100))
  [ "$status" = SKIP ] && printf ': %s' "$(tail -n 1 "$OUT/$name.log")"
  printf '\n'
  if [ "$status" = FAIL ]; then
    { grep -m 3 '^error:' "$OUT/$name.log" || tail -n 15 "$OUT/$name.log"; } | sed 's/^/    /'
  fi
}

for name in cuda zero2 vllm zero3_resume memory_plan; do
  run_step "$name"
done
echo "logs and outputs: $OUT"
[ "$FAILED" = 0 ]
