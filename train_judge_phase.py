"""Stage II, judge phase: GRPO of the judge under cached rubrics from the frozen rubric generator.

Most used:
    python train_judge_phase.py --model smollm2-135m --adapter runs/sft_judge/adapter --data part1.jsonl \\
        --rubric-cache rubrics1.jsonl --out runs/judge1

For each example the rubric comes from a cache (one rubric per example, written once by the frozen
generator: `python common.py cache-rubrics`), the A/B order is drawn at random (the label follows),
and the judge samples G trajectories. Reward = R_acc + R_fmt (paper Section 4):
    R_acc = 1 if the trajectory's final verdict equals the label, else 0
    R_fmt = common.format_reward (criteria covered for both responses, final justification, decision)
The KL reference is the phase's starting judge (a frozen copy of --adapter). Defaults are the paper's
judge settings (Table 9: G=7, 1024 new tokens, batch 224, eps 0.2/0.28, beta 0.001, 2 iterations,
1 epoch; lr 1e-6 for full fine-tuning, x10 for LoRA). A real run on one GPU:

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

PAPER = dict(group_size=7, batch_size=224, max_completion_length=1024, lr=1e-6 * C.LORA_LR_MULTIPLIER,
             eps_low=0.2, eps_high=0.28, beta=0.001, num_iterations=2, epochs=1.0)  # Table 9, judge


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 usage="%(prog)s [flags: listed below]")
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
    C.add_grpo_args(ap, PAPER)
    return ap.parse_args(argv)


def read_rubric_cache(path: str, rows: list[dict]) -> dict[str, str]:
    """{id: rubric}; an example without a rubric is an error naming its id."""
    if not Path(path).exists():
        raise SystemExit(f"error: rubric cache {path} does not exist")
    cache = {str(r["id"]): r["rubric"] for r in C.read_rubric_lines(path)}
    missing = [r["id"] for r in rows if r["id"] not in cache]
    if missing:
        raise SystemExit(f"error: rubric cache {path} has no rubric for {len(missing)} example(s), "
                         f"first id {missing[0]!r}")
    return cache


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


def judge_prompt(tok, row: dict, rubric: str, shuffle: bool, max_len: int | None) -> C.GroupPrompt:
    """The judge's prompt for one example in a random A/B order; the label follows the order."""
    a, b, label = C.swap_pair(row, shuffle and random.random() < 0.5)
    ids, _ = C.judge_prompt_ids(tok, row["prompt"], rubric, a, b, max_len)
    return C.GroupPrompt(ids, {"id": row["id"], "label": label, "n_criteria": len(C.parse_rubric(rubric))})


def judge_rewards(batch: list[C.GroupPrompt], texts: list[str], G: int, use_format: bool):
    """R_acc (+ R_fmt) of each trajectory; trajectory i belongs to the prompt i // G."""
    acc = torch.tensor([float(C.parse_verdict(t) == batch[i // G].meta["label"]) for i, t in enumerate(texts)])
    fmt = torch.tensor([C.format_reward(t, batch[i // G].meta["n_criteria"]) for i, t in enumerate(texts)])
    return (acc + fmt if use_format else acc), {"acc": acc, "fmt": fmt}


def main(argv=None) -> None:
    C.setup_logging()
    args = parse_args(argv)
    C.check_flags(*C.model_flag_rules(args), *C.grpo_flag_rules(args))
    C.fit_micro_batch(args)
    C.use_templates(args)
    dist = C.init_distributed(args.device)
    out = C.prepare_output(args, dist)
    C.seed_everything(args.seed)  # the same on every rank: identical LoRA init; sampling is seeded per rank below
    rows = C.load_pairs_from_args(args)
    rubrics = read_rubric_cache(args.rubric_cache, rows)
    model, tok = C.load_trainable(args, dist, args.adapter)
    C.add_reference_adapter(model, args.adapter)  # KL anchor: the phase's starting adapter, frozen
    rows = fit_rows(tok, rows, rubrics, args.max_prompt_length)
    cfg = C.grpo_config_from_args(args)
    G = cfg.group_size
    C.log.info("judge phase: %d examples, G=%d, batch %d, %s reward", len(rows), G, cfg.batch_size,
               "R_acc + R_fmt" if args.format_reward else "R_acc only")
    run = C.grpo_run(out, model, dist, cfg, len(rows), args, "judge phase")
    share_prompt = cfg.share_prefix and not C.checkpointing_on(model)  # checkpointing drops the shared cache
    for step in run.steps():
        timer = C.StepTimer()

        def draw(k: int, step: int = step) -> list[C.GroupPrompt]:  # B = batch / G examples a rank, random A/B order
            return [judge_prompt(tok, rows[i], rubrics[rows[i]["id"]], args.shuffle_order, args.max_prompt_length)
                    for i in run.rank_share(run.draw_indices(step, k))]

        def score(batch: list[C.GroupPrompt], texts: list[str]):
            rewards, parts = judge_rewards(batch, texts, G, args.format_reward)
            return rewards, parts, [None] * len(texts)

        # 1-3. this step's prompts, G judge trajectories each (sampled, the prompt prefilled once for its G
        #      samples), their rewards; with --dynamic-sampling groups of equal rewards give way to more prompts
        got = C.sample_step(draw, score, model, tok, cfg)
        # advantages within each group of G: (r - mean) / (std + 1e-4)
        adv = C.group_advantages(got.rewards, G, cfg.scale_rewards).to(dist.device)
        timer.mark("sample")
        # 4. micro-batches of whole groups (each prompt runs once), the reference's log-probs (beta > 0)
        #    and the sampling policy's (2+ passes), both without gradients, once per step
        mbs = C.micro_batches(got.rolls, G, cfg.micro_batch, cfg.mask_truncated, share_prompt)
        ref = C.reference_logprobs(model, mbs, cfg.temperature) if cfg.beta else None
        old = C.old_logprobs(model, mbs, cfg)
        timer.mark("logprob")
        # 5. num_iterations passes of the clipped GRPO loss over the micro-batches, an optimizer step each
        stats = C.grpo_passes(model, run, mbs, adv, old, ref, cfg)
        # 6. log, checkpoint
        finite = stats.pop("finite")
        run.end_step(step, {**got.metrics, **stats, "lr": run.lr(), **timer.times()}, finite)
    path = run.finish(model)
    if dist.is_main:
        C.log_signal(out, "judge phase", cfg.dynamic_sampling)
    C.log.info("judge phase done; adapter in %s", path)


if __name__ == "__main__":
    C.run_main(main)
