"""What dynamic sampling (DAPO's group filter, `--dynamic-sampling`) does to a GRPO phase's signal and cost.

For each phase (judge, rubric) and each toy task (the implicit one, where the rubric decides; the explicit
one, where every sampled rubric restates the request), the same phase runs twice from the same SFT
adapters, with and without the filter, and each run's metrics are read back:
  - signal: the share of groups with reward variance among those drawn, and among those trained on
  - cost: seconds per step, groups drawn per step, and seconds per useful group (a group with variance
    that the step trains on: the only kind that moves the policy)
  - what it learnt: the phase's training reward accuracy (first -> last 10 steps)

    python experiments/dynamic_sampling.py --rubric-phase-run runs/toy_rubric_phase --out runs/dynamic_sampling --publish

It takes the seed-0 SFT adapters and base of an experiments/toy_rubric_phase.py run (the implicit task) and
the bundled explicit base (data/toy_base, SFT here on its demo split). Finished phases are kept (a rerun
resumes); --publish writes docs/results/dynamic_sampling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tasks"), str(ROOT / "experiments")]
os.environ.setdefault("RUBRIC_ARM_NO_PROGRESS", "1")

import common as C  # noqa: E402
import toy_ablation as T  # noqa: E402
import toy_task  # noqa: E402
from driver import check_config, rel, sh  # noqa: E402

STEPS = 30
EXTRA_DRAWS = 3
JUDGE_ARGS = T.STAGE_ARGS["JUDGE_ARGS"].split()
RUBRIC_ARGS = T.STAGE_ARGS["RUBRIC_ARGS"].split()
MODEL_ARGS = T.STAGE_ARGS["MODEL_ARGS"].split()


def phase(script: str, base: Path, out: Path, args: list, dynamic: bool) -> dict:
    """One phase of STEPS steps (resumed if interrupted), then its per-step metrics summed up."""
    if not (out / "adapter").exists():
        sh([sys.executable, script, "--model", base, "--out", out, "--max-steps", STEPS, "--save-every", 10, "--resume",
            *MODEL_ARGS, *args, *(["--dynamic-sampling", "--max-extra-draws", EXTRA_DRAWS] if dynamic else [])],
           out.parent / "logs" / f"{out.name}.log")
    rows = C.read_jsonl_resumable(out / "metrics.jsonl")
    groups = 16 // 4  # batch 16 / G 4 prompts a step
    drawn = [r.get("groups_drawn", groups) for r in rows]
    kept = [r.get("groups_kept", round(groups * (1 - r["zero_var_groups"]))) for r in rows]
    useful = sum(kept)
    seconds = sum(r["time_step"] for r in rows)
    s = C.signal_summary(out / "metrics.jsonl")
    return {"steps": len(rows), "drawn_zero_var_share": statistics.mean(r["zero_var_groups"] for r in rows),
            "trained_signal_share": useful / (groups * len(rows)), "groups_drawn_per_step": sum(drawn) / len(rows),
            "useful_groups": useful, "seconds": seconds, "seconds_per_step": seconds / len(rows),
            "seconds_per_useful_group": seconds / useful if useful else None,
            "reward_acc_first10": s["reward_acc_first10"], "reward_acc_last10": s["reward_acc_last10"]}


def main(argv=None) -> dict:
    C.setup_logging()
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rubric-phase-run", required=True, help="an experiments/toy_rubric_phase.py run folder (seed 0 done)")
    ap.add_argument("--out", default="runs/dynamic_sampling")
    ap.add_argument("--publish", action="store_true", help="write docs/results/dynamic_sampling.json")
    a = ap.parse_args(argv)
    out = C.check_writable(a.out)
    rp = Path(a.rubric_phase_run).resolve()
    check_config(out, {"steps": STEPS, "extra_draws": EXTRA_DRAWS, "judge_args": JUDGE_ARGS, "rubric_args": RUBRIC_ARGS,
                       "rubric_phase_run": rel(rp)})
    # the implicit task: the toy_rubric_phase run's base, seed-0 SFT adapters, its RL split and first cache
    tasks = {"implicit": (rp / "base", rp / "seed0" / "sft_rubric" / "adapter", rp / "seed0" / "sft_judge" / "adapter",
                          rp / "data" / "rl.jsonl")}
    # the explicit task: the bundled base, SFT here on its demo split (seed 0, the ablation's settings)
    exp = out / "explicit"
    splits = toy_task.demo_splits(exp / "data", toy_task.TOY_BASE)
    rub, jud = T.sft(toy_task.TOY_BASE, splits["sft"], exp, 0, T.SFT_LR)
    tasks["explicit"] = (toy_task.TOY_BASE, rub, jud, splits["rl"])
    results = {}
    for task, (base, rubric, judge, rl) in tasks.items():
        cache = out / task / "rubrics.jsonl"
        if not cache.exists():
            sh([sys.executable, "common.py", "cache-rubrics", "--model", base, "--adapter", rubric, "--data", rl,
                "--out", cache, *MODEL_ARGS, *T.STAGE_ARGS["CACHE_ARGS"].split()], out / task / "logs" / "cache.log")
        for dynamic in (False, True):
            tag = "dynamic" if dynamic else "plain"
            results[f"{task}, judge phase, {tag}"] = phase(
                "train_judge_phase.py", base, out / task / f"judge_{tag}",
                ["--adapter", judge, "--data", rl, "--rubric-cache", cache, *JUDGE_ARGS], dynamic)
            results[f"{task}, rubric phase, {tag}"] = phase(
                "train_rubric_phase.py", base, out / task / f"rubric_{tag}",
                ["--adapter", rubric, "--judge-adapter", judge, "--data", rl, *RUBRIC_ARGS], dynamic)
            C.log.info("%s %s done", task, tag)
    lines = [f"GRPO phases of {STEPS} steps (4 groups of G=4 a step) from the same SFT adapters, without and with "
             f"--dynamic-sampling (at most {EXTRA_DRAWS} extra draws a step):", "",
             "| phase | drawn groups with equal rewards | trained groups with signal | groups drawn a step | "
             "s / step | s / useful group | training reward acc. |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        spg = f"{r['seconds_per_useful_group']:.1f}" if r["seconds_per_useful_group"] else "-"
        lines.append(f"| {name} | {100 * r['drawn_zero_var_share']:.0f}% | {100 * r['trained_signal_share']:.0f}% | "
                     f"{r['groups_drawn_per_step']:.1f} | {r['seconds_per_step']:.1f} | {spg} | "
                     f"{100 * r['reward_acc_first10']:.0f} -> {100 * r['reward_acc_last10']:.0f} |")
    table = "\n".join(lines) + "\n"
    C.atomic_write_text(out / "table.md", table)
    C.atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    if a.publish:
        C.atomic_write_text(ROOT / "docs" / "results" / "dynamic_sampling.json", json.dumps(
            {"command": f"python experiments/dynamic_sampling.py --rubric-phase-run {rel(rp)} --out {rel(out)} --publish",
             "steps": STEPS, "extra_draws": EXTRA_DRAWS, "results": results}, indent=2))
    print(table)
    return results


if __name__ == "__main__":
    C.run_main(main)
