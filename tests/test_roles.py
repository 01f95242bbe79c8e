"""A generator and a judge that are different models (the released checkpoints are one full model per
role), and the prompt templates of model cards: each role runs on its own model, in evaluation, the rubric
phase and DPO labelling, and the same model named twice is loaded once."""

import argparse
import json

import pytest
import torch

import common as C
import toy_task
from conftest import EVAL, TRAIN, read_jsonl, run_script, write_rows


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory):
    """A second random tiny model: other hidden size and weights, the same tokenizer."""
    return toy_task.make_tiny_model(tmp_path_factory.mktemp("wide") / "model", hidden=96, heads=4, kv_heads=2, seed=1)


def greedy_judge_texts(model_dir, items, max_new_tokens=6):
    tok = C.load_tokenizer(str(model_dir))
    model = C.load_base_model(str(model_dir), device=torch.device("cpu"))
    judged = C.judge(model, tok, items, None, max_new_tokens=max_new_tokens, temperature=0.0, batch_size=len(items))
    return [j.texts[0] for j in judged]


def test_model_card_templates_are_read_with_their_own_placeholder_names(tmp_path):
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Write a rubric for this request.\n{prompt}\nOnly the rubric.")
    judge = tmp_path / "judge.txt"
    judge.write_text('Judge fairly. Output {"winner": "A"} style is not wanted.\nInstruction:\n{question}\n'
                     'Rubric:\n{rubric}\nResponse A:\n{content["response_a"]}\nResponse B:\n{answer_b}\n')
    saved = dict(C.TEMPLATES)
    try:
        C.use_templates(argparse.Namespace(rubric_template=str(rubric), judge_template=str(judge)))
        assert C.rubric_messages("Say hi.")[0]["content"] == "Write a rubric for this request.\nSay hi.\nOnly the rubric."
        text = C.judge_messages("Say hi.", "1. The response says hi. [Hard Rule]", "hi", "bye")[0]["content"]
        assert "Instruction:\nSay hi.\nRubric:\n1. The response says hi." in text and "Response A:\nhi\nResponse B:\nbye" in text
        assert '{"winner": "A"}' in text  # braces that name no field stay as written
        bad = tmp_path / "bad.txt"
        bad.write_text("Instruction: {prompt}\nA: {response_a}\nB: {response_b}")
        with pytest.raises(C.DataError, match=r"lacks the placeholder\(s\) \{rubric\} \(also read as \{rubrics\}"):
            C.use_templates(argparse.Namespace(rubric_template=None, judge_template=str(bad)))
    finally:
        C.TEMPLATES.update(saved)


def test_one_model_named_for_both_roles_is_loaded_once(tiny_model, wide_model, yes_rm):
    same = C.load_roles({"rubric": (str(tiny_model), str(yes_rm["rubric"])), "judge": (str(tiny_model), str(yes_rm["judge"]))},
                        device=torch.device("cpu"))
    assert same["rubric"].model is same["judge"].model and same["rubric"].adapter != same["judge"].adapter
    # the generator as it is, the judge's adapter on the same network: the generator must run with it off
    plain = C.load_roles({"rubric": (str(tiny_model), None), "judge": (str(tiny_model), str(yes_rm["judge"]))},
                         device=torch.device("cpu"))
    assert plain["rubric"].model is plain["judge"].model and plain["rubric"].adapter is None
    two = C.load_roles({"rubric": (str(tiny_model), None), "judge": (str(wide_model), None)}, device=torch.device("cpu"))
    assert two["rubric"].model is not two["judge"].model
    assert two["judge"].model.config.hidden_size == 96 and two["rubric"].model.config.hidden_size == 64


def test_evaluation_runs_each_role_on_its_own_model(tiny_model, wide_model, tmp_path):
    common = ["evaluate.py", "--benchmark", "pairwise", "--data", EVAL, "--limit", "3", "--greedy", "--max-rubric-tokens", "8",
              "--max-judge-tokens", "6", "--batch-size", "8"]
    run_script(*common, "--model", tiny_model, "--judge-model", wide_model, "--out", tmp_path / "two")
    run_script(*common, "--model", tiny_model, "--out", tmp_path / "gen_alone")
    # the generator's rubrics are those the generator's model writes alone ...
    two_rubrics = read_jsonl(tmp_path / "two" / "rubrics.jsonl")
    assert two_rubrics == read_jsonl(tmp_path / "gen_alone" / "rubrics.jsonl")
    # ... and the judge's texts are those the judge's model writes alone under those rubrics
    run_script(*common, "--model", wide_model, "--reference-rubrics", tmp_path / "two" / "rubrics.jsonl",
               "--out", tmp_path / "judge_alone")
    texts = lambda d: [r["judge_texts"] for r in read_jsonl(d / "predictions.jsonl")]  # noqa: E731
    assert texts(tmp_path / "two") == texts(tmp_path / "judge_alone")
    assert texts(tmp_path / "two") != texts(tmp_path / "gen_alone")  # the generator's model judges otherwise
    cfg = json.loads((tmp_path / "two" / "results.json").read_text())["config"]
    assert cfg["judge_model"] == str(wide_model) and cfg["rubric_model"] == str(tiny_model)
    # the judge's model is part of what the judgements were made from: another one in the same folder is refused
    p = run_script(*common, "--model", tiny_model, "--out", tmp_path / "two", check=False)
    assert p.returncode != 0 and "judge_model" in p.stderr


def test_the_rubric_phase_rewards_with_a_judge_of_another_model(tiny_model, wide_model, tmp_path):
    rows = write_rows(tmp_path / "rl.jsonl", read_jsonl(TRAIN)[:4])
    run_script("train_rubric_phase.py", "--model", tiny_model, "--judge-model", wide_model, "--data", rows,
               "--group-size", "2", "--batch-size", "4", "--micro-batch", "4", "--max-completion-length", "6",
               "--judge-max-new-tokens", "6", "--max-steps", "1", "--log-samples", "-1", "--out", tmp_path / "o")
    assert (tmp_path / "o" / "adapter" / "adapter_config.json").exists()
    samples = read_jsonl(tmp_path / "o" / "judge_samples.jsonl")
    by_id = {r["id"]: r for r in read_jsonl(rows)}
    for s in samples:  # each logged verdict text is the wide model's greedy text for that rubric, in one of the orders
        r = by_id[s["id"]]
        both = greedy_judge_texts(wide_model, [(r["prompt"], s["rubric"], r["response_a"], r["response_b"]),
                                               (r["prompt"], s["rubric"], r["response_b"], r["response_a"])])
        assert s["judge_text"] in both
    # without --judge-model the judge adapter is needed: said before anything loads
    p = run_script("train_rubric_phase.py", "--model", tiny_model, "--data", rows, "--out", tmp_path / "o2", check=False)
    assert p.returncode != 0 and "--judge-adapter is needed" in p.stderr


def test_dpo_labelling_with_a_generator_and_a_judge_of_different_models(tiny_model, wide_model):
    rm = C.RubricARM.load((str(tiny_model), None), (str(wide_model), None), max_rubric_tokens=8, max_judge_tokens=6,
                          judge_temperature=0.0, device=torch.device("cpu"))
    assert rm.gen.model is not rm.jud.model
    import policy_dpo
    samples = [{"prompt": "Write one word.", "responses": ["sea", "stone", "cloud"]}]
    kept, report = policy_dpo.label_pairs(rm, samples)
    assert report["pairs"] == 3 and rm.stats["rubrics"] == 1 and rm.stats["judge_calls"] == 6
    rubric = rm.cache["Write one word."]
    assert rubric == C.RubricARM.load((str(tiny_model), None), (str(tiny_model), None), max_rubric_tokens=8)\
        .rubrics_for(["Write one word."])["Write one word."]
    _, texts = rm.verdicts([("Write one word.", "sea", "stone")], temperature=0.0)
    assert texts == greedy_judge_texts(wide_model, [("Write one word.", rubric, "sea", "stone")])
