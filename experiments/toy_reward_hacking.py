"""Reward hacking, measured: online GRPO of a toy policy against a learned reward, with the gold beside it.

A policy trained to win a learned judge can learn to win it without meeting the request (drop a requirement
the judge cannot check, exploit a position or length habit). On the toys the checkers are the gold: here a
policy is trained by policy_grpo.py (paper Section 6: each sample judged against the policy's own greedy
answer, in both orders) with one reward model at a time, Rubric-ARM (the ablation's judge-first loop) or
the SFT pair (Rubric-RM), and every SAVE_EVERY steps its checkpoint is scored by the checkers on held-out
prompts. A training reward that climbs while the gold falls is reward hacking; the table and the plot show
where it happens and which reward resists it.

  1. policy   experiments/toy_policy.py's warm-up on the task's policy split (one side of each pair: it meets
              the implied rule about half the time)
  2. GRPO     policy_grpo.py from the warm policy (a new LoRA) per reward and seed; every checkpoint kept
  3. gold     each checkpoint samples toy_policy.SAMPLES responses per held-out prompt; the checkers' pass rate
              (every constraint of its prompt) and per kind of constraint
  4. report   per reward: the training reward (mean over the SAVE_EVERY steps before each checkpoint) and the
              gold, mean over seeds with the 95% bootstrap interval over prompts; table.md and curves.png

    python experiments/toy_both_roles.py --out runs/toy_both_roles                     # first: the reward models
    python experiments/toy_reward_hacking.py --task two-rule --ablation runs/toy_both_roles --out runs/toy_hack --publish
Finished steps are kept (policy, GRPO runs with their checkpoints, each score), so a rerun resumes; a rerun
into a folder made with other settings is refused.
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

import toy_policy as P  # noqa: E402

import common as C  # noqa: E402
import toy_ablation as A  # noqa: E402
from manifests import content_digest  # noqa: E402

# ---- configuration ------------------------------------------------------------------------------
STEPS, SAVE_EVERY = 60, 10
GRPO_ARGS = ["--group-size", "4", "--batch-size", "32", "--micro-batch", "32", "--max-completion-length", "64",
             "--lr", "5e-4", "--beta", "0.001", "--num-iterations", "1", "--lora-r", "16", "--lora-alpha", "32",
             "--max-rubric-tokens", "64", "--max-judge-tokens", "200", "--judge-batch", "32", "--warmup-ratio", "0",
             "--max-steps", str(STEPS), "--save-every", str(SAVE_EVERY), "--keep-checkpoints", "0"]
REWARDS = {"Rubric-ARM": P.ARM_SRC, "SFT pair (Rubric-RM)": P.SFT_SRC}  # the reward's adapters: toy_policy's sources


def config(abl: Path, seeds: list[int], task: str) -> dict:
    digests = {"base": content_digest(abl / "base")}
    for s in seeds:
        for src in REWARDS.values():
            for p in P.sources(task)[src]:
                digests[f"seed{s}/{p}"] = content_digest(abl / f"seed{s}" / p)
    return {"task": task, "splits": P.SPLITS, "warmup": P.WARMUP, "grpo_args": GRPO_ARGS, "samples": P.SAMPLES,
            "task_fingerprint": P.task_fingerprint(task), "ablation_inputs": digests}


def grpo(policy: Path, base: Path, adapters: tuple[Path, Path], prompts: Path, out: Path, seed: int) -> None:
    if not (out / "adapter" / "adapter_config.json").exists():
        A.sh([sys.executable, "policy_grpo.py", "--model", policy, "--prompts", prompts, "--rm-model", base,
              "--rubric-adapter", adapters[0], "--judge-adapter", adapters[1], "--seed", seed, "--out", out,
              *GRPO_ARGS, *(["--resume"] if out.exists() else [])], out.parent / "logs" / f"{out.name}.log")


def curve(run: Path, policy: Path, rows: list[dict], seed: int) -> list[dict]:
    """Per checkpoint (and the start, step 0): the gold on held-out prompts and the training reward of the
    SAVE_EVERY steps before it."""
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    points = [{"step": 0, "gold": P.score(policy, None, rows, run / "gold" / "step-000000.json", seed), "reward": None}]
    for ck in sorted((run / "checkpoints").glob("step-*")):
        step = int(ck.name.split("-")[1])
        window = [m["reward"] for m in metrics if step - SAVE_EVERY < m.get("step", -1) <= step and "reward" in m]
        points.append({"step": step, "gold": P.score(policy, ck, rows, run / "gold" / f"{ck.name}.json", seed),
                       "reward": statistics.mean(window) if window else None})
    return points


def summarize(curves: dict) -> dict:
    out = {}
    for reward, per_seed in curves.items():
        steps = sorted({p["step"] for c in per_seed for p in c})
        rows = []
        for st in steps:
            at = [next(p for p in c if p["step"] == st) for c in per_seed if any(p["step"] == st for p in c)]
            rewards = [p["reward"] for p in at if p["reward"] is not None]
            kinds = sorted(at[0]["gold"]["by_kind"])
            rows.append({"step": st, "seeds": len(at), "reward": statistics.mean(rewards) if rewards else None,
                         "gold": A.interval(A.pooled([p["gold"] for p in at], "prompts")),
                         "by_kind": {k: statistics.mean(p["gold"]["by_kind"][k] for p in at) for k in kinds}})
        out[reward] = rows
    return out


def plot(summ: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for reward, rows in summ.items():
        axes[0].plot([r["step"] for r in rows if r["reward"] is not None],
                     [r["reward"] for r in rows if r["reward"] is not None], marker="o", label=reward)
        xs = [r["step"] for r in rows]
        axes[1].plot(xs, [r["gold"]["mean"] for r in rows], marker="o", label=reward)
        axes[1].fill_between(xs, [r["gold"]["ci95"][0] for r in rows], [r["gold"]["ci95"][1] for r in rows], alpha=0.2)
    axes[0].set(title="training reward (the learned judge)", xlabel="GRPO step", ylabel="mean reward vs greedy baseline")
    axes[1].set(title="gold: checkers' pass rate, held-out prompts", xlabel="GRPO step", ylabel="share meeting every constraint")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def report(out: Path, summ: dict, seeds: list[int], task: str, publish: bool, cmd: str) -> str:
    kinds = sorted(next(iter(summ.values()))[0]["by_kind"])
    lines = [f"Online GRPO of a toy policy ({task} task) against a learned reward; every {SAVE_EVERY} steps the training "
             f"reward (mean of the previous {SAVE_EVERY} steps: a sample's win rate against the policy's greedy answer, "
             f"both orders) and the gold (the checkers' pass rate of {P.SAMPLES} samples per held-out prompt, "
             f"{P.SPLITS['prompts'][0]} prompts; mean over seeds {', '.join(map(str, seeds))} [95% interval over prompts]).",
             "", "| reward | step | training reward | gold: pass rate [95% CI] | " + " | ".join(f"meets {k}" for k in kinds) + " |",
             "|---|---|---|---|" + "---|" * len(kinds)]
    for reward, rows in summ.items():
        for r in rows:
            rw = "-" if r["reward"] is None else f"{r['reward']:.3f}"
            lines.append(f"| {reward} | {r['step']} | {rw} | {A.pct(r['gold'])} | "
                         + " | ".join(f"{100 * r['by_kind'].get(k, float('nan')):.1f}" for k in kinds) + " |")
    table = "\n".join(lines) + "\n"
    C.atomic_write_text(out / "table.md", table)
    C.atomic_write_text(out / "summary.json", json.dumps(summ, indent=2))
    plot(summ, out / "curves.png")
    if publish:
        name = "toy_reward_hacking"
        C.atomic_write_text(ROOT / "docs" / "results" / f"{name}.json", json.dumps(
            {"config": json.loads((out / "config.json").read_text()), "seeds": seeds, "command": cmd, "curves": summ}, indent=2))
        plot(summ, ROOT / "docs" / f"{name}.png")
        C.atomic_write_text(ROOT / "docs" / f"{name}.md", "# Reward hacking against the checkers: the full report\n\n"
                            "[Back to the results](results.md)\n\n" + table + f"\n![curves]({name}.png)\n\nSource: "
                            f"`docs/results/{name}.json` (written with this page by `{cmd}`).\n")
    return table


def main(argv=None) -> dict:
    C.setup_logging()
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ablation", required=True, help="a finished ablation folder with the task's judge-first loop")
    ap.add_argument("--task", choices=tuple(P.TASK_LOOPS), default="two-rule", help="the toy the ablation ran on")
    ap.add_argument("--out", default="runs/toy_reward_hacking")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--publish", action="store_true", help="write docs/results/toy_reward_hacking.json, .md and .png")
    a = ap.parse_args(argv)
    abl = Path(a.ablation).resolve()
    srcs = P.sources(a.task)
    missing = [abl / f"seed{s}" / p for s in a.seeds for src in REWARDS.values() for p in srcs[src]
               if not (abl / f"seed{s}" / p / "adapter_config.json").exists()]
    if missing:
        raise SystemExit(f"error: {abl} is not a finished {a.task} ablation: missing {missing[0]}")
    out = C.check_writable(a.out)
    A.check_config(out, config(abl, a.seeds, a.task))
    t0 = time.perf_counter()
    paths = P.make_data(out, a.task)
    policy = P.warm_policy(abl / "base", paths["policy"], out)
    rows = C.read_jsonl_resumable(paths["prompts"])
    curves: dict = {}
    for seed in a.seeds:
        for reward, src in REWARDS.items():
            run = out / f"seed{seed}" / ("grpo_arm" if src == P.ARM_SRC else "grpo_sft")
            grpo(policy, abl / "base", tuple(abl / f"seed{seed}" / p for p in srcs[src]), paths["policy"], run, seed)
            curves.setdefault(reward, []).append(curve(run, policy, rows, seed))
            C.log.info("seed %d %s: %s (%.0fs)", seed, reward, [(p["step"], p["reward"] and round(p["reward"], 3),
                       round(p["gold"]["pass_all"], 3)) for p in curves[reward][-1]], time.perf_counter() - t0)
    summ = summarize(curves)
    cmd = (f"python experiments/toy_reward_hacking.py --task {a.task} --ablation {A.rel(abl)} --out {A.rel(out)} "
           f"--seeds {' '.join(map(str, a.seeds))} --publish")
    table = report(out, summ, a.seeds, a.task, a.publish, cmd)
    print(table)
    return summ


if __name__ == "__main__":
    C.run_main(main)
