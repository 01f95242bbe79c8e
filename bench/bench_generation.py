"""Prefix-shared rollouts: one prefill per prompt, its KV cache expanded G times, against G separate
prefills of the same prompt (our generate with share_prefix off) and against HF generate with
num_return_sequences=G. Long judge-style prompts (1,000+ tokens), G=7, greedy and sampled.

    python bench/bench_generation.py      # writes the generation section of BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import _util as U
import common as C


def long_prompts(tok, n: int, min_tokens: int) -> list[list[int]]:
    rows = C.load_pairs(str(U.ROOT / "data" / "demo_train.jsonl"))
    out, k = [], 0
    for _ in range(n):
        parts = []
        while True:  # a judge prompt whose responses are several demo responses long
            r = rows[k % len(rows)]
            k += 1
            parts.append(r)
            a = " ".join(p["response_a"] for p in parts)
            b = " ".join(p["response_b"] for p in parts)
            ids = C.judge_prompt_ids(tok, parts[0]["prompt"], parts[0]["rubric"], a, b)[0]
            if len(ids) >= min_tokens:
                out.append(ids)
                break
    return out


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--G", type=int, default=7)
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=1000, help="minimum prompt length")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_gen_"))
    model_dir = U.bench_model(work / "model")
    tok = C.load_tokenizer(str(model_dir))
    model = C.attach_lora(C.load_base_model(str(model_dir)), r=16)
    prompts = long_prompts(tok, a.prompts, a.prompt_tokens)
    lens = [len(p) for p in prompts]
    # same outputs, greedy
    shared = C.generate(model, tok, prompts, n=a.G, max_new_tokens=a.new_tokens, temperature=0.0, share_prefix=True)
    copies = C.generate(model, tok, prompts, n=a.G, max_new_tokens=a.new_tokens, temperature=0.0, share_prefix=False)
    same = torch.equal(shared.completion_ids, copies.completion_ids)
    ids, mask = C.left_pad(prompts, tok.pad_token_id, "cpu")
    rows = ["| mode | shared prefill s | G prefills s | speed-up | HF generate s | ours shared vs HF |", "|---|---|---|---|---|---|"]
    for mode, temp in (("greedy", 0.0), ("sampled, T=1", 1.0)):
        t_shared = U.timed(lambda t=temp: C.generate(model, tok, prompts, n=a.G, max_new_tokens=a.new_tokens, temperature=t,
                                                   share_prefix=True), a.reps)
        t_copies = U.timed(lambda t=temp: C.generate(model, tok, prompts, n=a.G, max_new_tokens=a.new_tokens, temperature=t,
                                                   share_prefix=False), a.reps)
        hf = "- | -"  # HF generate refuses num_return_sequences > 1 with greedy decoding
        if temp > 0:
            t_hf = U.timed(lambda t=temp: model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=a.new_tokens,
                                                min_new_tokens=a.new_tokens, num_return_sequences=a.G, do_sample=True,
                                                temperature=t, top_k=0, pad_token_id=tok.pad_token_id), a.reps)
            hf = f"{t_hf:.3f} | {t_hf / t_shared:.2f}x"
        rows.append(f"| {mode} | {t_shared:.3f} | {t_copies:.3f} | **{t_copies / t_shared:.2f}x** | {hf} |")
        print(rows[-1], flush=True)
    body = (f"{a.prompts} prompts of {min(lens)}-{max(lens)} tokens, G={a.G} samples each, {a.new_tokens} new tokens, "
            f"median of {a.reps} runs after a warm-up. Model: Qwen3 hidden 256, 4 layers, LoRA r=16. "
            f"Greedy outputs of the two modes identical: {same}.\n\n" + "\n".join(rows))
    U.write_section("generation", "Prefix-shared rollouts vs G prefills", "python bench/bench_generation.py", body)


if __name__ == "__main__":
    main()
