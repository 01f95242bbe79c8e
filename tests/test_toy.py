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


@pytest.mark.expensive
def test_short_run_judge_accuracy_after_sft_is_above_chance(tmp_path):
    """From random weights to a judge that checks constraints: one seed, base + SFT, held-out pairs in
    both orders with generated rubrics (7-13 minutes on 2 cores: left out of the default run and CI,
    `bash tests/run.sh -m expensive` runs it)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import toy_ablation
    toy_ablation.main(["--out", str(tmp_path / "toy"), "--seeds", "0", "--schedules", "none", "--sft-lr", "2e-4"])
    res = json.loads((tmp_path / "toy" / "results.json").read_text())["SFT only"]["after SFT"][0]
    both = (res["accuracy"] + res["accuracy_swapped"]) / 2
    print(f"toy judge after SFT: accuracy {res['accuracy']:.3f} / swapped {res['accuracy_swapped']:.3f}, "
          f"format {res['format']:.3f}, flips {res['flip']:.3f}")
    assert both >= 0.58  # 120 judgements of 60 held-out pairs; chance 0.5 (measured here: 0.633)
    assert res["format"] > 0.9
