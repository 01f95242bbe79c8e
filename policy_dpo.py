"""Downstream: DPO and iterative DPO of a policy, with Rubric-ARM labelling the preference pairs.

Most used:  python policy_dpo.py --model smollm2-135m --prompts prompts.jsonl --rubric-adapter R --judge-adapter J --out runs/dpo

Each round has three steps, each leaving a marker in OUT/roundK/ so that a rerun with --resume (like every
training stage's: without it a folder holding a run is refused) continues at the first unfinished step of the
first unfinished round:
  1. sample   the current policy samples --n-samples responses per prompt (round 1 may read given
              candidates instead: --candidates FILE with {prompt, responses: [...]})
              (round 1 may read labelled pairs and skip steps 1 and 2: --preferences FILE with
              {prompt, chosen, rejected}, e.g. labelled by a checker)
  2. label    Rubric-ARM writes one rubric per prompt and judges every pair of distinct responses in
              both A/B orders; a pair is kept only if both orders prefer the same response
  3. train    DPO (sigmoid loss) on the kept pairs; the reference is the policy the round starts from
              (--dpo-reference base: the original model), its log-probs computed once per round before
              training; plus --sft-weight x the chosen NLL
The paper's recipe is the default (beta 0.1, lr 8e-7 x 10 for LoRA, cutoff 2048, batch 64, 1 epoch, SFT weight
0.2; IterDPO: --rounds 3). Paper scale:

    python policy_dpo.py --model Qwen/Qwen2.5-7B-Instruct --prompts prompts.jsonl \\
        --rm-model Qwen/Qwen3-8B --rubric-adapter runs/arm/c3_rubric/adapter \\
        --judge-adapter runs/arm/c3_judge/adapter --rounds 3 --out runs/iterdpo \\
        --load-4bit --micro-batch 2 --gradient-checkpointing
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import common as C


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 usage="%(prog)s [flags: listed below]")
    C.add_model_args(ap)
    C.add_run_args(ap)
    ap.add_argument("--adapter", default=None, help="policy adapter to start from (default: a new LoRA)")
    C.add_prompt_args(ap)
    ap.add_argument("--candidates", default=None, help="round 1 reads these {prompt, responses} instead of sampling")
    ap.add_argument("--preferences", default=None,
                    help="round 1 trains on these labelled pairs, {prompt, chosen, rejected} per line, instead of "
                         "sampling and labelling (e.g. pairs labelled by a checker: the ceiling of Table 3)")
    g = ap.add_argument_group("labelling with Rubric-ARM")
    g.add_argument("--rm-model", default=None, help="Rubric-ARM base model of both roles (default: --model)")
    g.add_argument("--n-samples", type=int, default=2, help="responses sampled per prompt (paper Eq. 13: 2)")
    g.add_argument("--sample-temperature", type=float, default=1.0)
    g.add_argument("--max-new-tokens", type=int, default=1024, help="policy response length")
    g.add_argument("--max-rubric-tokens", type=int, default=1024)
    g.add_argument("--max-judge-tokens", type=int, default=4096)
    g.add_argument("--judge-temperature", type=float, default=1.0, help="paper Table 11: 1.0 (0: greedy)")
    g.add_argument("--gen-batch", type=int, default=16, help="prompts per generate call")
    C.add_role_model_args(ap, default="--rm-model")
    g = ap.add_argument_group("DPO (paper recipe defaults)")
    g.add_argument("--rounds", type=int, default=1, help="IterDPO rounds (paper: 3)")
    g.add_argument("--dpo-reference", default="round-start", choices=["round-start", "base"],
                   help="DPO reference of each round: the policy the round starts from (the usual IterDPO recipe, "
                        "and what the paper's per-round LLaMA-Factory runs do), or the original base model")
    g.add_argument("--beta", type=float, default=0.1)
    g.add_argument("--lr", type=float, default=8e-7 * C.LORA_LR_MULTIPLIER,
                   help="LoRA: 8e-6, 10x the paper's full fine-tuning 8e-7")
    g.add_argument("--cutoff-len", type=int, default=2048, help="max prompt + response tokens")
    g.add_argument("--batch-size", type=int, default=64, help="pairs per optimizer step")
    g.add_argument("--micro-batch", type=int, default=2, help="pairs per forward/backward")
    g.add_argument("--epochs", type=float, default=1.0)
    g.add_argument("--sft-weight", type=float, default=0.2, help="weight of the chosen response's NLL")
    g.add_argument("--lr-scheduler", default="cosine", choices=["cosine", "constant"])
    g.add_argument("--warmup-ratio", type=float, default=0.1, help="(the paper does not say; LLaMA-Factory's usual 0.1)")
    g.add_argument("--max-grad-norm", type=float, default=1.0)
    g.add_argument("--max-steps", type=int, default=None)
    g.add_argument("--save-every", type=int, default=50)
    args = ap.parse_args(argv)
    args.rm_model = args.rm_model or args.model
    C.role_models_default(args, args.rm_model)
    return args


def order_consistent_preference(v_xy: str | None, v_yx: str | None) -> int | None:
    """0 if x is preferred in both orders, 1 if y is, None if the orders disagree or a verdict is missing."""
    if v_xy == "A" and v_yx == "B":
        return 0
    if v_xy == "B" and v_yx == "A":
        return 1
    return None


def dpo_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, ref_chosen_logps: torch.Tensor,
             ref_rejected_logps: torch.Tensor, beta: float = 0.1, return_metrics: bool = False):
    """Sigmoid DPO: -log sigmoid(beta * ((logp_c - ref_c) - (logp_r - ref_r))), mean over pairs.
    Log-probs are sums over completion tokens. Metrics: implicit rewards, their accuracy and margin."""
    chosen_r = beta * (chosen_logps - ref_chosen_logps)
    rejected_r = beta * (rejected_logps - ref_rejected_logps)
    loss = -F.logsigmoid(chosen_r - rejected_r).mean()
    if not return_metrics:
        return loss
    with torch.no_grad():
        m = {"reward_acc": float((chosen_r > rejected_r).float().mean()),
             "reward_margin": float((chosen_r - rejected_r).mean()),
             "reward_chosen": float(chosen_r.mean()), "reward_rejected": float(rejected_r.mean())}
    return loss, m


def release_memory() -> None:
    """Return freed model memory (call after dropping the last reference to a model)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def policy_prompt_ids(tok, prompt: str | list[dict]) -> list[int]:
    """The policy's prompt through the chat template: a text is one user turn, a list is the chat."""
    return C.chat_prompt_ids(tok, prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}])


# ---- step 1: sample ------------------------------------------------------------------------------

def sample_responses(args, dist, prompts: list[list[dict]], adapter: str | None, path: Path) -> None:
    """--n-samples responses per prompt. Under torchrun each rank samples every world-th prompt into its
    share file; the main rank writes them in the prompts' order."""
    model, tok = C.load_trainable(args, dist, adapter)
    mine = list(range(dist.rank, len(prompts), dist.world))
    texts = C.generate_batched(model, tok, [policy_prompt_ids(tok, prompts[i]) for i in mine], args.gen_batch,
                               desc="sample", n=args.n_samples, max_new_tokens=args.max_new_tokens,
                               temperature=args.sample_temperature)
    n = args.n_samples
    C.log.info("sampled %d responses for %d of %d prompts%s", len(texts), len(mine), len(prompts),
               f" on rank {dist.rank}" if dist.world > 1 else "")
    rows = [{"prompt": C.messages_text(prompts[i], "prompt"), "messages": prompts[i], "responses": texts[j * n:(j + 1) * n]}
            for j, i in enumerate(mine)]
    if dist.world > 1:
        C.write_jsonl_atomic(C.rank_file(path, dist), rows)
        C.barrier(dist)
        if dist.is_main:
            shares = [C.read_jsonl_resumable(C.rank_file(path, C.Dist(rank=r, world=dist.world))) for r in range(dist.world)]
            rows = [shares[i % dist.world][i // dist.world] for i in range(len(prompts))]
    if dist.is_main:
        C.write_jsonl_atomic(path, rows)
    C.merge_shards(path, None, dist)
    del model
    release_memory()


# ---- step 2: label -------------------------------------------------------------------------------

def label_pairs(rm: C.RubricARM, samples: list[dict], partial: Path | None = None,
                dist: C.Dist | None = None, seed: int = 0) -> tuple[list[dict], dict]:
    """Every pair of distinct responses of a prompt, judged in both orders; keep the consistent ones.
    Verdicts are appended to `partial` chunk by chunk, so an interrupted labelling resumes. Under
    torchrun each rank judges the pairs of every world-th prompt (one rubric per prompt, written once)."""
    dist = dist or C.Dist()
    items, chats = [], {}
    for s in samples:
        text = s["prompt"] if isinstance(s["prompt"], str) else C.messages_text(s["prompt"], "candidates")
        chats[text] = s.get("messages") or (s["prompt"] if isinstance(s["prompt"], list) else None)
        for x, y in itertools.combinations(dict.fromkeys(r for r in s["responses"] if r.strip()), 2):
            items.append((text, x, y))
    def judged() -> tuple[dict, dict]:
        """The verdicts written so far, and the work that wrote them (each chunk's first row carries its counts)."""
        rows = C.read_shards(partial, dist) if partial else []
        work: dict = {}
        for r in rows:
            for key, v in r.get("chunk_stats", {}).items():
                work[key] = work.get(key, 0) + v
        return {(r["prompt"], r["x"], r["y"]): (r["v1"], r["v2"]) for r in rows}, work
    done, earlier = judged()  # earlier: the work of earlier, interrupted invocations
    if done:
        C.log.info("labelling: %d pairs already judged, %d to go", sum(it in done for it in items),
                   sum(it not in done for it in items))
    prompt_index = {p: k for k, p in enumerate(chats)}
    mine = [it for it in items if prompt_index[it[0]] % dist.world == dist.rank]
    own = C.rank_file(partial, dist) if partial else None
    chunk = max(4 * rm.batch_size, 1)
    # chunks are fixed slices of this rank's pairs, each judged from its own seed: a resumed labelling skips the
    # chunks written and draws the rest exactly as an uninterrupted one would (a sampling judge included)
    for k, s in enumerate(range(0, len(mine), chunk)):
        part = [it for it in mine[s:s + chunk] if it not in done]
        if not part:
            continue
        C.maybe_crash("label_chunk", k)  # fault injection for the resume test
        C.seed_everything(seed * 7919 + k)
        before = dict(rm.stats)
        verdicts = rm.both_orders(part)
        done.update(zip(part, verdicts))
        if own:
            rows = [{"prompt": p, "x": x, "y": y, "v1": v1, "v2": v2} for (p, x, y), (v1, v2) in zip(part, verdicts)]
            rows[0]["chunk_stats"] = {k: rm.stats[k] - before.get(k, 0) for k in rm.stats}
            C.append_jsonl(own, rows)
    if dist.world > 1:  # every rank's verdicts, once all have finished
        C.barrier(dist)
        done, _ = judged()
    kept, report = [], {"pairs": len(items), "kept": 0, "dropped_inconsistent": 0, "dropped_unparsed": 0}
    for p, x, y in items:
        v1, v2 = done[(p, x, y)]
        pref = order_consistent_preference(v1, v2)
        if pref is None:
            report["dropped_unparsed" if v1 is None or v2 is None else "dropped_inconsistent"] += 1
            continue
        chosen, rejected = (x, y) if pref == 0 else (y, x)
        kept.append({"id": f"pair-{len(kept)}", "prompt": p, "chosen": chosen, "rejected": rejected,
                     **({"messages": chats[p]} if chats.get(p) else {})})
    report["kept"] = len(kept)
    report["earlier"] = earlier
    return kept, report


def label_round(args, dist, samples_path: Path, prefs_path: Path, seed: int) -> dict:
    samples = C.read_jsonl_resumable(samples_path)
    rm = C.RubricARM.load(C.role_spec(args, "rubric"), C.role_spec(args, "judge"),
                          load_4bit=args.load_4bit, device=dist.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                          max_rubric_tokens=args.max_rubric_tokens, max_judge_tokens=args.max_judge_tokens,
                          judge_temperature=args.judge_temperature, batch_size=args.gen_batch,
                          server=C.server_options(args))
    if dist.is_main:  # the round's labels are reused on resume: only from the same served models
        C.check_served_identity(prefs_path.parent, {"rubric": rm.gen, "judge": rm.jud})
    partial = prefs_path.with_name("labels.partial.jsonl")
    kept, report = label_pairs(rm, samples, partial, dist, seed)
    C.merge_shards(partial, None, dist)
    if dist.is_main:
        C.write_jsonl_atomic(prefs_path, kept)
        partial.unlink(missing_ok=True)
    earlier = report.pop("earlier")  # already summed over the share files of every rank
    report.update({k: int(v) + int(earlier.get(k, 0)) for k, v in C.sum_over_ranks(rm.stats, dist).items()})
    C.log.info("labelled %d pairs: kept %d, dropped %d inconsistent across A/B orders, %d unparsed",
               report["pairs"], report["kept"], report["dropped_inconsistent"], report["dropped_unparsed"])
    del rm
    release_memory()
    return report


def given_records(path: str, fields: str):
    """(where, record, prompt) of a file of records the user gives (prompt: a text or chat messages, checked);
    a bad record stops the stage naming its file, line and field. The file is read, never written."""
    for where, rec, err in C.load_records(path):
        if err:
            raise C.DataError(f"{where}: {err}")
        if not isinstance(rec, dict):
            raise C.DataError(f"{where}: expected an object with {fields}")
        prompt = rec.get("prompt")
        if isinstance(prompt, list):
            C.messages_text(prompt, where)  # validates the chat
        elif not (isinstance(prompt, str) and prompt.strip()):
            raise C.DataError(f"{where}: field 'prompt' is missing or empty")
        yield where, rec, prompt


def given_candidates(path: str) -> list[dict]:
    """--candidates: {prompt, responses: [text, ...]} per record."""
    rows = []
    for where, rec, prompt in given_records(path, "prompt and responses"):
        responses = rec.get("responses")
        if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
            raise C.DataError(f"{where}: field 'responses' must be a list of response texts")
        rows.append({"prompt": prompt, "responses": responses,
                     **({"messages": rec["messages"]} if isinstance(rec.get("messages"), list) else {})})
    if not rows:
        raise C.DataError(f"{path}: no candidates")
    return rows


def given_preferences(path: str) -> list[dict]:
    """--preferences: pairs labelled elsewhere, {prompt, chosen, rejected} per record."""
    kept = []
    for where, rec, prompt in given_records(path, "prompt, chosen and rejected"):
        for field in ("chosen", "rejected"):
            if not (isinstance(rec.get(field), str) and rec[field].strip()):
                raise C.DataError(f"{where}: field '{field}' is missing or empty (a response text)")
        kept.append({"id": rec.get("id", f"pair-{len(kept)}"), "prompt": prompt, "chosen": rec["chosen"],
                     "rejected": rec["rejected"]})
    if not kept:
        raise C.DataError(f"{path}: no preference pairs")
    return kept


# ---- step 3: DPO ---------------------------------------------------------------------------------

def tokenize_pairs(tok, prefs: list[dict], cutoff: int) -> tuple[list[tuple], dict]:
    """(prompt, chosen, rejected) ids; a response is cut at its end to fit the cutoff (never the
    prompt); a pair whose prompt alone leaves no room is dropped."""
    out, counts = [], {"truncated": 0, "dropped_long_prompt": 0}
    for r in prefs:
        p = policy_prompt_ids(tok, r.get("messages") or r["prompt"])
        room = cutoff - len(p)
        if room < 2:
            counts["dropped_long_prompt"] += 1
            continue
        c, j = C.completion_ids(tok, r["chosen"]), C.completion_ids(tok, r["rejected"])
        if len(c) > room or len(j) > room:
            counts["truncated"] += 1
        out.append((p, c[:room], j[:room]))
    return out, counts


def pair_logps(model, pairs: list[tuple], pad_id: int, device) -> tuple[torch.Tensor, ...]:
    """Summed log-probs of chosen and rejected, and the chosen lengths, in one forward of 2m rows."""
    batch = C.collate_completions([(p, c) for p, c, _ in pairs] + [(p, j) for p, _, j in pairs], pad_id, device)
    logp, n = C.sequence_logprobs(model, batch)
    m = len(pairs)
    return logp[:m], logp[m:], n[:m]


@torch.no_grad()
def reference_logps(model, pairs, mb: int, pad_id: int, device, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Once per round, before the round trains: the reference policy's log-probs. 'round-start' is the
    policy as the round begins (its adapter as it is now, before any update: the previous round's
    result, or a fresh LoRA, which equals the base); 'base' is the original model, adapter disabled."""
    ch, rj = [], []
    with model.disable_adapter() if kind == "base" else contextlib.nullcontext():
        for s in C.progress(range(0, len(pairs), mb), desc="reference"):
            c, r, _ = pair_logps(model, pairs[s:s + mb], pad_id, device)
            ch.append(c.float().cpu())
            rj.append(r.float().cpu())
    return torch.cat(ch), torch.cat(rj)


def dpo_step(model, run: C.TrainingRun, batch: list[tuple], ref_c, ref_r, args, pad_id: int) -> tuple[dict, bool]:
    """One optimizer step: DPO + sft_weight x chosen NLL, mean over the batch's pairs, accumulated
    over micro-batches of --micro-batch pairs."""
    run.opt.zero_grad(set_to_none=True)
    agg = {"loss": 0.0, "dpo_loss": 0.0, "sft_loss": 0.0, "reward_acc": 0.0, "reward_margin": 0.0}
    for s in range(0, len(batch), args.micro_batch):
        part = batch[s:s + args.micro_batch]
        c, r, n_c = pair_logps(model, part, pad_id, run.dist.device)
        sl = slice(s, s + len(part))
        dpo, m = dpo_loss(c, r, ref_c[sl].to(c), ref_r[sl].to(r), args.beta, return_metrics=True)
        sft = (-c / n_c).mean()  # per-token NLL of the chosen response
        loss = dpo + args.sft_weight * sft
        w = len(part) / len(batch)
        (loss * w).backward()
        for key, v in (("loss", float(loss)), ("dpo_loss", float(dpo)), ("sft_loss", float(sft)),
                       ("reward_acc", m["reward_acc"]), ("reward_margin", m["reward_margin"])):
            agg[key] += v * w
    finite, agg["grad_norm"] = run.optimizer_step(args.max_grad_norm)
    return agg, finite


def train_dpo(args, dist, adapter: str | None, prefs_path: Path, out: Path) -> dict:
    model, tok = C.load_trainable(args, dist, adapter)
    prefs = C.read_jsonl_resumable(prefs_path)
    pairs, counts = tokenize_pairs(tok, prefs, args.cutoff_len)
    if not pairs:
        C.log.warning("no preference pairs to train on; the adapter is carried over unchanged")
        if dist.is_main:  # one writer: every rank renaming one temporary folder raced
            C.save_adapter_atomic(model, out / "adapter")
        C.barrier(dist)
        return {"pairs": 0, **counts}
    C.log.info("DPO on %d pairs (%d responses truncated to --cutoff-len, %d dropped)", len(pairs),
               counts["truncated"], counts["dropped_long_prompt"])
    ref_path = out / "ref_logps.pt"
    C.barrier(dist)  # every rank sees the file as it was before this round: all load it, or all compute it
    if ref_path.exists():
        ref_c, ref_r = torch.load(ref_path).values()
    else:
        ref_c, ref_r = reference_logps(model, pairs, args.micro_batch, tok.pad_token_id, dist.device, args.dpo_reference)
        if dist.is_main:  # one writer: two ranks renaming one temporary file raced (one rename found it gone)
            tmp = ref_path.with_suffix(".tmp")
            torch.save({"chosen": ref_c, "rejected": ref_r}, tmp)
            tmp.replace(ref_path)
    per_rank = max(1, args.batch_size // dist.world)
    run = C.TrainingRun(out, model, dist, lr=args.lr, n_examples=len(pairs), per_rank=min(per_rank, len(pairs)),
                        epochs=args.epochs, max_steps=args.max_steps, scheduler=args.lr_scheduler,
                        warmup_ratio=args.warmup_ratio, save_every=args.save_every, resume=True, data_seed=args.seed,
                        name=f"dpo {out.name}", config=vars(args), wandb_project=args.wandb_project)
    model.train()
    last = {}
    for step in run.steps():
        t0 = time.perf_counter()
        idx = run.rank_share(run.step_indices(step))
        agg, finite = dpo_step(model, run, [pairs[i] for i in idx], ref_c[idx], ref_r[idx], args, tok.pad_token_id)
        last = {**agg, "lr": run.lr(), "time_step": time.perf_counter() - t0}
        run.end_step(step, last, finite)
    run.finish(model)
    del model, run
    release_memory()
    return {"pairs": len(pairs), **counts, **last}


# ---- the rounds ----------------------------------------------------------------------------------

def step_seed(seed: int, k: int, step: str) -> int:
    """The seed each step of round k starts from: a resumed run skips the steps already done (and part of a
    labelling), so the RNG must not carry over from one step to the next (it gave a resumed run other weights)."""
    return (seed * 1_000_003 + k * 101 + ("sample", "label", "train").index(step)) % 2**31


def steps_done(rdir: Path, dist: C.Dist) -> set[str]:
    """The steps of a round already finished (their markers), read by every rank before any rank writes one:
    a rank that looked later would skip a step the others run, and their barriers would never meet."""
    finished = {s for s in ("sample", "label", "train") if (rdir / f".done_{s}").exists()}
    C.barrier(dist)
    for s in ("sample", "label", "train"):
        if s in finished:
            C.log.info("%s: %s done, skipped", rdir.name, s)
    return finished


def run_round(args, dist, prompts: list[str], k: int, adapter: str | None, rdir: Path) -> str:
    """One IterDPO round; each finished step leaves rdir/.done_<step>. Returns the new adapter."""
    rdir.mkdir(exist_ok=True)
    finished = steps_done(rdir, dist)
    if k == 1 and args.preferences and "label" not in finished:  # labelled already: no sampling, no judging
        prefs = given_preferences(args.preferences)
        if dist.is_main:
            C.write_jsonl_atomic(rdir / "prefs.jsonl", prefs)
            C.atomic_write_text(rdir / "label_report.json", json.dumps(
                {"pairs": len(prefs), "kept": len(prefs), "given": str(args.preferences)}, indent=2))
            (rdir / ".done_sample").touch()
            (rdir / ".done_label").touch()
        finished |= {"sample", "label"}
        C.barrier(dist)
    if "sample" not in finished:
        if k == 1 and args.candidates:
            rows = given_candidates(args.candidates)
            if dist.is_main:
                C.write_jsonl_atomic(rdir / "samples.jsonl", rows)
        else:
            C.seed_everything(step_seed(args.seed, k, "sample"))
            sample_responses(args, dist, prompts, adapter, rdir / "samples.jsonl")
        if dist.is_main:
            (rdir / ".done_sample").touch()
        C.barrier(dist)
    if "label" not in finished:
        report = label_round(args, dist, rdir / "samples.jsonl", rdir / "prefs.jsonl", step_seed(args.seed, k, "label"))
        if dist.is_main:
            C.atomic_write_text(rdir / "label_report.json", json.dumps(report, indent=2))
            (rdir / ".done_label").touch()
        C.barrier(dist)  # the other ranks train on the labels the main rank wrote
    if "train" not in finished:
        C.seed_everything(step_seed(args.seed, k, "train"))  # the new LoRA's init, the data order
        report = train_dpo(args, dist, adapter, rdir / "prefs.jsonl", rdir)
        if dist.is_main:
            C.atomic_write_text(rdir / "train_report.json", json.dumps(report, indent=2))
            (rdir / ".done_train").touch()
        C.barrier(dist)
    return str(rdir / "adapter")


def main(argv=None) -> None:
    C.setup_logging()
    args = parse_args(argv)
    C.check_flags(*C.model_flag_rules(args), *C.role_flag_rules(args),
                  (args.n_samples >= 2, f"--n-samples {args.n_samples}: must be at least 2 (pairs of responses)"),
                  (args.rounds >= 1, f"--rounds {args.rounds}: must be at least 1"),
                  (args.beta > 0, f"--beta {args.beta}: must be positive"),
                  (args.lr > 0, f"--lr {args.lr}: must be positive"),
                  (args.batch_size >= 1 and args.micro_batch >= 1, "--batch-size and --micro-batch: must be at least 1"),
                  (args.epochs > 0, f"--epochs {args.epochs}: must be positive"),
                  (args.cutoff_len >= 16, f"--cutoff-len {args.cutoff_len}: must be at least 16"),
                  (args.sft_weight >= 0, f"--sft-weight {args.sft_weight}: must not be negative"),
                  (args.judge_temperature >= 0, f"--judge-temperature {args.judge_temperature}: must not be negative"),
                  (args.max_new_tokens >= 1, f"--max-new-tokens {args.max_new_tokens}: must be at least 1"),
                  (args.gen_batch >= 1, f"--gen-batch {args.gen_batch}: must be at least 1"),
                  (args.sample_temperature >= 0, f"--sample-temperature {args.sample_temperature}: must not be negative "
                                                 "(0: greedy)"),
                  (args.max_rubric_tokens >= 1 and args.max_judge_tokens >= 1,
                   "--max-rubric-tokens and --max-judge-tokens: must be at least 1"),
                  (not (args.resume and args.overwrite), "--resume and --overwrite: choose one"),
                  (not (args.candidates and args.preferences), "--candidates and --preferences: round 1 reads one"))
    C.fit_micro_batch(args)
    C.use_templates(args)
    dist = C.init_distributed(args.device)
    out = C.prepare_output(args, dist)
    C.seed_everything(args.seed)
    prompts = C.load_prompts(args.prompts, args.split, args.limit, args.prompt_field)
    C.log.info("%d prompts, %d round(s)", len(prompts), args.rounds)
    adapter = args.adapter
    for k in range(1, args.rounds + 1):
        adapter = run_round(args, dist, prompts, k, adapter, out / f"round{k}")
        report = json.loads((out / f"round{k}" / "label_report.json").read_text())
        C.log.info("round %d: %d pairs kept of %d; adapter %s", k, report["kept"], report["pairs"], adapter)
    C.atomic_write_text(out / "final_adapter.txt", adapter + "\n")


if __name__ == "__main__":
    C.run_main(main)
