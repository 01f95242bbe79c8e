"""The fault round of issue 43: served models that change under a run, flags that parse as other flags, and
the rest of the list. Each test names the case it guards; each failed before its fix (silent, a traceback,
or a misleading line)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_server import Peer, _verdict

import common as C
from conftest import EVAL, ROOT, TRAIN, read_jsonl, run_script, write_rows

REF = ["evaluate.py", "--benchmark", "pairwise", "--data", EVAL, "--limit", "4", "--reference-rubrics", EVAL,
       "--max-judge-tokens", "4", "--server-retries", "0", "--batch-size", "1", "--server-concurrency", "1"]


def one_line_error(p: subprocess.CompletedProcess) -> str:
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
    return p.stderr.strip().splitlines()[-1]


def test_a_served_model_that_changes_during_a_run_stops_it(tiny_model, tmp_path):
    """Case 1: replies that name another model after 3 requests, and a /v1/models root that changes, each stop
    the run with one line (before: 21 of 24 replies from the other model, exit 0)."""
    calls = {"post": 0, "get": 0}

    def answer():
        calls["post"] += 1
        name = "tiny" if calls["post"] <= 3 else "other-model"
        return 200, {"model": name, "choices": [{"index": 0, "message": {"role": "assistant", "content": "Winner: Response A"}}]}

    peer = Peer(answer)
    try:
        p = run_script(*REF, "--model", tiny_model, "--judge-server", peer.url, "--swap", "--out", tmp_path / "a", check=False)
    finally:
        peer.close()
    assert "answered as model 'other-model' after answering as 'tiny'" in one_line_error(p)

    def models():
        calls["get"] += 1
        return 200, {"data": [{"id": "tiny", "root": "/weights/one" if calls["get"] <= 1 else "/weights/two"}]}

    peer = Peer(_verdict(), models=models)
    try:
        p = run_script(*REF, "--model", tiny_model, "--judge-server", peer.url, "--swap", "--out", tmp_path / "b", check=False)
    finally:
        peer.close()
    assert "root: /weights/one -> /weights/two" in one_line_error(p) and "changed during the run" in p.stderr


def test_a_rubric_cache_extended_through_another_served_model_is_refused(tmp_path):
    """Case 2: a cache written through a server records what the server serves; extending it after the served
    model changed is refused (before: 8 rows from two models in one cache)."""
    root = {"v": "/weights/one"}
    rubric = lambda: (200, {"model": "tiny", "choices": [{"index": 0, "message": {"role": "assistant",  # noqa: E731
                                                                                "content": "1. The response says yes. [Hard Rule]"}}]})
    peer = Peer(rubric, models=lambda: (200, {"data": [{"id": "tiny", "root": root["v"]}]}))
    cache = tmp_path / "rubrics.jsonl"
    try:
        run_script("common.py", "cache-rubrics", "--server", peer.url, "--data", TRAIN, "--limit", "4", "--out", cache)
        assert len(read_jsonl(cache)) == 4
        root["v"] = "/weights/two"
        p = run_script("common.py", "cache-rubrics", "--server", peer.url, "--data", TRAIN, "--limit", "8", "--out", cache,
                       check=False)
    finally:
        peer.close()
    last = one_line_error(p)
    assert "another generator" in last and "/weights/two" in last
    assert len(read_jsonl(cache)) == 4


def test_abbreviated_flags_are_refused_everywhere(tmp_path):
    """Case 3: argparse took any unambiguous prefix: --reference-rubric for --reference-rubrics judged the
    'generator' row under the reference, --rubric-sens recursed, --ou gave a TypeError. Now every parser
    refuses prefixes; the source check keeps new parsers that way."""
    for flags in (["--ou", str(tmp_path / "x")], ["--out", str(tmp_path / "y"), "--rubric-sens"],
                  ["--out", str(tmp_path / "z"), "--reference-rubric", str(EVAL)]):
        p = run_script("evaluate.py", "--benchmark", "pairwise", "--data", EVAL, *flags, check=False)
        assert "unrecognized arguments" in one_line_error(p) or "required" in one_line_error(p), p.stderr[-500:]
        assert "RecursionError" not in p.stderr
    parsers = re.compile(r"(?:argparse\.ArgumentParser|\.add_parser)\(")
    missing = []
    for path in [*ROOT.glob("*.py"), *ROOT.glob("tasks/*.py"), *ROOT.glob("experiments/*.py"), *ROOT.glob("bench/*.py")]:
        text = path.read_text()
        missing += [f"{path.name}: {text[m.start():m.start() + 60]}" for m in parsers.finditer(text)
                    if "allow_abbrev=False" not in text[m.end():m.end() + 300]]
    assert not missing, missing


def test_max_extra_draws_without_dynamic_sampling_is_refused(tiny_model, tmp_path):
    """Case 4 (judge phase): --max-extra-draws without --dynamic-sampling was ignored without a word."""
    p = run_script("train_judge_phase.py", "--model", tiny_model, "--data", TRAIN, "--rubric-cache", TRAIN,
                   "--max-extra-draws", "5", "--out", tmp_path / "j", check=False)
    assert "--max-extra-draws 5: acts only with --dynamic-sampling" in one_line_error(p)


def test_another_prompts_rubric_needs_two_different_rubrics(tiny_model, tmp_path):
    """Case 5: with one distinct prompt, 'another prompt's rubric' was the prompt's own, silently."""
    row = read_jsonl(EVAL)[0]
    one = write_rows(tmp_path / "one.jsonl", [row, {**row, "id": "copy"}])
    p = run_script("evaluate.py", "--model", tiny_model, "--benchmark", "pairwise", "--data", one, "--reference-rubrics", one,
                   "--given-rubric", "other", "--out", tmp_path / "o", check=False)
    assert "1 distinct rubric(s)" in one_line_error(p)
    assert not (tmp_path / "o" / "predictions.jsonl").exists()


def test_a_verdict_naming_both_responses_with_a_slash_has_none():
    """Case 6: 'Response A/B' was read as A."""
    for text in ("Winner: Response A/B", "Winner: Response B/A", "Winner: A / B", "Winner: response a/response b"):
        assert C.parse_verdict(text) is None, text
    assert C.parse_verdict("Winner: Response B (an A/B comparison)") == "B"
    assert C.parse_verdict("Winner: N/A") is None


@pytest.mark.parametrize("seed", ["99999999999999999999999", str(2**64), "-1"])
def test_a_seed_out_of_range_is_one_line(tiny_model, tmp_path, seed):
    """Case 8: torch.manual_seed overflowed with a traceback after the flag checks (alternate.sh: after the split)."""
    p = run_script("sft_warmup.py", "--role", "judge", "--model", tiny_model, "--data", TRAIN, "--seed", seed,
                   "--out", tmp_path / "s", check=False)
    assert "argument --seed: must be" in one_line_error(p)
    p = run_script("bash", "alternate.sh", "--seed", seed, "--out", tmp_path / "alt", check=False)
    assert "--seed" in one_line_error(p) and not (tmp_path / "alt").exists()


def test_a_models_list_that_is_an_html_page_is_one_line(tiny_model, tmp_path):
    """Case 9: /v1/models answering HTML with status 200 raised AttributeError from inside the client."""
    peer = Peer(_verdict(), models=lambda: (200, b"<html><body>gateway</body></html>", "text/html"))
    try:
        p = run_script(*REF, "--model", tiny_model, "--judge-server", peer.url, "--out", tmp_path / "h", check=False)
    finally:
        peer.close()
    last = one_line_error(p)
    assert last.startswith("error: the server at") and "/models" in last


@pytest.mark.parametrize("text,words", [("{% for m in messages %}{{ m.content }\n", "not a Jinja template"),
                                        ("{{ raise_exception('no system role') }}", "does not render"),
                                        ("{% for m in messages %}{{ m.role }}{% endfor %}", "does not render"),
                                        ("", "is empty")])
def test_a_chat_template_that_cannot_work_is_one_line(tiny_model, tmp_path, text, words):
    """Case 10: a Jinja syntax error, a template that raises, one that drops the content, an empty file: each
    was a traceback after the model had loaded."""
    tpl = tmp_path / "chat.jinja"
    tpl.write_text(text)
    p = run_script("evaluate.py", "--model", tiny_model, "--benchmark", "pairwise", "--data", EVAL, "--limit", "2",
                   "--chat-template", tpl, "--out", tmp_path / "e", check=False)
    assert words in one_line_error(p)


def test_a_winner_map_whose_keys_are_spelled_otherwise_says_how(tmp_path):
    """Case 11: --winner-map 0=A,1=B on labels written 0.0/1.0 said only "must be 'A' or 'B', got 0.0"."""
    rows = write_rows(tmp_path / "f.jsonl", [{"prompt": "p", "response_a": "a", "response_b": "b", "winner": 0.0}])
    with pytest.raises(C.DataError, match=r"which --winner-map does not name .*--winner-map 0\.0=A,1\.0=B"):
        C.load_pairs(str(rows), winner_map=C.parse_winner_map("0=A,1=B"))


def test_the_idle_phase_warning_does_not_advise_what_is_already_on(tmp_path, caplog):
    """Case 13: with --dynamic-sampling on and every group equal, the warning still said 'see --dynamic-sampling'."""
    write_rows(tmp_path / "metrics.jsonl", [{"step": k, "reward_acc": 1.0, "zero_var_groups": 1.0, "all_right_groups": 1.0,
                                             "all_wrong_groups": 0.0} for k in range(1, 6)])
    C.log_signal(tmp_path, "judge phase", dynamic=True)
    C.log_signal(tmp_path, "judge phase", dynamic=False)
    warned = [r.getMessage() for r in caplog.records if "barely trained" in r.getMessage()]
    assert len(warned) == 2 and "see --dynamic-sampling" not in warned[0] and "max-extra-draws" in warned[0]
    assert "see --dynamic-sampling" in warned[1]


def test_reference_rubrics_read_like_every_data_input(tiny_model, tmp_path):
    """Case 14: chat-message prompts and OpenRubric-v2 column names were refused (after loading the model), and a
    second, different rubric for one prompt was dropped without a word."""
    rows = read_jsonl(EVAL)[:2]
    chats = write_rows(tmp_path / "chats.jsonl", [{**r, "prompt": [{"role": "user", "content": r["prompt"]}]} for r in rows])
    v2 = write_rows(tmp_path / "v2.jsonl", [{"instruction": [{"role": "user", "content": r["prompt"]}], "rubrics": r["rubric"]}
                                            for r in rows])
    p = run_script("evaluate.py", "--model", tiny_model, "--benchmark", "pairwise", "--data", chats, "--reference-rubrics",
                   v2, "--greedy", "--max-judge-tokens", "4", "--out", tmp_path / "ok")
    assert read_jsonl(tmp_path / "ok" / "rubrics.jsonl")[0]["rubric"] == rows[0]["rubric"], p.stderr[-500:]
    clash = write_rows(tmp_path / "clash.jsonl", [{"prompt": rows[0]["prompt"], "rubric": "1. One. [Hard Rule]"},
                                                  {"prompt": rows[0]["prompt"], "rubric": "1. Two. [Hard Rule]"}])
    p = run_script("evaluate.py", "--model", tiny_model, "--benchmark", "pairwise", "--data", EVAL, "--limit", "1",
                   "--reference-rubrics", clash, "--out", tmp_path / "clash", check=False)
    last = one_line_error(p)
    assert "clash.jsonl:2: field 'rubric' differs" in last and "clash.jsonl:1" in last
    assert "Loading weights" not in p.stderr  # refused before any model loads


def test_stages_that_load_a_model_take_threads():
    """Every stage that loads a model lists --threads in its --help."""
    for script in ("sft_warmup.py", "train_judge_phase.py", "train_rubric_phase.py", "evaluate.py", "policy_dpo.py",
                   "policy_grpo.py"):
        out = subprocess.run([sys.executable, str(ROOT / script), "--help"], cwd=ROOT, capture_output=True, text=True).stdout
        assert "--threads N" in out, script


def test_threads_flag_and_environment(tiny_model, tmp_path):
    """--threads N fixes the pool; a bad RUBRIC_ARM_THREADS is one line; --threads -1 is refused by the parser."""
    p = run_script("evaluate.py", "--model", tiny_model, "--benchmark", "pairwise", "--data", EVAL, "--limit", "1",
                   "--threads", "-1", "--out", tmp_path / "t", check=False)
    assert "argument --threads: must be 0 or more" in one_line_error(p)
    p = run_script("evaluate.py", "--model", tiny_model, "--benchmark", "pairwise", "--data", EVAL, "--limit", "1",
                   "--out", tmp_path / "t", env={"RUBRIC_ARM_THREADS": "many"}, check=False)
    assert "RUBRIC_ARM_THREADS='many'" in one_line_error(p)


def test_the_thread_pool_drops_to_one_beside_processes_that_take_every_core():
    """Adaptive threads (the busy-machine fix), measured for real: beside processes that keep every usable core
    busy, the pool drops to one thread within a few looks at /proc/stat."""
    import time

    import torch
    cores = C.usable_cores()
    if len(cores) < 2:
        pytest.skip("one usable core: nothing to adapt")
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in cores]
    saved = C.ADAPT_EVERY
    try:
        C.configure_threads()
        C.ADAPT_EVERY = 0.5
        t = time.monotonic()
        while time.monotonic() - t < 4 and torch.get_num_threads() != 1:
            C.adapt_threads()
            time.sleep(0.1)
        assert torch.get_num_threads() == 1
    finally:
        for h in hogs:
            h.kill()
            h.wait()
        C.ADAPT_EVERY = saved
        C.configure_threads(0)


def test_the_thread_pool_rule(monkeypatch):
    """The rule itself, on given CPU readings: one thread per usable core the others left free over the last
    look (this process's own CPU time not counted against it), at least one."""
    import torch
    n0 = torch.get_num_threads()
    clock = {"t": 100.0, "busy": 0.0, "mine": 0.0}
    monkeypatch.setattr(C, "usable_cores", lambda: [0, 1, 2, 3])
    monkeypatch.setattr(C, "_busy_cpu_seconds", lambda cores: clock["busy"])
    monkeypatch.setattr(C.time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(C.time, "process_time", lambda: clock["mine"])
    try:
        C.configure_threads()
        C.adapt_threads()  # the first look: a reading to compare the next with
        for others, mine, want in ((3.0, 1.0, 1), (2.0, 2.0, 2), (0.1, 3.9, 4), (0.8, 3.0, 3), (0.0, 4.0, 4)):
            clock["t"] += 10.0
            clock["busy"] += 10.0 * (others + mine)
            clock["mine"] += 10.0 * mine
            C.adapt_threads()
            assert torch.get_num_threads() == want, (others, mine)
    finally:
        C.configure_threads(0)
        torch.set_num_threads(n0)


def test_fault_round_rows_are_in_the_reliability_table():
    text = (ROOT / "docs" / "reliability.md").read_text()
    for name in ("test_a_served_model_that_changes_during_a_run_stops_it",
                 "test_a_rubric_cache_extended_through_another_served_model_is_refused",
                 "test_abbreviated_flags_are_refused_everywhere"):
        assert name in text, name
    assert Path(ROOT / "tests" / "test_fault_round.py").exists()


def test_serve_stopped_by_sigterm_during_a_long_request_exits_cleanly(tiny_model):
    """Case 12: SIGTERM while a request generates ended by SIGABRT ('terminate called without an active
    exception', exit 134); now 143 at once."""
    import signal
    import threading
    import time
    import urllib.request

    from test_server import start_server
    proc, url = start_server(tiny_model, "--served-name", "tiny", "--max-tokens", "100000")
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4000}).encode()

    def ask():
        try:
            urllib.request.urlopen(urllib.request.Request(url + "/chat/completions", data=body,
                                                          headers={"Content-Type": "application/json"}), timeout=60)
        except OSError:
            pass
    threading.Thread(target=ask, daemon=True).start()
    time.sleep(3)  # the request is generating
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143 and "terminate called" not in err, (proc.returncode, err[-1500:])


def test_alternate_flag_combinations_that_did_nothing_are_refused(tmp_path):
    """Case 15: --eval-every-phase without --eval-data ran with no evaluation and no message; a demo given its
    own --model or --data ignored them."""
    p = run_script("bash", "alternate.sh", "--eval-every-phase", "--data", TRAIN, "--out", tmp_path / "a", check=False)
    assert p.returncode == 2 and "--eval-every-phase evaluates on --eval-data FILE" in p.stderr
    p = run_script("bash", "alternate.sh", "--tiny-demo", "--model", "smollm2-135m", "--out", tmp_path / "b", check=False)
    assert p.returncode == 2 and "a demo brings its own model and data: leave out --model" in p.stderr
    # the default demo itself (what 'bash alternate.sh' with no arguments runs) passes these checks and starts
    p = run_script("bash", "alternate.sh", "--toy-demo", "--out", tmp_path / "demo", env={"RUBRIC_ARM_CHECK_FLAGS_ONLY": "1"},
                   check=False, timeout=300)
    assert "alternate.sh:" not in p.stderr and (tmp_path / "demo" / "schedule.txt").read_text().strip() == "judge-first"


def test_docs_say_a_dpo_rerun_needs_resume(tiny_model, tmp_path):
    """Case 16: docs/usage.md said a policy_dpo.py rerun resumes, the stage refused it without --resume: the docs
    now say what the stage does, and the stage says it."""
    assert "A rerun with `--resume`" in (ROOT / "docs" / "usage.md").read_text()
    out = tmp_path / "dpo"
    (out / "round1").mkdir(parents=True)
    p = run_script("policy_dpo.py", "--model", tiny_model, "--prompts", TRAIN, "--rubric-adapter", tmp_path,
                   "--judge-adapter", tmp_path, "--out", out, check=False)
    assert "--resume continues it" in one_line_error(p)
