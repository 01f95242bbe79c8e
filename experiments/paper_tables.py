"""The paper's tables in miniature: Rubric-ARM on a real pretrained model (SmolLM2-135M-Instruct)
and the instruction-following task whose labels come from the official IFEval / IFBench checkers.
Every number is measured on this machine by the project's own scripts.

    RUBRIC_ARM_BENCH=1 bash -c 'source env.sh && nohup $PY experiments/paper_tables.py --out runs/tables > tables.log 2>&1 &'

Each step is a run of the project's scripts and leaves OUT/.done/STEP when it finishes; a rerun of the
same command (after a kill, say) skips finished steps and resumes the others from their checkpoints.
Logs: OUT/logs/STEP.log. The report goes to docs/paper_tables.md, docs/paper_tables_curves.png and
docs/paper_tables.json (a copy in OUT/tables.json).

  data          SFT part and RL part of data/if_train.jsonl, policy prompts
  base_*        the base model as rubric + judge by prompting (Table 1, "Qwen-3-8B (Rubric+Judge)"),
                and as a direct judge without rubric
  arm_s{S}      alternate.sh: SFT warm-up of both adapters, then CYCLES alternating cycles, judge first
  eval_s{S}_*   evaluate.py after SFT (the paper's Rubric-RM) and after each cycle, both A/B orders
  vote5         voting@5 of the final seed-0 model (Table 1)
  greedy_s0_*   the seed-0 judge after SFT and after the last cycle, decoded greedily (one A/B order)
  ablate_*      rubric-first order ("switch opt") and no format reward, from the seed-0 SFT adapters (Table 2)
  policy_*      DPO of the base model as a policy on pairs labelled (order-consistent only) by the final
                Rubric-ARM or the SFT-only model, scored by the official checkers on held-out requests (Table 3)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tasks"), str(ROOT / "experiments")]  # stages, tasks, drivers

import common as C  # noqa: E402

# ---- configuration: the settings of the miniature, chosen by measurement (docs/paper_tables.md says why) ----
MODEL = "smollm2-135m"
SEEDS = [0, 1]                   # RL seeds of the default schedule (one shared SFT warm-up): the spread of the RL cycles
CYCLES = 1                       # 2 cycles did not fit the 3-hour budget next to the evaluations
N_SFT = 256                      # rows of data/if_train.jsonl for the SFT warm-up
N_RL = 128                       # the next rows: RL data, CYCLES equal disjoint parts
N_POLICY = 96                    # the last rows' requests: the policy's DPO prompts
EVAL_ROWS = {"IF test": ("data/if_test.jsonl", 64), "IFBench-OOD": ("data/if_ood.jsonl", 64),
             "demo pairs": ("data/demo_eval.jsonl", 32)}
MODEL_ARGS = f"--dtype {C.fast_dtype()}"  # bf16 (the published tables) where the hardware computes it, else fp32
SFT_RUBRIC_ARGS = "--epochs 1 --batch-size 8 --micro-batch 8 --lr 1e-3 --cutoff-len 1024 --save-every 8"
SFT_JUDGE_ARGS = "--epochs 2 --batch-size 8 --micro-batch 4 --lr 1e-3 --cutoff-len 1280 --save-every 8"
CACHE_ARGS = "--max-new-tokens 160 --batch-size 32"
GRPO = "--group-size 4 --batch-size 32 --micro-batch 8 --gen-batch 8 --num-iterations 1 --lr 5e-5 --save-every 1"
JUDGE_ARGS = f"{GRPO} --max-completion-length 288 --max-prompt-length 1024 --max-steps 5"
RUBRIC_ARGS = f"{GRPO} --max-completion-length 160 --judge-max-new-tokens 288 --judge-batch 32 --max-prompt-length 1024 --max-steps 3"
EVAL_ARGS = "--max-rubric-tokens 160 --max-judge-tokens 288 --batch-size 32 --max-prompt-length 1280"
DPO_ARGS = ("--n-samples 2 --max-new-tokens 128 --max-rubric-tokens 160 --max-judge-tokens 288 --gen-batch 32 "
            "--batch-size 8 --micro-batch 4 --epochs 2 --lr 5e-5 --save-every 0")
POLICY_EVAL = "data/if_test.jsonl"
EVAL_SETS = {name: f"data/eval_{name.lower().replace(' ', '_').replace('-', '_')}.jsonl" for name in EVAL_ROWS}


def bench_names(out: Path) -> list[str]:
    return [f"{name.replace(' ', '_')}={out / path}" for name, path in EVAL_SETS.items()]


class Runner:
    """Runs each step once: skips it when OUT/.done/NAME exists, else logs it and marks it done."""

    def __init__(self, out: Path):
        self.out = out
        (out / ".done").mkdir(parents=True, exist_ok=True)
        (out / "logs").mkdir(exist_ok=True)
        self.times = json.loads((out / "times.json").read_text()) if (out / "times.json").exists() else {}

    def step(self, name: str, cmd: list[str] | str, env: dict | None = None) -> None:
        if (self.out / ".done" / name).exists():
            print(f"[tables] {name}: done, skipped", flush=True)
            return
        print(f"[tables] {name}: running (log {self.out / 'logs' / (name + '.log')})", flush=True)
        t0 = time.time()
        full_env = {**os.environ, "RUBRIC_ARM_PROGRESS_EVERY": "60", **(env or {})}
        with open(self.out / "logs" / f"{name}.log", "a") as log:
            shell = isinstance(cmd, str)
            p = subprocess.run(cmd, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT, shell=shell)
        if p.returncode != 0:
            raise SystemExit(f"[tables] {name} failed (exit {p.returncode}); see {self.out / 'logs' / (name + '.log')}")
        self.times[name] = self.times.get(name, 0) + time.time() - t0
        (self.out / "times.json").write_text(json.dumps(self.times, indent=2))
        (self.out / ".done" / name).touch()
        print(f"[tables] {name}: finished in {time.time() - t0:.0f} s", flush=True)


def py(*args) -> list[str]:
    return [sys.executable, *[str(a) for a in args]]


def evaluate(r: Runner, name: str, *extra, swap: bool = True, seed: int = 0) -> None:
    args = ["evaluate.py", "--model", MODEL, *MODEL_ARGS.split(), *EVAL_ARGS.split(), "--seed", seed,
            "--out", r.out / name, *[x for b in bench_names(r.out) for x in ("--benchmark", b)], *extra]
    r.step(name, py(*args, *(["--swap"] if swap else [])))


def alternate(r: Runner, name: str, seed: int, *extra, judge_args: str = JUDGE_ARGS) -> None:
    env = {"MODEL_ARGS": MODEL_ARGS, "SFT_RUBRIC_ARGS": SFT_RUBRIC_ARGS, "SFT_JUDGE_ARGS": SFT_JUDGE_ARGS,
           "CACHE_ARGS": CACHE_ARGS, "JUDGE_ARGS": judge_args, "RUBRIC_ARGS": RUBRIC_ARGS, "RUBRIC_ARM_PYTHON": sys.executable}
    r.step(name, ["bash", "alternate.sh", "--model", MODEL, "--sft-data", str(r.out / "data" / "sft.jsonl"),
                  "--data", str(r.out / "data" / "rl.jsonl"), "--cycles", str(CYCLES), "--seed", str(seed),
                  "--out", str(r.out / name), *extra], env)


def adapters(run: Path, stage: str) -> list[str]:
    if stage == "sft":
        return ["--rubric-adapter", run / "sft_rubric" / "adapter", "--judge-adapter", run / "sft_judge" / "adapter"]
    return ["--rubric-adapter", run / f"c{stage}_rubric" / "adapter", "--judge-adapter", run / f"c{stage}_judge" / "adapter"]


def run_all(out: Path) -> None:
    r = Runner(out)
    # data: disjoint SFT, RL and policy-prompt parts of the training split; the evaluation subsets
    rows = [json.loads(x) for x in (ROOT / "data" / "if_train.jsonl").read_text().splitlines() if x.strip()]
    assert len(rows) >= N_SFT + N_RL + N_POLICY, "data/if_train.jsonl is too small for these settings"
    d = out / "data"
    d.mkdir(exist_ok=True)
    for name, part in (("sft", rows[:N_SFT]), ("rl", rows[N_SFT:N_SFT + N_RL])):
        (d / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in part))
    (d / "policy_prompts.jsonl").write_text("".join(json.dumps({"prompt": x["prompt"]}) + "\n"
                                                    for x in rows[N_SFT + N_RL:N_SFT + N_RL + N_POLICY]))
    for name, (src, n) in EVAL_ROWS.items():
        lines = [x for x in (ROOT / src).read_text().splitlines() if x.strip()][:n]
        (out / EVAL_SETS[name]).write_text("\n".join(lines) + "\n")
    # Table 1 baselines: the base model by prompting alone
    evaluate(r, "base_rubric_judge")
    evaluate(r, "base_direct_judge", "--no-rubric", swap=False)
    # Rubric-ARM, default schedule (judge first), seed 0: SFT warm-up, then the cycles
    alternate(r, "arm_s0", 0)
    sft = ["--rubric-init", str(out / "arm_s0" / "sft_rubric" / "adapter"),
           "--judge-init", str(out / "arm_s0" / "sft_judge" / "adapter")]
    evaluate(r, "eval_s0_sft", *adapters(out / "arm_s0", "sft"))
    for c in range(1, CYCLES + 1):
        evaluate(r, f"eval_s0_c{c}", *adapters(out / "arm_s0", str(c)), swap=c == CYCLES)
    report(out)
    # Table 3: the base model as a policy, DPO on pairs labelled by each reward model
    r.step("policy_base", py("tasks/if_preference_task.py", "score-policy", "--model", MODEL, "--data", POLICY_EVAL,
                             "--out", out / "policy_base.json"))
    for rm, stage in (("arm", str(CYCLES)), ("sft", "sft")):
        r.step(f"policy_dpo_{rm}", py("policy_dpo.py", "--model", MODEL, *MODEL_ARGS.split(), "--prompts",
                                      d / "policy_prompts.jsonl", *adapters(out / "arm_s0", stage), *DPO_ARGS.split(),
                                      "--out", out / f"policy_dpo_{rm}"))
        r.step(f"policy_score_{rm}", py("tasks/if_preference_task.py", "score-policy", "--model", MODEL, "--adapter",
                                        out / f"policy_dpo_{rm}" / "round1" / "adapter", "--data", POLICY_EVAL,
                                        "--out", out / f"policy_{rm}.json"))
        report(out)
    # Table 2: ablations from the same SFT adapters
    alternate(r, "ablate_rubric_first", 0, *sft, "--order", "rubric-first")
    evaluate(r, "eval_ablate_rubric_first", *adapters(out / "ablate_rubric_first", str(CYCLES)), swap=False)
    report(out)
    alternate(r, "ablate_no_format", 0, *sft, judge_args=JUDGE_ARGS + " --no-format-reward")
    evaluate(r, "eval_ablate_no_format", *adapters(out / "ablate_no_format", str(CYCLES)), swap=False)
    report(out)
    evaluate(r, "vote5", *adapters(out / "arm_s0", str(CYCLES)), "--votes", "5", swap=False)
    report(out)
    # more RL seeds of the default schedule, from the same SFT adapters (the spread of the RL cycles)
    for s in SEEDS[1:]:
        alternate(r, f"arm_s{s}", s, *sft)
        for c in range(1, CYCLES + 1):
            evaluate(r, f"eval_s{s}_c{c}", *adapters(out / f"arm_s{s}", str(c)), swap=False, seed=s)
        report(out)
    # the judge decoded greedily instead of sampled at T=1.0: is sampling noise what hides its knowledge?
    evaluate(r, "greedy_s0_sft", *adapters(out / "arm_s0", "sft"), "--greedy", swap=False)
    evaluate(r, f"greedy_s0_c{CYCLES}", *adapters(out / "arm_s0", str(CYCLES)), "--greedy", swap=False)
    report(out)


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

COLS = [name.replace(" ", "_") for name in EVAL_ROWS]


def results(out: Path, name: str) -> dict | None:
    p = out / name / "results.json"
    return json.loads(p.read_text()) if p.exists() else None


def row(values: list[list[float]]) -> list[str]:
    """Per column: mean ± std (over seeds) in percent, or the single value."""
    cells = []
    for vs in values:
        vs = [v for v in vs if v is not None]
        if not vs:
            cells.append("-")
        elif len(vs) == 1:
            cells.append(f"{100 * vs[0]:.1f}")
        else:
            cells.append(f"{100 * statistics.mean(vs):.1f} ± {100 * statistics.stdev(vs):.1f}")
    return cells


def accuracy_row(out: Path, names: list[str]) -> list[str]:
    per = [results(out, n) for n in names]
    per = [p for p in per if p]
    cols = [[p["paper_columns"].get(c) for p in per] for c in COLS]
    avg = [[sum(p["paper_columns"][c] for c in COLS) / len(COLS) for p in per if all(c in p["paper_columns"] for c in COLS)]]
    return row(cols + avg)


def report(out: Path) -> None:
    times = json.loads((out / "times.json").read_text()) if (out / "times.json").exists() else {}
    header = "| model | " + " | ".join(EVAL_SETS) + " | Avg |\n|---|" + "---|" * (len(COLS) + 1)
    lines = ["# The paper's tables in miniature (SmolLM2-135M-Instruct, instruction-following task)", "",
             "Produced by `experiments/paper_tables.py`; see the README section *Does it work on a real model?* for the "
             "setting and what the numbers show. Accuracy in % of held-out pairs (official checkers' labels), judge "
             "sampled at temperature 1.0 (paper Table 11) unless a row says greedy, each pair in a seeded random A/B "
             f"order. The after-cycle rows are mean ± std over RL seeds {SEEDS} (one shared SFT warm-up; each "
             "evaluated with its own sampling seed); the other trained rows are seed 0.", "",
             "## Table 1 analogue", "", header]
    t1 = [("Base model, rubric + judge by prompting", ["base_rubric_judge"]),
          ("Base model, direct judge (no rubric)", ["base_direct_judge"]),
          ("SFT warm-up only (Rubric-RM)", ["eval_s0_sft"])]
    t1 += [(f"Rubric-ARM after cycle {c}", [f"eval_s{s}_c{c}" for s in SEEDS]) for c in range(1, CYCLES + 1)]
    t1 += [("Rubric-ARM voting@5 (seed 0)", ["vote5"]),
           ("SFT warm-up only, greedy judge", ["greedy_s0_sft"]),
           (f"Rubric-ARM after cycle {CYCLES}, greedy judge (seed 0)", [f"greedy_s0_c{CYCLES}"])]
    data = {"table1": {}, "table2": {}, "table13": {}, "table3": {}, "times": times}
    for label, names in t1:
        cells = accuracy_row(out, names)
        data["table1"][label] = cells
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Format rate (mean R_fmt of the judge's texts) and unparseable verdicts:", ""]
    for label, names in t1:
        per = [results(out, n) for n in names]
        per = [p for p in per if p]
        if per:
            fmt = statistics.mean(p["summary"]["format_rate"] for p in per)
            un = statistics.mean(p["summary"]["unparsed_share"] for p in per)
            lines.append(f"- {label}: format {100 * fmt:.1f}%, unparseable {100 * un:.1f}%")
    lines += ["", "## Table 2 analogue (seed 0, after the last cycle)", "", header]
    for label, name in ((f"Rubric-ARM, judge first (default), cycle {CYCLES}", f"eval_s0_c{CYCLES}"),
                        ("Rubric-first order (switch opt)", "eval_ablate_rubric_first"),
                        ("No format reward", "eval_ablate_no_format")):
        cells = accuracy_row(out, [name])
        data["table2"][label] = cells
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Table 13 analogue: position bias (seed 0)", "",
              "Accuracy with the chosen response always shown first (Fixed 1), always second (Fixed 2), and in "
              "a random order per pair (Mixed); Variation = max - min.", "",
              "| model | " + " | ".join(f"{c} F1 / F2 / Mixed / Var" for c in EVAL_SETS) + " | avg Var |",
              "|---|" + "---|" * (len(COLS) + 1)]
    for label, name in (("Base model, rubric + judge", "base_rubric_judge"), ("SFT only", "eval_s0_sft"),
                        (f"Rubric-ARM cycle {CYCLES}", f"eval_s0_c{CYCLES}")):
        res = results(out, name)
        if not res:
            continue
        pb = res["position_bias"]
        cells = [f"{100 * pb[c]['fixed1']:.1f} / {100 * pb[c]['fixed2']:.1f} / {100 * pb[c]['mixed']:.1f} / "
                 f"{100 * pb[c]['variation']:.1f}" if c in pb else "-" for c in COLS]
        data["table13"][label] = pb
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {100 * pb.get('average_variation', float('nan')):.1f} |")
    lines += claims_section(out, data)
    lines += ["", "## Table 3 analogue: the base model as a policy, DPO on labelled pairs", "",
              f"IFEval scores of greedy responses to the {POLICY_EVAL} requests (official checkers; prompt- and "
              "instruction-level, strict and loose).", "",
              "| policy | pairs kept / labelled | prompt strict | prompt loose | inst. strict | inst. loose | average |",
              "|---|---|---|---|---|---|---|"]
    for label, name, dpo in (("Base model", "policy_base", None), ("DPO, labels from the SFT-only model", "policy_sft", "sft"),
                             (f"DPO, labels from Rubric-ARM (cycle {CYCLES})", "policy_arm", "arm")):
        p = out / f"{name}.json"
        if not p.exists():
            continue
        sc = json.loads(p.read_text())
        kept = "-"
        if dpo and (rep := out / f"policy_dpo_{dpo}" / "round1" / "label_report.json").exists():
            lr = json.loads(rep.read_text())
            kept = f"{lr['kept']} / {lr['pairs']}"
        if sc.get("adapter"):  # relative to the run folder: the JSON copy in docs/ names no machine's paths
            sc["adapter"] = os.path.relpath(sc["adapter"], out)
        data["table3"][label] = {**sc, "kept": kept}
        lines.append(f"| {label} | {kept} | " + " | ".join(f"{100 * sc[k]:.1f}" for k in
                     ("prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose", "average")) + " |")
    lines += ["", "## Time", "", "| step | minutes |", "|---|---|"]
    lines += [f"| {k} | {v / 60:.1f} |" for k, v in times.items()]
    lines.append(f"| total | {sum(times.values()) / 60:.1f} |")
    missing = [n for n in ["vote5", "eval_ablate_rubric_first", "eval_ablate_no_format", "greedy_s0_sft",
                           f"greedy_s0_c{CYCLES}"] +
               [f"eval_s{s}_c{c}" for s in SEEDS for c in range(1, CYCLES + 1)] if not results(out, n)]
    missing += [f"policy_{rm}" for rm in ("sft", "arm") if not (out / f"policy_{rm}.json").exists()]
    lines += ["", "Times are wall-clock minutes on 2 CPU cores. A step that shared the cores with another PyTorch "
              "job (the test suite, a benchmark) ran 2-10x slower: two processes of 2 threads each on 2 cores "
              "oversubscribe them (the rubric phase's judge-reward generation: 66 s alone, 677 s shared). A step that "
              "was killed and resumed counts its last run only."]
    if missing:
        lines += ["", "Not run yet: " + ", ".join(missing) + " (rerunning the driver's command resumes into them)."]
    lines += ["", "![training curves](paper_tables_curves.png)", ""]
    plot_curves(out, ROOT / "docs" / "paper_tables_curves.png")
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "paper_tables.md").write_text("\n".join(lines) + "\n")
    (out / "tables.json").write_text(json.dumps(data, indent=2))
    (ROOT / "docs" / "paper_tables.json").write_text(json.dumps(data, indent=2))
    print(f"[tables] report: {ROOT / 'docs' / 'paper_tables.md'}" + (f" (not run yet: {', '.join(missing)})" if missing else ""),
          flush=True)


def claims_section(out: Path, data: dict) -> list[str]:
    """Where the judge fails: its met / not met claim per hard rule against the official checkers
    (tasks/if_preference_task.py judge-claims), on the IF test and IFBench-OOD pairs."""
    from if_preference_task import claims_of_eval
    files = [out / EVAL_SETS[name] for name in ("IF test", "IFBench-OOD")]
    lines = ["", "## Where the judge fails: its claims per hard rule against the official checkers", "",
             "The judge's analysis says, for each response and each [Hard Rule] of the rubric, *met* or *not met*. "
             "Where the criterion quotes all or part of one constraint's wording, that claim can be checked "
             "against the constraint's official checker (IF test and IFBench-OOD pairs). *Balanced* is the mean "
             "of P(says met | met) and P(says not met | not met): 50% carries no information about the response. "
             "*Decisive*: the judge's own claims single out one response (it meets every hard rule, the other "
             "not); *follows*: of those, the verdict names that response; *claims' verdict*: the accuracy of the "
             "verdict the claims imply (half a point where they single out none); *accuracy*: of the judge's own "
             "verdicts on the same judgements (both A/B orders where the evaluation ran both).", "",
             "| model | checkable claims | says met if met | says not met if not | balanced | decisive | follows | "
             "claims' verdict | accuracy |", "|---|---|---|---|---|---|---|---|---|"]
    data["claims"] = {}
    for label, name in (("SFT only", "eval_s0_sft"), (f"Rubric-ARM cycle {CYCLES}", f"eval_s0_c{CYCLES}"),
                        ("Rubric-first order", "eval_ablate_rubric_first"), ("No format reward", "eval_ablate_no_format"),
                        ("Rubric-ARM voting@5 (each of the 5 texts)", "vote5"), ("SFT only, greedy judge", "greedy_s0_sft"),
                        (f"Rubric-ARM cycle {CYCLES}, greedy judge", f"greedy_s0_c{CYCLES}")):
        res = results(out, name)
        if not res:
            continue
        rep = claims_of_eval(out / name, files)
        data["claims"][label] = rep
        pct = ["-" if rep[k] is None else f"{100 * rep[k]:.1f}" for k in ("said_met_if_met", "said_not_met_if_not",
               "balanced", "decisive", "follows_claims", "claims_accuracy", "accuracy")]
        lines.append(f"| {label} | {rep['claims']} | " + " | ".join(pct) + " |")
    lines += ["", "The base model's texts make no readable claim (it does not follow the judge's layout)."]
    return lines


def plot_curves(out: Path, path: Path) -> None:
    """Reward, accuracy, format reward and KL per step of each GRPO phase: every seed of the default
    schedule and the two ablations, one line per run and cycle."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = [(f"seed {s}", out / f"arm_s{s}") for s in SEEDS]
    runs += [("rubric first", out / "ablate_rubric_first"), ("no format reward", out / "ablate_no_format")]
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    for row_i, phase in enumerate(("judge", "rubric")):
        for label, run in runs:
            for c in range(1, CYCLES + 1):
                m = run / f"c{c}_{phase}" / "metrics.jsonl"
                if not m.exists():
                    continue
                log = [json.loads(x) for x in m.read_text().splitlines() if x.strip()]
                steps = [x["step"] for x in log]
                for k, key in enumerate(("reward", "reward_acc", "reward_fmt", "kl")):
                    ax = axes[row_i][k]
                    ax.plot(steps, [x.get(key, float("nan")) for x in log], marker="o",
                            label=label + (f", cycle {c}" if CYCLES > 1 else ""))
                    ax.set_title(f"{phase} phase: {key}")
                    ax.set_xlabel("step")
        for ax in axes[row_i]:
            if ax.lines:
                ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/tables", help="run folder (resumable)")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from what is there")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    if args.report_only:
        report(out)
    else:
        run_all(out)


if __name__ == "__main__":
    main()
