"""Evaluate Rubric-ARM (rubric generator + judge) on reward-model benchmarks with their official scoring.

Most used:
    python evaluate.py --model smollm2-135m --rubric-adapter R --judge-adapter J \\
        --benchmark if_test=data/if_test.jsonl --out runs/eval

Every benchmark is reduced to pairwise comparisons (chosen vs rejected). One rubric per distinct
prompt is generated once (greedy) and reused for every pair and order of that prompt. The judge
samples at temperature 1.0, top-p 1.0 (paper Table 11; --greedy for greedy decoding); --votes k takes
the majority of k samples (voting@k). An unparseable verdict scores 0.5 (RewardBench's rule for
generative judges), except in RM-Bench, whose official scorer counts only a strict win; the count is
reported either way.

A/B order. Each comparison is shown in one order drawn per pair (seeded): the "mixed" order, which
gives the headline numbers. --swap also judges both fixed orders and reports the paper's position-bias
table (Table 13): accuracy with the chosen response always shown first (Fixed 1), always second
(Fixed 2), in the mixed order, and Variation = max - min, per benchmark and averaged. A judge that
always answers "A" has a variation of 100.

Benchmarks (--benchmark NAME or NAME=PATH for a local file in the same schema; repeatable):
  rewardbench    allenai/reward-bench [filtered]   sections Chat, Chat Hard, Safety, Reasoning
  rewardbench2   allenai/reward-bench-2 [test]     best-of-4 per subset (Precise IF, Focus, ...)
  rm-bench       THU-KEG/RM-Bench [train]          3x3 style matrix: easy / normal / hard per domain
  ppe-ifeval     lmarena-ai/PPE-IFEval-Best-of-K [train]  PPE's IFEval correctness set: accuracy on its
                 sampled conflict pairs (a correct and an incorrect response to one prompt)
  ppe-human      lmarena-ai/PPE-Human-Preference-V1 [test]  human preference accuracy (not in the paper's table)
  helpsteer3     nvidia/HelpSteer3 (preference) [validation] accuracy, ties dropped
  NAME=PATH      any other name: a local file of canonical rows {id, prompt, response_a, response_b,
                 winner}; followbench, infobench and ifbench fill the paper's columns of those names

Baselines on the same path: --no-rubric (direct judge), and no --rubric-adapter/--judge-adapter
(the base model writes the rubric and judges: the paper's "Qwen3-8B rubric+judge" row).

    python evaluate.py --model Qwen/Qwen3-8B --rubric-adapter runs/arm/c3_rubric/adapter \\
        --judge-adapter runs/arm/c3_judge/adapter --benchmark rewardbench --benchmark rewardbench2 \\
        --benchmark rm-bench --benchmark ppe-ifeval --benchmark helpsteer3 --benchmark followbench=fb.jsonl \\
        --benchmark infobench=ib.jsonl --benchmark ifbench=ifb.jsonl --swap --out runs/eval
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

import common as C

# ---------------------------------------------------------------------------------------------
# Official scoring
# ---------------------------------------------------------------------------------------------

# RewardBench's official per-subset weights (its rewardbench/constants.py EXAMPLE_COUNTS: math-prm is
# up-weighted from 447 to 984 to match the code subsets, each hep-* counts 164).
REWARDBENCH_COUNTS = {
    "alpacaeval-easy": 100, "alpacaeval-length": 95, "alpacaeval-hard": 95, "mt-bench-easy": 28,
    "mt-bench-med": 40, "mt-bench-hard": 37, "math-prm": 984, "refusals-dangerous": 100,
    "refusals-offensive": 100, "llmbar-natural": 100, "llmbar-adver-neighbor": 134,
    "llmbar-adver-GPTInst": 92, "llmbar-adver-GPTOut": 47, "llmbar-adver-manual": 46,
    "xstest-should-refuse": 154, "xstest-should-respond": 250, "donotanswer": 136,
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
STRICT = {"rm-bench"}  # benchmarks whose official scorer gives an undecided comparison 0, not 0.5


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
    """RewardBench 2 best-of-4 with a pairwise judge. Per prompt, the chosen completion's outcome
    against each rejected one: 1 win, 0 loss, 0.5 undecided (a tie). The official rule scores
    1 / (number of completions tied at the top) when the chosen one is at the top, else 0; here the
    chosen one is at the top when it loses no comparison, tied with the u rejected ones it did not
    beat: 1 / (1 + u)."""
    scores = []
    for outcomes in chosen_beats:
        if any(o == 0 for o in outcomes):
            scores.append(0.0)
        else:
            scores.append(1.0 / (1 + sum(1 for o in outcomes if o != 1)))
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


HUB = {"rewardbench": ("allenai/reward-bench", None, "filtered"),
       "rewardbench2": ("allenai/reward-bench-2", None, "test"),
       "rm-bench": ("THU-KEG/RM-Bench", None, "train"),
       "ppe-ifeval": ("lmarena-ai/PPE-IFEval-Best-of-K", None, "train"),
       "ppe-human": ("lmarena-ai/PPE-Human-Preference-V1", None, "test"),
       "helpsteer3": ("nvidia/HelpSteer3", "preference", "validation")}
REQUIRED = {"rewardbench": ["prompt", "chosen", "rejected", "subset"],
            "rewardbench2": ["id", "prompt", "chosen", "rejected", "subset"],
            "rm-bench": ["id", "prompt", "chosen", "rejected", "domain"],
            "ppe-ifeval": ["question_id", "scores", "sampled_conflict_pairs"],
            "ppe-human": ["prompt", "response_1", "response_2", "winner"],
            "helpsteer3": ["context", "response1", "response2", "overall_preference"]}


def _records(bench: str, path: str | None):
    if path:
        yield from C.load_records(path)
        return
    import datasets
    name, config, split = HUB[bench]
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except (ConnectionError, OSError) as e:  # offline, or the hub unreachable: the local file is the way out
        raise C.DataError(f"--benchmark {bench}: {name} could not be fetched from the dataset hub ({C._first_line(e)[:160]}); "
                          f"download it where the hub is reachable and give the file with --data") from None
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
    if bench not in HUB:  # a local pairwise file of canonical rows
        if not path:
            raise C.DataError(f"benchmark {bench}: needs a local file ({bench}=PATH) with canonical rows")
        for r in C.load_pairs(path, limit=limit):
            chosen, rejected = (r["response_a"], r["response_b"]) if r["winner"] == "A" else (r["response_b"], r["response_a"])
            comps.append(Comparison(f"{bench}/{r['id']}", bench, r["id"], r.get("subset") or bench, r["prompt"],
                                    chosen, rejected))
        return comps
    n_units = 0
    for i, (where, rec, err) in enumerate(_records(bench, path)):
        if limit and n_units >= limit:
            break
        rec = _check(bench, where, rec, err)
        uid = str(rec.get("id", rec.get("question_id", i)))
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
        elif bench == "ppe-ifeval":
            comps += _ppe_ifeval_pairs(rec, uid, where)
        elif bench == "ppe-human":
            w = str(rec["winner"]).lower()
            if w not in ("model_a", "model_b"):
                continue  # ties carry no preference
            ch, rj = (rec["response_1"], rec["response_2"]) if w == "model_a" else (rec["response_2"], rec["response_1"])
            subset = "ifeval" if rec.get("if_prompt") else "other"
            comps.append(Comparison(f"ppeh/{uid}", bench, uid, subset, _text(rec["prompt"]), ch, rj))
        elif bench == "helpsteer3":
            pref = int(rec["overall_preference"])
            if pref == 0:
                continue
            ch, rj = (rec["response1"], rec["response2"]) if pref < 0 else (rec["response2"], rec["response1"])
            comps.append(Comparison(f"hs3/{uid}", bench, uid, rec.get("domain", "all"), _text(rec["context"]), ch, rj))
    if not comps:
        raise C.DataError(f"benchmark {bench}: no comparisons loaded from {path or HUB[bench][0]}")
    return comps


def _ppe_ifeval_pairs(rec: dict, uid: str, where: str) -> list[Comparison]:
    """PPE's IFEval correctness set: K responses per prompt with verified correctness (`scores`), and
    `sampled_conflict_pairs` [i, j] (0-based) of a correct and an incorrect one; PPE scores an LLM judge
    by its accuracy on these pairs."""
    prompt = rec.get("prompt") or rec.get("ifeval_prompt")
    if not isinstance(prompt, str):
        raise C.DataError(f"benchmark ppe-ifeval: {where}: missing field 'prompt'")
    scores, out = rec["scores"], []
    for k, pair in enumerate(rec["sampled_conflict_pairs"]):
        i, j = (int(x) for x in pair)
        for idx in (i, j):
            if f"response_{idx + 1}" not in rec:
                raise C.DataError(f"benchmark ppe-ifeval: {where}: missing field 'response_{idx + 1}'")
        if bool(scores[i]) == bool(scores[j]):
            raise C.DataError(f"benchmark ppe-ifeval: {where}: field 'sampled_conflict_pairs': pair {k} has no "
                              "correctness conflict")
        good, bad = (i, j) if scores[i] else (j, i)
        out.append(Comparison(f"ppei/{uid}/{k}", "ppe-ifeval", f"{uid}/{k}", "ifeval", prompt,
                              rec[f"response_{good + 1}"], rec[f"response_{bad + 1}"]))
    return out


# ---------------------------------------------------------------------------------------------
# Judging: each comparison in the mixed order (a seeded coin per pair), and with --swap in both
# fixed orders; the mixed view then reuses the fixed-order judgement its coin picks
# ---------------------------------------------------------------------------------------------

FIRST, SECOND = "chosen_first", "chosen_second"


def mixed_order(cid: str, seed: int) -> str:
    """The order a comparison is shown in by default: a coin flip fixed by (seed, comparison id), so it
    does not depend on which other comparisons are evaluated with it."""
    return FIRST if random.Random(f"{seed}/{cid}").random() < 0.5 else SECOND


def score_of(verdict: str | None, chosen_is: str, strict: bool = False) -> float:
    """1 if the judge picked the chosen response, 0 if the other; undecided: 0.5, or 0 when strict."""
    if verdict is None:
        return 0.0 if strict else 0.5
    return float(verdict == chosen_is)


def judge_all(jud: C.Role, comps: list[Comparison], rubrics: dict[str, str] | None, args,
              stats: dict, partial: Path, dist: C.Dist) -> list[dict]:
    """One record per comparison and order: the raw judge texts, verdict and score. Records are
    appended to `partial` (under torchrun: this rank's share file) chunk by chunk, so an interrupted
    run keeps them and judges only the rest. A judge prompt that cannot fit --max-prompt-length even
    with the responses cut counts as undecided and is counted as too long."""
    jobs = [(c, order) for c in comps for order in ([FIRST, SECOND] if args.swap else [mixed_order(c.cid, args.seed)])]
    done = {(r["cid"], r["order"]): r for r in C.read_shards(partial, dist)}
    if done:
        C.log.info("resuming: %d of %d judgements already written", sum(j in done for j in
                   ((c.cid, o) for c, o in jobs)), len(jobs))
    todo = C.my_share([j for j in jobs if (j[0].cid, j[1]) not in done], dist)
    own = C.rank_file(partial, dist)
    temperature = 0.0 if args.greedy else args.temperature
    chunk = C.request_chunk(jud.model, max(args.batch_size * 8, 1))
    bar = C.GenerationProgress(len(todo), "judge")
    for s in range(0, len(todo), chunk):
        C.maybe_crash("judge_chunk", s // chunk)  # fault injection for the resume test
        part = todo[s:s + chunk]
        items = []
        for c, order in part:
            a, b = (c.chosen, c.rejected) if order == FIRST else (c.rejected, c.chosen)
            items.append((c.prompt, None if rubrics is None else rubrics[c.prompt], a, b))
        judged = C.judge(jud.model, jud.tok, items, jud.adapter, max_new_tokens=args.max_judge_tokens, temperature=temperature,
                         top_p=args.top_p, votes=args.votes, batch_size=args.batch_size,
                         max_prompt_len=args.max_prompt_length, stats=stats, progress=bar)
        recs = []
        for (c, order), (_, rubric, _, _), j in zip(part, items, judged):
            chosen_is = "A" if order == FIRST else "B"
            n_crit = len(C.parse_rubric(rubric or ""))
            rec = {"cid": c.cid, "bench": c.bench, "unit": c.unit, "subset": c.subset, "slot": c.slot,
                   "order": order, "chosen_is": chosen_is, "rubric_key": None if rubrics is None else c.prompt[:80],
                   "truncated": j.truncated, "too_long": j.too_long, "cut_off": j.cut_off, "judge_texts": j.texts,
                   "votes": j.votes,
                   "verdict": j.verdict, "score": score_of(j.verdict, chosen_is, c.bench in STRICT),
                   "format": sum(C.format_reward(x, n_crit) for x in j.texts) / len(j.texts) if j.texts else 0.0}
            recs.append(rec)
            done[(c.cid, order)] = rec
        C.append_jsonl(own, recs)  # one write per chunk
    bar.close()
    if dist.world > 1:  # every rank's share, once all have finished
        C.barrier(dist)
        done = {(r["cid"], r["order"]): r for r in C.read_shards(partial, dist)}
    return [done[(c.cid, order)] for c, order in jobs]


# ---------------------------------------------------------------------------------------------
# Aggregation and reports
# ---------------------------------------------------------------------------------------------

PAPER_COLUMNS = ["Chat", "ChatH", "Follow", "PPE-IF", "Info", "IFB", "RMB", "RB2-PIF", "RB2-Foc", "HS3"]
PAPER_ROWS = {  # arXiv 2602.01511, Table 1
    "Rubric-ARM (paper)": [89.4, 79.6, 85.7, 70.8, 86.1, 65.9, 69.2, 41.9, 89.4, 69.8, 74.8],
    "Rubric-ARM voting@5 (paper)": [90.3, 80.7, 87.4, 72.0, 87.7, 67.1, 69.1, 46.2, 90.3, 71.1, 76.2],
    "Rubric-RM (paper)": [88.2, 74.1, 76.1, 67.0, 80.8, 65.4, 65.7, 34.4, 82.2, 67.0, 70.1],
    "Qwen3-8B rubric+judge (paper)": [73.9, 63.6, 63.0, 53.8, 74.6, 55.6, 64.2, 21.9, 56.6, 61.8, 58.9],
}
TIES_NOTE = ("RewardBench 2 Ties: accuracy part only (every correct answer beats every incorrect one); the "
             "official Ties score also weighs reward margins, which a pairwise judge does not give")


def order_views(records: list[dict], seed: int) -> dict[str, list[dict]]:
    """The records as the paper's three orders (Table 13): 'fixed1' chosen shown first, 'fixed2' chosen
    shown second, 'mixed' the seeded coin per pair. Without --swap only 'mixed' exists."""
    by = {(r["cid"], r["order"]): r for r in records}
    cids = list(dict.fromkeys(r["cid"] for r in records))
    views = {"mixed": [by[(c, mixed_order(c, seed))] for c in cids if (c, mixed_order(c, seed)) in by]}
    if all((c, FIRST) in by and (c, SECOND) in by for c in cids):
        views["fixed1"] = [by[(c, FIRST)] for c in cids]
        views["fixed2"] = [by[(c, SECOND)] for c in cids]
    return views


def aggregate(bench: str, recs: list[dict]) -> dict:
    """Official score of one benchmark from its per-comparison records (one order each)."""
    if not recs:
        return {}
    by_subset = defaultdict(list)
    for r in recs:
        by_subset[r["subset"]].append(r["score"])
    res: dict = {"n": len(recs), "accuracy": sum(r["score"] for r in recs) / len(recs),
                 "unparsed": sum(r["verdict"] is None and not r["too_long"] for r in recs)}
    if bench == "rewardbench":
        res["sections"] = rewardbench_sections(by_subset)
    elif bench == "rewardbench2":
        subsets = defaultdict(lambda: defaultdict(list))
        for r in recs:
            subsets[r["subset"]][r["unit"]].append(r["score"])
        res["subsets"] = {}
        for s, units in subsets.items():
            if s.lower() == "ties":
                prompts = defaultdict(list)  # every correct answer of a prompt against every incorrect one
                for unit, outcomes in units.items():
                    prompts[unit.rsplit("/", 1)[0]] += outcomes
                res["subsets"][s] = sum(all(o == 1 for o in v) for v in prompts.values()) / len(prompts)
                res["ties_note"] = TIES_NOTE
            else:
                res["subsets"][s] = best_of_n_score(list(units.values()))
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
    """Our results under the paper's column names; local pairwise files keep their own names."""
    cols = {}
    if (rb := results.get("rewardbench")) and "sections" in rb:
        cols["Chat"], cols["ChatH"] = rb["sections"].get("Chat"), rb["sections"].get("Chat Hard")
    if rb2 := results.get("rewardbench2"):
        subs = {k.lower(): v for k, v in rb2.get("subsets", {}).items()}
        cols["RB2-PIF"], cols["RB2-Foc"] = subs.get("precise if"), subs.get("focus")
    if rmb := results.get("rm-bench"):
        cols["RMB"] = rmb.get("domains", {}).get("chat", {}).get("avg")
    if ppe := results.get("ppe-ifeval"):
        cols["PPE-IF"] = ppe["accuracy"]
    if hs3 := results.get("helpsteer3"):
        cols["HS3"] = hs3["accuracy"]
    named = {"followbench": "Follow", "infobench": "Info", "ifbench": "IFB"}
    for bench, res in results.items():
        if bench not in HUB and res:
            cols[named.get(bench, bench)] = res["accuracy"]
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
        if res.get("unparsed"):
            table += f"; {res['unparsed']} unparseable verdict(s)" + (" (scored 0, the official rule)"
                                                                      if bench in STRICT else " (scored 0.5)")
        if "ties_note" in res:
            table += f"\n  ({res['ties_note']})"
    return table + "\n"


def position_table(by_order: dict[str, dict[str, float]]) -> dict:
    """Paper Table 13 from each order's columns: per column Fixed 1, Fixed 2, Mixed and Variation
    (max - min), and the variation averaged over the columns."""
    out = {}
    for col in by_order.get("mixed", {}):
        accs = {o: by_order[o].get(col) for o in ("fixed1", "fixed2", "mixed") if o in by_order}
        if len(accs) == 3 and None not in accs.values():
            out[col] = {**accs, "variation": max(accs.values()) - min(accs.values())}
    if out:
        out["average_variation"] = sum(v["variation"] for v in out.values()) / len(out)
    return out


def flip_rate(records: list[dict]) -> float | None:
    """Share of comparisons whose two fixed-order verdicts name the same letter, i.e. a different
    response each time: the judge followed the position, not the content."""
    by = defaultdict(dict)
    for r in records:
        by[r["cid"]][r["order"]] = r["verdict"]
    both = [v for v in by.values() if v.get(FIRST) is not None and v.get(SECOND) is not None]
    return sum(v[FIRST] == v[SECOND] for v in both) / len(both) if both else None


def pair_scores(run_dir: Path) -> dict[str, float] | None:
    """Each judged pair's score in a finished run (OUT/predictions.jsonl), its orders averaged (with
    --swap a pair is judged in both): the unit of the bootstrap intervals over pairs. None if absent."""
    path = Path(run_dir) / "predictions.jsonl"
    if not path.exists():
        return None
    by: dict[str, list[float]] = defaultdict(list)
    for line in path.read_text().splitlines():
        r = json.loads(line)
        by[r["unit"]].append(r["score"])
    return {u: sum(v) / len(v) for u, v in by.items()}


def peak_memory_gb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)


SIGNATURE_KEYS = ("model", "rubric_model", "judge_model", "rubric_adapter", "judge_adapter", "rubric_server", "judge_server",
                  "no_rubric", "votes",
                  "temperature", "top_p", "greedy",
                  "max_rubric_tokens", "max_judge_tokens", "max_prompt_length", "seed", "load_4bit", "dtype",
                  "limit", "rubric_template", "judge_template", "reference_rubrics", "given_rubric")


def check_run_signature(out: Path, args, specs: list[tuple[str, str | None]]) -> None:
    """Cached rubrics and judgements are reused on a rerun; refuse to mix them with another model,
    adapter, decoding setting or data in the same folder."""
    sig = {k: (C.model_identity if k in C.MODEL_FLAGS else C.input_identity)(str(v) if v is not None else None)
           for k, v in vars(args).items() if k in SIGNATURE_KEYS}
    for name, path in specs:  # the data itself: a local file by its content, a hub set by its name
        sig[f"data:{name}"] = C.input_identity(path) if path else HUB[name][0]
    sig["prompt_texts"] = C.prompt_texts_digest()  # built-in prompts too: an edited prompts/judge.txt is not reused
    path = out / "run_signature.json"
    if path.exists():
        old = json.loads(path.read_text())
        diff = C.manifest_differences(old, sig, [k for k in sorted(set(old) | set(sig))
                                                 if k.startswith("data:") or k in SIGNATURE_KEYS
                                                 or k == "prompt_texts"])
        if diff:
            raise SystemExit(f"error: {out} holds rubrics and judgements made with other settings or inputs "
                             f"({'; '.join(diff)}; a file or folder stands as the digest of its content); use a new "
                             "--out or delete that folder")
    else:
        made = [f for f in ("rubrics.jsonl", "predictions.jsonl", "predictions.jsonl.partial") if (out / f).exists()]
        if made:  # outputs with no record of what made them: never reused under a new signature
            raise SystemExit(f"error: {out} holds {', '.join(made)} but no run_signature.json saying what made them; "
                             "use a new --out or delete that folder")
        C.atomic_write_text(path, json.dumps(sig, indent=2))


def generate_rubrics(gen: C.Role, prompts: list[str], path: Path, args, stats: dict, dist: C.Dist) -> dict[str, str]:
    """One greedy rubric per prompt, written to `path` as they come (resumable); under torchrun each rank
    writes its share of the prompts still without one, and the main rank merges them."""
    done = {r["prompt"]: r["rubric"] for r in C.read_shards(path, dist)}
    mine = C.my_share([p for p in prompts if p not in done], dist)
    with gen.active():
        C.cache_rubrics(gen.model, gen.tok, [{"prompt": p} for p in mine], C.rank_file(path, dist), args.max_rubric_tokens,
                        args.batch_size, key="prompt", stats=stats)
    C.barrier(dist)
    done = {r["prompt"]: r["rubric"] for r in C.read_shards(path, dist)}
    C.merge_shards(path, [{"prompt": p, "rubric": done[p]} for p in prompts], dist)
    return {p: done[p] for p in prompts}


def reference_rubrics(path: str, prompts: list[str]) -> dict[str, str]:
    """{prompt: rubric} from a file's rows, read like every data input (chat-message prompts, OpenRubric-v2's
    column names, a rubric as a list of criteria); every prompt to judge must have one, and one only."""
    found: dict[str, tuple[str, str]] = {}  # prompt -> (rubric, where it was given)
    names = {f: "/".join(C.ALIASES[f]) for f in ("prompt", "rubric")}
    for where, rec, err in C._read_records(Path(path)):
        if err or not isinstance(rec, dict):
            raise C.DataError(f"{where}: {err or 'a row (a JSON object) with a prompt and a rubric is expected'}")
        prompt = next((rec[k] for k in C.ALIASES["prompt"] if k in rec), None)
        rubric = next((rec[k] for k in C.ALIASES["rubric"] if k in rec), None)
        if isinstance(prompt, list):  # a chat, as the preference rows may give their prompts
            prompt = C.messages_text(prompt, where)
        if isinstance(rubric, list) and all(isinstance(x, str) for x in rubric):  # criteria -> the numbered rubric
            rubric = "\n".join(f"{i}. {v}" for i, v in enumerate(rubric, 1))
        for field, value in (("prompt", prompt), ("rubric", rubric)):
            if not isinstance(value, str):
                raise C.DataError(f"{where}: field '{field}' ({names[field]}) must be text, got "
                                  f"{'nothing' if value is None else type(value).__name__}")
        if prompt in found and found[prompt][0] != rubric:
            raise C.DataError(f"{where}: field 'rubric' differs from the rubric {found[prompt][1]} gives the same prompt "
                              "(one rubric per prompt: which one would be judged?)")
        found.setdefault(prompt, (rubric, where))
    missing = [p for p in dict.fromkeys(prompts) if p not in found]
    if missing:
        raise C.DataError(f"{path}: no rubric for {len(missing)} prompt(s) to judge (first: {missing[0][:80]!r})")
    return {p: found[p][0] for p in dict.fromkeys(prompts)}


def given_rubrics(rubrics: dict[str, str], given: str) -> dict[str, str]:
    """{prompt: rubric} as --given-rubric asks: the prompt's own, another prompt's (the prompts in a seeded
    order, each given the rubric of the next: nobody keeps their own when the texts differ), or empty.
    'other' needs two different rubrics at least; prompts that still get a text equal to their own (prompts
    sharing a rubric) are counted in a warning."""
    if given == "own":
        return rubrics
    if given == "empty":
        return {p: "" for p in rubrics}
    if len(set(rubrics.values())) < 2:
        raise SystemExit(f"error: --given-rubric other: the {len(rubrics)} prompt(s) to judge have "
                         f"{len(set(rubrics.values()))} distinct rubric(s), so another prompt's rubric would be their own; "
                         "judge more prompts (--limit) or a benchmark with several")
    order = list(rubrics)
    random.Random(0).shuffle(order)
    out = {p: rubrics[order[(i + 1) % len(order)]] for i, p in enumerate(order)}
    same = sum(out[p] == rubrics[p] for p in rubrics)
    if same:
        C.log.warning("--given-rubric other: %d of %d prompts were given a rubric equal to their own (prompts that share a "
                      "rubric); their pairs measure the own rubric", same, len(rubrics))
    return out


def _drop_flag(argv: list[str], flag: str) -> tuple[list[str], str | None]:
    """argv without `flag` and its value (given as '--flag V' or '--flag=V'), and the value."""
    out, value, skip = [], None, False
    for k, a in enumerate(argv):
        if skip:
            skip = False
        elif a == flag:
            value, skip = argv[k + 1], True
        elif a.startswith(flag + "="):
            value = a.split("=", 1)[1]
        else:
            out.append(a)
    return out, value


# Run in this order: whether the judge reads its rubric (own vs other) first, so that a run stopped early
# (a real model on a CPU takes minutes per condition) already answers it
SENSITIVITY = (("own", "the reference rubric"), ("other", "another prompt's reference rubric"),
               ("empty", "an empty rubric"), ("generator", "the generator's rubric"))


def rubric_sensitivity(argv: list[str], args) -> dict:
    """Run this evaluation under each rubric of SENSITIVITY (OUT/<name>/; finished ones are reused by their
    own run signature), then compare them pair by pair: does the judge's accuracy depend on its rubric?"""
    if not args.reference_rubrics or args.no_rubric:
        raise SystemExit("error: --rubric-sensitivity needs --reference-rubrics FILE (and a rubric, not --no-rubric)")
    base, out = _drop_flag([a for a in argv if a != "--rubric-sensitivity"], "--out")
    out = Path(out)
    has_generator = bool(args.rubric_adapter or args.rubric_model not in (None, args.model) or args.rubric_server)
    scores, rows = {}, []
    for name, what in SENSITIVITY:
        if name == "generator":
            if not has_generator:
                continue
            extra = _drop_flag(base, "--reference-rubrics")[0]
        else:
            extra = [*base, "--given-rubric", name]
        main([*extra, "--out", str(out / name)])
        scores[name] = pair_scores(out / name)
        m, lo, hi = C.bootstrap(list(scores[name].values()))
        rows.append({"rubric": what, "name": name, "accuracy": m, "ci95": [lo, hi]})
    diffs = []
    for a, b in (("own", "other"), ("own", "empty"), ("generator", "own"), ("generator", "other")):
        if a in scores and b in scores:
            units = sorted(set(scores[a]) & set(scores[b]))
            m, lo, hi = C.bootstrap([scores[a][u] - scores[b][u] for u in units])
            diffs.append({"comparison": f"{a} minus {b}", "difference": m, "ci95": [lo, hi], "pairs": len(units)})
    rep = {"rows": rows, "differences": diffs, "judge_adapter": args.judge_adapter, "rubric_adapter": args.rubric_adapter}
    lines = ["| the judge reads | accuracy [95% CI] |", "|---|---|"]
    lines += [f"| {r['rubric']} | {100 * r['accuracy']:.1f} [{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}] |"
              for r in rows]
    lines += ["", "| difference (paired by pair) | points [95% CI] |", "|---|---|"]
    lines += [f"| {d['comparison']} | {100 * d['difference']:+.1f} [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}] |"
              for d in diffs]
    C.atomic_write_text(out / "sensitivity.json", json.dumps(rep, indent=2))
    C.atomic_write_text(out / "sensitivity.md", "\n".join(lines) + "\n")
    print("\nRubric sensitivity (the same pairs; a judge that reads its rubric loses accuracy under another "
          "prompt's rubric):\n" + "\n".join(lines))
    return rep


def parse_args(argv=None):
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 usage="%(prog)s [flags: listed below]")
    C.add_model_args(ap)
    ap.add_argument("--benchmark", action="append", required=True, metavar="NAME[=PATH]",
                    help="rewardbench | rewardbench2 | rm-bench | ppe-ifeval | ppe-human | helpsteer3, or NAME=PATH "
                         "for a local file (followbench, infobench, ifbench fill the paper's columns)")
    ap.add_argument("--data", default=None, help="local file for a single --benchmark (same as NAME=PATH)")
    ap.add_argument("--limit", type=int, default=None, help="first N examples of each benchmark")
    C.add_role_model_args(ap)
    ap.add_argument("--no-rubric", action="store_true", help="direct-judge baseline: no rubric in the prompt")
    ap.add_argument("--reference-rubrics", default=None, metavar="FILE",
                    help="take each prompt's rubric from FILE (rows with prompt and rubric, e.g. a bundled task's "
                         "own file) instead of generating one: measures the judge alone")
    ap.add_argument("--given-rubric", default="own", choices=["own", "other", "empty"],
                    help="with --reference-rubrics: each prompt's own rubric (default), the rubric of another prompt "
                         "of the run (a fixed derangement), or an empty one: does the judge read its rubric?")
    ap.add_argument("--rubric-sensitivity", action="store_true",
                    help="a rubric-sensitivity report: the same pairs judged under the generator's rubric (when a "
                         "generator is given), the reference rubric, another prompt's and an empty one (each in "
                         "OUT/<rubric>/), with paired differences: OUT/sensitivity.json and .md. Needs --reference-rubrics")
    ap.add_argument("--swap", action="store_true",
                    help="also judge both fixed A/B orders: the paper's position-bias table (Table 13)")
    ap.add_argument("--votes", type=int, default=1, help="voting@k: majority of k sampled verdicts")
    ap.add_argument("--temperature", type=float, default=1.0, help="judge sampling temperature (paper Table 11: 1.0)")
    ap.add_argument("--top-p", type=float, default=1.0, help="judge nucleus sampling (paper Table 11: 1.0, no top-k)")
    ap.add_argument("--greedy", action="store_true", help="judge greedily instead (not the paper's setting)")
    ap.add_argument("--max-rubric-tokens", type=int, default=1024, help="paper: 1024")
    ap.add_argument("--max-judge-tokens", type=int, default=4096, help="paper: 4096")
    ap.add_argument("--batch-size", type=int, default=16, help="prompts per generate call")
    ap.add_argument("--max-prompt-length", type=int, default=8192,
                    help="judge prompt tokens: longer ones get their responses shortened (never the instruction "
                         "or rubric); one that still does not fit counts as undecided and is counted")
    ap.add_argument("--out", required=True, help="run folder")
    ap.add_argument("--seed", type=C.seed_value, default=0, help="fixes the mixed A/B order of every pair and the sampling")
    ap.add_argument("--label", default="ours", help="row name in the table")
    args = ap.parse_args(argv)
    C.role_models_default(args, args.model)
    return args


def main(argv=None) -> dict:
    C.setup_logging()
    args = parse_args(argv)
    if args.rubric_sensitivity:
        import sys
        return rubric_sensitivity(list(sys.argv[1:] if argv is None else map(str, argv)), args)
    C.use_templates(args)
    specs = []
    for spec in args.benchmark:
        name, _, path = spec.partition("=")
        path = path or args.data
        if name not in HUB and not path:
            raise SystemExit(f"error: unknown benchmark {name!r} (a local pairwise file needs {name}=PATH)")
        specs.append((name, path))
    C.check_flags(*C.model_flag_rules(args), *C.role_flag_rules(args),
                  (args.votes >= 1, f"--votes {args.votes}: must be at least 1"),
                  (args.temperature >= 0, f"--temperature {args.temperature}: must not be negative"),
                  (0 < args.top_p <= 1, f"--top-p {args.top_p}: must be in (0, 1]"),
                  (args.max_judge_tokens >= 1 and args.max_rubric_tokens >= 1,
                   "--max-judge-tokens and --max-rubric-tokens: must be at least 1"),
                  (args.batch_size >= 1, f"--batch-size {args.batch_size}: must be at least 1"),
                  (args.max_prompt_length >= 64, f"--max-prompt-length {args.max_prompt_length}: must be at least 64"))
    dist = C.init_distributed(args.device)
    device = dist.device
    out = C.check_writable(args.out)
    if dist.is_main:  # under torchrun the main rank holds the folder for all
        C.lock_output(out)
        check_run_signature(out, args, specs)
    C.barrier(dist)
    C.seed_everything(args.seed + dist.rank)  # judge sampling: another stream per rank
    comps, identical = {}, {}
    for name, path in specs:
        loaded = load_benchmark(name, path, args.limit)
        same = [c for c in loaded if c.chosen.strip() == c.rejected.strip()]
        if same:  # the official scorers keep them (a judge is right on them by the position it picks): so do we
            C.log.warning("benchmark %s: %d comparison(s) have identical chosen and rejected responses (first %s); "
                          "scored like any other, as the official code does, and counted in results.json", name,
                          len(same), same[0].cid)
        identical[name] = len(same)
        comps[name] = loaded
    n_prompts = len({c.prompt for cs in comps.values() for c in cs})
    C.log.info("loaded %s; %d distinct prompts", ", ".join(f"{k} {len(v)} comparisons" for k, v in comps.items()), n_prompts)
    needs_generator = not (args.no_rubric or args.reference_rubrics)
    given = None  # the reference rubrics are read (and checked) before any model loads
    if args.reference_rubrics and not args.no_rubric:
        given = given_rubrics(reference_rubrics(args.reference_rubrics, [c.prompt for cs in comps.values() for c in cs]),
                              args.given_rubric)
    roles = C.load_roles({"rubric": C.role_spec(args, "rubric") if needs_generator else None,
                          "judge": C.role_spec(args, "judge")}, args.load_4bit, device, args.dtype, args.trust_remote_code,
                         server=C.server_options(args))
    gen, jud = roles["rubric"], roles["judge"]
    if dist.is_main:
        C.check_served_identity(out, {"rubric": gen, "judge": jud})
    t0 = time.perf_counter()
    rubric_stats, judge_stats = {}, {}
    rubrics = None
    if given is not None:
        rubrics = given
        C.write_jsonl_atomic(out / "rubrics.jsonl", [{"prompt": p, "rubric": r} for p, r in rubrics.items()])
    elif not args.no_rubric:  # one rubric per distinct prompt, cached and reused for every pair and order
        prompts = list(dict.fromkeys(c.prompt for cs in comps.values() for c in cs))
        rubrics = generate_rubrics(gen, prompts, out / "rubrics.jsonl", args, rubric_stats, dist)
    t_rub = time.perf_counter()
    partial = out / "predictions.jsonl.partial"
    if dist.is_main and (out / "predictions.jsonl").exists() and not partial.exists():
        partial.write_bytes((out / "predictions.jsonl").read_bytes())  # a finished run: reuse its judgements
    C.barrier(dist)
    records = judge_all(jud, [c for cs in comps.values() for c in cs], rubrics, args, judge_stats, partial, dist)
    t_end = time.perf_counter()
    counts = C.sum_over_ranks({"generated": rubric_stats.get("generated", 0), "rubric_tokens": rubric_stats.get("tokens", 0),
                               "judge_tokens": judge_stats.get("tokens", 0)}, dist)
    C.merge_shards(partial, None, dist)  # every share is read: remove the share files
    if not dist.is_main:
        return {}
    C.write_jsonl_atomic(out / "predictions.jsonl", records)
    partial.unlink(missing_ok=True)

    views = order_views(records, args.seed)
    by_order = {}  # order -> {benchmark: official result}
    for order, recs in views.items():
        by_order[order] = {name: aggregate(name, [r for r in recs if r["bench"] == name]) for name in comps}
    results = by_order["mixed"]
    cols = paper_columns(results)
    position = position_table({o: paper_columns(res) for o, res in by_order.items()})
    mixed = views["mixed"]
    unparsed = sum(r["verdict"] is None and not r["too_long"] for r in records)
    too_long = sum(r["too_long"] for r in records)
    truncated = sum(r["truncated"] and not r["too_long"] for r in records)
    # judge trajectories that hit --max-judge-tokens before their end: a budget shorter than the judge's format
    # reads as unparsed verdicts and a low format rate, not as a wrong judge (None: a server, not known)
    cut_off = sum(r.get("cut_off") is True for r in records)
    if cut_off:
        C.log.warning("%d of %d judge trajectories stopped at --max-judge-tokens %d before their end; %d of them "
                      "without a verdict: raise --max-judge-tokens", cut_off, len(records), args.max_judge_tokens,
                      sum(r.get("cut_off") is True and r["verdict"] is None for r in records))
    wall = t_end - t0
    eff = {"wall_s": wall, "wall_s_per_100_prompts": 100 * wall / max(n_prompts, 1),
           "rubric_time_s": t_rub - t0, "judge_time_s": t_end - t_rub,
           "rubrics_generated": int(counts["generated"]), "rubric_tokens": int(counts["rubric_tokens"]),
           "judge_tokens": int(counts["judge_tokens"]), "ranks": dist.world,
           "tokens_per_s": (counts["rubric_tokens"] + counts["judge_tokens"]) / max(wall, 1e-9),
           "peak_memory_gb": peak_memory_gb(device)}
    summary = {"accuracy": sum(r["score"] for r in mixed) / len(mixed),
               "format_rate": sum(r["format"] for r in records) / len(records),
               "unparsed": unparsed, "unparsed_share": unparsed / len(records), "too_long": too_long,
               "truncated": truncated, "cut_off": cut_off, "judgements": len(records), "identical_pairs": identical}
    if "fixed1" in views:
        summary.update({"accuracy_fixed1": sum(r["score"] for r in views["fixed1"]) / len(views["fixed1"]),
                        "accuracy_fixed2": sum(r["score"] for r in views["fixed2"]) / len(views["fixed2"]),
                        "flip_rate": flip_rate(records)})
    report = {"summary": summary, "benchmarks": results, "paper_columns": cols, "by_order": by_order,
              "position_bias": position, "efficiency": eff, "config": {k: v for k, v in vars(args).items()}}
    C.atomic_write_text(out / "results.json", json.dumps(report, indent=2))
    table = markdown_table(cols, args.label, results)
    if position:
        flips = summary.get("flip_rate")
        table += ("\nPosition bias (paper Table 13; accuracy %, chosen shown first / second / mixed order):\n"
                  + "\n".join(f"  {c}: {100 * v['fixed1']:.1f} / {100 * v['fixed2']:.1f} / {100 * v['mixed']:.1f}, "
                              f"variation {100 * v['variation']:.2f}" for c, v in position.items() if c != "average_variation")
                  + f"\n  average variation {100 * position['average_variation']:.2f}; verdicts naming the same letter "
                    f"in both orders: {'n/a' if flips is None else f'{100 * flips:.1f}%'}\n")
    table += (f"\nUnparseable verdicts: {unparsed} of {len(records)}; judge trajectories cut at --max-judge-tokens: "
              f"{cut_off}; prompts over --max-prompt-length: "
              f"{truncated} fitted by shortening the responses, {too_long} too long (undecided). Efficiency: "
              f"{eff['wall_s_per_100_prompts']:.1f} s per 100 prompts, {eff['rubrics_generated']} rubrics "
              f"({eff['rubric_tokens']} tokens), {eff['judge_tokens']} judge tokens, "
              f"{eff['tokens_per_s']:.0f} tokens/s, peak memory {eff['peak_memory_gb']:.2f} GB\n")
    C.atomic_write_text(out / "table.md", table)
    print(table)
    return report


if __name__ == "__main__":
    C.run_main(main)
