"""Both roles must move: the two-rule toy task, where neither the judge phase nor the rubric phase learns alone.

On the implicit toy (experiments/toy_rubric_phase.py) the rubric phase is the whole gain: the SFT judge
already checks the case rule it is given, so only the generator has to learn to give it. Here a request
implies one of two rules (tasks/toy_task.make_two_rule_split): a case rule, named by a third of the training
rubrics as before, or a rule on the final mark ("as an excited announcement" -> end with "!"), named by only
END_SHARE of them. So the SFT judge has seen few trajectories that check the ending, and the SFT generator
rarely writes it (never greedily). A rubric phase alone is rewarded by a judge that checks the ending
poorly; a judge phase alone trains on cached greedy rubrics that never name it. The paper's alternation
(Section 4) is the only schedule in which each phase can make the other's signal.

  1. data      pretrain / SFT splits written as a partial annotator would; RL and held-out splits decided
               by the implied rule alone, each of the four rules a quarter of the pairs; held-out prompts
               are a bucket of the prompt space no other split draws from
  2. base      a Qwen3 of 2 x 128 pretrained from random weights on the pretrain split (experiments/toy_ablation.py)
  3. SFT       both roles per seed (the paper's Rubric-RM)
  4. reach     (seed 0's SFT pair, before any RL; --reach-only stops here) the SFT judge's held-out accuracy
               per rule under the reference rubric, another prompt's, an empty one and its generator's; the
               SFT generator's rate of naming each implied rule, greedy and sampled at the rollout
               temperature; what naming pays: the frozen SFT judge's accuracy on RL pairs given the SFT
               generator's sampled rubrics, by whether they name the implied rule; the trivial judges per pair type
  5. loops     alternate.sh from the same SFT adapters, CYCLES cycles, every schedule the same number of
               GRPO phases of RL_STEPS steps: judge-first (the paper), rubric-first, simultaneous,
               judge-only, rubric-only; the judge phase's rubrics sampled (CACHE_TEMPERATURE, as the paper);
               held-out accuracy after every phase (--eval-every-phase)
  6. report    per schedule and phase: mean ± std over seeds and the seeds-and-pairs interval, per rule;
               paired differences; each phase's GRPO signal; the final judges' rubric sensitivity and
               the final generators' naming rates; position bias (paper Table 13)

    python experiments/toy_both_roles.py --out runs/toy_both_roles --reach-only      # base + SFT + reach, ~30 min
    python experiments/toy_both_roles.py --out runs/toy_both_roles --publish         # 3 seeds x 5 schedules
Finished steps are kept, so a rerun resumes; a rerun into a folder made with other settings is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tasks"), str(ROOT / "experiments")]  # stages, tasks, drivers
os.environ.setdefault("RUBRIC_ARM_NO_PROGRESS", "1")

import toy_rubric_phase as TR  # noqa: E402

import common as C  # noqa: E402
import toy_ablation as T  # noqa: E402
import toy_task  # noqa: E402
from driver import generator_rubrics, interval, pct, publish_page, seeds_and_pairs  # noqa: E402

# ---- configuration ------------------------------------------------------------------------------
SPLITS = toy_task.TWO_RULE_SPLITS  # rows, seed, annotated training rubrics, held-out prompts
SCHEDULES = ("judge-first", "rubric-first", "simultaneous", "judge-only", "rubric-only")
RL_STEPS = 30
PAYS_ROWS = 200  # RL rows (one per prompt) of the reach's naming-pays check, each with NAMING['samples'] sampled rubrics
RULES = ("lowercase", "capital_start", "exclaim_end", "period_end")
# how a rubric names each rule: the criterion's key words (toy_task.Constraint.criterion)
RULE_WORDS = {"lowercase": "lowercase", "capital_start": "capital letter", "exclaim_end": "exclamation mark",
              "period_end": "end with a period"}
RULE_FAMILY_CASE = toy_task.RULE_FAMILIES["case"]
OPPOSITE = {"lowercase": "capital_start", "capital_start": "lowercase", "exclaim_end": "period_end",
            "period_end": "exclaim_end"}
NAMING = {"samples": 4, "temperature": 1.0, "max_new_tokens": 64}  # the rubric phase's rollout temperature
# The judge phase's cached rubric is sampled, as in the paper (Section 4: one rubric sampled per example), not
# alternate.sh's greedy default: a judge phase then meets a rule in the share of rubrics that name it
CACHE_TEMPERATURE = 1.0


def config(rl_steps: int, end_share: float) -> dict:
    return {"task": "two-rule", "splits": SPLITS, "end_share": end_share, "model": T.MODEL, "pretrain": T.PRETRAIN,
            "cycles": T.CYCLES, "stage_args": T.STAGE_ARGS, "sft_args": T.SFT_ARGS, "sft_lr": T.SFT_LR,
            "eval_args": T.EVAL_ARGS, "rl_steps": rl_steps, "naming": NAMING, "cache_temperature": CACHE_TEMPERATURE,
            "annotated_share": toy_task.ANNOTATED_SHARE, "task_fingerprint": toy_task.two_rule_fingerprint(end_share)}


def make_data(out: Path, end_share: float) -> dict[str, Path]:
    paths = {}
    for name, (n, seed, annotated, held_out) in SPLITS.items():
        paths[name] = out / "data" / f"{name}.jsonl"
        if not paths[name].exists():
            rows = toy_task.make_two_rule_split(n, seed, name, annotated, held_out, end_share)
            assert all(toy_task.check_label(r) for r in rows)
            C.write_jsonl_atomic(paths[name], rows)
    return paths


# ---- what a generator writes: the rate of naming each implied rule --------------------------------
def names(rubric: str, kind: str) -> str:
    """'right' if the rubric names the implied rule `kind`, 'wrong' if it names only its opposite, else 'none'."""
    text = rubric.lower()
    return "right" if RULE_WORDS[kind] in text else "wrong" if RULE_WORDS[OPPOSITE[kind]] in text else "none"


def naming_rates(base: Path, adapter: Path, rows: list[dict], out: Path) -> dict:
    """The generator's rubrics for the held-out prompts, greedy and NAMING['samples'] sampled at the rollout
    temperature, classified by names() per implied rule; kept in out/rubrics.jsonl (a rerun reads them)."""
    def load():
        return C.load_tokenizer(str(base)), C.attach_lora(C.load_base_model(str(base)), str(adapter), trainable=False).eval()
    recs = generator_rubrics(load, rows, out / "rubrics.jsonl", 50, NAMING)
    rep: dict = {}
    for rule in RULES:
        mine = [r for r in recs if r["implied"] == rule]
        rep[rule] = {}
        for mode in ("greedy", "sampled"):
            said = [names(t, rule) for r in mine for t in ([r[mode]] if mode == "greedy" else r[mode])]
            rep[rule][mode] = {v: said.count(v) / len(said) for v in ("right", "wrong", "none")} | {"n": len(said)}
    return rep


PAYS = ("pays_case_right", "pays_case_none", "pays_ending_right", "pays_ending_none")


def rollout_naming(run: Path, implied: dict[str, str]) -> dict[str, dict]:
    """Per rubric phase of a loop: the share of its logged rollouts (judge_samples.jsonl: one group a step)
    whose rubric names the rule its prompt implies, over the first and the last 10 steps. Tells a generator
    that learns to name the rule from one that forgets it while the held-out figures stand still."""
    out = {}
    for p in C.grpo_phases(run):
        f = p / "judge_samples.jsonl"
        if "rubric" not in p.name or not f.exists():
            continue
        recs = C.read_jsonl_resumable(f)
        last = max(r["step"] for r in recs)
        share = lambda part: statistics.mean(names(r["rubric"], implied[r["id"]]) == "right" for r in part)  # noqa: E731
        out[p.name] = {"naming_first10": share([r for r in recs if r["step"] <= 10]),
                       "naming_last10": share([r for r in recs if r["step"] > last - 10])}
        # what naming pays: the frozen judge's reward for rollouts that name the implied rule vs name none,
        # per pair family, as [reward sum, rollouts] (summed over seeds by summarize)
        for fam, rules in (("case", RULE_FAMILY_CASE), ("ending", [k for k in RULES if k not in RULE_FAMILY_CASE])):
            for said in ("right", "none"):
                mine = [r["reward_acc"] for r in recs if implied[r["id"]] in rules and names(r["rubric"], implied[r["id"]]) == said]
                out[p.name][f"pays_{fam}_{said}"] = [sum(mine), len(mine)]
    return out


def naming_pays(base: Path, init: tuple[Path, Path], rows: list[dict], folder: Path) -> dict:
    """What a rubric phase's reward pays for naming, before any RL: the SFT generator's sampled rubrics for RL
    prompts (NAMING: as its rollouts are drawn), each given to the frozen SFT judge on its own pair (both
    orders, greedy, as the reward is); the judge's accuracy per pair family for rubrics that name the implied
    rule, only its opposite, or no rule. Naming can only be learnt where it pays."""
    rubric, judge = init

    def load():
        return C.load_tokenizer(str(base)), C.attach_lora(C.load_base_model(str(base)), str(rubric), trainable=False).eval()
    recs = generator_rubrics(load, rows, folder / "rubrics.jsonl", 50, NAMING)
    assert len({r["prompt"] for r in rows}) == len(rows), "one row per prompt: evaluate.py keys given rubrics by prompt"
    pairs = folder / "pairs.jsonl"
    if not pairs.exists():
        C.write_jsonl_atomic(pairs, rows)
    prompt = {r["id"]: r["prompt"] for r in rows}
    by: dict[str, list[float]] = {}
    for k in range(NAMING["samples"]):
        given = folder / f"given_sample{k}.jsonl"
        if not given.exists():
            C.write_jsonl_atomic(given, [{"prompt": prompt[r["id"]], "rubric": r["sampled"][k]} for r in recs])
        T.evaluate(base, None, judge, pairs, folder / f"judge_sample{k}", extra=("--reference-rubrics", given))
        score = T.pair_scores(folder / f"judge_sample{k}")
        for r in recs:
            fam = "case" if r["implied"] in RULE_FAMILY_CASE else "ending"
            by.setdefault(f"{fam}: {names(r['sampled'][k], r['implied'])}", []).append(score[r["id"]])
    return {key: interval(v) | {"n": len(v)} for key, v in sorted(by.items())}


# ---- one judge on the held-out pairs ----------------------------------------------------------------
def by_rule(r: dict) -> dict:
    return {k.removeprefix("implied "): v for k, v in r["by_kind"].items()}


def sensitivity(base: Path, judge: Path, given: dict[str, Path], eval_path: Path, folder: Path) -> dict:
    """The judge on the held-out pairs under each given rubric (reference, another prompt's, empty)."""
    return {what: T.evaluate(base, None, judge, eval_path, folder / f"given_{path.stem.split('_')[1]}",
                             extra=("--reference-rubrics", path)) for what, path in given.items()}


def phases(schedule: str, cycles: int) -> list[str]:
    """The eval folders alternate.sh --eval-every-phase writes, in the schedule's order."""
    per = {"judge-first": ["c{c}_judge", "c{c}_rubric"], "rubric-first": ["c{c}_rubric", "c{c}_judge"],
           "simultaneous": ["c{c}"], "judge-only": ["c{c}_judge", "c{c}_judge_b"],
           "rubric-only": ["c{c}_rubric_a", "c{c}_rubric"]}[schedule]
    return [p.format(c=c) for c in range(1, cycles + 1) for p in per]


def run_schedule(base: Path, paths: dict, init: tuple[Path, Path], run: Path, schedule: str, seed: int, steps: int) -> None:
    """alternate.sh from the SFT adapters with the held-out pairs evaluated after every phase."""
    limit = f" --max-steps {steps} --save-every {max(1, steps // 3)}"
    env = {**T.STAGE_ARGS, "JUDGE_ARGS": T.STAGE_ARGS["JUDGE_ARGS"] + limit, "RUBRIC_ARGS": T.STAGE_ARGS["RUBRIC_ARGS"] + limit,
           "CACHE_ARGS": T.STAGE_ARGS["CACHE_ARGS"] + f" --temperature {CACHE_TEMPERATURE} --seed {seed}",
           "EVAL_ARGS": " ".join(T.EVAL_ARGS), "RUBRIC_ARM_PYTHON": sys.executable}
    T.sh(["bash", "alternate.sh", "--model", base, "--data", paths["rl"], "--rubric-init", init[0], "--judge-init", init[1],
          "--cycles", T.CYCLES, "--order", schedule, "--seed", seed, "--out", run, "--eval-data", paths["eval"],
          "--eval-every-phase"], run.parent / "logs" / f"{run.name}.log", env=env)


def final_adapters(run: Path) -> tuple[Path, Path]:
    return tuple(Path((run / f"final_{role}_adapter.txt").read_text().strip()) for role in ("rubric", "judge"))


# ---- report --------------------------------------------------------------------------------------
def summarize(res: dict) -> dict:
    """Per (schedule, phase): spread over seeds, the seeds-and-pairs interval, per rule; paired differences."""
    rows = []
    for (name, stage), rs in res["evals"].items():
        pos = {k: statistics.mean(r[key] for r in rs) for k, key in
               (("chosen first", "accuracy"), ("chosen second", "accuracy_swapped"), ("mixed", "mixed"))}
        rows.append({"judge": name, "stage": stage, "seeds": len(rs), "accuracy": T.spread([r["both"] for r in rs]),
                     "per_seed": [round(r["both"], 4) for r in rs], "interval": seeds_and_pairs([r["pairs"] for r in rs]),
                     "by_rule": {k: statistics.mean(by_rule(r)[k] for r in rs) for k in RULES if k in by_rule(rs[0])},
                     "format": statistics.mean(r["format"] for r in rs),
                     "position": pos | {"variation": max(pos.values()) - min(pos.values())}})
    final = {name: rs for (name, stage), rs in res["evals"].items() if stage == "final"}
    diffs = {}
    for a, b in [("judge-first", "judge-only"), ("judge-first", "rubric-only"), ("judge-first", "rubric-first"),
                 ("judge-first", "simultaneous"), ("judge-first", "SFT"), ("judge-only", "SFT"), ("rubric-only", "SFT")]:
        ra, rb = final.get(a, []), final.get(b, [])
        k = min(len(ra), len(rb))
        if k:
            diffs[f"{a} minus {b}"] = {**seeds_and_pairs([[x - y for x, y in zip(ra[i]["pairs"], rb[i]["pairs"])]
                                                         for i in range(k)]),
                                       "per_seed": [round(ra[i]["both"] - rb[i]["both"], 4) for i in range(k)]}
    sig = {}
    for sched, per_seed in res["signal"].items():
        by_phase: dict[str, list[dict]] = {}
        for ps in per_seed:
            for p in ps:
                by_phase.setdefault(p["phase"], []).append(p)
        sig[sched] = {ph: {k: statistics.mean(p[k] for p in ps) for k in
                           ("signal_step_share", "zero_var_groups", "reward_acc_first10", "reward_acc_last10",
                            "naming_first10", "naming_last10") if all(k in p for p in ps)}
                      | {k: pooled_reward([p[k] for p in ps]) for k in PAYS if all(k in p for p in ps)}
                      | {"seeds": len(ps)} for ph, ps in by_phase.items()}
    naming = {who: {rule: {mode: statistics.mean(n[rule][mode]["right"] for n in ns) for mode in ("greedy", "sampled")}
                    for rule in RULES} for who, ns in res["naming"].items()}
    sens = {}
    for (who, given), rs in res["sensitivity"].items():
        sens.setdefault(who, {})[given] = {"accuracy": seeds_and_pairs([r["pairs"] for r in rs]),
                                           "by_rule": {k: statistics.mean(by_rule(r)[k] for r in rs) for k in RULES}}
    return {"rows": rows, "differences": diffs, "signal": sig, "naming": naming, "sensitivity": sens,
            "naming_pays": res.get("pays", {}), "trivial": res["trivial"]}


def pooled_reward(parts: list[list[float]]) -> dict:
    """[reward sum, rollouts] of each seed -> the pooled reward (%, rounded as the table shows it) and rollouts."""
    total, n = sum(p[0] for p in parts), sum(p[1] for p in parts)
    return {"reward_pct": round(100 * total / n) if n else None, "rollouts": n}


def pays(sig: dict, family: str) -> str:
    """'reward% (n) / reward% (n)' of a rubric phase's rollouts naming the implied rule / none, or '-'."""
    def one(said: str) -> str:
        r = sig[f"pays_{family}_{said}"]
        return f"{r['reward_pct']}% ({r['rollouts']})" if r["rollouts"] else "- (0)"
    return f"{one('right')} / {one('none')}" if f"pays_{family}_right" in sig else "-"


def report(out: Path, summ: dict, seeds: list[int], rl_steps: int, end_share: float, publish: bool,
           reach_only: bool = False) -> str:
    n = SPLITS["eval"][0]
    rule_cols = " | ".join(RULES)
    lines = [f"Held-out judge accuracy on {n} pairs of the two-rule toy task (held-out prompts, both A/B orders; each "
             "pair decided by the rule its request implies: a case rule, named by a third of the training rubrics, "
             f"or an ending rule, named by {100 * end_share:.0f}% of them). Mean ± std over training seeds "
             f"{', '.join(map(str, seeds))}; [95% interval resampling seeds and pairs]. "
             + ("The reach before any RL: the SFT pair of the first seed. " if reach_only else
                f"Loops: alternate.sh, {T.CYCLES} cycles x 2 phases x {rl_steps} GRPO steps from the SFT adapters of the "
                "same seed. ") + "Each judge reads its own generator's greedy rubrics.", "",
             f"| schedule | after | seeds | accuracy | per seed | [95% CI] | {rule_cols} |",
             "|---|---|---|---|---|---|" + "---|" * len(RULES)]
    for r in summ["rows"]:
        lines.append(f"| {r['judge']} | {r['stage']} | {r['seeds']} | {pct(r['accuracy'])} | "
                     f"{' / '.join(f'{100 * x:.1f}' for x in r['per_seed'])} | {pct(r['interval'])} | "
                     + " | ".join(f"{100 * r['by_rule'].get(k, float('nan')):.1f}" for k in RULES) + " |")
    triv = summ["trivial"]

    def type_acc(name: str, rule: str) -> float:  # a trivial judge on the rule's pair type (case or ending)
        kind = "implied " + ("case" if rule in RULE_FAMILY_CASE else "ending")
        return 100 * triv["by_type"].get(kind, {}).get(name, {}).get("accuracy", float("nan"))
    lines += [f"| baseline: {name} | - | - | - | - | {pct(v)} | " + " | ".join(f"{type_acc(name, k):.1f}" for k in RULES) + " |"
              for name, v in triv.items() if name != "by_type"]
    lines += ["", "(Baselines per column: the pair type's accuracy, case or ending, both rules of a type together.)", "",
              "Rubric sensitivity (accuracy %, [95% CI over seeds and pairs], then per rule): the judge given the "
              "reference rubric, another held-out prompt's reference rubric, an empty rubric:", "",
              f"| judge | rubric given | accuracy | {rule_cols} |", "|---|---|---|" + "---|" * len(RULES)]
    for who, by_given in summ["sensitivity"].items():
        for given, s in by_given.items():
            lines.append(f"| {who} | {given} | {pct(s['accuracy'])} | "
                         + " | ".join(f"{100 * s['by_rule'][k]:.1f}" for k in RULES) + " |")
    lines += ["", "How often a generator's rubric for a held-out prompt names the rule the prompt implies (%, mean "
              f"over seeds; greedy / {NAMING['samples']} samples at temperature {NAMING['temperature']}):", "",
              f"| generator | {rule_cols} |", "|---|" + "---|" * len(RULES)]
    for who, by in summ["naming"].items():
        lines.append(f"| {who} | " + " | ".join(f"{100 * by[k]['greedy']:.0f} / {100 * by[k]['sampled']:.0f}" for k in RULES) + " |")
    if summ["naming_pays"]:
        lines += ["", f"What naming pays before any RL (first seed's SFT pair): the SFT generator's {NAMING['samples']} "
                  f"sampled rubrics (temperature {NAMING['temperature']}) for each of {PAYS_ROWS} RL prompts, each given "
                  "to the frozen SFT judge on its own pair (both orders, greedy: a rubric phase's reward); the judge's "
                  "accuracy by what the rubric names:", "",
                  "| pair family: rubric names | rubrics | judge accuracy [95% CI] |", "|---|---|---|"]
        lines += [f"| {key} | {v['n']} | {pct(v)} |" for key, v in summ["naming_pays"].items()]
    lines += ["", "Position bias (the paper's Table 13: accuracy %, mean over seeds, with the chosen response shown "
              "first, second, in a mixed order; variation = max - min), final judges:", "",
              "| judge | chosen first | chosen second | mixed order | variation |", "|---|---|---|---|---|"]
    lines += [f"| {r['judge']} | " + " | ".join(f"{100 * v:.1f}" for v in r["position"].values()) + " |"
              for r in summ["rows"] if r["stage"] in ("final", "SFT")]
    if summ["differences"]:
        lines += ["", "Differences of the final judges (points; paired by seed and pair; [95% interval resampling seeds "
                  "and pairs]; per seed):", "", "| comparison | difference | per seed |", "|---|---|---|"]
        lines += [f"| {name} | {pct(d)} | {' / '.join(f'{100 * x:+.1f}' for x in d['per_seed'])} |"
                  for name, d in summ["differences"].items()]
    if summ["signal"]:
        lines += ["", "GRPO signal per phase (mean over seeds): steps with at least one group whose rewards differ; "
                  "groups with equal rewards; the training reward accuracy, first -> last 10 steps; in a rubric phase, "
                  "the share of its logged rollouts (one group a step) whose rubric names the implied rule, first -> last "
                  "10 steps; and what naming pays: the frozen judge's reward for the logged rollouts whose rubric names "
                  "the implied rule vs names no rule, per pair family (%, rollouts):", "",
                  "| schedule | phase | steps with signal | zero-variance groups | reward accuracy | rollouts naming the rule "
                  "| case: named / none | ending: named / none |",
                  "|---|---|---|---|---|---|---|---|"]
    for sched, by_phase in summ["signal"].items():
        for ph, sig in by_phase.items():
            named = (f"{100 * sig['naming_first10']:.0f}% -> {100 * sig['naming_last10']:.0f}%"
                     if "naming_first10" in sig else "-")
            lines.append(f"| {sched} | {ph} | {100 * sig['signal_step_share']:.0f}% | {100 * sig['zero_var_groups']:.0f}% | "
                         f"{100 * sig['reward_acc_first10']:.0f} -> {100 * sig['reward_acc_last10']:.0f} | {named} | "
                         f"{pays(sig, 'case')} | {pays(sig, 'ending')} |")
    table = "\n".join(lines) + "\n"
    C.atomic_write_text(out / "table.md", table)
    C.atomic_write_text(out / "summary.json", json.dumps(summ, indent=2))
    if publish:
        cmd = (f"python experiments/toy_both_roles.py --out {T.rel(out)} --seeds {' '.join(map(str, seeds))} "
               f"--rl-steps {rl_steps} --end-share {end_share}{' --reach-only' if reach_only else ''} --publish")
        publish_page("toy_both_roles", "Both roles must move: the two-rule toy task, the full report", "results.md", table,
                     cmd, {"config": json.loads((out / "config.json").read_text()), "seeds": seeds, **summ})
    return table


def main(argv=None) -> dict:
    C.setup_logging()
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/toy_both_roles")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=SCHEDULES)
    ap.add_argument("--rl-steps", type=int, default=RL_STEPS, help="GRPO steps of every phase")
    ap.add_argument("--end-share", type=float, default=toy_task.END_SHARE,
                    help="share of training rows whose rubric names the ending rule (where it decides)")
    ap.add_argument("--reach-only", action="store_true", help="stop after the SFT pair's reach (seed 0)")
    ap.add_argument("--publish", action="store_true", help="write docs/results/toy_both_roles.json and docs/toy_both_roles.md")
    a = ap.parse_args(argv)
    out = C.check_writable(a.out)
    T.check_config(out, config(a.rl_steps, a.end_share))
    t0 = time.perf_counter()
    paths = make_data(out, a.end_share)
    given = TR.sensitivity_files(paths["eval"], out)
    base = T.pretrain_base(out, paths["pretrain"], paths["sft"], T.PRETRAIN["steps"])
    C.log.info("base ready (%.0fs)", time.perf_counter() - t0)
    eval_rows = C.read_jsonl_resumable(paths["eval"])
    implied = {r["id"]: r["implied"][0] for r in C.read_jsonl_resumable(paths["rl"])}
    res: dict = {"evals": {}, "signal": {}, "naming": {}, "sensitivity": {},
                 "trivial": TR.trivial_judges(paths)}

    def keep(name: str, stage: str, r: dict) -> None:
        res["evals"].setdefault((name, stage), []).append(r)
        C.log.info("%s after %s: %.1f%% %s (%.0fs)", name, stage, 100 * r["both"],
                   {k: round(v, 3) for k, v in by_rule(r).items()}, time.perf_counter() - t0)

    def measure_final(who: str, rubric: Path, judge: Path, folder: Path) -> None:
        res["naming"].setdefault(who, []).append(naming_rates(base, rubric, eval_rows, folder / "naming"))
        for what, r in sensitivity(base, judge, given, paths["eval"], folder).items():
            res["sensitivity"].setdefault((who, what), []).append(r)

    for seed in a.seeds if not a.reach_only else a.seeds[:1]:  # seed by seed: a stopped run has whole seeds
        sdir = out / f"seed{seed}"
        init = T.sft(base, paths["sft"], sdir, seed, T.SFT_LR)
        keep("SFT", "SFT", T.evaluate(base, *init, paths["eval"], sdir / "eval_sft"))
        measure_final("SFT", *init, sdir / "reach_sft")
        if seed == a.seeds[0]:
            one_per_prompt = {r["prompt"]: r for r in reversed(list(C.read_jsonl_resumable(paths["rl"])))}
            rl_rows = sorted(one_per_prompt.values(), key=lambda r: r["id"])[:PAYS_ROWS]  # evaluate.py keys rubrics by prompt
            res["pays"] = naming_pays(base, init, rl_rows, sdir / "reach_sft" / "pays")
        if a.reach_only:
            continue
        for schedule in a.schedules:
            run = sdir / schedule
            if not (run / "eval_final" / "results.json").exists():
                run_schedule(base, paths, init, run, schedule, seed, a.rl_steps)
            for ph in phases(schedule, T.CYCLES):
                keep(schedule, ph, T.evaluate(base, None, None, paths["eval"], run / f"eval_{ph}"))
            keep(schedule, "final", T.evaluate(base, None, None, paths["eval"], run / "eval_final"))
            named = rollout_naming(run, implied)
            res["signal"].setdefault(schedule, []).append([p | named.get(p["phase"], {}) for p in TR.phase_signal(run)])
            measure_final(schedule, *final_adapters(run), run / "final_measures")
    summ = summarize(res)
    seeds = a.seeds[:1] if a.reach_only else a.seeds
    table = report(out, summ, seeds, a.rl_steps, a.end_share, a.publish, a.reach_only)
    print(table)
    print(f"done in {time.perf_counter() - t0:.0f}s; {out / 'table.md'}")
    return summ


if __name__ == "__main__":
    C.run_main(main)
