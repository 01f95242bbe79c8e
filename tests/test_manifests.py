"""No result is reused stale: every output records what made it (flags, the content digest of every
input file and adapter), and reuse or resume needs the same record; otherwise one line lists what
differs. Each test here failed before the manifests existed (issue 23, items 1-5)."""

import json
import os
import shutil
import subprocess

from test_safety import env, one_line_error

from conftest import EVAL, ROOT, TRAIN, read_jsonl, run_script, write_rows

SFT = ["sft_warmup.py", "--role", "judge", "--limit", "4", "--batch-size", "2", "--micro-batch", "2",
       "--lora-r", "4", "--lora-alpha", "8", "--save-every", "1"]


def _flipped(rows):
    return [{**r, "winner": "B" if r["winner"] == "A" else "A"} for r in rows]


def test_a_resumed_stage_refuses_data_whose_content_changed_at_the_same_path(tiny_model, tmp_path):
    data = write_rows(tmp_path / "d.jsonl", read_jsonl(TRAIN)[:4])
    args = [*SFT, "--model", tiny_model, "--data", data, "--out", tmp_path / "o"]
    run_script(*args, "--max-steps", "1")
    write_rows(data, _flipped(read_jsonl(data)))  # labels flipped, same path
    err = one_line_error(run_script(*args, "--max-steps", "1", "--resume", check=False))
    assert "holds a run made with other settings or inputs (--data 'sha256:" in err
    # the same content reached from another folder resumes
    write_rows(data, _flipped(read_jsonl(data)))
    (tmp_path / "elsewhere").mkdir()
    copy = shutil.copy(data, tmp_path / "elsewhere" / "copy.jsonl")
    run_script(*[copy if a == data else a for a in args], "--max-steps", "1", "--resume")


def test_cache_rubrics_refuses_another_generator_another_prompt_and_a_foreign_file(tiny_model, tmp_path):
    cache = tmp_path / "r.jsonl"
    base = ["common.py", "cache-rubrics", "--model", tiny_model, "--data", TRAIN, "--limit", "3", "--max-new-tokens", "4",
            "--out", cache]
    run_script(*base)
    manifest = json.loads((tmp_path / "r.jsonl.manifest.json").read_text())
    assert manifest["generator"]["adapter"] is None and len(manifest["prompts"]) == 3
    before = cache.read_bytes()
    run_script("sft_warmup.py", "--role", "rubric", "--model", tiny_model, "--data", TRAIN, "--limit", "2",
               "--max-steps", "1", "--lora-r", "4", "--lora-alpha", "8", "--out", tmp_path / "sft")
    err = one_line_error(run_script(*base, "--adapter", tmp_path / "sft" / "adapter", check=False))
    assert "its rubrics were written by another generator (adapter: None -> 'sha256:" in err
    err = one_line_error(run_script(*base, "--max-new-tokens", "5", check=False))
    assert "max_new_tokens: 4 -> 5" in err
    # same ids, other prompts
    rows = read_jsonl(TRAIN)[:3]
    other = write_rows(tmp_path / "other.jsonl", [{**r, "prompt": r["prompt"] + " Be brief."} for r in rows])
    i = base.index("--data")
    err = one_line_error(run_script(*base[:i + 1], other, *base[i + 2:], check=False))
    assert f"id {rows[0]['id']!r} has a rubric written for another prompt" in err
    assert cache.read_bytes() == before
    # more rows from the same generator extend it
    run_script(*[("5" if a == "3" else a) for a in base])
    assert len(read_jsonl(cache)) == 5
    # a file that is not a cache (a one-line note) is refused and kept
    note = tmp_path / "note.txt"
    note.write_text("my notes")
    err = one_line_error(run_script(*base[:-1], note, check=False))
    assert "exists but is not a rubric cache written by cache-rubrics" in err and note.read_text() == "my notes"


def test_cache_rubrics_samples_with_a_temperature_reproducibly_and_records_it(tiny_model, tmp_path):
    """--temperature 1 (the paper's sampled cache): the same seed writes the same rubrics, another seed others,
    greedy ones differ from them; the manifest records temperature and seed, so resuming a greedy cache with
    sampling (or another seed) is refused, and a greedy cache's record has neither."""
    base = ["common.py", "cache-rubrics", "--model", tiny_model, "--data", TRAIN, "--limit", "6", "--max-new-tokens", "12"]
    caches = {}
    for name, extra in (("greedy", []), ("s0", ["--temperature", "1", "--seed", "0"]),
                        ("s0b", ["--temperature", "1", "--seed", "0"]), ("s1", ["--temperature", "1", "--seed", "1"])):
        run_script(*base, *extra, "--out", tmp_path / f"{name}.jsonl")
        caches[name] = [r["rubric"] for r in read_jsonl(tmp_path / f"{name}.jsonl")]
    assert caches["s0"] == caches["s0b"] and caches["s0"] != caches["s1"] and caches["s0"] != caches["greedy"]
    gen = json.loads((tmp_path / "s1.jsonl.manifest.json").read_text())["generator"]
    assert gen["temperature"] == 1.0 and gen["seed"] == 1
    assert "temperature" not in json.loads((tmp_path / "greedy.jsonl.manifest.json").read_text())["generator"]
    err = one_line_error(run_script(*[("8" if a == "6" else a) for a in base], "--temperature", "1",
                                    "--out", tmp_path / "greedy.jsonl", check=False))
    assert "written by another generator" in err and "temperature: None -> 1.0" in err


def test_evaluate_refuses_judgements_of_an_adapter_retrained_at_the_same_path(tiny_model, tmp_path):
    sft = [*SFT, "--model", tiny_model, "--data", TRAIN, "--max-steps", "1", "--out", tmp_path / "j"]
    run_script(*sft)
    ev = ["evaluate.py", "--model", tiny_model, "--benchmark", "pairwise", "--data", EVAL, "--limit", "2",
          "--max-rubric-tokens", "4", "--max-judge-tokens", "4", "--judge-adapter", tmp_path / "j" / "adapter",
          "--out", tmp_path / "ev"]
    run_script(*ev)
    run_script(*sft[:-2], "--lr", "0.3", "--overwrite", "--out", tmp_path / "j")  # retrained, same path
    err = one_line_error(run_script(*ev, check=False))
    assert "made with other settings or inputs (judge_adapter: 'sha256:" in err


def _alternate(tiny_model, out, data, judge_args="--max-steps 1", cycles=1):
    e = {**env(), "MODEL_ARGS": "--lora-r 4 --lora-alpha 8",
         "SFT_RUBRIC_ARGS": "--max-steps 1 --batch-size 2 --micro-batch 2",
         "SFT_JUDGE_ARGS": "--max-steps 1 --batch-size 2 --micro-batch 2",
         "CACHE_ARGS": "--max-new-tokens 4", "JUDGE_ARGS": f"--group-size 2 --batch-size 2 --max-completion-length 4 {judge_args}",
         "RUBRIC_ARGS": "--group-size 2 --batch-size 2 --max-completion-length 4 --judge-max-new-tokens 4 --max-steps 1"}
    return subprocess.run(["bash", str(ROOT / "alternate.sh"), "--model", str(tiny_model), "--data", str(data),
                           "--cycles", str(cycles), "--out", str(out)], cwd=ROOT, env=e, capture_output=True, text=True,
                          timeout=1200)


def test_a_tokenizer_file_edited_in_place_is_another_model(tiny_model, tmp_path):
    """The tokenizer lives in the model folder, whose digest covers every file: an edited tokenizer_config.json
    (another chat template, say) makes the evaluation's old judgements stale, and the rerun is refused."""
    import shutil
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    ev = ["evaluate.py", "--model", model, "--benchmark", "pairwise", "--data", EVAL, "--limit", "2",
          "--reference-rubrics", EVAL, "--max-judge-tokens", "4", "--out", tmp_path / "ev"]
    run_script(*ev)
    cfg = model / "tokenizer_config.json"
    cfg.write_text(cfg.read_text().replace("{", '{"model_max_length": 77, ', 1))
    err = one_line_error(run_script(*ev, check=False))
    assert "made with other settings or inputs (" in err and "model" in err


def test_alternate_refuses_a_rerun_with_other_data_or_stage_flags(tiny_model, tmp_path):
    data = write_rows(tmp_path / "rl.jsonl", read_jsonl(TRAIN)[:8])
    out = tmp_path / "arm out"  # a space in --out: every path in alternate.sh stays quoted
    first = _alternate(tiny_model, out, data)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    # a folder that holds evaluation results, rerun without --eval-data: the summary shows them, no traceback
    (out / "eval_sft").mkdir()
    (out / "eval_sft" / "results.json").write_text(json.dumps(
        {"summary": {"judgements": 4, "accuracy": 0.5, "unparsed_share": 0.25, "format_rate": 0.75}}))
    again = _alternate(tiny_model, out, data)
    assert again.returncode == 0 and again.stdout.count("done, skipped") == 6, again.stdout + again.stderr
    assert "| after SFT | 50.0% | 25% | 75% |" in again.stdout and "Traceback" not in again.stderr
    (out / "c1_rubrics.jsonl").unlink()  # a finished step's output deleted: that step runs again, and nothing else
    healed = _alternate(tiny_model, out, data)
    assert healed.returncode == 0, healed.stdout[-2000:] + healed.stderr[-2000:]
    assert "c1_cache: done before, but its output" in healed.stdout and "is missing: running it again" in healed.stdout
    assert "[alternate] c1_judge: done, skipped" in healed.stdout  # the same greedy rubrics, written again
    other = _alternate(tiny_model, out, data, judge_args="--max-steps 1 --lr 3e-3")
    assert other.returncode == 2 and "step c1_judge in" in other.stderr and "--lr: None -> '3e-3'" in other.stderr
    more = _alternate(tiny_model, out, data, cycles=2)  # the data was split for one cycle
    assert more.returncode == 2 and "step split in" in more.stderr and "--parts" in more.stderr, more.stderr
    moved = data.rename(tmp_path / "moved.jsonl")  # an input deleted: said so, not blamed on other flags
    gone = _alternate(tiny_model, out, data)
    assert gone.returncode == 2 and f"its input {data} is missing" in gone.stderr, gone.stderr
    moved.rename(data)
    write_rows(data, _flipped(read_jsonl(data)))  # another --data content at the same path
    changed = _alternate(tiny_model, out, data)
    assert changed.returncode == 2 and "step split in" in changed.stderr and "#3: 'sha256:" in changed.stderr, changed.stderr
    assert os.path.exists(out / ".done" / "c1_judge")  # nothing was redone or overwritten


def test_alternate_refuses_too_many_cycles_before_any_sft(tiny_model, tmp_path):
    """--cycles 99 on 8 rows: refused by the split, which now runs before SFT (before: both SFT stages ran first)."""
    data = write_rows(tmp_path / "rl.jsonl", read_jsonl(TRAIN)[:8])
    p = _alternate(tiny_model, tmp_path / "o", data, cycles=99)
    assert p.returncode != 0 and "8 rows cannot make 99 parts" in p.stderr, p.stdout[-1000:] + p.stderr[-1000:]
    assert not (tmp_path / "o" / "sft_rubric").exists()


def test_a_large_file_edited_in_its_middle_gets_another_digest(tmp_path, monkeypatch):
    """Weights over BIG_FILE are hashed whole (cached by path, size, mtime, inode): an edit anywhere, the middle
    included, is seen; an unchanged file is read from the cache."""
    import manifests as M
    monkeypatch.setenv("RUBRIC_ARM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(M, "BIG_FILE", 1 << 10)
    f = tmp_path / "model.safetensors"
    data = bytearray(b"x" * (64 << 10))
    f.write_bytes(bytes(data))
    first = M.content_digest(f)
    assert (tmp_path / "cache" / "digests.json").exists() and M.content_digest(f) == first
    data[len(data) // 2] = ord("y")  # the middle, which a head-and-tail digest never read
    f.write_bytes(bytes(data))
    assert M.content_digest(f) != first


def test_a_shipped_model_name_is_recorded_by_the_weights_it_resolves_to(tiny_model, tmp_path, monkeypatch):
    """'smollm2-135m' resolved through RUBRIC_ARM_CACHE to other weights is another model in every record."""
    import shutil

    import common as C
    ids = []
    for k in range(2):
        cache = tmp_path / f"cache{k}"
        shutil.copytree(tiny_model, cache / "models" / "smollm2-135m")
        if k:
            w = cache / "models" / "smollm2-135m" / "model.safetensors"
            w.write_bytes(w.read_bytes()[:-1] + b"\0")
        monkeypatch.setenv("RUBRIC_ARM_CACHE", str(cache))
        ids.append(C.model_identity("smollm2-135m"))
    assert ids[0] != ids[1] and all(i.startswith("smollm2-135m=sha256:") for i in ids)
    assert C.model_identity("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"
