"""The bundled instruction-following task: labels from the official checkers, pairs that differ only
where one constraint decides, and no cue a judge could use without reading the prompt."""

import json
import random

import pytest

import baselines
import if_preference_task as T
from conftest import ROOT, read_jsonl

SPLITS = {s: read_jsonl(ROOT / "data" / f"if_{s}.jsonl") for s in ("train", "test", "ood")}


@pytest.fixture(scope="module")
def regs():
    return T._registries()


@pytest.mark.parametrize("split", ["train", "test", "ood"])
def test_every_label_is_the_official_checkers_and_only_the_deciding_constraint_differs(split, regs):
    rows = SPLITS[split]
    for r in rows if split != "train" else rows[::10]:
        cs = [T.Constraint(c["id"], c["registry"], c["kwargs"]) for c in r["constraints"]]
        ok_a, ok_b = T._check(regs, cs, r["response_a"]), T._check(regs, cs, r["response_b"])
        assert (ok_a, ok_b) == (r["satisfied_a"], r["satisfied_b"]), r["id"]
        winner, loser = (ok_a, ok_b) if r["winner"] == "A" else (ok_b, ok_a)
        assert all(winner), r["id"]
        failed = [c.iid for c, ok in zip(cs, loser) if not ok]
        assert failed == [r["decisive"]], r["id"]  # exactly one constraint tells the two apart
        assert T.check_row(r, regs)
        # the gatekeeper is read off the rubric, not off the responses: no verdict before the analysis
        assert "Identified Gatekeeper Criterion: Criterion 1 [Hard Rule]\n" in r["judge_trajectory"], r["id"]


def test_the_splits_keep_their_tasks_and_types_apart():
    train_tasks = {r["prompt"].split(". ")[0] for r in SPLITS["train"]}
    test_tasks = {r["prompt"].split(". ")[0] for r in SPLITS["test"]}
    assert not train_tasks & test_tasks
    assert {c["registry"] for r in SPLITS["ood"] for c in r["constraints"]} == {"ifbench"}
    assert {c["registry"] for r in SPLITS["train"] + SPLITS["test"] for c in r["constraints"]} == {"ifeval"}
    assert len(SPLITS["train"]) >= 2000 and len(SPLITS["test"]) >= 200 and len(SPLITS["ood"]) >= 200
    for rows in SPLITS.values():  # positions balanced
        assert abs(sum(r["winner"] == "A" for r in rows) / len(rows) - 0.5) < 0.06


def test_a_judge_that_never_reads_the_prompt_stays_near_chance():
    """A prompt-blind classifier fit on the train split, and one-line surface rules, score at most 60%
    on the held-out splits (both A/B orders of every pair)."""
    report = baselines.evaluate(ROOT / "data" / "if_train.jsonl", [ROOT / "data" / "if_test.jsonl",
                                                                    ROOT / "data" / "if_ood.jsonl"])
    assert report["train_accuracy"] > 0.6  # it can fit what it sees: the held-out figure is not a broken fit
    for path, res in report["eval"].items():
        for name in ["prompt-blind classifier", *baselines.RULES]:
            acc = res[name]["accuracy"]
            assert max(acc, 1 - acc) <= 0.60, (path, name, acc)  # nor does the reverse rule win


def test_the_prompt_blind_classifier_finds_a_cue_when_there_is_one(tmp_path):
    """The check can fail: pairs whose winner always carries a marker line are caught."""
    rows = SPLITS["test"][:120]
    rng = random.Random(0)
    leaky = []
    for r in rows:
        a, b = r["response_a"], r["response_b"]
        if r["winner"] == "A":
            a += "\nThank you."
        else:
            b += "\nThank you."
        if rng.random() < 0.5:
            a, b, w = b, a, "B" if r["winner"] == "A" else "A"
        else:
            w = r["winner"]
        leaky.append({**r, "response_a": a, "response_b": b, "winner": w})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in leaky[:80]))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(x) + "\n" for x in leaky[80:]))
    report = baselines.evaluate(tmp_path / "train.jsonl", [tmp_path / "test.jsonl"])
    res = report["eval"][str(tmp_path / "test.jsonl")]
    assert res["prompt-blind classifier"]["accuracy"] > 0.9 and res["more lines wins"]["accuracy"] > 0.9


def test_minimal_pair_edits_draw_named_and_sibling_forms_from_one_pool(regs):
    """Each deciding form wins as often as it loses: over many draws, the winner's postscript marker
    is P.S. about half the time, and the loser's the other marker."""
    body = ["The morning was quiet.", "Birds sang in the trees.", "A cat slept by the door."]
    wins = []
    for k in range(200):
        made = T._postscript(random.Random(k), body)
        w, lo = T.Draft(body=list(body)), T.Draft(body=list(body))
        made.win(w)
        made.lose(lo)
        wins.append(w.render().split("\n\n")[-1].split()[0])
        assert lo.render().split("\n\n")[-1].split()[0] != wins[-1]
    assert 0.4 < wins.count("P.S.") / len(wins) < 0.6


def test_build_reuses_cached_texts_and_reproduces_the_bundled_rows(tmp_path):
    """A rebuild from the committed text samples gives the committed rows (no model run)."""
    (tmp_path / ".if_task_texts.jsonl").write_bytes((ROOT / "data" / ".if_task_texts.jsonl").read_bytes())
    settings = json.loads((ROOT / "data" / "if_task_manifest.json").read_text())["settings"]
    T.build(tmp_path, settings["sizes"], settings["seed"], settings["model"], 8, settings["max_new_tokens"],
            settings["temperature"], settings["dtype"])
    for split in ("test", "ood"):
        assert (tmp_path / f"if_{split}.jsonl").read_text() == (ROOT / "data" / f"if_{split}.jsonl").read_text()
