"""Proof that the method learns, at laptop scale: a verifiable toy task, a small model trained from
scratch, and the paper's training-order ablation run with the real stage scripts.

  1. data      tasks/toy_task.py minimal pairs with code-checkable constraints (default: a required word, and
               lowercase only or a capital first letter, so that neither side of the case edit wins without
               the prompt); labels verified by the checkers; disjoint pretrain / SFT / RL / eval splits
  2. base      a Qwen3 of hidden 128 x 2 layers and a BPE tokenizer sized for the task, trained from
               random weights (all parameters) on the pretrain split's rubric and judge trajectories
  3. SFT       sft_warmup.py (LoRA) of both roles on the SFT split, per seed (the paper's Rubric-RM),
               and a direct judge on the same trajectories without the rubric (--no-rubric; Table 1's
               question: does the rubric help?)
  4. loop      alternate.sh --order judge-first | rubric-first | simultaneous, 2 cycles, per seed (Table 2),
               from the SFT adapters; also without the format reward, and (judge-first-from-base) from
               the base itself: here the base is a judge already, pretrained on trajectories
  5. eval      evaluate.py on the held-out split (generated rubrics, both A/B orders): the base by
               prompting, after SFT, after each cycle: judge accuracy, format rate (mean R_fmt), flip rate
  6. report    table.md: mean ± std over seeds, the pooled accuracy with its 95% bootstrap interval over
               pairs, each cycle's gain over SFT (paired), rubric minus direct judge, the trivial judges
               of the same pairs; summary.json, accuracy.png (--publish copies them into docs/)

    python experiments/toy_ablation.py --out runs/toy_ablation --publish       # 4 schedules x 3 seeds
    python experiments/toy_ablation.py --out runs/toy_quick --seeds 0 --schedules none   # base + SFT only
    python experiments/toy_ablation.py --out runs/toy_rl80 --base data/toy_base --rl-steps 80 --schedules judge-first \
        --votes 1 --publish --report toy_rl80      # the bundled base (no pretraining), 80 GRPO steps a phase
Finished steps are kept (the base, each SFT, each loop, each evaluation), so a rerun resumes; a rerun
into a folder made with other settings (OUT/config.json) is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tasks"), str(ROOT / "experiments")]  # stages, tasks, drivers
os.environ.setdefault("RUBRIC_ARM_NO_PROGRESS", "1")

import torch  # noqa: E402

import baselines  # noqa: E402
import common as C  # noqa: E402
import sft_warmup  # noqa: E402
import toy_task  # noqa: E402
from driver import check_config, interval, pct, pooled, rel, sh, spread  # noqa: E402,F401
from evaluate import pair_scores  # noqa: E402
from manifests import content_digest  # noqa: E402

# ---- configuration: everything the ablation depends on ----------------------------------------
KINDS = ("include", "lowercase", "capital_start")
SPLITS = {"pretrain": (4000, 100), **toy_task.DEMO_SPLITS}  # rows, seed; the default demo runs on the same splits
MODEL = dict(hidden=128, layers=2, heads=4, kv_heads=2, vocab=2048, init_std=0.02)
# decision_weight: the weight of a judge trajectory's deciding tokens in the pretraining loss (1: plain)
PRETRAIN = dict(steps=1500, batch=16, lr=2e-3, warmup=0.05, decision_weight=10.0)
CYCLES = 2
RL_STEPS = 30  # GRPO steps per phase (--rl-steps); each cycle gets half of the RL split (alternate.sh)
STAGE_ARGS = {  # alternate.sh's stage flags; --max-steps comes from --rl-steps
    "MODEL_ARGS": "--lora-r 16 --lora-alpha 32",
    "CACHE_ARGS": "--max-new-tokens 64 --batch-size 32",
    "JUDGE_ARGS": "--group-size 4 --batch-size 16 --micro-batch 16 --max-completion-length 200 --lr 5e-4",
    "RUBRIC_ARGS": "--group-size 4 --batch-size 16 --micro-batch 16 --max-completion-length 64 "
                   "--judge-max-new-tokens 200 --judge-batch 16 --lr 5e-4",
}
NO_FORMAT = "-no-format"  # a schedule name ending so drops R_fmt from the judge's reward (paper Table 2)
# a schedule name ending so starts the loop from the base itself (new, untrained LoRA adapters) instead of
# the SFT adapters: the base here was pretrained on trajectories, so it is a judge already
FROM_BASE = "-from-base"
SFT_ARGS = ["--epochs", "1", "--batch-size", "16", "--micro-batch", "16", "--lora-r", "16", "--lora-alpha", "32",
            "--warmup-ratio", "0"]
SFT_LR = 2e-4  # keeps what the base learned (1e-3, the first recorded ablation's value, cost it accuracy)
EVAL_ARGS = ["--max-rubric-tokens", "64", "--max-judge-tokens", "200", "--batch-size", "32", "--swap"]



def config(model: dict = MODEL) -> dict:
    """Everything a run folder's results depend on: a rerun into it with other values is refused."""
    return {"kinds": KINDS, "splits": SPLITS, "model": model, "pretrain": PRETRAIN, "cycles": CYCLES,
            "stage_args": STAGE_ARGS, "sft_args": SFT_ARGS, "eval_args": EVAL_ARGS,
            "task_fingerprint": toy_task.task_fingerprint(KINDS)}



def make_data(out: Path) -> dict[str, Path]:
    paths = {}
    for name, (n, seed) in SPLITS.items():
        paths[name] = out / "data" / f"{name}.jsonl"
        if not paths[name].exists():
            rows = toy_task.make_split(n, seed, name, KINDS)
            assert all(toy_task.check_label(r) for r in rows)
            C.write_jsonl_atomic(paths[name], rows)
    return paths


def analysis_accuracy(model, tok, rows: list[dict]) -> dict:
    """Teacher-forced check of what the judge must decide, on held-out rows: the share whose deciding
    tokens in Response A's analysis (those that change when A and B trade places, toy_task.decision_spans)
    are all the model's most likely ones, overall and by the kind of constraint that decides the pair.
    Every later deciding token (B's analysis, the counts, the winner) follows from these, so the mean
    over all deciding tokens (near 1 once the layout is learnt) hides whether the judge decides."""
    hits: dict[str, list[float]] = {}
    model.eval()
    for r in rows:
        traj = r["judge_trajectory"]
        end_a = traj.index("**Response B:**")
        spans = [s for s in toy_task.decision_spans(r) if s[1] <= end_a]
        ex = [(C.judge_prompt_ids(tok, r["prompt"], r["rubric"], r["response_a"], r["response_b"])[0],
               C.completion_ids(tok, traj), sft_warmup.decision_weights(tok, traj, 2.0, spans))]
        pids, _, cids, w = sft_warmup.collate(ex, tok.pad_token_id, "cpu")
        ids = torch.cat([pids, cids], 1)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, pids.shape[1] - 1:-1]  # [T, V]
        decide = w[0] > 1
        hit = float(bool((logits.argmax(-1)[decide] == cids[0][decide]).all()))
        for key in ("all", r["decisive"]):
            hits.setdefault(key, []).append(hit)
    model.train()
    return {k: round(statistics.mean(v), 3) for k, v in sorted(hits.items())}


def train_all_weights(model, tok, examples: list[tuple], steps: int, cfg: dict, rng: random.Random, name: str,
                      progress=None, every: int = 250) -> None:
    """Every parameter of `model` trained on (prompt ids, target ids, target weights) examples: the
    weighted mean NLL of the targets, AdamW, cosine schedule with cfg's batch, lr and warmup. Every
    `every` steps the loss is logged, with progress(logp, weights)'s text when given."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"])
    sched = C.make_scheduler(opt, "cosine", steps, cfg["warmup"])
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        pids, pmask, cids, weights = sft_warmup.collate(rng.sample(examples, cfg["batch"]), tok.pad_token_id, "cpu")
        logp = C.token_logprobs(model, pids, pmask, cids)  # [B, T]
        loss = -(logp * weights).sum() / weights.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % every == 0 or step == steps - 1:
            extra = progress(logp.detach(), weights) if progress else ""
            C.log.info("%s step %d/%d loss %.4f%s (%.0fs)", name, step + 1, steps, float(loss.detach()), extra,
                       time.perf_counter() - t0)


def copy_examples(tok, n: int, seed: int) -> list[tuple]:
    """n copy exercises: a user turn "Repeat these words: w1 ... wk." answered with "w1 ... wk.", random
    lists of the task's words. A pretrained language model can copy a token from wherever it stands
    (induction heads); the 1500-step base trained on the task alone does not even copy the requested word
    into its rubric (experiments/toy_copy_check.py), and a required word is a copy from the request to the
    rubric and from the response to the judge."""
    rng, vocab, out = random.Random(seed + 7), toy_task.WORDS + toy_task.FILLER, []
    for _ in range(n):
        ws = [rng.choice(vocab) for _ in range(rng.randint(3, 16))]
        ws[0] = ws[0].capitalize() if rng.random() < 0.5 else ws[0]
        target = C.completion_ids(tok, " ".join(ws) + ".")
        out.append((C.chat_prompt_ids(tok, [{"role": "user", "content": "Repeat these words: " + " ".join(ws) + "."}]),
                    target, [1.0] * len(target)))
    return out


def pretrain_base(out: Path, data: Path, held_out: Path, steps: int, model_shape: dict = MODEL, seed: int = 0,
                  copy_curriculum: bool = False) -> Path:
    """A small model trained from random weights (every parameter) on rubric and judge trajectories
    (and, with copy_curriculum, as many copy exercises as rows: copy_examples); logs the held-out
    accuracy of Response A's analysis (analysis_accuracy) as it goes, kept in base/held_out_analysis.json."""
    final = out / "base"
    if (final / "config.json").exists():
        return final
    check_rows = C.read_jsonl_resumable(held_out)[:100]
    rows = C.read_jsonl_resumable(data)
    corpus = [C.RUBRIC_TEMPLATE, C.JUDGE_TEMPLATE] + [
        f"{r['prompt']}\n{r['rubric']}\n{r['response_a']}\n{r['response_b']}\n{r['judge_trajectory']}" for r in rows[:500]]
    init = toy_task.make_tiny_model(out / "base_init", seed=seed, corpus=corpus, **model_shape)
    from transformers import AutoModelForCausalLM
    torch.manual_seed(seed)
    tok = C.load_tokenizer(str(init))
    model = AutoModelForCausalLM.from_pretrained(str(init))
    # (prompt, target, weights): the judge's decision tokens (toy_task.decision_spans) weigh
    # PRETRAIN["decision_weight"], every other token 1; a rubric target is fixed by its prompt, weight 1
    w = PRETRAIN["decision_weight"]
    examples = []
    for r in rows:
        examples.append((C.judge_prompt_ids(tok, r["prompt"], r["rubric"], r["response_a"], r["response_b"])[0],
                         C.completion_ids(tok, r["judge_trajectory"]),
                         sft_warmup.decision_weights(tok, r["judge_trajectory"], w, toy_task.decision_spans(r))))
        target = C.completion_ids(tok, r["rubric"])
        examples.append((C.chat_prompt_ids(tok, C.rubric_messages(r["prompt"])), target, [1.0] * len(target)))
    if copy_curriculum:
        examples += copy_examples(tok, len(rows), seed)
    check: dict = {}  # the last held-out analysis accuracy, kept beside the base

    def progress(logp: torch.Tensor, weights: torch.Tensor) -> str:
        decide = weights > 1  # the decision tokens' own loss: what the judge must learn, apart from the layout
        check.update(analysis_accuracy(model, tok, check_rows))
        return (f", on decision tokens {float(-logp[decide].mean()) if decide.any() else float('nan'):.3f}; held-out "
                f"pairs whose Response A analysis is right {check}")
    train_all_weights(model, tok, examples, steps, PRETRAIN, random.Random(seed), "pretrain", progress)
    tmp = out / ".tmp-base"
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    C.atomic_write_text(tmp / "held_out_analysis.json", json.dumps({"held_out_rows": len(check_rows), "steps": steps, **check}))
    os.replace(tmp, final)
    return final



def export_base(base: Path, dest: Path, out: Path) -> None:
    """Copy the pretrained base to `dest` (the default demo's data/toy_base) with made_by.json: the
    task version it was trained on (toy_task.demo_splits refuses another), its settings, its check."""
    tmp = dest.parent / f".tmp-{dest.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(base, tmp)
    cfg = json.loads((out / "config.json").read_text())
    C.atomic_write_text(tmp / "made_by.json", json.dumps({
        "made_by": f"python experiments/toy_ablation.py --out {rel(out)} --export-base {rel(dest)}",
        "kinds": list(KINDS), "task_fingerprint": cfg["task_fingerprint"], "config": cfg,
        "weights": content_digest(base / "model.safetensors")}, indent=2))
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    C.log.info("exported the base to %s", dest)


PRETRAINING_KEYS = ("kinds", "splits", "model", "pretrain", "task_fingerprint", "pretrain_steps", "base_seed",
                    "copy_curriculum")  # what a base depends on (a missing base_seed is 0, copy_curriculum off)


def given_base(base: Path, cfg: dict) -> Path:
    """A base exported by --export-base, used instead of pretraining one: its made_by.json must record the
    pretraining settings this run would use (a base of other settings is refused, naming the field)."""
    made = base / "made_by.json"
    if not made.exists():
        raise SystemExit(f"error: {made}: missing; --base takes a folder written by --export-base")
    rec = json.loads(made.read_text()).get("config", {})
    defaults = {"base_seed": 0, "copy_curriculum": False}
    want = json.loads(json.dumps(cfg))
    for key in PRETRAINING_KEYS:
        have, need = rec.get(key, defaults.get(key)), want.get(key, defaults.get(key))
        if have != need:
            raise SystemExit(f"error: {made}: field 'config.{key}' is {json.dumps(have)}, this run pretrains with "
                             f"{json.dumps(need)}: not the base of these settings")
    return base


def sft(base: Path, data: Path, out: Path, seed: int, lr: float) -> tuple[Path, Path]:
    for role in ("rubric", "judge"):
        if not (out / f"sft_{role}" / "adapter").exists():
            sh([sys.executable, "sft_warmup.py", "--role", role, "--model", base, "--data", data, "--seed", seed,
                "--out", out / f"sft_{role}", "--lr", lr, "--resume", *SFT_ARGS], out / "logs" / f"sft_{role}.log")
    return out / "sft_rubric" / "adapter", out / "sft_judge" / "adapter"


def evaluate(base: Path, rubric: Path | None, judge: Path, data: Path, out: Path, direct: bool = False,
             votes: int = 1, extra: tuple = (), eval_args: list | None = None) -> dict:
    """evaluate.py of one judge on the held-out pairs (extra: more flags, e.g. --reference-rubrics FILE;
    eval_args: the decoding flags, default EVAL_ARGS), read back as accuracies, each pair's score and the
    accuracy by the constraint that decides."""
    if not (out / "results.json").exists():
        roles = ["--no-rubric"] if direct else ["--rubric-adapter", rubric] if rubric else []
        roles += ["--judge-adapter", judge] if judge else []  # neither: the base by prompting alone
        sh([sys.executable, "evaluate.py", "--model", base, *roles, "--votes", votes, *extra,
            "--benchmark", "pairwise", "--data", data, "--out", out, *(eval_args or EVAL_ARGS)],
           out.parent / "logs" / f"{out.name}.log")
    s = json.loads((out / "results.json").read_text())["summary"]
    # each pair judged in both orders: "accuracy" with the chosen response first, "swapped" second;
    # "pairs": each pair's score averaged over its two orders (the unit of the bootstrap intervals)
    by_pair = pair_scores(out)
    kind = {r["id"]: r["decisive"] for r in C.read_jsonl_resumable(data)}
    by_kind: dict[str, list[float]] = {}
    for unit, score in by_pair.items():
        by_kind.setdefault(kind[unit], []).append(score)
    return {"accuracy": s.get("accuracy_fixed1", s["accuracy"]), "accuracy_swapped": s.get("accuracy_fixed2", float("nan")),
            "both": (s["accuracy_fixed1"] + s["accuracy_fixed2"]) / 2 if "accuracy_fixed1" in s else s["accuracy"],
            "mixed": s["accuracy"], "format": s["format_rate"],
            # no pair with both orders parsed: no flip rate (evaluate.py writes None)
            "flip": float("nan") if s.get("flip_rate") is None else s["flip_rate"],
            "pairs": [v for _, v in sorted(by_pair.items())],
            "by_kind": {k: statistics.mean(v) for k, v in sorted(by_kind.items())}}


def short(r: dict) -> dict:
    return {k: round(v, 3) for k, v in r.items() if k not in ("pairs", "by_kind")}


def untrained_adapters(base: Path, out: Path, seed: int) -> tuple[Path, Path]:
    """A new LoRA adapter of each role, saved untrained (its B matrices are zero: the base itself), for
    the loops that start from the base."""
    paths = out / "untrained_rubric", out / "untrained_judge"
    for k, path in enumerate(paths):
        if not (path / "adapter_config.json").exists():
            C.new_adapter(str(base), path, seed * 2 + k, r=16, alpha=32)  # alternate.sh --no-sft: the same
    return paths


def direct_judge(base: Path, data: Path, out: Path, seed: int, lr: float) -> Path:
    """The paper's Table 1 question, does the rubric help: a judge SFT'd on the same trajectories with
    the rubric left out of its prompt (sft_warmup.py --no-rubric), read with evaluate.py --no-rubric."""
    if not (out / "sft_direct" / "adapter").exists():
        sh([sys.executable, "sft_warmup.py", "--role", "judge", "--no-rubric", "--model", base, "--data", data,
            "--seed", seed, "--out", out / "sft_direct", "--lr", lr, "--resume", *SFT_ARGS], out / "logs" / "sft_direct.log")
    return out / "sft_direct" / "adapter"


def run_schedule(base: Path, rl: Path, init: tuple[Path, Path], out: Path, schedule: str, seed: int,
                 steps: int) -> None:
    """alternate.sh from the `init` adapters; `schedule` is an order, optionally ending in NO_FORMAT
    and/or FROM_BASE. (alternate.sh itself refuses to resume a folder made with other stage flags.)"""
    order = schedule.removesuffix(FROM_BASE).removesuffix(NO_FORMAT)
    limit = f" --max-steps {steps} --save-every {max(1, steps // 3)}"
    env = {**STAGE_ARGS, "JUDGE_ARGS": STAGE_ARGS["JUDGE_ARGS"] + limit
           + (" --no-format-reward" if schedule.endswith(NO_FORMAT) else ""),
           "RUBRIC_ARGS": STAGE_ARGS["RUBRIC_ARGS"] + limit, "RUBRIC_ARM_PYTHON": sys.executable}
    sh(["bash", "alternate.sh", "--model", base, "--data", rl, "--rubric-init", init[0], "--judge-init", init[1],
        "--cycles", CYCLES, "--order", order, "--seed", seed, "--out", out], out.parent / "logs" / f"{out.name}.log",
       env=env)


SFT_ROW, DIRECT_ROW = "SFT only (Rubric-RM)", "direct judge, SFT on the same data"
BASE_ROW, BASE_STAGE = "base (rubric + judge by prompting)", "before SFT"  # one model: no seeds






def summarize(results: dict, stages: list[str], trivial: dict) -> dict:
    """The report's numbers (fractions): per row the spread over seeds and the pooled 95% interval
    (bootstrap over pairs); per schedule and cycle the gain over the SFT judge and over the base, paired
    by pair; the rubric judge against the direct judge after SFT; the trivial judges of the same pairs."""
    rows, gains, gains_base = [], [], []
    sft = results.get(SFT_ROW, {}).get("after SFT", [])
    base = results.get(BASE_ROW, {}).get(BASE_STAGE)
    for name, by_stage in results.items():
        for stage in stages:
            rs = by_stage.get(stage, [])
            if not rs:
                continue
            kinds = sorted(rs[0].get("by_kind", {}))
            rows.append({"judge": name, "stage": stage, "seeds": len(rs), "accuracy": spread([r["both"] for r in rs]),
                         "by_kind": {k: statistics.mean(r["by_kind"][k] for r in rs) for k in kinds},
                         "pooled": interval(pooled(rs)), "format": spread([r["format"] for r in rs]),
                         "flip": spread([r["flip"] for r in rs]),
                         "position": {k: statistics.mean(r[f] for r in rs) for k, f in
                                      (("chosen first", "accuracy"), ("chosen second", "accuracy_swapped"),
                                       ("mixed", "mixed")) if all(f in r for r in rs)}})
            pos = rows[-1]["position"]
            rows[-1]["position_variation"] = max(pos.values()) - min(pos.values()) if pos else None
            if name not in (SFT_ROW, DIRECT_ROW, BASE_ROW) and len(sft) >= len(rs):
                d = [x - y for x, y in zip(pooled(rs), pooled(sft[:len(rs)]))]
                gains.append({"judge": name, "stage": stage, "gain_over_sft": interval(d)})
            if base and name != BASE_ROW:  # the pretrained base is one model: every seed's judge against it
                gains_base.append({"judge": name, "stage": stage,
                                   "gain_over_base": interval([x - y for x, y in zip(pooled(rs), pooled(base))])})
    direct = results.get(DIRECT_ROW, {}).get("after SFT")
    vs_direct = None
    if direct and len(sft) >= len(direct):
        vs_direct = interval([x - y for x, y in zip(pooled(sft[:len(direct)]), pooled(direct))])
    # Table 2: the schedules against each other after the last cycle, paired by pair
    last = stages[-1]
    loops = [n for n, by in results.items() if n not in (SFT_ROW, DIRECT_ROW, BASE_ROW) and "voting" not in n and by.get(last)]
    schedules = {f"{x} minus {y}, {last}": interval([p - q for p, q in zip(pooled(results[x][last]), pooled(results[y][last]))])
                 for i, x in enumerate(loops) for y in loops[i + 1:] if len(results[x][last]) == len(results[y][last])}
    return {"rows": rows, "gains": gains, "gains_over_base": gains_base, "rubric_minus_direct_after_sft": vs_direct,
            "schedules": schedules,
            "trivial": trivial}


def report(out: Path, results: dict, seeds: list[int], trivial: dict, loop: dict, publish: bool = False,
           name: str = "toy_ablation") -> str:
    stages = [BASE_STAGE, "after SFT"] + [f"after cycle {k}" for k in range(1, CYCLES + 1)]
    summ = summarize(results, stages, trivial)
    n_eval = SPLITS["eval"][0]
    lines = [f"Held-out judge accuracy (both A/B orders of {n_eval} pairs), format rate (mean R_fmt) and A/B flip rate: "
             f"%, mean ± std over seeds {', '.join(map(str, seeds))}, and the pooled accuracy (each pair's score "
             "averaged over the seeds) with its 95% bootstrap interval over pairs. Rubrics come from the generator "
             f"being evaluated; the direct judge has none. Loops: alternate.sh, {CYCLES} cycles of {loop['rl_steps']} "
             "GRPO steps per phase, from the SFT adapters of the same seed (a loop named "
             f"'...{FROM_BASE}': from the base, with new untrained adapters).", "",
             "| judge | stage | seeds | accuracy | pooled [95% CI] | format rate | flip rate |", "|---|---|---|---|---|---|---|"]
    def one(r: dict, k: str) -> str:  # the base is one model: no spread over seeds
        return pct(r[k]) if r["seeds"] > 1 else f"{100 * r[k]['mean']:.1f}"
    lines += [f"| {r['judge']} | {r['stage']} | {r['seeds']} | {one(r, 'accuracy')} | {pct(r['pooled'])} | "
              f"{one(r, 'format')} | {one(r, 'flip')} |" for r in summ["rows"]]
    lines += [f"| baseline: {name} | - | - | - | {pct(v)} | - | - |" for name, v in trivial.items()]
    kinds = sorted({k for r in summ["rows"] for k in r["by_kind"]})
    if kinds:  # where the accuracy comes from: the constraint that tells the pair apart
        lines += ["", "Accuracy by the constraint that decides the pair (%, both orders, mean over seeds):", "",
                  "| judge | stage | " + " | ".join(kinds) + " |", "|---|---|" + "---|" * len(kinds)]
        lines += [f"| {r['judge']} | {r['stage']} | " + " | ".join(f"{100 * r['by_kind'].get(k, float('nan')):.1f}"
                                                              for k in kinds) + " |" for r in summ["rows"]]
    if all(len(r["position"]) == 3 for r in summ["rows"]):  # the paper's Table 13: position bias
        lines += ["", "Position bias (paper Table 13: accuracy %, mean over seeds, with the chosen response shown "
                  "first, second, in a mixed order; variation = max - min):", "",
                  "| judge | stage | chosen first | chosen second | mixed order | variation |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['judge']} | {r['stage']} | " + " | ".join(f"{100 * v:.1f}" for v in r["position"].values())
                  + f" | {100 * r['position_variation']:.1f} |" for r in summ["rows"]]
    if summ["gains"]:
        lines += ["", "Gain over the SFT judge of the same seeds (points, paired by pair, 95% bootstrap interval):", "",
                  "| judge | stage | gain over SFT |", "|---|---|---|"]
        lines += [f"| {g['judge']} | {g['stage']} | {pct(g['gain_over_sft'])} |" for g in summ["gains"]]
    if summ["gains_over_base"]:
        lines += ["", "Against the pretrained base (points, paired by pair, 95% bootstrap interval; the base is one "
                  "model, read by prompting with the same rubric and judge prompts):", "",
                  "| judge | stage | minus the base |", "|---|---|---|"]
        lines += [f"| {g['judge']} | {g['stage']} | {pct(g['gain_over_base'])} |" for g in summ["gains_over_base"]]
    for name, d in summ["schedules"].items():
        lines += ["", f"Schedules compared (points, paired, 95% bootstrap interval): {name}: {pct(d)}"]
    if summ["rubric_minus_direct_after_sft"]:
        lines += ["", f"Rubric judge minus direct judge after SFT (points, paired): {pct(summ['rubric_minus_direct_after_sft'])}"]
    table = "\n".join(lines) + "\n"
    C.atomic_write_text(out / "table.md", table)
    C.atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    C.atomic_write_text(out / "summary.json", json.dumps(summ, indent=2))
    plot(out / "accuracy.png", results, stages)
    if publish:  # the small files the docs cite
        C.atomic_write_text(ROOT / "docs" / "results" / f"{name}.json",
                            json.dumps({"config": json.loads((out / "config.json").read_text()), "seeds": seeds,
                                        "loop": loop, **summ}, indent=2))
        if (out / "accuracy.png").exists() and len(stages) > 1 and any(len(by) > 1 for by in results.values()):
            (ROOT / "docs" / f"{name}.png").write_bytes((out / "accuracy.png").read_bytes())  # a curve, not 2 dots
        # the whole report as a page, each table followed by its source (tests/test_docs.py checks them)
        source = f"Source: `docs/results/{name}.json` (written with this page by `experiments/toy_ablation.py --publish`)."
        blocks = [b + ("\n\n" + source if b.startswith("|") else "") for b in table.strip().split("\n\n")]
        title = "# Toy ablation: the full report" + ("" if name == "toy_ablation" else f" ({name})")
        figure = f"\n\n![held-out accuracy by stage]({name}.png)\n" if (ROOT / "docs" / f"{name}.png").exists() else "\n"
        C.atomic_write_text(ROOT / "docs" / f"{name}.md", title + "\n\n[Back to the results]"
                            "(results.md#claim-rubric-arm-beats-its-sft-start-table-1)\n\n" + "\n\n".join(blocks)
                            + figure)
    return table


def plot(path: Path, results: dict, stages: list[str]) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        C.log.warning("matplotlib not installed (bench/requirements-bench.txt): no plot")
        return
    fig, ax = plt.subplots(figsize=(9, 4.5))
    sft = results.get(SFT_ROW, {}).get("after SFT")
    for name, by_stage in results.items():
        start = results.get(BASE_ROW, {}).get(BASE_STAGE) if FROM_BASE in name else sft
        if name not in (SFT_ROW, DIRECT_ROW, BASE_ROW) and "voting" not in name and start:
            # a loop starts from the SFT adapters, or (FROM_BASE) from the base
            by_stage = {BASE_STAGE if FROM_BASE in name else "after SFT": start, **by_stage}
        xs = [k for k, st in enumerate(stages) if by_stage.get(st)]
        ms = [100 * statistics.mean(r["both"] for r in by_stage[stages[k]]) for k in xs]
        sd = [100 * (statistics.stdev([r["both"] for r in by_stage[stages[k]]]) if len(by_stage[stages[k]]) > 1
                     else 0) for k in xs]
        ax.errorbar(xs, ms, yerr=sd, marker="o" if len(xs) > 1 else "s", capsize=3, label=name)
    ax.axhline(50, color="grey", ls="--", lw=1, label="chance")
    ax.set_xticks(range(len(stages)), stages)
    ax.set_ylabel("held-out judge accuracy (%), both orders")
    ax.set_title("Toy minimal pairs: SFT, direct judge, training orders")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the curves, not over them
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def trivial_judges(paths: dict[str, Path]) -> dict:
    """The trivial judges of the held-out pairs, the classifier fit on the SFT split (tasks/baselines.py)."""
    rep = baselines.evaluate(paths["sft"], [paths["eval"]])["eval"][str(paths["eval"])]
    return {name: {"mean": r["accuracy"], "ci95": r["ci95"]} for name, r in rep.items()
            if name in ("prompt-blind classifier", "longer wins", "always A")}


def main(argv=None) -> dict:
    C.setup_logging()
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/toy_ablation")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--schedules", nargs="+",
                    default=["judge-first", "rubric-first", "judge-first" + NO_FORMAT, "judge-first" + FROM_BASE],
                    help="alternate.sh orders (judge-first, rubric-first, simultaneous), each optionally ending in "
                         f"'{NO_FORMAT}' (the judge's reward without R_fmt) and/or '{FROM_BASE}' (the loop starts "
                         "from the base, not from the SFT adapters), or 'none' for base + SFT only")
    ap.add_argument("--rl-steps", type=int, default=RL_STEPS, help="GRPO steps of each judge and rubric phase")
    ap.add_argument("--votes", type=int, default=5,
                    help="also read each schedule's last judge by voting@k (paper Table 1); 1: not")
    ap.add_argument("--pretrain-steps", type=int, default=PRETRAIN["steps"])
    ap.add_argument("--layers", type=int, default=MODEL["layers"],
                    help="the base's depth (a required word is at chance at 2 layers: does depth reach it?)")
    ap.add_argument("--base-seed", type=int, default=0,
                    help="seed of the base's pretraining (its init and batch order): the base row is one model")
    ap.add_argument("--copy-curriculum", action="store_true",
                    help="pretrain the base on copy exercises too (one per pretraining row): a base that does not "
                         "copy cannot check a required word (experiments/toy_copy_check.py)")
    ap.add_argument("--sft-lr", type=float, default=SFT_LR, help="LoRA SFT learning rate of both roles")
    ap.add_argument("--base", default=None, metavar="DIR",
                    help="use this base (exported by --export-base, e.g. data/toy_base) instead of pretraining one; "
                         "refused unless its made_by.json records this run's pretraining settings")
    ap.add_argument("--export-base", default=None, metavar="DIR",
                    help="also copy the pretrained base to DIR with made_by.json (data/toy_base: the default demo's)")
    ap.add_argument("--report", default="toy_ablation", metavar="NAME",
                    help="with --publish: write docs/results/NAME.json, docs/NAME.md (and .png); a side run "
                         "(another --layers or --base-seed) keeps the main report")
    ap.add_argument("--publish", action="store_true",
                    help="also write docs/results/toy_ablation.json and docs/toy_ablation.png (the docs cite them)")
    a = ap.parse_args(argv)
    out = C.check_writable(a.out)
    model_shape = {**MODEL, "layers": a.layers}
    cfg = {**config(model_shape), "pretrain_steps": a.pretrain_steps, "sft_lr": a.sft_lr,
           **({"base_seed": a.base_seed} if a.base_seed else {}),  # runs made before the flag: seed 0
           **({"copy_curriculum": True} if a.copy_curriculum else {})}
    given = given_base(Path(a.base).resolve(), cfg) if a.base else None
    check_config(out, {**cfg, **({"base": rel(given), "base_weights": content_digest(given / "model.safetensors")}
                                 if given else {})})
    t0 = time.perf_counter()
    paths = make_data(out)
    base = given or pretrain_base(out, paths["pretrain"], paths["sft"], a.pretrain_steps, model_shape, a.base_seed,
                                  a.copy_curriculum)
    C.log.info("base ready (%.0fs)", time.perf_counter() - t0)
    if a.export_base:
        export_base(base, Path(a.export_base).resolve(), out)
    schedules = [] if a.schedules == ["none"] else a.schedules
    r_base = evaluate(base, None, None, paths["eval"], out / "eval_base")
    C.log.info("base by prompting: %s (%.0fs)", short(r_base), time.perf_counter() - t0)
    results: dict = {BASE_ROW: {BASE_STAGE: [r_base]}, SFT_ROW: {}, DIRECT_ROW: {}, **{s: {} for s in schedules}}
    inits = {}
    for seed in a.seeds:  # every seed's SFT first, then each schedule over the seeds: the first rows fill first
        sdir = out / f"seed{seed}"
        inits[seed] = init = sft(base, paths["sft"], sdir, seed, a.sft_lr)
        r_sft = evaluate(base, init[0], init[1], paths["eval"], sdir / "eval_sft")
        results[SFT_ROW].setdefault("after SFT", []).append(r_sft)
        C.log.info("seed %d after SFT: %s (%.0fs)", seed, short(r_sft), time.perf_counter() - t0)
        r_direct = evaluate(base, None, direct_judge(base, paths["sft"], sdir, seed, a.sft_lr), paths["eval"],
                            sdir / "eval_direct", direct=True)
        results[DIRECT_ROW].setdefault("after SFT", []).append(r_direct)
        C.log.info("seed %d direct judge: %s (%.0fs)", seed, short(r_direct), time.perf_counter() - t0)
    for schedule in schedules:
        name = f"{schedule}-{a.rl_steps}steps"  # the folder of this loop and of its evaluations
        for seed in a.seeds:
            sdir = out / f"seed{seed}"
            run = sdir / name
            init = untrained_adapters(base, sdir, seed) if schedule.endswith(FROM_BASE) else inits[seed]
            run_schedule(base, paths["rl"], init, run, schedule, seed, a.rl_steps)
            for k in range(1, CYCLES + 1):
                adapters = run / f"c{k}_rubric" / "adapter", run / f"c{k}_judge" / "adapter"
                r = evaluate(base, *adapters, paths["eval"], sdir / f"eval_{name}_c{k}")
                results[schedule].setdefault(f"after cycle {k}", []).append(r)
                C.log.info("seed %d %s after cycle %d: %s (%.0fs)", seed, schedule, k, short(r), time.perf_counter() - t0)
                if k == CYCLES and a.votes > 1:
                    r = evaluate(base, *adapters, paths["eval"], sdir / f"eval_{name}_c{k}_vote{a.votes}", votes=a.votes)
                    results.setdefault(f"{schedule}, voting@{a.votes}", {}).setdefault(f"after cycle {k}", []).append(r)
                    C.log.info("seed %d %s voting@%d: %s (%.0fs)", seed, schedule, a.votes, short(r),
                               time.perf_counter() - t0)
    check = base / "held_out_analysis.json"
    loop = {"rl_steps": a.rl_steps, "votes": a.votes, "schedules": schedules,
            "base_held_out_analysis": json.loads(check.read_text()) if check.exists() else None}
    table = report(out, results, a.seeds, trivial_judges(paths), loop, a.publish, a.report)
    print(table)
    print(f"toy ablation done in {time.perf_counter() - t0:.0f}s; {out / 'table.md'}, {out / 'accuracy.png'}")
    return results


if __name__ == "__main__":
    C.run_main(main)
