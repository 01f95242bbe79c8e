"""Shared fixtures: the tiny offline model (built once per session), the demo data, and a runner
that executes the real stage scripts in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tasks"), str(ROOT / "experiments"), str(ROOT / "bench")]
os.environ.setdefault("RUBRIC_ARM_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import common as C  # noqa: E402
import toy_task  # noqa: E402

C.setup_logging()
TRAIN = ROOT / "data" / "demo_train.jsonl"
EVAL = ROOT / "data" / "demo_eval.jsonl"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return toy_task.make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tok(tiny_model):
    return C.load_tokenizer(str(tiny_model))


def run_script(*args, env=None, check=True, timeout=600) -> subprocess.CompletedProcess:
    """Run a project script with this interpreter; on failure show its output."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    cmd = [sys.executable, *map(str, args)] if str(args[0]).endswith(".py") else list(map(str, args))
    if str(args[0]).endswith(".py"):
        cmd[1] = str(ROOT / args[0])
    p = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}\n--- stdout\n{p.stdout[-3000:]}\n--- stderr\n{p.stderr[-5000:]}")
    return p


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def write_rows(path, rows) -> Path:
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return Path(path)


YES_PROMPT = "Answer yes."
YES_RUBRIC = "1. The response says yes. [Hard Rule]"


@pytest.fixture(scope="session")
def yes_rm(tiny_model, tmp_path_factory) -> dict:
    """A Rubric-ARM pair trained by the real SFT stage on a rule the test controls: the generator
    writes YES_RUBRIC; the judge prefers the response that starts with 'yes', whatever its position."""
    import random
    d = tmp_path_factory.mktemp("yes_rm")
    rng = random.Random(0)
    rows = []
    for i in range(32):
        good, bad = f"yes {rng.choice(['river', 'stone', 'cloud'])}", f"no {rng.choice(['river', 'stone', 'cloud'])}"
        w = rng.choice("AB")
        a, b = (good, bad) if w == "A" else (bad, good)
        rows.append({"id": f"y{i}", "prompt": YES_PROMPT, "response_a": a, "response_b": b, "winner": w,
                     "rubric": YES_RUBRIC, "judge_trajectory": f"Winner: Response {w}"})
    write_rows(d / "rows.jsonl", rows)
    # a short judge prompt (--judge-template): the tiny random model cannot learn to look past the
    # built-in prompt's 300 tokens of instructions in a few steps; the stages take this file as a user would
    template = d / "judge_template.txt"
    template.write_text("{instruction}\n{rubric}\nA: {response_a}\nB: {response_b}\n")
    common = ["--model", tiny_model, "--data", d / "rows.jsonl", "--batch-size", "16", "--micro-batch", "16",
              "--lr", "1e-2", "--lora-r", "16", "--lora-alpha", "32", "--judge-template", template]
    run_script("sft_warmup.py", "--role", "judge", *common, "--out", d / "judge", "--epochs", "30")
    run_script("sft_warmup.py", "--role", "rubric", *common, "--out", d / "rubric", "--epochs", "10")
    return {"rubric": d / "rubric" / "adapter", "judge": d / "judge" / "adapter", "dir": d, "template": template}


@pytest.fixture
def yes_template(yes_rm):
    """In-process callers of the yes_rm judge use its judge prompt (the scripts take --judge-template)."""
    import argparse
    saved = dict(C.TEMPLATES)
    C.use_templates(argparse.Namespace(judge_template=str(yes_rm["template"]), rubric_template=None))
    yield
    C.TEMPLATES.update(saved)


@pytest.fixture(scope="session")
def always_a_judge(tiny_model, tmp_path_factory) -> Path:
    """A judge adapter trained (by the real SFT stage) to answer 'Winner: Response A' to anything:
    its verdicts are known, and real text parsing turns them into rewards."""
    d = tmp_path_factory.mktemp("judge")
    rows = [{**r, "judge_trajectory": "Winner: Response A"} for r in read_jsonl(TRAIN)[:16]]
    write_rows(d / "rows.jsonl", rows)
    run_script("sft_warmup.py", "--role", "judge", "--model", tiny_model, "--data", d / "rows.jsonl",
               "--out", d / "sft", "--epochs", "30", "--batch-size", "8", "--micro-batch", "8", "--lr", "1e-2",
               "--lora-r", "8", "--lora-alpha", "16")
    return d / "sft" / "adapter"


def assert_same_adapter(a, b, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Two saved adapter folders hold the same tensors (within tolerance)."""
    import torch
    from safetensors.torch import load_file
    wa = load_file(str(Path(a) / "adapter_model.safetensors"))
    wb = load_file(str(Path(b) / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=rtol, atol=atol, msg=k)


def grpo_loop(model, tok, cfg, prompts: list, reward, out, dist=None, on_step=None) -> None:
    """The GRPO loop of the phase scripts (train_judge_phase.main), with the reward given by the test:
    reward(batch, texts, G) -> (rewards, parts). The same common pieces in the same order."""
    dist = dist or C.Dist()
    G = cfg.group_size
    per_rank = cfg.batch_size // G // dist.world
    run = C.TrainingRun(out, model, dist, lr=cfg.lr, n_examples=len(prompts), per_rank=per_rank, epochs=cfg.epochs,
                        max_steps=cfg.max_steps, optimizer_steps_per_step=cfg.num_iterations,
                        scheduler=cfg.lr_scheduler, warmup_ratio=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
                        save_every=cfg.save_every, keep_checkpoints=cfg.keep_checkpoints, data_seed=cfg.seed,
                        sampling_seed=cfg.seed,
                        max_bad_steps=cfg.max_bad_steps, progress_key="reward")
    for step in run.steps():
        timer = C.StepTimer()
        got = C.sample_step(lambda k, step=step: [prompts[i] for i in run.rank_share(run.draw_indices(step, k))],
                            lambda batch, texts: (*reward(batch, texts, G), [None] * len(texts)), model, tok, cfg)
        adv = C.group_advantages(got.rewards, G, cfg.scale_rewards)
        timer.mark("sample")
        mbs = C.micro_batches(got.rolls, G, cfg.micro_batch, cfg.mask_truncated, cfg.share_prefix)
        ref = C.reference_logprobs(model, mbs, cfg.temperature) if cfg.beta else None
        old = C.old_logprobs(model, mbs, cfg)
        timer.mark("logprob")
        stats = C.grpo_passes(model, run, mbs, adv, old, ref, cfg)
        finite = stats.pop("finite")
        metrics = {**got.metrics, **stats, **timer.times()}
        run.end_step(step, metrics, finite)
        if on_step:
            on_step(step + 1, metrics)
    run.finish(model)
