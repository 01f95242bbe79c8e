"""One GRPO step of the judge phase: ours (train_judge_phase.py) vs TRL's GRPOTrainer, side by side.

Same model (Qwen3, hidden 256, 4 layers, random), same judge prompts from data/demo_train.jsonl,
same G, batch, micro-batch, max completion length, LoRA rank, reward (R_acc + R_fmt), for 1 and 2
optimisation passes and beta 0 and 0.001. One of our steps (one generation + num_iterations optimizer
steps) is timed against TRL's num_iterations optimizer steps that consume one generation batch. The
random model never emits EOS, so both generate exactly max-completion-length tokens.

    python bench/bench_grpo.py            # writes the grpo section of BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _util as U
import torch

import common as C
import train_judge_phase as J


def judge_rows(n: int) -> list[dict]:
    return C.load_pairs(str(U.ROOT / "data" / "demo_train.jsonl"), limit=n, require=("rubric",))


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
    cfg = GRPOConfig(output_dir=str(work / f"trl_{iters}_{beta}"), use_cpu=True, bf16=False, gradient_checkpointing=False,
                     per_device_train_batch_size=a.micro, gradient_accumulation_steps=accum, steps_per_generation=accum,
                     num_generations=a.G, max_completion_length=a.max_len, num_iterations=iters, beta=beta,
                     epsilon=0.2, epsilon_high=0.28, loss_type="dapo", learning_rate=1e-6, temperature=1.0,
                     max_steps=iters * (a.reps + 1), logging_steps=1, report_to="none", save_strategy="no",
                     disable_tqdm=True, log_level="error", seed=0)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    trainer = GRPOTrainer(model=model, reward_funcs=reward_func, args=cfg, train_dataset=Dataset.from_list(data),
                          processing_class=tok, peft_config=LoraConfig(r=a.lora_r, lora_alpha=2 * a.lora_r,
                                                                       target_modules="all-linear", task_type="CAUSAL_LM"),
                          callbacks=[Timer()])
    trainer.train()
    per_gen = [sum(times[i:i + iters]) for i in range(0, len(times), iters)][1:]  # one generation cycle each
    return {"time_step": U.median(per_gen)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--G", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16, help="completions per step")
    ap.add_argument("--micro", type=int, default=8)
    ap.add_argument("--max-len", type=int, default=64, help="max completion tokens")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3, help="timed steps after one warm-up step")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--ours-args", default="--loss-type dapo", help="extra flags for our judge phase")
    a = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    work = Path(tempfile.mkdtemp(prefix="bench_grpo_"))
    model_dir = U.bench_model(work / "model")
    rows = judge_rows(a.batch // a.G * (a.reps + 2))
    plen = len(C.judge_prompt_ids(C.load_tokenizer(str(model_dir)), rows[0]["prompt"], rows[0]["rubric"],
                                  rows[0]["response_a"], rows[0]["response_b"])[0])
    lines = ["| passes | beta | ours s/step | TRL s/step | ours / TRL | ours: generation | reward | old+ref log-probs "
             "| fwd+bwd | optimizer |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for iters in (1, 2):
        for beta in (0.0, 0.001):
            o = ours(model_dir, rows, a, iters, beta, work)
            t = trl(model_dir, rows, a, iters, beta, work)
            lines.append(f"| {iters} | {beta} | {o['time_step']:.3f} | {t['time_step']:.3f} | "
                         f"**{o['time_step'] / t['time_step']:.2f}** | {o['time_gen']:.3f} | {o['time_reward']:.3f} | "
                         f"{o['time_logprob']:.3f} | {o['time_fwd_bwd']:.3f} | {o['time_optimizer']:.3f} |")
            print(lines[-1], flush=True)
    body = (f"Judge-phase GRPO step, median of {a.reps} steps after a warm-up step. Model: Qwen3 hidden 256, 4 layers, "
            f"random weights, fp32; LoRA r={a.lora_r} on all linear layers; G={a.G}, {a.batch} completions per step, "
            f"micro-batch {a.micro}, {a.max_len} new tokens (every completion runs to the limit), judge prompts of about "
            f"{plen} tokens. Ours' time split is per step (seconds).\n\n" + "\n".join(lines))
    U.write_section("grpo", "GRPO judge-phase step: ours vs TRL GRPOTrainer", "python bench/bench_grpo.py", body, ("trl",))


if __name__ == "__main__":
    main()
