"""Stage II, rubric phase: GRPO of the rubric generator against the frozen judge.

Most used:
    python train_rubric_phase.py --model smollm2-135m --adapter runs/sft_rubric/adapter \\
        --judge-adapter runs/judge1/adapter --data part1.jsonl --out runs/rubric1

The generator (trainable LoRA) samples G rubrics per prompt. The frozen judge (the same base
network with the judge adapter: two adapters, one base in memory) then decodes greedily on the
example's response pair under each rubric, in one random A/B order per example, all rubrics of a
step in one batched call. Reward R_r = 1 if the judge's verdict equals the label, else 0 (paper
Eq. 8), plus an optional rubric-format term (--rubric-format-weight: share of numbered items tagged
[Hard Rule]/[Principle]). The KL reference is the phase's starting generator. Defaults are the
paper's generator settings (Table 9: G=6, 512 new tokens, batch 288, eps 0.2/0.28, beta 0.001,
2 iterations; lr 1e-6 for full fine-tuning, x10 for LoRA). A real run on one GPU:

    python train_rubric_phase.py --model Qwen/Qwen3-8B --adapter runs/sft_rubric/adapter \\
        --judge-adapter runs/judge1/adapter --data part1.jsonl --out runs/rubric1 \\
        --load-4bit --micro-batch 6 --gradient-checkpointing
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from pathlib import Path

import torch

import common as C

PAPER = dict(group_size=6, batch_size=288, max_completion_length=512, lr=1e-6 * C.LORA_LR_MULTIPLIER,
             eps_low=0.2, eps_high=0.28, beta=0.001, num_iterations=2, epochs=1.0)  # Table 9, rubric generator


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 usage="%(prog)s [flags: listed below]")
    C.add_model_args(ap)
    C.add_data_args(ap)
    C.add_run_args(ap)
    ap.add_argument("--adapter", default=None, help="rubric generator adapter to start from")
    ap.add_argument("--judge-adapter", default=None,
                    help="the frozen judge's adapter folder (needed when the judge runs on --model)")
    ap.add_argument("--judge-model", default=None,
                    help="the frozen judge's model (default: --model, the judge adapter on the generator's network); "
                         "another model, e.g. a released full judge checkpoint, is loaded beside it, with "
                         "--judge-adapter or as it is")
    ap.add_argument("--judge-server", default=None, metavar="URL",
                    help="the frozen judge is this OpenAI-compatible server (vLLM, SGLang, ...); --judge-model then "
                         "names the served model (default: the one it serves)")
    C.add_server_args(ap)
    ap.add_argument("--judge-max-new-tokens", type=int, default=1024, help="judge tokens per verdict (greedy)")
    ap.add_argument("--max-prompt-length", type=int, default=5120,
                    help="judge prompt tokens (responses shortened to fit; a rubric that cannot fit gets reward 0)")
    ap.add_argument("--judge-batch", type=int, default=16, help="judge prompts per generate call")
    ap.add_argument("--rubric-format-weight", type=float, default=0.0,
                    help="weight of the rubric-format term (0 = off, the paper's reward)")
    ap.add_argument("--log-samples", type=int, default=4,
                    help="judge texts logged per step to judge_samples.jsonl (-1: all)")
    C.add_grpo_args(ap, PAPER)
    return ap.parse_args(argv)


def rubric_format_reward(text: str) -> float:
    """Share of numbered items tagged [Hard Rule] or [Principle]; 0 when there is no item."""
    items = C.parse_rubric(text)
    return sum(it["tagged"] for it in items) / len(items) if items else 0.0


def rubric_prompt(tok, row: dict) -> C.GroupPrompt:
    # one A/B order per example, shared by its G rubrics: the group's rewards then differ by the
    # rubric alone, not by the judge's position bias (as in the judge phase)
    return C.GroupPrompt(C.chat_prompt_ids(tok, C.rubric_messages(row["prompt"])), {"row": row, "swap": random.random() < 0.5})


def rubric_rewards(jud: C.Role, batch: list[C.GroupPrompt], rubrics: list[str], G: int, args):
    """R_r = 1[the frozen judge's greedy verdict under the rubric == label] (+ the optional format
    term). A rubric too long for the judge's prompt even with the responses cut gets no verdict."""
    items, labels = [], []
    for i, rubric in enumerate(rubrics):
        row, swap = batch[i // G].meta["row"], batch[i // G].meta["swap"]
        a, b, label = C.swap_pair(row, swap)
        items.append((row["prompt"], rubric, a, b))
        labels.append(label)
    # a greedy verdict is a function of its prompt: rubrics sampled identically within a group (common while the
    # generator is still sharp) are judged once, and every copy gets that verdict
    distinct = list(dict.fromkeys(items))
    bar = C.GenerationProgress(len(distinct), "judge reward")
    once = C.judge(jud.model, jud.tok, distinct, jud.adapter, max_new_tokens=args.judge_max_new_tokens, temperature=0.0,
                   batch_size=args.judge_batch, max_prompt_len=args.max_prompt_length, progress=bar)
    bar.close()
    by_item = dict(zip(distinct, once))
    judged = [by_item[it] for it in items]
    verdicts = [j.verdict for j in judged]
    acc = torch.tensor([float(v == y) for v, y in zip(verdicts, labels)])
    fmt = torch.tensor([rubric_format_reward(r) for r in rubrics])
    samples = [{"id": batch[i // G].meta["row"]["id"], "rubric": rubrics[i], "judge_text": (judged[i].texts or [""])[0],
                "verdict": verdicts[i], "label": labels[i], "reward_acc": float(acc[i])} for i in range(len(rubrics))]
    copies = Counter(items)
    # "judged": not a reward term; its mean is the share of rubrics that needed a judge call of their own
    parts = {"acc": acc, "fmt": fmt, "verdict_none": torch.tensor([float(v is None) for v in verdicts]),
             "judged": torch.tensor([1.0 / copies[it] for it in items])}
    return acc + args.rubric_format_weight * fmt, parts, samples


def frozen_judge(args, model, tok, dist) -> C.Role:
    """The judge adapter on the generator's own network (one base in memory), another model loaded beside
    it when --judge-model names one (a released judge checkpoint, say), frozen either way, or a server."""
    if args.judge_server:
        return C.Role(C.ServedModel(args.judge_server, args.judge_model, **C.server_options(args)),
                      None, None)
    if C.model_key(args.judge_model or args.model) == C.model_key(args.model):
        C.add_frozen_adapter(model, args.judge_adapter, "judge")
        return C.Role(model, tok, "judge")
    return C.load_roles({"judge": (args.judge_model, args.judge_adapter)}, args.load_4bit, dist.device, args.dtype,
                        args.trust_remote_code)["judge"]


def main(argv=None) -> None:
    C.setup_logging()
    args = parse_args(argv)
    C.check_flags(*C.model_flag_rules(args), *C.grpo_flag_rules(args),
                  (args.judge_max_new_tokens >= 1, f"--judge-max-new-tokens {args.judge_max_new_tokens}: must be at least 1"),
                  (args.judge_batch >= 1, f"--judge-batch {args.judge_batch}: must be at least 1"),
                  (args.rubric_format_weight >= 0,
                   f"--rubric-format-weight {args.rubric_format_weight}: must not be negative"),
                  (bool(args.judge_adapter or args.judge_server) or (args.judge_model not in (None, args.model)),
                   "--judge-adapter is needed: the frozen judge runs on --model (or name another --judge-model or a "
                   "--judge-server)"), *C.role_flag_rules(args))
    C.fit_micro_batch(args)
    C.use_templates(args)
    dist = C.init_distributed(args.device)
    out = C.prepare_output(args, dist)
    C.seed_everything(args.seed)  # the same on every rank: identical LoRA init; sampling is seeded per rank below
    rows = C.load_pairs_from_args(args)
    model, tok = C.load_trainable(args, dist, args.adapter)
    C.add_reference_adapter(model, args.adapter)  # KL anchor: the phase's starting adapter, frozen
    jud = frozen_judge(args, model, tok, dist)
    if dist.is_main:
        C.check_served_identity(Path(out), {"judge": jud})
    cfg = C.grpo_config_from_args(args)
    G = cfg.group_size
    C.log.info("rubric phase: %d examples, G=%d, batch %d, frozen judge %s%s", len(rows), G, cfg.batch_size,
               args.judge_server or args.judge_model or args.model, f" + {args.judge_adapter}" if args.judge_adapter else "")
    run = C.grpo_run(out, model, dist, cfg, len(rows), args, "rubric phase")
    samples_path = Path(out) / "judge_samples.jsonl" if dist.is_main and args.log_samples else None
    if samples_path is not None:  # a resumed run keeps the rows of the steps its checkpoint holds, a new one none
        held = [r for r in C.read_jsonl_resumable(samples_path) if r.get("step", 0) <= run.start] if run.start else []
        C.write_jsonl_atomic(samples_path, held)
    share_prompt = cfg.share_prefix and not C.checkpointing_on(model)
    for step in run.steps():
        timer = C.StepTimer()

        def draw(k: int, step: int = step) -> list[C.GroupPrompt]:  # B = batch / G examples on this rank
            return [rubric_prompt(tok, rows[i]) for i in run.rank_share(run.draw_indices(step, k))]

        def score(batch: list[C.GroupPrompt], rubrics: list[str]):
            return rubric_rewards(jud, batch, rubrics, G, args)

        # 1-3. this step's prompts, G rubrics each (sampled), and their rewards from the frozen judge's greedy
        #      verdicts; with --dynamic-sampling groups of equal rewards give way to more prompts
        got = C.sample_step(draw, score, model, tok, cfg)
        adv = C.group_advantages(got.rewards, G, cfg.scale_rewards).to(dist.device)  # within each group of G
        if samples_path is not None:
            rows_logged = got.extras if args.log_samples < 0 else got.extras[:args.log_samples]
            C.append_jsonl(samples_path, [{"step": step + 1, **r} for r in rows_logged])
        timer.mark("sample")
        # 4. micro-batches of whole groups, reference (beta > 0) and sampling-policy (2+ passes) log-probs
        mbs = C.micro_batches(got.rolls, G, cfg.micro_batch, cfg.mask_truncated, share_prompt)
        ref = C.reference_logprobs(model, mbs, cfg.temperature) if cfg.beta else None
        old = C.old_logprobs(model, mbs, cfg)
        timer.mark("logprob")
        # 5. num_iterations passes of the clipped GRPO loss, an optimizer step each
        stats = C.grpo_passes(model, run, mbs, adv, old, ref, cfg)
        # 6. log, checkpoint
        finite = stats.pop("finite")
        run.end_step(step, {**got.metrics, **stats, "lr": run.lr(), **timer.times()}, finite)
    path = run.finish(model)
    if dist.is_main:
        C.log_signal(out, "rubric phase", cfg.dynamic_sampling)
    C.log.info("rubric phase done; adapter in %s", path)


if __name__ == "__main__":
    C.run_main(main)
