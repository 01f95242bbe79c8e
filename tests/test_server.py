"""The inference stages against a real OpenAI-compatible server started here (serve.py, on loopback):
greedy verdicts and rubrics equal the local path on the same model; a server that is down, that serves
another model, or that fails for a while gets a clear line or a retry."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from conftest import EVAL, ROOT, TRAIN, read_jsonl, run_script, write_rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model, *extra, env=None, port=None):
    port = port or free_port()
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
    # a trajectory stopped at --max-judge-tokens is reported the same (the server's finish_reason "length")
    assert [r["cut_off"] for r in served] == [r["cut_off"] for r in local] and any(r["cut_off"] for r in local)
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
    assert "HTTP 503" in p.stderr and "(retry 1 of 5)" in p.stderr  # retried with backoff, then answered
    assert len(read_jsonl(tmp_path / "flaky" / "predictions.jsonl")) == 4


def _post(url, body):
    req = urllib.request.Request(url + "/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_served_sampling_is_seeded_and_every_parameter_sent(tiny_model, server, tmp_path):
    """At temperature 1 two runs with the same --seed through a server get the same judgements (each request
    carries a seed); serve.py answers content given as parts, says 'length' for a completion cut at max_tokens
    and counts the prompt once in total_tokens."""
    args = ["evaluate.py", "--model", tiny_model, "--judge-server", server, "--rubric-server", server,
            "--benchmark", "pairwise", "--data", EVAL, "--limit", "3", "--max-rubric-tokens", "6",
            "--max-judge-tokens", "8", "--batch-size", "1", "--seed", "3"]
    texts = []
    for k in range(2):
        run_script(*args, "--out", tmp_path / f"run{k}")
        texts.append([r["judge_texts"] for r in read_jsonl(tmp_path / f"run{k}" / "predictions.jsonl")])
    assert texts[0] == texts[1]
    code, r = _post(server, {"model": "tiny", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                             "max_tokens": 2, "temperature": 1.0, "n": 2, "seed": 1, "top_k": -1})
    assert code == 200 and len(r["choices"]) == 2
    assert all(c["finish_reason"] in ("length", "stop") for c in r["choices"])
    assert any(c["finish_reason"] == "length" for c in r["choices"])  # 2 tokens of a random model: cut
    assert r["usage"]["total_tokens"] == r["usage"]["prompt_tokens"] + r["usage"]["completion_tokens"]


def test_a_request_the_server_refuses_stops_the_run_and_only_a_context_overflow_counts_as_too_long(tiny_model, tmp_path):
    """A 400 that says the prompt exceeds the context is counted as too long; any other 400 stops the stage with
    the server's message (a rubric cache of empty rubrics and exit 0 is what it gave before)."""
    proc, url = start_server(tiny_model, "--served-name", "tiny", "--max-prompt-length", "64")
    try:
        run_script("evaluate.py", "--model", tiny_model, "--judge-server", url, "--reference-rubrics", EVAL,
                         "--benchmark", "pairwise", "--data", EVAL, "--limit", "2", "--max-judge-tokens", "4",
                         "--out", tmp_path / "long")
        summary = json.loads((tmp_path / "long" / "results.json").read_text())["summary"]
        assert summary["too_long"] == summary["judgements"] == 2  # every judge prompt is over 64 tokens
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # a server that knows the model but refuses a request field
    peer = Peer(lambda: (400, {"error": {"message": "unknown field: chat_template_kwargs"}}))
    try:
        bad = run_script("evaluate.py", "--model", tiny_model, "--judge-server", peer.url,
                         "--reference-rubrics", EVAL, "--benchmark", "pairwise", "--data", EVAL, "--limit", "1",
                         "--max-judge-tokens", "4", "--out", tmp_path / "bad", check=False)
        assert bad.returncode != 0 and "refused the request (400): " in bad.stderr and "chat_template_kwargs" in bad.stderr
        assert "Traceback" not in bad.stderr
    finally:
        peer.close()


def test_another_model_behind_the_same_served_name_is_not_taken_for_the_first(tiny_model, tmp_path):
    """The served model is recorded by what /v1/models says is behind it: restarted on another model under the same
    name, a rerun into the same folder is refused instead of reusing the first model's judgements."""
    import shutil
    other = tmp_path / "other"
    shutil.copytree(tiny_model, other)
    w = other / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-1] + b"\0")
    args = ["evaluate.py", "--model", tiny_model, "--benchmark", "pairwise", "--data", EVAL, "--limit", "2",
            "--reference-rubrics", EVAL, "--max-judge-tokens", "4", "--out", tmp_path / "ev"]
    port = free_port()
    for k, model in enumerate((tiny_model, other)):  # the same port and name, other weights behind them
        proc, url = start_server(model, "--served-name", "judge", port=port)
        try:
            p = run_script(*args, "--judge-server", url, check=k == 0)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert p.returncode != 0 and "another served model" in p.stderr and "Traceback" not in p.stderr


BAD_REQUESTS = [  # (body, words the 400's message must hold)
    ([{"role": "user", "content": "hi"}], "JSON object"),
    ("hello", "JSON object"),
    ({"messages": [{"role": "user"}]}, "messages[0]"),
    ({"messages": []}, "non-empty list"),
    ({"messages": [{"role": "system<|im_end|>", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": "lots"}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e10}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 0}, "n:"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": -1}, "n:"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature"),
    ({"messages": [{"role": "user", "content": "hi"}], "seed": "x"}, "seed"),
    ({"messages": [{"role": "user", "content": "hi"}], "stream": True}, "stream"),
    ({"messages": [{"role": "user", "content": "hi"}], "top_k": 20}, "top_k"),
]


def test_serve_answers_bad_requests_with_400s_and_caps_max_tokens(tiny_model):
    """Each malformed request gets a 400 naming its field (before: a dropped connection and a traceback in the
    server's log); NaN and a body nested 100,000 deep too; the server serves on after them all; a request for
    10^6 tokens is capped (--max-tokens) and says 'length'; max_completion_tokens is read."""
    proc, url = start_server(tiny_model, "--served-name", "tiny", "--max-tokens", "5")
    try:
        for body, words in BAD_REQUESTS:
            code, r = _post(url, body)
            assert code == 400 and words in r["error"]["message"], (body, code, r)
        for raw, words in ((b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', "temperature"),
                           (b"[" * 100_000 + b"]" * 100_000, "not JSON"), (b"\xff\xfe", "not JSON")):
            req = urllib.request.Request(url + "/chat/completions", data=raw, method="POST",
                                         headers={"Content-Type": "application/json"})
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=60)
            assert e.value.code == 400 and words in json.loads(e.value.read())["error"]["message"]
        code, r = _post(url, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**6, "temperature": 0})
        assert code == 200 and r["usage"]["completion_tokens"] <= 5
        assert r["choices"][0]["finish_reason"] in ("length", "stop")
        code, r = _post(url, {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 2, "temperature": 1})
        assert code == 200 and r["usage"]["completion_tokens"] <= 2
        assert proc.poll() is None  # served on after every bad request
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "Traceback" not in proc.stderr.read()


class Peer:
    """A misbehaving OpenAI-compatible peer on loopback: /v1/models lists 'tiny'; each POST answers what
    `answer()` returns, (status, body[, content type]), after `delay` seconds; it counts requests in flight."""

    def __init__(self, answer, delay: float = 0.0, models=None):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        self.answer, self.delay, self.in_flight, self.peak = answer, delay, 0, 0
        # models(): the /v1/models answer, (status, body[, content type]); default: 'tiny'
        self.models = models or (lambda: (200, {"data": [{"id": "tiny"}]}))
        lock, peer = threading.Lock(), self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, code, data, ctype="application/json"):
                data = data if isinstance(data, bytes) else json.dumps(data).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                self._send(*peer.models())

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    peer.in_flight += 1
                    peer.peak = max(peer.peak, peer.in_flight)
                time.sleep(peer.delay)
                with lock:
                    peer.in_flight -= 1
                self._send(*peer.answer())

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def close(self):
        self.httpd.shutdown()


def _verdict(text="Winner: Response A"):
    return lambda: (200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
                          "usage": {"completion_tokens": 3}})


REF = ["evaluate.py", "--benchmark", "pairwise", "--data", EVAL, "--limit", "2", "--reference-rubrics", EVAL,
       "--max-judge-tokens", "4", "--server-retries", "0"]


def test_replies_that_break_the_protocol_stop_with_one_line_and_empty_texts_are_reported(tiny_model, tmp_path):
    """A 200 that is not JSON, a reply without choices or with none: one line and a non-zero exit (before:
    tracebacks, or `"choices": []` scored as a normal 50%). Null or empty content: judged as no verdict and
    reported in a warning line (before: silently)."""
    cases = [(lambda: (200, b"<html>busy</html>", "text/html"), "no 'choices'"),
             (lambda: (200, b"{not json", "application/json"), "not JSON"),
             (lambda: (200, {"id": "x"}), "no 'choices'"),
             (lambda: (200, {"choices": []}), "0 choices, not 1")]
    for k, (answer, words) in enumerate(cases):
        peer = Peer(answer)
        try:
            p = run_script(*REF, "--model", tiny_model, "--judge-server", peer.url, "--out", tmp_path / f"c{k}", check=False)
        finally:
            peer.close()
        last = p.stderr.strip().splitlines()[-1]
        assert p.returncode != 0 and "Traceback" not in p.stderr and last.startswith("error: the server at") and words in last, \
            (words, p.stderr[-1500:])
    peer = Peer(lambda: (200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": None}}]}))
    try:
        p = run_script(*REF, "--model", tiny_model, "--judge-server", peer.url, "--out", tmp_path / "null")
    finally:
        peer.close()
    import re
    empty = [tuple(map(int, m)) for m in re.findall(r"answered (\d+) empty text\(s\) of (\d+)", p.stderr)]
    assert empty and all(a == b for a, b in empty) and sum(a for a, _ in empty) == \
        json.loads((tmp_path / "null" / "results.json").read_text())["summary"]["judgements"]


def test_a_hung_server_gives_up_after_server_timeout_and_sigterm_stops_at_once(tiny_model, tmp_path):
    """--server-timeout bounds a request (before: 600 s, five times); SIGTERM while requests hang ends the stage
    at once with 143 (before: it waited for the request timeout)."""
    import signal
    peer = Peer(_verdict(), delay=120)
    try:
        t = time.time()
        p = run_script(*REF, "--model", tiny_model, "--judge-server", peer.url, "--server-timeout", "1", "--out",
                       tmp_path / "t", check=False)
        assert p.returncode != 0 and time.time() - t < 60 and "Traceback" not in p.stderr
        assert "within --server-timeout 1 s" in p.stderr.strip().splitlines()[-1]
    finally:
        peer.close()
    peer = Peer(_verdict(), delay=120)  # a fresh one: the first one's requests are still hanging
    try:
        cmd = [sys.executable, str(ROOT / "evaluate.py"), *REF[1:], "--model", str(tiny_model), "--judge-server", peer.url,
               "--out", str(tmp_path / "term")]
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE, text=True)
        while peer.in_flight == 0 and proc.poll() is None:
            time.sleep(0.2)
        t = time.time()
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=60)[1]
        assert proc.returncode == 143 and time.time() - t < 20 and "Traceback" not in err, err[-2000:]
    finally:
        peer.close()


def test_server_concurrency_is_not_capped_by_batch_size(tmp_path):
    """cache-rubrics --batch-size 1 --server-concurrency 4: four requests in flight (before: one)."""
    rows = write_rows(tmp_path / "rows.jsonl", read_jsonl(TRAIN)[:8])
    peer = Peer(_verdict("1. A criterion. [Hard Rule]"), delay=0.5)
    try:
        run_script("common.py", "cache-rubrics", "--data", rows, "--server", peer.url, "--batch-size", "1",
                   "--server-concurrency", "4", "--out", tmp_path / "c.jsonl")
    finally:
        peer.close()
    assert peer.peak == 4 and len(read_jsonl(tmp_path / "c.jsonl")) == 8


def test_served_judge_prompts_are_fitted_to_max_prompt_length_like_the_local_path(tiny_model, server, tmp_path):
    """With --server-tokenizer the served judge gets the responses shortened exactly as the local path shortens
    them: the same truncated flags and the same greedy judge texts (before: sent whole)."""
    args = ["evaluate.py", "--benchmark", "pairwise", "--data", EVAL, "--limit", "3", "--reference-rubrics", EVAL,
            "--greedy", "--max-judge-tokens", "6", "--max-prompt-length", "300"]
    run_script(*args, "--model", tiny_model, "--out", tmp_path / "local")
    run_script(*args, "--judge-server", server, "--server-tokenizer", tiny_model, "--out", tmp_path / "served")
    local, served = (read_jsonl(tmp_path / d / "predictions.jsonl") for d in ("local", "served"))
    assert any(r["truncated"] for r in local)
    assert [(r["truncated"], r["too_long"], r["judge_texts"]) for r in served] == \
        [(r["truncated"], r["too_long"], r["judge_texts"]) for r in local]


def test_the_rubric_phase_and_the_server_tokenizer_are_recorded_with_the_served_model(tiny_model, tmp_path):
    """One level deeper (issue 36): the rubric phase records its served judge like evaluate does, so a resume against
    another model behind the same name is refused; a --server-tokenizer changed in place is another record."""
    import shutil
    other = tmp_path / "other"
    shutil.copytree(tiny_model, other)
    w = other / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-1] + b"\0")
    rows = write_rows(tmp_path / "rows.jsonl", read_jsonl(TRAIN)[:2])
    phase = ["train_rubric_phase.py", "--model", tiny_model, "--data", rows, "--group-size", "2", "--batch-size", "2",
             "--micro-batch", "2", "--max-completion-length", "4", "--judge-max-new-tokens", "4", "--save-every", "1",
             "--out", tmp_path / "phase"]
    port = free_port()
    for k, model in enumerate((tiny_model, other)):
        proc, url = start_server(model, "--served-name", "judge", port=port)
        try:
            p = run_script(*phase, "--judge-server", url, "--max-steps", str(k + 1), *(["--resume"] if k else []),
                           check=k == 0)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert p.returncode != 0 and "another served model" in p.stderr and "Traceback" not in p.stderr
    # the served judge's tokenizer, edited in place: another record, the old judgements not reused
    tok_copy = tmp_path / "tok"
    shutil.copytree(tiny_model, tok_copy)
    ev = ["evaluate.py", "--benchmark", "pairwise", "--data", EVAL, "--limit", "2", "--reference-rubrics", EVAL,
          "--max-judge-tokens", "4", "--out", tmp_path / "ev"]
    proc, url = start_server(tiny_model, "--served-name", "judge")
    try:
        run_script(*ev, "--judge-server", url, "--server-tokenizer", tok_copy)
        cfg = tok_copy / "tokenizer_config.json"
        cfg.write_text(cfg.read_text().replace("{", '{"model_max_length": 77, ', 1))
        p = run_script(*ev, "--judge-server", url, "--server-tokenizer", tok_copy, check=False)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert p.returncode != 0 and "another served model" in p.stderr and "tokenizer" in p.stderr
