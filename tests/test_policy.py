"""Downstream policy training: dpo_loss, Rubric-ARM labelling, DPO / IterDPO, online GRPO."""

import json
import math

import pytest
import torch

import common as C
import policy_dpo
import policy_grpo
from conftest import YES_PROMPT, assert_same_adapter, read_jsonl, run_script, write_rows


def test_dpo_loss_by_hand():
    c, r = torch.tensor([-10.0, -4.0]), torch.tensor([-12.0, -3.0])
    rc, rr = torch.tensor([-11.0, -4.5]), torch.tensor([-11.0, -4.0])
    loss, m = policy_dpo.dpo_loss(c, r, rc, rr, beta=0.1, return_metrics=True)
    z = [0.1 * ((-10 + 11) - (-12 + 11)), 0.1 * ((-4 + 4.5) - (-3 + 4))]   # 0.2, -0.05
    want = sum(-math.log(1 / (1 + math.exp(-x))) for x in z) / 2
    assert float(loss) == pytest.approx(want, rel=1e-6)
    assert m["reward_acc"] == 0.5 and m["reward_margin"] == pytest.approx(sum(z) / 2)
    assert m["reward_chosen"] == pytest.approx((0.1 + 0.05) / 2)


def test_order_consistency_and_online_reward_arithmetic():
    assert policy_dpo.order_consistent_preference("A", "B") == 0   # x first wins, x second wins
    assert policy_dpo.order_consistent_preference("B", "A") == 1
    assert policy_dpo.order_consistent_preference("A", "A") is None  # position, not content
    assert policy_dpo.order_consistent_preference(None, "B") is None
    assert policy_grpo.pairwise_reward("A", "B") == 1.0
    assert policy_grpo.pairwise_reward("A", "A") == 0.5 and policy_grpo.pairwise_reward("B", "B") == 0.5
    assert policy_grpo.pairwise_reward("B", "A") == 0.0 and policy_grpo.pairwise_reward(None, "B") == 0.5


def test_labelling_keeps_only_order_consistent_pairs(tiny_model, yes_rm, yes_template, always_a_judge):
    # greedy judges (judge_temperature 0): the test checks the labelling logic, not sampling
    rm = C.RubricARM.load((str(tiny_model), str(yes_rm["rubric"])), (str(tiny_model), str(yes_rm["judge"])),
                          max_rubric_tokens=16,
                          max_judge_tokens=8, judge_temperature=0.0)
    samples = [{"prompt": YES_PROMPT, "responses": ["yes stone", "no cloud", "yes river", "no bird", "no cloud"]}]
    kept, report = policy_dpo.label_pairs(rm, samples)
    assert report["pairs"] == 6  # 4 distinct responses (the duplicate is dropped): C(4, 2)
    assert report["kept"] + report["dropped_inconsistent"] + report["dropped_unparsed"] == 6
    assert rm.stats["rubrics"] == 1 and rm.stats["judge_calls"] == 12  # one rubric; each pair in both orders
    yes_vs_no = [k for k in kept if k["chosen"].startswith("yes") != k["rejected"].startswith("yes")]
    assert len(yes_vs_no) == 4 and all(k["chosen"].startswith("yes") for k in yes_vs_no)
    # a judge whose verdict is fixed by position: nothing survives the swap. It was trained under the
    # project's own judge prompt, so it is read under that one, not the yes judge's short prompt.
    yes_judge_prompt, C.TEMPLATES["judge"] = C.TEMPLATES["judge"], C.JUDGE_TEMPLATE
    try:
        always_a = C.RubricARM.load((str(tiny_model), str(yes_rm["rubric"])), (str(tiny_model), str(always_a_judge)),
                                    max_rubric_tokens=16, max_judge_tokens=8, judge_temperature=0.0)
        kept, report = policy_dpo.label_pairs(always_a, samples)
    finally:
        C.TEMPLATES["judge"] = yes_judge_prompt
    assert kept == [] and report["dropped_inconsistent"] == 6


DPO = ["policy_dpo.py", "--prompts", None, "--n-samples", "3", "--max-new-tokens", "6", "--max-rubric-tokens", "16",
       "--judge-temperature", "0",
       "--max-judge-tokens", "8", "--batch-size", "4", "--micro-batch", "4", "--lora-r", "8", "--lora-alpha", "16",
       "--save-every", "1", "--warmup-ratio", "0", "--lr-scheduler", "constant"]


def test_dpo_raises_the_margin_on_its_pairs(tiny_model, yes_rm, tmp_path):
    cands = write_rows(tmp_path / "cands.jsonl",
                       [{"prompt": YES_PROMPT, "responses": ["yes stone", "no cloud", "yes river", "no bird"]}])
    args = [a if a is not None else cands for a in DPO]
    run_script(*args, "--model", tiny_model, "--candidates", cands, "--rubric-adapter", yes_rm["rubric"],
               "--judge-adapter", yes_rm["judge"], "--judge-template", yes_rm["template"], "--out", tmp_path / "dpo",
               "--lr", "5e-3", "--epochs", "8")
    r1 = tmp_path / "dpo" / "round1"
    report = json.loads((r1 / "label_report.json").read_text())
    prefs = read_jsonl(r1 / "prefs.jsonl")
    assert report["kept"] == len(prefs) >= 4
    log = read_jsonl(r1 / "metrics.jsonl")
    print(f"DPO margin {log[0]['reward_margin']:.3f} -> {log[-1]['reward_margin']:.3f}, "
          f"loss {log[0]['loss']:.3f} -> {log[-1]['loss']:.3f}")
    assert log[0]["reward_margin"] == pytest.approx(0.0, abs=1e-4)  # the policy starts at the reference
    assert log[-1]["reward_margin"] > 1.0 and log[-1]["reward_acc"] == 1.0
    # the saved adapter holds the margin: recompute it from the files
    model = C.attach_lora(C.load_base_model(str(tiny_model)), str(r1 / "adapter"), trainable=False)
    tok = C.load_tokenizer(str(tiny_model))
    pairs, _ = policy_dpo.tokenize_pairs(tok, prefs, 2048)
    with torch.no_grad():
        c, r, _ = policy_dpo.pair_logps(model, pairs, tok.pad_token_id, "cpu")
    ref = torch.load(r1 / "ref_logps.pt")
    margins = 0.1 * ((c - ref["chosen"]) - (r - ref["rejected"]))
    assert bool((margins > 0.5).all())


def test_dpo_on_given_preferences_skips_sampling_and_labelling(tiny_model, tmp_path):
    """--preferences: pairs labelled elsewhere (a checker: Table 3's ceiling) are trained on as given;
    no reward model is loaded (none is named), and a bad record stops the stage naming file, line, field."""
    pairs = [{"prompt": YES_PROMPT, "chosen": "yes stone", "rejected": "no cloud"},
             {"prompt": [{"role": "user", "content": "Say yes or no."}], "chosen": "yes river", "rejected": "no bird"}]
    prefs = write_rows(tmp_path / "prefs.jsonl", pairs)
    args = [a if a is not None else prefs for a in DPO]
    run_script(*args, "--model", tiny_model, "--preferences", prefs, "--out", tmp_path / "dpo", "--lr", "5e-3",
               "--epochs", "4")
    r1 = tmp_path / "dpo" / "round1"
    assert not (r1 / "samples.jsonl").exists() and not (r1 / "labels.partial.jsonl").exists()
    assert [(r["chosen"], r["rejected"]) for r in read_jsonl(r1 / "prefs.jsonl")] == [
        (p["chosen"], p["rejected"]) for p in pairs]
    assert json.loads((r1 / "label_report.json").read_text())["kept"] == 2
    log = read_jsonl(r1 / "metrics.jsonl")
    assert log[-1]["reward_margin"] > log[0]["reward_margin"]
    bad = write_rows(tmp_path / "bad.jsonl", [pairs[0], {"prompt": YES_PROMPT, "chosen": "yes"}])
    p = run_script(*args, "--model", tiny_model, "--preferences", bad, "--out", tmp_path / "bad", check=False)
    assert p.returncode != 0 and f"{bad}:2: field 'rejected' is missing or empty" in p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.slow
def test_iterdpo_two_rounds_with_resume(tiny_model, yes_rm, tmp_path):
    prompts = write_rows(tmp_path / "p.jsonl", [{"prompt": YES_PROMPT}, {"prompt": "Say yes or no."}])
    cands = write_rows(tmp_path / "cands.jsonl", [{"prompt": YES_PROMPT, "responses": ["yes stone", "no cloud", "yes river"]}])
    args = [a if a is not None else prompts for a in DPO] + [
        "--model", tiny_model, "--rubric-adapter", yes_rm["rubric"], "--judge-adapter", yes_rm["judge"],
        "--judge-template", yes_rm["template"],
        "--candidates", cands, "--rounds", "2", "--max-steps", "3", "--lr", "1e-3", "--out", tmp_path / "it"]
    killed = run_script(*args, env={"RUBRIC_ARM_CRASH_AT": "step:2"}, check=False)
    assert killed.returncode == -9  # during round 1's DPO, after step 2
    r1 = tmp_path / "it" / "round1"
    assert (r1 / ".done_sample").exists() and (r1 / ".done_label").exists() and not (r1 / ".done_train").exists()
    t_samples = (r1 / "samples.jsonl").stat().st_mtime_ns
    p = run_script(*args, "--resume")
    assert "round1: sample done, skipped" in p.stderr and "resumed from" in p.stderr
    assert (r1 / "samples.jsonl").stat().st_mtime_ns == t_samples
    assert [r["step"] for r in read_jsonl(r1 / "metrics.jsonl")] == [1, 2, 3]
    r2 = tmp_path / "it" / "round2"
    for step in ("sample", "label", "train"):
        assert (r2 / f".done_{step}").exists()
    samples = read_jsonl(r2 / "samples.jsonl")
    assert len(samples) == 2 and all(len(s["responses"]) == 3 for s in samples)
    assert (tmp_path / "it" / "final_adapter.txt").read_text().strip().endswith("round2/adapter")
    p = run_script(*args, "--resume")  # a third run finds everything done
    assert "round2: train done, skipped" in p.stderr


def test_policy_grpo_online_run(tiny_model, yes_rm, tmp_path):
    prompts = write_rows(tmp_path / "p.jsonl", [{"prompt": YES_PROMPT}, {"prompt": "Answer yes, please."}])
    run_script("policy_grpo.py", "--model", tiny_model, "--prompts", prompts, "--rubric-adapter", yes_rm["rubric"],
               "--judge-adapter", yes_rm["judge"], "--judge-template", yes_rm["template"], "--group-size", "3",
               "--batch-size", "6", "--micro-batch", "6",
               "--max-completion-length", "6", "--max-rubric-tokens", "16", "--max-judge-tokens", "8",
               "--max-steps", "2", "--lr", "1e-3", "--lora-r", "8", "--lora-alpha", "16", "--out", tmp_path / "g")
    log = read_jsonl(tmp_path / "g" / "metrics.jsonl")
    assert [r["step"] for r in log] == [1, 2]
    for r in log:
        assert r["reward"] == pytest.approx((r["reward_win_shown_first"] + r["reward_win_shown_second"]) / 2, abs=1e-5)
        assert 0.0 <= r["reward"] <= 1.0
    assert (tmp_path / "g" / "adapter" / "adapter_model.safetensors").exists()
    # --dynamic-sampling acts here too (it was accepted and ignored): every step says how many draws it made
    run_script("policy_grpo.py", "--model", tiny_model, "--prompts", prompts, "--rubric-adapter", yes_rm["rubric"],
               "--judge-adapter", yes_rm["judge"], "--judge-template", yes_rm["template"], "--group-size", "3",
               "--batch-size", "6", "--micro-batch", "6", "--max-completion-length", "6", "--max-rubric-tokens", "16",
               "--max-judge-tokens", "8", "--max-steps", "1", "--lr", "1e-3", "--lora-r", "8", "--lora-alpha", "16",
               "--dynamic-sampling", "--max-extra-draws", "2", "--out", tmp_path / "d")
    step = read_jsonl(tmp_path / "d" / "metrics.jsonl")[0]
    assert 1 <= step["draws"] <= 3 and step["groups_drawn"] == 2 * step["draws"]


def test_iterdpo_reference_is_the_rounds_starting_policy_unless_asked(tiny_model, yes_rm, tmp_path):
    """Round 2's reference log-probs are those of round 1's adapter (round-start), or of the base model."""
    cands = write_rows(tmp_path / "cands.jsonl",
                       [{"prompt": YES_PROMPT, "responses": ["yes stone", "no cloud", "yes river", "no bird"]}])
    prompts = write_rows(tmp_path / "p.jsonl", [{"prompt": YES_PROMPT}])
    tok = C.load_tokenizer(str(tiny_model))
    got = {}
    for kind in ("round-start", "base"):
        out = tmp_path / kind
        args = [a if a is not None else prompts for a in DPO] + [
            "--model", tiny_model, "--rubric-adapter", yes_rm["rubric"], "--judge-adapter", yes_rm["judge"],
            "--judge-template", yes_rm["template"], "--candidates", cands, "--rounds", "2", "--max-steps", "3",
            "--lr", "5e-3", "--dpo-reference", kind, "--out", out]
        run_script(*args)
        r2 = out / "round2"
        if not (r2 / "ref_logps.pt").exists():
            pytest.skip("round 2 kept no pairs to train on")
        prefs = read_jsonl(r2 / "prefs.jsonl")
        pairs, _ = policy_dpo.tokenize_pairs(tok, prefs, 2048)
        start = C.attach_lora(C.load_base_model(str(tiny_model)), str(out / "round1" / "adapter"), trainable=False)
        with torch.no_grad():
            c_start, _, _ = policy_dpo.pair_logps(start, pairs, tok.pad_token_id, "cpu")
            c_base, _, _ = policy_dpo.pair_logps(C.load_base_model(str(tiny_model)), pairs, tok.pad_token_id, "cpu")
        got[kind] = (torch.load(r2 / "ref_logps.pt")["chosen"], c_start, c_base)
    ref, c_start, c_base = got["round-start"]
    assert torch.allclose(ref, c_start, atol=1e-3) and not torch.allclose(c_start, c_base, atol=1e-3)
    ref, c_start, c_base = got["base"]
    assert torch.allclose(ref, c_base, atol=1e-3)


def test_dpo_killed_mid_labelling_resumes_to_the_same_weights_and_report(tiny_model, yes_rm, tmp_path):
    """Killed in the middle of labelling (after its first chunk) and resumed: the same labels, the same adapter
    to the bit, and a label report that counts both invocations' judge calls (before: max |diff| 0.176, because
    the new LoRA's init and the data order took the RNG where the shortened labelling left it; and the report
    counted only the last invocation). Labelling chunks are fixed slices, each judged from its own seed."""
    from safetensors.torch import load_file
    prompts = write_rows(tmp_path / "p.jsonl", [{"prompt": YES_PROMPT}])
    cands = write_rows(tmp_path / "cands.jsonl", [{"prompt": f"{YES_PROMPT} ({i})", "responses": ["yes stone", "no cloud", "yes river"]}
                                                  for i in range(3)])
    args = [a if a is not None else prompts for a in DPO] + [
        "--model", tiny_model, "--rubric-adapter", yes_rm["rubric"], "--judge-adapter", yes_rm["judge"],
        "--judge-template", yes_rm["template"], "--candidates", cands, "--gen-batch", "1", "--max-steps", "2",
        "--lr", "1e-3", "--judge-temperature", "1"]  # a sampling judge: its draws must resume exactly too
    run_script(*args, "--out", tmp_path / "whole")
    killed = run_script(*args, "--out", tmp_path / "cut", env={"RUBRIC_ARM_CRASH_AT": "label_chunk:1"}, check=False)
    assert killed.returncode == -9 and (tmp_path / "cut" / "round1" / "labels.partial.jsonl").exists()
    run_script(*args, "--out", tmp_path / "cut", "--resume")
    a, b = (tmp_path / d / "round1" for d in ("whole", "cut"))
    assert read_jsonl(a / "prefs.jsonl") == read_jsonl(b / "prefs.jsonl")
    wa, wb = (load_file(d / "adapter" / "adapter_model.safetensors") for d in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ra, rb = (json.loads((d / "label_report.json").read_text()) for d in (a, b))
    assert ra["judge_calls"] == rb["judge_calls"] == 2 * ra["pairs"] == 18 and ra["kept"] == rb["kept"]


@pytest.mark.slow
def test_policy_grpo_resume_on_the_toy_base_with_weights_that_move(tmp_path):
    """policy_grpo.py killed by SIGKILL after step 3 (checkpoint at 2) and resumed ends at the uninterrupted run's
    weights, on the implicit toy base (Rubric-ARM = the base itself, greedy judge) at a learning rate that moves the
    policy's adapter far more than the comparison's tolerance (a random tiny model's barely moves: a weak check)."""
    from safetensors.torch import load_file

    import toy_task
    rows = toy_task.make_implicit_split(8, 1300, "rl", False, False)
    prompts = write_rows(tmp_path / "p.jsonl", [{"prompt": r["prompt"]} for r in rows])
    args = ["policy_grpo.py", "--model", toy_task.IMPLICIT_BASE, "--prompts", prompts, "--group-size", "4",
            "--batch-size", "8", "--micro-batch", "8", "--max-completion-length", "24", "--max-rubric-tokens", "48",
            "--max-judge-tokens", "160", "--judge-temperature", "0", "--max-steps", "4", "--save-every", "2",
            "--lr", "5e-3", "--seed", "3"]
    run_script(*args, "--out", tmp_path / "full")
    killed = run_script(*args, "--out", tmp_path / "cut", env={"RUBRIC_ARM_CRASH_AT": "step:3"}, check=False)
    assert killed.returncode == -9
    run_script(*args, "--out", tmp_path / "cut", "--resume")
    assert [r["reward"] for r in read_jsonl(tmp_path / "full" / "metrics.jsonl")] == \
        [r["reward"] for r in read_jsonl(tmp_path / "cut" / "metrics.jsonl")]
    assert_same_adapter(tmp_path / "full" / "adapter", tmp_path / "cut" / "adapter")
    mid = load_file(str(tmp_path / "full" / "checkpoints" / "step-000002" / "adapter_model.safetensors"))
    end = load_file(str(tmp_path / "full" / "adapter" / "adapter_model.safetensors"))
    assert max(float((end[k] - mid[k]).abs().max()) for k in end) > 1e-3
