"""Evaluation throughput on a RewardBench 2-shaped set (4 completions per prompt: 1 chosen, 3
rejected, so 3 comparisons per prompt): one rubric per prompt reused for its comparisons (ours),
against a fresh rubric for every comparison.

    python bench/bench_eval.py            # writes the eval section of BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _util as U

import common as C


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--rubric-tokens", type=int, default=64)
    ap.add_argument("--judge-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    model_dir = U.bench_model(work / "model")
    rows = C.load_pairs(str(U.ROOT / "data" / "demo_train.jsonl"), limit=4 * a.prompts)
    comps = []  # (prompt, chosen, rejected) x 3 per prompt
    for i in range(a.prompts):
        group = rows[4 * i:4 * i + 4]
        chosen = group[0]["response_a"]
        comps += [(group[0]["prompt"], chosen, g["response_b"]) for g in group[1:]]

    def run(reuse: bool) -> dict:
        rm = C.RubricARM(C.load_base_model(str(model_dir)), C.load_tokenizer(str(model_dir)), None, None,
                         a.rubric_tokens, a.judge_tokens, a.batch)
        t = time.perf_counter()
        if reuse:
            rm.verdicts(comps)
            toks, n_rub = rm.stats["rubric_tokens"] + rm.stats["judge_tokens"], rm.stats["rubrics"]
        else:  # a fresh rubric per comparison, still batched: same code path, rubrics keyed by comparison
            st: dict = {}
            rubrics = C.generate_batched(rm.model, rm.tok, [C.chat_prompt_ids(rm.tok, C.rubric_messages(p)) for p, _, _ in comps],
                                         a.batch, stats=st, n=1, max_new_tokens=a.rubric_tokens, temperature=0.0)
            prompts = [C.judge_prompt_ids(rm.tok, p, r, x, y)[0] for (p, x, y), r in zip(comps, rubrics)]
            C.generate_batched(rm.model, rm.tok, prompts, a.batch, stats=st, n=1, max_new_tokens=a.judge_tokens,
                               temperature=0.0)
            toks, n_rub = st["tokens"], len(comps)
        wall = time.perf_counter() - t
        return {"wall": wall, "pairs_per_s": len(comps) / wall, "tokens_per_s": toks / wall, "rubrics": n_rub}

    res = {}
    for reuse in (True, False):
        runs = [run(reuse) for _ in range(a.reps)]
        res[reuse] = {k: U.median([r[k] for r in runs]) for k in runs[0]}
    lines = ["| rubrics | rubrics generated | wall s | pairs/s | generated tokens/s |", "|---|---|---|---|---|"]
    for reuse, name in ((True, "one per prompt, reused (ours)"), (False, "one per comparison")):
        r = res[reuse]
        lines.append(f"| {name} | {r['rubrics']:.0f} | {r['wall']:.2f} | {r['pairs_per_s']:.2f} | {r['tokens_per_s']:.0f} |")
    gain = res[True]["pairs_per_s"] / res[False]["pairs_per_s"]
    body = (f"{a.prompts} prompts x 3 comparisons, {a.rubric_tokens} rubric and {a.judge_tokens} judge tokens each "
            f"(random model: every generation runs to its limit), batch {a.batch}, median of {a.reps} runs. Model: "
            f"Qwen3 hidden 256, 4 layers. Rubric reuse: **{gain:.2f}x** the pairs per second. Both modes batch "
            "their generations the same way; only the number of rubrics differs.\n\n" + "\n".join(lines))
    U.write_section("eval", "Evaluation throughput: rubric reuse per prompt", "python bench/bench_eval.py", body)


if __name__ == "__main__":
    main()
