"""What the model can reach as a judge on a pairwise task, before any recipe: the reference the
project's trajectory judge should approach.

Both readings use the project's own judge prompt (instruction, reference rubric, Response A and B,
chat template) followed by the assistant's "Winner: Response", and look at the next token.

  probe      logistic regression on the frozen hidden state of that last position, per layer, fit on the
             train pairs (both A/B orders), scored on the held-out files
  decision   LoRA on the top --top-layers layers, trained with the loss on the verdict letter alone
             (" A" vs " B"); the layers below run once per prompt and their output is cached
             (frozen, so the same numbers as running them every step)

Accuracy is per pair (its two orders averaged), with a 95% bootstrap interval, overall and per deciding
constraint type (rows' `decisive` field). Writes one JSON report.

    python experiments/judge_reach.py --model smollm2-135m --train data/if_train.jsonl --n-train 800 \\
        --eval data/if_test.jsonl --eval data/if_ood.jsonl --out docs/results/judge_reach.json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tasks"), str(ROOT / "experiments")]  # stages, tasks, drivers

import baselines as B  # noqa: E402
import common as C  # noqa: E402

VERDICT_PREFIX = "Winner: Response"


def prompt_ids(tok, row: dict, swap: bool, max_len: int) -> tuple[list[int], int]:
    """The judge prompt of one pair in one order, the assistant turn opened with VERDICT_PREFIX; and the
    label (1 if the response shown first wins)."""
    a, b, winner = C.swap_pair(row, swap)
    ids, _ = C.judge_prompt_ids(tok, row["prompt"], row["rubric"], a, b, max_len)
    if ids is None:
        raise SystemExit(f"error: {row['id']}: the judge prompt does not fit {max_len} tokens")
    return ids + tok(VERDICT_PREFIX, add_special_tokens=False)["input_ids"], int(winner == "A")


def rope(model, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pos = torch.arange(hidden.shape[1]).unsqueeze(0)
    return model.model.rotary_emb(hidden, pos)


@torch.no_grad()
def lower_pass(model, ids: list[int], split_layer: int, probe_layers: list[int]) -> tuple[torch.Tensor, dict]:
    """Hidden states after layer split_layer at every position (the input of the trained top), and the
    last position's state after each probe layer (after the final norm for the last layer)."""
    out = model.model(input_ids=torch.tensor([ids]), output_hidden_states=True, use_cache=False)
    hs = out.hidden_states  # embeddings, then one per layer; the last has the final norm applied
    return hs[split_layer][0].clone(), {L: hs[L][0, -1].float().clone() for L in probe_layers}


def top_logits(model, hidden: torch.Tensor, split_layer: int, letters: torch.Tensor) -> torch.Tensor:
    """Logits of the two verdict letters at the last position, running layers split_layer.. on `hidden`."""
    h = hidden.unsqueeze(0)
    pe = rope(model, h)
    for layer in model.model.layers[split_layer:]:
        h = layer(h, attention_mask=None, position_embeddings=pe)
        h = h[0] if isinstance(h, tuple) else h
    h = model.model.norm(h[:, -1])
    return model.lm_head(h)[0, letters].float()


def per_type(rows: list[dict], per_pair: list[float]) -> dict[str, dict]:
    groups: dict[str, list[float]] = {}
    for r, v in zip(rows, per_pair):
        groups.setdefault(r.get("decisive", "all"), []).append(v)
    return {k: {"pairs": len(v), "accuracy": sum(v) / len(v)} for k, v in sorted(groups.items())}


def summary(rows: list[dict], correct: list[float]) -> dict:
    """correct: one value per (pair, order), the first half one order, the second the other."""
    n = len(rows)
    pair = [(correct[i] + correct[n + i]) / 2 for i in range(n)]
    m, lo, hi = B.bootstrap(pair)
    return {"pairs": n, "accuracy": m, "ci95": [lo, hi], "by_type": per_type(rows, pair)}


def encode(model, tok, rows: list[dict], args, desc: str) -> dict:
    feats = {L: [] for L in args.probe_layers}
    lower, labels = [], []
    bar = C.progress(total=2 * len(rows), desc=desc)
    for swap in (False, True):
        for r in rows:
            ids, y = prompt_ids(tok, r, swap, args.max_prompt_length)
            h, f = lower_pass(model, ids, args.split_layer, args.probe_layers)
            lower.append(h.to(torch.bfloat16))
            labels.append(y)
            for L in args.probe_layers:
                feats[L].append(f[L])
            bar.update(1)
    bar.close()
    return {"lower": lower, "y": torch.tensor(labels, dtype=torch.float), "feats": {L: torch.stack(v) for L, v in feats.items()}}


def probe(train: dict, evals: dict[str, tuple[list[dict], dict]], layers: list[int]) -> dict:
    out = {}
    for L in layers:
        x, y = train["feats"][L], train["y"]
        mu, sd = x.mean(0), x.std(0).clamp_min(1e-4)
        best, best_val = None, -1.0
        n = x.shape[0] // 2
        idx = list(range(n))
        random.Random(0).shuffle(idx)
        val = set(idx[:n // 5])
        fit = [i for i in range(2 * n) if i % n not in val]
        held = [i for i in range(2 * n) if i % n in val]
        for l2 in (1e-4, 1e-3, 1e-2, 1e-1):
            w, b = fit_probe((x[fit] - mu) / sd, y[fit], l2)
            acc = ((((x[held] - mu) / sd) @ w + b > 0).float() == y[held]).float().mean().item()
            if acc > best_val:
                best, best_val = l2, acc
        w, b = fit_probe((x - mu) / sd, y, best)
        res = {"l2": best, "validation_accuracy": best_val,
               "train_accuracy": ((((x - mu) / sd) @ w + b > 0).float() == y).float().mean().item()}
        for name, (rows, enc) in evals.items():
            pred = ((enc["feats"][L] - mu) / sd) @ w + b > 0
            res[name] = summary(rows, (pred.float() == enc["y"]).float().tolist())
        out[str(L)] = res
        C.log.info("probe layer %d: %s", L, ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in res.items() if isinstance(v, dict)))
    return out


def fit_probe(x: torch.Tensor, y: torch.Tensor, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return w.detach(), b.detach()


def decision_fit(model, tok, train: dict, evals: dict[str, tuple[list[dict], dict]], args, on_point=None) -> dict:
    """LoRA on the top layers, cross-entropy on the verdict letter; held-out accuracy every --eval-every steps
    (each point handed to on_point(curve) as it comes, so a stopped run keeps its curve)."""
    from peft import LoraConfig, get_peft_model
    n_layers = len(model.model.layers)
    targets = [f"model.layers.{i}.{m}" for i in range(args.split_layer, n_layers)
               for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                         "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]
    peft = get_peft_model(model, LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, target_modules=targets, lora_dropout=0.0))
    base = peft.get_base_model()
    params = [p for p in peft.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    letters = torch.tensor([tok(" A", add_special_tokens=False)["input_ids"][-1], tok(" B", add_special_tokens=False)["input_ids"][-1]])
    n = len(train["lower"])
    order = list(range(n))
    rng = random.Random(args.seed)
    curve, t0 = [], time.perf_counter()

    def held_out(step: int) -> None:
        peft.eval()
        point = {"step": step, "seconds": time.perf_counter() - t0}
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            for name, (rows, enc) in evals.items():
                ok = []
                for h, y in zip(enc["lower"], enc["y"].tolist()):
                    lg = top_logits(base, h, args.split_layer, letters)
                    ok.append(float((lg[0] > lg[1]) == (y == 1)))
                point[name] = summary(rows, ok)
        curve.append(point)
        if on_point is not None:
            on_point(curve)
        C.log.info("decision fit step %d: %s", step, ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in point.items() if isinstance(v, dict)))
        peft.train()

    held_out(0)
    pos = 0
    for step in range(1, args.steps + 1):
        if pos + args.batch > n:
            pos = 0
        if pos == 0:
            rng.shuffle(order)
        batch, pos = order[pos:pos + args.batch], pos + args.batch
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for i in batch:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                lg = top_logits(base, train["lower"][i], args.split_layer, letters)
            target = torch.tensor(0 if train["y"][i] == 1 else 1)
            loss = F.cross_entropy(lg.unsqueeze(0), target.unsqueeze(0)) / len(batch)
            loss.backward()
            loss_sum += float(loss)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 10 == 0:
            C.log.info("decision fit step %d: loss %.4f (%.1f s/step)", step, loss_sum, (time.perf_counter() - t0) / step)
        if step % args.eval_every == 0 or step == args.steps:
            held_out(step)
    return {"split_layer": args.split_layer, "top_layers": n_layers - args.split_layer, "lora_r": args.lora_r,
            "lr": args.lr, "batch": args.batch, "steps": args.steps, "curve": curve}


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--train", default="data/if_train.jsonl")
    ap.add_argument("--n-train", type=int, default=800, help="train pairs used (each in both orders)")
    ap.add_argument("--eval", action="append", default=None, help="held-out pairs (repeatable; default if_test, if_ood)")
    ap.add_argument("--n-eval", type=int, default=200, help="pairs per held-out file")
    ap.add_argument("--max-prompt-length", type=int, default=1024)
    ap.add_argument("--probe-layers", type=int, nargs="+", default=[8, 12, 16, 20, 24, 30])
    ap.add_argument("--split-layer", type=int, default=22,
                    help="LoRA on layers from this one up; the rest cached (0: every layer trained)")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--seed", type=C.seed_value, default=0)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--out", required=True, help="JSON report")
    C.add_template_args(ap)  # --judge-template: e.g. a compact prompt without the judge's instructions
    args = ap.parse_args()
    C.setup_logging()
    C.use_templates(args)
    C.seed_everything(args.seed)
    torch.set_grad_enabled(True)
    tok = C.load_tokenizer(args.model)
    model = C.load_base_model(args.model, device=torch.device("cpu"), dtype=args.dtype)
    model.requires_grad_(False)
    model.eval()
    train_rows = C.load_pairs(args.train)[:args.n_train]
    evals_paths = args.eval or ["data/if_test.jsonl", "data/if_ood.jsonl"]
    t0 = time.perf_counter()
    train = encode(model, tok, train_rows, args, "encode train")
    evals = {Path(p).stem: (rows := C.load_pairs(p)[:args.n_eval], encode(model, tok, rows, args, f"encode {Path(p).stem}"))
             for p in evals_paths}
    encode_s = time.perf_counter() - t0
    report = {"model": args.model, "train": args.train, "train_pairs": len(train_rows), "args": vars(args),
              "judge_template": C.TEMPLATES["judge"],
              "eval": {k: len(v[0]) for k, v in evals.items()}, "verdict_prefix": VERDICT_PREFIX,
              "encode_seconds": encode_s, "probe": probe(train, evals, args.probe_layers)}
    C.atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    def keep(curve: list[dict]) -> None:
        report["decision_fit_partial"] = {"split_layer": args.split_layer, "curve": curve,
                                          "top_layers": len(model.model.layers) - args.split_layer}
        C.atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    report["decision_fit"] = decision_fit(model, tok, train, evals, args, keep)
    report.pop("decision_fit_partial", None)
    report["seconds"] = time.perf_counter() - t0
    C.atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    best = {k: max(p[k]["accuracy"] for p in report["decision_fit"]["curve"]) for k in evals}
    print(json.dumps({"probe_best": {k: max(v[k]["accuracy"] for v in report["probe"].values()) for k in evals},
                      "decision_fit_best": best}, indent=2))
    assert math.isfinite(report["seconds"])


if __name__ == "__main__":
    C.run_main(main)
