"""What makes SmolLM2-135M's SFT judge read its rubric on the implicit toy (issue 41, item 2): SFT recipes
tried one after another from the base, each measured the same way.

The first SFT (experiments/smol_implicit.py: 320 rows of which a third are decided by the implied rule, one
epoch) gives a judge at 49.5% under every rubric. experiments/claim_reach.py says where it fails: it quotes a
response's first word right (95.5%) and follows its own analysis to the verdict (100%), but its claim about that
word's case is near chance (58.5%). So every try below aims at that claim:

  rule-rows      judge SFT rows all decided by the implied rule (the RL split's kind of row, from another seed,
                 prompts outside the held-out set): 3x the case claims per epoch; 3 epochs
  spelled        as rule-rows, the trajectory also spells the word's first letter before the case claim
                 (`it begins with "Sky", first letter "S", a capital letter.`): the case of a single letter is
                 what a pretrained model knows best
  counted        as rule-rows, but the final justification counts both responses in a fixed order
                 (`Response A satisfies 1 of 2 hard rules; Response B satisfies 2 of 2.`) and only the Winner line
                 compares them, with --decision-weight 10 on the Winner letter and the satisfied / not satisfied
                 words: rule-rows' judge analysed every pair right and then named Response A 85% of the time in a
                 justification that names the winner first
  tallied        as counted, and each response's analysis ends with its own tally line (`- Tally: Response A
                 satisfies 1 of 2 hard rules.`), next to the lines it counts, which the final justification then
                 copies: counted's judge analysed 99% of pairs right, then wrote "A 2 of 2; B 1 of 2" 88.5% of the
                 time (each count right 61%), and its Winner line followed those counts every time

Per try: sft_warmup.py --role judge; claim_reach.py on its checkpoints (the curve) and its final adapter; and,
when its claims are right at least --gate % of the time, evaluate.py --rubric-sensitivity (the issue's measure:
accuracy under the reference rubric, another prompt's, an empty one, and the SFT generator's), reusing the
reach run's SFT generator. Each step keeps its output; a rerun resumes; another configuration is refused.

    python experiments/smol_judge_recipes.py --reach runs/smol_implicit --out runs/smol_recipes \\
        --tries rule-rows spelled
    python experiments/smol_judge_recipes.py --reach runs/smol_implicit --out runs/smol_recipes --publish
        # the tries finished so far, beside the reach run's SFT judge and the base: docs/results/smol_judge_recipes.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tasks"), str(ROOT / "experiments")]
os.environ.setdefault("RUBRIC_ARM_NO_PROGRESS", "1")

import smol_implicit as S  # noqa: E402

import common as C  # noqa: E402
import toy_task  # noqa: E402
from driver import check_config, sh  # noqa: E402

RULE_ROWS = (320, 1250)  # rows, seed: make_implicit_split(annotated=False, held_out=False)
BASE_SFT = ["--dtype", S.DTYPE, "--batch-size", "8", "--micro-batch", "4", "--lr", "1e-3", "--cutoff-len", "1024",
            "--lora-r", "16", "--lora-alpha", "32"]
TRIES = {
    "rule-rows": {"data": "rule", "spell": False, "sft": ["--epochs", "3", "--save-every", "40"]},
    "spelled": {"data": "rule", "spell": True, "sft": ["--epochs", "3", "--save-every", "40"]},
    "counted": {"data": "rule", "spell": False, "count": True,
                "sft": ["--epochs", "3", "--save-every", "20", "--decision-weight", "10"]},
    "tallied": {"data": "rule", "spell": False, "count": True, "tally": True,
                "sft": ["--epochs", "3", "--save-every", "20", "--decision-weight", "10"],
                # its trajectories are 257-265 tokens: the reach's 256 stopped every one before its Winner line
                "eval": ["--max-judge-tokens", "320"]},
}
N_CLAIMS = 100  # held-out rows claim_reach reads (the first N of the reach run's eval split)

SPELL = re.compile(r'it begins with "([^"]*)"(?=, a |; )')


def spell(text: str) -> str:
    """The trajectory with the first word's first letter spelled before its case claim."""
    return SPELL.sub(lambda m: f'{m.group(0)}, first letter "{m.group(1)[:1]}"', text)


WINNER_FIRST = re.compile(r"Justification: Response ([AB]) satisfies (\d+) of (\d+) hard rules while Response ([AB]) "
                          r"satisfies (\d+)\.")
COUNTED = re.compile(r"Justification: Response A satisfies \d+ of \d+ hard rules; Response B satisfies \d+ of \d+\.")


def count(text: str) -> str:
    """The final justification with both responses counted, A then B (the winner no longer named first)."""
    def both(m: re.Match) -> str:
        n, got = m.group(3), {m.group(1): m.group(2), m.group(4): m.group(5)}
        return f"Justification: Response A satisfies {got['A']} of {n} hard rules; Response B satisfies {got['B']} of {n}."
    out, k = WINNER_FIRST.subn(both, text)
    assert k == 1, text
    return out


MET = re.compile(r"^- Criterion \d+ \[Hard Rule\]: .*\. (Satisfied|Not satisfied)\.$")


def tally(text: str) -> str:
    """Each response's analysis followed by its tally of met hard rules (the line the final justification copies)."""
    out, who, met, n = [], None, 0, 0
    for line in text.split("\n") + [None]:
        ends = line is None or line.startswith("**Response") or line.startswith("--- Final")
        if who and ends:
            out.append(f"- Tally: Response {who} satisfies {met} of {n} hard rules.")
            who = None
        if line is None:
            break
        if line.startswith("**Response"):
            who, met, n = line[len("**Response "):][:1], 0, 0
        m = MET.match(line)
        if who and m:
            n, met = n + 1, met + (m.group(1) == "Satisfied")
        out.append(line)
    return "\n".join(out)


def try_data(name: str, reach: Path, out: Path) -> tuple[Path, Path]:
    """(SFT rows, held-out rows) of a try, in its trajectory format."""
    spec, folder = TRIES[name], out / name
    sft, held = folder / "sft.jsonl", folder / "eval.jsonl"
    if not sft.exists():
        rows = toy_task.make_implicit_split(*RULE_ROWS, "sftr", False, False)
        ev = [json.loads(line) for line in (reach / "data" / "eval.jsonl").read_text().splitlines()]
        for flag, edit in (("spell", spell), ("count", count), ("tally", tally)):
            if spec.get(flag):
                rows = [{**r, "judge_trajectory": edit(r["judge_trajectory"])} for r in rows]
                ev = [{**r, "judge_trajectory": edit(r["judge_trajectory"])} for r in ev]
        held_prompts = {r["prompt"] for r in ev}
        assert not held_prompts & {r["prompt"] for r in rows}, "a held-out prompt in the SFT rows"
        C.write_jsonl_atomic(held, ev)
        C.write_jsonl_atomic(sft, rows)
    return sft, held


def claims(adapters: list[Path], held: Path, dest: Path) -> dict:
    if not dest.exists():
        sh([sys.executable, "experiments/claim_reach.py", "--model", S.MODEL, "--data", held, "--limit", N_CLAIMS,
            "--judge-template", S.JUDGE_TEMPLATE, "--out", dest, *[a for p in adapters for a in ("--adapter", p)]],
           dest.with_suffix(".log"))
    return json.loads(dest.read_text())["judges"]


def try_record(name: str, curve: dict) -> dict:
    """What a try's result names: its SFT flags, its format and its claim readings per adapter."""
    return {"try": name, "sft_args": BASE_SFT + TRIES[name]["sft"], "eval_args_extra": TRIES[name].get("eval", []),
            "spelled": TRIES[name]["spell"],
            "claims": {Path(k).name: v for k, v in curve.items()}}


def run_try(name: str, reach: Path, out: Path, gate: float, seed: int) -> dict:
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    # a try's own SFT settings (adding a try leaves the others' folders valid); its evaluation flags ("eval") are
    # guarded by evaluate.py's own run signature in its sens folder
    check_config(folder, {"try": {k: v for k, v in TRIES[name].items() if k != "eval"}})
    sft, held = try_data(name, reach, out)
    if not (folder / "sft_judge" / "adapter").exists():
        sh([sys.executable, "sft_warmup.py", "--role", "judge", "--model", S.MODEL, "--data", sft, "--seed", seed,
            "--judge-template", S.JUDGE_TEMPLATE, "--out", folder / "sft_judge", "--resume", *BASE_SFT,
            *TRIES[name]["sft"]], folder / "sft_judge.log")
    ckpts = sorted((folder / "sft_judge" / "checkpoints").glob("step-*"))
    curve = claims([*ckpts, folder / "sft_judge" / "adapter"], held, folder / "claims.json")
    final = curve[str(folder / "sft_judge" / "adapter")]
    res = try_record(name, curve)
    if final["claim"]["accuracy"] >= gate:
        rep = S.sensitivity(reach / "sft_rubric" / "adapter", folder / "sft_judge" / "adapter", held, folder / "sens",
                            tuple(TRIES[name].get("eval", ())))
        res["sensitivity"] = rep
    else:
        res["sensitivity"] = f"not run: claims {final['claim']['accuracy']}% < --gate {gate}%"
    C.atomic_write_text(folder / "result.json", json.dumps(res, indent=1) + "\n")
    return res


NOT_MET = re.compile(r"Not satisfied")
COUNTS = re.compile(r"Justification: Response A satisfies (\d+) of \d+ hard rules; Response B satisfies (\d+) of")
HARD_LINE = re.compile(r"\[Hard Rule\]: Justification: .*\. (?:Not satisfied|Satisfied)\.")
MET_LINE = re.compile(r"\[Hard Rule\]: Justification: .*\. Satisfied\.")
CONCLUSION = re.compile(r"Justification: Response ([AB]) satisfies")
TALLY_LINE = re.compile(r"- Tally: Response [AB] satisfies (\d+) of \d+ hard rules\.")


def conclusions(predictions: Path) -> dict:
    """How a judge's generated trajectories reach their verdicts (evaluate.py's predictions.jsonl): is the analysis
    right (the response with fewer unmet criteria is the chosen one), does the final justification name the
    response the analysis favours, and how often does it name Response A."""
    n = analysis_right = follows = names_a = verdict_right = 0
    counts = {"counted": 0, "count_A_right": 0, "count_B_right": 0, "winner_follows_counts": 0}
    tallies = {"tallied": 0, "tally_A_right": 0, "tally_B_right": 0, "counts_copy_tallies": 0}
    for line in predictions.read_text().splitlines():
        p = json.loads(line)
        text = p["judge_texts"][0]
        a, _, rest = text.partition("Response B:")
        b = rest.split("Final Judgment")[0]
        unmet_a, unmet_b = len(NOT_MET.findall(a)), len(NOT_MET.findall(b))
        c = COUNTS.search(text)
        if c:  # the counted formats: does each count match its analysis, does the Winner line follow the counts
            (met_a, n_a), (met_b, n_b) = [(len(MET_LINE.findall(sec)), len(HARD_LINE.findall(sec))) for sec in (a, b)]
            ca, cb = int(c.group(1)), int(c.group(2))
            counts["counted"] += 1
            counts["count_A_right"] += ca == met_a
            counts["count_B_right"] += cb == met_b
            counts["winner_follows_counts"] += ca != cb and p["verdict"] == ("A" if ca > cb else "B")
            found = [TALLY_LINE.search(sec) for sec in (a, b)]
            if all(found):  # the tallied format: each tally against its own lines, the counts against the tallies
                ta, tb = (int(t.group(1)) for t in found)
                tallies["tallied"] += 1
                tallies["tally_A_right"] += ta == met_a
                tallies["tally_B_right"] += tb == met_b
                tallies["counts_copy_tallies"] += (ca, cb) == (ta, tb)
        favoured = "A" if unmet_a < unmet_b else "B" if unmet_b < unmet_a else None
        m = CONCLUSION.search(text)
        named = p["verdict"] if COUNTED.search(text) else m.group(1) if m else None  # counted: the Winner line concludes
        n += 1
        analysis_right += favoured == p["chosen_is"]
        follows += favoured is not None and named == favoured
        names_a += named == "A"
        verdict_right += p["verdict"] == p["chosen_is"]
    pct = lambda k: round(100 * k / n, 1)  # noqa: E731
    out = {"judgements": n, "analysis_right": pct(analysis_right), "conclusion_follows_analysis": pct(follows),
           "conclusion_names_A": pct(names_a), "verdict_right": pct(verdict_right)}
    if counts["counted"]:
        k = counts.pop("counted")
        out |= {"counted": k, **{key: round(100 * v / k, 1) for key, v in counts.items()}}
    if tallies["tallied"]:
        t = tallies.pop("tallied")
        out |= {**{key: round(100 * v / t, 1) for key, v in tallies.items()}, "tallied": t}
    return out


def condition_summary(folder: Path) -> dict:
    """One evaluate.py condition: its accuracy (mixed order, as evaluate.py reports it), each fixed order's, and how
    its trajectories reach their verdicts."""
    from evaluate import pair_scores
    s = json.loads((folder / "results.json").read_text())["summary"]
    by_pair = pair_scores(folder)
    m, lo, hi = C.bootstrap([by_pair[u] for u in sorted(by_pair)])  # each pair's two orders averaged
    return {"accuracy": s["accuracy"], "first": s.get("accuracy_fixed1"), "second": s.get("accuracy_fixed2"),
            "both_orders": {"mean": m, "ci95": [lo, hi]}, "format": s.get("format_rate"),
            "trajectories": conclusions(folder / "predictions.jsonl")}


def sens_summary(rep: dict | str, folder: Path | None = None) -> dict | str:
    """evaluate.py --rubric-sensitivity's report; or, for a run stopped before its last condition (no
    sensitivity.json), the conditions it finished, without the paired differences."""
    if isinstance(rep, str):
        if folder is None or not folder.is_dir():
            return rep
        done = {d.name: condition_summary(d) for d in sorted(folder.iterdir()) if (d / "results.json").exists()}
        if not done:
            return rep
        out = {"stopped_early": "the sensitivity run was stopped before every condition finished", "conditions": done}
        if {"own", "other"} <= set(done):  # the reading test's difference, paired by pair (as evaluate.py's report)
            from evaluate import pair_scores
            own, other = pair_scores(folder / "own"), pair_scores(folder / "other")
            m, lo, hi = C.bootstrap([own[u] - other[u] for u in sorted(set(own) & set(other))])
            out["differences"] = [{"comparison": "own minus other", "difference": m, "ci95": [lo, hi]}]
        return out
    for r in rep["rows"]:
        r["trajectories"] = conclusions(folder / r["name"] / "predictions.jsonl") if folder else None
        r["mixed"] = json.loads((folder / r["name"] / "results.json").read_text())["summary"]["accuracy"] if folder else None
    return {"accuracy": {r["name"]: {"mean": r["accuracy"], "ci95": r["ci95"], "mixed": r["mixed"],
                                     "first": r.get("accuracy_fixed1"),
                                     "second": r.get("accuracy_fixed2"), "format": r.get("format_rate"),
                                     "trajectories": r.get("trajectories")}
                         for r in rep["rows"]},
            "differences": rep["differences"]}


def publish(reach: Path, out: Path, dest: Path) -> dict:
    """The baseline (the base and the reach run's SFT judge, claim readings) and every finished try."""
    held = reach / "data" / "eval.jsonl"
    base = claims([Path("none"), reach / "sft_judge" / "adapter"], held, reach / "claims.json")
    res = {"what": "SFT recipes for SmolLM2-135M's judge on the implicit toy (experiments/smol_judge_recipes.py)",
           "held_out_rows_read": N_CLAIMS, "config": json.loads((out / "config.json").read_text()),
           "baseline": {"base model": base["none"], "reach SFT judge (320 rows, a third rule-decided, 1 epoch)":
                        base[str(reach / "sft_judge" / "adapter")]},
           "baseline_sensitivity": sens_summary(S.sensitivity(None, None, held, reach / "sens_sft"), reach / "sens_sft"),
           "tries": {}}
    for name in TRIES:
        f, sens = out / name / "result.json", out / name / "sens"
        if f.exists():
            r = json.loads(f.read_text())
            res["tries"][name] = {**r, "sensitivity": sens_summary(r["sensitivity"], sens)}
        elif (out / name / "claims.json").exists():  # stopped during its evaluation: what it finished
            curve = json.loads((out / name / "claims.json").read_text())["judges"]
            res["tries"][name] = {**try_record(name, curve), "sensitivity": sens_summary("not finished", sens)}
        # evaluations moved aside as sens_<why> (e.g. sens_cut256: a token budget shorter than the format), kept
        aside = {d.name: sens_summary("set aside", d) for d in sorted((out / name).glob("sens_*")) if d.is_dir()}
        if name in res["tries"] and aside:
            res["tries"][name]["sensitivity_set_aside"] = aside
    C.atomic_write_text(dest, json.dumps(res, indent=1) + "\n")
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False)
    ap.add_argument("--reach", type=Path, required=True, help="the experiments/smol_implicit.py run folder")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tries", nargs="+", choices=list(TRIES), default=list(TRIES))
    ap.add_argument("--gate", type=float, default=75.0, help="run evaluate.py only when claims reach this %%")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--publish", action="store_true", help="write docs/results/smol_judge_recipes.json and stop")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    check_config(args.out, {"reach": str(args.reach), "rule_rows": RULE_ROWS, "base_sft": BASE_SFT,
                            "n_claims": N_CLAIMS, "gate": args.gate, "seed": args.seed, "eval_args": S.EVAL_ARGS,
                            "task_fingerprint": toy_task.implicit_fingerprint()})
    if args.publish:
        publish(args.reach, args.out, ROOT / "docs" / "results" / "smol_judge_recipes.json")
        return
    for name in args.tries:
        res = run_try(name, args.reach, args.out, args.gate, args.seed)
        print(name, json.dumps({k: v["claim"] for k, v in res["claims"].items()}), flush=True)


if __name__ == "__main__":
    main()
