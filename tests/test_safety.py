"""Runs that cannot corrupt each other, stop cleanly, refuse nonsense; inputs that used to give wrong
results silently. Each test failed before its fix (README, Reliability)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

import common as C
from conftest import EVAL, ROOT, TRAIN, assert_same_adapter, read_jsonl, run_script, write_rows

JUDGE = ["train_judge_phase.py", "--data", TRAIN, "--limit", "8", "--group-size", "2", "--batch-size", "4",
         "--micro-batch", "4", "--max-completion-length", "12", "--lr", "1e-3", "--save-every", "2",
         "--lora-r", "8", "--lora-alpha", "16"]


def one_line_error(p) -> str:
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
    return p.stderr.strip().splitlines()[-1]


def rubric_cache(path, n=8):
    C.write_jsonl_atomic(path, [{"id": r["id"], "rubric": r["rubric"]} for r in read_jsonl(TRAIN)[:n]])
    return path


def env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "RUBRIC_ARM_NO_PROGRESS": "1"}


# ---- 16.1 locks, children that die with their parent, markers after validation --------------------------


def test_a_second_process_on_the_same_output_refuses_at_once(tiny_model, tmp_path):
    out = tmp_path / "judge"
    out.mkdir()
    C.lock_output(out)  # this test process holds the folder, as a running stage would
    t = time.time()
    err = one_line_error(run_script(*JUDGE, "--model", tiny_model, "--rubric-cache", rubric_cache(tmp_path / "r.jsonl"),
                                    "--out", out, check=False))
    assert err == f"error: {out} is in use by process {os.getpid()}; wait for it to finish, or stop it first"
    assert time.time() - t < 30  # before any model is loaded
    cache = tmp_path / "c.jsonl"
    C.lock_output(cache)
    err = one_line_error(run_script("common.py", "cache-rubrics", "--model", tiny_model, "--data", TRAIN, "--limit", "2",
                                    "--out", cache, check=False))
    assert err.startswith(f"error: {cache} is in use by process {os.getpid()}")


def _tiny_alternate(tiny_model, out, extra_env=None):
    e = {**env(), "MODEL_ARGS": "--lora-r 8 --lora-alpha 16",
         "SFT_RUBRIC_ARGS": "--max-steps 2 --batch-size 4 --micro-batch 4",
         # slow enough to be caught in the middle: many steps, a checkpoint every step
         "SFT_JUDGE_ARGS": "--max-steps 400 --batch-size 4 --micro-batch 4 --save-every 1", **(extra_env or {})}
    return subprocess.Popen(["bash", str(ROOT / "alternate.sh"), "--model", str(tiny_model), "--data", str(TRAIN),
                             "--cycles", "1", "--out", str(out)], cwd=ROOT, env=e, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(pred, seconds=240):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return False


def _stage_pids(out) -> list[int]:
    p = subprocess.run(["pgrep", "-f", f"sft_warmup.py.*{out}"], capture_output=True, text=True)
    return [int(x) for x in p.stdout.split()]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_alternate_takes_its_running_step_down_with_it(tiny_model, tmp_path, sig):
    out = tmp_path / "arm"
    proc = _tiny_alternate(tiny_model, out)
    assert _wait_for(lambda: (out / "sft_judge" / "metrics.jsonl").exists()), proc.stdout.read().decode()[-2000:]
    assert _stage_pids(out)
    os.kill(proc.pid, sig)  # the shell only, not its process group: its child must follow
    proc.wait(timeout=60)
    assert _wait_for(lambda: not _stage_pids(out), 60), "the SFT stage outlived alternate.sh"
    if sig == signal.SIGTERM:
        assert proc.returncode == 143
        said = proc.stdout.read().decode()
        assert "alternate.sh: stopped by SIGTERM" in said and "the same command resumes: bash alternate.sh --model" in said
    # the step stopped cleanly: a checkpoint to resume from, no done-marker
    assert not (out / ".done" / "sft_judge").exists()
    assert list((out / "sft_judge" / "checkpoints").glob("step-*"))


def test_check_output_refuses_half_outputs(tiny_model, tmp_path):
    part = write_rows(tmp_path / "part.jsonl", read_jsonl(TRAIN)[:4])
    cache = rubric_cache(tmp_path / "r.jsonl", n=3)  # one id of the part missing
    err = one_line_error(run_script("manifests.py", "check-output", "--cache", cache, "--data", part, check=False))
    assert "has 3 rubrics: 1 id(s) of" in err and "missing" in err
    run_script("manifests.py", "check-output", "--cache", rubric_cache(tmp_path / "full.jsonl", n=4), "--data", part)
    run_script("sft_warmup.py", "--role", "rubric", "--model", tiny_model, "--data", TRAIN, "--limit", "4", "--max-steps",
               "1", "--out", tmp_path / "sft", "--lora-r", "8", "--lora-alpha", "16")
    adapter = tmp_path / "sft" / "adapter"
    run_script("manifests.py", "check-output", "--adapter", adapter)
    f = adapter / "adapter_model.safetensors"
    whole = f.read_bytes()
    f.write_bytes(whole + b"\0" * 16)  # bytes its header does not account for
    err = one_line_error(run_script("manifests.py", "check-output", "--adapter", adapter, check=False))
    assert err == f"error: adapter {adapter} does not read back: {len(whole) + 16} bytes where its header accounts for {len(whole)}"
    f.write_bytes(whole[: len(whole) // 2])  # a copy cut short
    err = one_line_error(run_script("manifests.py", "check-output", "--adapter", adapter, check=False))
    assert err.startswith(f"error: adapter {adapter} does not read back")
    f.write_bytes(whole[:4])
    err = one_line_error(run_script("manifests.py", "check-output", "--adapter", adapter, check=False))
    assert err.endswith("4 bytes: shorter than its header")


# ---- 16.2 a rerun with other settings, 16.3 Ctrl-C / SIGTERM ---------------------------------------------


def test_a_rerun_with_other_settings_is_refused_unless_asked(tiny_model, tmp_path):
    cache = rubric_cache(tmp_path / "r.jsonl")
    args = [*JUDGE, "--model", tiny_model, "--rubric-cache", cache, "--max-steps", "2", "--out", tmp_path / "o"]
    run_script(*args)
    err = one_line_error(run_script(*args, check=False))
    assert "already holds a run; --resume continues it, --overwrite starts over" in err
    i = args.index("--lr")
    other = args[:i + 1] + ["3e-3"] + args[i + 2:]
    err = one_line_error(run_script(*other, "--resume", check=False))
    assert "holds a run made with other settings or inputs (--lr 0.001 -> 0.003" in err
    p = run_script(*other, "--resume", "--accept-changes")
    assert "continuing" in p.stderr and "lr" in p.stderr
    run_script(*other, "--overwrite", "--max-steps", "1")
    assert [r["step"] for r in read_jsonl(tmp_path / "o" / "metrics.jsonl")] == [1]  # a fresh run, nothing mixed


def test_sigterm_checkpoints_and_the_resumed_run_matches(tiny_model, tmp_path):
    cache = rubric_cache(tmp_path / "r.jsonl")
    args = [*JUDGE, "--model", tiny_model, "--rubric-cache", cache, "--max-steps", "6", "--save-every", "0"]
    run_script(*args, "--out", tmp_path / "full")
    cmd = [sys.executable, str(ROOT / args[0]), *map(str, args[1:]), "--out", str(tmp_path / "cut")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "cut" / "metrics.jsonl"
    assert _wait_for(lambda: metrics.exists() and len(read_jsonl(metrics)) >= 2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert "interrupted after step" in last and "resume with:" in last and last.endswith("--resume")
    done = len(read_jsonl(metrics))
    assert (tmp_path / "cut" / "checkpoints" / f"step-{done:06d}").exists()  # saved at the step it stopped after
    run_script(*args, "--out", tmp_path / "cut", "--resume")
    assert [r["step"] for r in read_jsonl(metrics)] == [1, 2, 3, 4, 5, 6]
    assert_same_adapter(tmp_path / "full" / "adapter", tmp_path / "cut" / "adapter")


# ---- 16.4 settings that cannot work, 17.8 one line instead of a traceback ---------------------------------


@pytest.mark.parametrize("flags,message", [
    (["--group-size", "1"], "--group-size 1: must be at least 2"),
    (["--group-size", "0"], "--group-size 0: must be at least 2"),
    (["--max-completion-length", "0"], "--max-completion-length 0: must be at least 1"),
    (["--lr=-1e-4"], "--lr -0.0001: must be positive"),
    (["--batch-size", "5"], "--batch-size 5: must be a multiple of --group-size 2"),
    (["--temperature", "0"], "--temperature 0.0: must be positive"),
    (["--lr=inf"], "--lr inf: must be a finite number"),
    (["--eps-high", "0.1"], "--eps-high 0.1: must not be below --eps-low 0.2"),
    (["--limit", "0"], "--limit 0: must be at least 1"),
    (["--limit", "-3"], "--limit -3: must be at least 1"),
    (["--max-prompt-length", "0"], "--max-prompt-length 0: must be at least 16"),
])
def test_flags_that_cannot_work_are_refused_before_loading(tmp_path, flags, message):
    t = time.time()
    p = run_script(*JUDGE, "--model", tmp_path / "no-model-needed", "--rubric-cache", tmp_path / "r.jsonl",
                   "--out", tmp_path / "o", *flags, check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert any(line.startswith(f"error: {message}") for line in p.stderr.splitlines()), p.stderr
    assert time.time() - t < 30 and not (tmp_path / "o").exists()


def test_alternate_refuses_zero_cycles(tmp_path):
    p = subprocess.run(["bash", str(ROOT / "alternate.sh"), "--cycles", "0", "--data", str(TRAIN), "--out",
                        str(tmp_path / "o")], cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.strip() == "alternate.sh: --cycles 0: must be a whole number, at least 1"


def test_alternate_checks_every_stages_flags_before_the_first_step(tiny_model, tmp_path):
    """A bad flag of a late stage (the judge phase, the unknown flag of an SFT stage) stops the run before
    any step: nothing is trained, and the message names the step and the flag."""
    e = {**env(), "JUDGE_ARGS": "--group-size 1", "SFT_JUDGE_ARGS": "--no-such-flag"}
    t = time.time()
    p = subprocess.run(["bash", str(ROOT / "alternate.sh"), "--model", str(tiny_model), "--data", str(TRAIN),
                        "--out", str(tmp_path / "o")], cwd=tmp_path, env=e, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "the flags of step judge cannot work" in p.stderr and "--group-size 1: must be at least 2" in p.stderr
    assert "the flags of step sft_judge cannot work" in p.stderr and "--no-such-flag" in p.stderr
    assert not any((tmp_path / "o" / ".done").glob("*"))
    assert not (tmp_path / "o" / "sft_rubric").exists() and time.time() - t < 90


def test_damaged_adapter_offline_hub_name_and_full_disk_are_one_line(tiny_model, tmp_path):
    run_script("sft_warmup.py", "--role", "rubric", "--model", tiny_model, "--data", TRAIN, "--limit", "4", "--max-steps",
               "1", "--out", tmp_path / "sft", "--lora-r", "8", "--lora-alpha", "16")
    f = tmp_path / "sft" / "adapter" / "adapter_model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    err = one_line_error(run_script("common.py", "cache-rubrics", "--model", tiny_model, "--data", TRAIN, "--limit", "2",
                                    "--adapter", tmp_path / "sft" / "adapter", "--out", tmp_path / "c.jsonl", check=False))
    assert "adapter_model.safetensors is damaged or cut short" in err
    err = one_line_error(run_script("sft_warmup.py", "--role", "rubric", "--model", "no-such-org/no-such-model",
                                    "--data", TRAIN, "--out", tmp_path / "o", check=False,
                                    env={"HF_HUB_OFFLINE": "1"}))
    assert err.startswith("error: model 'no-such-org/no-such-model' is not a local folder and could not be fetched")
    # a file-size limit hit while writing the checkpoint (as a full disk would)
    import resource

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
    p = subprocess.run([sys.executable, str(ROOT / "sft_warmup.py"), "--role", "rubric", "--model", str(tiny_model),
                        "--data", str(TRAIN), "--limit", "8", "--max-steps", "2", "--save-every", "1",
                        "--out", str(tmp_path / "full")], cwd=ROOT, env=env(), capture_output=True, text=True,
                       preexec_fn=small_files, timeout=300)
    err = one_line_error(p)
    assert err.startswith("error: could not write") and "--resume" in err


# ---- 16.5 real data shapes -----------------------------------------------------------------------------


def test_chat_message_prompts_and_a_byte_order_mark_load(tmp_path):
    rows = read_jsonl(TRAIN)[:3]
    rows[0] = {**rows[0], "prompt": [{"role": "user", "content": "Write about the sea."}]}
    rows[1] = {**rows[1], "prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                                     {"role": "user", "content": "Now a poem."}]}
    path = write_rows(tmp_path / "chat.jsonl", rows)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # a byte-order mark, as some editors write
    got = C.load_pairs(str(path))
    assert got[0]["prompt"] == "Write about the sea."
    assert got[1]["prompt"] == "user: Hi\n\nassistant: Hello!\n\nuser: Now a poem." and len(got[1]["messages"]) == 3
    assert [m[-1]["content"] for m in C.load_prompts(str(path))][:2] == ["Write about the sea.", "Now a poem."]
    bad = write_rows(tmp_path / "bad.jsonl", [{**rows[2], "prompt": [{"role": "user"}]}])
    with pytest.raises(C.DataError, match=r"bad\.jsonl:1: field 'prompt': message 0 must be an object"):
        C.load_pairs(str(bad))
    ends_with_answer = write_rows(tmp_path / "answer.jsonl", [{**rows[2], "prompt": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}])
    with pytest.raises(C.DataError, match=r"answer\.jsonl:1: field 'prompt': the last message is the assistant's"):
        C.load_pairs(str(ends_with_answer))


# ---- 16.6 progress on long generation ----------------------------------------------------------------------


def test_long_generation_reports_progress_in_logs(tiny_model, tmp_path):
    p = run_script("evaluate.py", "--model", tiny_model, "--benchmark", "pairwise", "--data", EVAL, "--limit", "4",
                   "--max-rubric-tokens", "8", "--max-judge-tokens", "64", "--batch-size", "2", "--out", tmp_path / "ev",
                   env={"RUBRIC_ARM_NO_PROGRESS": "0", "RUBRIC_ARM_PROGRESS_EVERY": "0"})
    lines = [x for x in p.stderr.splitlines() if "INFO judge:" in x]
    assert len(lines) > 4 and "tok/s" in lines[0]  # every few seconds (here: every step), not once per batch
    assert any("min left" in x for x in lines)
    quiet = run_script("evaluate.py", "--model", tiny_model, "--benchmark", "pairwise", "--data", EVAL, "--limit", "4",
                       "--max-rubric-tokens", "8", "--max-judge-tokens", "64", "--batch-size", "2", "--out", tmp_path / "q",
                       env={"RUBRIC_ARM_NO_PROGRESS": "1", "RUBRIC_ARM_PROGRESS_EVERY": "0"})
    assert "INFO judge:" not in quiet.stderr


def test_labelling_and_rollouts_report_progress_too(tiny_model, tmp_path):
    loud = {"RUBRIC_ARM_NO_PROGRESS": "0", "RUBRIC_ARM_PROGRESS_EVERY": "0"}
    prompts = write_rows(tmp_path / "p.jsonl", [{"prompt": f"Say {w}."} for w in ("hi", "yes", "no")])
    C.attach_lora(C.load_base_model(str(tiny_model)), r=8).save_pretrained(tmp_path / "rm")  # a fresh adapter as RM
    p = run_script("policy_dpo.py", "--model", tiny_model, "--prompts", prompts, "--n-samples", "2", "--max-new-tokens", "6",
                   "--rubric-adapter", tmp_path / "rm", "--judge-adapter", tmp_path / "rm",
                   "--max-rubric-tokens", "8", "--max-judge-tokens", "8", "--batch-size", "2", "--micro-batch", "2",
                   "--lora-r", "8", "--lora-alpha", "16", "--out", tmp_path / "dpo", env=loud, check=False)
    assert "INFO rubrics:" in p.stderr and "INFO judge:" in p.stderr, p.stderr[-2000:]  # DPO labelling
    p = run_script(*JUDGE, "--model", tiny_model, "--rubric-cache", rubric_cache(tmp_path / "r.jsonl"), "--max-steps", "1",
                   "--out", tmp_path / "j", env=loud)
    assert "INFO rollouts:" in p.stderr  # GRPO rollouts


# ---- 17: inputs that gave wrong results silently -------------------------------------------------------------


def test_numeric_labels_need_a_winner_map(tmp_path):
    rows = [{**r, "winner": str(k % 2)} for k, r in enumerate(read_jsonl(TRAIN)[:4])]
    path = write_rows(tmp_path / "01.jsonl", rows)
    with pytest.raises(C.DataError, match=r"01\.jsonl:1: field 'winner' is a number \('0'\).*--winner-map 0=A,1=B"):
        C.load_pairs(str(path), skip_invalid=True)  # not skipped row by row: the whole file is unreadable so
    got = C.load_pairs(str(path), winner_map=C.parse_winner_map("0=A,1=B"))
    assert [r["winner"] for r in got] == ["A", "B", "A", "B"]


def test_cache_rubrics_will_not_write_into_a_data_file(tiny_model, tmp_path):
    data = write_rows(tmp_path / "data.jsonl", read_jsonl(TRAIN)[:3])
    before = data.read_bytes()
    err = one_line_error(run_script("common.py", "cache-rubrics", "--model", tiny_model, "--data", TRAIN, "--limit", "2",
                                    "--out", data, check=False))
    assert f"{data}: exists but is not a rubric cache written by cache-rubrics" in err
    assert data.read_bytes() == before


def test_rubric_cache_duplicates_are_errors_and_empties_are_counted(tiny_model, tmp_path, caplog):
    cache = tmp_path / "r.jsonl"
    rows = [{"id": r["id"], "rubric": r["rubric"]} for r in read_jsonl(TRAIN)[:3]]
    write_rows(cache, rows + [{"id": rows[1]["id"], "rubric": "another"}])
    with pytest.raises(C.DataError, match=rf"r\.jsonl:4: field 'id': duplicate '{rows[1]['id']}' \(first at line 2\)"):
        C.read_rubric_lines(cache)
    write_rows(cache, [rows[0], {**rows[1], "rubric": "  "}, rows[2]])
    assert len(C.read_rubric_lines(cache)) == 3
    assert "1 empty rubric(s) (first at line 2)" in caplog.text


def test_identical_pairs_are_scored_as_the_official_code_does_and_counted(tiny_model, tmp_path):
    rows = read_jsonl(EVAL)[:3]
    rows[0] = {**rows[0], "response_b": rows[0]["response_a"]}
    path = write_rows(tmp_path / "p.jsonl", rows)
    p = run_script("evaluate.py", "--model", tiny_model, "--benchmark", f"pairwise={path}", "--max-rubric-tokens", "4",
                   "--max-judge-tokens", "4", "--out", tmp_path / "ev")
    assert "1 comparison(s) have identical chosen and rejected responses" in p.stderr
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert res["benchmarks"]["pairwise"]["n"] == 3 and res["summary"]["identical_pairs"] == {"pairwise": 1}


def test_a_huge_response_is_cut_by_the_default_prompt_limit(tiny_model, tmp_path):
    rows = read_jsonl(EVAL)[:1]
    rows[0] = {**rows[0], "response_a": "word " * 40_000}  # 200,000 characters
    path = write_rows(tmp_path / "p.jsonl", rows)
    run_script("evaluate.py", "--model", tiny_model, "--benchmark", f"pairwise={path}", "--max-rubric-tokens", "4",
               "--max-judge-tokens", "4", "--out", tmp_path / "ev")
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert res["summary"]["truncated"] == 1 and res["config"]["max_prompt_length"] == 8192


def test_alternate_resolves_relative_paths_against_the_callers_folder(tiny_model, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    write_rows(work / "rel.jsonl", read_jsonl(TRAIN)[:8])
    e = {**env(), "SFT_RUBRIC_ARGS": "--lora-targets no_such_module"}  # the first step fails when it runs: only the paths matter
    p = subprocess.run(["bash", str(ROOT / "alternate.sh"), "--model", str(tiny_model), "--data", "rel.jsonl",
                        "--out", "relout"], cwd=work, env=e, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert (work / "relout" / "logs" / "sft_rubric.log").exists() and not (ROOT / "relout").exists()
    assert f"{work / 'relout' / 'logs' / 'sft_rubric.log'}" in p.stderr


def test_damaged_checkpoint_file_names_are_never_half_written(tiny_model, tmp_path):
    """A checkpoint folder appears whole or not at all: the adapter in the newest one loads."""
    run_script("sft_warmup.py", "--role", "rubric", "--model", tiny_model, "--data", TRAIN, "--limit", "8",
               "--max-steps", "3", "--save-every", "1", "--batch-size", "2", "--micro-batch", "2", "--out", tmp_path / "o")
    newest = sorted((tmp_path / "o" / "checkpoints").glob("step-*"))[-1]
    assert load_file(str(newest / "adapter_model.safetensors"))
