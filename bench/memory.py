"""Peak GPU memory of each phase for a Qwen3-8B-shaped model, as a function of the flags.

An analytic estimate everywhere (the model below), and on a CUDA machine the measured peak of one
real step of the phase with random weights (--measure). The estimate counts:
  weights     bf16: 2 bytes/param; 4-bit nf4 with double quantisation: 0.516 bytes per linear weight,
              embeddings, output head and norms stay bf16 (bitsandbytes leaves them)
  LoRA        fp32 parameters, gradients and two AdamW moments: 16 bytes per trainable parameter; a
              frozen second adapter (the judge in the rubric phase) 4 bytes per parameter
  generation  KV cache: 2 (K, V) x layers x kv_heads x head_dim x 2 bytes per token, for
              gen_batch x G sequences of prompt + completion tokens (the prefix is expanded G times);
              plus the last position's fp32 logits
  training    one micro-batch of micro x (prompt + completion) tokens: activations kept for backward,
              bf16, per token per layer (10 x hidden + 4 x intermediate) values without gradient
              checkpointing, or one hidden state per layer plus one layer's activations with it, and
              the attention's K and V repeated to every query head over prompt + completion (what
              SDPA with a padding mask keeps; a GRPO group's shared prompt counts once per completion
              here, and its expanded cache once more); the
              fp32 logits of one chunk of completion positions (the output head runs only there, 2^24
              logits at a time, recomputed in backward), about 10 bytes per logit with log-softmax and
              its gradient; with 4-bit weights one dequantised linear weight at a time
  peak        weights + LoRA state + max(generation, training) + 1 GB for the CUDA context and
              allocator slack
Lengths per phase follow the paper: SFT cutoffs 3072 (rubric) and 6144 (judge); judge phase G=7,
1024 new tokens, judge prompts up to --max-prompt-length 5120; rubric phase G=6, 512 new tokens,
and the frozen judge's greedy verdicts (prompt up to 5120, --judge-max-new-tokens 1024); DPO
cutoff 2048, two sequences per pair.

    python bench/memory.py                       # estimates; writes the memory section of BENCHMARKS.md
    python bench/memory.py --measure             # on a CUDA machine: also one real step per phase
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch

import _util as U
import common as C

GB = 1024 ** 3


@dataclass(frozen=True)
class Shape:
    hidden: int = 4096
    layers: int = 36
    heads: int = 32
    kv_heads: int = 8
    head_dim: int = 128
    intermediate: int = 12288
    vocab: int = 151936
    tied: bool = False             # output head shares the embedding matrix
    arch: str = "qwen3"            # the architecture of the random model of --measure: qwen3 or llama


QWEN3_8B = Shape()
# SmolLM2-135M-Instruct (the shipped real model): Llama, GQA 9/3 heads, tied embeddings
SMOLLM2_135M = Shape(576, 30, 9, 3, 64, 1536, 49152, tied=True, arch="llama")


@dataclass(frozen=True)
class Flags:
    load_4bit: bool = True
    lora_r: int = 16
    G: int = 7
    prompt_len: int = 5120
    completion_len: int = 1024
    micro_batch: int = 1
    gen_batch: int = 1             # prompts per generate call
    grad_ckpt: bool = True
    judge_prompt_len: int = 0      # rubric phase: the frozen judge's prompt and new tokens
    judge_new: int = 0
    judge_batch: int = 1
    pair: bool = False             # DPO: chosen and rejected per example
    passes: int = 2                # GRPO optimisation passes per generated batch (--num-iterations)
    share_prefix: bool = True      # a GRPO micro-batch of whole groups runs each prompt once
    gqa_repeat: bool = True        # attention keeps K/V repeated to every query head (SDPA with a mask)


def linear_shapes(s: Shape) -> list[tuple[int, int]]:
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    return [(s.hidden, q), (s.hidden, kv), (s.hidden, kv), (q, s.hidden),
            (s.hidden, s.intermediate), (s.hidden, s.intermediate), (s.intermediate, s.hidden)]


def params(s: Shape) -> dict:
    lin = s.layers * sum(i * o for i, o in linear_shapes(s))
    other = (1 if s.tied else 2) * s.vocab * s.hidden + s.layers * (2 * s.hidden + 2 * s.head_dim) + s.hidden
    return {"linear": lin, "other": other, "total": lin + other}


def lora_params(s: Shape, r: int) -> int:
    return s.layers * sum(r * (i + o) for i, o in linear_shapes(s))


def estimate(s: Shape, f: Flags, phase: str, context_gb: float = 1.0) -> dict:
    """GB per term. context_gb: the runtime's fixed cost (CUDA context and allocator slack; 0 where
    the measurement already leaves the process's own start-up memory out, as on CPU)."""
    p = params(s)
    weights = p["linear"] * (0.516 if f.load_4bit else 2) + p["other"] * 2
    n_lora = lora_params(s, f.lora_r)
    lora = 16 * n_lora + (4 * n_lora if phase == "rubric phase" else 0)
    kv_tok = 2 * s.layers * s.kv_heads * s.head_dim * 2
    gen = 0.0
    if phase in ("judge phase", "rubric phase"):
        gen = f.gen_batch * f.G * (f.prompt_len + f.completion_len) * kv_tok + f.gen_batch * f.G * s.vocab * 4
    if phase == "rubric phase":  # the frozen judge's verdicts on every rubric of a step, judge_batch at a time
        gen = max(gen, f.judge_batch * (f.judge_prompt_len + f.judge_new) * kv_tok + f.judge_batch * s.vocab * 4)
    seqs = f.micro_batch * (2 if f.pair else 1)
    tokens = seqs * (f.prompt_len + f.completion_len)
    # every sequence attends over its prompt + completion: SDPA with a padding mask gets K and V repeated
    # to all query heads (transformers' repeat_kv; flash-attention-2 reads the grouped heads instead) and
    # keeps them for backward, bf16
    kv_rows = seqs * (f.prompt_len + f.completion_len)
    attn_kv = 2 * 2 * s.heads * s.head_dim if f.gqa_repeat else kv_tok // s.layers
    cache = 0
    if phase in ("judge phase", "rubric phase") and f.share_prefix and f.G > 1 and f.micro_batch % f.G == 0:
        # whole groups per micro-batch: each prompt runs once, its K/V cache expanded G times and extended
        # by the completions' K/V, kept in the graph
        tokens = f.micro_batch // f.G * f.prompt_len + f.micro_batch * f.completion_len
        cache = f.micro_batch * (f.prompt_len + f.completion_len) * kv_tok
    per_tok_layer = 2 * (10 * s.hidden + 4 * s.intermediate)
    if f.grad_ckpt:
        act = tokens * s.layers * 2 * s.hidden + tokens * per_tok_layer + kv_rows * attn_kv
    else:
        act = tokens * s.layers * per_tok_layer + kv_rows * s.layers * attn_kv
    # the output head runs HEAD_CHUNK_LOGITS logits at a time (common.head_logprobs), each chunk recomputed in backward
    logits = min(seqs * f.completion_len * s.vocab, C.HEAD_CHUNK_LOGITS or float("inf")) * 10
    dequant = 2 * s.hidden * s.intermediate if f.load_4bit else 0
    train = act + logits + dequant + cache
    peak = weights + lora + max(gen, train) + context_gb * GB
    return {"weights": weights / GB, "lora": lora / GB, "generation": gen / GB, "training": train / GB,
            "peak": peak / GB}


def phase_flags(phase: str, base: Flags) -> Flags:
    """The paper's G and lengths for each phase, with the memory flags of `base`."""
    if phase == "SFT rubric":
        return replace(base, G=1, prompt_len=512, completion_len=2560)
    if phase == "SFT judge":
        return replace(base, G=1, prompt_len=5120, completion_len=1024)
    if phase == "judge phase":
        return replace(base, G=7, prompt_len=5120, completion_len=1024)
    if phase == "rubric phase":
        return replace(base, G=6, prompt_len=512, completion_len=512, judge_prompt_len=5120, judge_new=1024)
    if phase == "DPO":
        return replace(base, G=1, prompt_len=1024, completion_len=1024, pair=True)
    raise ValueError(phase)


def miniature_flags(phase: str) -> Flags:
    """The settings of the first real-model experiment (its driver, paper_tables.py, is in git history) on
    SmolLM2-135M: bf16 on CPU, no gradient checkpointing, every sequence at its length limit."""
    base = Flags(load_4bit=False, grad_ckpt=False, passes=1, gen_batch=8, micro_batch=8, judge_batch=32)
    if phase == "SFT rubric":
        return replace(base, G=1, prompt_len=256, completion_len=768)
    if phase == "SFT judge":
        return replace(base, G=1, prompt_len=1024, completion_len=256, micro_batch=4)
    if phase == "judge phase":
        return replace(base, G=4, prompt_len=1024, completion_len=288)
    if phase == "rubric phase":
        return replace(base, G=4, prompt_len=256, completion_len=160, judge_prompt_len=1024, judge_new=288)
    if phase == "DPO":
        return replace(base, G=1, prompt_len=256, completion_len=128, micro_batch=4, pair=True)
    raise ValueError(phase)


PHASES = ["SFT rubric", "SFT judge", "judge phase", "rubric phase", "DPO"]


def two_model_estimates(s: Shape, load_4bit: bool, batch: int, context_gb: float = 1.0) -> dict[str, dict]:
    """A generator and a judge that are two models (the released checkpoints, one full model per role):
    both weights sit in memory. Evaluation: the generator's greedy rubrics (prompt 512 + 1024 new) and the
    judge's verdicts (prompt 5120 + 4096 new, paper Table 11), `batch` prompts per generate call, one
    role at a time. Rubric phase with a released judge: the trainable generator (LoRA) and the whole judge
    model frozen, with the phase's rollouts, training micro-batch and the judge's greedy verdicts."""
    w = estimate(s, Flags(load_4bit=load_4bit), "DPO", 0)["weights"] * GB  # one model's weights
    kv_tok = 2 * s.layers * s.kv_heads * s.head_dim * 2
    gen_rubric = batch * (512 + 1024) * kv_tok + batch * s.vocab * 4
    gen_judge = batch * (5120 + 4096) * kv_tok + batch * s.vocab * 4
    out = {"evaluation": {"weights": 2 * w / GB, "lora": 0.0, "working": max(gen_rubric, gen_judge) / GB}}
    f = replace(phase_flags("rubric phase", Flags(load_4bit=load_4bit)), judge_batch=batch, gen_batch=1)
    one = estimate(s, f, "rubric phase", 0)
    lora_frozen_judge = 4 * lora_params(s, f.lora_r) / GB  # the single-model estimate counts a frozen judge adapter
    out["rubric phase, released judge"] = {"weights": (one["weights"] * GB + w) / GB, "lora": one["lora"] - lora_frozen_judge,
                                           "working": max(one["generation"], one["training"])}
    for e in out.values():
        e["peak"] = e["weights"] + e["lora"] + e["working"] + context_gb
    return out


# ---- measured: one real step with random weights ------------------------------------------------
# CUDA: the allocator's peak. CPU (Linux): the process's peak resident memory during the step above
# what it held before the model was built, reset first through /proc/self/clear_refs, so the model's
# construction (built in fp32, then cast) is not counted.

def _proc_kb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def reset_cpu_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS (Linux >= 4.0)
        return True
    except OSError:
        return False


class _IdTokenizer:
    """Token ids only: the measured steps need pad/eos ids and no text."""
    pad_token_id, eos_token_id = 0, 1

    def decode(self, ids, **kw) -> str:
        return ""


def random_model(s: Shape, load_4bit: bool, device, dtype: torch.dtype | None = None):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM
    config_cls, model_cls = (LlamaConfig, LlamaForCausalLM) if s.arch == "llama" else (Qwen3Config, Qwen3ForCausalLM)
    cfg = config_cls(vocab_size=s.vocab, hidden_size=s.hidden, intermediate_size=s.intermediate,
                     num_hidden_layers=s.layers, num_attention_heads=s.heads, num_key_value_heads=s.kv_heads,
                     head_dim=s.head_dim, tie_word_embeddings=s.tied, eos_token_id=1, pad_token_id=0)
    cfg._attn_implementation = C.pick_attn_implementation(device)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    with torch.device("cpu"):
        model = model_cls(cfg).to(dtype)
    if load_4bit:  # swap every linear of the layers for a 4-bit one holding the same weights
        import bitsandbytes as bnb
        for layer in model.model.layers:
            for parent in (layer.self_attn, layer.mlp):
                for name, lin in list(parent.named_children()):
                    if isinstance(lin, torch.nn.Linear):
                        q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                              compute_dtype=dtype, quant_type="nf4", quant_storage=torch.uint8)
                        q.weight = bnb.nn.Params4bit(lin.weight.data, requires_grad=False, quant_type="nf4")
                        setattr(parent, name, q)
    model.to(device)
    C.fix_bnb_cpu_trap(model)
    return model


def measure(s: Shape, f: Flags, phase: str, device, dtype: torch.dtype | None = None) -> float | None:
    """Peak memory (GB) of one real step of `phase` with random weights: on CUDA the allocator's peak,
    on Linux CPUs the growth of the process's peak resident memory over what it held before the model
    was built; None where neither can be read (the step still runs)."""
    torch.manual_seed(0)
    gc.collect()
    rss0 = _proc_kb("VmRSS") if device.type == "cpu" else None
    model = random_model(s, f.load_4bit, device, dtype)
    if f.grad_ckpt:
        C.enable_checkpointing(model)
        model.enable_input_require_grads()
    model = C.attach_lora(model, r=f.lora_r, alpha=2 * f.lora_r)
    tok = _IdTokenizer()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    elif rss0 is not None and not reset_cpu_peak():
        rss0 = None
    ids = lambda n: torch.randint(2, s.vocab, (n,)).tolist()  # noqa: E731
    params_ = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params_, lr=1e-6)
    if phase.startswith("SFT") or phase == "DPO":
        seqs = f.micro_batch * (2 if f.pair else 1)
        batch = C.collate_completions([(ids(f.prompt_len), ids(f.completion_len)) for _ in range(seqs)], 0, device)
        logp, n = C.sequence_logprobs(model, batch)
        (-logp.sum() / n.sum()).backward()
        opt.step()
    else:
        if phase == "rubric phase":
            model.add_adapter("judge", model.peft_config["default"])
            model.set_adapter("default")
            with C.adapter(model, "judge"):
                C.generate(model, tok, [ids(f.judge_prompt_len) for _ in range(f.judge_batch)], n=1,
                           max_new_tokens=f.judge_new, temperature=0.0)
        cfg = C.GRPOConfig(group_size=f.G, batch_size=f.G * f.gen_batch, micro_batch=f.micro_batch,
                           max_completion_length=f.completion_len, num_iterations=f.passes, beta=0.001, max_steps=1,
                           save_every=0, gen_batch=f.gen_batch, share_prefix=f.share_prefix)
        import tempfile
        with tempfile.TemporaryDirectory() as d:  # one GRPO step, as the phase scripts run it
            run = C.TrainingRun(d, model, C.Dist(device=device), lr=1e-6, n_examples=f.gen_batch, per_rank=f.gen_batch,
                                optimizer_steps_per_step=f.passes)
            rolls = C.rollouts(model, tok, [ids(f.prompt_len) for _ in range(f.gen_batch)], cfg)
            adv = C.group_advantages(torch.arange(f.G * f.gen_batch, dtype=torch.float), f.G).to(device)
            mbs = C.micro_batches(rolls, f.G, f.micro_batch, False, f.share_prefix and not C.checkpointing_on(model))
            ref = C.reference_logprobs(model, mbs, 1.0)
            C.grpo_passes(model, run, mbs, adv, C.old_logprobs(model, mbs, cfg), ref, cfg)
    peak = None
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / GB
    elif rss0 is not None and (hwm := _proc_kb("VmHWM")) is not None:
        peak = (hwm - rss0) * 1024 / GB
    del model, opt
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return peak


SHAPES = {"qwen3-8b": QWEN3_8B, "smollm2": SMOLLM2_135M, "mid": Shape(1024, 12, 16, 8, 64, 3072, 151936),
          "tiny": Shape(64, 2, 4, 2, 16, 128, 512)}


def flags_for(phase: str, shape_name: str, base: Flags) -> Flags:
    if shape_name == "smollm2":
        return miniature_flags(phase)
    f = phase_flags(phase, base)
    if shape_name == "tiny":
        f = replace(f, prompt_len=16, completion_len=8, judge_prompt_len=16 if f.judge_prompt_len else 0,
                    judge_new=8 if f.judge_new else 0)
    elif shape_name == "mid":
        f = replace(f, prompt_len=min(f.prompt_len, 2048), completion_len=min(f.completion_len, 512),
                    judge_prompt_len=min(f.judge_prompt_len, 2048), judge_new=min(f.judge_new, 512))
    return f


# glibc raises its mmap threshold each time a large block is freed (up to 32 MB), after which freed
# activation buffers stay in the heap, fragmented, and count in the resident memory. A fixed threshold
# (any value set turns the dynamic one off) hands every block over 128 KB back to the system on free.
FIXED_MMAP = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def measure_in_child(shape_name: str, phase: str, argv: list[str], env: dict | None = None) -> float | None:
    """On CPU each phase runs in a fresh process: memory freed by one phase but kept by the C
    allocator would otherwise hide the next phase's growth."""
    import os
    p = subprocess.run([sys.executable, __file__, *argv, "--shape", shape_name, "--only-phase", phase],
                       capture_output=True, text=True, env={**os.environ, **(env or {})})
    if p.returncode != 0:
        raise SystemExit(f"memory.py: the measured {phase} step failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])["measured_gb"]


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bf16", action="store_true", help="bf16 base instead of 4-bit")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--micro-batch", type=int, default=1)
    ap.add_argument("--gen-batch", type=int, default=1)
    ap.add_argument("--judge-batch", type=int, default=1)
    ap.add_argument("--no-grad-ckpt", action="store_true")
    ap.add_argument("--measure", action="store_true", help="also run one real step per phase (CUDA: allocator "
                    "peak; Linux CPU: growth of the process's peak resident memory)")
    ap.add_argument("--shape", choices=list(SHAPES), default="qwen3-8b",
                    help="smollm2: SmolLM2-135M's shape (random weights, bf16) at the settings of the real-model "
                         "experiment (paper_tables.py, in git history), the estimate checked on CPU; mid: a random Qwen3 of "
                         "hidden 1024 x 12 layers at 2,048 + 512 tokens (a quick GPU check of the estimate); tiny: "
                         "a small shape with short lengths, to check that the measured path runs")
    ap.add_argument("--allocator", choices=["both", "default", "fixed"], default="both",
                    help="CPU measurement: glibc's default allocator settings, a fixed mmap threshold, or both")
    ap.add_argument("--phases", default=",".join(PHASES), help="comma-separated phases to estimate (and measure)")
    ap.add_argument("--only-phase", choices=PHASES, help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    ap.add_argument("--two-models", action="store_true",
                    help="the generator and the judge as two models (released checkpoints): evaluation and the rubric "
                         "phase, 4-bit and bf16, against 24 / 48 / 80 GB cards")
    a = ap.parse_args()
    if a.two_models:
        return two_models_table(a)
    base = Flags(load_4bit=not a.bf16, lora_r=a.lora_r, micro_batch=a.micro_batch, gen_batch=a.gen_batch,
                 judge_batch=a.judge_batch, grad_ckpt=not a.no_grad_ckpt)
    shape = SHAPES[a.shape]
    device = C.default_device()
    dtype = torch.bfloat16 if a.shape == "smollm2" else None
    if a.only_phase:
        f = flags_for(a.only_phase, a.shape, base)
        # warm-up on the tiny shape first: the libraries a step loads on first use (a few hundred MB of
        # code and thread pools) then sit in the baseline instead of in the measured growth
        measure(SHAPES["tiny"], flags_for(a.only_phase, "tiny", replace(base, load_4bit=f.load_4bit)), a.only_phase,
                device, dtype)
        print(json.dumps({"measured_gb": measure(shape, f, a.only_phase, device, dtype)}))
        return
    context = 1.0 if device.type == "cuda" else 0.0
    child_argv = [x for x in sys.argv[1:] if x not in ("--measure", "--no-write")]
    own = ("--shape", "--allocator", "--phases")
    child_argv = [x for i, x in enumerate(child_argv) if x not in own and (i == 0 or child_argv[i - 1] not in own)]
    cpu = a.measure and device.type == "cpu"
    rows = ["| phase | G | prompt + completion | weights | LoRA state | generation | training | **peak (est.)** | measured "
            "| measured / est. |" + (" measured, fixed mmap threshold | that / est. |" if cpu else ""),
            "|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if cpu else "")]
    phases = [x.strip() for x in a.phases.split(",") if x.strip()]
    for bad in set(phases) - set(PHASES):
        raise SystemExit(f"memory.py: unknown phase {bad!r} in --phases (choose from {', '.join(PHASES)})")
    for phase in phases:
        f = flags_for(phase, a.shape, base)
        e = estimate(shape, f, phase, context)
        m = None
        if a.measure and device.type == "cuda":
            m = measure(shape, f, phase, device, dtype)
        elif a.measure and a.allocator != "fixed":
            m = measure_in_child(a.shape, phase, child_argv)
        meas = f"{m:.2f} GB" if m is not None else ("ran (no reading)" if a.measure and a.allocator != "fixed" else "-")
        ratio = f"{m / e['peak']:.2f}" if m is not None else "-"
        rows.append(f"| {phase} | {f.G} | {f.prompt_len} + {f.completion_len} | {e['weights']:.2f} | {e['lora']:.2f} | "
                    f"{e['generation']:.2f} | {e['training']:.2f} | **{e['peak']:.2f}** | {meas} | {ratio} |")
        if cpu:
            m2 = measure_in_child(a.shape, phase, child_argv, FIXED_MMAP) if a.allocator != "default" else None
            rows[-1] += f" {m2:.2f} GB | **{m2 / e['peak']:.2f}** |" if m2 is not None else " - | - |"
        print(rows[-1], flush=True)
    if a.shape == "smollm2":
        flags = ("bf16 weights, LoRA r=16 (all linear layers), no gradient checkpointing, the real-model experiment's "
                 "micro-batches (SFT rubric 8, SFT judge 4, GRPO 8 completions = 2 groups of G=4 sharing their prompt, "
                 "DPO 4 pairs), 8 prompts x G=4 per generate call, judge batch 32, one GRPO pass; every sequence at "
                 "its length limit (random weights rarely stop early)")
    else:
        flags = (f"{'bf16' if a.bf16 else '4-bit nf4'} base, LoRA r={a.lora_r} (all linear layers), micro-batch "
                 f"{a.micro_batch}, {a.gen_batch} prompt(s) per generate call, judge batch {a.judge_batch}, gradient "
                 f"checkpointing {'off' if a.no_grad_ckpt else 'on'}")
    print(flags)
    if a.no_write:
        return
    if a.shape == "qwen3-8b":
        cmd = "python bench/memory.py" + (" --bf16" if a.bf16 else "") + (" --measure" if a.measure else "")
        body = (f"Qwen3-8B shape (hidden 4096, 36 layers, 32 heads, 8 KV heads, head dim 128, intermediate 12288, "
                f"vocab 151936; {params(shape)['total'] / 1e9:.2f}B parameters). Flags: {flags}. GB = 2^30 bytes. "
                "The model behind the estimate is in the script's docstring.\n\n" + "\n".join(rows))
        U.write_section("memory" + ("_bf16" if a.bf16 else ""), "Peak GPU memory per phase, Qwen3-8B shape"
                        + (" (bf16 base)" if a.bf16 else " (4-bit base)"), cmd, body)
    elif a.shape == "smollm2" and a.measure and device.type == "cpu":
        body = (f"SmolLM2-135M shape (hidden 576, 30 layers, 9 heads, 3 KV heads, intermediate 1536, vocab 49152, tied "
                f"embeddings; {params(shape)['total'] / 1e6:.1f}M parameters), random weights. Flags: {flags}. "
                "Measured: one real step of each phase in a fresh process, the growth of its peak resident memory "
                "(VmHWM, reset after the model is built) over what the process held before building the model (after a "
                "warm-up step on a tiny shape, so that lazily loaded libraries are not counted); once with glibc's "
                "default allocator settings and once with `MALLOC_MMAP_THRESHOLD_=131072`, which stops glibc from "
                "keeping freed activation buffers (its dynamic threshold otherwise rises to 32 MB after the first "
                "large free, and later buffers below it are recycled from a fragmenting heap). The estimate is the "
                "same model as for the GPU tables, without the 1 GB CUDA context. GB = 2^30 bytes.\n\n"
                + "\n".join(rows))
        U.write_section("memory_smollm2_cpu", "Memory planner against a measured CPU step, SmolLM2-135M shape",
                        "python bench/memory.py --shape smollm2 --measure"
                        + (f" --allocator {a.allocator}" if a.allocator != "both" else ""), body)


def two_models_table(a) -> None:
    rows = ["| case | weights | base | prompts per call | weights GB | LoRA state GB | working GB | **peak (est.)** | "
            "24 GB | 48 GB | 80 GB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for load_4bit in (True, False):
        for batch in (1, 8):
            for case, e in two_model_estimates(QWEN3_8B, load_4bit, batch).items():
                fits = ["fits" if e["peak"] <= card else "no" for card in (24, 48, 80)]
                rows.append(f"| {case} | two 8B models | {'4-bit nf4' if load_4bit else 'bf16'} | {batch} | {e['weights']:.2f} | "
                            f"{e['lora']:.2f} | {e['working']:.2f} | **{e['peak']:.2f}** | " + " | ".join(fits) + " |")
    print("\n".join(rows))
    if a.no_write:
        return
    body = ("Two Qwen3-8B-shaped models, one per role (the released RubricARM-8B-Rubric and -Judge): both weights in "
            "memory, one role generating at a time. Evaluation: rubric prompts 512 + 1024 new tokens, judge prompts "
            "5120 + 4096 new tokens (paper Table 11's limit), the KV cache of the larger; rubric phase: the generator "
            "trained by LoRA (gradient checkpointing, micro-batch 1, G=6 rollouts of 512 + 512 tokens) beside the whole "
            "frozen judge model, whose greedy verdicts run `prompts per call` at a time. The same model as the tables "
            "above (1 GB CUDA context included). 'fits' compares the peak with the card's size; leave 1-2 GB of headroom "
            "in practice. GB = 2^30 bytes.\n\n" + "\n".join(rows))
    U.write_section("memory_two_models", "Peak GPU memory with a generator and a judge of their own (released checkpoints)",
                    "python bench/memory.py --two-models", body)


if __name__ == "__main__":
    main()
