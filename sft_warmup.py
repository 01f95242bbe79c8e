"""Stage I: SFT warm-up of the rubric generator (--role rubric) or the judge (--role judge).

Most used:  python sft_warmup.py --role judge --model smollm2-135m --data data/if_train.jsonl --out runs/sft_judge

The loss is the mean negative log-likelihood of the completion tokens only (the rubric, or the judge
trajectory), the prompt being the chat-templated rubric or judge prompt; --decision-weight W makes the
judge's decision tokens (each criterion's met / not met, the winner's letter) weigh W times the rest.
Defaults per role are the SFT recipe of the Rubric-RM paper (OpenRubrics, arXiv 2510.07743), which the
Rubric-ARM paper starts from and gives no SFT settings of its own; the learning rate is scaled for LoRA
(LORA_LR_MULTIPLIER in common.py). A real run on one GPU:

    python sft_warmup.py --role judge --model Qwen/Qwen3-8B --data OpenRubrics/OpenRubric-v2 \\
        --out runs/sft_judge --load-4bit --micro-batch 2 --gradient-checkpointing

Over --cutoff-len tokens, judge examples are fitted by shortening the two responses (never the
instruction, the rubric or the trajectory); what still does not fit is dropped. Both are counted.
"""

from __future__ import annotations

import argparse
import re
import time

import torch

import common as C

# The Rubric-RM paper's SFT recipe (Rubric-ARM gives none): generator 1 epoch, cutoff 3072, batch 128, lr 8e-6;
# judge 2 epochs, cutoff 6144, batch 64, lr 5e-6; both cosine with warmup 0.05. The rates are for full
# fine-tuning: LoRA defaults are C.LORA_LR_MULTIPLIER times them (8e-5, 5e-5).
ROLE_DEFAULTS = {
    "rubric": dict(epochs=1.0, cutoff_len=3072, batch_size=128, lr=8e-6 * C.LORA_LR_MULTIPLIER),
    "judge": dict(epochs=2.0, cutoff_len=6144, batch_size=64, lr=5e-6 * C.LORA_LR_MULTIPLIER),
}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 usage="%(prog)s [flags: listed below]")
    ap.add_argument("--role", choices=["rubric", "judge"], required=True, help="which model to warm up")
    C.add_model_args(ap)
    C.add_data_args(ap)
    C.add_run_args(ap)
    ap.add_argument("--adapter", default=None, help="start from this saved adapter instead of a new LoRA")
    g = ap.add_argument_group("SFT (defaults: the Rubric-RM paper's recipe per --role)")
    g.add_argument("--epochs", type=float, default=None, help="rubric 1, judge 2")
    g.add_argument("--cutoff-len", type=int, default=None, help="max prompt+completion tokens: rubric 3072, judge 6144")
    g.add_argument("--batch-size", type=int, default=None, help="examples per optimizer step: rubric 128, judge 64")
    g.add_argument("--micro-batch", type=int, default=4, help="examples per forward/backward")
    g.add_argument("--lr", type=float, default=None,
                   help="LoRA: rubric 8e-5, judge 5e-5 (10x the paper's full fine-tuning 8e-6, 5e-6)")
    g.add_argument("--decision-weight", type=float, default=1.0,
                   help="judge role: weight, in the mean NLL, of the target tokens that state a decision (each "
                   "criterion's met / not met, the winner's letter); the rest weigh 1. 1 = plain SFT")
    g.add_argument("--no-rubric", action="store_true",
                   help="judge role: a direct judge, trained on the same trajectories with the rubric left out of "
                   "its prompt (the no-rubric judge template; evaluate.py --no-rubric reads it): does the rubric help?")
    g.add_argument("--lr-scheduler", default="cosine", choices=["cosine", "constant"])
    g.add_argument("--warmup-ratio", type=float, default=0.05)
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--max-grad-norm", type=float, default=1.0)
    g.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps")
    g.add_argument("--save-every", type=int, default=100, help="checkpoint every N steps")
    args = ap.parse_args(argv)
    for k, v in ROLE_DEFAULTS[args.role].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


# The tokens of a judge trajectory that decide something: a criterion line's closing met / not met (or
# satisfied / not satisfied), and the letter after "Winner: Response".
DECISIONS = re.compile(r"(?im)\b(not met|met|not satisfied|satisfied)\b(?=\W*$)|winner:\s*response\s+([AB])\b")


def decision_weights(tok, text: str, weight: float, spans: list[tuple[int, int]] | None = None) -> list[float]:
    """One weight per target token of `text` (C.completion_ids: its tokens, then end-of-turn): `weight` on
    the tokens overlapping a decision, 1 elsewhere. Decisions: the character spans given, or those
    DECISIONS finds."""
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True)
    if spans is None:
        spans = [m.span(g) for m in DECISIONS.finditer(text) for g in (1, 2) if m.group(g)] if weight != 1 else []
    return [weight if any(s < e2 and s2 < e for s2, e2 in spans) else 1.0 for s, e in enc["offset_mapping"]] + [1.0]


def build_examples(rows: list[dict], role: str, tok, cutoff: int, decision_weight: float = 1.0,
                   with_rubric: bool = True) -> tuple[list[tuple[list[int], list[int], list[float]]], dict]:
    """(prompt ids, completion ids, completion token weights) per row, fitted to the cutoff. Judge
    prompts are fitted by shortening the two responses (common.judge_prompt_ids: the instruction and
    rubric are never cut); a row that still does not fit, or a rubric prompt over the cutoff, is
    dropped. Both are counted."""
    field = "rubric" if role == "rubric" else "judge_trajectory"
    out, counts = [], {"truncated": 0, "dropped": 0}
    for r in rows:
        target = C.completion_ids(tok, r[field])
        if role == "rubric":
            prompt, cut = C.chat_prompt_ids(tok, C.rubric_messages(r["prompt"])), False
            if len(prompt) + len(target) > cutoff:
                prompt = None
        else:
            prompt, cut = C.judge_prompt_ids(tok, r["prompt"], r["rubric"] if with_rubric else None,
                                             r["response_a"], r["response_b"], cutoff - len(target))
        if prompt is None:
            counts["dropped"] += 1
            continue
        counts["truncated"] += cut
        weights = decision_weights(tok, r[field], decision_weight) if role == "judge" else [1.0] * len(target)
        out.append((prompt, target, weights))
    return out, counts


def collate(examples: list[tuple[list[int], list[int], list[float]]], pad_id: int, device):
    """C.collate_completions, with each completion token's weight in place of its 0/1 mask."""
    pids, pmask, cids, cmask = C.collate_completions([(p, c) for p, c, _ in examples], pad_id, device)
    weights = torch.zeros(cmask.shape, dtype=torch.float, device=device)
    for i, (_, _, w) in enumerate(examples):
        weights[i, :len(w)] = torch.tensor(w, device=device)
    return pids, pmask, cids, weights


def completion_nll(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(weighted sum of the NLL over completion tokens, sum of their weights); with 0/1 weights (a
    plain mask), the summed NLL and the number of completion tokens."""
    logp_sum, n = C.sequence_logprobs(model, batch)
    return -logp_sum.sum(), n.sum()


def sft_step(model, run: C.TrainingRun, batch, micro_batch: int, pad_id: int, max_grad_norm: float):
    """One optimizer step on `batch` (this rank's examples): the weighted mean completion NLL over the
    whole batch (all ranks), accumulated over micro-batches. Returns (loss, grad norm, tokens, finite)."""
    dist = run.dist
    n_tok = C.all_reduce_sum(torch.tensor(float(sum(sum(w) for _, _, w in batch)), device=dist.device), dist)
    run.opt.zero_grad(set_to_none=True)
    total_nll = 0.0
    for s in range(0, len(batch), micro_batch):
        nll, _ = completion_nll(model, collate(batch[s:s + micro_batch], pad_id, dist.device))
        (nll / n_tok * dist.world).backward()
        total_nll += float(nll.detach())
    finite, gnorm = run.optimizer_step(max_grad_norm)
    loss = float(C.all_reduce_sum(torch.tensor(total_nll, device=dist.device), dist) / n_tok)
    tokens = C.all_reduce_sum(torch.tensor(float(sum(len(c) for _, c, _ in batch)), device=dist.device), dist)
    return loss, gnorm, int(tokens), finite


def main(argv=None) -> None:
    C.setup_logging()
    args = parse_args(argv)
    C.check_flags(*C.model_flag_rules(args),
                  (args.batch_size >= 1, f"--batch-size {args.batch_size}: must be at least 1"),
                  (args.micro_batch >= 1, f"--micro-batch {args.micro_batch}: must be at least 1"),
                  (args.lr > 0, f"--lr {args.lr}: must be positive"),
                  (args.epochs > 0, f"--epochs {args.epochs}: must be positive"),
                  (args.decision_weight > 0, f"--decision-weight {args.decision_weight}: must be positive"),
                  (args.cutoff_len >= 16, f"--cutoff-len {args.cutoff_len}: must be at least 16"),
                  (args.max_steps is None or args.max_steps >= 1, f"--max-steps {args.max_steps}: must be at least 1"),
                  (args.save_every >= 0, f"--save-every {args.save_every}: must not be negative"),
                  (0 <= args.warmup_ratio < 1, f"--warmup-ratio {args.warmup_ratio}: must be in [0, 1)"),
                  (not (args.resume and args.overwrite), "--resume and --overwrite: choose one"),
                  (args.role == "judge" or not args.no_rubric, "--no-rubric: a judge-role flag (the direct judge)"))
    C.fit_micro_batch(args)
    C.use_templates(args)
    dist = C.init_distributed(args.device)
    out = C.prepare_output(args, dist)
    C.seed_everything(args.seed)  # the same on every rank: identical LoRA init
    required = ("rubric",) if args.role == "rubric" else ("judge_trajectory",) if args.no_rubric else \
        ("rubric", "judge_trajectory")
    rows = C.load_pairs_from_args(args, require=required)
    model, tok = C.load_trainable(args, dist, args.adapter)
    examples, counts = build_examples(rows, args.role, tok, args.cutoff_len, args.decision_weight, not args.no_rubric)
    C.log.info("SFT %s%s: %d examples; over --cutoff-len %d: %d fitted by shortening the responses, %d dropped",
               args.role, " (direct: no rubric in the prompt)" if args.no_rubric else "", len(examples),
               args.cutoff_len, counts["truncated"], counts["dropped"])
    if not examples:
        raise SystemExit(f"error: no example fits --cutoff-len {args.cutoff_len}")
    per_rank = max(1, args.batch_size // dist.world)
    run = C.TrainingRun(out, model, dist, lr=args.lr, n_examples=len(examples), per_rank=per_rank, epochs=args.epochs,
                        max_steps=args.max_steps, scheduler=args.lr_scheduler, warmup_ratio=args.warmup_ratio,
                        weight_decay=args.weight_decay, save_every=args.save_every, resume=args.resume,
                        data_seed=args.seed, name=f"sft {args.role}", config=vars(args),
                        wandb_project=args.wandb_project)
    model.train()
    for step in run.steps():
        t0 = time.perf_counter()
        # sorted by length, so that micro-batches pad less (the loss is a sum over examples: the order
        # is free); sorted before the split across ranks, so that ranks hold the same micro-batches as one process
        step_rows = sorted(run.step_indices(step), key=lambda i: (len(examples[i][0]), len(examples[i][1]), i))
        mine = [examples[i] for i in run.rank_share(step_rows)]
        loss, gnorm, n_tok, finite = sft_step(model, run, mine, args.micro_batch, tok.pad_token_id, args.max_grad_norm)
        run.end_step(step, {"loss": loss, "grad_norm": gnorm, "lr": run.lr(), "tokens": n_tok,
                            "epoch": (step + 1) / run.steps_per_epoch, "time_step": time.perf_counter() - t0}, finite)
    path = run.finish(model)
    C.log.info("saved adapter to %s", path)


if __name__ == "__main__":
    C.run_main(main)
