"""Where a trajectory judge goes wrong on the implicit toy, read off one teacher-forced forward per pair.

The judge prompt (the row's reference rubric) is followed by the row's reference judge trajectory, and the
judge's next-token distribution is read at three kinds of places:

  quote    after `it begins with "`: is the argmax the first token of the response's first word?
           (copying the evidence)
  claim    after the quote: does the model prefer the true case claim's first token over the false one's?
           (`, a capital` vs `, a lowercase`; `; all letters` vs `; it has`) - reading the case off the copy
  letter   (trajectories that spell it: `, first letter "`) is the argmax the word's first letter?
  conclusion  after the final `Justification: Response` (every claim above it correct): " A" vs " B" - the one
           step that weighs the two analyses against each other
  verdict  after `Winner: Response`: " A" vs " B" - a copy of the conclusion just written

Each reading is given per adapter (none = the base), with a 95% bootstrap interval over pairs. One forward of
about 450 tokens per pair: 100 pairs take about a minute on 2 cores, so it can follow an SFT curve checkpoint
by checkpoint, where evaluate.py (generation, both orders) takes ten.

    python experiments/claim_reach.py --model smollm2-135m --data runs/smol_implicit/data/eval.jsonl \\
        --judge-template experiments/compact_judge_template.txt --limit 100 \\
        --adapter none --adapter runs/smol_implicit/sft_judge/adapter --out claims.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

import common as C  # noqa: E402
import manifests as M  # noqa: E402

# the case claims of tasks/toy_task.py's Constraint.explain, split where true and false part
CLAIM = re.compile(r'it begins with "(?P<word>[^"]*)"(?:, first letter "(?P<letter>[^"])")?'
                   r'(?P<claim>, a (?:capital|lowercase)|; (?:all|it))')
FLIP = {", a capital": ", a lowercase", ", a lowercase": ", a capital", "; all": "; it", "; it": "; all"}
VERDICT = "Winner: Response"


def split_point(tok, prefix: str, true: str, false: str | None) -> tuple[int, int, int | None]:
    """(k, true id, false id): k is the index of the first token where prefix+true and prefix+false part
    (for a quote, false None: where prefix+true leaves prefix's tokens); BPE merges across the seam are
    read from the joint tokenizations."""
    a = C.text_ids(tok, prefix + true)
    b = C.text_ids(tok, prefix + false) if false is not None else C.text_ids(tok, prefix)
    k = 0
    while k < len(a) and k < len(b) and a[k] == b[k]:
        k += 1
    return k, a[k], (b[k] if false is not None else None)


def readings(model, tok, row: dict) -> dict:
    """quote / claim hits (lists of 0/1) and the verdict hit of one row."""
    traj = row["judge_trajectory"]
    prompt, _ = C.judge_prompt_ids(tok, row["prompt"], row["reference_rubric"], row["response_a"], row["response_b"])
    traj_ids = C.text_ids(tok, traj)
    points = []  # (kind, token index k in traj_ids whose prediction is read, true id, false id or None)
    for m in CLAIM.finditer(traj):
        q, c, claim = m.start("word"), m.start("claim"), m.group("claim")
        points.append(("quote", *split_point(tok, traj[:q], m.group("word"), None)))
        if m.group("letter"):
            points.append(("letter", *split_point(tok, traj[:m.start("letter")], m.group("letter"), None)))
        points.append(("claim", *split_point(tok, traj[:c], claim, FLIP[claim])))
    loser = " B" if row["winner"] == "A" else " A"
    m = re.search(r"\nJustification: Response(?= [AB] satisfies \d+ of \d+ hard rules while )", traj)  # winner first
    if m:
        points.append(("conclusion", *split_point(tok, traj[:m.end()], " " + row["winner"], loser)))
    v = traj.index(VERDICT) + len(VERDICT)
    points.append(("verdict", *split_point(tok, traj[:v], " " + row["winner"], loser)))
    ids = prompt + traj_ids
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    out = {"quote": [], "letter": [], "claim": [], "conclusion": [], "verdict": []}
    for kind, k, t, f in points:
        if traj_ids[k] != t:  # the trajectory itself is tokenized otherwise at this point
            raise SystemExit(f"error: {row['id']}: the {kind} reading's token is not the trajectory's")
        lg = logits[len(prompt) + k - 1]  # the output at the position before token k predicts it
        out[kind].append(int(lg.argmax().item() == t) if f is None else int(lg[t].item() > lg[f].item()))
    return out


def summarize(hits: list[int]) -> dict:
    mean, lo, hi = C.bootstrap([float(h) for h in hits])
    return {"n": len(hits), "accuracy": round(100 * mean, 1), "ci": [round(100 * lo, 1), round(100 * hi, 1)]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False)
    ap.add_argument("--model", required=True, help="base model (folder, hub id or a registry alias)")
    ap.add_argument("--data", required=True, help="implicit-toy rows with judge_trajectory and reference_rubric")
    ap.add_argument("--adapter", action="append", required=True,
                    help="judge adapter folder, or 'none' for the base; repeat to compare")
    ap.add_argument("--limit", type=int, default=100, help="first N rows")
    ap.add_argument("--dtype", default="fp32", choices=["auto", "bf16", "fp16", "fp32"])
    ap.add_argument("--out", default=None, help="write the readings here (JSON)")
    C.add_template_args(ap)
    args = ap.parse_args(argv)
    C.use_templates(args)
    C.configure_threads()
    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines() if line.strip()][: args.limit]
    tok = C.load_tokenizer(args.model)
    base = C.load_base_model(args.model, dtype=args.dtype, device=torch.device("cpu"))
    report = {"model": args.model, "data": args.data, "n_rows": len(rows), "judges": {}}
    seen = {}  # weights digest -> the first adapter with those weights (a final adapter is its last checkpoint)
    for name in args.adapter:
        digest = "none" if name == "none" else M.content_digest(Path(name) / "adapter_model.safetensors")
        if digest in seen:
            report["judges"][name] = {**report["judges"][seen[digest]], "same_weights_as": seen[digest]}
            print(name, "= the weights of", seen[digest], flush=True)
            continue
        seen[digest] = name
        model = base if name == "none" else C.attach_lora(base, name, trainable=False)
        model.eval()
        hits = {"quote": [], "letter": [], "claim": [], "conclusion": [], "verdict": []}
        for row in rows:
            for k, v in readings(model, tok, row).items():
                hits[k] += v
        report["judges"][name] = {k: summarize(v) for k, v in hits.items() if v}
        print(name, json.dumps(report["judges"][name]), flush=True)
        if name != "none":
            base = model.unload()  # the same base weights for the next adapter
    if args.out:
        C.atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
