"""Inference under torchrun: evaluation, rubric caching and DPO labelling split their work over the ranks
and write one merged, resumable result, the same as one process (greedy decoding, 2 gloo ranks on CPU)."""

import json
import sys

from conftest import EVAL, ROOT, TRAIN, read_jsonl, run_script, write_rows

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def torchrun(script, *args, check=True):
    return run_script(*TORCHRUN, str(ROOT / script), *map(str, args), check=check)


def test_evaluation_on_two_ranks_equals_one_process(tiny_model, tmp_path):
    ev = ["--model", tiny_model, "--benchmark", "pairwise", "--data", EVAL, "--limit", "7", "--greedy", "--swap",
          "--max-rubric-tokens", "8", "--max-judge-tokens", "6", "--batch-size", "1"]
    run_script("evaluate.py", *ev, "--out", tmp_path / "one")
    torchrun("evaluate.py", *ev, "--out", tmp_path / "two")
    one, two = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert two["benchmarks"] == one["benchmarks"] and two["summary"] == one["summary"]
    assert two["efficiency"]["ranks"] == 2 and two["efficiency"]["judge_tokens"] == one["efficiency"]["judge_tokens"]
    assert read_jsonl(tmp_path / "two" / "predictions.jsonl") == read_jsonl(tmp_path / "one" / "predictions.jsonl")
    assert sorted(map(json.dumps, read_jsonl(tmp_path / "two" / "rubrics.jsonl"))) == \
        sorted(map(json.dumps, read_jsonl(tmp_path / "one" / "rubrics.jsonl")))
    assert not list((tmp_path / "two").glob("*.rank*")) and not list((tmp_path / "two").glob("*.partial"))
    # an interrupted two-rank run (its share files left behind) resumes in one process: nothing judged twice
    preds = read_jsonl(tmp_path / "two" / "predictions.jsonl")
    (tmp_path / "two" / "predictions.jsonl").unlink()
    write_rows(tmp_path / "two" / "predictions.jsonl.partial.rank1", preds[1::2])
    write_rows(tmp_path / "two" / "predictions.jsonl.partial.rank0", preds[0:4:2])
    p = run_script("evaluate.py", *ev, "--out", tmp_path / "two")
    assert f"resuming: {len(preds[1::2]) + 2} of {len(preds)} judgements already written" in p.stderr
    assert read_jsonl(tmp_path / "two" / "predictions.jsonl") == preds and not list((tmp_path / "two").glob("*.rank*"))


def test_rubric_cache_on_two_ranks_equals_one_process(tiny_model, tmp_path):
    rows = write_rows(tmp_path / "rows.jsonl", read_jsonl(TRAIN)[:5])
    args = ["cache-rubrics", "--model", tiny_model, "--data", rows, "--max-new-tokens", "8", "--batch-size", "1"]
    run_script("common.py", *args, "--out", tmp_path / "one.jsonl")
    torchrun("common.py", *args, "--out", tmp_path / "two.jsonl")
    assert read_jsonl(tmp_path / "two.jsonl") == read_jsonl(tmp_path / "one.jsonl")  # in the rows' order
    assert [r["id"] for r in read_jsonl(tmp_path / "two.jsonl")] == [r["id"] for r in read_jsonl(rows)]
    assert (tmp_path / "two.jsonl.manifest.json").exists() and not list(tmp_path.glob("two.jsonl.rank*"))


def test_dpo_labelling_on_two_ranks_equals_one_process(tiny_model, yes_rm, tmp_path):
    cands = write_rows(tmp_path / "cands.jsonl", [{"prompt": f"Answer yes. ({i})", "responses": ["yes stone", "no cloud", "yes river"]}
                                                   for i in range(3)])
    args = ["--model", tiny_model, "--prompts", cands, "--candidates", cands, "--rubric-adapter", yes_rm["rubric"],
            "--judge-adapter", yes_rm["judge"], "--judge-template", yes_rm["template"], "--judge-temperature", "0",
            "--max-rubric-tokens", "16", "--max-judge-tokens", "8", "--gen-batch", "1", "--batch-size", "2",
            "--micro-batch", "2", "--max-steps", "1", "--lora-r", "8", "--lora-alpha", "16"]
    run_script("policy_dpo.py", *args, "--out", tmp_path / "one")
    torchrun("policy_dpo.py", *args, "--out", tmp_path / "two")
    for f in ("prefs.jsonl", "label_report.json"):
        a, b = (tmp_path / d / "round1" / f for d in ("one", "two"))
        assert (read_jsonl(a) if f.endswith("l") else json.loads(a.read_text())) == \
            (read_jsonl(b) if f.endswith("l") else json.loads(b.read_text())), f
    assert not list((tmp_path / "two" / "round1").glob("*.rank*"))
    report = json.loads((tmp_path / "two" / "round1" / "label_report.json").read_text())
    assert report["pairs"] == 9 and report["kept"] > 0
    assert report["rubrics"] == 3 and report["judge_calls"] == 18  # each prompt's rubric written once, on one rank


def test_rubric_cache_resumed_under_another_world_size_leaves_no_stale_partial(tiny_model, tmp_path):
    """One process killed mid-cache, resumed on 2 ranks: the one-process partial file is merged and removed, so
    extending the cache later writes each id once (before: the stale partial survived and an extension of 5 to
    7 rows wrote duplicate ids)."""
    rows = read_jsonl(TRAIN)[:7]
    five, seven = write_rows(tmp_path / "five.jsonl", rows[:5]), write_rows(tmp_path / "seven.jsonl", rows)
    args = ["cache-rubrics", "--model", tiny_model, "--max-new-tokens", "6", "--batch-size", "1", "--out", tmp_path / "c.jsonl"]
    p = run_script("common.py", *args, "--data", five, env={"RUBRIC_ARM_CRASH_AT": "rubric_batch:2"}, check=False)
    assert p.returncode != 0 and len(read_jsonl(tmp_path / "c.jsonl.partial")) == 2
    torchrun("common.py", *args, "--data", five)
    assert len(read_jsonl(tmp_path / "c.jsonl")) == 5 and not (tmp_path / "c.jsonl.partial").exists()
    run_script("common.py", *args, "--data", seven)
    ids = [r["id"] for r in read_jsonl(tmp_path / "c.jsonl")]
    assert sorted(ids) == sorted(r["id"] for r in rows)


def test_share_files_of_an_interrupted_torchrun_cache_carry_its_generator(tiny_model, tmp_path):
    """Two ranks killed mid-cache with one generator, rerun with another: refused (before: the manifest was
    overwritten and the first generator's rubrics in the share files merged into the second's cache)."""
    adapter = tmp_path / "adapter"
    run_script("common.py", "new-adapter", "--model", tiny_model, "--out", adapter, "--seed", "3")
    rows = write_rows(tmp_path / "rows.jsonl", read_jsonl(TRAIN)[:6])
    args = ["cache-rubrics", "--model", tiny_model, "--data", rows, "--max-new-tokens", "6", "--batch-size", "1",
            "--out", tmp_path / "c.jsonl"]
    p = run_script(*TORCHRUN, str(ROOT / "common.py"), *map(str, args), "--adapter", str(adapter),
                   env={"RUBRIC_ARM_CRASH_AT": "rubric_batch:2"}, check=False)
    assert p.returncode != 0 and list(tmp_path.glob("c.jsonl.rank*"))
    p = run_script("common.py", *args, check=False)
    assert p.returncode != 0 and "written by another generator" in p.stderr and "adapter" in p.stderr
    assert not (tmp_path / "c.jsonl").exists()


def test_dpo_sampling_is_split_over_ranks_and_one_rank_saves_a_carried_over_adapter(tiny_model, tmp_path):
    """Under torchrun each rank samples its share of the prompts (before: every rank sampled every prompt, and
    wrote samples.jsonl); samples.jsonl keeps the prompts' order. A round that keeps no pair carries its
    adapter over, saved by one rank (before: every rank renamed one temporary folder: some saves failed)."""
    prompts = write_rows(tmp_path / "p.jsonl", [{"prompt": f"Say something ({i})."} for i in range(3)])
    args = ["--model", tiny_model, "--prompts", prompts, "--n-samples", "2", "--max-new-tokens", "4",
            "--max-rubric-tokens", "4", "--max-judge-tokens", "4", "--gen-batch", "2", "--batch-size", "2",
            "--micro-batch", "2", "--max-steps", "1", "--lora-r", "8", "--lora-alpha", "16"]
    p = torchrun("policy_dpo.py", *args, "--out", tmp_path / "two")
    assert "sampled 4 responses for 2 of 3 prompts on rank 0" in p.stderr
    assert "sampled 2 responses for 1 of 3 prompts on rank 1" in p.stderr
    r1 = tmp_path / "two" / "round1"
    samples = read_jsonl(r1 / "samples.jsonl")
    assert [s["prompt"] for s in samples] == [f"Say something ({i})." for i in range(3)]
    assert all(len(s["responses"]) == 2 for s in samples) and not list(r1.glob("*.rank*"))
    # every pair the same response: nothing kept, the adapter carried over by one rank
    same = write_rows(tmp_path / "same.jsonl", [{"prompt": "Say hi.", "responses": ["hi", "hi"]}])
    torchrun("policy_dpo.py", *args, "--candidates", same, "--out", tmp_path / "none")
    r1 = tmp_path / "none" / "round1"
    assert json.loads((r1 / "label_report.json").read_text())["kept"] == 0
    assert (r1 / "adapter" / "adapter_model.safetensors").exists() and not list(r1.glob(".tmp-*"))
