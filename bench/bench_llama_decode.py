"""Decode speed: our KV-cache sampler (common.generate) vs llama.cpp's OpenAI-compatible server
(llama-cpp-python[server], the one tests/test_llama_server.py builds) on the same SmolLM2-135M weights.

The shipped model is a Q4_1 GGUF file. Ours reads it dequantized to fp32 and computes in fp32; the server runs
it twice: as shipped (Q4_1 blocks, 8-bit activations: a quarter of the bytes ours reads per token) and as an
F32 GGUF of the same dequantized numbers written here (the same bytes per token as ours). Both sides use the
same threads (this process's intra-op threads, the server's --n_threads / --n_threads_batch).

  batch 1    one judge prompt, greedy, end-of-text banned so every request writes exactly --new tokens;
             decode tokens/s = (new - 1) / (time of `new` tokens - time of 1 token), so the prompt's prefill
             (or the server's reuse of its cached prompt) cancels; median over --prompts prompts
  batch 16   16 different judge prompts at once, `new` tokens each; completion tokens / wall seconds, the
             16 prefills included. Ours decodes the 16 rows as one batch; the server is sent 16 concurrent
             requests (llama-cpp-python's server runs them one after another)
  bound      batch 1's memory-bandwidth bound: read bandwidth measured here / bytes of weights per token

    RUBRIC_ARM_LLAMA=1 source env.sh   # builds llama-cpp-python[server] once (about 10 minutes on 2 cores)
    python bench/bench_llama_decode.py  # writes the llama_decode section of BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from bench_decode import bandwidth_gbs

import _util as U
import common as C

MODEL = "smollm2-135m"


# ---- the weights ---------------------------------------------------------------------------------
def shipped_gguf() -> Path:
    module, name, _ = C.SHIPPED_MODELS[MODEL]
    return Path(list(importlib.util.find_spec(module).submodule_search_locations)[0]) / name


def f32_copy(src: Path, dst: Path) -> Path:
    """The GGUF file with every tensor dequantized to F32: the numbers ours computes with, at ours' bytes."""
    import gguf
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue  # written by the writer itself
        value = 0 if key == "general.file_type" else field.contents()  # 0: all F32
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, field.types[0], sub_type=sub)
    for t in reader.tensors:
        writer.add_tensor(t.name, np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def tensor_bytes(path: Path) -> int:
    import gguf
    return sum(int(t.n_bytes) for t in gguf.GGUFReader(path).tensors)


# ---- the server ----------------------------------------------------------------------------------
class Server:
    """llama_cpp.server on a free local port for the duration of a `with` block; its log goes to a file
    (a pipe would fill up and block it)."""

    def __init__(self, gguf_path: Path, threads: int, log: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1"
        self.cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path), "--host", "127.0.0.1",
                    "--port", str(port), "--n_ctx", "4096", "--n_threads", str(threads), "--n_threads_batch",
                    str(threads), "--seed", "0"]
        self.log = log

    def __enter__(self):
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=self.log.open("w"))
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(self.url + "/models", timeout=2):
                    return self
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.proc.kill()
                    raise SystemExit(f"llama_cpp.server did not come up: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.5)

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=60)

    def complete(self, prompt: str, new: int, ban: int) -> dict:
        body = {"prompt": prompt, "max_tokens": new, "temperature": 0.0, "logit_bias": {str(ban): -100.0}}
        req = urllib.request.Request(self.url + "/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=1800) as r:
            return json.loads(r.read())


# ---- the measurements ----------------------------------------------------------------------------
def decode_rate(run, new: int) -> float:
    """Tokens/s of decoding alone: run(n) writes n tokens; the first token's cost (with the prefill) cancels."""
    run(1)  # warm: the server caches the prompt, ours warms its kernels
    t = time.perf_counter()
    run(1)
    one = time.perf_counter() - t
    t = time.perf_counter()
    run(new)
    return (new - 1) / (time.perf_counter() - t - one)


def ours_side(model, tok, prompts: list[list[int]], new: int, n_rates: int) -> dict:
    # a tokenizer whose end-of-text id matches nothing: every row runs to `new` tokens, as the server's banned one
    never_ends = SimpleNamespace(eos_token_id=-1, pad_token_id=tok.pad_token_id, decode=tok.decode)

    def run(p, n):
        return C.generate(model, never_ends, [p], 1, n, temperature=0.0)
    rates = [decode_rate(lambda n, p=p: run(p, n), new) for p in prompts[:n_rates]]
    t = time.perf_counter()
    out = C.generate(model, never_ends, prompts, 1, new, temperature=0.0)
    wall = time.perf_counter() - t
    return {"batch1": statistics.median(rates), "batch16": int(out.completion_mask.sum()) / wall}


def server_side(server: Server, texts: list[str], new: int, ban: int, n_rates: int) -> dict:
    def count(r: dict) -> int:
        return r["usage"]["completion_tokens"]
    rates = [decode_rate(lambda n, s=s: server.complete(s, n, ban), new) for s in texts[:n_rates]]
    t = time.perf_counter()
    with ThreadPoolExecutor(len(texts)) as pool:
        done = list(pool.map(lambda s: server.complete(s, new, ban), texts))
    wall = time.perf_counter() - t
    return {"batch1": statistics.median(rates), "batch16": sum(count(r) for r in done) / wall,
            "tokens": [count(r) for r in done], "prompt_tokens": [r["usage"]["prompt_tokens"] for r in done]}


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--new", type=int, default=64, help="new tokens per request")
    ap.add_argument("--rows", type=int, default=16, help="the batch of the second measurement")
    ap.add_argument("--prompts", type=int, default=3, help="prompts the batch-1 rate is the median over")
    ap.add_argument("--data", default=str(U.ROOT / "data" / "if_train.jsonl"), help="judge prompts from these pairs")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads on both sides (default: every core this process may use; a fixed count, not the "
                         "stages' adaptive pool, whose first guess follows the last minute's load and would measure a "
                         "machine that just finished other work with fewer threads)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    a = ap.parse_args()
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError:
        raise SystemExit("llama-cpp-python[server] is not installed: RUBRIC_ARM_LLAMA=1 source env.sh builds it") from None
    C.configure_threads(a.threads or len(C.usable_cores()))
    threads = torch.get_num_threads()
    tok = C.load_tokenizer(MODEL)
    rows = C.load_pairs(a.data, limit=a.rows, require=("rubric",))
    prompts = [C.judge_prompt_ids(tok, r["prompt"], r["rubric"], r["response_a"], r["response_b"])[0] for r in rows]
    texts = [tok.decode(p, skip_special_tokens=False) for p in prompts]
    ban = tok.eos_token_id
    bw = bandwidth_gbs(torch.device("cpu"))

    model = C.load_base_model(MODEL, dtype="fp32")
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    res = {"ours, fp32": ours_side(model, tok, prompts, a.new, a.prompts) | {"bytes": n_params * 4}}
    print("ours", res["ours, fp32"], flush=True)
    del model
    with tempfile.TemporaryDirectory() as tmp:
        files = {"llama.cpp server, Q4_1 (as shipped)": shipped_gguf(),
                 "llama.cpp server, F32 (the same numbers as ours)": f32_copy(shipped_gguf(), Path(tmp) / "f32.gguf")}
        for name, path in files.items():
            with Server(path, threads, Path(tmp) / "server.log") as server:
                res[name] = server_side(server, texts, a.new, ban, a.prompts) | {"bytes": tensor_bytes(path)}
            print(name, res[name], flush=True)
    ours = res["ours, fp32"]
    lines = ["| side | weights MB read per token | batch 1: decode tokens/s | bound tokens/s | of the bound | "
             f"batch {a.rows}: tokens/s, prefills included | ours / this side, batch 1 | ours / this side, batch {a.rows} |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in res.items():
        bound = bw * 1e9 / r["bytes"]
        lines.append(f"| {name} | {r['bytes'] / 1e6:.0f} | {r['batch1']:.1f} | {bound:.1f} | {r['batch1'] / bound:.0%} | "
                     f"{r['batch16']:.1f} | **{ours['batch1'] / r['batch1']:.2f}** | **{ours['batch16'] / r['batch16']:.2f}** |")
    plen = [len(p) for p in prompts]
    served = res[next(iter(files))]
    body = (f"SmolLM2-135M-Instruct ({n_params / 1e6:.0f}M parameters); judge prompts of the instruction-following pairs "
            f"({min(plen)}-{max(plen)} tokens ours, {min(served['prompt_tokens'])}-{max(served['prompt_tokens'])} as the "
            f"server counts them), greedy, {a.new} new tokens each with end-of-text banned (the server wrote "
            f"{min(served['tokens'])}-{max(served['tokens'])}); {threads} threads on both sides; read bandwidth "
            f"measured here {bw:.1f} GB/s. Batch 1: median over {a.prompts} prompts of the decode rate with the prefill "
            f"cancelled out; batch {a.rows}: {a.rows} different prompts at once (ours: one decode batch; the server: "
            f"{a.rows} concurrent requests, which it serves one after another). Ratios above 1: ours faster.\n\n"
            + "\n".join(lines) + "\n\nRaw: `" + json.dumps(res) + "`")
    print(body)
    if not a.no_write:
        U.write_section("llama_decode", "Decode: ours vs llama.cpp's server on the same SmolLM2-135M weights",
                        "python bench/bench_llama_decode.py", body, ("llama-cpp-python",))


if __name__ == "__main__":
    os.environ.setdefault("RUBRIC_ARM_NO_PROGRESS", "1")
    main()
