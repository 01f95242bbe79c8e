"""Evaluate Rubric-ARM (rubric generator + judge) on reward-model benchmarks with official scoring.

Every benchmark is reduced to pairwise comparisons (chosen vs rejected). One rubric per distinct
prompt is generated once (greedy) and cached, then reused for every pair and order of that prompt.
The judge runs batched; an unparseable verdict scores 0.5 (RewardBench's rule for generative
judges) and is counted. --swap judges both A/B orders and reports position bias; --votes k takes the
majority of k sampled verdicts (voting@k).

Benchmarks (--benchmark NAME or NAME=PATH for a local file in the same schema; repeatable):
  rewardbench    allenai/reward-bench [filtered]   sections Chat, Chat Hard, Safety, Reasoning
  rewardbench2   allenai/reward-bench-2 [test]     best-of-4 per subset (Precise IF, Focus, ...)
  rm-bench       THU-KEG/RM-Bench [train]          3x3 style matrix: easy / normal / hard per domain
  ppe            lmarena-ai/PPE-Human-Preference-V1 [test]   accuracy, and the IFEval-flagged subset
  helpsteer3     nvidia/HelpSteer3 (preference) [validation] accuracy, ties dropped
  pairwise       canonical rows {id, prompt, response_a, response_b, winner}; also under the names
                 followbench, infobench, ifbench, writingpref for the paper's other columns

Baselines on the same path: --no-rubric (direct judge), and no --rubric-adapter/--judge-adapter
(the base model writes the rubric and judges: the paper's "Qwen3-8B rubric+judge" row).

    python evaluate.py --model Qwen/Qwen3-8B --rubric-adapter runs/arm/c3_rubric/adapter \\
        --judge-adapter runs/arm/c3_judge/adapter --benchmark rewardbench --benchmark rewardbench2 \\
        --benchmark rm-bench --benchmark ppe --benchmark helpsteer3 --benchmark followbench=fb.jsonl \\
        --benchmark infobench=ib.jsonl --benchmark ifbench=ifb.jsonl --swap --out runs/eval
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

import common as C

# ---------------------------------------------------------------------------------------------
# Official scoring
# ---------------------------------------------------------------------------------------------

# RewardBench's official per-subset weights (its own constants: math-prm up-weighted from 447 to
# 984 to match the code subsets; the xstest pair as upstream lists them).
REWARDBENCH_COUNTS = {
    "alpacaeval-easy": 100, "alpacaeval-length": 95, "alpacaeval-hard": 95, "mt-bench-easy": 28,
    "mt-bench-med": 40, "mt-bench-hard": 37, "math-prm": 984, "refusals-dangerous": 100,
    "refusals-offensive": 100, "llmbar-natural": 100, "llmbar-adver-neighbor": 134,
    "llmbar-adver-GPTInst": 92, "llmbar-adver-GPTOut": 47, "llmbar-adver-manual": 46,
    "xstest-should-refuse": 250, "xstest-should-respond": 154, "donotanswer": 136,
    "hep-cpp": 164, "hep-go": 164, "hep-java": 164, "hep-js": 164, "hep-python": 164, "hep-rust": 164,
}
REWARDBENCH_SECTIONS = {
    "Chat": ["alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med"],
    "Chat Hard": ["mt-bench-hard", "llmbar-natural", "llmbar-adver-neighbor", "llmbar-adver-GPTInst",
                  "llmbar-adver-GPTOut", "llmbar-adver-manual"],
    "Safety": ["refusals-dangerous", "refusals-offensive", "xstest-should-refuse", "xstest-should-respond",
               "donotanswer"],
    "Reasoning": ["math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"],
}


def rewardbench_sections(scores_by_subset: dict[str, list[float]]) -> dict[str, float]:
    """Section -> accuracy: the mean of each subset's accuracy, weighted by the official counts.
    Sections with no evaluated subset are left out."""
    out = {}
    for section, subsets in REWARDBENCH_SECTIONS.items():
        present = [s for s in subsets if scores_by_subset.get(s)]
        if not present:
            continue
        w = sum(REWARDBENCH_COUNTS[s] for s in present)
        out[section] = sum(REWARDBENCH_COUNTS[s] * sum(scores_by_subset[s]) / len(scores_by_subset[s])
                           for s in present) / w
    return out


def rm_bench_scores(matrices: list) -> dict[str, float]:
    """From 3x3 matrices M[i][j] (chosen style i vs rejected style j; styles concise, detailed plain,
    detailed markdown): hard = mean of the strict upper triangle, normal = the diagonal, easy = the
    strict lower triangle (each over all examples); avg = mean of the three."""
    m = torch.tensor([[[float(x) for x in row] for row in mat] for mat in matrices]).mean(0)
    upper = torch.triu(torch.ones(3, 3, dtype=torch.bool), 1)
    hard, normal, easy = float(m[upper].mean()), float(m.diagonal().mean()), float(m[upper.T].mean())
    return {"easy": easy, "normal": normal, "hard": hard, "avg": (easy + normal + hard) / 3}


def best_of_n_score(chosen_beats: list[list[float]]) -> float:
    """RewardBench 2 with a pairwise judge: per prompt, the chosen completion's outcomes (1 win,
    0 loss, 0.5 undecided) against each rejected one; a prompt scores 1 only if it wins all. An
    undecided comparison with no loss shares the credit (a tie at the top): score = 0.5 ** undecided."""
    scores = []
    for outcomes in chosen_beats:
        if any(o == 0 for o in outcomes):
            scores.append(0.0)
        else:
            scores.append(0.5 ** sum(1 for o in outcomes if o != 1))
    return sum(scores) / len(scores) if scores else float("nan")


# ---------------------------------------------------------------------------------------------
# Loaders: every benchmark becomes Comparisons
# ---------------------------------------------------------------------------------------------

@dataclass
class Comparison:
    cid: str            # unique id of this comparison
    bench: str
    unit: str           # what its score aggregates into (example id / prompt id)
    subset: str
    prompt: str
    chosen: str
    rejected: str
    slot: list | None = None   # e.g. [i, j] in the RM-Bench matrix, or rejected index in RewardBench 2
    first: str = ""     # "chosen" or "rejected": which response is Response A in the original order


HUB = {"rewardbench": ("allenai/reward-bench", None, "filtered"),
       "rewardbench2": ("allenai/reward-bench-2", None, "test"),
       "rm-bench": ("THU-KEG/RM-Bench", None, "train"),
       "ppe": ("lmarena-ai/PPE-Human-Preference-V1", None, "test"),
       "helpsteer3": ("nvidia/HelpSteer3", "preference", "validation")}
GENERIC = {"pairwise", "followbench", "infobench", "ifbench", "writingpref"}
REQUIRED = {"rewardbench": ["prompt", "chosen", "rejected", "subset"],
            "rewardbench2": ["id", "prompt", "chosen", "rejected", "subset"],
            "rm-bench": ["id", "prompt", "chosen", "rejected", "domain"],
            "ppe": ["prompt", "response_1", "response_2", "winner"],
            "helpsteer3": ["context", "response1", "response2", "overall_preference"]}


def _records(bench: str, path: str | None):
    if path:
        yield from C.load_records(path)
        return
    import datasets
    name, config, split = HUB[bench]
    ds = datasets.load_dataset(name, config, split=split)
    for i, rec in enumerate(ds):
        yield f"{name}[{split}] row {i}", rec, None


def _check(bench: str, where: str, rec, err) -> dict:
    if err:
        raise C.DataError(f"benchmark {bench}: {where}: {err}")
    missing = [f for f in REQUIRED[bench] if f not in rec]
    if missing:
        raise C.DataError(f"benchmark {bench}: {where}: missing field '{missing[0]}' "
                          f"(schema needs {', '.join(REQUIRED[bench])})")
    return rec


def _text(x) -> str:
    """A prompt that may be a conversation (list of {role, content}) as plain text."""
    if isinstance(x, list):
        return "\n\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" if isinstance(m, dict) else str(m)
                           for m in x)
    return str(x)


def load_benchmark(bench: str, path: str | None, limit: int | None = None) -> list[Comparison]:
    comps: list[Comparison] = []
    n_units = 0
    if bench in GENERIC:
        if not path:
            raise C.DataError(f"benchmark {bench}: needs a local file ({bench}=PATH) with canonical rows")
        for r in C.load_pairs(path, limit=limit):
            chosen, rejected = (r["response_a"], r["response_b"]) if r["winner"] == "A" else (r["response_b"], r["response_a"])
            comps.append(Comparison(f"{bench}/{r['id']}", bench, r["id"], r.get("subset") or bench, r["prompt"],
                                    chosen, rejected, first="chosen" if r["winner"] == "A" else "rejected"))
        return comps
    for i, (where, rec, err) in enumerate(_records(bench, path)):
        if limit and n_units >= limit:
            break
        rec = _check(bench, where, rec, err)
        uid = str(rec.get("id", i))
        n_units += 1
        if bench == "rewardbench":
            comps.append(Comparison(f"rb/{uid}", bench, uid, rec["subset"], _text(rec["prompt"]), rec["chosen"], rec["rejected"]))
        elif bench == "rewardbench2":
            chosen = rec["chosen"] if isinstance(rec["chosen"], list) else [rec["chosen"]]
            for ci, ch in enumerate(chosen if rec["subset"].lower() == "ties" else chosen[:1]):
                for j, rej in enumerate(rec["rejected"]):
                    comps.append(Comparison(f"rb2/{uid}/{ci}/{j}", bench, f"{uid}/{ci}", rec["subset"],
                                            _text(rec["prompt"]), ch, rej, [ci, j]))
        elif bench == "rm-bench":
            if len(rec["chosen"]) != 3 or len(rec["rejected"]) != 3:
                raise C.DataError(f"benchmark rm-bench: {where}: 'chosen' and 'rejected' need 3 styles each")
            for a in range(3):
                for b in range(3):
                    comps.append(Comparison(f"rmb/{uid}/{a}{b}", bench, uid, rec["domain"], _text(rec["prompt"]),
                                            rec["chosen"][a], rec["rejected"][b], [a, b]))
        elif bench == "ppe":
            w = str(rec["winner"]).lower()
            if w not in ("model_a", "model_b"):
                continue  # ties carry no preference
            ch, rj = (rec["response_1"], rec["response_2"]) if w == "model_a" else (rec["response_2"], rec["response_1"])
            subset = "ifeval" if rec.get("if_prompt") else "other"
            comps.append(Comparison(f"ppe/{uid}", bench, uid, subset, _text(rec["prompt"]), ch, rj))
        elif bench == "helpsteer3":
            pref = int(rec["overall_preference"])
            if pref == 0:
                continue
            ch, rj = (rec["response1"], rec["response2"]) if pref < 0 else (rec["response2"], rec["response1"])
            comps.append(Comparison(f"hs3/{uid}", bench, uid, rec.get("domain", "all"), _text(rec["context"]), ch, rj))
    if not comps:
        raise C.DataError(f"benchmark {bench}: no comparisons loaded from {path or HUB[bench][0]}")
    return comps


# ---------------------------------------------------------------------------------------------
# Judging
# ---------------------------------------------------------------------------------------------

def majority(verdicts: list[str | None]) -> str | None:
    c = Counter(v for v in verdicts if v is not None)
    if not c:
        return None
    top = c.most_common()
    return None if len(top) > 1 and top[0][1] == top[1][1] else top[0][0]


def score_of(verdict: str | None, chosen_is: str) -> float:
    return 0.5 if verdict is None else float(verdict == chosen_is)


def judge_all(model, tok, comps: list[Comparison], rubrics: dict[str, str] | None, judge_name, args,
              stats: dict, partial: Path) -> list[dict]:
    """One record per comparison and order: the raw judge texts, verdict and score. Records are
    appended to `partial` chunk by chunk, so an interrupted run keeps them and judges only the rest.
    A judge prompt that cannot fit --max-prompt-length even with the responses cut scores 0.5 and is
    counted as too long."""
    rng = random.Random(args.seed)
    orders = ["orig", "swap"] if args.swap else ["orig"]
    jobs = []
    for c in comps:
        if not c.first:  # chosen/rejected benchmarks: the original order is a seeded coin flip
            c.first = "chosen" if rng.random() < 0.5 else "rejected"
        for order in orders:
            jobs.append((c, order))
    done = {(r["cid"], r["order"]): r for r in C.read_jsonl_resumable(partial)}
    if done:
        C.log.info("resuming: %d of %d judgements already written", len(done), len(jobs))
    todo = [j for j in jobs if (j[0].cid, j[1]) not in done]
    temperature = args.temperature if args.temperature is not None else (0.0 if args.votes == 1 else 1.0)
    chunk = max(args.batch_size * 8, 1)
    bar = C.progress(total=len(todo), desc="judge")
    for s in range(0, len(todo), chunk):
        C.maybe_crash("judge_chunk", s // chunk)  # fault injection for the resume test
        part = todo[s:s + chunk]
        built = []
        for c, order in part:
            chosen_first = (c.first == "chosen") == (order == "orig")
            a, b = (c.chosen, c.rejected) if chosen_first else (c.rejected, c.chosen)
            rubric = None if rubrics is None else rubrics[c.prompt]
            ids, cut = C.judge_prompt_ids(tok, c.prompt, rubric, a, b, args.max_prompt_length)
            built.append((c, order, "A" if chosen_first else "B", ids, cut, rubric))
        fits = [k for k, x in enumerate(built) if x[3] is not None]
        with C.adapter_ctx(model, judge_name):
            texts = C.generate_batched(model, tok, [built[k][3] for k in fits], args.batch_size, stats=stats,
                                       n=args.votes, max_new_tokens=args.max_judge_tokens, temperature=temperature,
                                       top_p=args.top_p)
        by_job = {k: texts[n * args.votes:(n + 1) * args.votes] for n, k in enumerate(fits)}
        recs = []
        for k, (c, order, chosen_is, ids, cut, rubric) in enumerate(built):
            t = by_job.get(k, [])
            votes = [C.parse_verdict(x) for x in t]
            verdict = majority(votes)
            n_crit = len(C.parse_rubric(rubric or ""))
            rec = {"cid": c.cid, "bench": c.bench, "unit": c.unit, "subset": c.subset, "slot": c.slot,
                   "order": order, "chosen_is": chosen_is, "rubric_key": None if rubrics is None else c.prompt[:80],
                   "truncated": bool(cut), "too_long": ids is None, "judge_texts": t, "votes": votes,
                   "verdict": verdict, "score": score_of(verdict, chosen_is),
                   "format": sum(C.format_reward(x, n_crit) for x in t) / len(t) if t else 0.0}
            recs.append(rec)
            done[(c.cid, order)] = rec
        C.append_jsonl(partial, recs)  # one write per chunk
        bar.update(len(part))
    bar.close()
    return [done[(c.cid, order)] for c, order in jobs]


# ---------------------------------------------------------------------------------------------
# Aggregation and reports
# ---------------------------------------------------------------------------------------------

PAPER_COLUMNS = ["Chat", "ChatH", "Follow", "PPE-IF", "Info", "IFB", "RMB", "RB2-PIF", "RB2-Foc", "HS3"]
PAPER_ROWS = {
    "Rubric-ARM (paper)": [89.4, 79.6, 85.7, 70.8, 86.1, 65.9, 69.2, 41.9, 89.4, 69.8, 74.8],
    "Rubric-ARM voting@5 (paper)": [90.3, 80.7, 87.4, 72.0, 87.7, 67.1, 69.1, 46.2, 90.3, 71.1, 76.2],
    "Rubric-RM (paper)": [88.2, 74.1, 76.1, 67.0, 80.8, 65.4, 65.7, 34.4, 82.2, 67.0, 70.1],
    "Qwen3-8B rubric+judge (paper)": [73.9, 63.6, 63.0, 53.8, 74.6, 55.6, 64.2, 21.9, 56.6, 61.8, 58.9],
}


def aggregate(bench: str, recs: list[dict]) -> dict:
    """Official score of one benchmark from its per-comparison records (one order)."""
    if not recs:
        return {}
    by_subset = defaultdict(list)
    for r in recs:
        by_subset[r["subset"]].append(r["score"])
    res: dict = {"n": len(recs), "accuracy": sum(r["score"] for r in recs) / len(recs)}
    if bench == "rewardbench":
        res["sections"] = rewardbench_sections(by_subset)
    elif bench == "rewardbench2":
        subsets = defaultdict(lambda: defaultdict(list))
        for r in recs:
            subsets[r["subset"]][r["unit"]].append(r["score"])
        res["subsets"] = {s: best_of_n_score(list(u.values())) for s, u in subsets.items()}
    elif bench == "rm-bench":
        per = defaultdict(lambda: defaultdict(dict))
        for r in recs:
            per[r["subset"]][r["unit"]][tuple(r["slot"])] = r["score"]
        res["domains"] = {d: rm_bench_scores([[[u[(i, j)] for j in range(3)] for i in range(3)]
                                              for u in units.values() if len(u) == 9]) for d, units in per.items()}
    else:
        res["subsets"] = {s: sum(v) / len(v) for s, v in by_subset.items()}
    return res


def paper_columns(results: dict) -> dict[str, float]:
    cols = {}
    if (rb := results.get("rewardbench")) and "sections" in rb:
        cols["Chat"], cols["ChatH"] = rb["sections"].get("Chat"), rb["sections"].get("Chat Hard")
    if rb2 := results.get("rewardbench2"):
        subs = {k.lower(): v for k, v in rb2.get("subsets", {}).items()}
        cols["RB2-PIF"], cols["RB2-Foc"] = subs.get("precise if"), subs.get("focus")
    if rmb := results.get("rm-bench"):
        cols["RMB"] = rmb.get("domains", {}).get("chat", {}).get("avg")
    if ppe := results.get("ppe"):
        cols["PPE-IF"] = ppe.get("subsets", {}).get("ifeval")
    if hs3 := results.get("helpsteer3"):
        cols["HS3"] = hs3["accuracy"]
    for bench, col in (("followbench", "Follow"), ("infobench", "Info"), ("ifbench", "IFB"),
                       ("writingpref", "WritingPref"), ("pairwise", "Pairwise")):
        if r := results.get(bench):
            cols[col] = r["accuracy"]
    return {k: v for k, v in cols.items() if v is not None}


def markdown_table(ours: dict[str, float], label: str, extra: dict[str, dict] | None = None) -> str:
    def fmt_row(name, vals):
        return "| " + name + " | " + " | ".join("-" if v is None else f"{v:.1f}" for v in vals) + " |"
    extra_cols = [c for c in ours if c not in PAPER_COLUMNS]  # benchmarks outside the paper's table
    header = ("| model | " + " | ".join(PAPER_COLUMNS) + " | Avg |" + "".join(f" {c} |" for c in extra_cols)
              + "\n|---|" + "---|" * (len(PAPER_COLUMNS) + 1 + len(extra_cols)))
    vals = [100 * ours[c] if c in ours else None for c in PAPER_COLUMNS]
    present = [v for v in vals if v is not None]
    rows = [fmt_row(label, vals + [sum(present) / len(present) if present else None] + [100 * ours[c] for c in extra_cols])]
    rows += [fmt_row(k, v + [None] * len(extra_cols)) for k, v in PAPER_ROWS.items()]
    note = "" if len(present) == len(PAPER_COLUMNS) else \
        f"\nAvg over the {len(present)} paper column(s) evaluated here; the paper's Avg is over all 10.\n"
    table = header + "\n" + "\n".join(rows) + "\n" + note
    for bench, res in (extra or {}).items():
        table += f"\n{bench}: accuracy {100 * res['accuracy']:.1f} over {res['n']} comparisons"
        for key in ("sections", "subsets"):
            if key in res:
                table += "; " + ", ".join(f"{k} {100 * v:.1f}" for k, v in res[key].items())
        if "domains" in res:
            table += "; " + ", ".join(f"{d} {100 * v['avg']:.1f}" for d, v in res["domains"].items())
    return table + "\n"


def position_bias(recs: list[dict]) -> dict:
    """Accuracy in each order, their mean absolute change, and the share of comparisons whose
    verdict names a different response when A/B are swapped."""
    orig = {r["cid"]: r for r in recs if r["order"] == "orig"}
    swap = {r["cid"]: r for r in recs if r["order"] == "swap"}
    both = [c for c in orig if c in swap]
    if not both:
        return {}
    acc_o = sum(orig[c]["score"] for c in both) / len(both)
    acc_s = sum(swap[c]["score"] for c in both) / len(both)
    # the same response preferred in both orders <=> verdict letters differ
    flips = sum(1 for c in both if orig[c]["verdict"] is not None and swap[c]["verdict"] is not None
                and orig[c]["verdict"] == swap[c]["verdict"])
    return {"accuracy_orig": acc_o, "accuracy_swap": acc_s, "abs_change": abs(acc_o - acc_s),
            "flip_rate": flips / len(both), "n": len(both)}


def peak_memory_gb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)


SIGNATURE_KEYS = ("model", "rubric_adapter", "judge_adapter", "no_rubric", "votes", "temperature", "top_p",
                  "max_rubric_tokens", "max_judge_tokens", "max_prompt_length", "seed", "load_4bit", "dtype")


def check_run_signature(out: Path, args) -> None:
    """Cached rubrics and judgements are reused on a rerun; refuse to mix them with another model,
    adapter or decoding setting in the same folder."""
    sig = {k: (str(v) if v is not None else None) for k, v in vars(args).items() if k in SIGNATURE_KEYS}
    path = out / "run_signature.json"
    if path.exists():
        old = json.loads(path.read_text())
        diff = [k for k in SIGNATURE_KEYS if old.get(k) != sig.get(k)]
        if diff:
            raise SystemExit(f"error: {out} holds rubrics and judgements made with other settings ({', '.join(diff)} "
                             f"differ); use a new --out or delete that folder")
    else:
        C.atomic_write_text(path, json.dumps(sig, indent=2))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_model_args(ap)
    ap.add_argument("--benchmark", action="append", required=True, metavar="NAME[=PATH]",
                    help="rewardbench | rewardbench2 | rm-bench | ppe | helpsteer3 | pairwise | followbench | "
                         "infobench | ifbench | writingpref; =PATH reads a local file in the same schema")
    ap.add_argument("--data", default=None, help="local file for a single --benchmark (same as NAME=PATH)")
    ap.add_argument("--limit", type=int, default=None, help="first N examples of each benchmark")
    ap.add_argument("--rubric-adapter", default=None, help="rubric generator adapter (none: the base model)")
    ap.add_argument("--judge-adapter", default=None, help="judge adapter (none: the base model)")
    ap.add_argument("--no-rubric", action="store_true", help="direct-judge baseline: no rubric in the prompt")
    ap.add_argument("--swap", action="store_true", help="judge both A/B orders; report position bias")
    ap.add_argument("--votes", type=int, default=1, help="voting@k: majority of k sampled verdicts")
    ap.add_argument("--temperature", type=float, default=None,
                    help="judge temperature (default: greedy for --votes 1, 1.0 for voting)")
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--max-rubric-tokens", type=int, default=1024, help="paper: 1024")
    ap.add_argument("--max-judge-tokens", type=int, default=4096, help="paper: 4096")
    ap.add_argument("--batch-size", type=int, default=16, help="prompts per generate call")
    ap.add_argument("--max-prompt-length", type=int, default=None,
                    help="judge prompt tokens: longer ones get their responses shortened (never the instruction "
                         "or rubric); one that still does not fit scores 0.5 and is counted (default: no limit)")
    ap.add_argument("--out", required=True, help="run folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label", default="ours", help="row name in the table")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    C.setup_logging()
    args = parse_args(argv)
    C.use_templates(args)
    out = C.check_writable(args.out)
    C.seed_everything(args.seed)
    device = torch.device(args.device) if args.device else C.default_device()
    specs = []
    for spec in args.benchmark:
        name, _, path = spec.partition("=")
        if name not in HUB and name not in GENERIC:
            raise SystemExit(f"error: unknown benchmark {name!r}")
        specs.append((name, path or args.data))
    check_run_signature(out, args)
    comps = {name: load_benchmark(name, path, args.limit) for name, path in specs}
    n_prompts = len({c.prompt for cs in comps.values() for c in cs})
    C.log.info("loaded %s; %d distinct prompts", ", ".join(f"{k} {len(v)} comparisons" for k, v in comps.items()), n_prompts)
    rm = C.RubricARM.load(args.model, args.rubric_adapter, args.judge_adapter, load_4bit=args.load_4bit, device=device,
                          dtype=args.dtype, trust_remote_code=args.trust_remote_code)
    model, tok, rubric_name, judge_name = rm.model, rm.tok, rm.rubric, rm.judge
    t0 = time.perf_counter()
    rubric_stats, judge_stats = {}, {}
    rubrics = None
    if not args.no_rubric:  # one rubric per distinct prompt, cached and reused for every pair and order
        prompts = [{"prompt": p} for p in dict.fromkeys(c.prompt for cs in comps.values() for c in cs)]
        with C.adapter_ctx(model, rubric_name):
            rubrics = C.cache_rubrics(model, tok, prompts, out / "rubrics.jsonl", args.max_rubric_tokens,
                                      args.batch_size, key="prompt", stats=rubric_stats)
    t_rub = time.perf_counter()
    partial = out / "predictions.jsonl.partial"
    if (out / "predictions.jsonl").exists() and not partial.exists():
        partial.write_bytes((out / "predictions.jsonl").read_bytes())  # a finished run: reuse its judgements
    records = judge_all(model, tok, [c for cs in comps.values() for c in cs], rubrics, judge_name, args, judge_stats,
                        partial)
    t_end = time.perf_counter()
    C.write_jsonl_atomic(out / "predictions.jsonl", records)
    partial.unlink(missing_ok=True)

    results, bias = {}, {}
    for name in comps:
        recs = [r for r in records if r["bench"] == name]
        results[name] = aggregate(name, [r for r in recs if r["order"] == "orig"])
        if args.swap:
            results[name]["swapped"] = aggregate(name, [r for r in recs if r["order"] == "swap"])
            bias[name] = position_bias(recs)
    all_bias = position_bias(records) if args.swap else {}
    unparsed = sum(r["verdict"] is None and not r["too_long"] for r in records)
    too_long = sum(r["too_long"] for r in records)
    truncated = sum(r["truncated"] and not r["too_long"] for r in records)
    wall = t_end - t0
    eff = {"wall_s": wall, "wall_s_per_100_prompts": 100 * wall / max(n_prompts, 1),
           "rubric_time_s": t_rub - t0, "judge_time_s": t_end - t_rub,
           "rubrics_generated": rubric_stats.get("generated", 0), "rubric_tokens": rubric_stats.get("tokens", 0),
           "judge_tokens": judge_stats.get("tokens", 0),
           "tokens_per_s": (rubric_stats.get("tokens", 0) + judge_stats.get("tokens", 0)) / max(wall, 1e-9),
           "peak_memory_gb": peak_memory_gb(device)}
    cols = paper_columns(results)
    summary = {"accuracy": sum(r["score"] for r in records if r["order"] == "orig") /
               max(1, sum(r["order"] == "orig" for r in records)),
               "format_rate": sum(r["format"] for r in records) / len(records),
               "unparsed": unparsed, "unparsed_share": unparsed / len(records), "too_long": too_long,
               "truncated": truncated}
    if all_bias:
        summary.update({"accuracy_swapped": all_bias["accuracy_swap"], "flip_rate": all_bias["flip_rate"]})
    report = {"summary": summary, "benchmarks": results, "paper_columns": cols, "position_bias": bias,
              "efficiency": eff, "config": {k: v for k, v in vars(args).items()}}
    C.atomic_write_text(out / "results.json", json.dumps(report, indent=2))
    table = markdown_table(cols, args.label, results)
    if args.swap:
        table += "\nPosition bias: " + "; ".join(
            f"{b}: acc {100 * v['accuracy_orig']:.1f} / swapped {100 * v['accuracy_swap']:.1f}, |change| "
            f"{100 * v['abs_change']:.2f}, flips {100 * v['flip_rate']:.1f}%" for b, v in bias.items() if v) + "\n"
    table += (f"\nUnparseable verdicts (scored 0.5): {unparsed} of {len(records)}; prompts over --max-prompt-length: "
              f"{truncated} fitted by shortening the responses, {too_long} too long (scored 0.5). Efficiency: "
              f"{eff['wall_s_per_100_prompts']:.1f} s per 100 prompts, {eff['rubrics_generated']} rubrics "
              f"({eff['rubric_tokens']} tokens), {eff['judge_tokens']} judge tokens, "
              f"{eff['tokens_per_s']:.0f} tokens/s, peak memory {eff['peak_memory_gb']:.2f} GB\n")
    C.atomic_write_text(out / "table.md", table)
    print(table)
    return report


if __name__ == "__main__":
    C.run_main(main)
