"""One SFT step (ours: sft_warmup.sft_step vs TRL SFTTrainer) and one DPO step (ours:
policy_dpo.dpo_step vs TRL DPOTrainer), same model, data, batch, micro-batch and LoRA rank. Each side
runs in a process of its own, so that its peak memory is its own; a side the OOM killer stops is
reported as such.

    python bench/bench_sft_dpo.py         # writes the sft_dpo section of BENCHMARKS.md
    python bench/bench_sft_dpo.py --model smollm2-135m --data if --batch 8 --micro 4 --reps 1   # the real shape
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
import policy_dpo
import sft_warmup

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class Args:  # the dpo_step knobs, as policy_dpo's flags would give them
    def __init__(self, micro: int):
        self.micro_batch, self.beta, self.sft_weight, self.max_grad_norm = micro, 0.1, 0.0, 1.0


def timer_callback(times: list):
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)
    return Timer()


def lora(r: int):
    from peft import LoraConfig
    return LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", task_type="CAUSAL_LM")


def ours_sft(model_dir, rows, a) -> float:
    torch.manual_seed(0)
    tok = C.load_tokenizer(str(model_dir))
    model = C.attach_lora(C.load_base_model(str(model_dir), dtype=a.dtype), r=a.lora_r, alpha=2 * a.lora_r)
    examples, _ = sft_warmup.build_examples(rows, "judge", tok, 4096)
    run = C.TrainingRun(tempfile.mkdtemp(), model, C.Dist(), lr=1e-5, n_examples=len(examples), per_rank=a.batch,
                        scheduler="constant")
    model.train()
    ts = []
    for step in range(a.reps + 1):
        batch = examples[step * a.batch:(step + 1) * a.batch]
        t = time.perf_counter()
        sft_warmup.sft_step(model, run, batch, a.micro, tok.pad_token_id, 1.0)
        ts.append(time.perf_counter() - t)
    return U.median(ts[1:])


def trl_sft(model_dir, rows, a, work) -> float:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer
    torch.manual_seed(0)
    tok = C.load_tokenizer(str(model_dir))
    data = [{"prompt": tok.decode(C.judge_prompt_ids(tok, r["prompt"], r["rubric"], r["response_a"], r["response_b"])[0]),
             "completion": r["judge_trajectory"]} for r in rows]
    times: list[float] = []
    cfg = SFTConfig(output_dir=str(work / "trl_sft"), use_cpu=not torch.cuda.is_available(), bf16=a.dtype == "bf16",
                    gradient_checkpointing=False,
                    per_device_train_batch_size=a.micro, gradient_accumulation_steps=a.batch // a.micro,
                    max_length=4096, learning_rate=1e-5, lr_scheduler_type="constant", max_steps=a.reps + 1,
                    logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True, log_level="error",
                    completion_only_loss=True, packing=False, seed=0)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=TORCH_DTYPES[a.dtype]), args=cfg,
                         train_dataset=Dataset.from_list(data), processing_class=tok, peft_config=lora(a.lora_r),
                         callbacks=[timer_callback(times)])
    trainer.train()
    return U.median(times[1:])


def dpo_pairs(rows):
    return [{"prompt": r["prompt"], "chosen": r["judge_trajectory"], "rejected": rows[(i + 1) % len(rows)]["judge_trajectory"]}
            for i, r in enumerate(rows)]


def ours_dpo(model_dir, rows, a) -> float:
    torch.manual_seed(0)
    tok = C.load_tokenizer(str(model_dir))
    model = C.attach_lora(C.load_base_model(str(model_dir), dtype=a.dtype), r=a.lora_r, alpha=2 * a.lora_r)
    pairs, _ = policy_dpo.tokenize_pairs(tok, dpo_pairs(rows), 4096)
    ref_c, ref_r = policy_dpo.reference_logps(model, pairs, a.micro, tok.pad_token_id, "cpu", "base")  # once per round
    run = C.TrainingRun(tempfile.mkdtemp(), model, C.Dist(), lr=1e-6, n_examples=len(pairs), per_rank=a.batch,
                        scheduler="constant")
    model.train()
    ts = []
    for step in range(a.reps + 1):
        sl = slice(step * a.batch, (step + 1) * a.batch)
        t = time.perf_counter()
        policy_dpo.dpo_step(model, run, pairs[sl], ref_c[sl], ref_r[sl], Args(a.micro), tok.pad_token_id)
        ts.append(time.perf_counter() - t)
    return U.median(ts[1:])


def trl_dpo(model_dir, rows, a, work) -> float:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer
    torch.manual_seed(0)
    tok = C.load_tokenizer(str(model_dir))
    data = [{"prompt": tok.decode(policy_dpo.policy_prompt_ids(tok, p["prompt"])), "chosen": p["chosen"],
             "rejected": p["rejected"]} for p in dpo_pairs(rows)]
    times: list[float] = []
    cfg = DPOConfig(output_dir=str(work / "trl_dpo"), use_cpu=not torch.cuda.is_available(), bf16=a.dtype == "bf16",
                    gradient_checkpointing=False,
                    per_device_train_batch_size=a.micro, gradient_accumulation_steps=a.batch // a.micro, max_length=4096,
                    learning_rate=1e-6, lr_scheduler_type="constant", max_steps=a.reps + 1, beta=0.1,
                    precompute_ref_log_probs=True, logging_steps=1, report_to="none", save_strategy="no",
                    disable_tqdm=True, log_level="error", seed=0)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=TORCH_DTYPES[a.dtype]), args=cfg,
                         train_dataset=Dataset.from_list(data), processing_class=tok, peft_config=lora(a.lora_r),
                         callbacks=[timer_callback(times)])
    trainer.train()
    return U.median(times[1:])


SIDES = {"ours-sft": ours_sft, "trl-sft": trl_sft, "ours-dpo": ours_dpo, "trl-dpo": trl_dpo}


def bench_rows(a) -> list[dict]:
    path = U.ROOT / "data" / ("demo_train.jsonl" if a.data == "demo" else "if_train.jsonl")
    return C.load_pairs(str(path), limit=a.batch * (a.reps + 1), require=("rubric", "judge_trajectory"))


def run_side(a) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench_sft_dpo_"))
    model_dir = U.bench_model_dir(a.model, a.random_weights, work)
    fn = SIDES[a.side]
    t = fn(model_dir, bench_rows(a), a, work) if a.side.startswith("trl") else fn(model_dir, bench_rows(a), a)
    print("RESULT " + json.dumps({"time_step": t, "peak_mb": U.peak_memory_mb(C.default_device())}), flush=True)


def describe(a) -> str:
    if not a.model:
        return "Qwen3 hidden 256, 4 layers, random weights"
    return f"{a.model} architecture with random weights" if a.random_weights else a.model


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16, help="examples (SFT) or pairs (DPO) per step")
    ap.add_argument("--micro", type=int, default=8)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3, help="timed steps after one warm-up step")
    ap.add_argument("--dtype", default="fp32", choices=list(TORCH_DTYPES))
    ap.add_argument("--model", default="", help="a model folder or smollm2-135m (default: the random bench model)")
    ap.add_argument("--random-weights", action="store_true", help="with --model: its architecture with random weights")
    ap.add_argument("--data", default="demo", choices=["demo", "if"],
                    help="judge SFT examples of the toy demo data, or of the instruction-following task (longer)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    ap.add_argument("--side", choices=list(SIDES), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.side:
        return run_side(a)
    flags = ["--batch", str(a.batch), "--micro", str(a.micro), "--lora-r", str(a.lora_r), "--reps", str(a.reps),
             "--dtype", a.dtype, "--data", a.data, *(["--model", a.model] if a.model else []),
             *(["--random-weights"] if a.random_weights else [])]
    res = {}
    for step in ("SFT", "DPO"):
        res[step] = [U.run_side(__file__, ["--side", f"{who}-{step.lower()}", *flags]) for who in ("ours", "trl")]
        print(step, res[step], file=sys.stderr, flush=True)

    lines = ["| step | ours s | TRL s | ours / TRL | ours peak MB | TRL peak MB | ours / TRL memory |",
             "|---|---|---|---|---|---|---|"]
    for k, (o, t) in res.items():
        lines.append(f"| {k} | {U.cell(o, 'time_step', '{:.3f}')} | {U.cell(t, 'time_step', '{:.3f}')} | "
                     f"{U.ratio(o, t, 'time_step')} | {U.cell(o, 'peak_mb', '{:.0f}')} | {U.cell(t, 'peak_mb', '{:.0f}')} | "
                     f"{U.ratio(o, t, 'peak_mb')} |")
    mem = "tracked CUDA allocations" if C.default_device().type == "cuda" else "peak RSS of the process, model loading included"
    body = (f"Median of {a.reps} steps after a warm-up step. Model: {describe(a)}, {a.dtype}; LoRA r={a.lora_r} on all "
            f"linear layers; {a.batch} examples (SFT: judge prompt + judge trajectory of the {a.data} data) or pairs (DPO: "
            f"the short prompt, two judge trajectories) per step, micro-batch {a.micro}. DPO reference log-probs "
            "precomputed once in both (TRL: precompute_ref_log_probs=True), outside the timed steps. Each side in its "
            f"own process; memory = {mem}.\n\n" + "\n".join(lines))
    print(body)
    if not a.no_write:
        section = "sft_dpo" if not a.model else f"sft_dpo_{Path(a.model).name}" + ("_random" if a.random_weights else "")
        cmd = "python bench/bench_sft_dpo.py" + (" " + " ".join(flags) if a.model else "")
        U.write_section(section, f"SFT and DPO steps: ours vs TRL ({describe(a)})", cmd, body, ("trl",))


if __name__ == "__main__":
    main()
