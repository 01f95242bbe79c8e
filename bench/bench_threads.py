"""A judge-phase step on a busy machine: alone, and beside a competing process, before and after the
project's thread settings.

The default demo's judge phase (toy implicit base, its GRPO flags) runs for a few steps in a subprocess; the
median step time is read from its metrics.jsonl (the first step, with its warm-up, left out). Neighbours:
  busy loop     python -c "while True: pass"             (one core taken, one free)
  torch         a PyTorch matmul loop with PyTorch's default threads
  second copy   the same judge phase, started at the same time (its steps are timed too)
Settings:
  before        RUBRIC_ARM_THREADS=0: PyTorch's and OpenMP's defaults (a thread per core, threads that spin
                while they wait), what every stage used before
  after         the stages' own settings (common.configure_threads): no environment given

    python bench/bench_threads.py                     # about 10 minutes on 2 cores; writes BENCHMARKS.md
    python bench/bench_threads.py --steps 3 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _util as U  # (first: it puts the project on the path)
import common as C
import toy_task

NEIGHBOURS = {
    "alone": None,
    "busy loop": [sys.executable, "-c", "while True: pass"],
    "torch": [sys.executable, "-c", "import torch\nx = torch.randn(384, 384)\nwhile True: x = torch.tanh(x @ x)"],
    "second copy": "copy",
}
SETTINGS = {"before": {"RUBRIC_ARM_THREADS": "0"}, "after": {},
            # the two remedies measured before choosing the adaptive pool (--settings to include them)
            "passive wait": {"RUBRIC_ARM_THREADS": "0", "OMP_WAIT_POLICY": "PASSIVE"},
            "one thread": {"RUBRIC_ARM_THREADS": "1"}}
JUDGE_ARGS = ["--group-size", "4", "--batch-size", "16", "--micro-batch", "16", "--max-completion-length", "200",
              "--lr", "5e-4", "--save-every", "1000"]  # the default demo's judge phase (alternate.sh)


def prepare(work: Path) -> tuple[Path, Path]:
    """The implicit task's RL rows (64) and a rubric cache of their reference rubrics."""
    rows = toy_task.make_implicit_split(64, 1300, "rl", False, False)
    data, cache = work / "rl.jsonl", work / "rubrics.jsonl"
    C.write_jsonl_atomic(data, rows)
    C.write_jsonl_atomic(cache, [{"id": r["id"], "rubric": r["rubric"]} for r in rows])
    return data, cache


def judge_phase(work: Path, data: Path, cache: Path, steps: int, env: dict, tag: str) -> subprocess.Popen:
    out = work / f"run-{tag}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "train_judge_phase.py", "--model", str(toy_task.IMPLICIT_BASE), "--data", str(data),
           "--rubric-cache", str(cache), "--out", str(out), "--max-steps", str(steps), "--seed", "0", *JUDGE_ARGS]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "KMP_", "GOMP_", "MKL_"))
             and k != "RUBRIC_ARM_THREADS"}
    return subprocess.Popen(cmd, cwd=U.ROOT, env={**clean, "RUBRIC_ARM_NO_PROGRESS": "1", **env},
                            stdout=subprocess.DEVNULL, stderr=open(work / f"{tag}.log", "w"))


def step_times(work: Path, tag: str) -> list[float]:
    rows = [json.loads(line) for line in (work / f"run-{tag}" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["time_step"] for r in rows if "time_step" in r][1:]  # the first step warms up


def measure(work: Path, data: Path, cache: Path, steps: int, setting: str, neighbour: str) -> dict:
    env = SETTINGS[setting]
    other = NEIGHBOURS[neighbour]
    side = None
    if isinstance(other, list):
        side = subprocess.Popen(other, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "RUBRIC_ARM"))})
        time.sleep(1.0)
    try:
        t0 = time.perf_counter()
        main = judge_phase(work, data, cache, steps, env, "main")
        copy = judge_phase(work, data, cache, steps, env, "copy") if other == "copy" else None
        codes = [main.wait()] + ([copy.wait()] if copy else [])
        wall = time.perf_counter() - t0
    finally:
        if side:
            side.kill()
            side.wait()
    if any(codes):
        raise SystemExit(f"error: a judge phase failed; see {work}/main.log")
    ts = step_times(work, "main") + (step_times(work, "copy") if copy else [])
    return {"setting": setting, "neighbour": neighbour, "step_s": statistics.median(ts), "steps": ts, "wall_s": wall}


def table(res: list[dict], settings: list[str]) -> str:
    alone = {r["setting"]: r["step_s"] for r in res if r["neighbour"] == "alone"}
    head = " | ".join(f"{s}: s/step | x alone" for s in settings)
    lines = [f"| neighbour | {head} | after / before |", "|---|" + "---|---|" * len(settings) + "---|"]
    for nb in NEIGHBOURS:
        got = {r["setting"]: r["step_s"] for r in res if r["neighbour"] == nb}
        if len(got) < len(settings):
            continue
        cells = " | ".join(f"{got[s]:.2f} | {got[s] / alone[s]:.1f}x" for s in settings)
        ratio = f"**{got['after'] / got['before']:.2f}**" if {"after", "before"} <= set(got) else "-"
        lines.append(f"| {nb} | {cells} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False)
    ap.add_argument("--steps", type=int, default=4, help="judge-phase steps per run (the first is not timed)")
    ap.add_argument("--neighbours", nargs="+", default=list(NEIGHBOURS), choices=list(NEIGHBOURS))
    ap.add_argument("--settings", nargs="+", default=["before", "after"], choices=list(SETTINGS),
                    help="thread settings to compare ('passive wait', 'one thread': the remedies not chosen)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md as it is")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-threads-"))
    data, cache = prepare(work)
    res = []
    for nb in a.neighbours:
        for setting in a.settings:
            r = measure(work, data, cache, a.steps, setting, nb)
            print(f"{setting:6s} {nb:12s} {r['step_s']:.2f} s/step {[round(t, 2) for t in r['steps']]}", flush=True)
            res.append(r)
    shutil.rmtree(work, ignore_errors=True)
    body = (f"The default demo's judge phase (toy implicit base, G=4, 16 completions a step, up to 200 new tokens), "
            f"median step time over steps 2..{a.steps} (both copies' steps for 'second copy'). Neighbours: a one-thread "
            "busy loop, a PyTorch matmul loop with its default threads, a second copy of the same phase. 'before': "
            "RUBRIC_ARM_THREADS=0 (PyTorch's and OpenMP's defaults); 'after': the stages' own thread settings; 'passive "
            "wait': the defaults with OMP_WAIT_POLICY=PASSIVE; 'one thread': RUBRIC_ARM_THREADS=1.\n\n"
            + table(res, a.settings) + "\n\nRaw: `" + json.dumps([{k: (round(v, 3) if isinstance(v, float) else v)
                                                    for k, v in r.items() if k != "steps"} for r in res]) + "`\n")
    print(body)
    if not a.no_write:
        U.write_section("threads", "A judge-phase step beside other processes: thread settings before and after",
                      "python bench/bench_threads.py" + (f" --steps {a.steps}" if a.steps != 4 else "")
                      + (" --settings " + " ".join(f"'{x}'" if " " in x else x for x in a.settings)
                         if a.settings != ["before", "after"] else ""), body)


if __name__ == "__main__":
    main()
