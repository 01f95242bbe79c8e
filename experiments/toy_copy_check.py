"""Why the toy base never judges a required word: can it copy a word at all?

A required-word constraint is the one toy constraint whose check needs a word carried from one place to
another: the request names it (`include the word "glass"`), the rubric must repeat it, the judge must
find it in a response. Copying a token from wherever it stands is what induction heads do in pretrained
language models. This script reads a base teacher-forced on held-out rows (the toy ablation's eval
split, default kinds) at the positions where a copy is the whole task:

  rubric copies the word     after `... include the word "` in the reference rubric, is the model's most
                             likely next token the word the request named? (the rubric's one choice)
  judge copies the word      the same in the judge's gatekeeper line, which repeats the rubric's first
                             criterion (rows whose first criterion is the required word)
  copy exercises             "Repeat these words: ..." answered token by token (toy_ablation --copy-curriculum
                             trains on such exercises; these 40 are drawn with a seed no base saw)
  Response A analysis right  toy_ablation.analysis_accuracy: the deciding tokens of Response A's
                             analysis, by the kind of constraint that decides the pair

Chance for a copy is about 1 in 29 (the words a request may name). Writes one JSON with a row per base:

    python experiments/toy_copy_check.py --base data/toy_base --base runs/toy_pretrain_4000/base \
        --base runs/toy_copy_curriculum/base --out docs/results/toy_copy_check.json
(the last two bases: experiments/toy_ablation.py --pretrain-steps 4000, and --copy-curriculum; see docs/results.md)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tasks"), str(ROOT / "experiments")]  # stages, tasks, drivers

import torch  # noqa: E402

import common as C  # noqa: E402
import toy_ablation  # noqa: E402
import toy_task  # noqa: E402
from manifests import content_digest  # noqa: E402


def token_at(tok, ids: list[int], at: int) -> int:
    """Index of the token of `ids` that holds character `at` of their text."""
    return next(i for i in range(len(ids)) if len(tok.decode(ids[:i + 1])) > at)


def next_token_is_word(model, tok, prompt_ids: list[int], text: str, at: int) -> bool:
    """Teacher-forced on `text` (a completion after prompt_ids): is the model's most likely token at the
    token holding character `at` of text (a word's first letter) the reference token there?"""
    ids = C.text_ids(tok, text)
    k = token_at(tok, ids, at)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids + ids[:k]])).logits[0, -1]
    return int(logits.argmax()) == ids[k]


def copy_rates(model, tok, rows: list[dict]) -> dict:
    rubric, judge = [], []
    for r in rows:
        word = dict((k, v) for k, v in r["constraints"]).get("include")
        if word is None:
            continue
        needle = f'the word "{word}"'
        at = r["rubric"].index(needle) + len(needle) - len(word) - 1  # the word's first letter
        rubric.append(next_token_is_word(model, tok, C.chat_prompt_ids(tok, C.rubric_messages(r["prompt"])),
                                         r["rubric"], at))
        if r["constraints"][0][0] == "include":  # the gatekeeper line repeats criterion 1
            traj = r["judge_trajectory"]
            at = traj.index(needle) + len(needle) - len(word) - 1
            pids = C.judge_prompt_ids(tok, r["prompt"], r["rubric"], r["response_a"], r["response_b"])[0]
            judge.append(next_token_is_word(model, tok, pids, traj, at))
    return {"rubric_copies_word": {"rate": sum(rubric) / len(rubric), "n": len(rubric)},
            "judge_copies_word": {"rate": sum(judge) / len(judge), "n": len(judge)}}


def exercise_rate(model, tok, n: int = 40) -> dict:
    """The copy exercises of toy_ablation --copy-curriculum (a seed no base was trained on): the share of
    answer tokens that are the model's most likely ones, teacher-forced, and of whole answers."""
    tokens = whole = total = 0
    for prompt, target, _ in toy_ablation.copy_examples(tok, n, 999):
        with torch.no_grad():
            pred = model(input_ids=torch.tensor([prompt + target])).logits[0, len(prompt) - 1:-1].argmax(-1)
        right = pred == torch.tensor(target)
        tokens, whole, total = tokens + int(right.sum()), whole + int(right.all()), total + len(target)
    return {"token_rate": tokens / total, "whole_rate": whole / n, "n": n}


def check(base: Path, rows: list[dict]) -> dict:
    from transformers import AutoModelForCausalLM
    tok = C.load_tokenizer(str(base))
    model = AutoModelForCausalLM.from_pretrained(str(base)).eval()
    made, run = base / "made_by.json", base.parent / "config.json"  # an exported base, or one in its run folder
    cfg = json.loads(made.read_text())["config"] if made.exists() else json.loads(run.read_text()) if run.exists() else {}
    return {"base": toy_ablation.rel(base), "weights": content_digest(base / "model.safetensors"),
            "layers": model.config.num_hidden_layers,
            "made_with": {k: cfg[k] for k in ("model", "pretrain", "pretrain_steps", "base_seed", "copy_curriculum")
                          if k in cfg},
            "pretraining_check": json.loads(hc.read_text()) if (hc := base / "held_out_analysis.json").exists() else None,
            **copy_rates(model, tok, rows), "copy_exercises": exercise_rate(model, tok),
            "response_a_analysis_right": toy_ablation.analysis_accuracy(model, tok, rows)}


def main(argv=None) -> dict:
    C.setup_logging()
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", action="append", required=True, help="a toy base folder (repeat for several)")
    ap.add_argument("--rows", type=int, default=200, help="held-out rows (the ablation's eval split)")
    ap.add_argument("--out", default=None, help="write the JSON here (atomic)")
    a = ap.parse_args(argv)
    n, seed = toy_ablation.SPLITS["eval"]
    rows = toy_task.make_split(n, seed, "eval", toy_ablation.KINDS)[:a.rows]
    report = {"made_by": "python experiments/toy_copy_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "rows": len(rows), "kinds": list(toy_ablation.KINDS), "task_fingerprint": toy_task.task_fingerprint(
                  toy_ablation.KINDS), "chance_copy": 1 / (len(toy_task.WORDS) - 1),
              "bases": [check(Path(b).resolve(), rows) for b in a.base]}
    text = json.dumps(report, indent=2)
    if a.out:
        C.atomic_write_text(Path(a.out), text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    C.run_main(main)
