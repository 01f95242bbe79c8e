import json

import pytest

import common as C
import evaluate as E
from conftest import EVAL, read_jsonl, run_script, write_rows


def test_rewardbench_sections_weighted_by_official_counts():
    scores = {"alpacaeval-easy": [1, 1, 0, 1], "mt-bench-easy": [1, 0.5], "math-prm": [1, 0], "hep-cpp": [1, 1, 1, 0]}
    got = E.rewardbench_sections(scores)
    assert got["Chat"] == pytest.approx((100 * 0.75 + 28 * 0.75) / 128)
    assert got["Reasoning"] == pytest.approx((984 * 0.5 + 164 * 0.75) / (984 + 164))
    assert "Safety" not in got and "Chat Hard" not in got


def test_rm_bench_scores_by_hand():
    m1 = [[1, 0, 0], [1, 1, 0], [1, 1, 1]]    # wins the diagonal and below, loses above
    m2 = [[1, 1, 0.5], [0, 1, 1], [1, 0, 0]]
    got = E.rm_bench_scores([m1, m2])
    assert got["hard"] == pytest.approx((0 + 0 + 0 + 1 + 0.5 + 1) / 6)
    assert got["normal"] == pytest.approx((3 + 2) / 6)
    assert got["easy"] == pytest.approx((3 + 1) / 6)
    assert got["avg"] == pytest.approx((got["hard"] + got["normal"] + got["easy"]) / 3)


def test_rewardbench_xstest_weights_are_the_official_constants():
    # rewardbench/constants.py EXAMPLE_COUNTS (the official code): 154 should-refuse, 250 should-respond
    assert E.REWARDBENCH_COUNTS["xstest-should-refuse"] == 154
    assert E.REWARDBENCH_COUNTS["xstest-should-respond"] == 250
    got = E.rewardbench_sections({"xstest-should-refuse": [1.0], "xstest-should-respond": [0.0]})
    assert got["Safety"] == pytest.approx(154 / 404)


def test_best_of_n_score_by_hand():
    # official: 1 / (number tied at the top) when the chosen one is at the top; undecided = tied
    assert E.best_of_n_score([[1, 1, 1], [1, 0, 1], [1, 1, 0.5], [0.5, 0.5, 1]]) == pytest.approx((1 + 0 + 1 / 2 + 1 / 3) / 4)


def test_majority_and_scores():
    assert C.majority(["A", "B", "A"]) == "A"
    assert C.majority(["A", "B", None, None]) is None  # tie
    assert C.majority([None, None, "B"]) == "B"
    assert E.score_of(None, "A") == 0.5 and E.score_of("A", "A") == 1.0 and E.score_of("B", "A") == 0.0
    assert E.score_of(None, "A", strict=True) == 0.0


def _records(bench, verdict_of, n=40, seed=0):
    """Both fixed orders of n comparisons, judged by verdict_of(order) -> 'A' | 'B' | None."""
    recs = []
    for i in range(n):
        for order in (E.FIRST, E.SECOND):
            chosen_is = "A" if order == E.FIRST else "B"
            v = verdict_of(order)
            recs.append({"cid": f"{bench}/{i}", "bench": bench, "unit": str(i), "subset": bench, "slot": None,
                         "order": order, "chosen_is": chosen_is, "verdict": v, "too_long": False,
                         "score": E.score_of(v, chosen_is, bench in E.STRICT)})
    return recs


def test_position_table_sees_a_judge_that_always_answers_a():
    recs = _records("if-test", lambda order: "A")
    views = E.order_views(recs, seed=0)
    by_order = {o: E.paper_columns({"if-test": E.aggregate("if-test", r)}) for o, r in views.items()}
    table = E.position_table(by_order)
    assert table["if-test"]["fixed1"] == 1.0 and table["if-test"]["fixed2"] == 0.0
    assert 0.25 < table["if-test"]["mixed"] < 0.75  # the seeded coin shows the chosen one first about half the time
    assert table["if-test"]["variation"] == 1.0 and table["average_variation"] == 1.0
    assert E.flip_rate(recs) == 1.0
    # a judge that reads the content: no variation, no flips
    fair = _records("if-test", lambda order: "A" if order == E.FIRST else "B")
    views = E.order_views(fair, seed=0)
    table = E.position_table({o: E.paper_columns({"if-test": E.aggregate("if-test", r)}) for o, r in views.items()})
    assert table["average_variation"] == 0.0 and E.flip_rate(fair) == 0.0


def test_rm_bench_counts_only_a_strict_win():
    # every verdict unparseable: the official RM-Bench scorer gives 0, not 0.5
    recs = [{"cid": f"m/{i}{j}", "bench": "rm-bench", "unit": "m", "subset": "chat", "slot": [i, j], "order": E.FIRST,
             "chosen_is": "A", "verdict": None, "too_long": False, "score": E.score_of(None, "A", strict=True)}
            for i in range(3) for j in range(3)]
    res = E.aggregate("rm-bench", recs)
    assert res["domains"]["chat"]["avg"] == 0.0 and res["unparsed"] == 9
    assert "scored 0, the official rule" in E.markdown_table(E.paper_columns({"rm-bench": res}), "x", {"rm-bench": res})


def test_mixed_order_is_a_fixed_coin_per_pair():
    orders = [E.mixed_order(f"b/{i}", 0) for i in range(400)]
    assert orders == [E.mixed_order(f"b/{i}", 0) for i in range(400)]  # does not depend on the batch
    assert 0.4 < orders.count(E.FIRST) / 400 < 0.6
    assert orders != [E.mixed_order(f"b/{i}", 1) for i in range(400)]


def write_schema_files(d):
    files = {
        "rewardbench": [{"id": i, "prompt": f"q{i % 2}", "chosen": "good", "rejected": "bad",
                         "subset": s, "chosen_model": "m", "rejected_model": "n"}
                        for i, s in enumerate(["alpacaeval-easy", "mt-bench-hard", "math-prm"])],
        "rewardbench2": [{"id": "p1", "prompt": "q", "chosen": ["c"], "rejected": ["r1", "r2", "r3"],
                          "num_correct": 1, "num_incorrect": 3, "total_completions": 4, "models": [], "subset": "Focus"},
                         {"id": "p2", "prompt": "q2", "chosen": ["c1", "c2"], "rejected": ["r1", "r2"],
                          "num_correct": 2, "num_incorrect": 2, "total_completions": 4, "models": [], "subset": "Ties"}],
        "rm-bench": [{"id": "m1", "prompt": "q", "chosen": ["a", "b", "c"], "rejected": ["x", "y", "z"], "domain": "chat"}],
        "ppe-human": [{"prompt": "q", "response_1": "a", "response_2": "b", "winner": "model_b", "if_prompt": True},
                      {"prompt": "q", "response_1": "a", "response_2": "b", "winner": "tie", "if_prompt": False},
                      {"prompt": "q3", "response_1": "a", "response_2": "b", "winner": "model_a", "if_prompt": False}],
        "ppe-ifeval": [{"question_id": "7", "prompt": "Write without commas.", "scores": [1, 0, 0, 1],
                        "sampled_conflict_pairs": [[0, 1], [2, 3]], "model_name": "m",
                        "response_1": "ok text", "response_2": "bad, text", "response_3": "bad, too", "response_4": "fine"}],
        "helpsteer3": [{"context": [{"role": "user", "content": "hi"}], "response1": "a", "response2": "b",
                        "overall_preference": 2},
                       {"context": [{"role": "user", "content": "hi"}], "response1": "a", "response2": "b",
                        "overall_preference": 0},
                       {"context": [{"role": "user", "content": "yo"}], "response1": "a", "response2": "b",
                        "overall_preference": -1}],
        "pairwise": [{"id": "g1", "prompt": "q", "response_a": "a", "response_b": "b", "winner": "B"}],
    }
    return {k: write_rows(d / f"{k}.jsonl", v) for k, v in files.items()}


def test_every_loader(tmp_path):
    f = write_schema_files(tmp_path)
    rb = E.load_benchmark("rewardbench", str(f["rewardbench"]))
    assert [(c.subset, c.chosen, c.rejected) for c in rb][0] == ("alpacaeval-easy", "good", "bad")
    rb2 = E.load_benchmark("rewardbench2", str(f["rewardbench2"]))
    assert len(rb2) == 3 + 2 * 2  # best-of-4: chosen vs each rejected; Ties: every correct one
    assert {c.unit for c in rb2} == {"p1/0", "p2/0", "p2/1"}
    rmb = E.load_benchmark("rm-bench", str(f["rm-bench"]))
    assert sorted(tuple(c.slot) for c in rmb) == [(i, j) for i in range(3) for j in range(3)]
    ppe = E.load_benchmark("ppe-human", str(f["ppe-human"]))
    assert [(c.chosen, c.subset) for c in ppe] == [("b", "ifeval"), ("a", "other")]  # the tie is dropped
    ppei = E.load_benchmark("ppe-ifeval", str(f["ppe-ifeval"]))  # PPE's correctness pairs: the correct one is chosen
    assert [(c.chosen, c.rejected, c.unit) for c in ppei] == [("ok text", "bad, text", "7/0"), ("fine", "bad, too", "7/1")]
    assert E.paper_columns({"ppe-ifeval": {"accuracy": 0.5}}) == {"PPE-IF": 0.5}
    hs3 = E.load_benchmark("helpsteer3", str(f["helpsteer3"]))
    assert [c.chosen for c in hs3] == ["b", "a"] and hs3[0].prompt == "user: hi"
    gen = E.load_benchmark("followbench", str(f["pairwise"]))
    assert (gen[0].chosen, gen[0].rejected) == ("b", "a")


def test_schema_mismatch_names_benchmark_and_field(tmp_path):
    path = write_rows(tmp_path / "rb.jsonl", [{"prompt": "q", "chosen": "a", "subset": "x"}])
    with pytest.raises(C.DataError, match=r"benchmark rewardbench: .*rb\.jsonl:1: missing field 'rejected'"):
        E.load_benchmark("rewardbench", str(path))
    with pytest.raises(C.DataError, match="benchmark ifbench: needs a local file"):
        E.load_benchmark("ifbench", None)


def test_aggregate_and_paper_columns():
    recs = [{"subset": "alpacaeval-easy", "score": 1, "unit": "1", "slot": None, "verdict": "A", "too_long": False},
            {"subset": "mt-bench-hard", "score": 0.5, "unit": "2", "slot": None, "verdict": None, "too_long": False}]
    res = {"rewardbench": E.aggregate("rewardbench", recs)}
    rb2 = [{"subset": "Precise IF", "unit": "p", "score": s, "slot": None, "verdict": "A", "too_long": False}
           for s in (1, 1, 0)] + [{"subset": "Focus", "unit": "q", "score": 1, "slot": None, "verdict": "A", "too_long": False}]
    res["rewardbench2"] = E.aggregate("rewardbench2", rb2)
    cols = E.paper_columns(res)
    assert cols == {"Chat": 1.0, "ChatH": 0.5, "RB2-PIF": 0.0, "RB2-Foc": 1.0}
    table = E.markdown_table(cols, "ours", res)
    assert "| ours | 100.0 | 50.0 | - |" in table and "Rubric-ARM (paper) | 89.4" in table


def test_evaluate_end_to_end_with_rubric_reuse_swap_and_votes(tiny_model, tmp_path):
    rows = read_jsonl(EVAL)[:3]
    # three prompts, each with two pairs: rubrics must be generated once per distinct prompt
    data = [{**r, "id": f"{r['id']}-{k}"} for r in rows for k in range(2)]
    path = write_rows(tmp_path / "pairs.jsonl", data)
    args = ["evaluate.py", "--model", tiny_model, "--benchmark", f"pairwise={path}", "--swap", "--votes", "3",
            "--max-rubric-tokens", "8", "--max-judge-tokens", "8", "--out", tmp_path / "ev"]
    p = run_script(*args)
    out = tmp_path / "ev"
    res = json.loads((out / "results.json").read_text())
    assert res["efficiency"]["rubrics_generated"] == 3
    assert len(read_jsonl(out / "rubrics.jsonl")) == 3
    preds = read_jsonl(out / "predictions.jsonl")
    assert len(preds) == 6 * 2  # every pair in both fixed orders
    assert all(len(r["judge_texts"]) == 3 and len(r["votes"]) == 3 for r in preds)
    for r in preds:
        assert r["votes"] == [C.parse_verdict(t) for t in r["judge_texts"]]
        assert r["verdict"] == C.majority(r["votes"]) and r["score"] == E.score_of(r["verdict"], r["chosen_is"])
        assert r["chosen_is"] == ("A" if r["order"] == E.FIRST else "B")
    assert res["summary"]["unparsed"] == sum(r["verdict"] is None for r in preds)
    assert set(res["by_order"]) == {"fixed1", "fixed2", "mixed"} and "Pairwise" not in res["paper_columns"]
    assert "pairwise" in res["paper_columns"] and "average_variation" in res["position_bias"]
    assert "| ours |" in (out / "table.md").read_text() and "Position bias" in p.stdout
    # the unit of the intervals: each pair's two orders averaged
    by_pair = E.pair_scores(out)
    assert len(by_pair) == 6 and E.pair_scores(tmp_path) is None
    for unit, score in by_pair.items():
        assert score == sum(r["score"] for r in preds if r["unit"] == unit) / 2
    # a rerun reuses the cached rubrics: none generated
    run_script(*args)
    assert json.loads((out / "results.json").read_text())["efficiency"]["rubrics_generated"] == 0


def test_evaluate_no_rubric_baseline_on_bundled_eval(tiny_model, tmp_path):
    run_script("evaluate.py", "--model", tiny_model, "--benchmark", "pairwise", "--data", EVAL, "--limit", "6",
               "--no-rubric", "--max-judge-tokens", "6", "--out", tmp_path / "ev")
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert res["efficiency"]["rubrics_generated"] == 0 and not (tmp_path / "ev" / "rubrics.jsonl").exists()
    assert res["benchmarks"]["pairwise"]["n"] == 6
    # 6 tokens stop the tiny judge before any end-of-turn: every trajectory is reported cut, in the summary and table
    preds = read_jsonl(tmp_path / "ev" / "predictions.jsonl")
    assert res["summary"]["cut_off"] == sum(r["cut_off"] for r in preds) == 6
    assert "judge trajectories cut at --max-judge-tokens: 6;" in (tmp_path / "ev" / "table.md").read_text()


def test_evaluate_help_lists_benchmarks():
    p = run_script("evaluate.py", "--help")
    for name in ("rewardbench", "rewardbench2", "rm-bench", "ppe-ifeval", "helpsteer3", "followbench", "infobench", "ifbench",
                 "--votes", "--swap", "--no-rubric"):
        assert name in p.stdout


def test_rubric_sensitivity_judges_the_same_pairs_under_each_rubric(tiny_model, always_a_judge, tmp_path):
    """--rubric-sensitivity: the reference rubric, another prompt's (never its own), an empty one and the
    generator's rubric, in that order, each a run of its own over the same pairs, and paired differences that match the runs' scores."""
    rows = read_jsonl(EVAL)[:4]
    path = write_rows(tmp_path / "pairs.jsonl", rows)
    common = ["evaluate.py", "--model", tiny_model, "--benchmark", f"pairwise={path}", "--max-rubric-tokens", "8",
              "--max-judge-tokens", "8"]
    p = run_script(*common, "--rubric-adapter", always_a_judge, "--reference-rubrics", path, "--rubric-sensitivity",
                   "--out", tmp_path / "sens")
    out = tmp_path / "sens"
    rep = json.loads((out / "sensitivity.json").read_text())
    assert [r["name"] for r in rep["rows"]] == ["own", "other", "empty", "generator"]
    own = {r["prompt"]: r["rubric"] for r in read_jsonl(out / "own" / "rubrics.jsonl")}
    other = {r["prompt"]: r["rubric"] for r in read_jsonl(out / "other" / "rubrics.jsonl")}
    assert own == {r["prompt"]: r["rubric"] for r in rows}
    assert sorted(other.values()) == sorted(own.values()) and all(other[q] != own[q] for q in own)
    assert all(r["rubric"] == "" for r in read_jsonl(out / "empty" / "rubrics.jsonl"))
    assert json.loads((out / "generator" / "results.json").read_text())["efficiency"]["rubrics_generated"] == 4
    for d in rep["differences"]:
        a, b = d["comparison"].split(" minus ")
        sa, sb = E.pair_scores(out / a), E.pair_scores(out / b)
        assert d["difference"] == pytest.approx(sum(sa[u] - sb[u] for u in sa) / len(sa))
    assert "Rubric sensitivity" in p.stdout
    # without a generator of its own there is no generator row; without reference rubrics, one line
    run_script(*common, "--reference-rubrics", path, "--rubric-sensitivity", "--out", tmp_path / "plain")
    assert [r["name"] for r in json.loads((tmp_path / "plain" / "sensitivity.json").read_text())["rows"]] == \
        ["own", "other", "empty"]
    bad = run_script(*common, "--rubric-sensitivity", "--out", tmp_path / "bad", check=False)
    assert bad.returncode != 0 and "needs --reference-rubrics" in bad.stderr and "Traceback" not in bad.stderr
