"""Downstream: online GRPO of a policy with Rubric-ARM as the reward (REFERENCE section 7).

Per step the policy samples G responses per prompt and one greedy answer (the "ReMax" baseline).
Rubric-ARM writes one rubric per prompt (greedy, kept for the run) and judges each sample y against
the baseline b in both orders:
    R(y) = 1/2 [ verdict(y shown as A, b as B) == A  +  verdict(b as A, y as B) == B ]
Defaults are the paper's (G=6, batch 288, lr 5e-7 x 10 for LoRA, beta 0.001, eps 0.2/0.28, 2 iterations). When
Rubric-ARM shares the policy's base model its adapters sit on the policy's network (one base in
memory); otherwise it is loaded as a second, frozen model. Paper scale:

    python policy_grpo.py --model Qwen/Qwen2.5-7B-Instruct --prompts prompts.jsonl \\
        --rm-model Qwen/Qwen3-8B --rubric-adapter runs/arm/c3_rubric/adapter \\
        --judge-adapter runs/arm/c3_judge/adapter --out runs/policy_grpo --load-4bit --micro-batch 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import common as C

POLICY_DEFAULTS = C.GRPOConfig(group_size=6, batch_size=288, max_completion_length=1024, lr=5e-7 * C.LORA_LR_MULTIPLIER,
                               eps_low=0.2, eps_high=0.28, beta=0.001, num_iterations=2, epochs=1.0)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_model_args(ap)
    C.add_run_args(ap)
    ap.add_argument("--adapter", default=None, help="policy adapter to start from (default: a new LoRA)")
    C.add_prompt_args(ap)
    ap.add_argument("--rm-model", default=None, help="Rubric-ARM base model (default: --model, shared in memory)")
    ap.add_argument("--rubric-adapter", required=True)
    ap.add_argument("--judge-adapter", required=True)
    ap.add_argument("--max-rubric-tokens", type=int, default=1024)
    ap.add_argument("--max-judge-tokens", type=int, default=4096)
    ap.add_argument("--judge-temperature", type=float, default=1.0, help="paper Table 11: 1.0 (0: greedy)")
    ap.add_argument("--judge-batch", type=int, default=16, help="judge prompts per generate call")
    C.add_grpo_args(ap, POLICY_DEFAULTS)
    args = ap.parse_args(argv)
    args.rm_model = args.rm_model or args.model
    return args


def make_policy_reward(policy, tok, rm: C.RubricARM, cfg: C.GRPOConfig):
    def reward(batch: list[C.Prompted], texts: list[str], G: int):
        # the baseline: the current policy's greedy answer to each prompt
        base = C.generate(policy, tok, [b.ids for b in batch], n=1, max_new_tokens=cfg.max_completion_length,
                          temperature=0.0, share_prefix=cfg.share_prefix).texts
        items = [(batch[i // G].meta["prompt"], y, base[i // G]) for i, y in enumerate(texts)]
        verdicts = rm.both_orders(items)
        first = torch.tensor([float(v1 == "A") for v1, _ in verdicts])
        second = torch.tensor([float(v2 == "B") for _, v2 in verdicts])
        r = torch.tensor([C.pairwise_reward(v1, v2) for v1, v2 in verdicts])
        return r, {"win_shown_first": first, "win_shown_second": second}
    return reward


def main(argv=None) -> None:
    C.setup_logging()
    args = parse_args(argv)
    C.use_templates(args)
    out = C.check_writable(args.out)
    dist = C.init_distributed(args.device)
    C.seed_everything(args.seed)  # the same on every rank: identical LoRA init; grpo_train seeds per rank
    prompts = C.load_prompts(args.prompts, args.split, args.limit, args.prompt_field)
    policy, tok = C.load_trainable(args, dist, args.adapter)
    C.add_reference_adapter(policy, args.adapter)  # KL anchor: the starting policy
    share = policy if args.rm_model == args.model else None
    rm = C.RubricARM.load(args.rm_model, args.rubric_adapter, args.judge_adapter, share=share,
                          load_4bit=args.load_4bit, device=dist.device, dtype=args.dtype,
                          trust_remote_code=args.trust_remote_code, max_rubric_tokens=args.max_rubric_tokens,
                          max_judge_tokens=args.max_judge_tokens, judge_temperature=args.judge_temperature, batch_size=args.judge_batch)
    cfg = C.grpo_config_from_args(args)
    resume_step = C.resume_step(out, args.resume)
    metrics = C.MetricsLogger(out, dist.main, args.wandb_project, "policy-grpo", vars(args), resume_step=resume_step)
    C.log.info("online GRPO: %d prompts, G=%d, Rubric-ARM %s", len(prompts), cfg.group_size,
               "on the policy's network" if share is not None else f"as a second model ({args.rm_model})")

    def build(prompt: str) -> C.Prompted:
        return C.Prompted(C.chat_prompt_ids(tok, [{"role": "user", "content": prompt}]), {"prompt": prompt})

    last = C.grpo_train(policy, tok, cfg, prompts, build, make_policy_reward(policy, tok, rm, cfg), out, dist,
                        args.resume, metrics)
    if dist.main:
        C.save_adapter_atomic(policy, Path(out) / "adapter")
        C.log.info("policy GRPO done: reward %.3f; %d rubrics, %d judge calls; adapter in %s", last.get("reward", 0),
                   rm.stats["rubrics"], rm.stats["judge_calls"], Path(out) / "adapter")
    metrics.close()


if __name__ == "__main__":
    C.run_main(main)
