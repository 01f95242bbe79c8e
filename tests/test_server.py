"""The inference stages against a real OpenAI-compatible server started here (serve.py, on loopback):
greedy verdicts and rubrics equal the local path on the same model; a server that is down, that serves
another model, or that fails for a while gets a clear line or a retry."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import EVAL, ROOT, TRAIN, read_jsonl, run_script, write_rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model, *extra, env=None):
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "serve.py"), "--model", str(model), "--port", str(port), *map(str, extra)],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/models", timeout=2):
                return proc, url
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read()) from None
            time.sleep(0.3)
    proc.kill()
    raise AssertionError("serve.py did not come up")


@pytest.fixture(scope="module")
def server(tiny_model):
    proc, url = start_server(tiny_model, "--served-name", "tiny")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


EV = ["--benchmark", "pairwise", "--data", EVAL, "--limit", "4", "--greedy", "--max-rubric-tokens", "8",
      "--max-judge-tokens", "6", "--batch-size", "1"]


def test_evaluation_through_a_server_equals_the_local_path(tiny_model, server, tmp_path):
    run_script("evaluate.py", "--model", tiny_model, *EV, "--out", tmp_path / "local")
    run_script("evaluate.py", "--rubric-server", server, "--judge-server", server, "--server-concurrency", "3", *EV,
               "--out", tmp_path / "served")
    local, served = (read_jsonl(tmp_path / d / "predictions.jsonl") for d in ("local", "served"))
    assert [r["judge_texts"] for r in served] == [r["judge_texts"] for r in local]
    assert [r["verdict"] for r in served] == [r["verdict"] for r in local]
    assert read_jsonl(tmp_path / "served" / "rubrics.jsonl") == read_jsonl(tmp_path / "local" / "rubrics.jsonl")
    res = json.loads((tmp_path / "served" / "results.json").read_text())
    assert res["config"]["judge_server"] == server and res["efficiency"]["judge_tokens"] > 0
    # the served model's name is checked against what the server lists
    p = run_script("evaluate.py", "--judge-server", server, "--judge-model", "another-model", "--no-rubric", *EV,
                   "--out", tmp_path / "wrong", check=False)
    assert p.returncode != 0 and "serves tiny, not 'another-model'" in p.stderr.strip().splitlines()[-1]


def test_rubric_cache_and_the_rubric_phase_judge_through_a_server(tiny_model, server, tmp_path):
    rows = write_rows(tmp_path / "rows.jsonl", read_jsonl(TRAIN)[:3])
    common = ["cache-rubrics", "--data", rows, "--max-new-tokens", "8", "--batch-size", "1"]
    run_script("common.py", *common, "--model", tiny_model, "--out", tmp_path / "local.jsonl")
    run_script("common.py", *common, "--server", server, "--out", tmp_path / "served.jsonl")
    assert read_jsonl(tmp_path / "served.jsonl") == read_jsonl(tmp_path / "local.jsonl")
    run_script("train_rubric_phase.py", "--model", tiny_model, "--judge-server", server, "--data", rows,
               "--group-size", "2", "--batch-size", "2", "--micro-batch", "2", "--max-completion-length", "6",
               "--judge-max-new-tokens", "6", "--max-steps", "1", "--out", tmp_path / "phase")
    assert (tmp_path / "phase" / "adapter" / "adapter_config.json").exists()


def test_a_server_that_is_down_or_fails_for_a_while(tiny_model, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    t = time.time()
    p = run_script("evaluate.py", "--judge-server", dead, "--server-retries", "1", "--no-rubric", *EV,
                   "--out", tmp_path / "down", check=False)
    last = p.stderr.strip().splitlines()[-1]
    assert p.returncode != 0 and "Traceback" not in p.stderr and time.time() - t < 60
    assert last.startswith(f"error: no answer from the server at {dead} after 2 attempts") and "is it running" in last
    proc, url = start_server(tiny_model, env={"RUBRIC_ARM_SERVER_FAIL_FIRST": "2"})
    try:
        p = run_script("evaluate.py", "--judge-server", url, "--no-rubric", "--server-concurrency", "1", *EV,
                       "--out", tmp_path / "flaky")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "HTTP 503" in p.stderr and "(attempt 1 of 6)" in p.stderr  # retried with backoff, then answered
    assert len(read_jsonl(tmp_path / "flaky" / "predictions.jsonl")) == 4
