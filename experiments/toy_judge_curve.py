"""Does the judge phase keep improving? Held-out accuracy along one long judge phase (paper Stage II,
the generator frozen) on the toy task, from one SFT judge, over several RL seeds.

The toy ablation runs 30 GRPO steps per phase; here the judge phase runs STEPS steps from the same SFT
adapters (seed 0 of the ablation: the bundled base, the same SFT command), keeping a checkpoint every
EVERY steps, and each checkpoint is evaluated afterwards on the 200 held-out pairs in both orders with the
SFT generator's rubrics: the curve shows where held-out accuracy stops rising.

    python experiments/toy_judge_curve.py --out runs/toy_judge_curve --publish    # 3 RL seeds, 27 min on 2 cores

Steps (each kept, so a rerun resumes): the demo splits, SFT of both roles (seed 0), one rubric cache of the
RL split by the SFT generator, the judge phase per RL seed (train_judge_phase.py --keep-checkpoints 0), one
evaluate.py run per checkpoint. OUT/config.json records the settings and the base's digest; a rerun into a
folder made otherwise is refused. --publish writes docs/results/toy_judge_curve.json, docs/toy_judge_curve.md
and docs/toy_judge_curve.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tasks"), str(ROOT / "experiments")]  # stages, tasks, drivers

import common as C  # noqa: E402
import driver  # noqa: E402
import toy_ablation as T  # noqa: E402
import toy_task  # noqa: E402
from manifests import content_digest  # noqa: E402

# ---- configuration ------------------------------------------------------------------------------
STEPS = 120         # judge-phase GRPO steps (the ablation runs 30 per phase)
EVERY = 20          # a checkpoint, and a held-out evaluation, every EVERY steps
SFT_SEED = 0        # the SFT adapters every RL seed starts from
JUDGE_ARGS = T.STAGE_ARGS["JUDGE_ARGS"]  # the ablation's judge-phase flags (G=4, 16 completions a step, lr 5e-4)
NAME = "toy_judge_curve"


def sh(cmd: list, log: Path) -> None:
    driver.sh([sys.executable, *cmd], log)


def judge_phase(base: Path, judge: Path, rl: Path, cache: Path, out: Path, seed: int, steps: int, every: int) -> Path:
    if not (out / "adapter").exists():
        sh(["train_judge_phase.py", "--model", base, "--adapter", judge, "--data", rl, "--rubric-cache", cache,
            "--out", out, "--seed", seed, "--resume", *T.STAGE_ARGS["MODEL_ARGS"].split(), *JUDGE_ARGS.split(),
            "--max-steps", steps, "--save-every", every, "--keep-checkpoints", 0], out.parent / "logs" / f"{out.name}.log")
    return out


def curve_rows(results: dict[int, dict[int, dict]]) -> list[dict]:
    """Per step: accuracy mean ± std over the RL seeds, pooled interval, gain over step 0 (paired)."""
    seeds = sorted(results)
    rows = []
    for step in sorted(results[seeds[0]]):
        rs = [results[s][step] for s in seeds]
        start = [results[s][0] for s in seeds]
        gain = [a - b for a, b in zip(T.pooled(rs), T.pooled(start))]
        rows.append({"step": step, "accuracy": T.spread([r["both"] for r in rs]),
                     "per_seed": [round(r["both"], 4) for r in rs], "pooled": T.interval(T.pooled(rs)),
                     "gain_over_sft": T.interval(gain), "format": T.spread([r["format"] for r in rs]),
                     "flip": T.spread([r["flip"] for r in rs]),
                     "by_kind": {k: statistics.mean(r["by_kind"][k] for r in rs) for k in rs[0]["by_kind"]}})
    return rows


def train_curves(out: Path, seeds: list[int]) -> dict[int, list[dict]]:
    """The phase's own per-step training reward accuracy (its rollouts on pairs it had not seen)."""
    curves = {}
    for s in seeds:
        rows = [json.loads(line) for line in (out / f"rl_s{s}" / "metrics.jsonl").read_text().splitlines() if line.strip()]
        curves[s] = [{"step": r["step"], "reward_acc": r.get("reward_acc")} for r in rows]
    return curves


def report(out: Path, rows: list[dict], seeds: list[int], made_by: dict, train: dict, publish: bool) -> str:
    lines = [f"Held-out judge accuracy (%, both A/B orders of {T.SPLITS['eval'][0]} pairs, the SFT generator's rubrics) "
             f"along one judge phase of {made_by['steps']} GRPO steps from the SFT judge (seed {SFT_SEED}), RL seeds "
             f"{', '.join(map(str, seeds))}: mean ± std over seeds, the pooled accuracy (each pair averaged over seeds) "
             "with its 95% bootstrap interval over pairs, and the gain over the SFT judge (step 0), paired by pair.", "",
             "| judge-phase step | accuracy | per seed | pooled [95% CI] | gain over SFT | format rate | flip rate |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['step']} | {T.pct(r['accuracy'])} | {' / '.join(f'{100 * v:.1f}' for v in r['per_seed'])} | "
                     f"{T.pct(r['pooled'])} | {100 * r['gain_over_sft']['mean']:+.1f} [{100 * r['gain_over_sft']['ci95'][0]:+.1f}, "
                     f"{100 * r['gain_over_sft']['ci95'][1]:+.1f}] | {T.pct(r['format'])} | {T.pct(r['flip'])} |")
    source = f"Source: `docs/results/{NAME}.json`."
    kinds = sorted(rows[0]["by_kind"])
    lines += ["", source, "", "By the constraint that decides the pair (%, mean over seeds):", "",
              "| step | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    lines += [f"| {r['step']} | " + " | ".join(f"{100 * r['by_kind'][k]:.1f}" for k in kinds) + " |" for r in rows]
    lines += ["", source]
    table = "\n".join(lines)
    summary = {"made_by": made_by, "rows": rows, "train_reward_acc": train}
    C.atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    C.atomic_write_text(out / "table.md", table + "\n")
    plot(rows, train, out / "curve.png")
    if publish:
        C.atomic_write_text(ROOT / "docs" / "results" / f"{NAME}.json", json.dumps(summary, indent=2))
        (ROOT / "docs" / f"{NAME}.png").write_bytes((out / "curve.png").read_bytes())
        page = (f"# Toy task: held-out accuracy along a long judge phase\n\n[Back to the results](results.md)\n\n"
                f"Written by `{made_by['command']}`.\n\n{table}\n\n![held-out accuracy by step]({NAME}.png)\n")
        C.atomic_write_text(ROOT / "docs" / f"{NAME}.md", page)
    return table


def plot(rows: list[dict], train: dict, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [r["step"] for r in rows]
    ax.plot(steps, [100 * r["pooled"]["mean"] for r in rows], "o-", label="held-out, pooled over seeds")
    ax.fill_between(steps, [100 * r["pooled"]["ci95"][0] for r in rows], [100 * r["pooled"]["ci95"][1] for r in rows], alpha=0.2)
    for s, curve in train.items():
        pts = [(c["step"], c["reward_acc"]) for c in curve if c["reward_acc"] is not None]
        w = 10  # a moving mean: one step holds only 4 prompts
        xs = [pts[i][0] for i in range(w - 1, len(pts))]
        ys = [100 * statistics.mean(p[1] for p in pts[i - w + 1:i + 1]) for i in range(w - 1, len(pts))]
        ax.plot(xs, ys, lw=0.8, alpha=0.6, label=f"training reward accuracy, seed {s} (mean of 10 steps)")
    ax.set_xlabel("judge-phase GRPO step")
    ax.set_ylabel("judge accuracy (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    C.setup_logging()
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/toy_judge_curve")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="RL seeds (one SFT, seed 0)")
    ap.add_argument("--steps", type=int, default=STEPS, help="judge-phase GRPO steps")
    ap.add_argument("--every", type=int, default=EVERY, help="evaluate every N steps")
    ap.add_argument("--publish", action="store_true", help=f"write docs/results/{NAME}.json, docs/{NAME}.md and .png")
    a = ap.parse_args(argv)
    if a.steps % a.every:
        raise SystemExit(f"error: --steps {a.steps} must be a multiple of --every {a.every}")
    out = C.check_writable(a.out)
    base = toy_task.TOY_BASE
    T.check_config(out, {"base": content_digest(base / "model.safetensors"), "steps": a.steps, "every": a.every,
                         "sft_seed": SFT_SEED, "sft_lr": T.SFT_LR, "sft_args": T.SFT_ARGS, "stage_args": T.STAGE_ARGS,
                         "eval_args": T.EVAL_ARGS, "task_fingerprint": toy_task.task_fingerprint(T.KINDS)})
    t0 = time.perf_counter()
    paths = toy_task.demo_splits(out / "data")
    rubric, judge = T.sft(base, paths["sft"], out / "sft", SFT_SEED, T.SFT_LR)
    cache = out / "rubrics.jsonl"
    if not cache.exists():
        sh(["common.py", "cache-rubrics", "--model", base, "--adapter", rubric, "--data", paths["rl"], "--out", cache,
            *T.STAGE_ARGS["MODEL_ARGS"].split(), *T.STAGE_ARGS["CACHE_ARGS"].split()], out / "logs" / "cache.log")
    start = T.evaluate(base, rubric, judge, paths["eval"], out / "eval_sft")
    C.log.info("SFT judge: %s (%.0fs)", T.short(start), time.perf_counter() - t0)
    results: dict[int, dict[int, dict]] = {}
    for seed in a.seeds:
        run = judge_phase(base, judge, paths["rl"], cache, out / f"rl_s{seed}", seed, a.steps, a.every)
        results[seed] = {0: start}
        for step in range(a.every, a.steps + 1, a.every):
            ckpt = run / "checkpoints" / f"step-{step:06d}"
            results[seed][step] = T.evaluate(base, rubric, ckpt, paths["eval"], out / f"eval_s{seed}" / f"step{step}")
            C.log.info("RL seed %d step %d: %s (%.0fs)", seed, step, T.short(results[seed][step]), time.perf_counter() - t0)
    made_by = {"command": "python experiments/toy_judge_curve.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "steps": a.steps, "every": a.every, "seeds": a.seeds, "sft_seed": SFT_SEED,
               "base": str(base.relative_to(ROOT)), "base_digest": content_digest(base / "model.safetensors"),
               "judge_args": JUDGE_ARGS, "sft_lr": T.SFT_LR}
    print(report(out, curve_rows(results), a.seeds, made_by, train_curves(out, a.seeds), a.publish))
    print(f"done in {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    C.run_main(main)
