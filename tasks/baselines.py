"""Trivial judges that never read the prompt or the rubric: what a pairwise task gives away for free.

Most used:  python tasks/baselines.py --train data/if_train.jsonl --eval data/if_test.jsonl --eval data/if_ood.jsonl

A task measures judging only if these stay near chance. Each one sees the two responses alone:

    prompt-blind classifier  logistic regression on hashed word / bigram / character-trigram counts and
                             a few surface counts of response A minus response B, fit on the train split
                             (both orders of every pair, so it cannot learn a position), L2 strength
                             picked on a fifth of the train split held out
    longer wins / more lines wins / more markup wins / fewer commas wins   one-line rules
    always A                 position

Accuracy counts a tie (equal counts) as half right; every pair is scored in both orders, so a
position-only judge gets exactly 50%. Intervals: 95% bootstrap over pairs.

    python tasks/baselines.py --train data/if_train.jsonl --eval data/if_test.jsonl --eval data/if_ood.jsonl \\
        --out docs/results/if_task_baselines.json
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import re
import sys
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the project folder: common.py (run as a script, tasks/ is on the path)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from common import bootstrap  # noqa: E402,F401  (the intervals of every report; here for the task reports)

DIM = 1 << 14  # hashed feature buckets
MARKUP = set("*#-_`<>[]|~=+>!?.:;()\"'")
SURFACE = ["chars", "words", "lines", "markup", "commas", "capitals", "digits"]


@functools.lru_cache(maxsize=1 << 16)  # each rule asks again for the same texts' counts
def surface(text: str) -> dict[str, float]:
    return {"chars": len(text), "words": len(re.findall(r"\w+", text)), "lines": text.count("\n") + 1,
            "markup": sum(ch in MARKUP for ch in text), "commas": text.count(","),
            "capitals": sum(ch.isupper() for ch in text), "digits": sum(ch.isdigit() for ch in text)}


def _bucket(key: str) -> int:
    return zlib.crc32(key.encode()) % DIM


def features(text: str) -> torch.Tensor:
    """Hashed counts of lower-cased words, word bigrams, punctuation marks and character trigrams,
    then log(1 + x) of the surface counts in the last buckets."""
    toks = re.findall(r"\w+|[^\w\s]", text.lower())
    keys = [*("w:" + t for t in toks), *("b:" + a + " " + b for a, b in zip(toks, toks[1:])),
            *("c:" + text[k:k + 3] for k in range(len(text) - 2))]
    # the buckets counted in one call (a tensor's += per key took most of a report's minute)
    counts = torch.bincount(torch.tensor([_bucket(k) for k in keys], dtype=torch.long), minlength=DIM).float()
    s = surface(text)
    return torch.cat([counts, torch.log1p(torch.tensor([float(s[k]) for k in SURFACE]))])


def pair_rows(path: Path) -> list[dict]:
    import common as C
    return C.load_pairs(str(path))


# Opposite constraints of one type (the toy tasks' groups): a pair's type is its group, since a rule like "more
# capitals wins" is right on every "begin with a capital" pair and wrong on every "lowercase only" one by
# construction; the question is whether it wins the type, whose two sides the request decides.
PAIR_TYPES = {"lowercase": "case", "capital_start": "case", "max_words": "length", "min_words": "length",
              "forbid_letter": "letter", "require_letter": "letter", "include": "word",
              "exclaim_end": "ending", "period_end": "ending"}


def pair_type(decisive: str | None) -> str | None:
    if not decisive:
        return None
    implied = decisive.startswith("implied ")
    kind = decisive.removeprefix("implied ")
    return ("implied " if implied else "") + PAIR_TYPES.get(kind, kind)


def raw_rows(path: Path, rows: list[dict]) -> list[dict]:
    """The file's own rows (every field) in the order of `rows` (read by common.load_pairs), by id."""
    import common as C
    by_id = {str(r.get("id")): r for r in C.read_jsonl_resumable(path, repair=False)} if str(path).endswith(".jsonl") else {}
    return [by_id.get(str(r["id"]), {}) for r in rows]


def design(rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """x = features(A) - features(B), y = 1 if A wins; every pair also flipped (x -> -x, y -> 1 - y)."""
    x = torch.stack([features(r["response_a"]) - features(r["response_b"]) for r in rows])
    y = torch.tensor([1.0 if r["winner"] == "A" else 0.0 for r in rows])
    return torch.cat([x, -x]), torch.cat([y, 1 - y])


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float, steps: int = 200) -> torch.Tensor:
    """Weights of an L2-regularised logistic regression without bias (the design is antisymmetric)."""
    scale = x.abs().amax(0).clamp_min(1.0)
    xs = x / scale
    w = torch.zeros(x.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xs @ w, y) + l2 * (w * w).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return (w / scale).detach()


def correct(score: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 for a right call, 0.5 for a tie (score 0), 0 for a wrong one."""
    return torch.where(score == 0, torch.full_like(y, 0.5), ((score > 0).float() == y).float())


def per_pair(c: torch.Tensor) -> torch.Tensor:
    """The two orders of each pair averaged: one number per pair (the bootstrap unit)."""
    n = c.shape[0] // 2
    return (c[:n] + c[n:]) / 2


RULES = {  # name -> score of A over B (positive: A wins)
    "longer wins": lambda a, b: surface(a)["chars"] - surface(b)["chars"],
    "more lines wins": lambda a, b: surface(a)["lines"] - surface(b)["lines"],
    "more markup wins": lambda a, b: surface(a)["markup"] - surface(b)["markup"],
    "fewer commas wins": lambda a, b: surface(b)["commas"] - surface(a)["commas"],
    "always A": lambda a, b: 1.0,
    # rules written per constraint type: the edits a generator makes can leave such traces on one side
    "more capitals wins": lambda a, b: surface(a)["capitals"] - surface(b)["capitals"],
    "fewer repeated words wins": lambda a, b: repeats(b) - repeats(a),
    "more digits wins": lambda a, b: surface(a)["digits"] - surface(b)["digits"],
    "more exclamation marks wins": lambda a, b: a.count("!") - b.count("!"),
}


def repeats(text: str) -> int:
    """Words that occur again (lower-cased): 'the sea and the sky' has 1."""
    words = re.findall(r"\w+", text.lower())
    return len(words) - len(set(words))


def evaluate(train: Path, evals: list[Path], seed: int = 0) -> dict:
    rows = pair_rows(train)
    rng = random.Random(seed)
    order = list(range(len(rows)))
    rng.shuffle(order)
    cut = len(rows) // 5
    fit_rows, val_rows = [rows[i] for i in order[cut:]], [rows[i] for i in order[:cut]]
    xf, yf = design(fit_rows)
    xv, yv = design(val_rows)
    val = {}
    for l2 in (1e-4, 1e-3, 1e-2, 1e-1):
        w = fit_logistic(xf, yf, l2)
        val[l2] = correct(xv @ w, yv).mean().item()
    best = max(val, key=val.get)
    x, y = design(rows)
    w = fit_logistic(x, y, best)
    out = {"train": str(train), "train_pairs": len(rows), "l2": best, "validation_accuracy": val,
           "train_accuracy": correct(x @ w, y).mean().item(), "eval": {}}
    for path in evals:
        ev = pair_rows(path)
        xe, ye = design(ev)
        res = {"pairs": len(ev)}
        named = {"prompt-blind classifier": per_pair(correct(xe @ w, ye)).tolist()}
        for name, rule in RULES.items():
            s = torch.tensor([float(rule(r["response_a"], r["response_b"])) for r in ev]
                             + [float(rule(r["response_b"], r["response_a"])) for r in ev])
            named[name] = per_pair(correct(s, ye)).tolist()
        for name, vals in named.items():
            m, lo, hi = bootstrap(vals)
            res[name] = {"accuracy": m, "ci95": [lo, hi]}
        # per type of pair (the constraint that decides it, where the rows say): a rule may win one type alone
        kinds = [pair_type(r.get("decisive")) for r in raw_rows(path, ev)]
        if any(kinds):
            res["by_type"] = {}
            for kind in sorted({k for k in kinds if k}):
                idx = [i for i, k in enumerate(kinds) if k == kind]
                res["by_type"][kind] = {"pairs": len(idx), **{
                    name: dict(zip(("accuracy", "lo", "hi"), bootstrap([vals[i] for i in idx]))) for name, vals in named.items()}}
        out["eval"][str(path)] = res
    return out


def markdown(report: dict) -> str:
    names = ["prompt-blind classifier", *RULES]
    lines = ["| split | pairs | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for path, res in report["eval"].items():
        cells = [f"{100 * res[n]['accuracy']:.1f} [{100 * res[n]['ci95'][0]:.1f}, {100 * res[n]['ci95'][1]:.1f}]"
                 for n in names]
        lines.append(f"| {Path(path).name} | {res['pairs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    import common as C
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 usage="%(prog)s [flags: listed below]")
    ap.add_argument("--train", required=True, help="pairs the prompt-blind classifier is fit on")
    ap.add_argument("--eval", action="append", required=True, help="held-out pairs (repeatable)")
    ap.add_argument("--out", default=None, help="JSON report (also printed as a table)")
    ap.add_argument("--seed", type=C.seed_value, default=0)
    args = ap.parse_args()
    report = evaluate(Path(args.train), [Path(p) for p in args.eval], args.seed)
    print(markdown(report))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        C.atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    import common as C
    C.run_main(main)
