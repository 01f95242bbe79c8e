"""The toy task behind data/ and the learning proof of bench/toy_ablation.py."""

import json
import sys

import pytest

import toy_task
from conftest import ROOT, TRAIN, read_jsonl


def test_checkers_by_hand():
    C = toy_task.Constraint
    assert C("include", "river").check("A calm river, then stone.")
    assert not C("include", "river").check("the rivers run")
    assert C("max_words", 3).check("one two three") and not C("max_words", 3).check("one two three four")
    assert C("lowercase").check("all lower here.") and not C("lowercase").check("Not lower")
    assert C("forbid_letter", "z").check("calm sea") and not C("forbid_letter", "z").check("hazy")


@pytest.mark.parametrize("kinds", [toy_task.KINDS, ("include", "lowercase")])
def test_generated_labels_agree_with_the_checkers(kinds):
    rows = toy_task.make_split(300, 5, "t", kinds)
    assert all(toy_task.check_label(r) for r in rows)
    assert {r["winner"] for r in rows} == {"A", "B"}
    for r in rows[:20]:  # the reference rubric lists exactly the constraints, tagged
        assert r["rubric"].count("[Hard Rule]") == len(r["constraints"])
    assert all(toy_task.check_label(r) for r in read_jsonl(TRAIN))  # the bundled demo data too


@pytest.mark.slow
def test_short_run_judge_accuracy_after_sft_is_above_chance(tmp_path):
    """From random weights to a judge that checks constraints: one seed, base + SFT, held-out pairs in
    both orders with generated rubrics (about 7 minutes on 2 cores)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import toy_ablation
    toy_ablation.main(["--out", str(tmp_path / "toy"), "--seeds", "0", "--schedules", "none"])
    res = json.loads((tmp_path / "toy" / "results.json").read_text())["SFT only"]["after SFT"][0]
    print(f"toy judge after SFT: accuracy {res['accuracy']:.3f}, format {res['format']:.3f}, flips {res['flip']:.3f}")
    assert res["accuracy"] >= 0.6  # 120 judgements; chance is 0.5
    assert res["format"] > 0.9
