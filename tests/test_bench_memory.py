"""The memory model of bench/memory.py: its arithmetic, and its measured path (one real step per
phase) running on a tiny shape (CUDA: allocator peak; Linux CPU: growth of the peak resident memory)."""

import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import memory as M  # noqa: E402


def test_qwen3_8b_parameter_count_and_weights():
    p = M.params(M.QWEN3_8B)
    assert p["total"] == pytest.approx(8.19e9, rel=0.01)  # Qwen3-8B's published count: about 8.2B
    bf16 = M.estimate(M.QWEN3_8B, M.Flags(load_4bit=False), "SFT judge")
    assert bf16["weights"] == pytest.approx(p["total"] * 2 / M.GB)
    nf4 = M.estimate(M.QWEN3_8B, M.Flags(load_4bit=True), "SFT judge")
    assert 5.0 < nf4["weights"] < 6.5  # about 5 GB of nf4 weights plus bf16 embeddings and head


def test_estimate_scales_with_the_flags():
    f = M.phase_flags("judge phase", M.Flags())
    e1 = M.estimate(M.QWEN3_8B, f, "judge phase")
    e2 = M.estimate(M.QWEN3_8B, M.replace(f, gen_batch=2), "judge phase")
    assert e2["generation"] == pytest.approx(2 * e1["generation"])
    kv = 2 * 36 * 8 * 128 * 2 * 7 * (5120 + 1024) / M.GB  # K and V, bf16, G sequences of prompt + completion
    assert e1["generation"] == pytest.approx(kv + 7 * 151936 * 4 / M.GB)
    no_ckpt = M.estimate(M.QWEN3_8B, M.replace(f, grad_ckpt=False), "judge phase")
    assert no_ckpt["training"] > 5 * e1["training"]
    for phase in M.PHASES:  # the README's 24 GB claim, at the paper's G and lengths
        flags = M.Flags(micro_batch=2, gen_batch=2 if phase != "rubric phase" else 4, judge_batch=4)
        assert M.estimate(M.QWEN3_8B, M.phase_flags(phase, flags), phase)["peak"] < 24, phase


def test_smollm2_shape_and_shared_prompt_micro_batches():
    p = M.params(M.SMOLLM2_135M)
    assert p["total"] == pytest.approx(134.5e6, rel=0.005)  # the shipped model's count, tied embeddings
    f = M.miniature_flags("judge phase")
    shared = M.estimate(M.SMOLLM2_135M, f, "judge phase", context_gb=0)
    unshared = M.estimate(M.SMOLLM2_135M, M.replace(f, share_prefix=False), "judge phase", context_gb=0)
    # 8 completions = 2 groups: 2 prompts + 8 completions through the network instead of 8 of each,
    # plus the K/V cache of prompt + completion expanded to the 8 completions
    kv_tok = 2 * 30 * 3 * 64 * 2
    per_tok = 30 * 2 * (10 * 576 + 4 * 1536)
    assert unshared["training"] - shared["training"] == pytest.approx(
        (6 * 1024 * per_tok - 8 * (1024 + 288) * kv_tok) / M.GB)


@pytest.mark.parametrize("phase", M.PHASES)
def test_measured_path_runs_one_real_step(phase):
    import torch
    shape = M.Shape(64, 2, 4, 2, 16, 128, 512)
    f = M.replace(M.phase_flags(phase, M.Flags(load_4bit=True)), prompt_len=12, completion_len=4,
                  judge_prompt_len=12, judge_new=4)
    peak = M.measure(shape, f, phase, torch.device("cpu"))
    if not M.reset_cpu_peak():
        pytest.skip("no /proc/self/clear_refs here: the CPU step runs but gives no reading")
    assert peak is not None and 0 <= peak < 1.0  # GB; a tiny model's step


def test_two_models_hold_both_weights_and_what_fits_one_24gb_card():
    one = M.estimate(M.QWEN3_8B, M.Flags(load_4bit=True), "DPO")["weights"]
    nf4 = M.two_model_estimates(M.QWEN3_8B, load_4bit=True, batch=1)
    assert nf4["evaluation"]["weights"] == pytest.approx(2 * one) and nf4["evaluation"]["lora"] == 0
    assert nf4["evaluation"]["peak"] < 24 and nf4["rubric phase, released judge"]["peak"] < 24
    kv = 2 * 36 * 8 * 128 * 2 * (5120 + 4096) / M.GB  # the judge's cache is the larger: one prompt + 4096 new tokens
    assert nf4["evaluation"]["working"] == pytest.approx(kv + 151936 * 4 / M.GB)
    bf16 = M.two_model_estimates(M.QWEN3_8B, load_4bit=False, batch=1)
    assert bf16["evaluation"]["peak"] > 24  # two bf16 8B models need a larger card (or two)
    assert M.two_model_estimates(M.QWEN3_8B, True, 8)["evaluation"]["working"] > 7 * nf4["evaluation"]["working"]
