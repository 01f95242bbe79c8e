"""Downstream: online GRPO of a policy with Rubric-ARM as the reward (paper Section 6).

Most used:  python policy_grpo.py --model smollm2-135m --prompts prompts.jsonl --rubric-adapter R --judge-adapter J --out runs/policy_grpo

Per step the policy samples G responses per prompt and one greedy answer (the "ReMax" baseline).
Rubric-ARM writes one rubric per prompt (greedy, kept for the run) and judges each sample y against
the baseline b in both orders:
    R(y) = 1/2 [ verdict(y shown as A, b as B) == A  +  verdict(b as A, y as B) == B ]
Defaults are the paper's (G=6, batch 288, beta 0.001, eps 0.2/0.28, 2 iterations; lr 5e-7 for full
fine-tuning, x10 for LoRA). When Rubric-ARM shares the policy's base model its adapters sit on the
policy's network (one base in memory); otherwise it is loaded as a second, frozen model. Paper scale:

    python policy_grpo.py --model Qwen/Qwen2.5-7B-Instruct --prompts prompts.jsonl \\
        --rm-model Qwen/Qwen3-8B --rubric-adapter runs/arm/c3_rubric/adapter \\
        --judge-adapter runs/arm/c3_judge/adapter --out runs/policy_grpo --load-4bit --micro-batch 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import common as C

# Section 6 and Table 10 (online GRPO of the policy): 2048 new tokens per completion, for the sampled
# answers and the greedy baseline alike (Table 9's 1024 is the judge's)
PAPER = dict(group_size=6, batch_size=288, max_completion_length=2048, lr=5e-7 * C.LORA_LR_MULTIPLIER,
             eps_low=0.2, eps_high=0.28, beta=0.001, num_iterations=2, epochs=1.0)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 usage="%(prog)s [flags: listed below]")
    C.add_model_args(ap)
    C.add_run_args(ap)
    ap.add_argument("--adapter", default=None, help="policy adapter to start from (default: a new LoRA)")
    C.add_prompt_args(ap)
    ap.add_argument("--rm-model", default=None,
                    help="Rubric-ARM base model of both roles (default: --model, shared in memory with the policy)")
    C.add_role_model_args(ap, default="--rm-model")
    ap.add_argument("--max-rubric-tokens", type=int, default=1024)
    ap.add_argument("--max-judge-tokens", type=int, default=4096)
    ap.add_argument("--judge-temperature", type=float, default=1.0, help="paper Table 11: 1.0 (0: greedy)")
    ap.add_argument("--judge-batch", type=int, default=16, help="judge prompts per generate call")
    C.add_grpo_args(ap, PAPER)
    args = ap.parse_args(argv)
    args.rm_model = args.rm_model or args.model
    C.role_models_default(args, args.rm_model)
    return args


def pairwise_reward(v_first: str | None, v_second: str | None) -> float:
    """The reward of a sample y against the baseline b: 1/2 [verdict with y shown first says A +
    verdict with y shown second says B]."""
    return 0.5 * (float(v_first == "A") + float(v_second == "B"))


def policy_rewards(policy, tok, rm: C.RubricARM, batch: list[C.GroupPrompt], texts: list[str], cfg: C.GRPOConfig):
    """Each sample against the policy's own greedy answer to its prompt, judged in both orders."""
    base = C.generate(policy, tok, [b.ids for b in batch], n=1, max_new_tokens=cfg.max_completion_length,
                      temperature=0.0, share_prefix=cfg.share_prefix).texts
    G = cfg.group_size
    verdicts = rm.both_orders([(batch[i // G].meta["prompt"], y, base[i // G]) for i, y in enumerate(texts)])
    first = torch.tensor([float(v1 == "A") for v1, _ in verdicts])
    second = torch.tensor([float(v2 == "B") for _, v2 in verdicts])
    r = torch.tensor([pairwise_reward(v1, v2) for v1, v2 in verdicts])
    return r, {"win_shown_first": first, "win_shown_second": second}


def main(argv=None) -> None:
    C.setup_logging()
    args = parse_args(argv)
    C.check_flags(*C.model_flag_rules(args), *C.role_flag_rules(args), *C.grpo_flag_rules(args),
                  (args.judge_temperature >= 0, f"--judge-temperature {args.judge_temperature}: must not be negative"),
                  (args.judge_batch >= 1, f"--judge-batch {args.judge_batch}: must be at least 1"))
    C.fit_micro_batch(args)
    C.use_templates(args)
    dist = C.init_distributed(args.device)
    out = C.prepare_output(args, dist)
    C.seed_everything(args.seed)  # the same on every rank: identical LoRA init; sampling is seeded per rank below
    prompts = C.load_prompts(args.prompts, args.split, args.limit, args.prompt_field)
    policy, tok = C.load_trainable(args, dist, args.adapter)
    C.add_reference_adapter(policy, args.adapter)  # KL anchor: the starting policy
    rm = C.RubricARM.load(C.role_spec(args, "rubric"), C.role_spec(args, "judge"),
                          share=policy, share_tok=tok, share_name=args.model, load_4bit=args.load_4bit,
                          device=dist.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                          max_rubric_tokens=args.max_rubric_tokens, max_judge_tokens=args.max_judge_tokens,
                          judge_temperature=args.judge_temperature, batch_size=args.judge_batch,
                          server=C.server_options(args))
    if dist.is_main:
        C.check_served_identity(Path(out), {"rubric": rm.gen, "judge": rm.jud})
    cfg = C.grpo_config_from_args(args)
    G = cfg.group_size
    C.log.info("online GRPO: %d prompts, G=%d, Rubric-ARM %s", len(prompts), G,
               ", ".join(f"{r} on the policy's network" if getattr(rm, k).model is policy else f"{r} on {m}"
                         for r, k, m in (("generator", "gen", args.rubric_server or args.rubric_model),
                                         ("judge", "jud", args.judge_server or args.judge_model))))
    run = C.grpo_run(out, policy, dist, cfg, len(prompts), args, "policy grpo")
    share_prompt = cfg.share_prefix and not C.checkpointing_on(policy)
    for step in run.steps():
        timer = C.StepTimer()

        def draw(k: int, step: int = step) -> list[C.GroupPrompt]:  # the step's prompts (k > 0: dynamic sampling's extras)
            return [C.GroupPrompt(C.chat_prompt_ids(tok, prompts[i]), {"prompt": C.messages_text(prompts[i], "prompt")})
                    for i in run.rank_share(run.draw_indices(step, k))]

        def score(batch: list[C.GroupPrompt], texts: list[str]):
            rewards, parts = policy_rewards(policy, tok, rm, batch, texts, cfg)
            return rewards, parts, [None] * len(texts)

        # 1-3. this step's prompts, G responses each (sampled), their rewards: Rubric-ARM's pairwise verdicts
        #      against the greedy baseline; with --dynamic-sampling groups of equal rewards give way to more prompts
        got = C.sample_step(draw, score, policy, tok, cfg)
        adv = C.group_advantages(got.rewards, G, cfg.scale_rewards).to(dist.device)
        timer.mark("sample")
        # 4. micro-batches, reference (beta > 0) and sampling-policy (2+ passes) log-probs
        mbs = C.micro_batches(got.rolls, G, cfg.micro_batch, cfg.mask_truncated, share_prompt)
        ref = C.reference_logprobs(policy, mbs, cfg.temperature) if cfg.beta else None
        old = C.old_logprobs(policy, mbs, cfg)
        timer.mark("logprob")
        # 5. num_iterations passes of the clipped GRPO loss, an optimizer step each
        stats = C.grpo_passes(policy, run, mbs, adv, old, ref, cfg)
        # 6. log, checkpoint
        finite = stats.pop("finite")
        run.end_step(step, {**got.metrics, **stats, "lr": run.lr(), **timer.times()}, finite)
    path = run.finish(policy)
    if dist.is_main:
        C.log_signal(out, "policy GRPO", cfg.dynamic_sampling)
    C.log.info("policy GRPO done: %d rubrics, %d judge calls; adapter in %s", rm.stats["rubrics"],
               rm.stats["judge_calls"], path)


if __name__ == "__main__":
    C.run_main(main)
