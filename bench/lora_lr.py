"""How far LoRA moves at a learning rate, against full fine-tuning at the paper's rate.

The paper fully fine-tunes (SFT 8e-6 / 5e-6, GRPO 1e-6, DPO 8e-7); this project trains LoRA adapters.
For each setting: 40 AdamW steps of SFT on the same fixed batch of rubric-generator examples (the
real prompt through the chat template, the reference rubric as the target), and the drop of the
completion NLL on that batch. Full fine-tuning runs at the paper's rate; LoRA r16 (alpha 32, all
linear layers) at the paper's rate times each multiplier. The ratio says how much larger a LoRA rate
must be to move the model as much as the paper's rate moves full weights.

    python bench/lora_lr.py --model smollm2-135m --data data/if_train.jsonl    # about 15 min on 2 cores
    python bench/lora_lr.py --model tiny --steps 40                           # the random tiny model
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tasks"), str(ROOT / "bench")]  # stages, task builders, bench helpers
import common as C  # noqa: E402
import toy_task  # noqa: E402
from _util import write_section  # noqa: E402


def nll(model, batch) -> float:
    with torch.no_grad():
        logp, n = C.sequence_logprobs(model, batch)
    return float(-logp.sum() / n.sum())


def run(model_name: str, examples, lr: float, lora: bool, steps: int, dtype: str, seed: int) -> dict:
    torch.manual_seed(seed)
    tok = C.load_tokenizer(model_name)
    base = C.load_base_model(model_name, device=torch.device("cpu"), dtype=dtype if lora else "fp32")
    model = C.attach_lora(base, r=16, alpha=32) if lora else base
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    batch = C.collate_completions(examples, tok.pad_token_id, torch.device("cpu"))
    model.train()
    before = nll(model, batch)
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        logp, n = C.sequence_logprobs(model, batch)
        (-logp.sum() / n.sum()).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    after = nll(model, batch)
    return {"lora": lora, "lr": lr, "nll_before": before, "nll_after": after, "drop": before - after,
            "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="a model name, or 'tiny' for the random tiny model")
    ap.add_argument("--data", default="data/if_train.jsonl")
    ap.add_argument("--examples", type=int, default=4)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--paper-lr", type=float, default=8e-6, help="the paper's full fine-tuning rate (rubric SFT)")
    ap.add_argument("--multipliers", default="1,10,30,100", help="LoRA rates = paper rate x these")
    ap.add_argument("--dtype", default="bf16", help="LoRA runs' base dtype (full fine-tuning is fp32)")
    ap.add_argument("--seed", type=C.seed_value, default=0)
    ap.add_argument("--out", default="runs/bench_lora_lr", help="folder for the results JSON (and the tiny model)")
    ap.add_argument("--write", action="store_true", help="write the section of BENCHMARKS.md")
    args = ap.parse_args()
    C.setup_logging()
    model = args.model
    if model == "tiny":
        model = str(toy_task.make_tiny_model(Path(args.out) / "tiny-model"))
    tok = C.load_tokenizer(model)
    rows = C.load_pairs(args.data, limit=args.examples, require=("rubric",))
    examples = [(C.chat_prompt_ids(tok, C.rubric_messages(r["prompt"])), C.completion_ids(tok, r["rubric"])) for r in rows]
    results = [run(model, examples, args.paper_lr, False, args.steps, args.dtype, args.seed)]
    for m in (float(x) for x in args.multipliers.split(",")):
        results.append(run(model, examples, args.paper_lr * m, True, args.steps, args.dtype, args.seed))
    full = results[0]["drop"]
    lines = ["| setting | lr | NLL before -> after | drop | drop / full FT drop | time |", "|---|---|---|---|---|---|"]
    for r in results:
        name = "LoRA r16" if r["lora"] else "full fine-tuning (fp32)"
        lines.append(f"| {name} | {r['lr']:.1e} | {r['nll_before']:.3f} -> {r['nll_after']:.3f} | {r['drop']:.3f} | "
                     f"{r['drop'] / full:.2f} | {r['seconds']:.0f} s |")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.model}.json").write_text(json.dumps(results, indent=2))
    if args.write:
        cmd = f"python bench/lora_lr.py --model {args.model} --data {args.data} --steps {args.steps} --write"
        write_section(f"lora_lr_{args.model}", f"LoRA vs full fine-tuning learning rates ({args.model})", cmd,
                      f"{args.steps} AdamW steps on one fixed batch of {args.examples} rubric-SFT examples; drop of the "
                      "completion NLL. Full fine-tuning at the paper's rate, LoRA at multiples of it.\n\n" + table)


if __name__ == "__main__":
    main()
