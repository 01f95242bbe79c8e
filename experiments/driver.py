"""What every experiment driver shares: stages run as subprocesses with a log, run folders that refuse other
settings, and the statistics of the reports (a spread over seeds, bootstrap intervals over pairs, and over
seeds and pairs together).

The drivers (experiments/*.py) each run one measurement end to end by calling the stage scripts, keep every
finished step in their run folder (a rerun resumes), and with --publish write a small results JSON under
docs/results/ that the docs cite.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tasks")]

import common as C  # noqa: E402


def sh(cmd: list, log: Path, env: dict | None = None) -> None:
    """Run a stage; on failure stop with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        p = subprocess.run([str(c) for c in cmd], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                           env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    if p.returncode != 0:
        raise SystemExit(f"error: {' '.join(map(str, cmd[:3]))} failed; log {log}:\n" + log.read_text()[-2000:])


def generator_rubrics(load, rows: list[dict], path: Path, batch: int, naming: dict, fields=("implied",)) -> list[dict]:
    """A generator's rubric for each row's prompt, greedy and naming['samples'] sampled at
    naming['temperature'], kept in path (a rerun reads them back); load() -> (tokenizer, model) runs only
    when path is absent. Each record carries the row's id and its FIELDS (the first implied rule)."""
    if not path.exists():
        import torch
        C.seed_everything(0)
        tok, model = load()
        prompts = [C.chat_prompt_ids(tok, C.rubric_messages(r["prompt"])) for r in rows]
        k, n_tok = naming["samples"], naming["max_new_tokens"]
        with torch.no_grad():
            greedy = C.generate_batched(model, tok, prompts, batch, n=1, max_new_tokens=n_tok, temperature=0.0)
            sampled = C.generate_batched(model, tok, prompts, batch, n=k, max_new_tokens=n_tok,
                                         temperature=naming["temperature"])
        C.write_jsonl_atomic(path, [{"id": r["id"], **{f: r[f][0] if f == "implied" else r[f] for f in fields},
                                     "greedy": greedy[i], "sampled": sampled[i * k:(i + 1) * k]}
                                    for i, r in enumerate(rows)])
    return C.read_jsonl_resumable(path)


def check_config(out: Path, cfg: dict) -> None:
    path = out / "config.json"
    cfg = json.loads(json.dumps(cfg))  # tuples as lists, as read back
    if path.exists():
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(cfg) if old.get(k) != cfg.get(k))
        if diff:
            raise SystemExit(f"error: {out} was made with other settings ({', '.join(diff)} differ); "
                             "use another --out or remove it")
    else:
        C.atomic_write_text(path, json.dumps(cfg, indent=2))


def rel(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def pooled(rs: list[dict], key: str = "pairs") -> list[float]:
    """Each held-out unit's score (a pair's; `key`) averaged over the seeds (the same units in every seed)."""
    return [statistics.mean(col) for col in zip(*[r[key] for r in rs])]


def interval(values: list[float]) -> dict:
    m, lo, hi = C.bootstrap(values)
    return {"mean": m, "ci95": [lo, hi]}


def spread(xs: list[float]) -> dict:
    return {"mean": statistics.mean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0}


def pct(d: dict) -> str:
    """'m ± s' or 'm [lo, hi]' in %, from spread() or interval()."""
    if "std" in d:
        return f"{100 * d['mean']:.1f} ± {100 * d['std']:.1f}"
    return f"{100 * d['mean']:.1f} [{100 * d['ci95'][0]:.1f}, {100 * d['ci95'][1]:.1f}]"


def seeds_and_pairs(matrix: list[list[float]], reps: int = 2000, seed: int = 0) -> dict:
    """Mean and 95% interval resampling training seeds, then pairs within each drawn seed: an interval
    that covers what varies between training runs as well as which pairs were drawn."""
    rng = random.Random(seed)
    k, n = len(matrix), len(matrix[0])
    means = []
    for _ in range(reps):
        rows = [matrix[rng.randrange(k)] for _ in range(k)]
        means.append(statistics.mean(row[rng.randrange(n)] for row in rows for _ in range(n)))
    means.sort()
    return {"mean": statistics.mean(statistics.mean(r) for r in matrix),
            "ci95": [means[int(0.025 * reps)], means[int(0.975 * reps) - 1]]}


def publish_page(name: str, title: str, back: str, table: str, cmd: str, payload: dict) -> None:
    """docs/NAME.md (the report's blocks, each table followed by its source line) and docs/results/NAME.json
    (payload and the command that wrote them): what the docs cite."""
    source = f"Source: `docs/results/{name}.json` (written with this page by `{cmd}`)."
    blocks = [b + ("\n\n" + source if b.startswith("|") else "") for b in table.strip().split("\n\n")]
    C.atomic_write_text(ROOT / "docs" / f"{name}.md", f"# {title}\n\n[Back to the results]({back})\n\n" + "\n\n".join(blocks) + "\n")
    C.atomic_write_text(ROOT / "docs" / "results" / f"{name}.json", json.dumps({**payload, "command": cmd}, indent=2))

