"""Decode and prefill on this machine's CPU, next to their bounds, for the real model (SmolLM2-135M).

One decode step for R rows (16 and 64) over a 1,000-token context (the prompt prefilled once and its
cache expanded R times, as a GRPO group is), ours (common.generate) and HF generate, in fp32 and bf16;
prefill tokens per second. The bound of a decode step is the larger of
  memory: the bytes a step must read (the weights once, plus every row's KV cache) / measured bandwidth
  compute: 2 x parameters x rows FLOP / the measured matmul throughput (same dtype)
both measured here in this process (a 256 MB read; a 4096 x 576 x 1536 matmul).

    python bench/bench_decode.py          # writes the decode section of BENCHMARKS.md (about 10 min)
"""

from __future__ import annotations

import argparse
import time

import torch

import _util as U
import common as C


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bandwidth_gbs(device: torch.device) -> float:
    """Read bandwidth: summing a 256 MB (CPU) / 1 GB (GPU) tensor reads every byte once."""
    n = (256 if device.type == "cuda" else 64) * 1024 * 1024
    x = torch.ones(n, dtype=torch.float32, device=device)
    x.sum()
    sync(device)
    t = time.perf_counter()
    for _ in range(10):
        x.sum()
    sync(device)
    return x.numel() * 4 * 10 / (time.perf_counter() - t) / 1e9


def matmul_gflops(dtype, device: torch.device) -> float:
    a = torch.randn(4096, 576, dtype=dtype, device=device)
    w = torch.randn(1536, 576, dtype=dtype, device=device)
    for _ in range(3):
        a @ w.T
    sync(device)
    t = time.perf_counter()
    for _ in range(10):
        a @ w.T
    sync(device)
    return 2 * 4096 * 576 * 1536 * 10 / (time.perf_counter() - t) / 1e9


def decode_step(model, tok, ids, rows: int, hf: bool, steps: int = 24) -> float:
    """Seconds per decode step: (time for 8 + steps tokens - time for 8) / steps, greedy, no EOS stop."""
    device = next(model.parameters()).device

    def run(n_new):
        sync(device)
        t = time.perf_counter()
        if hf:
            x = torch.tensor([ids] * rows, device=device)  # HF greedy takes no num_return_sequences: one row each
            model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=n_new, min_new_tokens=n_new,
                           do_sample=False, pad_token_id=tok.pad_token_id)
        else:
            C.generate(model, tok, [ids], n=rows, max_new_tokens=n_new, temperature=0.0)
        sync(device)
        return time.perf_counter() - t
    run(2)
    return (run(8 + steps) - run(8)) / steps


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--context", type=int, default=1000)
    ap.add_argument("--rows", default="16,64")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--no-hf", action="store_true", help="skip HF generate (slow)")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    a = ap.parse_args()
    device = C.default_device()
    tok = C.load_tokenizer(a.model)
    rows_ = C.load_pairs(str(U.ROOT / "data" / "if_train.jsonl"), limit=8)
    text = " ".join(r["response_a"] + " " + r["response_b"] for r in rows_) * 4
    ids = tok(text)["input_ids"][:a.context]
    bw = bandwidth_gbs(device)
    lines = ["| dtype | rows | ours s/step | HF generate s/step | bound s/step (memory / compute) | ours / bound | "
             "HF / ours | prefill tokens/s |", "|---|---|---|---|---|---|---|---|"]
    for dtype in a.dtypes.split(","):
        model = C.load_base_model(a.model, device=device, dtype=dtype)
        model.eval()
        n_params = sum(p.numel() for p in model.parameters())
        cfg = model.config
        bytes_el = 4 if dtype == "fp32" else 2
        flops = matmul_gflops(torch.float32 if dtype == "fp32" else torch.bfloat16, device)
        with torch.no_grad():  # prefill: 8 prompts of the context, one forward
            x = torch.tensor([ids] * 8, device=device)
            model(input_ids=x[:1], logits_to_keep=1)
            sync(device)
            t = time.perf_counter()
            model(input_ids=x, logits_to_keep=1)
            sync(device)
            prefill = x.numel() / (time.perf_counter() - t)
        for rows in (int(r) for r in a.rows.split(",")):
            ours = decode_step(model, tok, ids, rows, False, a.steps)
            hf = float("nan") if a.no_hf else decode_step(model, tok, ids, rows, True, a.steps)
            kv = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads)
            ctx = a.context + 8 + a.steps // 2
            mem = (n_params * bytes_el + rows * ctx * kv * bytes_el) / (bw * 1e9)
            comp = 2 * n_params * rows / (flops * 1e9)
            bound = max(mem, comp)
            lines.append(f"| {dtype} | {rows} | {ours:.3f} | {hf:.3f} | {bound:.3f} ({mem:.3f} / {comp:.3f}) | "
                         f"**{ours / bound:.1f}x** | {hf / ours:.1f}x | {prefill:.0f} |")
            print(lines[-1], flush=True)
        del model
    body = (f"Model {a.model} ({a.context}-token context, greedy, {a.steps} steps timed after 8). Measured here: "
            f"read bandwidth {bw:.1f} GB/s; matmul throughput in the table's bound. The bound is the larger of the "
            "memory and compute times of one step (see the docstring).\n\n" + "\n".join(lines))
    print(f"decode: read bandwidth {bw:.1f} GB/s on {device}", flush=True)
    if a.no_write:
        return
    U.write_section("decode", "Decode and prefill on CPU, next to their bounds", "python bench/bench_decode.py", body)


if __name__ == "__main__":
    main()
