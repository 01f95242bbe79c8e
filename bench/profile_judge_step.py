"""Where a judge-phase GRPO step of SmolLM2-135M spends its time on CPU, and what each part costs.

The judge phase (train_judge_phase.py) logs each step's split: rollouts (generation), the reference's
log-probs, forward + backward, optimizer. This script reads that split from a run's metrics.jsonl,
then takes the part that dominates, generation, apart on the phase's own model (the trainable LoRA
adapter plus the frozen reference adapter, bf16 base under autocast):

    decode step, as the phase runs it      PEFT model, both adapters loaded, the trainable one active
    decode step, adapters switched off     the same model inside disable_adapter(): what LoRA adds
    decode step, adapter merged            a plain model with the LoRA folded into its weights
    prefill                                 the 4 prompts of a step, once each (the group shares it)

and lists the operators that take the most time in the phase's decode step (torch.profiler).
Every decode step is timed as (time for 8 + S new tokens - time for 8) / S, sampling at T=1 from
real judge prompts, with no end-of-turn stop (every variant decodes the same steps).

    python bench/profile_judge_step.py --adapter runs/judge_learning/sft_w10/adapter \\
        --metrics runs/judge_learning/judge_rl_s0/metrics.jsonl      # writes a BENCHMARKS.md section
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

import _util as U
import common as C


def phase_split(metrics: Path) -> tuple[str, int]:
    """Median seconds per part of the logged steps (the first step is left out: warm-up)."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()][1:]
    parts = ["time_gen", "time_logprob", "time_fwd_bwd", "time_optimizer", "time_step"]
    med = {p: statistics.median(r[p] for r in rows) for p in parts}
    clen = statistics.median(r["completion_len"] for r in rows)
    line = " | ".join(f"{med[p]:.1f} ({100 * med[p] / med['time_step']:.0f}%)" for p in parts[:-1])
    return (f"| {len(rows)} | {med['time_step']:.1f} | {line} | {clen:.0f} |"), len(rows)


class NoStop:
    """The tokenizer as generate() sees it, with an end-of-turn id no token has: every row runs to the
    limit, so that each variant decodes the same number of steps."""

    def __init__(self, tok):
        self.tok, self.eos_token_id, self.pad_token_id = tok, -1, tok.pad_token_id

    def decode(self, *args, **kw):
        return self.tok.decode(*args, **kw)


def decode_seconds(model, tok, prompts: list[list[int]], G: int, steps: int) -> float:
    def run(n_new: int) -> float:
        t = time.perf_counter()
        C.generate(model, NoStop(tok), prompts, n=G, max_new_tokens=n_new, temperature=1.0)
        return time.perf_counter() - t
    run(2)
    return (run(8 + steps) - run(8)) / steps


def prefill_seconds(model, tok, prompts: list[list[int]]) -> float:
    t = time.perf_counter()
    C.generate(model, tok, prompts, n=1, max_new_tokens=1, temperature=1.0)
    return time.perf_counter() - t


def op_times(model, tok, prompts: list[list[int]], G: int, n_new: int) -> dict[str, tuple[int, float]]:
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        C.generate(model, NoStop(tok), prompts, n=G, max_new_tokens=n_new, temperature=1.0)
    return {e.key: (e.count, e.self_cpu_time_total / 1e6) for e in prof.key_averages()}


def top_ops(model, tok, prompts: list[list[int]], G: int, steps: int, k: int = 10) -> str:
    """The decode steps' operators alone: a profile of 1 + steps new tokens minus one of 1 (the prefill)."""
    op_times(model, tok, prompts, G, 2)  # warm-up
    full, pre = op_times(model, tok, prompts, G, 1 + steps), op_times(model, tok, prompts, G, 1)
    ops = {key: (n - pre.get(key, (0, 0.0))[0], t - pre.get(key, (0, 0.0))[1]) for key, (n, t) in full.items()}
    total = sum(max(t, 0.0) for _, t in ops.values())
    lines = ["| operator | calls per step | ms per step | share |", "|---|---|---|---|"]
    for key, (n, t) in sorted(ops.items(), key=lambda kv: -kv[1][1])[:k]:
        lines.append(f"| `{key}` | {n / steps:.0f} | {1e3 * t / steps:.1f} | {100 * t / total:.0f}% |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 usage="%(prog)s [flags: listed below]")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--adapter", help="the phase's starting adapter (e.g. the SFT judge); none: a fresh LoRA")
    ap.add_argument("--metrics", type=Path, help="a judge-phase run's metrics.jsonl: its logged split goes first")
    ap.add_argument("--prompts", type=int, default=4, help="prompts per step (batch / G)")
    ap.add_argument("--G", type=int, default=4, help="samples per prompt")
    ap.add_argument("--steps", type=int, default=24, help="decode steps timed")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    a = ap.parse_args()
    torch.manual_seed(0)
    tok = C.load_tokenizer(a.model)
    rows = C.load_pairs(str(U.ROOT / "data" / "if_train.jsonl"), limit=a.prompts)
    prompts = [C.judge_prompt_ids(tok, r["prompt"], r["rubric"], r["response_a"], r["response_b"])[0] for r in rows]
    plen = statistics.mean(len(p) for p in prompts)
    base = C.load_base_model(a.model, dtype="bf16")
    merged = None
    if a.adapter:
        merged = C.attach_lora(copy.deepcopy(base), a.adapter, trainable=False).merge_and_unload()
    model = C.attach_lora(base, a.adapter, 16, 32, 0.0, "all-linear")
    C.add_reference_adapter(model, a.adapter)
    out = {}
    out["as the phase runs it (2 adapters, one active)"] = decode_seconds(model, tok, prompts, a.G, a.steps)
    with C.adapter(model, None):
        out["adapters switched off"] = decode_seconds(model, tok, prompts, a.G, a.steps)
    if merged is not None:
        out["adapter merged into the weights"] = decode_seconds(merged, tok, prompts, a.G, a.steps)
    out["16 rows of one prompt (no left padding), as the phase"] = decode_seconds(
        model, tok, prompts[:1], a.G * a.prompts, a.steps)
    pre = prefill_seconds(model, tok, prompts)
    ref = out["as the phase runs it (2 adapters, one active)"]
    lines = ["| decode step, 16 rows | s / step | vs the phase |", "|---|---|---|"]
    lines += [f"| {name} | {s:.3f} | {s / ref:.2f} |" for name, s in out.items()]
    ops = top_ops(model, tok, prompts, a.G, a.steps)
    body = (f"Model {a.model} in bf16, LoRA r=16 on all linear layers{' from ' + a.adapter if a.adapter else ''}; "
            f"{a.prompts} judge prompts of about {plen:.0f} tokens (if_train), G={a.G}: {a.prompts * a.G} rows per "
            f"decode step; each prompt prefilled once for its group.\n\n")
    if a.metrics:
        split, n = phase_split(a.metrics)
        body += (f"The phase's own split (median over logged steps 2-{n + 1} of `{a.metrics}`; seconds and share "
                 "of the step):\n\n| steps | s / step | generation | reference log-probs | forward + backward | "
                 "optimizer | completion tokens |\n|---|---|---|---|---|---|---|\n" + split + "\n\n")
    body += ("\n".join(lines) + f"\n\nPrefill of the {a.prompts} prompts: {pre:.2f} s. Operators of the phase's "
             f"decode steps (torch.profiler, self CPU time of {a.steps} steps minus the prefill's, per step):\n\n" + ops)
    print(body, flush=True)
    if not a.no_write:
        cmd = "python bench/profile_judge_step.py" + (f" --adapter {a.adapter}" if a.adapter else "") + \
              (f" --metrics {a.metrics}" if a.metrics else "")
        U.write_section("profile_judge_step", "Judge-phase step on SmolLM2-135M: where the time goes", cmd, body)


if __name__ == "__main__":
    main()
