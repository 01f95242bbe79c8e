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
