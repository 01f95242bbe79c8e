"""One GRPO step of the judge phase: ours (train_judge_phase.py) vs TRL's GRPOTrainer, side by side.

Same model (default: Qwen3, hidden 256, 4 layers, random; --model smollm2-135m for the real one), same
judge prompts (the toy demo data, or --data if: the instruction-following task, 600-1,000 tokens), same
G, batch, micro-batch, max completion length, LoRA rank, reward (R_acc + R_fmt), for 1 and 2
optimisation passes and beta 0 and 0.001. One of our steps (one generation + num_iterations optimizer
steps) is timed against TRL's num_iterations optimizer steps that consume one generation batch. Each
side runs in a process of its own, so that its peak memory (RSS on CPU, tracked allocations on CUDA)
is its own. The random model never emits EOS, so both generate exactly max-completion-length tokens;
the real model stops at EOS, so lengths differ from step to step (both sample at T=1).

    python bench/bench_grpo.py                        # writes the grpo section of BENCHMARKS.md
    python bench/bench_grpo.py --model smollm2-135m --data if --dtype bf16 --max-len 128 --reps 1
    python bench/bench_grpo.py --sweep ...            # cost as the completion length doubles and G grows
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import _util as U
import common as C
import train_judge_phase as J


def judge_rows(n: int, data: str = "demo") -> list[dict]:
    path = U.ROOT / "data" / ("demo_train.jsonl" if data == "demo" else "if_train.jsonl")
    return C.load_pairs(str(path), limit=n, require=("rubric",))


def ours(model_dir: Path, rows, a, iters: int, beta: float, work: Path) -> dict:
    """The judge phase script itself (train_judge_phase.main) on these rows, timed per step."""
    out = work / f"ours_{iters}_{beta}"
    data, cache = work / "rows.jsonl", work / "rubrics.jsonl"
    C.write_jsonl_atomic(data, rows)
    C.write_jsonl_atomic(cache, [{"id": r["id"], "rubric": r["rubric"]} for r in rows])
    J.main(["--model", str(model_dir), "--data", str(data), "--rubric-cache", str(cache), "--out", str(out),
            "--group-size", str(a.G), "--batch-size", str(a.batch), "--micro-batch", str(a.micro),
            "--max-completion-length", str(a.max_len), "--lr", "1e-6", "--beta", str(beta),
            "--num-iterations", str(iters), "--max-steps", str(a.reps + 1), "--save-every", "0",
            "--gen-batch", str(a.batch // a.G), "--lora-r", str(a.lora_r), "--lora-alpha", str(2 * a.lora_r),
            "--dtype", a.dtype, *a.ours_args.split()])
    log = [r for r in C.read_jsonl_resumable(out / "metrics.jsonl")][1:]  # the first step warms up
    keys = ("time_step", "time_gen", "time_reward", "time_logprob", "time_fwd_bwd", "time_optimizer", "completion_len")
    return {k: U.median([r[k] for r in log]) for k in keys}


def trl(model_dir: Path, rows, a, iters: int, beta: float, work: Path) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
    torch.manual_seed(0)
    tok = C.load_tokenizer(str(model_dir))
    # the same prompt text ours builds, given to TRL as a plain (already templated) prompt
    data = []
    for r in rows:
        ids = C.judge_prompt_ids(tok, r["prompt"], r["rubric"], r["response_a"], r["response_b"])[0]
        data.append({"prompt": tok.decode(ids), "label": r["winner"], "n_criteria": len(C.parse_rubric(r["rubric"]))})
    def reward_func(prompts, completions, label, n_criteria, **kw):
        batch = [C.GroupPrompt([], {"label": y, "n_criteria": n}) for y, n in zip(label, n_criteria)]
        return J.judge_rewards(batch, completions, 1, True)[0].tolist()

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    accum = a.batch // a.micro
    on_gpu = C.default_device().type == "cuda"
    cfg = GRPOConfig(output_dir=str(work / f"trl_{iters}_{beta}"), use_cpu=not on_gpu, bf16=a.dtype == "bf16", gradient_checkpointing=False,
                     per_device_train_batch_size=a.micro, gradient_accumulation_steps=accum, steps_per_generation=accum,
                     num_generations=a.G, max_completion_length=a.max_len, num_iterations=iters, beta=beta,
                     epsilon=0.2, epsilon_high=0.28, loss_type="dapo", learning_rate=1e-6, temperature=1.0,
                     max_steps=iters * (a.reps + 1), logging_steps=1, report_to="none", save_strategy="no",
                     disable_tqdm=True, log_level="error", seed=0)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.bfloat16 if a.dtype == "bf16" else torch.float32)
    trainer = GRPOTrainer(model=model, reward_funcs=reward_func, args=cfg, train_dataset=Dataset.from_list(data),
                          processing_class=tok, peft_config=LoraConfig(r=a.lora_r, lora_alpha=2 * a.lora_r,
                                                                       target_modules="all-linear", task_type="CAUSAL_LM"),
                          callbacks=[Timer()])
    trainer.train()
    per_gen = [sum(times[i:i + iters]) for i in range(0, len(times), iters)][1:]  # one generation cycle each
    lens = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    # the length is logged once per generation batch or once per optimizer step, depending on the version
    return {"time_step": U.median(per_gen), "completion_len": U.median(lens[1:] or lens) if lens else float("nan")}


def run_side(a) -> None:
    """One side (ours or TRL) of one configuration, in its own process so its peak memory is its own;
    prints one JSON line."""
    work = Path(tempfile.mkdtemp(prefix="bench_grpo_"))
    model_dir = U.bench_model_dir(a.model, a.random_weights, work)
    rows = judge_rows(a.batch // a.G * (a.reps + 2), a.data)
    fn = ours if a.side == "ours" else trl
    res = fn(model_dir, rows, a, a.iters, a.beta, work)
    res["peak_mb"] = U.peak_memory_mb(C.default_device())
    print("RESULT " + json.dumps(res), flush=True)


def measure(a, side: str, iters: int, beta: float, **over) -> dict:
    """One side in a process of its own; {"failed": why} where it did not finish (the OOM killer included)."""
    args = {**vars(a), **over}
    cmd = ["--side", side, "--iters", str(iters), "--beta", str(beta)]
    for k in ("G", "batch", "micro", "max_len", "lora_r", "reps", "dtype", "ours_args", "model", "data"):
        if args[k] not in (None, ""):
            cmd += [f"--{k.replace('_', '-')}", str(args[k])]
    cmd += ["--random-weights"] if args["random_weights"] else []
    res = U.run_side(__file__, cmd)
    if "failed" in res:
        print(f"{side} did not finish: {res['failed']}", file=sys.stderr)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--G", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16, help="completions per step")
    ap.add_argument("--micro", type=int, default=8)
    ap.add_argument("--max-len", type=int, default=64, help="max completion tokens")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3, help="timed steps after one warm-up step")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--ours-args", default="--loss-type dapo", help="extra flags for our judge phase")
    ap.add_argument("--model", default="", help="a model folder or smollm2-135m (default: the random bench model)")
    ap.add_argument("--data", default="demo", choices=["demo", "if"],
                    help="judge prompts from the toy demo data, or the instruction-following task (600-1,000 tokens)")
    ap.add_argument("--random-weights", action="store_true",
                    help="with --model: its architecture and tokenizer with random weights, which never stop early, so "
                         "both sides generate exactly --max-len tokens (the real weights stop at EOS, at lengths that differ)")
    ap.add_argument("--configs", default="1:0,1:0.001,2:0,2:0.001", help="passes:beta pairs to time")
    ap.add_argument("--sweep", action="store_true", help="instead: how cost grows with completion length and G")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    ap.add_argument("--side", choices=["ours", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--iters", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--beta", type=float, default=0.0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.side:
        return run_side(a)
    if a.sweep:
        return sweep(a)
    model_dir = U.bench_model_dir(a.model, a.random_weights, Path(tempfile.mkdtemp()))
    rows = judge_rows(1, a.data)
    plen = len(C.judge_prompt_ids(C.load_tokenizer(str(model_dir)), rows[0]["prompt"], rows[0]["rubric"],
                                  rows[0]["response_a"], rows[0]["response_b"])[0])
    mem = "tracked CUDA allocations" if C.default_device().type == "cuda" else "peak RSS of the process"
    lines = ["| passes | beta | ours s/step | TRL s/step | ours / TRL | ours peak MB | TRL peak MB | ours / TRL memory "
             "| ours: generation | reward | old+ref log-probs | fwd+bwd | optimizer | new tokens ours / TRL |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for cfg in a.configs.split(","):
        iters, beta = int(cfg.split(":")[0]), float(cfg.split(":")[1])
        o, t = measure(a, "ours", iters, beta), measure(a, "trl", iters, beta)
        lines.append(f"| {iters} | {beta} | {U.cell(o, 'time_step')} | {U.cell(t, 'time_step')} | {U.ratio(o, t, 'time_step')} | "
                     f"{U.cell(o, 'peak_mb', '{:.0f}')} | {U.cell(t, 'peak_mb', '{:.0f}')} | {U.ratio(o, t, 'peak_mb')} | "
                     f"{U.cell(o, 'time_gen')} | {U.cell(o, 'time_reward')} | {U.cell(o, 'time_logprob')} | "
                     f"{U.cell(o, 'time_fwd_bwd')} | {U.cell(o, 'time_optimizer')} | "
                     f"{U.cell(o, 'completion_len', '{:.0f}')} / {U.cell(t, 'completion_len', '{:.0f}')} |")
        print(lines[-1], flush=True)
    model = describe_model(a)
    body = (f"Judge-phase GRPO step, median of {a.reps} steps after a warm-up step. Model: {model}, {a.dtype}; LoRA "
            f"r={a.lora_r} on all linear layers; G={a.G}, {a.batch} completions per step, micro-batch {a.micro}, at "
            f"most {a.max_len} new tokens, judge prompts of about {plen} tokens ({a.data} data). Each side runs in its "
            f"own process; memory = {mem}, model loading included. Ours' time split is per step (seconds).\n\n"
            + "\n".join(lines))
    if not a.no_write:
        # one section per model and shape: the size TRL fits and the size it does not sit side by side
        section = "grpo" if not a.model else (f"grpo_{Path(a.model).name}" + ("_random" if a.random_weights else "")
                                              + f"_{a.dtype}_G{a.G}_b{a.batch}_len{a.max_len}")
        cmd = "python bench/bench_grpo.py" + (f" --model {a.model} --data {a.data} --dtype {a.dtype} --G {a.G} --batch "
                                               f"{a.batch} --micro {a.micro} --max-len {a.max_len} --reps {a.reps} "
                                               f"--configs {a.configs}" + (" --random-weights" if a.random_weights else "")
                                               if a.model else "")
        U.write_section(section, f"GRPO judge-phase step: ours vs TRL GRPOTrainer ({model})", cmd, body, ("trl",))


def describe_model(a) -> str:
    if not a.model:
        return "Qwen3 hidden 256, 4 layers, random weights"
    return f"{a.model} architecture with random weights (exact lengths)" if a.random_weights else a.model


def sweep(a) -> None:
    """Step time and peak memory as the completion length doubles and as G grows (1 pass, beta 0.001)."""
    rows, points = [], [("max_len", v) for v in (a.max_len, 2 * a.max_len, 4 * a.max_len)] + \
        [("G", g) for g in (2, 4, 8)]
    lines = ["| varied | value | ours s/step | TRL s/step | ours / TRL | ours peak MB | TRL peak MB | ours / TRL memory "
             "| new tokens ours / TRL |", "|---|---|---|---|---|---|---|---|---|"]
    for key, val in points:
        over = {key: val}
        if key == "G":  # the same number of prompts per step: the batch grows with G
            over["batch"] = a.batch // a.G * val
            over["micro"] = min(a.micro, over["batch"])
        o, t = measure(a, "ours", 1, 0.001, **over), measure(a, "trl", 1, 0.001, **over)
        rows.append({"key": key, "value": val, "ours": o, "trl": t})
        lines.append(f"| {key} | {val} | {U.cell(o, 'time_step')} | {U.cell(t, 'time_step')} | {U.ratio(o, t, 'time_step')} "
                     f"| {U.cell(o, 'peak_mb', '{:.0f}')} | {U.cell(t, 'peak_mb', '{:.0f}')} | {U.ratio(o, t, 'peak_mb')} | "
                     f"{U.cell(o, 'completion_len', '{:.0f}')} / {U.cell(t, 'completion_len', '{:.0f}')} |")
        print(lines[-1], flush=True)
    plot = U.ROOT / "docs" / "grpo_scaling.png"
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for j, key in enumerate(("max_len", "G")):
        pts = [r for r in rows if r["key"] == key]
        for k, (metric, label) in enumerate((("time_step", "s/step"), ("peak_mb", "peak MB"))):
            ax = axes[2 * j + k]
            for side in ("ours", "trl"):
                done = [r for r in pts if metric in r[side]]  # a side that did not finish has no point
                ax.plot([r["value"] for r in done], [r[side][metric] for r in done], marker="o", label=side)
            ax.set_xscale("log", base=2)
            ax.set_xlabel(key)
            ax.set_title(label)
            ax.legend()
    fig.tight_layout()
    plot.parent.mkdir(exist_ok=True)
    fig.savefig(plot, dpi=100)
    model = describe_model(a)
    body = (f"Model {model}, {a.dtype}, {a.data} judge prompts, 1 pass, beta 0.001, {a.batch // a.G} prompts per step, "
            f"median of {a.reps} steps after a warm-up; each side in its own process.\n\n" + "\n".join(lines)
            + "\n\n![scaling](docs/grpo_scaling.png)")
    if not a.no_write:
        U.write_section("grpo_scaling", f"GRPO step: how cost grows ({model})",
                        f"python bench/bench_grpo.py --sweep --model {a.model} --data {a.data} --dtype {a.dtype} --G {a.G} "
                        f"--batch {a.batch} --micro {a.micro} --max-len {a.max_len} --reps {a.reps}"
                        + (" --random-weights" if a.random_weights else ""),
                        body, ("trl",))


if __name__ == "__main__":
    main()
