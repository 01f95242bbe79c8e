"""Does the rubric phase learn? The ablation that isolates it, on a toy task where the rubric decides.

On the bundled toy task every constraint is written in the request, so every sampled rubric restates it
and the frozen judge's verdict is the same under all of them: the rubric phase's GRPO groups have equal
rewards and no gradient. Here the deciding requirement is implied (toy_task.make_implicit_split): the
request names a medium or audience ("as a newspaper headline", "for a minimalist poster") that implies a
letter-case rule, the training rubrics name that rule only a third of the time (when it decides the
pair), and every RL and held-out pair is decided by it. A judge can check a case rule it is given; it
is given one only by a rubric that names it. So sampled rubrics differ in whether they carry the rule,
the judge's verdict follows, and the generator has something to learn from the judge (paper Section 4).

  1. data      pretrain / SFT splits written as a partial annotator would (the implied rule in the rubric
               only when it decides), RL and held-out splits decided by the implied rule alone; held-out
               prompts are a bucket of the prompt space no other split draws from
  2. base      a Qwen3 of 2 x 128 pretrained from random weights on the pretrain split (experiments/toy_ablation.py)
  3. SFT       both roles per seed (the paper's Rubric-RM)
  4. loops     alternate.sh from the same SFT adapters, 2 cycles, the same GRPO steps in every schedule:
                 judge-first   the paper's alternation (judge phase, then rubric phase, per cycle)
                 judge-only    the generator stays at SFT; its slot runs a second judge phase
                 rubric-only   the judge stays at SFT; its slot runs a second rubric phase
  5. eval      held-out accuracy (both A/B orders) with the generator's own rubrics; and the rubric
               sensitivity of the judge: the same pairs under the reference rubric, another prompt's
               rubric, an empty rubric
  6. report    per schedule: mean ± std over seeds, pooled accuracy with a 95% interval that resamples
               seeds and pairs, the paired difference to judge-only, each phase's GRPO signal (share of
               steps with reward variance, share of zero-variance groups), the trivial judges

    python experiments/toy_rubric_phase.py --out runs/toy_rubric_phase --publish     # 3 seeds, about 2 h on 2 cores
    python experiments/toy_rubric_phase.py --out runs/toy_rp_quick --seeds 0 --rl-steps 20   # a quick look
Finished steps are kept, so a rerun resumes; a rerun into a folder made with other settings is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tasks"), str(ROOT / "experiments")]  # stages, tasks, drivers
os.environ.setdefault("RUBRIC_ARM_NO_PROGRESS", "1")

import common as C  # noqa: E402
import toy_ablation as T  # noqa: E402
import toy_task  # noqa: E402
from driver import pct, publish_page, seeds_and_pairs  # noqa: E402

# ---- configuration ------------------------------------------------------------------------------
SPLITS = toy_task.IMPLICIT_SPLITS  # rows, seed, annotated training rubrics, held-out prompts
SCHEDULES = ("judge-first", "judge-only", "rubric-only")
RL_STEPS = 60
SENSITIVITY = ("reference", "other prompt's", "empty")  # the rubric the judge is given, besides its generator's


def config(rl_steps: int, pretrain_steps: int) -> dict:
    return {"task": "implicit", "splits": SPLITS, "model": T.MODEL, "pretrain": {**T.PRETRAIN, "steps": pretrain_steps},
            "cycles": T.CYCLES,
            "stage_args": T.STAGE_ARGS, "sft_args": T.SFT_ARGS, "sft_lr": T.SFT_LR, "eval_args": T.EVAL_ARGS,
            "rl_steps": rl_steps, "annotated_share": toy_task.ANNOTATED_SHARE, "task_fingerprint": toy_task.implicit_fingerprint()}


def make_data(out: Path, splits: dict = SPLITS) -> dict[str, Path]:
    paths = {}
    for name, (n, seed, annotated, held_out) in splits.items():
        paths[name] = out / "data" / f"{name}.jsonl"
        if not paths[name].exists():
            rows = toy_task.make_implicit_split(n, seed, name, annotated, held_out)
            assert all(toy_task.check_label(r) for r in rows)
            C.write_jsonl_atomic(paths[name], rows)
    return paths


def sensitivity_files(eval_path: Path, out: Path) -> dict[str, Path]:
    """The held-out prompts with a given rubric each: their own reference rubric, the reference rubric of
    another held-out prompt (a fixed derangement), an empty one (evaluate.py --reference-rubrics)."""
    rows = C.read_jsonl_resumable(eval_path)
    ref = {r["prompt"]: r["reference_rubric"] for r in rows}  # one rubric per prompt (a prompt may hold several pairs)
    prompts = list(ref)
    other = list(range(len(prompts)))
    random.Random(0).shuffle(other)
    other = other[1:] + other[:1]  # a cycle over a shuffled order: no prompt keeps its own
    given = {p: ref[prompts[other[i]]] for i, p in enumerate(prompts)}
    texts = {"reference": [ref[r["prompt"]] for r in rows], "other prompt's": [given[r["prompt"]] for r in rows],
             "empty": ["" for _ in rows]}
    paths = {}
    for name, rubrics in texts.items():
        paths[name] = out / "data" / f"rubrics_{name.split()[0].strip(chr(39) + 's')}.jsonl"
        if not paths[name].exists():
            C.write_jsonl_atomic(paths[name], [{"prompt": r["prompt"], "rubric": t} for r, t in zip(rows, rubrics)])
    return paths


def export_base(base: Path, dest: Path, out: Path) -> None:
    """Copy the pretrained base to `dest` (the default demo's data/toy_implicit_base) with made_by.json: the
    task and its version (toy_task.demo_splits refuses another), the settings, the weights' digest."""
    import shutil

    from manifests import content_digest
    tmp = dest.parent / f".tmp-{dest.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(base, tmp)
    cfg = json.loads((out / "config.json").read_text())
    C.atomic_write_text(tmp / "made_by.json", json.dumps({
        "made_by": f"python experiments/toy_rubric_phase.py --out {T.rel(out)} --export-base {T.rel(dest)}", "task": "implicit",
        "task_fingerprint": cfg["task_fingerprint"], "config": cfg,
        "weights": content_digest(base / "model.safetensors")}, indent=2))
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    C.log.info("exported the base to %s", dest)


def trivial_judges(paths: dict[str, Path]) -> dict:
    """Every trivial judge of tasks/baselines.py on the held-out pairs (the classifier fit on the SFT split),
    overall, and per pair type in 'by_type'."""
    import baselines
    rep = baselines.evaluate(paths["sft"], [paths["eval"]])["eval"][str(paths["eval"])]
    out = {name: {"mean": r["accuracy"], "ci95": r["ci95"]} for name, r in rep.items() if isinstance(r, dict) and "ci95" in r}
    out["by_type"] = rep.get("by_type", {})
    return out


def final_adapters(run: Path, schedule: str, cycle: int, init: tuple[Path, Path]) -> tuple[Path, Path]:
    """The generator and judge after `cycle` cycles of `schedule` (a frozen role keeps its SFT adapter)."""
    rubric = init[0] if schedule == "judge-only" else run / f"c{cycle}_rubric" / "adapter"
    judge = init[1] if schedule == "rubric-only" else run / f"c{cycle}_judge{'_b' if schedule == 'judge-only' else ''}" / "adapter"
    return rubric, judge


def phase_signal(run: Path) -> list[dict]:
    """Every GRPO phase of a loop with its signal (common.signal_summary), in the order they ran."""
    return [{"phase": p.name, **C.signal_summary(p / "metrics.jsonl")} for p in C.grpo_phases(run)]



def summarize(results: dict, signal: dict, trivial: dict) -> dict:
    """Per judge: spread over seeds, the seeds-and-pairs interval; differences paired by seed and pair."""
    rows = []
    for name, rs in results.items():
        if not rs:
            continue
        rows.append({"judge": name, "seeds": len(rs), "accuracy": T.spread([r["both"] for r in rs]),
                     "per_seed": [round(r["both"], 4) for r in rs],
                     "interval": seeds_and_pairs([r["pairs"] for r in rs]),
                     "by_kind": {k: statistics.mean(r["by_kind"][k] for r in rs) for k in rs[0]["by_kind"]},
                     "format": statistics.mean(r["format"] for r in rs),
                     # the paper's Table 13: accuracy with the chosen response shown first, second, in a mixed order
                     "position": {k: statistics.mean(r[key] for r in rs) for k, key in
                                  (("chosen first", "accuracy"), ("chosen second", "accuracy_swapped"), ("mixed", "mixed"))}})
        pos = rows[-1]["position"]
        pos["variation"] = max(pos.values()) - min(pos.values())
    diffs = {}
    for a, b in [("judge-first", "judge-only"), ("judge-first", "rubric-only"), ("judge-first", "SFT"),
                 ("judge-only", "SFT"), ("rubric-only", "SFT"),
                 # the first phase alone (both schedules of a cycle start with it; a study under way has only it)
                 ("judge-first after c1_judge", "SFT"), ("rubric-only after c1_rubric_a", "SFT"),
                 ("SFT, reference rubric", "SFT, other prompt's rubric"),
                 ("judge-first, reference rubric", "judge-first, other prompt's rubric"),
                 ("SFT, reference rubric", "SFT"), ("judge-first, reference rubric", "judge-first")]:
        ra, rb = results.get(a, []), results.get(b, [])
        if min(len(ra), len(rb)) == 1:  # one shared run (a greedy SFT every seed starts from) beside each seed's
            ra, rb = ra * len(rb) if len(ra) == 1 else ra, rb * len(ra) if len(rb) == 1 else rb
        k = min(len(ra), len(rb))
        if k:
            diffs[f"{a} minus {b}"] = {**seeds_and_pairs([[x - y for x, y in zip(ra[i]["pairs"], rb[i]["pairs"])]
                                                         for i in range(k)]),
                                       "per_seed": [round(ra[i]["both"] - rb[i]["both"], 4) for i in range(k)]}
    sig = {}
    for sched, per_seed in signal.items():
        by_phase: dict[str, list[dict]] = {}
        for phases in per_seed:
            for p in phases:
                by_phase.setdefault(p["phase"], []).append(p)
        sig[sched] = {ph: {"zero_var_groups": statistics.mean(p["zero_var_groups"] for p in ps),
                           "zero_var_groups_first10": statistics.mean(p["zero_var_groups_first10"] for p in ps),
                           "all_right_groups": statistics.mean(p["all_right_groups"] for p in ps),
                           "all_wrong_groups": statistics.mean(p["all_wrong_groups"] for p in ps),
                           "signal_step_share": statistics.mean(p["signal_step_share"] for p in ps),
                           "reward_acc_first10": statistics.mean(p["reward_acc_first10"] for p in ps),
                           "reward_acc_last10": statistics.mean(p["reward_acc_last10"] for p in ps),
                           "seeds": len(ps)} for ph, ps in by_phase.items()}
    return {"rows": rows, "differences": diffs, "signal": sig, "trivial": trivial}


def report(out: Path, summ: dict, seeds: list[int], rl_steps: int, publish: bool) -> str:
    n = SPLITS["eval"][0]
    lines = [f"Held-out judge accuracy on {n} pairs of the implicit toy task (held-out prompts, both A/B orders; every "
             "pair decided by the case rule its request implies). Mean ± std over training seeds "
             f"{', '.join(map(str, seeds))}; pooled [95% interval resampling seeds and pairs]. Loops: alternate.sh, "
             f"{T.CYCLES} cycles x 2 phases x {rl_steps} GRPO steps from the SFT adapters of the same seed.", "",
             "| judge (rubric it reads) | seeds | accuracy | per seed | pooled [95% CI] | implied lowercase | "
             "implied capital |", "|---|---|---|---|---|---|---|"]
    for r in summ["rows"]:
        k = r["by_kind"]
        lines.append(f"| {r['judge']} | {r['seeds']} | {pct(r['accuracy'])} | "
                     f"{' / '.join(f'{100 * x:.1f}' for x in r['per_seed'])} | {pct(r['interval'])} | "
                     f"{100 * k.get('implied lowercase', float('nan')):.1f} | "
                     f"{100 * k.get('implied capital_start', float('nan')):.1f} |")
    lines += [f"| baseline: {name} | - | - | - | {pct(v)} | - | - |" for name, v in summ["trivial"].items()
              if name != "by_type"]
    lines += ["", "Position bias (the paper's Table 13: accuracy %, mean over seeds, with the chosen response shown first, "
              "second, in a mixed order; variation = max - min):", "",
              "| judge (rubric it reads) | chosen first | chosen second | mixed order | variation |", "|---|---|---|---|---|"]
    lines += [f"| {r['judge']} | " + " | ".join(f"{100 * v:.1f}" for v in r["position"].values()) + " |" for r in summ["rows"]]
    lines += ["", "Differences (points; paired by seed and pair; [95% interval resampling seeds and pairs]; per seed):", "",
              "| comparison | difference | per seed |", "|---|---|---|"]
    lines += [f"| {name} | {pct(d)} | {' / '.join(f'{100 * x:+.1f}' for x in d['per_seed'])} |"
              for name, d in summ["differences"].items()]
    lines += ["", "GRPO signal per phase (mean over seeds): the share of steps with at least one group whose rewards "
              "differ; the share of groups with equal rewards (no advantage) over the phase and over its first 10 "
              "steps, and of those, the groups all right or all wrong; the phase's training reward accuracy (first -> "
              "last 10 steps):", "",
              "| schedule | phase | steps with signal | zero-variance groups | in the first 10 steps | all right | "
              "all wrong | reward accuracy |", "|---|---|---|---|---|---|---|---|"]
    for sched, phases in summ["signal"].items():
        for ph, s in phases.items():
            lines.append(f"| {sched} | {ph} | {100 * s['signal_step_share']:.0f}% | {100 * s['zero_var_groups']:.0f}% | "
                         f"{100 * s['zero_var_groups_first10']:.0f}% | {100 * s['all_right_groups']:.0f}% | "
                         f"{100 * s['all_wrong_groups']:.0f}% | "
                         f"{100 * s['reward_acc_first10']:.0f} -> {100 * s['reward_acc_last10']:.0f} |")
    table = "\n".join(lines) + "\n"
    C.atomic_write_text(out / "table.md", table)
    C.atomic_write_text(out / "summary.json", json.dumps(summ, indent=2))
    if publish:
        cmd = (f"python experiments/toy_rubric_phase.py --out {T.rel(out)} --seeds {' '.join(map(str, seeds))} "
               f"--rl-steps {rl_steps} --publish")
        publish_page("toy_rubric_phase", "Does the rubric phase learn? The implicit toy task: the full report",
                     "results.md#claim-the-rubric-phase-learns-the-alternation-section-4", table, cmd,
                     {"config": json.loads((out / "config.json").read_text()), "seeds": seeds, **summ})
    return table


def main(argv=None) -> dict:
    C.setup_logging()
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/toy_rubric_phase")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=SCHEDULES)
    ap.add_argument("--rl-steps", type=int, default=RL_STEPS, help="GRPO steps of every phase")
    ap.add_argument("--pretrain-steps", type=int, default=T.PRETRAIN["steps"], help="the base's pretraining steps")
    ap.add_argument("--export-base", default=None, metavar="DIR", help="also copy the pretrained base to DIR")
    ap.add_argument("--publish", action="store_true", help="write docs/results/toy_rubric_phase.json")
    a = ap.parse_args(argv)
    out = C.check_writable(a.out)
    T.check_config(out, config(a.rl_steps, a.pretrain_steps))
    t0 = time.perf_counter()
    paths = make_data(out)
    given = sensitivity_files(paths["eval"], out)
    base = T.pretrain_base(out, paths["pretrain"], paths["sft"], a.pretrain_steps)
    C.log.info("base ready (%.0fs)", time.perf_counter() - t0)
    if a.export_base:
        export_base(base, Path(a.export_base).resolve(), out)
    results: dict[str, list[dict]] = {}
    signal: dict[str, list[list[dict]]] = {}

    def ev(name: str, rubric, judge, folder: Path, extra: tuple = ()) -> None:
        r = T.evaluate(base, rubric, judge, paths["eval"], folder, extra=extra)
        results.setdefault(name, []).append(r)
        C.log.info("%s: %.1f%% %s (%.0fs)", name, 100 * r["both"], {k: round(v, 3) for k, v in r["by_kind"].items()},
                   time.perf_counter() - t0)

    def sensitivity(label: str, judge: Path, sdir: Path, tag: str) -> None:
        for what, path in given.items():
            ev(f"{label}, {what} rubric", None, judge, sdir / f"eval_{tag}_given_{path.stem.split('_')[1]}",
               ("--reference-rubrics", path))

    ev("base by prompting", None, None, out / "eval_base")
    for seed in a.seeds:  # seed by seed: a stopped run has whole seeds to report
        sdir = out / f"seed{seed}"
        init = T.sft(base, paths["sft"], sdir, seed, T.SFT_LR)
        ev("SFT", *init, sdir / "eval_sft")
        sensitivity("SFT", init[1], sdir, "sft")
        for schedule in a.schedules:
            run = sdir / f"{schedule}-{a.rl_steps}steps"
            if not all((d / "adapter_config.json").exists() for d in final_adapters(run, schedule, T.CYCLES, init)):
                T.run_schedule(base, paths["rl"], init, run, schedule, seed, a.rl_steps)
            signal.setdefault(schedule, []).append(phase_signal(run))
            ev(schedule, *final_adapters(run, schedule, T.CYCLES, init), sdir / f"eval_{run.name}")
            if schedule != "rubric-only":  # rubric-only's judge is the SFT judge
                sensitivity(schedule, final_adapters(run, schedule, T.CYCLES, init)[1], sdir, run.name)
    trivial = trivial_judges(paths)
    summ = summarize(results, signal, trivial)
    table = report(out, summ, a.seeds, a.rl_steps, a.publish)
    print(table)
    print(f"done in {time.perf_counter() - t0:.0f}s; {out / 'table.md'}")
    return summ


if __name__ == "__main__":
    C.run_main(main)
