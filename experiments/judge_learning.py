"""Does the judge learn? The experiments of the leak-free IF task, on SmolLM2-135M-Instruct, each
step a run of the project's own scripts, resumable, one heavy process at a time.

    RUBRIC_ARM_BENCH=1 bash -c 'source env.sh && nohup $PY experiments/judge_learning.py --out runs/judge_learning \\
        > judge_learning.log 2>&1 &'
    python experiments/judge_learning.py --out runs/judge_learning --report-only   # rewrite the report from what ran

Steps, in order (OUT/.done/STEP marks a finished one):
  reach            experiments/judge_reach.py: linear probe on frozen hidden states, decision-only LoRA fit
                   (writes docs/results/judge_reach.json)
  sft_w{W}         judge SFT on the first N_SFT train pairs, decision tokens weighted W (W in WEIGHTS)
  eval_sft_w{W}    evaluate.py on IF test and IFBench-OOD, reference rubrics (the judge alone), greedy
  judge_rl_s{S}    judge-phase GRPO (50 steps) from the SFT judge, reference rubrics as the cache, seed S
  eval_judge_rl_s{S}  as eval_sft_w{W}; the phase's reward_acc per step is a curve on unseen pairs

A step's marker records its command and the content digest of every file it reads; a rerun whose
command or inputs differ is refused with what differs (--redo STEP runs it again). The report:
docs/judge_learning.md and docs/results/judge_learning.json, every figure beside the trivial baselines
of the same pairs (docs/results/if_task_baselines.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tasks"), str(ROOT / "experiments")]  # stages, tasks, drivers

import baselines as B  # noqa: E402
import common as C  # noqa: E402
from manifests import content_digest  # noqa: E402

# ---- configuration (what the report's tables were made with) ----
MODEL = "smollm2-135m"
DTYPE = C.fast_dtype()          # bf16 where the hardware computes it (the published runs), else fp32; in every marker
N_SFT = 320                     # train pairs 0 .. N_SFT-1: the judge's SFT warm-up (40 steps of 8)
WEIGHTS = [10, 1]               # --decision-weight of the SFT variants (RL starts from the first)
EVAL = {"IF test": "data/if_test.jsonl", "IFBench-OOD": "data/if_ood.jsonl"}
REACH_ARGS = "--n-train 800 --n-eval 200 --steps 150 --eval-every 25 --batch 8"
SFT_ARGS = f"--dtype {DTYPE} --epochs 1 --batch-size 8 --micro-batch 4 --lr 1e-3 --cutoff-len 1024 --save-every 10"
EVAL_ARGS = f"--dtype {DTYPE} --greedy --max-judge-tokens 320 --batch-size 40 --max-prompt-length 1024 --limit 120"
REPORT = {"name": "judge_learning"}  # docs/NAME.md and docs/results/NAME.json (--report)
REACH_OUT = ROOT / "docs" / "results" / "judge_reach.json"  # small: committed beside the report
# The same two readings with every layer trained and a compact prompt (no judge instructions): what the
# model reaches when the recipe is not the limit (experiments/compact_judge_template.txt)
COMPACT_TEMPLATE = ROOT / "experiments" / "compact_judge_template.txt"
REACH_COMPACT_ARGS = ("--n-train 600 --n-eval 100 --steps 100 --eval-every 25 --batch 8 --split-layer 0 --lr 3e-4 "
                      "--probe-layers 8 16 24 30")
REACH_COMPACT_OUT = ROOT / "docs" / "results" / "judge_reach_compact.json"
# RL (judge phase, the paper's Stage II with the generator frozen): from the SFT judge of RL_FROM_WEIGHT,
# on the next N_RL train pairs, the reference rubric as the cached rubric, one run per seed
RL_FROM_WEIGHT = 10
N_RL = 800
RL_SEEDS = [0, 1, 2]
RL_ARGS = (f"--dtype {DTYPE} --group-size 4 --batch-size 16 --micro-batch 8 --gen-batch 4 --num-iterations 1 "
           "--max-completion-length 288 --max-prompt-length 1024 --lr 5e-5 --lr-scheduler constant --warmup-ratio 0 "
           "--max-steps 50 --save-every 5")


def digest(path: Path) -> str:
    return content_digest(path)  # the project's manifest digest: one definition of "same input"


class Runner:
    """Runs each step once. OUT/.done/NAME holds the step's command and the digests of its inputs; a rerun
    with the same ones skips it, with other ones is refused (or redone when named in `redo`)."""

    def __init__(self, out: Path, redo: set[str]):
        self.out, self.redo = out, redo
        (out / ".done").mkdir(parents=True, exist_ok=True)
        (out / "logs").mkdir(exist_ok=True)

    def step(self, name: str, cmd: list[str], inputs: list[Path]) -> None:
        marker = self.out / ".done" / name
        made = {"command": [str(c) for c in cmd[1:]], "inputs": {str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p):
                                                                    digest(p) for p in inputs}}
        if marker.exists() and name not in self.redo:
            old = json.loads(marker.read_text())
            if {k: old.get(k) for k in made} == made:
                print(f"[judge-learning] {name}: done, skipped", flush=True)
                return
            diff = [k for k in made if old.get(k) != made[k]]
            raise SystemExit(f"[judge-learning] {name}: finished earlier with another {' and '.join(diff)}; "
                             f"--redo {name} runs it again (its output is replaced)")
        if marker.exists():
            marker.unlink()
        log = self.out / "logs" / f"{name}.log"
        print(f"[judge-learning] {name}: running (log {log})", flush=True)
        t0 = time.time()
        env = {**os.environ, "RUBRIC_ARM_PROGRESS_EVERY": "60", "PYTHONPATH": str(ROOT)}
        with open(log, "a") as f:
            p = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
        if p.returncode != 0:
            raise SystemExit(f"[judge-learning] {name} failed (exit {p.returncode}); see {log}")
        made["seconds"] = time.time() - t0
        marker.write_text(json.dumps(made, indent=2))
        print(f"[judge-learning] {name}: finished in {made['seconds']:.0f} s", flush=True)


def py(*args) -> list[str]:
    return [sys.executable, *[str(a) for a in args]]


def run_all(out: Path, redo: set[str], skip: set[str]) -> None:
    r = Runner(out, redo)
    data = out / "data"
    data.mkdir(exist_ok=True)
    rows = (ROOT / "data" / "if_train.jsonl").read_text().splitlines()
    sft = data / "sft.jsonl"
    if not sft.exists() or sft.read_text() != "\n".join(rows[:N_SFT]) + "\n":
        sft.write_text("\n".join(rows[:N_SFT]) + "\n")
    train = ROOT / "data" / "if_train.jsonl"
    evals = [ROOT / p for p in EVAL.values()]
    if "reach" not in skip:
        r.step("reach", py("experiments/judge_reach.py", "--model", MODEL, *REACH_ARGS.split(), "--train", train,
                           *[x for p in evals for x in ("--eval", p)], "--out", REACH_OUT), [train, *evals])

    def sft_step(w) -> None:
        run = out / f"sft_w{w}"
        if f"sft_w{w}" in skip:
            return
        if f"sft_w{w}" in redo:
            shutil.rmtree(run, ignore_errors=True)
        r.step(f"sft_w{w}", py("sft_warmup.py", "--role", "judge", "--model", MODEL, *SFT_ARGS.split(),
                               "--decision-weight", w, "--data", sft, "--out", run, "--resume"), [sft])
        evaluate(r, f"eval_sft_w{w}", run / "adapter", evals)

    sft_step(RL_FROM_WEIGHT)  # the RL runs start from this one: it goes first
    if "reach_compact" not in skip:
        r.step("reach_compact", py("experiments/judge_reach.py", "--model", MODEL, *REACH_COMPACT_ARGS.split(), "--train", train,
                                   *[x for p in evals for x in ("--eval", p)], "--judge-template", COMPACT_TEMPLATE,
                                   "--out", REACH_COMPACT_OUT), [train, *evals, COMPACT_TEMPLATE])
        report(out)
    rl = data / "rl.jsonl"
    rl_rows = rows[N_SFT:N_SFT + N_RL]
    if not rl.exists() or rl.read_text() != "\n".join(rl_rows) + "\n":
        rl.write_text("\n".join(rl_rows) + "\n")
    cache = data / "rl_reference_rubrics.jsonl"  # the generator frozen at the reference: the judge alone learns
    if not cache.exists():
        cache.write_text("".join(json.dumps({"id": x["id"], "rubric": x["rubric"]}) + "\n" for x in map(json.loads, rl_rows)))
    start = out / f"sft_w{RL_FROM_WEIGHT}" / "adapter"
    for seed in RL_SEEDS:
        run = out / f"judge_rl_s{seed}"
        if f"judge_rl_s{seed}" in skip:
            continue
        if f"judge_rl_s{seed}" in redo:
            shutil.rmtree(run, ignore_errors=True)
        r.step(f"judge_rl_s{seed}", py("train_judge_phase.py", "--model", MODEL, *RL_ARGS.split(), "--adapter", start,
                                       "--data", rl, "--rubric-cache", cache, "--seed", seed, "--out", run, "--resume"),
               [start, rl, cache])
        evaluate(r, f"eval_judge_rl_s{seed}", run / "adapter", evals)
        report(out)  # the report grows as the seeds finish
    for w in WEIGHTS:
        if w != RL_FROM_WEIGHT:
            sft_step(w)
    report(out)


def evaluate(r: Runner, name: str, adapter: Path, evals: list[Path]) -> None:
    folder = r.out / name
    if name in r.redo:
        shutil.rmtree(folder, ignore_errors=True)
    benches = [x for label, p in zip(EVAL, evals) for x in ("--benchmark", f"{label.replace(' ', '_')}={p}")]
    refs = r.out / "data" / "reference_rubrics.jsonl"
    if not refs.exists():
        refs.write_text("".join(json.dumps({"prompt": row["prompt"], "rubric": row["rubric"]}) + "\n"
                                for p in evals for row in map(json.loads, p.read_text().splitlines())))
    r.step(name, py("evaluate.py", "--model", MODEL, *EVAL_ARGS.split(), "--judge-adapter", adapter,
                    "--reference-rubrics", refs, *benches, "--out", folder), [adapter, refs, *evals])


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def eval_accuracy(folder: Path) -> dict:
    """Per benchmark: accuracy over pairs (an unparseable verdict counts 0.5) with its 95% bootstrap
    interval, per deciding type, and the share of unparseable verdicts."""
    rows = {}
    for p in EVAL.values():
        for row in map(json.loads, (ROOT / p).read_text().splitlines()):
            rows[row["id"]] = row
    by: dict[str, list[dict]] = {}
    for line in (folder / "predictions.jsonl").read_text().splitlines():
        rec = json.loads(line)
        by.setdefault(rec["bench"], []).append(rec)
    out = {}
    for bench, recs in by.items():
        scores = [0.5 if x["verdict"] is None else float(x["verdict"] == x["chosen_is"]) for x in recs]
        m, lo, hi = B.bootstrap(scores)
        types: dict[str, list[float]] = {}
        for x, s in zip(recs, scores):
            types.setdefault(rows.get(x["unit"], {}).get("decisive", "?"), []).append(s)
        out[bench.replace("_", " ")] = {"pairs": len(recs), "accuracy": m, "ci95": [lo, hi],
                                        "unparseable": sum(x["verdict"] is None for x in recs) / len(recs),
                                        "by_type": {k: sum(v) / len(v) for k, v in sorted(types.items())}}
    return out


def claims(folder: Path) -> dict:
    """How right the judge's per-constraint met / not met claims are, and whether its verdict follows
    them (if_preference_task.claims_report), over both held-out files."""
    from if_preference_task import claims_of_eval
    return claims_of_eval(folder, [ROOT / p for p in EVAL.values()])


def reach_rows(res: dict, rep: dict, label: str, key: str) -> None:
    """The probe's best layer and the decision-only fit's last point as table rows, their curves beside."""
    stems = {"if_test": "IF test", "if_ood": "IFBench-OOD"}
    best_layer = max(rep["probe"], key=lambda L: rep["probe"][L]["if_test"]["accuracy"])
    res[f"{key}probe_best_layer"] = int(best_layer)
    res["rows"][f"reach: {label}linear probe, layer {best_layer} (best on IF test)"] = {
        stems[k]: rep["probe"][best_layer][k] for k in stems}
    res[f"{key}probe_by_layer"] = {L: {stems[k]: v[k]["accuracy"] for k in stems} for L, v in rep["probe"].items()}
    fit = rep.get("decision_fit") or rep.get("decision_fit_partial")  # partial: a run stopped before its last step
    if fit:
        curve = fit["curve"]
        res[f"{key}decision_fit_curve"] = [{"step": p["step"], **{stems[k]: p[k]["accuracy"] for k in stems}} for p in curve]
        res["rows"][f"reach: {label}decision-only LoRA fit, {'all' if fit['split_layer'] == 0 else 'top'} "
                    f"{fit['top_layers']} layers, step {curve[-1]['step']}"
                    f"{' (stopped there)' if 'decision_fit' not in rep else ''}"] = {stems[k]: curve[-1][k] for k in stems}


def carry_earlier_rows(res: dict) -> None:
    """SFT rows this run folder lacks (a step left out with --skip, or run in an earlier session whose
    folder is gone) come from the committed report, only if it was made with the same configuration;
    each carried row is marked."""
    path = ROOT / "docs" / "results" / f"{REPORT['name']}.json"
    if not path.exists():
        return
    old = json.loads(path.read_text())
    if {k: old.get("config", {}).get(k) for k in res["config"]} != res["config"]:
        return
    for w in WEIGHTS:
        name = f"trajectory judge, SFT, decision weight {w}"
        if name not in res["rows"] and name in old["rows"]:
            res["rows"][name] = {**old["rows"][name], "carried": True}
            if f"SFT, decision weight {w}" in old.get("claims", {}):
                res.setdefault("claims", {})[f"SFT, decision weight {w}"] = old["claims"][f"SFT, decision weight {w}"]


def report(out: Path) -> None:
    res: dict = {"config": {"model": MODEL, "n_sft": N_SFT, "weights": sorted(WEIGHTS), "reach_args": REACH_ARGS,
                            "sft_args": SFT_ARGS, "eval_args": EVAL_ARGS,
                            # the task's rows (trajectory format included): rows of another version are not carried
                            "train_digest": digest(ROOT / "data" / "if_train.jsonl")}, "rows": {}}
    base_path = ROOT / "docs" / "results" / "if_task_baselines.json"
    base = json.loads(base_path.read_text())
    names = {"if_test.jsonl": "IF test", "if_ood.jsonl": "IFBench-OOD"}
    for path, r in base["eval"].items():
        for k in ("prompt-blind classifier", "longer wins", "always A"):
            res["rows"].setdefault(f"baseline: {k}", {})[names[Path(path).name]] = {
                "accuracy": r[k]["accuracy"], "ci95": r[k]["ci95"], "pairs": r["pairs"]}
    for reach, label, key in ((REACH_OUT, "", ""), (REACH_COMPACT_OUT, "compact prompt, ", "compact_")):
        if reach.exists():  # written by the reach step, or committed by an earlier run of it
            reach_rows(res, json.loads(reach.read_text()), label, key)
    for w in WEIGHTS:
        folder = out / f"eval_sft_w{w}"
        if (out / ".done" / f"eval_sft_w{w}").exists():
            res["rows"][f"trajectory judge, SFT, decision weight {w}"] = eval_accuracy(folder)
            res.setdefault("claims", {})[f"SFT, decision weight {w}"] = claims(folder)
    carry_earlier_rows(res)
    rl_acc = []
    for seed in RL_SEEDS:
        if (out / ".done" / f"eval_judge_rl_s{seed}").exists():
            res["rows"][f"trajectory judge, SFT (weight {RL_FROM_WEIGHT}) + judge-phase GRPO, seed {seed}"] = \
                ev = eval_accuracy(out / f"eval_judge_rl_s{seed}")
            rl_acc.append({k: v["accuracy"] for k, v in ev.items()})
        m = out / f"judge_rl_s{seed}" / "metrics.jsonl"
        if m.exists():
            res.setdefault("rl_curves", {})[str(seed)] = [
                {k: x.get(k) for k in ("step", "reward_acc", "reward_fmt", "kl")} for x in map(json.loads, m.read_text().splitlines())]
    if len(rl_acc) > 1:
        import statistics
        res["rl_over_seeds"] = {k: {"mean": statistics.mean(a[k] for a in rl_acc), "sd": statistics.stdev(a[k] for a in rl_acc),
                                    "seeds": len(rl_acc)} for k in rl_acc[0]}
    (ROOT / "docs" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "docs" / "results" / f"{REPORT['name']}.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = ["# Does the judge learn? (leak-free IF task, SmolLM2-135M-Instruct)", "",
             f"Written by `experiments/judge_learning.py --report-only --report {REPORT['name']}` from "
             f"`docs/results/{REPORT['name']}.json`",
             "(baselines: `docs/results/if_task_baselines.json`, written by `tasks/baselines.py`). Accuracy over pairs,",
             "95% bootstrap interval; an unparseable verdict counts 0.5. Baselines and probes average both A/B",
             "orders of each pair; evaluate.py shows each pair in one seeded order.", "",
             "| judge | IF test | IFBench-OOD |", "|---|---|---|"]
    for name, cols in res["rows"].items():
        cells = []
        if cols.get("carried"):
            name += " (an earlier run of this configuration)"
        for k in ("IF test", "IFBench-OOD"):
            c = cols.get(k)
            cells.append("-" if c is None else f"{100 * c['accuracy']:.1f} [{100 * c['ci95'][0]:.1f}, "
                         f"{100 * c['ci95'][1]:.1f}] (n={c['pairs']})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if res.get("claims"):
        keys = ("claims", "balanced", "said_met_if_met", "said_not_met_if_not", "decisive", "follows_claims")
        lines += ["", "The judge's claims, checked against the official checkers (balanced = mean of P(says met | met)"
                  " and P(says not met | not met); follows = share of judgements whose verdict names the response its own "
                  "claims single out):", "", "| judge | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for name, c in res["claims"].items():
            lines.append(f"| {name} | " + " | ".join("-" if c[k] is None else f"{100 * c[k]:.1f}" if isinstance(c[k], float)
                                                     else str(c[k]) for k in keys) + " |")
    for key, label in (("", ""), ("compact_", "Compact prompt, every layer trained: ")):
        if f"{key}probe_by_layer" in res:
            lines += ["", f"{label}Probe accuracy by layer (IF test / IFBench-OOD): " + ", ".join(
                f"{L}: {100 * v['IF test']:.1f} / {100 * v['IFBench-OOD']:.1f}" for L, v in res[f"{key}probe_by_layer"].items())]
        if f"{key}decision_fit_curve" in res:
            lines += ["", f"{label}Decision-only fit, held-out accuracy by step (IF test / IFBench-OOD): " + ", ".join(
                f"{p['step']}: {100 * p['IF test']:.1f} / {100 * p['IFBench-OOD']:.1f}"
                for p in res[f"{key}decision_fit_curve"])]
    for seed, curve in res.get("rl_curves", {}).items():
        blocks = [curve[i:i + 5] for i in range(0, len(curve), 5)]
        done = (out / ".done" / f"judge_rl_s{seed}").exists()
        lines += ["", f"Judge-phase GRPO, seed {seed} ({len(curve)} of {RL_ARGS.split('--max-steps ')[1].split()[0]} steps"
                  f"{'' if done else ', still running or stopped there'}): the accuracy part of the training reward "
                  "(verdicts sampled at T=1, 16 judgements a step of training pairs not seen before; chance 0.5), mean "
                  "per 5 steps: " + ", ".join(f"{b[0]['step']}-{b[-1]['step']}: {sum(x['reward_acc'] for x in b) / len(b):.2f}"
                                           for b in blocks)]
    (ROOT / "docs" / f"{REPORT['name']}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/judge_learning", help="run folder (resumable)")
    ap.add_argument("--redo", action="append", default=[], metavar="STEP", help="run this finished step again")
    ap.add_argument("--skip", action="append", default=[], metavar="STEP",
                    help="leave this step out (e.g. reach: its committed report is used as it is)")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from the finished steps")
    ap.add_argument("--report", default=REPORT["name"], metavar="NAME",
                    help="write the report to docs/NAME.md and docs/results/NAME.json")
    args = ap.parse_args()
    REPORT["name"] = args.report
    out = Path(args.out).resolve()
    if args.report_only:
        report(out)
    else:
        run_all(out, set(args.redo), set(args.skip))


if __name__ == "__main__":
    main()
