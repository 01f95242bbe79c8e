"""bf16 against fp32 on this machine's CPU, SmolLM2-135M with a LoRA adapter: what common.fast_dtype()
decides from. One training pass (forward and backward through token_logprobs, as SFT, DPO and GRPO
run it) and the decoding of a judge phase (a prefill, then one-token steps with the KV cache).

On a CPU without native bf16 (no AVX-512 BF16, no AMX) PyTorch emulates it by converting to fp32 around
every matmul; there bf16 is several times slower than fp32, and the real-model drivers run fp32.

    python bench/bench_dtype.py            # writes the dtype section of BENCHMARKS.md
"""

from __future__ import annotations

import argparse

import torch

import _util as U
import common as C


def measure(model_name: str, dtype: str, a) -> dict:
    torch.manual_seed(0)
    model = C.attach_lora(C.load_base_model(model_name, device=torch.device("cpu"), dtype=dtype), r=16, alpha=32)
    vocab = model.config.vocab_size
    pids = torch.randint(100, vocab, (a.rows, a.prompt))  # [B, P]
    cids = torch.randint(100, vocab, (a.rows, a.completion))  # [B, T]

    def train_pass():
        logp = C.token_logprobs(model, pids, torch.ones_like(pids), cids)  # [B, T]
        (-logp.float().mean()).backward()
        model.zero_grad(set_to_none=True)

    rows = torch.randint(100, vocab, (a.decode_rows, a.prompt))  # [R, P]

    def decode():
        with torch.no_grad():
            out = model(input_ids=rows, use_cache=True)
            cache, nxt = out.past_key_values, rows[:, -1:]
            for _ in range(a.decode_steps):
                out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
                cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)

    return {"train": U.timed(train_pass, a.reps), "decode": U.timed(decode, a.reps)}


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rows", type=int, default=2, help="sequences in the training pass")
    ap.add_argument("--prompt", type=int, default=256, help="prompt tokens per sequence")
    ap.add_argument("--completion", type=int, default=128, help="completion tokens per training sequence")
    ap.add_argument("--decode-rows", type=int, default=8, help="rows decoded together")
    ap.add_argument("--decode-steps", type=int, default=16, help="one-token steps after the prefill")
    ap.add_argument("--reps", type=int, default=1, help="timed repetitions after a warm-up (median)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    a = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    res = {dt: measure(a.model, dt, a) for dt in ("fp32", "bf16")}
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    native = ", ".join(k for k in ("avx512_bf16", "amx_bf16") if caps.get(k)) or "none"
    body = (f"Model {a.model} with LoRA r=16 on all linear layers, random token ids. Training pass: forward and backward "
            f"through `token_logprobs`, {a.rows} sequences of {a.prompt} prompt + {a.completion} completion tokens. "
            f"Decoding: a prefill of {a.decode_rows} rows of {a.prompt} tokens, then {a.decode_steps} one-token steps "
            f"with the KV cache. Median of {a.reps} after a warm-up, seconds. Native bf16 on this CPU: {native}; "
            f"`common.fast_dtype()` here: **{C.fast_dtype()}**.\n\n"
            "| pass | fp32 (s) | bf16 (s) | bf16 / fp32 |\n|---|---|---|---|\n")
    for key, name in (("train", "training pass"), ("decode", "prefill + decode")):
        f32, b16 = res["fp32"][key], res["bf16"][key]
        body += f"| {name} | {f32:.2f} | {b16:.2f} | **{b16 / f32:.1f}x** |\n"
    if a.no_write:
        print(body)
    else:
        U.write_section("dtype", "bf16 or fp32 on this CPU (SmolLM2-135M)", "python bench/bench_dtype.py", body)


if __name__ == "__main__":
    main()
