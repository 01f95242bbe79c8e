"""The toy task behind data/ and the learning proof of experiments/toy_ablation.py."""

import json

import pytest

import baselines
import common as C
import toy_task
from conftest import EVAL, TRAIN, read_jsonl


def test_checkers_by_hand():
    C = toy_task.Constraint
    assert C("include", "river").check("A calm river, then stone.")
    assert not C("include", "river").check("the rivers run")
    assert C("max_words", 3).check("one two three") and not C("max_words", 3).check("one two three four")
    assert C("lowercase").check("all lower here.") and not C("lowercase").check("Not lower")
    assert C("forbid_letter", "z").check("calm sea") and not C("forbid_letter", "z").check("hazy")
    assert C("min_words", 3).check("one two three") and not C("min_words", 3).check("one two")
    assert C("capital_start").check("Calm sea.") and not C("capital_start").check("calm Sea.")
    assert C("require_letter", "x").check("a fox.") and not C("require_letter", "x").check("a dog.")


def test_pairs_are_minimal_and_every_edit_cuts_both_ways():
    """One edit separates the two sides, the loser fails the deciding constraint alone, and each edit
    (more words, a capital first letter, a rare letter) is on the winner's side about half the time."""
    rows = toy_task.make_split(2000, 7, "m")
    sides = {"longer": [], "capital": [], "rare letter": []}
    for r in rows:
        win, lose = (r["response_a"], r["response_b"]) if r["winner"] == "A" else (r["response_b"], r["response_a"])
        assert win != lose and r["decisive"] in toy_task.KINDS
        w, x = win.split(), lose.split()
        if len(w) != len(x):
            sides["longer"].append(len(w) > len(x))
        else:  # same length: at most one word differs, or only the first letter's case
            assert sum(a != b for a, b in zip(w, x)) == 1, (win, lose)
        if win[0].isupper() != lose[0].isupper():
            sides["capital"].append(win[0].isupper())
        rare = [sum(ch in t.lower() for ch in toy_task.LETTERS) for t in (win, lose)]
        if rare[0] != rare[1]:
            sides["rare letter"].append(rare[0] > rare[1])
    for name, won in sides.items():
        assert len(won) > 200 and 0.44 < sum(won) / len(won) < 0.56, (name, len(won), sum(won) / len(won))


def test_a_judge_that_never_reads_the_prompt_stays_near_chance(tmp_path):
    """The test of tests/test_if_task.py for this task: a prompt-blind classifier fit on the train split
    and one-line surface rules stay at or below 60% on held-out pairs (both orders), on the bundled files
    and on a larger draw of the same generator."""
    big = {}
    for name, n, seed in (("train", 1200, 31), ("eval", 400, 32)):
        big[name] = tmp_path / f"{name}.jsonl"
        big[name].write_text("".join(json.dumps(r) + "\n" for r in toy_task.make_split(n, seed, name)))
    for train, held_out in ((TRAIN, EVAL), (big["train"], big["eval"])):
        report = baselines.evaluate(train, [held_out])
        assert report["train_accuracy"] > 0.6  # it fits what it sees
        for name in ["prompt-blind classifier", *baselines.RULES]:
            acc = report["eval"][str(held_out)][name]["accuracy"]
            assert max(acc, 1 - acc) <= 0.60, (held_out, name, acc)


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
    both orders with generated rubrics (about 17 minutes on 2 cores: left out of the default run and CI,
    `bash tests/run.sh -m expensive` runs it). Measured on minimal pairs: 49% with plain pretraining,
    55% with the deciding tokens weighted, 66% once the trajectories named the gatekeeper from the rubric
    and quoted the first word before the case verdict (task format of this commit)."""
    import toy_ablation
    toy_ablation.main(["--out", str(tmp_path / "toy"), "--seeds", "0", "--schedules", "none", "--sft-lr", "2e-4"])
    res = json.loads((tmp_path / "toy" / "results.json").read_text())["SFT only (Rubric-RM)"]["after SFT"][0]
    both = (res["accuracy"] + res["accuracy_swapped"]) / 2
    print(f"toy judge after SFT: accuracy {res['accuracy']:.3f} / swapped {res['accuracy_swapped']:.3f}, "
          f"format {res['format']:.3f}, flips {res['flip']:.3f}")
    assert both >= 0.60  # 400 judgements of 200 held-out pairs; chance 0.5
    assert res["format"] > 0.9
    # the base reads the letter case (its held-out analysis of Response A, teacher-forced)
    check = json.loads((tmp_path / "toy" / "base" / "held_out_analysis.json").read_text())
    assert check["capital_start"] >= 0.9 and check["lowercase"] >= 0.9


def test_trajectory_decides_after_its_analysis():
    """The gatekeeper comes from the rubric alone (the same whichever response is A), and the case
    verdicts quote their evidence first: nothing before the analysis depends on the responses."""
    for r in toy_task.make_split(60, 5, "g"):
        t = r["judge_trajectory"]
        assert "Identified Gatekeeper Criterion: Criterion 1 [Hard Rule]" in t
        assert all(a > t.index("--- Analysis ---") for a, _ in toy_task.decision_spans(r))
        for side in ("a", "b"):
            first = r[f"response_{side}"].split()[0].strip(".")
            if any(k in ("lowercase", "capital_start") for k, _ in r["constraints"]):
                assert f'it begins with "{first}"' in t


def test_decision_spans_are_what_changes_when_the_responses_trade_places(tok):
    """The toy pretraining weighs these: the claims about A and B and the winner, none of the layout."""
    import sft_warmup
    for r in toy_task.make_split(50, 9, "d"):
        t = r["judge_trajectory"]
        spans = toy_task.decision_spans(r)
        marked = "".join(t[a:b] for a, b in spans)
        assert spans and "Not s" in marked and marked.endswith(r["winner"])
        assert not any(t[a:b].strip("-* \n") and a < t.index("--- Analysis ---") + 16 and b > t.index("--- Analysis ---")
                       for a, b in spans)
        w = sft_warmup.decision_weights(tok, t, 5.0, spans)
        assert len(w) == len(C.completion_ids(tok, t)) and 0 < sum(x == 5.0 for x in w) < len(w) / 3


def test_the_bundled_toy_base_was_pretrained_on_this_task(tmp_path):
    """The default demo's base (data/toy_base) records the task version it learnt; demo-splits writes
    the demo's splits only for that version and refuses a base made for another one."""
    paths = toy_task.demo_splits(tmp_path / "splits")
    assert {k: len(C.read_jsonl_resumable(p)) for k, p in paths.items()} == {k: n for k, (n, _) in toy_task.DEMO_SPLITS.items()}
    stale = tmp_path / "stale_base"
    stale.mkdir()
    rec = json.loads((toy_task.TOY_BASE / "made_by.json").read_text())
    (stale / "made_by.json").write_text(json.dumps({**rec, "task_fingerprint": "0" * 16}))
    with pytest.raises(SystemExit, match="made_by.json: field 'task_fingerprint'.*another version of the task"):
        toy_task.demo_splits(tmp_path / "other", stale)


def test_copy_check_reads_the_token_of_the_required_word(tmp_path):
    """experiments/toy_copy_check.py scores the model's next token where the rubric and the judge's gatekeeper
    line repeat the required word: that position must hold the word itself, in the bundled base's
    tokenizer, for every held-out row; the script writes one JSON row per base with rates in [0, 1]."""
    import toy_copy_check
    tok = C.load_tokenizer(str(toy_task.TOY_BASE))
    rows = toy_task.make_split(60, 400, "eval", ("include", "lowercase", "capital_start"))
    for r in rows:
        word = dict(r["constraints"])["include"]
        for text in (r["rubric"], r["judge_trajectory"]):
            at = text.index(f'the word "{word}"') + len('the word "')
            ids = C.text_ids(tok, text)
            piece = tok.decode([ids[toy_copy_check.token_at(tok, ids, at)]])
            assert piece.lstrip('" ').startswith(word[:len(piece.lstrip('" '))]) and piece.strip('" '), (word, piece)
    out = tmp_path / "copy.json"
    rep = toy_copy_check.main(["--base", str(toy_task.TOY_BASE), "--rows", "12", "--out", str(out)])
    assert json.loads(out.read_text()) == rep and rep["rows"] == 12 and len(rep["bases"]) == 1
    b = rep["bases"][0]
    assert b["rubric_copies_word"]["n"] == 12 and 0 <= b["rubric_copies_word"]["rate"] <= 1
    assert b["judge_copies_word"]["n"] == sum(r["constraints"][0][0] == "include" for r in toy_task.make_split(
        200, 400, "eval", ("include", "lowercase", "capital_start"))[:12])
    assert set(b["response_a_analysis_right"]) >= {"all", "include"} and 0 <= b["copy_exercises"]["token_rate"] <= 1


def test_copy_exercises_ask_for_the_words_they_answer_with():
    """toy_ablation --copy-curriculum: each exercise's target is the word list its request holds, then
    end of turn; the lists vary and the same seed gives the same exercises."""
    import toy_ablation
    tok = C.load_tokenizer(str(toy_task.TOY_BASE))
    ex = toy_ablation.copy_examples(tok, 20, 3)
    assert ex == toy_ablation.copy_examples(tok, 20, 3) and ex != toy_ablation.copy_examples(tok, 20, 4)
    answers = set()
    for prompt, target, weights in ex:
        assert target[-1] == tok.eos_token_id and weights == [1.0] * len(target)
        answer = tok.decode(target[:-1])
        assert f"Repeat these words: {answer}" in tok.decode(prompt)
        assert 3 <= len(answer.split()) <= 16 and all(w.strip(".").lower() in toy_task.WORDS + toy_task.FILLER
                                                      for w in answer.split())
        answers.add(answer)
    assert len(answers) == 20


def test_a_given_base_must_record_the_runs_pretraining_settings(tmp_path):
    """toy_ablation --base DIR skips pretraining only for a base exported with the same pretraining
    settings (made_by.json); another setting is refused with the field named."""
    import toy_ablation
    cfg = {**toy_ablation.config(), "pretrain_steps": toy_ablation.PRETRAIN["steps"], "sft_lr": toy_ablation.SFT_LR}
    assert toy_ablation.given_base(toy_task.TOY_BASE, cfg) == toy_task.TOY_BASE
    for change, field in (({"pretrain_steps": 4000}, "config.pretrain_steps"), ({"base_seed": 1}, "config.base_seed"),
                          ({"model": {**toy_ablation.MODEL, "layers": 4}}, "config.model")):
        with pytest.raises(SystemExit, match=f"field '{field}' is .* not the base of these settings"):
            toy_ablation.given_base(toy_task.TOY_BASE, {**cfg, **change})
    with pytest.raises(SystemExit, match="made_by.json: missing"):
        toy_ablation.given_base(tmp_path, cfg)


def test_implicit_task_rows_check_and_hold_out_their_prompts():
    """The implicit variant: labels agree with the checkers (the implied rule included); training rows name the
    implied rule in their rubric exactly when it decides, about a third of the time; RL and held-out rows are all
    decided by it, their rubric the complete reference; held-out prompts never occur in a training split."""
    train = toy_task.make_implicit_split(1500, 3, "t", annotated=True, held_out=False)
    held = toy_task.make_implicit_split(300, 4, "h", annotated=False, held_out=True)
    assert all(toy_task.check_label(r) for r in train + held)
    named = [r for r in train if any(k in ("lowercase", "capital_start") for k, _ in r["constraints"])]
    assert all(r["decisive"].startswith("implied") for r in named)
    assert all(not r["decisive"].startswith("implied") for r in train if r not in named)
    assert 0.28 < len(named) / len(train) < 0.39
    assert all(r["decisive"].startswith("implied") and r["rubric"] == r["reference_rubric"] for r in held)
    assert not {r["prompt"] for r in held} & {r["prompt"] for r in train}
    for r in train + held:  # the request never states the case rule: only its cue implies it
        assert "lowercase" not in r["prompt"] and "capital" not in r["prompt"]
        assert r["cue"] in toy_task.IMPLIED_CUES[r["implied"][0]]


def test_two_rule_task_rows_check_balance_and_hold_out_their_prompts():
    """The two-rule variant: labels agree with the checkers; training rubrics name a case rule a third of the time
    and an ending rule END_SHARE of the time, each exactly when it decides; RL and held-out splits hold the four
    implied rules a quarter each, all deciding, with the full reference rubric; the other family's feature is
    shared by both responses; held-out prompts never occur in a training split; no request states its rule."""
    train = toy_task.make_two_rule_split(2000, 3, "t", annotated=True, held_out=False)
    held = toy_task.make_two_rule_split(400, 4, "h", annotated=False, held_out=True)
    assert all(toy_task.check_label(r) for r in train + held)
    for fam, share in (("case", toy_task.ANNOTATED_SHARE), ("ending", toy_task.END_SHARE)):
        rows = [r for r in train if r["family"] == fam]
        named = [r for r in rows if len(r["constraints"]) == 2]
        assert all(r["decisive"] == "implied " + r["implied"][0] for r in named)
        assert all(r["decisive"] == "include" for r in rows if r not in named)
        assert abs(len(named) / len(rows) - share) < 0.05, (fam, len(named) / len(rows))
    assert [sum(r["implied"][0] == k for r in held) for k in ("lowercase", "capital_start", "exclaim_end", "period_end")] \
        == [100] * 4
    assert all(r["decisive"].startswith("implied") and r["rubric"] == r["reference_rubric"] for r in held)
    for r in held:  # the one edit is the implied feature: the other family's feature is the same on both sides
        a, b = r["response_a"], r["response_b"]
        assert (a[-1] == b[-1]) if r["family"] == "case" else (a[0] == b[0])
    assert not {r["prompt"] for r in held} & {r["prompt"] for r in train}
    for r in train + held:
        assert not any(w in r["prompt"] for w in ("lowercase", "capital", "exclamation", "period"))
        assert r["cue"] in toy_task.RULE_CUES[r["implied"][0]]


@pytest.mark.parametrize("make, types", [(toy_task.make_implicit_split, {"implied case"}),
                                         (toy_task.make_two_rule_split, {"implied case", "implied ending"})],
                         ids=["implicit", "two-rule"])
def test_implicit_tasks_trivial_judges_stay_at_chance_overall_and_per_type(tmp_path, make, types):
    """Every trivial judge (prompt-blind classifier, one-line rules, the per-type rules: more capitals, fewer
    repeated words, more digits, more exclamation marks) at or below 56% on held-out pairs of the implicit and
    two-rule tasks, overall and per pair type, with 50% inside its interval."""
    paths = {}
    for name, n, seed, annotated, held in (("train", 1200, 41, True, False), ("eval", 400, 42, False, True)):
        paths[name] = tmp_path / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in make(n, seed, name, annotated, held)))
    res = baselines.evaluate(paths["train"], [paths["eval"]])["eval"][str(paths["eval"])]
    names = ["prompt-blind classifier", *baselines.RULES]
    for name in names:
        assert res[name]["accuracy"] <= 0.56 and res[name]["ci95"][0] <= 0.5, (name, res[name])
    assert set(res["by_type"]) == types
    for kind in types:
        for name in names:
            t = res["by_type"][kind][name]
            assert t["accuracy"] <= 0.56 and t["lo"] <= 0.5, (kind, name, t)


def test_claim_reach_reads_where_the_trajectory_quotes_claims_and_decides(tmp_path):
    """experiments/claim_reach.py reads a judge's next token at each quote, case claim (also in the spelled
    format of smol_judge_recipes) and verdict of a held-out trajectory; the bundled implicit base, pretrained on
    these trajectories, gets the claims right where a judge that reads nothing could not (two tokens, one true)."""
    import claim_reach
    import smol_judge_recipes
    rows = toy_task.make_implicit_split(12, 1400, "eval", False, True)
    plain, spelled = tmp_path / "plain.jsonl", tmp_path / "spelled.jsonl"
    C.write_jsonl_atomic(plain, rows)
    C.write_jsonl_atomic(spelled, [{**r, "judge_trajectory": smol_judge_recipes.spell(r["judge_trajectory"])} for r in rows])
    assert 'first letter "' in read_jsonl(spelled)[0]["judge_trajectory"]
    base = str(toy_task.IMPLICIT_BASE)
    rep = claim_reach.main(["--model", base, "--data", str(plain), "--adapter", "none", "--out", str(tmp_path / "c.json")])
    got = rep["judges"]["none"]
    assert got["claim"]["n"] == 24 and got["verdict"]["n"] == 12 and got["quote"]["n"] == 24 and "letter" not in got
    assert got["conclusion"]["n"] == 12 and got["claim"]["accuracy"] >= 90 and got["verdict"]["accuracy"] >= 90
    assert json.loads((tmp_path / "c.json").read_text()) == rep
    sp = claim_reach.main(["--model", base, "--data", str(spelled), "--adapter", "none"])["judges"]["none"]
    assert sp["letter"]["n"] == 24 and sp["claim"]["n"] == 24  # the spelled letter is read as well
    counted = tmp_path / "counted.jsonl"
    C.write_jsonl_atomic(counted, [{**r, "judge_trajectory": smol_judge_recipes.count(r["judge_trajectory"])} for r in rows])
    assert "; Response B satisfies" in read_jsonl(counted)[0]["judge_trajectory"]
    ct = claim_reach.main(["--model", base, "--data", str(counted), "--adapter", "none"])["judges"]["none"]
    assert "conclusion" not in ct and ct["verdict"]["n"] == 12  # counted: the Winner line is the conclusion


def test_two_rule_naming_reads_each_rule_off_the_rubrics_the_task_writes():
    """toy_both_roles.names: a reference rubric names its implied rule ('right'), is 'wrong' for the opposite
    rule of the family, and a word-only rubric names neither ('none')."""
    import toy_both_roles as B
    word = toy_task.Constraint("include", "moon")
    for rule in B.RULES:
        full = toy_task.make_rubric("the river", [word, toy_task.Constraint(rule)])
        assert B.names(full, rule) == "right" and B.names(full, B.OPPOSITE[rule]) == "wrong", (rule, full)
        assert B.names(toy_task.make_rubric("the river", [word]), rule) == "none"


@pytest.mark.parametrize("task", ["implicit", "two-rule"])
def test_policy_rows_of_the_implied_tasks_are_scored_on_their_implied_rule(task):
    """toy_policy --task: every pair is decided by the implied rule and lists it among its constraints, so the
    checkers' pass rate counts it; the held-out prompts come from the bucket no training split holds."""
    import toy_policy as P
    rows = P.task_rows(task, 40, 7, "p", held_out=False)
    held = P.task_rows(task, 40, 8, "h", held_out=True)
    for r in rows + held:
        kinds = [k for k, _ in r["constraints"]]
        assert r["implied"][0] in kinds and r["decisive"] == "implied " + r["implied"][0]
        cs = [toy_task.Constraint(k, v) for k, v in r["constraints"]]
        good, bad = (r["response_a"], r["response_b"]) if r["winner"] == "A" else (r["response_b"], r["response_a"])
        assert all(toy_task.satisfied(cs, good)) and not all(toy_task.satisfied(cs, bad))
    assert all(toy_task.prompt_held_out(r["prompt"]) for r in held)
    assert not any(toy_task.prompt_held_out(r["prompt"]) for r in rows)


def test_tallied_trajectories_count_each_analysis_and_keep_the_judge_format():
    """smol_judge_recipes' 'tallied' format: after each response's analysis a tally of its met hard rules, equal to
    the final justification's count (the counted format), and the judge format reward unchanged."""
    import smol_judge_recipes as R
    for r in toy_task.make_implicit_split(30, 1250, "t", False, False):
        text = R.tally(R.count(r["judge_trajectory"]))
        ca, cb = map(int, R.COUNTS.search(text).groups())
        assert f"- Tally: Response A satisfies {ca} of 2 hard rules." in text
        assert f"- Tally: Response B satisfies {cb} of 2 hard rules." in text
        assert {ca, cb} == {1, 2} and (ca > cb) == (r["winner"] == "A")
        assert C.format_reward(text, 3) == C.format_reward(r["judge_trajectory"], 3) == 1.0
        assert C.parse_verdict(text) == r["winner"]


def test_conclusions_read_each_tally_against_its_own_analysis(tmp_path):
    """smol_judge_recipes.conclusions on tallied trajectories: the reference ones are right at every step; a tally
    that miscounts its own lines, and final counts that do not copy the tallies, are counted as such."""
    import smol_judge_recipes as R
    rows = toy_task.make_implicit_split(20, 1250, "t", False, False)
    texts = [R.tally(R.count(r["judge_trajectory"])) for r in rows]
    bad = [t.replace("- Tally: Response A satisfies 2 of", "- Tally: Response A satisfies 0 of") for t in texts]
    for name, judged, want in (("right", texts, 100.0), ("bad", bad, None)):
        path = tmp_path / f"{name}.jsonl"
        C.write_jsonl_atomic(path, [{"judge_texts": [t], "verdict": r["winner"], "chosen_is": r["winner"]}
                                    for t, r in zip(judged, rows)])
        got = R.conclusions(path)
        assert got["tallied"] == got["counted"] == 20
        wrong = sum("Response A satisfies 2 of" in t for t in texts) / 20 * 100  # A tallies that the edit breaks
        assert got["tally_B_right"] == 100.0 and got["analysis_right"] == 100.0
        if want:
            assert got["tally_A_right"] == got["counts_copy_tallies"] == want
        else:
            assert 0 < wrong < 100 and got["tally_A_right"] == got["counts_copy_tallies"] == 100.0 - wrong


def test_a_shared_baseline_is_paired_with_every_seed_and_counted_once():
    """toy_rubric_phase.summarize: a run every seed starts from (the greedy SFT of smol_implicit's study) is
    entered once; each seed's run is paired with it pair by pair, and its own interval is that of one run, not
    narrowed as if the seeds had drawn it anew."""
    import toy_rubric_phase as R

    from driver import seeds_and_pairs
    base = {"both": 0.5, "pairs": [0.5, 0.0, 1.0, 0.5] * 10}
    runs = [{"both": 0.6, "pairs": [1.0, 0.0, 1.0, 0.5] * 10}, {"both": 0.7, "pairs": [1.0, 0.5, 1.0, 0.5] * 10}]
    stub = {"accuracy": 0.0, "accuracy_swapped": 0.0, "mixed": 0.0, "format": 1.0, "by_kind": {"x": 0.0}}
    results = {"SFT": [{**stub, **base}], "rubric-only": [{**stub, **r} for r in runs]}
    summ = R.summarize(results, {}, {})
    d = summ["differences"]["rubric-only minus SFT"]
    assert d["per_seed"] == [0.1, 0.2]  # each seed's "both" minus the shared one
    assert abs(d["mean"] - (sum(runs[0]["pairs"]) + sum(runs[1]["pairs"]) - 2 * sum(base["pairs"])) / 80) < 1e-9
    sft = next(r for r in summ["rows"] if r["judge"] == "SFT")
    assert sft["seeds"] == 1 and sft["interval"] == seeds_and_pairs([base["pairs"]])
    assert sft["interval"]["ci95"] != seeds_and_pairs([base["pairs"]] * 2)["ci95"]  # what counting it twice gave


def test_smol_naming_reads_the_case_rule_in_the_wordings_rubrics_use():
    """smol_implicit.names: 'no capital letters' is the lowercase rule, not the capital one; a rubric naming
    neither rule is 'none'."""
    import smol_implicit as S
    assert S.names("The response must be written entirely in lowercase.", "lowercase") == "right"
    assert S.names("The response must use no capital letters.", "capital_start") == "wrong"
    assert S.names("The response must begin with a capital letter.", "capital_start") == "right"
    assert S.names("The response must include the word \"fire\".", "lowercase") == "none"
