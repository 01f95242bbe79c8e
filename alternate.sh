#!/usr/bin/env bash
# Rubric-ARM Stage II (and, unless given SFT adapters, Stage I): SFT warm-up, then alternating GRPO.
#
#   bash alternate.sh                 # the bundled tiny demo, end to end on CPU (same as --demo)
#   bash alternate.sh --model Qwen/Qwen3-8B --data OpenRubrics/OpenRubric-v2 --out runs/arm \
#        --gpus 8 --cycles 3 --order judge-first
#
# Each cycle uses its own disjoint part of the RL data: cache one rubric per example with the current
# generator, train the judge under those rubrics (generator frozen), then train the generator against
# the new judge (judge frozen). --order rubric-first swaps the two phases (the paper's ablation).
# Every finished step leaves OUT/.done/STEP; rerunning the same command skips finished steps and
# resumes an interrupted one from its last checkpoint. Logs: OUT/logs/STEP.log.
#
# Extra flags reach the stages through SFT_RUBRIC_ARGS, SFT_JUDGE_ARGS, CACHE_ARGS, JUDGE_ARGS,
# RUBRIC_ARGS, EVAL_ARGS, MODEL_ARGS (all stages; e.g. "--load-4bit --gradient-checkpointing").
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

MODEL="Qwen/Qwen3-8B"; DATA="OpenRubrics/OpenRubric-v2"; SFT_DATA=""; EVAL_DATA=""; OUT="runs/arm"
CYCLES=3; GPUS=1; ORDER="judge-first"; RUBRIC_INIT=""; JUDGE_INIT=""; DEMO=0; SEED=0
[ $# -eq 0 ] && DEMO=1
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; cat <<'TXT'
Flags:
  --demo               the bundled tiny default on CPU (also what no arguments does)
  --model NAME         base model for both adapters (default Qwen/Qwen3-8B)
  --data SRC           RL preference data: hub name or local file (split into --cycles parts)
  --sft-data SRC       SFT warm-up data with rubric and judge_trajectory (default: --data)
  --eval-data SRC      pairwise eval file for the final evaluation (optional)
  --rubric-init DIR    skip rubric SFT, start from this adapter
  --judge-init DIR     skip judge SFT, start from this adapter
  --cycles K           alternating cycles (default 3)
  --order ORDER        judge-first (default, the paper) | rubric-first (the paper's ablation) |
                       simultaneous (both phases from the previous cycle's models)
  --gpus N             processes per training phase; >1 uses torchrun (default 1)
  --out DIR            output folder (default runs/arm)
  --seed N             seed for the data split and the stages (default 0)
TXT
}
while [ $# -gt 0 ]; do
  case "$1" in
    --demo) DEMO=1; shift ;;
    --model) MODEL="$2"; shift 2 ;;
    --data) DATA="$2"; shift 2 ;;
    --sft-data) SFT_DATA="$2"; shift 2 ;;
    --eval-data) EVAL_DATA="$2"; shift 2 ;;
    --rubric-init) RUBRIC_INIT="$2"; shift 2 ;;
    --judge-init) JUDGE_INIT="$2"; shift 2 ;;
    --cycles) CYCLES="$2"; shift 2 ;;
    --order) ORDER="$2"; shift 2 ;;
    --gpus) GPUS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "alternate.sh: unknown flag $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$ORDER" in judge-first|rubric-first|simultaneous) ;;
  *) echo "alternate.sh: --order must be judge-first, rubric-first or simultaneous" >&2; exit 2 ;; esac

cd "$HERE"
# shellcheck source=env.sh
source "$HERE/env.sh"
export PYTHONUNBUFFERED=1

if [ "$DEMO" = 1 ]; then
  # The bundled tiny default: a random tiny Qwen3 + the synthetic demo data, short phases, on CPU.
  [ "$OUT" = "runs/arm" ] && OUT="runs/demo"
  MODEL="$OUT/tiny-model"; DATA="data/demo_train.jsonl"; EVAL_DATA="data/demo_eval.jsonl"; CYCLES=2
  : "${MODEL_ARGS:=--lora-r 64 --lora-alpha 128}"
  : "${SFT_RUBRIC_ARGS:=--epochs 6 --batch-size 16 --micro-batch 16 --lr 5e-3 --save-every 20}"
  : "${SFT_JUDGE_ARGS:=--epochs 10 --batch-size 16 --micro-batch 16 --lr 5e-3 --save-every 20}"
  : "${CACHE_ARGS:=--max-new-tokens 96 --batch-size 32}"
  : "${JUDGE_ARGS:=--group-size 4 --batch-size 16 --micro-batch 16 --max-completion-length 320 --lr 2e-4 --max-steps 6 --save-every 2}"
  : "${RUBRIC_ARGS:=--group-size 4 --batch-size 16 --micro-batch 16 --max-completion-length 96 --judge-max-new-tokens 320 --judge-batch 16 --lr 2e-4 --max-steps 6 --save-every 2}"
  : "${EVAL_ARGS:=--max-rubric-tokens 96 --max-judge-tokens 320 --batch-size 32}"
  export RUBRIC_ARM_NO_PROGRESS="${RUBRIC_ARM_NO_PROGRESS:-1}"
fi
: "${MODEL_ARGS:=}"; : "${SFT_RUBRIC_ARGS:=}"; : "${SFT_JUDGE_ARGS:=}"; : "${CACHE_ARGS:=}"
: "${JUDGE_ARGS:=}"; : "${RUBRIC_ARGS:=}"; : "${EVAL_ARGS:=}"
[ -n "$SFT_DATA" ] || SFT_DATA="$DATA"
mkdir -p "$OUT/.done" "$OUT/logs"
T0=$(date +%s)

if [ "$GPUS" -gt 1 ]; then
  LAUNCH=("$PY" -m torch.distributed.run --standalone --nproc_per_node="$GPUS")
else
  LAUNCH=("$PY")
fi

# run_step NAME CMD...: skip if OUT/.done/NAME exists; else run, log, and mark done on success.
run_step() {
  local name="$1"; shift
  if [ -f "$OUT/.done/$name" ]; then echo "[alternate] $name: done, skipped"; return 0; fi
  local log="$OUT/logs/$name.log" t=$(date +%s)
  echo "[alternate] $name: running (log $log)"
  if ! "$@" >>"$log" 2>&1; then
    echo "[alternate] $name FAILED after $(( $(date +%s) - t ))s; see $log" >&2
    tail -n 5 "$log" >&2
    exit 1
  fi
  touch "$OUT/.done/$name"
  echo "[alternate] $name: finished in $(( $(date +%s) - t ))s"
}

# Stage 0 (demo only): the offline tiny model.
if [ "$DEMO" = 1 ]; then
  run_step tiny_model "$PY" toy_task.py make-tiny-model "$MODEL"
fi

# Stage I: SFT warm-up of both models, unless adapters were given.
if [ -z "$RUBRIC_INIT" ]; then
  # shellcheck disable=SC2086
  run_step sft_rubric "${LAUNCH[@]}" sft_warmup.py --role rubric --model "$MODEL" --data "$SFT_DATA" \
    --out "$OUT/sft_rubric" --seed "$SEED" --resume $MODEL_ARGS $SFT_RUBRIC_ARGS
  RUBRIC_INIT="$OUT/sft_rubric/adapter"
fi
if [ -z "$JUDGE_INIT" ]; then
  # shellcheck disable=SC2086
  run_step sft_judge "${LAUNCH[@]}" sft_warmup.py --role judge --model "$MODEL" --data "$SFT_DATA" \
    --out "$OUT/sft_judge" --seed "$SEED" --resume $MODEL_ARGS $SFT_JUDGE_ARGS
  JUDGE_INIT="$OUT/sft_judge/adapter"
fi

# Stage II: equal, disjoint parts of the RL data, one per cycle.
run_step split "$PY" common.py split "$DATA" --parts "$CYCLES" --out-dir "$OUT/parts" --seed "$SEED"

RUBRIC="$RUBRIC_INIT"; JUDGE="$JUDGE_INIT"
cache_step() {  # cache_step CYCLE: one greedy rubric per example of the cycle's part, current generator
  # shellcheck disable=SC2086
  run_step "c$1_cache" "$PY" common.py cache-rubrics --model "$MODEL" --adapter "$RUBRIC" \
    --data "$OUT/parts/part$1.jsonl" --out "$OUT/c$1_rubrics.jsonl" $MODEL_ARGS $CACHE_ARGS
}
judge_step() {
  # shellcheck disable=SC2086
  run_step "c$1_judge" "${LAUNCH[@]}" train_judge_phase.py --model "$MODEL" --adapter "$JUDGE" \
    --data "$OUT/parts/part$1.jsonl" --rubric-cache "$OUT/c$1_rubrics.jsonl" --out "$OUT/c$1_judge" \
    --seed "$SEED" --resume $MODEL_ARGS $JUDGE_ARGS
  JUDGE="$OUT/c$1_judge/adapter"
}
rubric_step() {  # rubric_step CYCLE [JUDGE_ADAPTER]: against the given (default: current) judge
  # shellcheck disable=SC2086
  run_step "c$1_rubric" "${LAUNCH[@]}" train_rubric_phase.py --model "$MODEL" --adapter "$RUBRIC" \
    --judge-adapter "${2:-$JUDGE}" --data "$OUT/parts/part$1.jsonl" --out "$OUT/c$1_rubric" \
    --seed "$SEED" --resume $MODEL_ARGS $RUBRIC_ARGS
  RUBRIC="$OUT/c$1_rubric/adapter"
}
for c in $(seq 1 "$CYCLES"); do
  echo "[alternate] cycle $c/$CYCLES ($ORDER)"
  if [ "$ORDER" = judge-first ]; then
    cache_step "$c"; judge_step "$c"; rubric_step "$c"
  elif [ "$ORDER" = rubric-first ]; then
    rubric_step "$c"; cache_step "$c"; judge_step "$c"
  else  # simultaneous: both phases start from the previous cycle's models
    prev_judge="$JUDGE"; cache_step "$c"; judge_step "$c"; rubric_step "$c" "$prev_judge"
  fi
done
echo "$RUBRIC" >"$OUT/final_rubric_adapter.txt"; echo "$JUDGE" >"$OUT/final_judge_adapter.txt"

# Evaluation on the held-out split, when an eval set and the evaluation stage exist.
if [ -n "$EVAL_DATA" ] && [ -f evaluate.py ]; then
  # shellcheck disable=SC2086
  run_step eval_sft "$PY" evaluate.py --benchmark pairwise --data "$EVAL_DATA" --model "$MODEL" \
    --rubric-adapter "$RUBRIC_INIT" --judge-adapter "$JUDGE_INIT" --swap --out "$OUT/eval_sft" $MODEL_ARGS $EVAL_ARGS
  # shellcheck disable=SC2086
  run_step eval_final "$PY" evaluate.py --benchmark pairwise --data "$EVAL_DATA" --model "$MODEL" \
    --rubric-adapter "$RUBRIC" --judge-adapter "$JUDGE" --swap --out "$OUT/eval_final" $MODEL_ARGS $EVAL_ARGS
fi

# Summary: the last logged step of each phase, and the evaluations.
"$PY" - "$OUT" "$CYCLES" <<'PYEOF'
import json, sys
from pathlib import Path
out, cycles = Path(sys.argv[1]), int(sys.argv[2])
def last(p):
    lines = [l for l in (p / "metrics.jsonl").read_text().splitlines() if l.strip()] if (p / "metrics.jsonl").exists() else []
    return json.loads(lines[-1]) if lines else {}
def first(p):
    lines = [l for l in (p / "metrics.jsonl").read_text().splitlines() if l.strip()] if (p / "metrics.jsonl").exists() else []
    return json.loads(lines[0]) if lines else {}
print("\n== Rubric-ARM run summary:", out)
for name in ("sft_rubric", "sft_judge"):
    if (out / name).exists():
        print(f"{name:12s} loss {first(out / name).get('loss', float('nan')):.3f} -> {last(out / name).get('loss', float('nan')):.3f}")
for c in range(1, cycles + 1):
    for phase in ("judge", "rubric"):
        p = out / f"c{c}_{phase}"
        if p.exists():
            f, l = first(p), last(p)
            print(f"cycle {c} {phase:6s} reward {f.get('reward', 0):.3f} -> {l.get('reward', 0):.3f} "
                  f"(acc {f.get('reward_acc', 0):.3f} -> {l.get('reward_acc', 0):.3f}), {l.get('step', 0)} steps, "
                  f"{l.get('time_step', 0):.2f}s/step")
for name in ("eval_sft", "eval_final"):
    r = out / name / "results.json"
    if r.exists():
        res = json.loads(r.read_text())
        print(f"{name:12s} " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in res.get("summary", {}).items()))
PYEOF
echo "[alternate] all steps done in $(( $(date +%s) - T0 ))s; outputs in $OUT"
