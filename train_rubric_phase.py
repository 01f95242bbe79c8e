"""Stage II, rubric phase: GRPO of the rubric generator against the frozen judge.

The generator (trainable LoRA) samples G rubrics per prompt. The frozen judge (the same base
network with the judge adapter: two adapters, one base in memory) then decodes greedily on the
example's response pair under each rubric, in one random A/B order per example, all rubrics of a step in one
batched call. Reward R_r = 1 if the judge's verdict equals the label, else 0, plus an optional
rubric-format term (--rubric-format-weight: share of numbered items tagged [Hard Rule]/[Principle]).
Defaults are the paper's generator settings (G=6, 512 new tokens, batch 288, lr 1e-6 x 10 for LoRA, eps 0.2/0.28,
beta 0.001, 2 iterations). A real run on one GPU:

    python train_rubric_phase.py --model Qwen/Qwen3-8B --adapter runs/sft_rubric/adapter \\
        --judge-adapter runs/judge1/adapter --data part1.jsonl --out runs/rubric1 \\
        --load-4bit --micro-batch 6 --gradient-checkpointing
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch

import common as C

RUBRIC_DEFAULTS = C.GRPOConfig(group_size=6, batch_size=288, max_completion_length=512, lr=1e-6 * C.LORA_LR_MULTIPLIER,
                               eps_low=0.2, eps_high=0.28, beta=0.001, num_iterations=2, epochs=1.0)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_model_args(ap)
    C.add_data_args(ap)
    C.add_run_args(ap)
    ap.add_argument("--adapter", default=None, help="rubric generator adapter to start from")
    ap.add_argument("--judge-adapter", required=True, help="the frozen judge's adapter folder")
    ap.add_argument("--judge-max-new-tokens", type=int, default=1024, help="judge tokens per verdict (greedy)")
    ap.add_argument("--max-prompt-length", type=int, default=5120,
                    help="judge prompt tokens (responses shortened to fit; a rubric that cannot fit gets reward 0)")
    ap.add_argument("--judge-batch", type=int, default=16, help="judge prompts per generate call")
    ap.add_argument("--rubric-format-weight", type=float, default=0.0,
                    help="weight of the rubric-format term (0 = off, the paper's reward)")
    ap.add_argument("--log-samples", type=int, default=4,
                    help="judge texts logged per step to judge_samples.jsonl (-1: all)")
    C.add_grpo_args(ap, RUBRIC_DEFAULTS)
    return ap.parse_args(argv)


def build_prompt_fn(tok):
    def build(row: dict) -> C.Prompted:
        # one A/B order per example, shared by its G rubrics: the group's rewards then differ by the
        # rubric alone, not by the judge's position bias (as in the judge phase)
        return C.Prompted(C.chat_prompt_ids(tok, C.rubric_messages(row["prompt"])), {"row": row, "swap": random.random() < 0.5})
    return build


def make_rubric_reward(model, tok, args, samples_path: Path | None):
    """R_r = 1[frozen judge's greedy verdict under the rubric == label] (+ optional format term)."""
    def reward(batch: list[C.Prompted], rubrics: list[str], G: int):
        prompts, labels = [], []
        for i, rubric in enumerate(rubrics):
            row, swap = batch[i // G].meta["row"], batch[i // G].meta["swap"]
            a, b, label = C.swap_pair(row, swap)
            prompts.append(C.judge_prompt_ids(tok, row["prompt"], rubric, a, b, args.max_prompt_length)[0])
            labels.append(label)
        # a rubric too long for the judge's prompt even with the responses cut gets no verdict (reward 0)
        fits = [i for i, p in enumerate(prompts) if p is not None]
        verdict_texts = [""] * len(prompts)
        with C.use_adapter(model, "judge"):
            texts = C.generate_batched(model, tok, [prompts[i] for i in fits], args.judge_batch, n=1,
                                       max_new_tokens=args.judge_max_new_tokens, temperature=0.0)
        for i, t in zip(fits, texts):
            verdict_texts[i] = t
        verdicts = [C.parse_verdict(t) for t in verdict_texts]
        acc = torch.tensor([float(v == y) for v, y in zip(verdicts, labels)])
        fmt = torch.tensor([C.rubric_format_reward(r) for r in rubrics])
        if samples_path is not None:
            k = len(rubrics) if args.log_samples < 0 else min(args.log_samples, len(rubrics))
            C.append_jsonl(samples_path, [{"id": batch[i // G].meta["row"]["id"], "rubric": rubrics[i],
                                           "judge_text": verdict_texts[i], "verdict": verdicts[i],
                                           "label": labels[i], "reward_acc": float(acc[i])} for i in range(k)])
        return acc + args.rubric_format_weight * fmt, {"acc": acc, "fmt": fmt,
                                                        "verdict_none": torch.tensor([float(v is None) for v in verdicts])}
    return reward


def main(argv=None) -> None:
    C.setup_logging()
    args = parse_args(argv)
    C.use_templates(args)
    out = C.check_writable(args.out)
    dist = C.init_distributed(args.device)
    C.seed_everything(args.seed)  # the same on every rank: identical LoRA init; grpo_train seeds per rank
    rows = C.load_pairs_from_args(args)
    model, tok = C.load_trainable(args, dist, args.adapter)
    C.add_reference_adapter(model, args.adapter)  # KL anchor: the phase's starting adapter, frozen
    C.add_frozen_adapter(model, args.judge_adapter, "judge")
    cfg = C.grpo_config_from_args(args)
    resume_step = C.resume_step(out, args.resume)
    samples = Path(out) / "judge_samples.jsonl" if dist.main and args.log_samples else None
    if samples is not None and not resume_step:
        samples.unlink(missing_ok=True)
    C.log.info("rubric phase: %d examples, G=%d, batch %d, frozen judge %s", len(rows), cfg.group_size,
               cfg.batch_size, args.judge_adapter)
    metrics = C.MetricsLogger(out, dist.main, args.wandb_project, "rubric-phase", vars(args), resume_step=resume_step)
    last = C.grpo_train(model, tok, cfg, rows, build_prompt_fn(tok), make_rubric_reward(model, tok, args, samples),
                        out, dist, args.resume, metrics)
    if dist.main:
        C.save_adapter_atomic(model, Path(out) / "adapter")
        C.log.info("rubric phase done: judge accuracy under sampled rubrics %.3f; adapter in %s",
                   last.get("reward_acc", 0), Path(out) / "adapter")
    metrics.close()


if __name__ == "__main__":
    C.run_main(main)
