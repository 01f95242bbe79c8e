"""A judge-phase step and a rubric-phase step of SmolLM2-135M (fp32) at the real-model experiment's sizes,
where the time goes, with each speed-up of the step switched off and on.

Both phases run as their scripts do (train_judge_phase.main / train_rubric_phase.main, in this process),
for --steps steps on the implicit toy's RL rows (tasks/toy_task.py), from the SFT adapters given: trained
adapters write judge trajectories and rubrics of the lengths the experiment sees, and their lengths decide
what dropping finished rows saves. The flags are experiments/smol_implicit.py's STAGE_ARGS (G=4, 16
completions a step, judge completions up to 256 tokens, rubrics up to 96, the compact judge template).
Each step's split comes from the phase's metrics.jsonl (median over the steps after the first):

  sample     the rollouts (generation) and, in the rubric phase, the frozen judge's verdicts (judge calls)
  logprob    the reference adapter's log-probs (beta > 0)
  fwd+bwd    the policy's forward and backward over the step's micro-batches

Variants (one after another, same seed and rows):
  before     finished rows stay in the decode batch to the end (as before issue 44)
  after      finished rows leave the decode batch (common.DROP_FINISHED)

    python bench/bench_smol_step.py --judge-adapter runs/smol_implicit/sft_judge/adapter \\
        --rubric-adapter runs/smol_implicit/sft_rubric/adapter
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

import _util as U
import common as C

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tasks"), str(ROOT / "experiments")]

import smol_implicit as S  # noqa: E402

import toy_task  # noqa: E402
import train_judge_phase as J  # noqa: E402
import train_rubric_phase as R  # noqa: E402

VARIANTS = {"before": {"DROP_FINISHED": False}, "after": {"DROP_FINISHED": True}}
PARTS = ("time_step", "time_sample", "time_logprob", "time_fwd_bwd", "completion_len")


def prepare(work: Path, n: int) -> tuple[Path, Path]:
    """n RL rows of the implicit task (every pair decided by its implied rule) and a rubric cache of their
    reference rubrics (what the judge phase reads)."""
    rows = toy_task.make_implicit_split(n, S.SPLITS["rl"][1], "rl", False, False)
    data, cache = work / "rl.jsonl", work / "rubrics.jsonl"
    C.write_jsonl_atomic(data, rows)
    C.write_jsonl_atomic(cache, [{"id": r["id"], "rubric": r["reference_rubric"]} for r in rows])
    return data, cache


def phase(role: str, a, data: Path, cache: Path, out: Path) -> dict:
    model_args = shlex.split(S.STAGE_ARGS["MODEL_ARGS"])
    common = ["--model", S.MODEL, "--data", str(data), "--out", str(out), "--max-steps", str(a.steps), "--seed", "0",
              "--save-every", "0", *model_args]
    if role == "judge":
        J.main([*common, "--adapter", a.judge_adapter, "--rubric-cache", str(cache),
                *shlex.split(S.STAGE_ARGS["JUDGE_ARGS"])])
    else:
        R.main([*common, "--adapter", a.rubric_adapter, "--judge-adapter", a.judge_adapter,
                *shlex.split(S.STAGE_ARGS["RUBRIC_ARGS"])])
    log = list(C.read_jsonl_resumable(out / "metrics.jsonl"))[1:]  # the first step warms up
    return {k: U.median([r.get(k, 0.0) for r in log]) for k in PARTS} | {"steps": len(log)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False)
    ap.add_argument("--judge-adapter", required=True, help="the SFT judge (the judge phase's start, the rubric "
                                                           "phase's frozen judge)")
    ap.add_argument("--rubric-adapter", required=True, help="the SFT rubric generator")
    ap.add_argument("--steps", type=int, default=3, help="steps per phase and variant (the first is not counted)")
    ap.add_argument("--phases", nargs="+", default=["judge", "rubric"], choices=["judge", "rubric"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--no-write", action="store_true", help="print, do not touch BENCHMARKS.md")
    a = ap.parse_args()
    C.configure_threads()
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data, cache = prepare(work, 16 * (a.steps + 1))
        for role in a.phases:
            for v in a.variants:
                for name, value in VARIANTS[v].items():
                    setattr(C, name, value)
                res[role, v] = phase(role, a, data, cache, work / f"{role}_{v}")
                print(role, v, res[role, v], flush=True)
    head = "| phase | variant | s / step | sample | reference log-probs | forward + backward | completion tokens | vs before |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for (role, v), r in res.items():
        base = res.get((role, "before"), r)["time_step"]
        lines.append(f"| {role} | {v} | {r['time_step']:.1f} | {r['time_sample']:.1f} | {r['time_logprob']:.1f} | "
                     f"{r['time_fwd_bwd']:.1f} | {r['completion_len']:.0f} | **{base / r['time_step']:.2f}x** |")
    body = (f"SmolLM2-135M fp32, LoRA r16 from the SFT adapters `{a.judge_adapter}` and `{a.rubric_adapter}`; the "
            f"implicit toy's RL rows, experiments/smol_implicit.py's phase flags (G=4, 16 completions a step, judge "
            f"completions up to 256 tokens, rubrics up to 96, beta 0.001 by default); median of {a.steps - 1} steps after "
            "a warm-up step, seconds. `sample` is the rollouts and, in the rubric phase, the frozen judge's verdicts. "
            "completion tokens: the mean length of the step's completions (the policy's).\n\n" + "\n".join(lines))
    cmd = "python bench/bench_smol_step.py " + " ".join(sys.argv[1:])
    if a.no_write:
        print(body)
    else:
        U.write_section("smol_step", "SmolLM2-135M phase steps (fp32): where the time goes, each speed-up on and off",
                        cmd, body)


if __name__ == "__main__":
    main()
