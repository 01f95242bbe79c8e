"""Bad input a user can give, each ending in one line that names the problem (issue 23)."""

import json
import time

import pytest
from test_safety import one_line_error

from conftest import TRAIN, read_jsonl, run_script, write_rows

SFT = ["sft_warmup.py", "--role", "rubric", "--data", TRAIN, "--limit", "2", "--max-steps", "1", "--lora-r", "4",
       "--lora-alpha", "8"]


@pytest.mark.parametrize("script,flags,message", [
    ("sft_warmup.py", ["--role", "judge", "--lr=inf"], "--lr inf: must be a finite number"),
    ("sft_warmup.py", ["--role", "judge", "--decision-weight", "0"], "--decision-weight 0.0: must be positive"),
    ("train_rubric_phase.py", ["--rubric-format-weight", "-1", "--group-size", "2", "--batch-size", "4",
                               "--micro-batch", "4", "--judge-adapter", "x"], "--rubric-format-weight -1.0: must not be negative"),
])
def test_numbers_that_cannot_work_are_refused_before_loading(tmp_path, script, flags, message):
    t = time.time()
    err = one_line_error(run_script(script, "--model", tmp_path / "nothing", "--data", TRAIN, "--out", tmp_path / "o",
                                    *flags, check=False))
    assert err.startswith(f"error: {message}"), err
    assert time.time() - t < 30 and not (tmp_path / "o").exists()


def test_a_micro_batch_larger_than_the_batch_is_said_and_fitted(caplog):
    import argparse

    import common as C
    args = argparse.Namespace(micro_batch=9, batch_size=4)
    C.fit_micro_batch(args)
    assert args.micro_batch == 4 and "--micro-batch 9 is larger than --batch-size 4" in caplog.text


def test_split_needs_at_least_one_part(tmp_path):
    for parts in ("0", "-1"):
        err = one_line_error(run_script("common.py", "split", TRAIN, "--parts", parts, "--out-dir", tmp_path, check=False))
        assert err == f"error: --parts {parts}: must be at least 1"
    assert not list(tmp_path.iterdir())


def test_a_folder_as_data_and_an_unreachable_hub_dataset(tiny_model, tmp_path):
    err = one_line_error(run_script(*SFT[:3], "--data", tmp_path, "--model", tiny_model, "--out", tmp_path / "o",
                                    check=False))
    assert err == f"error: {tmp_path}: is a folder; --data takes a .jsonl, .json or .parquet file or a hub dataset name"
    err = one_line_error(run_script(*SFT[:3], "--data", "no-such-org/no-such-set", "--model", tiny_model,
                                    "--out", tmp_path / "o2", check=False, env={"HF_HUB_OFFLINE": "1"}))
    assert err.startswith("error: no-such-org/no-such-set: not a local file, and the dataset hub could not be reached")


def test_model_naming_an_adapter_or_a_run_folder(tiny_model, tmp_path):
    run_script(*SFT, "--model", tiny_model, "--out", tmp_path / "run")
    err = one_line_error(run_script(*SFT, "--model", tmp_path / "run" / "adapter", "--out", tmp_path / "o", check=False))
    assert err.startswith(f"error: {tmp_path / 'run' / 'adapter'} is a LoRA adapter, not a model")
    err = one_line_error(run_script(*SFT, "--model", tmp_path / "run", "--out", tmp_path / "o", check=False))
    assert err.startswith(f"error: {tmp_path / 'run'} is a run folder, not a model")
    # an adapter whose config is not JSON is named as damaged, not as "does not fit"
    (tmp_path / "run" / "adapter" / "adapter_config.json").write_text("{not json")
    err = one_line_error(run_script(*SFT, "--model", tiny_model, "--adapter", tmp_path / "run" / "adapter",
                                    "--out", tmp_path / "o3", check=False))
    assert "adapter_config.json is not JSON" in err


def test_an_adapter_trained_on_another_base_is_named(tiny_model, tmp_path):
    import toy_task
    other = toy_task.make_tiny_model(tmp_path / "twin")  # same shapes, another model
    run_script(*SFT, "--model", other, "--out", tmp_path / "run")
    p = run_script(*SFT, "--model", tiny_model, "--adapter", tmp_path / "run" / "adapter", "--out", tmp_path / "o")
    assert "was trained on base model" in p.stderr and "a model nobody trained" in p.stderr


def test_the_interrupt_line_gives_the_command_that_continues(tiny_model, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from conftest import ROOT
    rows = write_rows(tmp_path / "d.jsonl", read_jsonl(TRAIN)[:40])
    cmd = [sys.executable, str(ROOT / "common.py"), "cache-rubrics", "--model", str(tiny_model), "--data", str(rows),
           "--batch-size", "1", "--max-new-tokens", "64", "--out", str(tmp_path / "r.jsonl")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "RUBRIC_ARM_NO_PROGRESS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "r.jsonl.partial").exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143, err
    line = err.strip().splitlines()[-1]
    assert "this continues from there: python" in line and "cache-rubrics" in line and "--resume" not in line
    json.loads(open(tmp_path / "r.jsonl.manifest.json").read())  # its manifest is there for the rerun
    run_script(*cmd[1:])


def test_more_steps_on_a_finished_run_says_its_schedule_was_planned_for_fewer(tiny_model, tmp_path):
    sft = ["sft_warmup.py", "--role", "rubric", "--data", TRAIN, "--limit", "8", "--batch-size", "2", "--micro-batch", "2",
           "--lora-r", "4", "--lora-alpha", "8", "--model", tiny_model, "--out", tmp_path / "o"]
    run_script(*sft, "--max-steps", "2")
    p = run_script(*sft, "--max-steps", "4", "--resume")
    assert "planned for 2 steps and now runs 4" in p.stderr
    assert [r["step"] for r in read_jsonl(tmp_path / "o" / "metrics.jsonl")] == [1, 2, 3, 4]


def test_a_full_disk_in_cache_rubrics_names_the_rerun_without_a_resume_flag(tiny_model, tmp_path):
    import resource
    import subprocess
    import sys

    from conftest import ROOT

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500))
    rows = write_rows(tmp_path / "d.jsonl", read_jsonl(TRAIN)[:20])
    p = subprocess.run([sys.executable, str(ROOT / "common.py"), "cache-rubrics", "--model", str(tiny_model), "--data",
                        str(rows), "--batch-size", "1", "--max-new-tokens", "48", "--out", str(tmp_path / "r.jsonl")],
                       cwd=ROOT, capture_output=True, text=True, preexec_fn=small_files, timeout=300,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    err = one_line_error(p)
    assert err.startswith("error: could not write") and "cache-rubrics" in err and "--resume" not in err, err
    assert "(what was finished is kept)" in err and (tmp_path / "r.jsonl.partial").exists()


def test_library_noise_stays_out_of_the_logs(tiny_model, tmp_path):
    """bitsandbytes' message about its optional kernels package and the gradient-checkpointing
    FutureWarning concern nobody running the stages."""
    p = run_script(*SFT, "--model", tiny_model, "--load-4bit", "--gradient-checkpointing", "--out", tmp_path / "o")
    assert "kernels-community" not in p.stderr and "gemm_4bit" not in p.stderr
    assert "FutureWarning" not in p.stderr and "Traceback" not in p.stderr
