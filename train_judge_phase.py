"""Stage II, judge phase: GRPO of the judge under cached rubrics from the frozen rubric generator.

For each example the rubric comes from a cache (one rubric per example, written once by the frozen
generator: `python common.py cache-rubrics`), the A/B order is drawn at random (the label follows),
and the judge samples G trajectories. Reward = R_acc + R_fmt:
    R_acc = 1 if the trajectory's final verdict equals the label, else 0
    R_fmt = common.format_reward (criteria covered for both responses, final justification, decision)
Defaults are the paper's judge settings (G=7, 1024 new tokens, batch 224, lr 1e-6 x 10 for LoRA, eps 0.2/0.28,
beta 0.001, 2 iterations, 1 epoch). A real run on one GPU:

    python train_judge_phase.py --model Qwen/Qwen3-8B --adapter runs/sft_judge/adapter \\
        --data part1.jsonl --rubric-cache rubrics1.jsonl --out runs/judge1 \\
        --load-4bit --micro-batch 4 --gradient-checkpointing
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch

import common as C

JUDGE_DEFAULTS = C.GRPOConfig(group_size=7, batch_size=224, max_completion_length=1024, lr=1e-6 * C.LORA_LR_MULTIPLIER,
                              eps_low=0.2, eps_high=0.28, beta=0.001, num_iterations=2, epochs=1.0)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_model_args(ap)
    C.add_data_args(ap)
    C.add_run_args(ap)
    ap.add_argument("--adapter", default=None, help="judge adapter to start from (the SFT or last judge phase)")
    ap.add_argument("--rubric-cache", required=True, help="JSONL of {id, rubric} from the frozen generator")
    ap.add_argument("--format-reward", default=True, action=argparse.BooleanOptionalAction,
                    help="add R_fmt to the reward (--no-format-reward: the paper's ablation)")
    ap.add_argument("--max-prompt-length", type=int, default=5120,
                    help="judge prompt tokens; longer prompts get their responses shortened (never the "
                         "instruction or rubric), or are dropped if that is not enough (the paper does not say)")
    ap.add_argument("--shuffle-order", default=True, action=argparse.BooleanOptionalAction,
                    help="draw the A/B order at random per example (position-bias control)")
    C.add_grpo_args(ap, JUDGE_DEFAULTS)
    return ap.parse_args(argv)


def make_prompt_builder(tok, rubrics: dict[str, str], shuffle: bool, max_len: int | None):
    def build(row: dict) -> C.Prompted:
        swap = shuffle and random.random() < 0.5
        a, b, label = C.swap_pair(row, swap)
        rubric = rubrics[row["id"]]
        ids, _ = C.judge_prompt_ids(tok, row["prompt"], rubric, a, b, max_len)
        return C.Prompted(ids, {"id": row["id"], "label": label, "n_criteria": len(C.parse_rubric(rubric))})
    return build


def fit_rows(tok, rows: list[dict], rubrics: dict[str, str], max_len: int | None) -> list[dict]:
    """Drop (and count) rows whose judge prompt cannot fit max_len; count the ones fitted by cutting."""
    kept, cut, dropped = [], 0, 0
    for r in rows:
        ids, truncated = C.judge_prompt_ids(tok, r["prompt"], rubrics[r["id"]], r["response_a"], r["response_b"], max_len)
        if ids is None:
            dropped += 1
            continue
        cut += truncated
        kept.append(r)
    if cut or dropped:
        C.log.warning("--max-prompt-length %s: %d judge prompt(s) fitted by shortening the responses, %d dropped",
                      max_len, cut, dropped)
    return kept


def make_judge_reward(use_format: bool):
    def reward(batch: list[C.Prompted], texts: list[str], G: int):
        acc, fmt = [], []
        for i, text in enumerate(texts):
            meta = batch[i // G].meta
            acc.append(float(C.parse_verdict(text) == meta["label"]))
            fmt.append(C.format_reward(text, meta["n_criteria"]))
        acc_t, fmt_t = torch.tensor(acc), torch.tensor(fmt)
        total = acc_t + fmt_t if use_format else acc_t
        return total, {"acc": acc_t, "fmt": fmt_t}
    return reward


def main(argv=None) -> None:
    C.setup_logging()
    args = parse_args(argv)
    C.use_templates(args)
    out = C.check_writable(args.out)
    dist = C.init_distributed(args.device)
    C.seed_everything(args.seed)  # the same on every rank: identical LoRA init; grpo_train seeds per rank
    rows = C.load_pairs_from_args(args)
    rubrics = C.read_rubric_cache(args.rubric_cache, rows)
    model, tok = C.load_trainable(args, dist, args.adapter)
    C.add_reference_adapter(model, args.adapter)  # KL anchor: the phase's starting adapter, frozen
    rows = fit_rows(tok, rows, rubrics, args.max_prompt_length)
    cfg = C.grpo_config_from_args(args)
    C.log.info("judge phase: %d examples, G=%d, batch %d, %s reward", len(rows), cfg.group_size, cfg.batch_size,
               "R_acc + R_fmt" if args.format_reward else "R_acc only")
    resume_step = C.resume_step(out, args.resume)
    metrics = C.MetricsLogger(out, dist.main, args.wandb_project, "judge-phase", vars(args), resume_step=resume_step)
    last = C.grpo_train(model, tok, cfg, rows, make_prompt_builder(tok, rubrics, args.shuffle_order, args.max_prompt_length),
                        make_judge_reward(args.format_reward), out, dist, args.resume, metrics)
    if dist.main:
        C.save_adapter_atomic(model, Path(out) / "adapter")
        C.log.info("judge phase done: reward %.3f (acc %.3f, fmt %.3f); adapter in %s", last.get("reward", 0),
                   last.get("reward_acc", 0), last.get("reward_fmt", 0), Path(out) / "adapter")
    metrics.close()


if __name__ == "__main__":
    C.run_main(main)
