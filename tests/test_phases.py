"""Rubric phase, rubric cache and the alternating loop (alternate.sh)."""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

import common as C
from conftest import EVAL, ROOT, TRAIN, read_jsonl, run_script, write_rows


def test_rubric_phase_reward_comes_from_the_judges_verdicts(tiny_model, always_a_judge, tmp_path):
    out = tmp_path / "rubric"
    run_script("train_rubric_phase.py", "--model", tiny_model, "--judge-adapter", always_a_judge,
               "--data", TRAIN, "--limit", "16", "--group-size", "4", "--batch-size", "16", "--micro-batch", "16",
               "--max-completion-length", "12", "--judge-max-new-tokens", "24", "--max-steps", "3",
               "--lr", "1e-3", "--log-samples", "-1", "--out", out, "--lora-r", "8", "--lora-alpha", "16")
    samples = read_jsonl(out / "judge_samples.jsonl")
    assert len(samples) == 3 * 16  # every rubric of every step was judged
    for s in samples:
        assert s["verdict"] == C.parse_verdict(s["judge_text"])
        assert s["reward_acc"] == float(s["verdict"] == s["label"])
    verdicts = [s["verdict"] for s in samples]
    assert verdicts.count("A") >= 0.75 * len(samples), verdicts  # the judge's trained answer
    assert {s["label"] for s in samples} == {"A", "B"}       # the A/B order is drawn at random...
    for g in range(0, len(samples), 4):                      # ...once per example: one label per group of G
        assert len({(s["id"], s["label"]) for s in samples[g:g + 4]}) == 1
    log = read_jsonl(out / "metrics.jsonl")
    for step, m in enumerate(log):
        chunk = samples[step * 16:(step + 1) * 16]
        assert m["reward_acc"] == pytest.approx(sum(s["reward_acc"] for s in chunk) / 16)
        assert m["reward"] == pytest.approx(m["reward_acc"])  # no format term by default
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    # the judge adapter is untouched: only the generator's adapter is saved
    assert not (out / "adapter" / "judge").exists()


def test_rubric_phase_judges_each_distinct_rubric_once(tiny_model, always_a_judge, tmp_path):
    """Near-greedy sampling writes the same rubric G times: the judge runs once per distinct (prompt, rubric,
    order) and every copy gets its verdict; the metric reward_judged is the share of rubrics judged."""
    out = tmp_path / "rubric"
    run_script("train_rubric_phase.py", "--model", tiny_model, "--judge-adapter", always_a_judge,
               "--data", TRAIN, "--limit", "8", "--group-size", "4", "--batch-size", "8", "--micro-batch", "8",
               "--max-completion-length", "8", "--judge-max-new-tokens", "12", "--max-steps", "2", "--temperature",
               "1e-4", "--log-samples", "-1", "--out", out, "--lora-r", "8", "--lora-alpha", "16")
    samples, log = read_jsonl(out / "judge_samples.jsonl"), read_jsonl(out / "metrics.jsonl")
    for step, m in enumerate(log):
        chunk = samples[step * 8:(step + 1) * 8]
        distinct = {(s["id"], s["label"], s["rubric"]): (s["verdict"], s["judge_text"]) for s in chunk}
        assert len(distinct) < 8  # the copies are there...
        assert m["reward_judged"] == pytest.approx(len(distinct) / 8)  # ...and judged once each
        for s in chunk:  # every copy carries its rubric's one judgement
            assert (s["verdict"], s["judge_text"]) == distinct[(s["id"], s["label"], s["rubric"])]


def test_rubric_cache_one_per_id_and_resumes(tiny_model, tmp_path):
    args = ["common.py", "cache-rubrics", "--model", tiny_model, "--data", TRAIN, "--limit", "12",
            "--batch-size", "4", "--max-new-tokens", "8", "--out", tmp_path / "r.jsonl"]
    killed = run_script(*args, env={"RUBRIC_ARM_CRASH_AT": "rubric_batch:2"}, check=False)
    assert killed.returncode == -9
    assert not (tmp_path / "r.jsonl").exists()  # the finished file only appears whole
    partial = read_jsonl(tmp_path / "r.jsonl.partial")
    assert len(partial) == 8  # two batches kept
    with open(tmp_path / "r.jsonl.partial", "a") as f:
        f.write('{"id": "train-0')  # and a line cut by the crash
    p = run_script(*args)
    assert "8 already written, 4 to go" in p.stderr and "partial last line" in p.stderr
    rows = read_jsonl(tmp_path / "r.jsonl")
    assert [r["id"] for r in rows] == [f"train-{i:05d}" for i in range(12)]
    assert rows[:8] == partial
    assert not (tmp_path / "r.jsonl.partial").exists()


def _alternate_env(tiny_model):
    return {**os.environ, "PYTHONPATH": str(ROOT), "RUBRIC_ARM_PYTHON": os.environ.get("RUBRIC_ARM_PYTHON", __import__("sys").executable),
            "MODEL_ARGS": "--lora-r 8 --lora-alpha 16",
            "SFT_RUBRIC_ARGS": "--max-steps 2 --batch-size 4 --micro-batch 4",
            "SFT_JUDGE_ARGS": "--max-steps 2 --batch-size 4 --micro-batch 4",
            "CACHE_ARGS": "--max-new-tokens 8 --batch-size 64",
            "JUDGE_ARGS": "--group-size 2 --batch-size 4 --micro-batch 4 --max-completion-length 8 --max-steps 4 --save-every 1",
            "RUBRIC_ARGS": "--group-size 2 --batch-size 4 --micro-batch 4 --max-completion-length 8 "
                           "--judge-max-new-tokens 8 --max-steps 2 --save-every 1"}


@pytest.mark.slow
def test_alternate_two_cycles_then_kill_and_rerun(tiny_model, tmp_path):
    out = tmp_path / "arm"
    cmd = ["bash", str(ROOT / "alternate.sh"), "--model", str(tiny_model), "--data", str(TRAIN),
           "--cycles", "2", "--out", str(out)]
    env = _alternate_env(tiny_model)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    ckpt = out / "c2_judge" / "checkpoints"
    deadline = time.time() + 300
    while not (ckpt.exists() and list(ckpt.glob("step-*"))) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)  # killed in the middle of cycle 2's judge phase
    proc.wait()
    done = {p.name: p.stat().st_mtime_ns for p in (out / ".done").iterdir()}
    assert {"sft_rubric", "sft_judge", "split", "c1_cache", "c1_judge", "c1_rubric", "c2_cache"} <= set(done)
    assert "c2_judge" not in done and not (out / "c2_judge" / "adapter").exists()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    for name, t in done.items():  # finished steps were skipped, not redone
        assert f"{name}: done, skipped" in p.stdout
        assert (out / ".done" / name).stat().st_mtime_ns == t
    assert "c2_judge: running" in p.stdout and "c2_rubric: running" in p.stdout
    assert "resumed from" in (out / "logs" / "c2_judge.log").read_text()
    assert [r["step"] for r in read_jsonl(out / "c2_judge" / "metrics.jsonl")] == [1, 2, 3, 4]
    # disjoint, equal parts: one per cycle
    p1, p2 = read_jsonl(out / "parts" / "part1.jsonl"), read_jsonl(out / "parts" / "part2.jsonl")
    assert len(p1) == len(p2) == 120 and not {r["id"] for r in p1} & {r["id"] for r in p2}
    assert [r["id"] for r in read_jsonl(out / "c2_rubrics.jsonl")] == [r["id"] for r in p2]
    assert (out / "final_judge_adapter.txt").read_text().strip().endswith("c2_judge/adapter")
    assert "Rubric-ARM run summary" in p.stdout


def test_alternate_stops_at_first_failing_step(tiny_model, tmp_path):
    env = {**_alternate_env(tiny_model), "SFT_JUDGE_ARGS": "--lora-targets no_such_module"}  # fails at run time, not in the flag check
    p = subprocess.run(["bash", str(ROOT / "alternate.sh"), "--model", str(tiny_model), "--data", str(TRAIN),
                        "--cycles", "2", "--out", str(tmp_path / "arm")], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 1
    assert "sft_judge FAILED" in p.stderr and str(tmp_path / "arm" / "logs" / "sft_judge.log") in p.stderr
    assert not (tmp_path / "arm" / ".done" / "c1_cache").exists()  # nothing after the failed step ran


@pytest.mark.slow
def test_alternate_no_sft_starts_the_loop_from_the_base(tiny_model, tmp_path):
    """--no-sft: no SFT step; the loop starts from new adapters whose B matrices are zero (the base
    itself), and the held-out table compares the loop with the base, with no 'after SFT' row."""
    from safetensors.torch import load_file
    data = write_rows(tmp_path / "rl.jsonl", read_jsonl(TRAIN)[:16])
    held_out = write_rows(tmp_path / "eval.jsonl", read_jsonl(EVAL)[:6])
    out = tmp_path / "arm"
    env = {**_alternate_env(tiny_model), "EVAL_ARGS": "--max-rubric-tokens 8 --max-judge-tokens 8",
           "JUDGE_ARGS": "--group-size 2 --batch-size 4 --micro-batch 4 --max-completion-length 8 --max-steps 2 --lr 1e-2"}
    cmd = ["bash", str(ROOT / "alternate.sh"), "--model", str(tiny_model), "--data", str(data), "--eval-data",
           str(held_out), "--cycles", "1", "--no-sft", "--out", str(out)]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    done = {m.name for m in (out / ".done").iterdir()}
    assert {"init_rubric", "init_judge", "eval_base", "c1_judge", "c1_rubric", "eval_final"} <= done
    assert not done & {"sft_rubric", "sft_judge", "eval_sft"} and not (out / "sft_judge").exists()

    def lora_b(adapter):
        return [t for k, t in load_file(adapter / "adapter_model.safetensors").items() if "lora_B" in k]
    for role in ("rubric", "judge"):
        assert all(float(t.abs().max()) == 0 for t in lora_b(out / f"init_{role}" / "adapter"))
    assert f"from {out / 'init_judge' / 'adapter'}" in (out / "logs" / "c1_judge.log").read_text()
    assert "Did the judge learn in the loop (started from the base)? after the cycles minus the base model" in p.stdout
    assert "| after SFT |" not in p.stdout
    # --no-sft with a given adapter is refused before anything runs
    mixed = subprocess.run([*cmd[:-2], "--judge-init", str(out / "c1_judge" / "adapter"), "--out", str(tmp_path / "x")],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert mixed.returncode == 2 and mixed.stderr.strip() == (
        "alternate.sh: --no-sft starts from new adapters: leave out --rubric-init / --judge-init")


def test_a_rubric_cache_reached_through_a_symlink_is_locked_and_written_where_it_lies(tiny_model, tmp_path):
    """The symlink stays a symlink, its target gets the cache and the lock; a rerun through either path reuses it."""
    real = tmp_path / "store" / "r.jsonl"
    real.parent.mkdir()
    link = tmp_path / "link.jsonl"
    real.touch()
    link.symlink_to(real)
    real.unlink()  # a dangling link to where the cache shall be
    args = ["common.py", "cache-rubrics", "--model", tiny_model, "--data", TRAIN, "--limit", "4", "--batch-size", "4",
            "--max-new-tokens", "4"]
    run_script(*args, "--out", link)
    assert link.is_symlink() and len(read_jsonl(real)) == 4
    assert (real.parent / "r.jsonl.lock").exists() and not (tmp_path / "link.jsonl.lock").exists()
    before = real.read_text()
    run_script(*args, "--out", real)  # the same cache by its own path: nothing to add, nothing rewritten
    assert real.read_text() == before and link.is_symlink()


@pytest.mark.slow
@pytest.mark.parametrize("order, trained, frozen", [("judge-only", ["c1_judge", "c1_judge_b"], "rubric"),
                                                    ("rubric-only", ["c1_rubric_a", "c1_rubric"], "judge")])
def test_alternate_one_role_only_orders_and_the_phase_summary(tiny_model, tmp_path, order, trained, frozen):
    """--order judge-only / rubric-only: the other role stays at its start and its slot trains the same role again
    (the same number of GRPO steps as the alternation); --eval-every-phase evaluates after every phase, and the
    summary prints each phase's signal and what each phase changed."""
    data = write_rows(tmp_path / "rl.jsonl", read_jsonl(TRAIN)[:16])
    held_out = write_rows(tmp_path / "eval.jsonl", read_jsonl(EVAL)[:4])
    out = tmp_path / "arm"
    env = {**_alternate_env(tiny_model), "EVAL_ARGS": "--max-rubric-tokens 6 --max-judge-tokens 6",
           "JUDGE_ARGS": "--group-size 2 --batch-size 4 --micro-batch 4 --max-completion-length 6 --max-steps 2"}
    cmd = ["bash", str(ROOT / "alternate.sh"), "--model", str(tiny_model), "--data", str(data), "--eval-data", str(held_out),
           "--cycles", "1", "--order", order, "--eval-every-phase", "--out", str(out)]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    done = {m.name for m in (out / ".done").iterdir()}
    assert set(trained) <= done and not any(d.startswith(f"c1_{frozen}") for d in done)
    assert {f"eval_{t}" for t in trained} <= done
    final = (out / f"final_{frozen}_adapter.txt").read_text().strip()
    assert final.endswith(f"sft_{frozen}/adapter")  # the frozen role is its SFT adapter
    for t in trained:
        assert json.loads((out / t / "signal.json").read_text())["steps"] == 2
        assert f"cycle 1 {t.split('_', 1)[1]}" in p.stdout and "signal in" in p.stdout
    assert "What each phase changed" in p.stdout and f"| {trained[1]} |" in p.stdout
    # the first phase's evaluation deleted and run again: the table keeps the schedule's order (it went by file time)
    shutil.rmtree(out / f"eval_{trained[0]}")
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    table = again.stdout[again.stdout.index("What each phase changed"):]
    assert table.index(f"| {trained[0]} |") < table.index(f"| {trained[1]} |")
    # another --order into this folder is refused before any step (it trained a phase there first)
    other = subprocess.run([*cmd[:cmd.index("--order") + 1], "judge-first", *cmd[cmd.index("--order") + 2:]], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=120)
    assert other.returncode == 2 and f"holds a --order {order} run" in other.stderr
    assert not (out / "c1_rubric").exists() or order == "rubric-only"


def test_rubric_phase_samples_log_is_cut_back_to_the_checkpoint_on_resume(tiny_model, always_a_judge, tmp_path):
    """Killed after step 3 with a checkpoint at step 2, then resumed: judge_samples.jsonl holds each step's rows
    once (step 3's first try is dropped), and every row names its step."""
    out = tmp_path / "rubric"
    args = ["train_rubric_phase.py", "--model", tiny_model, "--judge-adapter", always_a_judge, "--data", TRAIN,
            "--limit", "16", "--group-size", "2", "--batch-size", "4", "--micro-batch", "4", "--max-completion-length", "6",
            "--judge-max-new-tokens", "6", "--max-steps", "4", "--save-every", "2", "--log-samples", "-1", "--out", out,
            "--lora-r", "8", "--lora-alpha", "16"]
    killed = run_script(*args, env={"RUBRIC_ARM_CRASH_AT": "step:3"}, check=False)
    assert killed.returncode != 0
    assert {r["step"] for r in read_jsonl(out / "judge_samples.jsonl")} == {1, 2, 3}
    run_script(*args, "--resume")
    rows = read_jsonl(out / "judge_samples.jsonl")
    assert [r["step"] for r in rows] == [s for s in (1, 2, 3, 4) for _ in range(4)]
