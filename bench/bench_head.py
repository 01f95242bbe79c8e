"""The output head in chunks (common.head_logprobs) against the full [N, T, vocab] logits, on one
training micro-batch: forward and backward through token_logprobs, the way SFT, DPO and both GRPO
phases call it. Model: SmolLM2-135M's shape (vocab 49,152, tied head) with random weights, bf16.

Each variant runs in a fresh process (its peak resident memory is its own): one warm-up pass, then
--reps timed passes; the peak is the growth of VmHWM over the resident memory before the model was
built. The processes alternate (full, chunked, chunked with a fixed glibc mmap threshold, full, ...)
so that a busy machine slows all alike; the table gives medians. The third variant is the chunked
head in a process started with MALLOC_MMAP_THRESHOLD_=131072: glibc then returns every freed block
over 128 KB to the system instead of keeping freed activation buffers in a fragmenting heap.

    python bench/bench_head.py                 # writes the head_chunks section of BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

import _util as U
import common as C
import memory as M


def one_variant(a) -> dict:
    C.HEAD_CHUNK_LOGITS = 0 if a.variant == "full" else C.HEAD_CHUNK_LOGITS
    dev = torch.device("cpu")
    torch.manual_seed(0)
    # warm-up on a tiny shape: lazily loaded libraries do not count in the measured growth
    tiny = C.attach_lora(M.random_model(M.SHAPES["tiny"], False, dev, torch.bfloat16), r=16, alpha=32)
    pass_once(tiny, M.SHAPES["tiny"].vocab, 2, 8, 8)
    del tiny
    rss0 = M._proc_kb("VmRSS")
    model = C.attach_lora(M.random_model(M.SMOLLM2_135M, False, dev, torch.bfloat16), r=16, alpha=32)
    assert (C.output_head(model) is None) == (a.variant == "full")
    M.reset_cpu_peak()
    times = []
    for _ in range(a.reps + 1):
        t0 = time.perf_counter()
        pass_once(model, M.SMOLLM2_135M.vocab, a.seqs, a.prompt, a.completion)
        times.append(time.perf_counter() - t0)
    return {"time": U.median(times[1:]), "peak_gb": (M._proc_kb("VmHWM") - rss0) / 2 ** 20}


def pass_once(model, vocab: int, n: int, p: int, t: int) -> None:
    ids = lambda k: torch.randint(2, vocab, (k,)).tolist()  # noqa: E731
    batch = C.collate_completions([(ids(p), ids(t)) for _ in range(n)], 0, torch.device("cpu"))
    logp, cnt = C.sequence_logprobs(model, batch)
    (-logp.sum() / cnt.sum()).backward()
    model.zero_grad(set_to_none=True)


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seqs", type=int, default=8, help="sequences in the micro-batch")
    ap.add_argument("--prompt", type=int, default=256, help="prompt tokens per sequence")
    ap.add_argument("--completion", type=int, default=768, help="completion tokens per sequence (the head runs there)")
    ap.add_argument("--reps", type=int, default=2, help="timed passes per process, after one warm-up pass")
    ap.add_argument("--rounds", type=int, default=2, help="processes per variant, alternating")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    ap.add_argument("--variant", choices=["chunked", "full"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.variant:
        print("RESULT " + json.dumps(one_variant(a)), flush=True)
        return
    res: dict[str, list[dict]] = {"full": [], "chunked": [], "mmap": []}
    for _ in range(a.rounds):
        for v in res:
            cmd = [sys.executable, __file__, "--variant", "full" if v == "full" else "chunked", "--seqs", str(a.seqs),
                   "--prompt", str(a.prompt), "--completion", str(a.completion), "--reps", str(a.reps)]
            env = {**os.environ, **({"MALLOC_MMAP_THRESHOLD_": "131072"} if v == "mmap" else {})}
            p = subprocess.run(cmd, capture_output=True, text=True, env=env)
            line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
            if p.returncode != 0 or not line:
                raise SystemExit(f"bench_head: the {v} run failed:\n{p.stderr[-3000:]}")
            res[v].append(json.loads(line[-1][len("RESULT "):]))
            print(v, res[v][-1], flush=True)
    t = {v: U.median([r["time"] for r in rs]) for v, rs in res.items()}
    m = {v: U.median([r["peak_gb"] for r in rs]) for v, rs in res.items()}
    logits = a.seqs * a.completion * M.SMOLLM2_135M.vocab
    body = (f"One forward + backward through `token_logprobs` (LoRA r=16 on all linear layers, bf16, random weights of "
            f"SmolLM2-135M's shape), {a.seqs} sequences of {a.prompt} prompt + {a.completion} completion tokens: "
            f"{logits / 1e6:.0f}M logits if the head ran at once; chunked: {C.HEAD_CHUNK_LOGITS / 2 ** 20:.0f}Mi logits "
            f"per chunk, recomputed in backward. Median over {a.rounds} processes per variant x {a.reps} timed passes; "
            "peak = growth of the process's peak resident memory over its size before the model was built.\n\n"
            "| output head | s / pass | peak GB | time vs full | memory vs full |\n|---|---|---|---|---|\n"
            f"| full logits (before) | {t['full']:.2f} | {m['full']:.2f} | 1.00 | 1.00 |\n"
            f"| chunked, recomputed (now) | {t['chunked']:.2f} | {m['chunked']:.2f} | **{t['chunked'] / t['full']:.2f}** | "
            f"**{m['chunked'] / m['full']:.2f}** |\n"
            f"| chunked, `MALLOC_MMAP_THRESHOLD_=131072` | {t['mmap']:.2f} | {m['mmap']:.2f} | "
            f"**{t['mmap'] / t['full']:.2f}** | **{m['mmap'] / m['full']:.2f}** |")
    print(body)
    if not a.no_write:
        U.write_section("head_chunks", "Output head in chunks vs full logits (SmolLM2-135M shape, CPU)",
                        f"python bench/bench_head.py --seqs {a.seqs} --prompt {a.prompt} --completion {a.completion}",
                        body)


if __name__ == "__main__":
    main()
