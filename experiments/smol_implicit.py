"""Rubric-ARM on a real pretrained model: SmolLM2-135M-Instruct on the implicit toy task. What can it reach
before any RL? Every step runs the project's own scripts (one heavy process at a time), keeps its output in
the run folder (a rerun resumes) and refuses a folder made with other settings.

The task (tasks/toy_task.py make_implicit_split) as it is: each request states a required word and *implies*
a letter-case rule through its medium ("as a newspaper headline": a capital first letter; "for a minimalist
poster": lowercase); every held-out pair is decided by the implied rule alone, so a judge sees it only through
a rubric that names it. Training rubrics (SFT) name the rule a third of the time, when it decides the pair.

  1. data      the implicit splits of the default demo (SFT 320, RL 1024, held-out 200 with prompts no
               training split holds); the trivial judges of the held-out pairs
  2. SFT       sft_warmup.py of both roles on the SFT split (LoRA r16 on every linear layer, fp32)
  3. reading   evaluate.py --rubric-sensitivity of the SFT judge on the held-out pairs, both orders, greedy:
               under its generator's rubric, the reference rubric, another prompt's, an empty one
  4. naming    how often a generator's rubric names the implied rule (and how often the opposite one), on the
               held-out prompts: greedy and sampled at the rollout temperature, for the base and the SFT
               generator: what the rubric phase can sharpen
  5. probe     experiments/judge_reach.py on the same held-out pairs (train: RL pairs, reference rubrics):
               can the frozen features at the verdict position tell the winner at all?

    python experiments/smol_implicit.py --out runs/smol_implicit                # about 80 min on 2 cores
    python experiments/smol_implicit.py --out runs/smol_implicit --publish      # + docs/results/smol_implicit_reach.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tasks"), str(ROOT / "experiments")]  # stages, tasks, drivers
os.environ.setdefault("RUBRIC_ARM_NO_PROGRESS", "1")

import toy_rubric_phase as R  # noqa: E402

import common as C  # noqa: E402
import toy_task  # noqa: E402
from driver import check_config, pct, rel, sh  # noqa: E402

# ---- configuration: everything the results depend on ---------------------------------------------
MODEL = "smollm2-135m"
DTYPE = "fp32"                  # the CPU here has no fast bf16
SPLITS = {k: v for k, v in toy_task.IMPLICIT_SPLITS.items() if k != "pretrain"}  # rows, seed, annotated, held out
N_EVAL = 100                    # held-out pairs judged (each in both orders)
N_PROBE_TRAIN = 256             # RL pairs the linear probe is fit on (both orders)
JUDGE_TEMPLATE = "experiments/compact_judge_template.txt"  # the same trajectory, a prompt 2.3x shorter
SFT_ARGS = ["--dtype", DTYPE, "--epochs", "1", "--batch-size", "8", "--micro-batch", "4", "--lr", "1e-3",
            "--cutoff-len", "1024", "--save-every", "5", "--lora-r", "16", "--lora-alpha", "32"]
EVAL_ARGS = ["--dtype", DTYPE, "--greedy", "--swap", "--max-rubric-tokens", "96", "--max-judge-tokens", "256",
             "--batch-size", "25", "--limit", str(N_EVAL)]
NAMING = {"samples": 4, "temperature": 1.0, "max_new_tokens": 96}  # the rubric phase's rollout temperature
PROBE_ARGS = ["--n-train", str(N_PROBE_TRAIN), "--n-eval", str(N_EVAL), "--steps", "0", "--dtype", DTYPE,
              "--probe-layers", "8", "16", "24", "30"]
# A rubric names a case rule when it mentions it in any wording the generator may use ("no capital letters"
# is the lowercase rule, so it is taken out before looking for the capital one)
LOWER_WORDS = re.compile(r"lower[\s-]?case|small letters|(?:no|without|never use) capital(?:s| letters?)?", re.I)
CAPITAL_WORDS = re.compile(r"capital|upper[\s-]?case", re.I)


def config() -> dict:
    return {"model": MODEL, "dtype": DTYPE, "splits": SPLITS, "n_eval": N_EVAL, "n_probe_train": N_PROBE_TRAIN,
            "judge_template": JUDGE_TEMPLATE, "sft_args": SFT_ARGS, "eval_args": EVAL_ARGS, "naming": NAMING,
            "probe_args": PROBE_ARGS, "task_fingerprint": toy_task.implicit_fingerprint()}


def sft(data: Path, out: Path, seed: int) -> tuple[Path, Path]:
    for role in ("rubric", "judge"):
        if not (out / f"sft_{role}" / "adapter").exists():
            sh([sys.executable, "sft_warmup.py", "--role", role, "--model", MODEL, "--data", data, "--seed", seed,
                "--judge-template", JUDGE_TEMPLATE, "--out", out / f"sft_{role}", "--resume", *SFT_ARGS],
               out / "logs" / f"sft_{role}.log")
    return out / "sft_rubric" / "adapter", out / "sft_judge" / "adapter"


def sensitivity(rubric: Path | None, judge: Path | None, data: Path, out: Path) -> dict:
    """evaluate.py --rubric-sensitivity: the judge on the held-out pairs under each rubric."""
    if not (out / "sensitivity.json").exists():
        roles = (["--rubric-adapter", rubric] if rubric else []) + (["--judge-adapter", judge] if judge else [])
        sh([sys.executable, "evaluate.py", "--model", MODEL, *roles, "--judge-template", JUDGE_TEMPLATE,
            "--benchmark", "pairwise", "--data", data, "--reference-rubrics", data, "--rubric-sensitivity",
            "--out", out, *EVAL_ARGS], out.parent / "logs" / f"{out.name}.log")
    rep = json.loads((out / "sensitivity.json").read_text())
    for row in rep["rows"]:  # position: each fixed order's accuracy (Table 13's Fixed Ord-1 / Ord-2)
        s = json.loads((out / row["name"] / "results.json").read_text())["summary"]
        row["accuracy_fixed1"], row["accuracy_fixed2"] = s.get("accuracy_fixed1"), s.get("accuracy_fixed2")
        row["format_rate"] = s.get("format_rate")
    return rep


def names(rubric: str, kind: str) -> str:
    """'right' if the rubric names the implied rule (kind), 'wrong' if it names only the opposite one, else 'none'."""
    said = {"lowercase": bool(LOWER_WORDS.search(rubric)), "capital_start": bool(CAPITAL_WORDS.search(LOWER_WORDS.sub("", rubric)))}
    other = "lowercase" if kind == "capital_start" else "capital_start"
    return "right" if said[kind] else "wrong" if said[other] else "none"


def naming_rates(adapter: Path | None, rows: list[dict], out: Path) -> dict:
    """The generator's rubrics for the held-out prompts, greedy and NAMING['samples'] sampled at the rollout
    temperature, each classified by names(); kept in out (a rerun reads them back)."""
    path = out / "rubrics.jsonl"
    if not path.exists():
        import torch
        C.seed_everything(0)
        tok = C.load_tokenizer(MODEL)
        model = C.load_base_model(MODEL, dtype=DTYPE)
        if adapter:
            model = C.attach_lora(model, str(adapter), trainable=False)
        model.eval()
        prompts = [C.chat_prompt_ids(tok, C.rubric_messages(r["prompt"])) for r in rows]
        with torch.no_grad():
            greedy = C.generate_batched(model, tok, prompts, 25, n=1, max_new_tokens=NAMING["max_new_tokens"],
                                        temperature=0.0)
            sampled = C.generate_batched(model, tok, prompts, 25, n=NAMING["samples"],
                                         max_new_tokens=NAMING["max_new_tokens"], temperature=NAMING["temperature"])
        k = NAMING["samples"]
        C.write_jsonl_atomic(path, [{"id": r["id"], "implied": r["implied"][0], "cue": r["cue"], "greedy": greedy[i],
                                     "sampled": sampled[i * k:(i + 1) * k]} for i, r in enumerate(rows)])
    recs = C.read_jsonl_resumable(path)
    rep = {}
    for mode in ("greedy", "sampled"):
        verdicts = [names(t, r["implied"]) for r in recs for t in ([r[mode]] if mode == "greedy" else r[mode])]
        rep[mode] = {v: verdicts.count(v) / len(verdicts) for v in ("right", "wrong", "none")}
        named = [v for v in verdicts if v != "none"]
        rep[mode]["right_when_named"] = named.count("right") / len(named) if named else None
        rep[mode]["n"] = len(verdicts)
    rep["example"] = recs[0]["greedy"]
    return rep


def probe(data: dict[str, Path], out: Path) -> dict:
    path = out / "judge_reach.json"
    if not path.exists():
        sh([sys.executable, "experiments/judge_reach.py", "--model", MODEL, "--train", data["rl"], "--eval", data["eval"],
            "--judge-template", JUDGE_TEMPLATE, *PROBE_ARGS, "--out", path], out / "logs" / "probe.log")
    return json.loads(path.read_text())


def trivial_judges(paths: dict[str, Path], n_eval: int, out: Path) -> dict:
    """Every trivial judge of tasks/baselines.py on the judged held-out pairs (the classifier fit on SFT)."""
    import baselines
    held = out / "data" / f"eval_first{n_eval}.jsonl"
    if not held.exists():
        C.write_jsonl_atomic(held, C.read_jsonl_resumable(paths["eval"])[:n_eval])
    rep = baselines.evaluate(paths["sft"], [held])["eval"][str(held)]
    res = {name: {"mean": r["accuracy"], "ci95": r["ci95"]} for name, r in rep.items() if isinstance(r, dict) and "ci95" in r}
    res["by_type"] = rep.get("by_type", {})
    return res


def report(res: dict) -> str:
    lines = ["# SmolLM2-135M on the implicit toy: what it reaches before RL", "",
             f"Held-out pairs: the first {N_EVAL} of the implicit eval split, each judged greedily in both orders.", "",
             "| the SFT judge reads | accuracy [95% CI] | chosen first | chosen second | format |", "|---|---|---|---|---|"]
    for r in res["sft_sensitivity"]["rows"]:
        lines.append(f"| {r['rubric']} | {pct({'mean': r['accuracy'], 'ci95': r['ci95']})} | "
                     f"{100 * (r['accuracy_fixed1'] or 0):.1f} | {100 * (r['accuracy_fixed2'] or 0):.1f} | "
                     f"{100 * (r['format_rate'] or 0):.1f} |")
    lines += ["", "| difference (paired) | points [95% CI] |", "|---|---|"]
    lines += [f"| {d['comparison']} | {100 * d['difference']:+.1f} [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}] |"
              for d in res["sft_sensitivity"]["differences"]]
    lines += ["", "| generator | greedy: names the rule / the opposite / neither | sampled (T=1) |", "|---|---|---|"]
    for who, rep in res["naming"].items():
        g, s = rep["greedy"], rep["sampled"]
        lines.append(f"| {who} | {100 * g['right']:.0f} / {100 * g['wrong']:.0f} / {100 * g['none']:.0f} % | "
                     f"{100 * s['right']:.0f} / {100 * s['wrong']:.0f} / {100 * s['none']:.0f} % |")
    if "probe" in res:
        lines += ["", "Linear probe on the frozen verdict position (judge_reach.py, reference rubrics):"]
        for name, r in res["probe"].get("probe", {}).items():
            lines.append(f"- {name}: {json.dumps(r)[:300]}")
    lines += ["", "Trivial judges of the same pairs: " + ", ".join(
        f"{k} {100 * v['mean']:.1f}" for k, v in res["trivial"].items() if k != "by_type")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    C.setup_logging()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False)
    ap.add_argument("--out", default="runs/smol_implicit")
    ap.add_argument("--seed", type=C.seed_value, default=0, help="the SFT seed")
    ap.add_argument("--skip-probe", action="store_true", help="leave out the linear probe (about 20 min)")
    ap.add_argument("--publish", action="store_true", help="write docs/results/smol_implicit_reach.json")
    a = ap.parse_args(argv)
    out = C.check_writable(a.out)
    check_config(out, {**config(), "seed": a.seed})
    t0 = time.perf_counter()
    paths = R.make_data(out, SPLITS)
    res: dict = {"config": {**config(), "seed": a.seed}, "trivial": trivial_judges(paths, N_EVAL, out)}
    rows = C.read_jsonl_resumable(paths["eval"])[:N_EVAL]
    res["naming"] = {"base": naming_rates(None, rows, out / "naming_base")}
    C.log.info("base naming %s (%.0fs)", res["naming"]["base"]["greedy"], time.perf_counter() - t0)
    rubric, judge = sft(paths["sft"], out, a.seed)
    C.log.info("SFT done (%.0fs)", time.perf_counter() - t0)
    res["naming"]["SFT"] = naming_rates(rubric, rows, out / "naming_sft")
    C.log.info("SFT naming %s (%.0fs)", res["naming"]["SFT"]["greedy"], time.perf_counter() - t0)
    res["sft_sensitivity"] = sensitivity(rubric, judge, paths["eval"], out / "sens_sft")
    C.log.info("SFT sensitivity %s (%.0fs)", [(r["name"], round(r["accuracy"], 3)) for r in res["sft_sensitivity"]["rows"]],
               time.perf_counter() - t0)
    if not a.skip_probe:
        res["probe"] = probe(paths, out)
    res["seconds"] = time.perf_counter() - t0
    text = report(res)
    C.atomic_write_text(out / "report.md", text)
    C.atomic_write_text(out / "summary.json", json.dumps(res, indent=2))
    if a.publish:
        C.atomic_write_text(ROOT / "docs" / "results" / "smol_implicit_reach.json", json.dumps(res, indent=2))
    print(text)
    print(f"done in {time.perf_counter() - t0:.0f}s; {rel(out / 'report.md')}")
    return res


if __name__ == "__main__":
    C.run_main(main)
