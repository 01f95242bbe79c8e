"""Shared helpers of the benchmarks: the bench model, medians, and BENCHMARKS.md sections."""

from __future__ import annotations

import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tasks")]  # the stages, the task builders
os.environ.setdefault("RUBRIC_ARM_NO_PROGRESS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import common as C  # noqa: E402
import toy_task  # noqa: E402

BENCH_MD = ROOT / "BENCHMARKS.md"


def bench_model(out_dir: Path, hidden: int = 256, layers: int = 4) -> Path:
    """The tiny-but-not-trivial model of the benches: Qwen3, hidden 256, 4 layers, random weights."""
    if not (out_dir / "config.json").exists():
        toy_task.make_tiny_model(out_dir, hidden=hidden, layers=layers, heads=4, kv_heads=2, vocab=1024)
    return out_dir


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def timed(fn, reps: int) -> float:
    """Median seconds of `reps` calls of fn, after one warm-up call (first-call allocations, kernel choice)."""
    import time
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return median(ts)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU only, {os.cpu_count()} cores ({cpu})"
    return f"{dev}; {platform.system()} {platform.machine()}"


def versions(*names: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    out = []
    for n in ("torch", "transformers", "peft", *names):
        try:
            out.append(f"{n} {version(n)}")
        except PackageNotFoundError:
            pass
    return ", ".join(out)


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def write_section(name: str, title: str, command: str, body: str, extra_versions: tuple = ()) -> None:
    """Replace (or append) the section <!-- bench:name --> ... <!-- /bench:name --> of BENCHMARKS.md."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = (f"<!-- bench:{name} -->\n## {title}\n\n"
             f"- command: `{command}`\n- machine: {machine()}\n- date: {stamp}, commit {commit()}\n"
             f"- versions: {versions(*extra_versions)}\n\n{body.strip()}\n<!-- /bench:{name} -->\n")
    text = BENCH_MD.read_text() if BENCH_MD.exists() else (
        "# Benchmarks\n\nEvery figure below was written by the script named in its section, which runs ours and the "
        "reference side by side in one process. Rerun the command to refresh a section.\n\n")
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->\n", re.S)
    text = pattern.sub(lambda m: block, text) if pattern.search(text) else text + "\n" + block
    C.atomic_write_text(BENCH_MD, text)
    print(block)


def peak_memory_mb(device) -> float:
    """Peak memory of this process: tracked CUDA allocations on a GPU, else the peak RSS."""
    import torch
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def random_copy(model_dir: Path, out: Path) -> Path:
    """The same architecture and tokenizer with fresh random weights (seed 0): it practically never
    samples EOS, so both sides generate exactly the length limit and the lengths compare."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    if not (out / "config.json").exists():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(model_dir)))
        model.save_pretrained(str(out))
        C.load_tokenizer(str(model_dir)).save_pretrained(str(out))
    return out


def bench_model_dir(model: str, random_weights: bool, work: Path) -> Path:
    """The model a bench runs: the random bench model (no --model), a real one, or its random copy."""
    if not model:
        return bench_model(work / "model")
    real = Path(C.resolve_model(model))
    return random_copy(real, work / "random_model") if random_weights else real


def run_side(script: str, side_args: list[str]) -> dict:
    """Run one side of a comparison (`script --side ...`) in a process of its own, so that its peak memory
    is its own; the side prints one `RESULT {json}` line."""
    import json
    p = subprocess.run([sys.executable, script, *side_args], capture_output=True, text=True)
    line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    if p.returncode != 0 or not line:
        oom = p.returncode in (-9, 137)
        last = [x for x in p.stderr.splitlines() if x.strip()][-1:] or ["no message"]
        return {"failed": "killed (out of memory)" if oom else f"exit {p.returncode}: {last[0].strip()[:200]}"}
    return json.loads(line[-1][len("RESULT "):])


def cell(res: dict, key: str, fmt: str = "{:.2f}") -> str:
    """One side's figure for a table; "failed" where that side did not finish (the ratio cell of the same row
    says why, once)."""
    return fmt.format(res[key]) if key in res else "failed" if "failed" in res else "-"


def ratio(ours: dict, ref: dict, key: str) -> str:
    """ours / TRL, bold; a side that did not finish is named instead (TRL running out of memory
    where ours finished is a result, not a gap)."""
    if key in ours and key in ref:
        return f"**{ours[key] / ref[key]:.2f}**"
    if "failed" in ref and "failed" not in ours:
        return f"TRL: {ref['failed']}"
    return f"ours: {ours.get('failed', '-')}" if "failed" in ours else "-"
