"""The GPU check: one command, one line per result, under 8 minutes on one CUDA GPU.

    bash bench/gpu_check.sh          # on a CUDA machine (set up .venv first: bash tests/run.sh --co -q)
    bash bench/gpu_check.sh --dry    # on CPU: the same checks at toy sizes; what needs CUDA says SKIP

Checks, in order (each prints `PASS|FAIL|SKIP name: detail`):
  tests        the test suite's CUDA-relevant tests (models, 4-bit, memory model) on this machine
  4bit-lora    one LoRA step over a 4-bit nf4 base (bitsandbytes): finite loss, the adapter moves
  attention    which attention kernel the loader picks (flash_attention_2 when flash-attn is installed)
  bf16         the default dtype on the device; a bf16 forward + backward is finite
  memory       bench/memory.py --measure on a mid-size random Qwen3: estimate vs measured peak per phase
  grpo-vs-trl  one judge-phase GRPO step, ours vs TRL GRPOTrainer (needs bench/requirements-bench.txt)
  decode       our sampler's decode step and tokens/s beside the memory-bandwidth bound of the device
               (SmolLM2-135M on the GPU; the random tiny model in the dry run)
Exit status: 1 if any check failed, else 0.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import _util as U
import common as C
import toy_task

RESULTS: list[str] = []


def report(status: str, name: str, detail: str) -> None:
    RESULTS.append(status)
    print(f"{status} {name}: {detail}", flush=True)


def run(cmd: list[str], timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=U.ROOT, capture_output=True, text=True, timeout=timeout)


def check_tests(dry: bool) -> None:
    if dry:
        return report("SKIP", "tests", "on CPU the suite itself runs them (bash tests/run.sh)")
    p = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_models.py",
             "tests/test_bench_memory.py", "tests/test_real_model.py", "-m", "not slow"], 300)
    last = (p.stdout.strip().splitlines() or ["no output"])[-1]
    report("PASS" if p.returncode == 0 else "FAIL", "tests", last)


def check_4bit_lora(model_dir: Path, device: torch.device) -> None:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return report("SKIP", "4bit-lora", "bitsandbytes is not installed")
    base = C.load_base_model(str(model_dir), load_4bit=True, device=device)
    model = C.attach_lora(base, r=8, alpha=16)
    before = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, model.config.vocab_size, (2, 32), device=device)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    moved = max((v - before[k]).abs().max().item() for k, v in model.named_parameters() if v.requires_grad)
    n4 = sum(type(m).__name__ == "Linear4bit" for m in model.modules())
    ok = torch.isfinite(loss).item() and moved > 0 and n4 > 0
    report("PASS" if ok else "FAIL", "4bit-lora", f"{n4} Linear4bit layers on {device}, loss {loss.item():.3f}, "
           f"largest adapter change {moved:.2e}")


def check_attention(device: torch.device) -> None:
    impl = C.pick_attn_implementation(device)
    try:
        import flash_attn  # noqa: F401
        have_fa = True
    except ImportError:
        have_fa = False
    if device.type != "cuda":
        return report("PASS" if impl != "flash_attention_2" else "FAIL", "attention",
                      f"{impl} on CPU (flash-attn needs CUDA: SKIP for it)")
    want = "flash_attention_2" if have_fa else "sdpa"
    report("PASS" if impl == want else "FAIL", "attention",
           f"{impl} (flash-attn {'installed' if have_fa else 'not installed: pip install flash-attn'})")


def check_bf16(model_dir: Path, device: torch.device) -> None:
    model = C.load_base_model(str(model_dir), device=device)  # dtype auto: bf16 on CUDA, fp32 on CPU
    dtype = next(model.parameters()).dtype
    model = C.attach_lora(model, r=8, alpha=16)
    ids = torch.randint(0, model.config.vocab_size, (2, 32), device=device)
    with C.half_precision(model):  # CPU: bf16 autocast over fp32 weights; CUDA: a no-op, weights are bf16
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads_ok = all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    want = torch.bfloat16 if device.type == "cuda" else torch.float32
    ok = dtype == want and torch.isfinite(loss).item() and grads_ok
    report("PASS" if ok else "FAIL", "bf16", f"weights {dtype} on {device}, loss {loss.item():.3f}, grads finite {grads_ok}")


def check_memory(dry: bool) -> None:
    shape = "tiny" if dry else "mid"
    p = run([sys.executable, "bench/memory.py", "--measure", "--no-write", "--shape", shape, "--bf16", "--allocator", "default"],
            300)
    if p.returncode != 0:
        return report("FAIL", "memory", (p.stderr.strip().splitlines() or ["?"])[-1])
    rows = [r for r in p.stdout.splitlines() if r.startswith("| ") and not r.startswith("| phase")]
    worst = []
    for r in rows:
        cells = [c.strip(" *") for c in r.strip("|").split("|")]
        est, meas = cells[7], cells[8]
        if meas.endswith("GB"):
            e, m = float(est), float(meas.split()[0])
            worst.append((abs(e - m) / m if m > 0 else float("inf"), cells[0], e, m))
    if dry:  # a tiny model's step is below what the estimate resolves; the CPU check is memory.py --shape smollm2
        return report("PASS" if len(rows) == 5 and len(worst) in (0, 5) else "FAIL", "memory",
                      f"{len(rows)} phases ran on CPU ({shape} shape, {len(worst)} measured); the estimate is "
                      "compared with the measured peak on CUDA (mid shape): SKIP for the comparison")
    if not worst:
        return report("FAIL", "memory", f"{len(rows)} phases ran but none gave a measured peak")
    err, phase, e, m = max(worst)
    report("PASS" if err <= 0.25 else "FAIL", "memory", f"{shape} shape, worst phase {phase}: estimate {e:.2f} GB vs "
           f"measured {m:.2f} GB ({100 * err:.0f}% off; target within 25%)")


def check_grpo_vs_trl(dry: bool) -> None:
    try:
        import trl  # noqa: F401
    except ImportError:
        return report("SKIP", "grpo-vs-trl", "TRL is not installed (pip install -r bench/requirements-bench.txt)")
    args = ["--reps", "1", "--configs", "1:0.001", "--no-write"]
    args += ["--max-len", "8", "--batch", "8", "--micro", "8"] if dry else ["--dtype", "bf16", "--max-len", "128"]
    p = run([sys.executable, "bench/bench_grpo.py", *args], 600)
    line = [r for r in p.stdout.splitlines() if r.startswith("| 1 |")]
    if p.returncode != 0 or not line:
        return report("FAIL", "grpo-vs-trl", (p.stderr.strip().splitlines() or ["?"])[-1])
    cells = [c.strip(" *") for c in line[0].strip("|").split("|")]
    report("PASS", "grpo-vs-trl", f"ours {cells[2]} s/step, TRL {cells[3]} s/step (ours/TRL {cells[4]}); "
           f"peak MB ours {cells[5]}, TRL {cells[6]} (ours/TRL {cells[7]})")


def check_decode(dry: bool, model_dir: Path) -> None:
    # the real model on a GPU; the random tiny one in the dry run (only the path is checked there)
    args = ["--model", str(model_dir) if dry else "smollm2-135m", "--rows", "16" if dry else "16,64",
            "--dtypes", "bf16", "--no-hf", "--no-write"]
    args += ["--context", "256", "--steps", "8"] if dry else []
    p = run([sys.executable, "bench/bench_decode.py", *args], 300)
    rows = [r for r in p.stdout.splitlines() if r.startswith("| bf16")]
    bw = re.search(r"read bandwidth ([\d.]+) GB/s", p.stdout)
    if p.returncode != 0 or not rows:
        return report("FAIL", "decode", (p.stderr.strip().splitlines() or ["?"])[-1])
    for r in rows:
        c = [x.strip(" *") for x in r.strip("|").split("|")]
        n, step = int(c[1]), float(c[2])
        report("PASS", "decode", f"{n} rows: {step * 1000:.1f} ms/step = {n / step:.0f} tokens/s; bound "
               f"{c[4]} s/step (memory / compute) at {bw.group(1) if bw else '?'} GB/s read; ours/bound {c[5]}")


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry", action="store_true", help="run on CPU at toy sizes; skip what needs CUDA")
    a = ap.parse_args()
    device = C.default_device()
    if device.type != "cuda" and not a.dry:
        raise SystemExit("error: no CUDA device found; run with --dry to check the script on CPU")
    t0 = time.time()
    print(f"gpu_check on {U.machine()} ({U.versions('trl', 'bitsandbytes')})", flush=True)
    model_dir = toy_task.make_tiny_model(Path(tempfile.mkdtemp(prefix="gpu_check_")) / "model")
    checks = [("tests", lambda: check_tests(a.dry)), ("4bit-lora", lambda: check_4bit_lora(model_dir, device)),
              ("attention", lambda: check_attention(device)), ("bf16", lambda: check_bf16(model_dir, device)),
              ("memory", lambda: check_memory(a.dry)), ("grpo-vs-trl", lambda: check_grpo_vs_trl(a.dry)),
              ("decode", lambda: check_decode(a.dry, model_dir))]
    for name, fn in checks:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - one line per check, whatever went wrong
            report("FAIL", name, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    print(f"gpu_check: {RESULTS.count('PASS')} passed, {RESULTS.count('FAIL')} failed, {RESULTS.count('SKIP')} skipped "
          f"in {time.time() - t0:.0f} s", flush=True)
    sys.exit(1 if "FAIL" in RESULTS else 0)


if __name__ == "__main__":
    main()
