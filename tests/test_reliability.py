"""Fault injection, bad input and numerical faults: every stage fails clearly or resumes."""

import json
import time

import pytest
import torch

import common as C
import policy_dpo
import toy_task
from conftest import EVAL, TRAIN, YES_PROMPT, assert_same_adapter, grpo_loop, read_jsonl, run_script, write_rows


def test_rubric_phase_resume_after_kill_matches_uninterrupted(tiny_model, always_a_judge, tmp_path):
    args = ["train_rubric_phase.py", "--model", tiny_model, "--judge-adapter", always_a_judge, "--data", TRAIN,
            "--limit", "8", "--group-size", "2", "--batch-size", "4", "--micro-batch", "4",
            "--max-completion-length", "8", "--judge-max-new-tokens", "8", "--max-steps", "4", "--save-every", "2",
            "--lr", "1e-3", "--lora-r", "8", "--lora-alpha", "16"]
    run_script(*args, "--out", tmp_path / "full")
    killed = run_script(*args, "--out", tmp_path / "cut", env={"RUBRIC_ARM_CRASH_AT": "step:3"}, check=False)
    assert killed.returncode == -9
    run_script(*args, "--out", tmp_path / "cut", "--resume")
    full, cut = read_jsonl(tmp_path / "full" / "metrics.jsonl"), read_jsonl(tmp_path / "cut" / "metrics.jsonl")
    assert [r["step"] for r in cut] == [1, 2, 3, 4]
    for a, b in zip(full, cut):
        assert a["reward"] == b["reward"] and abs(a["loss"] - b["loss"]) < 1e-6
    assert_same_adapter(tmp_path / "full" / "adapter", tmp_path / "cut" / "adapter")


def test_evaluate_resumes_after_kill(tiny_model, tmp_path):
    args = ["evaluate.py", "--model", tiny_model, "--benchmark", "pairwise", "--data", EVAL, "--limit", "10",
            "--swap", "--batch-size", "2", "--max-rubric-tokens", "6", "--max-judge-tokens", "6", "--out", tmp_path / "ev"]
    killed = run_script(*args, env={"RUBRIC_ARM_CRASH_AT": "judge_chunk:1"}, check=False)
    assert killed.returncode == -9
    assert len(read_jsonl(tmp_path / "ev" / "predictions.jsonl.partial")) == 16  # one chunk of 8 x batch 2 kept
    p = run_script(*args)
    assert "16 of 20 judgements already written" in p.stderr
    preds = read_jsonl(tmp_path / "ev" / "predictions.jsonl")
    assert sorted((r["cid"], r["order"]) for r in preds) == sorted(
        (f"pairwise/eval-{i:05d}", o) for i in range(10) for o in ("chosen_first", "chosen_second"))
    assert len(read_jsonl(tmp_path / "ev" / "rubrics.jsonl")) == 10


def test_dpo_labelling_resumes_after_kill(tiny_model, yes_rm, yes_template, tmp_path):
    samples = [{"prompt": YES_PROMPT, "responses": ["yes stone", "no cloud", "yes river", "no bird"]},
               {"prompt": "Say yes.", "responses": ["yes", "no", "no no"]}]
    rm = C.RubricARM.load((str(tiny_model), str(yes_rm["rubric"])), (str(tiny_model), str(yes_rm["judge"])),
                          max_rubric_tokens=16,
                          max_judge_tokens=8, batch_size=1, judge_temperature=0.0)
    ref, ref_report = policy_dpo.label_pairs(rm, samples)
    cands = write_rows(tmp_path / "c.jsonl", samples)
    args = ["policy_dpo.py", "--model", tiny_model, "--prompts", cands, "--candidates", cands, "--rubric-adapter",
            yes_rm["rubric"], "--judge-adapter", yes_rm["judge"], "--max-rubric-tokens", "16", "--max-judge-tokens", "8",
            "--judge-temperature", "0", "--judge-template", yes_rm["template"], "--gen-batch", "1", "--max-steps", "1",
            "--out", tmp_path / "d"]
    killed = run_script(*args, env={"RUBRIC_ARM_CRASH_AT": "label_chunk:1"}, check=False)
    assert killed.returncode == -9
    assert len(read_jsonl(tmp_path / "d" / "round1" / "labels.partial.jsonl")) == 4  # one chunk of 4 pairs
    p = run_script(*args, "--resume")
    assert "4 pairs already judged, 5 to go" in p.stderr
    prefs = read_jsonl(tmp_path / "d" / "round1" / "prefs.jsonl")
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in prefs] == [(r["prompt"], r["chosen"], r["rejected"]) for r in ref]
    report = json.loads((tmp_path / "d" / "round1" / "label_report.json").read_text())
    assert report["kept"] == ref_report["kept"] and report["pairs"] == 9
    assert not (tmp_path / "d" / "round1" / "labels.partial.jsonl").exists()


def one_line_error(p) -> str:
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
    return p.stderr.strip().splitlines()[-1]


def test_stage_errors_are_one_clear_line(tiny_model, tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    err = one_line_error(run_script("sft_warmup.py", "--role", "judge", "--model", tiny_model, "--data",
                                    tmp_path / "empty.jsonl", "--out", tmp_path / "o", check=False))
    assert err == f"error: {tmp_path / 'empty.jsonl'}: file is empty"
    write_rows(tmp_path / "norubric.jsonl", [{"prompt": "p", "response_a": "a", "response_b": "b", "winner": "A"}])
    err = one_line_error(run_script("sft_warmup.py", "--role", "rubric", "--model", tiny_model, "--data",
                                    tmp_path / "norubric.jsonl", "--out", tmp_path / "o", check=False))
    assert err == f"error: {tmp_path / 'norubric.jsonl'}:1: field 'rubric' is missing (looked for column rubric / rubrics)"
    err = one_line_error(run_script("train_judge_phase.py", "--model", tiny_model, "--adapter", tmp_path / "nope",
                                    "--rubric-cache", tmp_path / "x.jsonl", "--out", tmp_path / "o", check=False))
    assert "rubric cache" in err and "does not exist" in err
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    err = one_line_error(run_script("sft_warmup.py", "--role", "rubric", "--model", tiny_model, "--out", blocker / "out",
                                    check=False))
    assert err.startswith(f"error: output folder {blocker / 'out'} is not writable")


def test_missing_and_incompatible_adapters(tiny_model, tmp_path):
    args = ["cache-rubrics", "--model", tiny_model, "--data", TRAIN, "--limit", "2", "--out", tmp_path / "r.jsonl"]
    err = one_line_error(run_script("common.py", *args, "--adapter", tmp_path / "missing", check=False))
    assert err == f"error: {tmp_path / 'missing'} is not a saved adapter folder (no adapter_config.json)"
    other = toy_task.make_tiny_model(tmp_path / "other", hidden=32, layers=1, vocab=300)
    run_script("sft_warmup.py", "--role", "rubric", "--model", other, "--data", TRAIN, "--limit", "2", "--max-steps", "1",
               "--out", tmp_path / "other_sft")
    err = one_line_error(run_script("common.py", *args, "--adapter", tmp_path / "other_sft" / "adapter", check=False))
    assert err.startswith(f"error: adapter {tmp_path / 'other_sft' / 'adapter'} does not fit this base model")
    bin_only = tmp_path / "bin_only"
    bin_only.mkdir()
    (bin_only / "adapter_config.json").write_text("{}")
    (bin_only / "adapter_model.bin").write_bytes(b"pickle")
    err = one_line_error(run_script("common.py", *args, "--adapter", bin_only, check=False))
    assert "only safetensors adapters are loaded" in err


def test_judge_prompt_truncation_policy(tok):
    row = read_jsonl(TRAIN)[0]
    long_a, long_b = row["response_a"] * 30, row["response_b"] * 10
    full, cut = C.judge_prompt_ids(tok, row["prompt"], row["rubric"], long_a, long_b)
    assert not cut
    fixed, _ = C.judge_prompt_ids(tok, row["prompt"], row["rubric"], "x", "y")  # the template, instruction, rubric
    half = (len(full) + len(fixed)) // 2  # room for about half of the two responses
    ids, cut = C.judge_prompt_ids(tok, row["prompt"], row["rubric"], long_a, long_b, max_len=half)
    assert cut and len(ids) <= half
    text = tok.decode(ids)
    assert row["prompt"] in text and row["rubric"] in text  # never cut
    assert text.count(C.TRUNCATION_MARK) == 2 or text.count(C.TRUNCATION_MARK) == 1
    assert text.index("Response A:") < text.index("Response B:")
    none, cut = C.judge_prompt_ids(tok, row["prompt"], row["rubric"], long_a, long_b, max_len=50)
    assert none is None and cut  # cannot fit: the caller drops it and counts it


def test_sft_counts_fitted_and_dropped_rows(tiny_model, tmp_path):
    rows = read_jsonl(TRAIN)[:4]
    rows[0] = {**rows[0], "response_a": rows[0]["response_a"] * 40}
    rows[1] = {**rows[1], "prompt": rows[1]["prompt"] * 60}
    path = write_rows(tmp_path / "long.jsonl", rows)
    p = run_script("sft_warmup.py", "--role", "judge", "--model", tiny_model, "--data", path, "--cutoff-len", "900",
                   "--max-steps", "1", "--out", tmp_path / "o")
    assert "3 examples; over --cutoff-len 900: 1 fitted by shortening the responses, 1 dropped" in p.stderr


def test_nan_loss_skips_steps_then_stops(tiny_model, tok, tmp_path, caplog):
    model = C.attach_lora(C.load_base_model(str(tiny_model)), r=4)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    # NaN logits only in training mode: generation is fine, every optimisation pass is not
    model.base_model.model.lm_head.register_forward_hook(lambda m, i, o: o * float("nan") if m.training else o)
    prompts = [C.GroupPrompt(C.chat_prompt_ids(tok, C.rubric_messages("hi")), {})]
    cfg = C.GRPOConfig(group_size=2, batch_size=2, micro_batch=2, max_completion_length=3, beta=0.0, num_iterations=1,
                       max_steps=10, save_every=0, max_bad_steps=3)
    with pytest.raises(SystemExit, match="3 consecutive non-finite steps"):
        grpo_loop(model, tok, cfg, prompts, lambda b, t, G: (torch.tensor([0.0, 1.0]), {}), tmp_path)
    assert caplog.text.count("non-finite loss or gradient, update skipped") == 3
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p, before[n]), n  # no update was applied
    assert len(read_jsonl(tmp_path / "metrics.jsonl")) == 3


def test_out_of_memory_is_answered_with_the_flags_that_lower_memory():
    def boom():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    with pytest.raises(SystemExit) as e:
        C.run_main(boom)
    msg = str(e.value)
    assert msg.startswith("error: out of memory (CUDA out of memory. Tried to allocate 2.00 GiB)")
    for flag in ("--micro-batch 1", "--gradient-checkpointing", "--load-4bit"):
        assert flag in msg


@pytest.mark.parametrize("script", ["sft_warmup.py", "train_judge_phase.py", "train_rubric_phase.py", "evaluate.py",
                                    "policy_dpo.py", "policy_grpo.py"])
def test_security_defaults(script):
    import importlib
    mod = importlib.import_module(script[:-3])
    required = {"sft_warmup.py": ["--role", "judge", "--out", "o"],
                "train_judge_phase.py": ["--rubric-cache", "r", "--out", "o"],
                "train_rubric_phase.py": ["--judge-adapter", "j", "--out", "o"],
                "evaluate.py": ["--benchmark", "pairwise", "--out", "o"],
                "policy_dpo.py": ["--rubric-adapter", "r", "--judge-adapter", "j", "--out", "o"],
                "policy_grpo.py": ["--rubric-adapter", "r", "--judge-adapter", "j", "--out", "o"]}[script]
    args = mod.parse_args(required)
    assert args.trust_remote_code is False
    assert getattr(args, "wandb_project", None) is None


def test_no_credentials_in_outputs(tiny_model, tmp_path):
    secret = "sk-test-" + "9" * 24
    run_script("sft_warmup.py", "--role", "rubric", "--model", tiny_model, "--data", TRAIN, "--limit", "2", "--max-steps",
               "1", "--out", tmp_path / "o", env={"WANDB_API_KEY": secret, "HF_TOKEN": secret})
    for f in (tmp_path / "o").rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f
    assert not (tmp_path / "o" / "wandb").exists()  # wandb stays off unless asked
    weights = [p.name for p in (tmp_path / "o" / "adapter").iterdir() if p.suffix not in (".json", ".md")]
    assert weights == ["adapter_model.safetensors"]  # no pickle files


def test_evaluate_refuses_to_mix_settings_in_one_folder(tiny_model, tmp_path):
    args = ["evaluate.py", "--model", tiny_model, "--benchmark", "pairwise", "--data", EVAL, "--limit", "2",
            "--max-rubric-tokens", "4", "--max-judge-tokens", "4", "--out", tmp_path / "ev"]
    run_script(*args)
    err = one_line_error(run_script(*args[:-2], "--max-judge-tokens", "5", "--out", tmp_path / "ev", check=False))
    assert "holds rubrics and judgements made with other settings or inputs (max_judge_tokens: " in err
    # the data too: another --limit, another file under the same benchmark name (issue: judgements reused)
    err = one_line_error(run_script(*args[:-2], "--limit", "3", "--out", tmp_path / "ev", check=False))
    assert "(limit: '2' -> '3'" in err
    other = write_rows(tmp_path / "other.jsonl", read_jsonl(EVAL)[5:9])
    i = args.index("--data")
    err = one_line_error(run_script(*args[:i + 1], other, *args[i + 2:], check=False))
    assert "(data:pairwise: 'sha256:" in err


def test_rubric_cache_extends_an_existing_cache(tiny_model, tok, tmp_path):
    model = C.load_base_model(str(tiny_model))
    rows = C.load_pairs(str(TRAIN), limit=6)
    first = C.cache_rubrics(model, tok, rows[:4], tmp_path / "r.jsonl", max_new_tokens=4, batch_size=2)
    stats: dict = {}
    both = C.cache_rubrics(model, tok, rows, tmp_path / "r.jsonl", max_new_tokens=4, batch_size=2, stats=stats)
    assert stats["generated"] == 2  # only the two new rows
    assert [r["id"] for r in read_jsonl(tmp_path / "r.jsonl")] == [r["id"] for r in rows]
    assert all(both[k] == v for k, v in first.items())


def test_template_files_read_as_the_built_in_ones_and_belong_to_their_role(tmp_path):
    """A template saved with a final line break gives the prompt the same text without it gives; a judge
    template given for the rubric role, or doubled braces, is refused with one line naming the file."""
    import argparse
    body = "Write criteria for this request:\n{prompt}"
    for name, text in (("plain.txt", body), ("newline.txt", body + "\n")):
        (tmp_path / name).write_text(text)
    saved = dict(C.TEMPLATES)
    try:
        prompts = []
        for name in ("plain.txt", "newline.txt"):
            C.use_templates(argparse.Namespace(rubric_template=str(tmp_path / name), judge_template=None))
            prompts.append(C.rubric_messages("Say hi.")[0]["content"])
        assert prompts[0] == prompts[1] == "Write criteria for this request:\nSay hi."
        (tmp_path / "judge_card.txt").write_text("{prompt}\n{rubric}\nA: {response_a}\nB: {response_b}")
        (tmp_path / "braces.txt").write_text("Request: {{instruction}} {instruction}")
        for bad in ("judge_card.txt", "braces.txt"):
            with pytest.raises(C.DataError, match=f"{bad}: the rubric template holds"):
                C.use_templates(argparse.Namespace(rubric_template=str(tmp_path / bad), judge_template=None))
    finally:
        C.TEMPLATES.update(saved)


def test_evaluation_outputs_without_their_record_or_under_another_prompt_are_not_reused(tiny_model, tmp_path):
    """An evaluate folder whose run_signature.json was deleted is refused (not reused under a new record); an
    edited prompt file (built in or given) changes the record, so old judgements are refused too."""
    rows = write_rows(tmp_path / "pairs.jsonl", read_jsonl(EVAL)[:2])
    args = ["evaluate.py", "--model", tiny_model, "--benchmark", f"pairwise={rows}", "--max-rubric-tokens", "4",
            "--max-judge-tokens", "4"]
    run_script(*args, "--out", tmp_path / "ev")
    (tmp_path / "ev" / "run_signature.json").unlink()
    err = one_line_error(run_script(*args, "--out", tmp_path / "ev", check=False))
    assert "no run_signature.json" in err
    judge = tmp_path / "judge.txt"
    judge.write_text(C.JUDGE_TEMPLATE)
    run_script(*args, "--judge-template", judge, "--out", tmp_path / "ev2")
    judge.write_text(C.JUDGE_TEMPLATE + "\nBe brief.")
    err = one_line_error(run_script(*args, "--judge-template", judge, "--out", tmp_path / "ev2", check=False))
    assert "other settings or inputs" in err


def test_a_tokenizer_without_chat_template_is_one_line_and_chat_template_fixes_it(tiny_model, tmp_path):
    """Some released checkpoints ship no chat template: one line naming the way out (--chat-template FILE),
    and with that flag the stage runs."""
    import shutil
    bare = tmp_path / "bare"
    shutil.copytree(tiny_model, bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    cfg = json.loads((bare / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(cfg))
    rows = write_rows(tmp_path / "pairs.jsonl", read_jsonl(EVAL)[:1])
    args = ["evaluate.py", "--model", bare, "--benchmark", f"pairwise={rows}", "--max-rubric-tokens", "4",
            "--max-judge-tokens", "4"]
    err = one_line_error(run_script(*args, "--out", tmp_path / "a", check=False))
    assert "has no chat template" in err and "--chat-template" in err
    template = tmp_path / "chat.jinja"
    template.write_text(toy_task.TINY_CHAT_TEMPLATE)
    run_script(*args, "--chat-template", template, "--out", tmp_path / "b")
    assert (tmp_path / "b" / "results.json").exists()


@pytest.mark.parametrize("damage", ["cut weights", "empty weights", "config not JSON"])
def test_a_damaged_model_folder_is_one_line(tiny_model, tmp_path, damage):
    import shutil
    bad = tmp_path / "model"
    shutil.copytree(tiny_model, bad)
    w = bad / "model.safetensors"
    if damage == "cut weights":
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    elif damage == "empty weights":
        w.write_bytes(b"")
    else:
        (bad / "config.json").write_text("{not json")
    rows = write_rows(tmp_path / "pairs.jsonl", read_jsonl(EVAL)[:1])
    err = one_line_error(run_script("evaluate.py", "--model", bad, "--benchmark", f"pairwise={rows}",
                                    "--max-judge-tokens", "2", "--max-rubric-tokens", "2", "--out", tmp_path / "o",
                                    check=False))
    assert str(bad) in err and ("damaged" in err or "cannot be read" in err), err


@pytest.mark.parametrize("line, field", [('{"prompt": ' + "[" * 100000 + "]" * 100000 + "}", "nested too deeply"),
                                         ('{"prompt": "p", "response_a": "a\\ud800", "response_b": "b", "winner": "A"}',
                                          "field 'response_a' holds a character that is not valid text")])
def test_pathological_rows_are_one_line_naming_file_and_line_and_skippable(tmp_path, line, field):
    good = json.dumps({"prompt": "p", "response_a": "a", "response_b": "b", "winner": "A"})
    path = tmp_path / "d.jsonl"
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(C.DataError, match=r"d\.jsonl:2: .*" + field.split("'")[0]):
        C.load_pairs(str(path))
    assert len(C.load_pairs(str(path), skip_invalid=True)) == 1


def test_a_training_run_without_its_record_says_so_in_one_line(tiny_model, tmp_path):
    args = ["sft_warmup.py", "--role", "judge", "--model", tiny_model, "--data", TRAIN, "--limit", "8", "--max-steps", "1",
            "--batch-size", "4", "--micro-batch", "4", "--out", tmp_path / "sft"]
    run_script(*args)
    (tmp_path / "sft" / "run_signature.json").unlink()
    err = one_line_error(run_script(*args, "--resume", check=False))
    assert "no run_signature.json" in err and "--overwrite" in err


def test_more_bad_inputs_are_one_line_each(tiny_model, tmp_path):
    """Issue 36, item 12 and 13: each of these was a traceback or a misleading line."""
    import shutil

    from safetensors.torch import load_file
    ev = ["evaluate.py", "--benchmark", "pairwise", "--data", EVAL, "--limit", "2", "--max-judge-tokens", "4",
          "--reference-rubrics", EVAL]
    pickled = tmp_path / "pickled"  # a model whose weights are only a pickle file
    shutil.copytree(tiny_model, pickled)
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    no_tok = tmp_path / "no_tok"  # a model folder without tokenizer files
    shutil.copytree(tiny_model, no_tok, ignore=shutil.ignore_patterns("tokenizer*", "vocab*", "merges*", "special*",
                                                                      "chat_template*", "added_tokens*"))
    a_file = write_rows(tmp_path / "a_file", [{"x": 1}])
    cases = [
        ([*ev, "--model", pickled, "--out", tmp_path / "o1"], "no .safetensors weights (only pytorch_model.bin: pickle files"),
        ([*ev, "--model", no_tok, "--out", tmp_path / "o2"], f"{no_tok}: no tokenizer files"),
        ([*ev, "--model", tiny_model, "--device", "banana", "--out", tmp_path / "o3"], "--device 'banana': not a device"),
        ([*ev, "--model", tiny_model, "--out", a_file], f"{a_file} is a file, not a folder"),
        (["evaluate.py", "--model", tiny_model, "--benchmark", "rewardbench", "--limit", "2", "--out", tmp_path / "o4"],
         "--benchmark rewardbench: allenai/reward-bench could not be fetched from the dataset hub"),
        (["common.py", "split", TRAIN, "--parts", "2", "--out-dir", a_file], f"{a_file} is a file, not a folder"),
    ]
    if not torch.cuda.is_available():
        cases.append(([*ev, "--model", tiny_model, "--device", "cuda", "--out", tmp_path / "o5"],
                      "--device cuda: this machine has no CUDA device"))
    for args, words in cases:
        p = run_script(*args, check=False, env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
        last = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""
        assert p.returncode != 0 and "Traceback" not in p.stderr and last.startswith("error: ") and words in last, \
            (args, p.stderr[-1500:])
    # a rubric cache whose lock cannot be written (as root a read-only folder is writable: a folder in the lock's place)
    (tmp_path / "c.jsonl.lock").mkdir()
    p = run_script("common.py", "cache-rubrics", "--model", tiny_model, "--data", TRAIN, "--limit", "2",
                   "--out", tmp_path / "c.jsonl", check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr and "cannot write beside" in p.stderr.strip().splitlines()[-1]
    # policy_dpo: candidates without responses or with non-texts, --gen-batch 0 and --sample-temperature -1
    prompts = write_rows(tmp_path / "p.jsonl", [{"prompt": YES_PROMPT}])
    dpo = ["policy_dpo.py", "--model", tiny_model, "--prompts", prompts, "--max-steps", "1"]
    for rows, words in (([{"prompt": "p", "answers": ["a", "b"]}], ":1: field 'responses' must be a list of response texts"),
                        ([{"prompt": "p", "responses": ["a", 3]}], ":1: field 'responses' must be a list of response texts"),
                        ([{"responses": ["a", "b"]}], ":1: field 'prompt' is missing or empty")):
        cands = write_rows(tmp_path / "cands.jsonl", rows)
        p = run_script(*dpo, "--candidates", cands, "--out", tmp_path / "d", "--overwrite", check=False)
        assert p.returncode != 0 and "Traceback" not in p.stderr and words in p.stderr.strip().splitlines()[-1], p.stderr[-800:]
    t = time.time()
    for flags, words in ((["--gen-batch", "0"], "--gen-batch 0: must be at least 1"),
                         (["--sample-temperature=-1"], "--sample-temperature -1.0: must not be negative")):
        p = run_script(*dpo, *flags, "--out", tmp_path / "d2", check=False)
        assert p.returncode != 0 and any(line.startswith(f"error: {words}") for line in p.stderr.splitlines()), p.stderr
    assert time.time() - t < 60  # refused before any model is loaded


def test_a_float_label_names_winner_map(tmp_path):
    for w, words in ((1.0, "--winner-map 0.0=A,1.0=B"), ("model_x", "--winner-map model_a=A,model_b=B")):
        path = write_rows(tmp_path / "f.jsonl", [{**read_jsonl(TRAIN)[0], "winner": w}])
        with pytest.raises(C.DataError, match=words):
            C.load_pairs(str(path))
