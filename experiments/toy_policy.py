"""The paper's Table 3 at laptop scale: does a better reward model make a better policy? A policy is
trained by DPO on the same pairs labelled three ways, by the SFT-only judge (Rubric-RM), by Rubric-ARM
after its alternating cycles, and by the task's own checkers (the ceiling), then scored by the checkers.

  1. policy    the toy ablation's base, every parameter fine-tuned to answer the task's prompts: each
               training prompt gets one side of its pair, the winner or the loser at random, so the
               policy meets the deciding constraint about half the time and can only learn the rest
               from the preferences
  2. pairs     DPO_PAIRS minimal pairs of a split of their own, offered to every labeller alike
               (policy_dpo.py --candidates): a reward model judges each pair in both A/B orders and only
               order-consistent pairs are kept (paper Eq. 13); the checkers label every pair
               (policy_dpo.py --preferences)
  3. DPO       policy_dpo.py, one round from the same policy, per label source and seed; a seed's
               labellers are that seed's SFT adapters and its judge-first loop's last adapters
  4. score     the policy samples SAMPLES responses per held-out prompt at temperature 1; the checkers
               give the share meeting every constraint of its prompt (and each kind of constraint)
  5. report    mean ± std over seeds, pooled 95% bootstrap intervals over prompts, paired differences
               (Rubric-ARM minus SFT-only, checkers minus Rubric-ARM), each labeller's agreement with the
               checkers on the pairs it kept; --publish writes docs/results/toy_policy.json, docs/toy_policy.md

    python experiments/toy_ablation.py --out runs/toy_gate ...            # first: the base and the judges
    python experiments/toy_policy.py --ablation runs/toy_gate --out runs/toy_policy --publish
    python experiments/toy_policy.py --task two-rule --ablation runs/toy_both_roles --out runs/toy_policy_2r --publish

Finished steps are kept (the policy, each DPO run, each score), so a rerun resumes; a rerun into a
folder made with other settings, or from an ablation whose base or adapters changed, is refused.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tasks"), str(ROOT / "experiments")]  # stages, tasks, drivers

import torch  # noqa: E402

import common as C  # noqa: E402
import policy_dpo  # noqa: E402
import toy_ablation as A  # noqa: E402
import toy_task  # noqa: E402
from manifests import content_digest  # noqa: E402

# ---- configuration: everything the table depends on --------------------------------------------
SPLITS = {"policy": (2000, 600), "dpo": (768, 700), "prompts": (200, 800)}  # rows, seed (disjoint from the ablation's)
WARMUP = dict(steps=600, batch=32, lr=1e-3, warmup=0.05)  # full fine-tune of the base into a policy
DPO_ARGS = ["--beta", "0.1", "--lr", "5e-4", "--batch-size", "16", "--micro-batch", "16", "--epochs", "2",
            "--sft-weight", "0.2", "--lora-r", "16", "--lora-alpha", "32", "--warmup-ratio", "0.1",
            "--max-new-tokens", "64", "--max-rubric-tokens", "64", "--max-judge-tokens", "200",
            "--gen-batch", "32", "--save-every", "0"]
SAMPLES, MAX_NEW_TOKENS = 4, 64
LOOP = "judge-first-30steps"  # the ablation's loop whose last adapters label as Rubric-ARM
SOURCES = {  # row name -> the ablation's adapters (rubric, judge) under seed{S}/, or None: the checkers
    "before DPO": None,
    "DPO on SFT-only labels (Rubric-RM)": ("sft_rubric/adapter", "sft_judge/adapter"),
    "DPO on Rubric-ARM labels": (f"{LOOP}/c2_rubric/adapter", f"{LOOP}/c2_judge/adapter"),
    "DPO on the checkers' labels (ceiling)": None,
}
BEFORE, SFT_SRC, ARM_SRC, CHECK_SRC = SOURCES
# --task: which toy the ablation ran on, and its loop whose last adapters label as Rubric-ARM: the folders of
# experiments/toy_ablation.py (explicit), toy_rubric_phase.py (implicit: 60-step phases), toy_both_roles.py (two-rule)
TASK_LOOPS = {"explicit": LOOP, "implicit": "judge-first-60steps", "two-rule": "judge-first"}


def sources(task: str) -> dict:
    loop = TASK_LOOPS[task]
    return {**SOURCES, ARM_SRC: (f"{loop}/c2_rubric/adapter", f"{loop}/c2_judge/adapter")}


def task_rows(task: str, n: int, seed: int, prefix: str, held_out: bool) -> list[dict]:
    """Rows of the task. On the implied-rule toys every pair is decided by the rule its request implies (the
    RL / held-out kind of row) and its constraints list that rule, so the checkers score it; the held-out
    prompts come from the bucket no split of the ablation ever trained on."""
    if task == "explicit":
        return toy_task.make_split(n, seed, prefix, A.KINDS)
    make = toy_task.make_implicit_split if task == "implicit" else toy_task.make_two_rule_split
    return make(n, seed, prefix, False, held_out)


def task_fingerprint(task: str) -> str:
    return {"explicit": lambda: toy_task.task_fingerprint(A.KINDS), "implicit": toy_task.implicit_fingerprint,
            "two-rule": toy_task.two_rule_fingerprint}[task]()


def slug(source: str) -> str:
    return {BEFORE: "before", SFT_SRC: "sft", ARM_SRC: "arm", CHECK_SRC: "checkers"}[source]


def make_data(out: Path, task: str = "explicit") -> dict[str, Path]:
    """The three splits, and the DPO pairs as candidates (for a reward model) and as checker-labelled
    preferences; every label verified by the checkers."""
    paths = {name: out / "data" / f"{name}.jsonl" for name in SPLITS}
    for name, (n, seed) in SPLITS.items():
        if not paths[name].exists():
            rows = task_rows(task, n, seed, f"policy-{name}", held_out=name == "prompts")
            assert all(toy_task.check_label(r) for r in rows)
            C.write_jsonl_atomic(paths[name], rows)
    pairs = C.read_jsonl_resumable(paths["dpo"])
    paths["candidates"] = out / "data" / "candidates.jsonl"
    paths["checked"] = out / "data" / "checked_preferences.jsonl"
    if not paths["checked"].exists():
        C.write_jsonl_atomic(paths["candidates"], [{"prompt": r["prompt"], "responses": [r["response_a"], r["response_b"]]}
                                                   for r in pairs])
        C.write_jsonl_atomic(paths["checked"], [{"id": r["id"], "prompt": r["prompt"], **winner_loser(r)} for r in pairs])
    return paths


def winner_loser(row: dict) -> dict:
    a, b = row["response_a"], row["response_b"]
    return {"chosen": a, "rejected": b} if row["winner"] == "A" else {"chosen": b, "rejected": a}


def warm_policy(base: Path, data: Path, out: Path, seed: int = 0) -> Path:
    """The base, every parameter trained on (prompt -> one side of its pair, chosen at random)."""
    final = out / "policy"
    if (final / "config.json").exists():
        return final
    from transformers import AutoModelForCausalLM
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = C.load_tokenizer(str(base))
    model = AutoModelForCausalLM.from_pretrained(str(base))
    examples = []
    for r in C.read_jsonl_resumable(data):
        target = C.completion_ids(tok, rng.choice([r["response_a"], r["response_b"]]))
        examples.append((policy_dpo.policy_prompt_ids(tok, r["prompt"]), target, [1.0] * len(target)))
    A.train_all_weights(model, tok, examples, WARMUP["steps"], WARMUP, rng, "policy warm-up", every=100)
    tmp = out / ".tmp-policy"
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    tmp.replace(final)
    return final


def dpo(policy: Path, base: Path, source: str, adapters: tuple[Path, Path] | None, paths: dict, out: Path,
        seed: int) -> Path:
    """One policy_dpo.py round from the warmed-up policy (a new LoRA) on the DPO pairs."""
    if not (out / "final_adapter.txt").exists():
        labels = ["--preferences", paths["checked"]] if adapters is None else [
            "--candidates", paths["candidates"], "--rm-model", base, "--rubric-adapter", adapters[0],
            "--judge-adapter", adapters[1]]
        # (--prompts: what later rounds would sample from; a one-round run from given pairs reads none)
        A.sh([sys.executable, "policy_dpo.py", "--model", policy, "--prompts", paths["prompts"], *labels,
              "--seed", seed, "--out", out, *DPO_ARGS, *(["--resume"] if out.exists() else [])],
             out.parent / "logs" / f"dpo_{slug(source)}.log")
    return out / "round1" / "adapter"


def score(policy: Path, adapter: Path | None, rows: list[dict], out: Path, seed: int) -> dict:
    """SAMPLES responses per prompt at temperature 1, checked: per prompt the share meeting every
    constraint; per kind of constraint the share meeting it. Reused only for the same policy and adapter."""
    made_from = {"policy": content_digest(policy), "adapter": content_digest(adapter) if adapter else None,
                 "seed": seed, "prompts": len(rows)}
    if out.exists():
        old = json.loads(out.read_text())
        if old.get("made_from") == made_from:
            return old
        C.log.warning("%s was made from another policy or adapter: scoring again", out)
    C.seed_everything(seed)
    tok = C.load_tokenizer(str(policy))
    model = C.load_base_model(str(policy))
    if adapter:
        model = C.attach_lora(model, str(adapter), trainable=False)
    model.eval()
    texts = C.generate_batched(model, tok, [policy_dpo.policy_prompt_ids(tok, r["prompt"]) for r in rows], 64,
                               n=SAMPLES, max_new_tokens=MAX_NEW_TOKENS, temperature=1.0)
    per_prompt, by_kind = [], {}
    for i, r in enumerate(rows):
        cs = [toy_task.Constraint(k, v) for k, v in r["constraints"]]
        met = [toy_task.satisfied(cs, t) for t in texts[i * SAMPLES:(i + 1) * SAMPLES]]
        per_prompt.append(statistics.mean(float(all(m)) for m in met))
        for j, c in enumerate(cs):
            by_kind.setdefault(c.kind, []).extend(float(m[j]) for m in met)
    res = {"prompts": per_prompt, "pass_all": statistics.mean(per_prompt),
           "by_kind": {k: statistics.mean(v) for k, v in sorted(by_kind.items())},
           "examples": texts[:2 * SAMPLES], "made_from": made_from}
    C.atomic_write_text(out, json.dumps(res, indent=1))
    return res


def label_quality(run: Path, checked: Path) -> dict:
    """How many pairs a labeller kept and how many of those it labelled as the checkers do."""
    truth = {(r["prompt"], r["chosen"]) for r in C.read_jsonl_resumable(checked)}
    total = len(C.read_jsonl_resumable(checked))
    kept = C.read_jsonl_resumable(run / "round1" / "prefs.jsonl")
    right = sum((r["prompt"], r["chosen"]) in truth for r in kept)
    return {"pairs": total, "kept": len(kept), "kept_share": len(kept) / total,
            "agree": right / len(kept) if kept else float("nan"), "right_pairs": right / total}


def config(abl: Path, seeds: list[int], task: str = "explicit") -> dict:
    """What the results depend on: these settings, and the digests of the ablation's base and of each
    labeller's adapters (a changed ablation is refused, not mixed in)."""
    digests = {"base": content_digest(abl / "base")}
    for s in seeds:
        for rel in sources(task).values():
            if rel:
                for p in rel:
                    digests[f"seed{s}/{p}"] = content_digest(abl / f"seed{s}" / p)
    return {"splits": SPLITS, "kinds": A.KINDS, "warmup": WARMUP, "dpo_args": DPO_ARGS, "samples": SAMPLES,
            "max_new_tokens": MAX_NEW_TOKENS, "task_fingerprint": task_fingerprint(task),
            "ablation_inputs": digests, **({"task": task} if task != "explicit" else {})}


def summarize(results: dict, quality: dict, overlap: float) -> dict:
    rows = []
    for source, per_seed in results.items():
        kinds = sorted(per_seed[0]["by_kind"])
        rows.append({"source": source, "seeds": A.spread([r["pass_all"] for r in per_seed]),
                     "pooled": A.interval(A.pooled(per_seed, "prompts")),
                     "by_kind": {k: statistics.mean(r["by_kind"][k] for r in per_seed) for k in kinds},
                     "labels": quality.get(source)})
    diffs = []
    for a, b in ((ARM_SRC, SFT_SRC), (CHECK_SRC, ARM_SRC), (SFT_SRC, BEFORE), (ARM_SRC, BEFORE)):
        if a in results and b in results:
            d = [x - y for x, y in zip(A.pooled(results[a], "prompts"), A.pooled(results[b], "prompts"))]
            diffs.append({"a": a, "b": b, "diff": A.interval(d)})
    return {"rows": rows, "differences": diffs, "eval_prompts_seen_in_training": overlap}


def report(out: Path, summary: dict, seeds: list[int], publish: bool) -> str:
    task = summary.get("task", "explicit")
    name = "toy_policy" + ("" if task == "explicit" else "_" + task.replace("-", "_"))  # the published files
    what = {"explicit": "the toy task", "implicit": "the implicit toy task", "two-rule": "the two-rule toy task"}[task]
    lines = [f"# Table 3 on {what}: DPO of a policy on each reward model's labels", "",
             f"Share of sampled responses ({SAMPLES} per prompt, temperature 1) meeting every constraint of their "
             f"prompt, over {len(seeds)} seeds ({', '.join(map(str, seeds))}) x "
             f"{SPLITS['prompts'][0]} held-out prompts; labels: share of the {SPLITS['dpo'][0]} DPO pairs the "
             "labeller kept (order-consistent) and, of those, the share it labelled as the checkers do.", "",
             "| policy | pass rate (mean ± std) | pooled [95% CI] | pairs kept (%) | kept pairs labelled as the checkers do (%) | "
             + " | ".join(f"meets {k}" for k in summary["rows"][0]["by_kind"]) + " |",
             "|---|---|---|---|---|" + "---|" * len(summary["rows"][0]["by_kind"])]
    for r in summary["rows"]:
        q = r["labels"]
        lab = f"{100 * q['kept_share']:.1f} | {100 * q['agree']:.1f}" if q else "- | -"
        lines.append(f"| {r['source']} | {A.pct(r['seeds'])} | {A.pct(r['pooled'])} | {lab} | "
                     + " | ".join(f"{100 * v:.1f}" for v in r["by_kind"].values()) + " |")
    lines += ["", f"Source: `docs/results/{name}.json`.", "", "Paired differences (the same prompts; pooled over seeds):", ""]
    lines += [f"- {d['a']} minus {d['b']}: {100 * d['diff']['mean']:+.1f} points "
              f"[{100 * d['diff']['ci95'][0]:+.1f}, {100 * d['diff']['ci95'][1]:+.1f}]" for d in summary["differences"]]
    lines += ["", f"Held-out prompts whose exact text also occurs among the policy's training prompts: "
              f"{summary['eval_prompts_seen_in_training']:.0%} (the task has few distinct prompts; what is held out "
              "is the sampled responses and their pairs)."]
    text = "\n".join(lines) + "\n"
    C.atomic_write_text(out / "table.md", text)
    C.atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    if publish:
        C.atomic_write_text(ROOT / "docs" / "results" / f"{name}.json", json.dumps(summary, indent=2))
        back = "[Back to the results](results.md#claim-better-labels-make-a-better-policy-table-3)\n\n"
        title, body = text.split("\n", 1)
        page = f"{title}\n\n{back}{body.lstrip()}"
        flag = "" if task == "explicit" else f" --task {task}"
        C.atomic_write_text(ROOT / "docs" / f"{name}.md", page + "\nWritten by `python experiments/toy_policy.py "
                            f"--ablation {A.rel(Path(summary['ablation']))}{flag} --out {A.rel(out)} --publish`.\n")
    return text


def main(argv=None) -> dict:
    C.setup_logging()
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 usage="%(prog)s [flags: listed below]")
    ap.add_argument("--ablation", default="runs/toy_ablation", help="a finished experiments/toy_ablation.py run folder")
    ap.add_argument("--out", default="runs/toy_policy")
    ap.add_argument("--task", choices=tuple(TASK_LOOPS), default="explicit",
                    help="the toy the ablation ran on: explicit (toy_ablation.py), implicit (toy_rubric_phase.py), "
                         "two-rule (toy_both_roles.py)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--publish", action="store_true",
                    help="also write docs/results/toy_policy.json and docs/toy_policy.md (the docs cite them)")
    a = ap.parse_args(argv)
    abl = Path(a.ablation).resolve()
    srcs = sources(a.task)
    missing = [p for p in [abl / "base"] + [abl / f"seed{s}" / rel for s in a.seeds for v in srcs.values() if v
                                              for rel in v] if not (p / "adapter_config.json").exists()
               and not (p / "config.json").exists()]
    if missing:
        raise SystemExit(f"error: {abl} is not a finished {a.task} toy ablation with the judge-first loop: missing {missing[0]}")
    out = C.check_writable(a.out)
    A.check_config(out, config(abl, a.seeds, a.task))
    t0 = time.perf_counter()
    paths = make_data(out, a.task)
    policy = warm_policy(abl / "base", paths["policy"], out)
    C.log.info("policy ready (%.0fs)", time.perf_counter() - t0)
    eval_rows = C.read_jsonl_resumable(paths["prompts"])
    results: dict = {s: [] for s in SOURCES}
    quality: dict = {}
    for seed in a.seeds:
        sdir = out / f"seed{seed}"
        for source, rel in srcs.items():
            adapter = None
            if source != BEFORE:
                adapters = tuple(abl / f"seed{seed}" / p for p in rel) if rel else None
                run = sdir / f"dpo_{slug(source)}"
                adapter = dpo(policy, abl / "base", source, adapters, paths, run, seed)
                q = label_quality(run, paths["checked"])
                quality.setdefault(source, []).append(q)
            r = score(policy, adapter, eval_rows, sdir / f"score_{slug(source)}.json", seed)
            results[source].append(r)
            C.log.info("seed %d %s: pass rate %.3f %s (%.0fs)", seed, source, r["pass_all"],
                       {k: round(v, 3) for k, v in r["by_kind"].items()}, time.perf_counter() - t0)
    quality = {s: {k: statistics.mean(q[k] for q in qs) for k in qs[0]} for s, qs in quality.items()}
    seen = {r["prompt"] for name in ("policy", "dpo") for r in C.read_jsonl_resumable(paths[name])}
    overlap = statistics.mean(r["prompt"] in seen for r in eval_rows)
    summary = {**summarize(results, quality, overlap), "ablation": str(abl), "seeds": a.seeds,
               **({"task": a.task} if a.task != "explicit" else {})}
    print(report(out, summary, a.seeds, a.publish))
    print(f"toy policy table done in {time.perf_counter() - t0:.0f}s; {out / 'table.md'}")
    return summary


if __name__ == "__main__":
    C.run_main(main)
