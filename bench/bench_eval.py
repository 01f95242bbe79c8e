"""Evaluation throughput on a RewardBench 2-shaped set (4 completions per prompt: 1 chosen, 3
rejected, so 3 comparisons per prompt): ours (batched, one rubric per prompt reused for its
comparisons), against a fresh rubric for every comparison (batched too), and against the plain way a
user would write it: HF `generate`, one comparison at a time (its rubric, then its verdict). All
greedy, so the three modes write the same texts up to batching noise.

    python bench/bench_eval.py                                           # random bench model
    python bench/bench_eval.py --model smollm2-135m --data if --reps 1   # the real model, IF-task prompts
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import _util as U
import common as C


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--rubric-tokens", type=int, default=64)
    ap.add_argument("--judge-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--model", default="", help="a model folder or smollm2-135m (default: the random bench model)")
    ap.add_argument("--data", default="demo", choices=["demo", "if"], help="toy demo rows or the IF task's rows")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    model_dir = Path(C.resolve_model(a.model)) if a.model else U.bench_model(work / "model")
    src = "demo_train.jsonl" if a.data == "demo" else "if_train.jsonl"
    rows = C.load_pairs(str(U.ROOT / "data" / src), limit=4 * a.prompts)
    comps = []  # (prompt, chosen, rejected) x 3 per prompt
    for i in range(a.prompts):
        group = rows[4 * i:4 * i + 4]
        chosen = group[0]["response_a"]
        comps += [(group[0]["prompt"], chosen, g["response_b"]) for g in group[1:]]

    model, tok = C.load_base_model(str(model_dir), dtype=a.dtype), C.load_tokenizer(str(model_dir))

    def plain_hf() -> dict:
        """One comparison at a time with model.generate: what a user writes without this project."""
        t, toks = time.perf_counter(), 0
        for p, x, y in comps:
            ids = torch.tensor([C.chat_prompt_ids(tok, C.rubric_messages(p))])
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=a.rubric_tokens,
                                 do_sample=False, pad_token_id=tok.pad_token_id)
            rubric = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
            jids = torch.tensor([C.judge_prompt_ids(tok, p, rubric, x, y)[0]])
            out2 = model.generate(input_ids=jids, attention_mask=torch.ones_like(jids), max_new_tokens=a.judge_tokens,
                                  do_sample=False, pad_token_id=tok.pad_token_id)
            toks += out.shape[1] - ids.shape[1] + out2.shape[1] - jids.shape[1]
        wall = time.perf_counter() - t
        return {"wall": wall, "pairs_per_s": len(comps) / wall, "tokens_per_s": toks / wall, "rubrics": len(comps)}

    def run(reuse: bool | None) -> dict:
        if reuse is None:
            return plain_hf()
        role = C.Role(model, tok, None)
        rm = C.RubricARM(role, role, a.rubric_tokens, a.judge_tokens, a.batch, judge_temperature=0.0)
        t = time.perf_counter()
        if reuse:
            rm.verdicts(comps)
            toks, n_rub = rm.stats["rubric_tokens"] + rm.stats["judge_tokens"], rm.stats["rubrics"]
        else:  # a fresh rubric per comparison, still batched: same code path, rubrics keyed by comparison
            st: dict = {}
            rubrics = C.generate_batched(model, tok, [C.chat_prompt_ids(tok, C.rubric_messages(p)) for p, _, _ in comps],
                                         a.batch, stats=st, n=1, max_new_tokens=a.rubric_tokens, temperature=0.0)
            prompts = [C.judge_prompt_ids(tok, p, r, x, y)[0] for (p, x, y), r in zip(comps, rubrics)]
            C.generate_batched(model, tok, prompts, a.batch, stats=st, n=1, max_new_tokens=a.judge_tokens,
                               temperature=0.0)
            toks, n_rub = st["tokens"], len(comps)
        wall = time.perf_counter() - t
        return {"wall": wall, "pairs_per_s": len(comps) / wall, "tokens_per_s": toks / wall, "rubrics": n_rub}

    res = {}
    for reuse in (True, False, None):
        runs = [run(reuse) for _ in range(a.reps)]
        res[reuse] = {k: U.median([r[k] for r in runs]) for k in runs[0]}
        print(reuse, res[reuse], flush=True)
    lines = ["| mode | rubrics generated | wall s | pairs/s | generated tokens/s | ours / this (pairs/s) |",
             "|---|---|---|---|---|---|"]
    for reuse, name in ((True, "batched, one rubric per prompt reused (ours)"), (False, "batched, one rubric per comparison"),
                        (None, "plain HF generate, one comparison at a time")):
        r = res[reuse]
        lines.append(f"| {name} | {r['rubrics']:.0f} | {r['wall']:.2f} | {r['pairs_per_s']:.2f} | {r['tokens_per_s']:.0f} | "
                     f"**{res[True]['pairs_per_s'] / r['pairs_per_s']:.2f}x** |")
    model_name = a.model or "Qwen3 hidden 256, 4 layers, random (every generation runs to its limit)"
    body = (f"{a.prompts} prompts x 3 comparisons ({a.data} data), at most {a.rubric_tokens} rubric and {a.judge_tokens} "
            f"judge tokens each, greedy, batch {a.batch}, median of {a.reps} run(s). Model: {model_name}, {a.dtype}.\n\n"
            + "\n".join(lines))
    section = "eval" if not a.model else f"eval_{Path(a.model).name}"
    cmd = "python bench/bench_eval.py" + (f" --model {a.model} --data {a.data} --dtype {a.dtype} --reps {a.reps}" if a.model else "")
    U.write_section(section, f"Evaluation throughput ({a.model or 'bench model'})", cmd, body)


if __name__ == "__main__":
    main()
