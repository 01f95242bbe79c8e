"""A synthetic preference task whose labels are checkable by code, built as minimal pairs.

Most used:  python tasks/toy_task.py make-tiny-model tiny-model     (the random tiny model of the tests)

Each instruction asks for a short text on a topic under explicit constraints. Both responses of a pair
are the same text except for one edit, and the prompt decides which side of the edit wins: every edit
belongs to two opposite constraints ("use at most N words" / "use at least N words", "write in
lowercase only" / "begin with a capital letter", "do not use the letter x" / "use the letter x", and a
required word against a near word of the same pool), drawn equally often. So longer, shorter, capital,
rare letter or a given word wins about half the time across the task, and a judge that never reads the
prompt stays near chance (tests/test_toy.py checks it with tasks/baselines.py). The winner meets every
constraint, the loser fails exactly the deciding one; the checkers below decide the label. Each row
carries a reference rubric in the project's rubric format and a reference judge trajectory in the
judge format (paper Section 4 and Appendix E), so the same rows serve SFT warm-up, GRPO and evaluation.

    python tasks/toy_task.py --out-dir data --n-train 240 --n-eval 200 --seed 0   # the bundled data/demo_*.jsonl
    python tasks/toy_task.py make-tiny-model tiny-model     # the random tiny model of the tests
    python tasks/toy_task.py demo-splits --out-dir runs/toy_demo/data   # the default demo's splits
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
import random
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the project folder: common.py (run as a script, tasks/ is on the path)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import common as C  # noqa: E402

TOPICS = ["the river", "a garden", "the night sky", "a small town", "the ocean", "a forest walk",
          "an old library", "the first snow", "a busy market", "a mountain trail", "a quiet lake",
          "the city at dawn", "a summer storm", "a bakery", "the harvest", "a lighthouse"]
WORDS = ["light", "stone", "water", "green", "quiet", "bright", "cold", "warm", "wind", "path",
         "bread", "song", "field", "cloud", "glass", "bird", "tree", "road", "sand", "fire",
         "leaf", "moon", "rain", "door", "hill", "boat", "bell", "wood", "salt", "star"]
FILLER = ["the", "a", "and", "with", "under", "over", "near", "past", "into", "on", "soft",
          "slow", "old", "long", "deep", "calm", "still", "wide", "clear", "open"]
LETTERS = ["z", "q", "x", "j", "k", "v"]
# Words that carry one rare letter each: the edit behind the two letter constraints
LETTER_WORDS = {"z": ["haze", "maze", "zone", "zinc", "doze", "gaze"],
                "q": ["quay", "quill", "quilt", "squid", "quest", "quota"],
                "x": ["box", "fox", "wax", "flax", "axe", "hex"],
                "j": ["jar", "jade", "joy", "jam", "jet", "jug"],
                "k": ["oak", "kite", "silk", "milk", "dusk", "elk"],
                "v": ["vine", "dove", "vale", "cave", "wave", "hive"]}
# What responses are made of: no word carries a rare letter, so only a letter edit adds or removes one
BASE = [w for w in WORDS + FILLER if not any(ch in w for ch in LETTERS)]
# Constraints in groups of opposites; a prompt holds at most one constraint of each group
GROUPS = {"word": ("include",), "length": ("max_words", "min_words"), "case": ("lowercase", "capital_start"),
          "letter": ("forbid_letter", "require_letter")}
KINDS = tuple(k for kinds in GROUPS.values() for k in kinds)


@dataclass(frozen=True)
class Constraint:
    kind: str      # one of KINDS
    value: str | int | None = None

    def check(self, text: str) -> bool:
        words = text.split()
        if self.kind == "include":
            return self.value in [w.strip(".,;:!?").lower() for w in words]
        if self.kind == "max_words":
            return len(words) <= self.value
        if self.kind == "min_words":
            return len(words) >= self.value
        if self.kind == "lowercase":
            return text == text.lower()
        if self.kind == "capital_start":
            return text[:1].isupper()
        if self.kind == "forbid_letter":
            return self.value not in text.lower()
        if self.kind == "require_letter":
            return self.value in text.lower()
        if self.kind == "exclaim_end":
            return text.rstrip().endswith("!")
        if self.kind == "period_end":
            return text.rstrip().endswith(".")
        raise ValueError(f"unknown constraint kind {self.kind!r}")

    def instruction(self) -> str:
        return {"include": f'include the word "{self.value}"',
                "max_words": f"use at most {self.value} words",
                "min_words": f"use at least {self.value} words",
                "lowercase": "write in lowercase only",
                "capital_start": "begin with a capital letter",
                "forbid_letter": f'do not use the letter "{self.value}"',
                "require_letter": f'use the letter "{self.value}" at least once',
                "exclaim_end": "end with an exclamation mark",
                "period_end": "end with a period"}[self.kind]

    def criterion(self) -> str:
        return {"include": f'The response must include the word "{self.value}".',
                "max_words": f"The response must use at most {self.value} words.",
                "min_words": f"The response must use at least {self.value} words.",
                "lowercase": "The response must be written entirely in lowercase.",
                "capital_start": "The response must begin with a capital letter.",
                "forbid_letter": f'The response must not contain the letter "{self.value}".',
                "require_letter": f'The response must contain the letter "{self.value}".',
                "exclaim_end": "The response must end with an exclamation mark.",
                "period_end": "The response must end with a period."}[self.kind]

    def explain(self, text: str) -> str:
        ok, n = self.check(text), len(text.split())
        if self.kind == "include":
            return f'the word "{self.value}" {"appears" if ok else "does not appear"}.'
        if self.kind == "max_words":
            return f"it has {n} words, {'within' if ok else 'over'} the limit of {self.value}."
        if self.kind == "min_words":
            return f"it has {n} words, {'reaching' if ok else 'under'} the minimum of {self.value}."
        # the case claims quote their evidence (the first word) before the verdict, justification first:
        # copying a word is a step a small model learns; reading a letter's case off the copy is local
        first = text.split()[0].strip(".,;:!?") if text.split() else ""
        if self.kind == "lowercase":
            return f'it begins with "{first}"; ' + ("all letters are lowercase." if ok else "it has an uppercase letter.")
        if self.kind == "capital_start":
            return f'it begins with "{first}", {"a capital" if ok else "a lowercase"} letter.'
        if self.kind in ("exclaim_end", "period_end"):  # quotes its last word with the mark, as the case claims do
            last = text.split()[-1] if text.split() else ""
            return f'it ends with "{last}", ' + ("an exclamation mark." if last.endswith("!") else "a period.")
        present = self.value in text.lower()
        return f'the letter "{self.value}" {"appears" if present else "does not appear"}.'


def satisfied(constraints: list[Constraint], text: str) -> list[bool]:
    return [c.check(text) for c in constraints]


def _sample_constraints(rng: random.Random, head: str, kinds: tuple = KINDS) -> list[Constraint]:
    """Two or more groups, one constraint of each; a letter is never one the topic word carries."""
    groups = [[k for k in g if k in kinds] for g in GROUPS.values()]
    groups = [g for g in groups if g]
    out = []
    for g in rng.sample(groups, k=rng.randint(min(2, len(groups)), len(groups))):
        kind = rng.choice(g)
        value = {"include": lambda: rng.choice([w for w in WORDS if w in BASE and w != head]),
                 "max_words": lambda: rng.randint(8, 14), "min_words": lambda: rng.randint(8, 14),
                 "forbid_letter": lambda: rng.choice([x for x in LETTERS if x not in head]),
                 "require_letter": lambda: rng.choice([x for x in LETTERS if x not in head])}.get(kind, lambda: None)()
        out.append(Constraint(kind, value))
    return out


def _render(words: list[str], capital: bool, mark: str = ".") -> str:
    text = " ".join(words) + mark
    return text[0].upper() + text[1:] if capital else text


def _minimal_pair(rng: random.Random, head: str, constraints: list[Constraint], decisive: int) -> tuple[str, str]:
    """(winner, loser): one text meeting every constraint, and the same text with one edit that breaks
    constraints[decisive] alone. The edit is the same whichever of its two opposite constraints asks."""
    by_kind = {c.kind: c for c in constraints}
    d = constraints[decisive]
    include = by_kind.get("include")
    letter = by_kind.get("forbid_letter") or by_kind.get("require_letter")
    avoid = {include.value} if include else set()
    pool = [w for w in BASE if w not in avoid and w != head]
    # winner length: inside the length constraint's side, the loser's across it when it decides
    limit = by_kind.get("max_words") or by_kind.get("min_words")
    if limit is None:
        n = rng.randint(6, 12)
    elif limit.kind == "max_words":
        n = rng.randint(limit.value - 3, limit.value)
    else:
        n = rng.randint(limit.value, limit.value + 3)
    words = [head] + [rng.choice(pool) for _ in range(n - 1)]
    protected = {0}
    free = lambda: [i for i in range(len(words)) if i not in protected]  # noqa: E731
    if include:
        i = rng.choice(free())
        words[i] = include.value
        protected.add(i)
    letter_word = rng.choice(LETTER_WORDS[letter.value]) if letter else None
    if letter and letter.kind == "require_letter":
        i = rng.choice(free())
        words[i] = letter_word
        protected.add(i)
    case = by_kind.get("lowercase") or by_kind.get("capital_start")
    capital = rng.random() < 0.5 if case is None else case.kind == "capital_start"
    winner = _render(words, capital)
    # the loser: one edit
    lose, lose_capital = list(words), capital
    if d.kind == "include":
        # a near word: another word of the pool required words come from, so no word marks a side
        lose[lose.index(d.value)] = rng.choice([w for w in WORDS if w in BASE and w != d.value and w != head])
    elif d.kind == "max_words":
        for _ in range(rng.randint(d.value + 1, d.value + 4) - n):
            lose.insert(rng.randint(1, len(lose)), rng.choice(pool))
    elif d.kind == "min_words":
        drop = set(rng.sample(free(), n - rng.randint(d.value - 4, d.value - 1)))
        lose = [w for i, w in enumerate(lose) if i not in drop]
    elif d.kind in ("lowercase", "capital_start"):
        lose_capital = not capital
    elif d.kind == "forbid_letter":
        lose[rng.choice(free())] = letter_word
    elif d.kind == "require_letter":
        lose[lose.index(letter_word)] = rng.choice(pool)
    return winner, _render(lose, lose_capital)


def make_rubric(topic: str, constraints: list[Constraint]) -> str:
    items = [f"{c.criterion()} [Hard Rule]" for c in constraints]
    items.append(f"The response should stay on the topic of {topic}. [Principle]")
    return "\n".join(f"{k}. {item}" for k, item in enumerate(items, 1))


def make_judge_trajectory(constraints: list[Constraint], a: str, b: str, winner: str) -> str:
    """The reference trajectory in the judge's layout (common.JUDGE_TEMPLATE)."""
    ok_a, ok_b = satisfied(constraints, a), satisfied(constraints, b)
    # The gatekeeper is read off the rubric (its first hard rule), as in the paper's compliance check
    # (App. E), not the criterion the two responses differ on: naming that one would make the judge
    # decide the pair in its second line, before any analysis, and the analysis would only follow it.
    n = len(constraints) + 1
    lines = ["--- Compliance Check ---",
             f"Identified Gatekeeper Criterion: Criterion 1 [Hard Rule]: {constraints[0].criterion()}",
             "--- Analysis ---"]
    for name, text, ok in (("Response A", a, ok_a), ("Response B", b, ok_b)):
        lines.append(f"**{name}:**")
        for k, c in enumerate(constraints):
            verdict = "Satisfied" if ok[k] else "Not satisfied"
            lines.append(f"- Criterion {k + 1} [Hard Rule]: Justification: {c.explain(text)} {verdict}.")
        lines.append(f"- Criterion {n} [Principle]: Justification: it stays on the topic. Satisfied.")
    win_ok, lose_ok = (ok_a, ok_b) if winner == "A" else (ok_b, ok_a)
    lose = "B" if winner == "A" else "A"
    lines += ["--- Final Judgment ---",
              f"Justification: Response {winner} satisfies {sum(win_ok)} of {len(constraints)} hard rules "
              f"while Response {lose} satisfies {sum(lose_ok)}.",
              f"Winner: Response {winner}"]
    return "\n".join(lines)


def make_example(rng: random.Random, idx: int, prefix: str = "toy", kinds: tuple = KINDS) -> dict:
    topic = rng.choice(TOPICS)
    constraints = _sample_constraints(rng, topic.split()[-1], kinds)
    decisive = rng.randrange(len(constraints))
    good, bad = _minimal_pair(rng, topic.split()[-1], constraints, decisive)
    ok_good, ok_bad = satisfied(constraints, good), satisfied(constraints, bad)
    assert all(ok_good) and [k for k, ok in enumerate(ok_bad) if not ok] == [decisive], (constraints, good, bad)
    winner = rng.choice("AB")
    a, b = (good, bad) if winner == "A" else (bad, good)
    prompt = (f"Write a short text about {topic}. Constraints: "
              + "; ".join(c.instruction() for c in constraints) + ".")
    return {"id": f"{prefix}-{idx:05d}", "prompt": prompt, "response_a": a, "response_b": b,
            "winner": winner, "rubric": make_rubric(topic, constraints),
            "judge_trajectory": make_judge_trajectory(constraints, a, b, winner), "source": "toy",
            "constraints": [[c.kind, c.value] for c in constraints], "decisive": constraints[decisive].kind}


def decision_spans(row: dict) -> list[tuple[int, int]]:
    """Character spans of the row's judge trajectory that decide: those that change when the two
    responses trade places (every claim about A or B, the counts, the winner), found by diffing the
    trajectory against the one of the swapped pair. A trajectory's other tokens follow from the prompt,
    the rubric and the layout."""
    cs = [Constraint(k, v) for k, v in row["constraints"]]
    mine = row["judge_trajectory"]
    swapped = make_judge_trajectory(cs, row["response_b"], row["response_a"], "B" if row["winner"] == "A" else "A")
    spans, start = [], 0
    for a, b in zip(mine.split("\n"), swapped.split("\n"), strict=True):  # the same layout, line by line
        if a != b:
            ops = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
            spans += [(start + i1, start + max(i2, i1 + 1)) for tag, i1, i2, _, _ in ops if tag != "equal"]
        start += len(a) + 1
    return spans


def check_label(row: dict) -> bool:
    """True when the row's label agrees with the code checkers (the implied rule of the implicit task too)."""
    cs = [Constraint(k, v) for k, v in row["constraints"] + ([row["implied"]] if row.get("implied") else [])]
    sa, sb = sum(satisfied(cs, row["response_a"])), sum(satisfied(cs, row["response_b"]))
    return sa != sb and row["winner"] == ("A" if sa > sb else "B")


def make_split(n: int, seed: int, prefix: str, kinds: tuple = KINDS) -> list[dict]:
    rng = random.Random(seed)
    return [make_example(rng, i, prefix, kinds) for i in range(n)]


# ---------------------------------------------------------------------------------------------
# The implicit variant: the request implies the deciding rule, and only a rubric that names it lets
# the judge see it (the task of the rubric phase)
# ---------------------------------------------------------------------------------------------
# Each request names a medium or audience that implies a letter-case rule; the rule itself is never
# written in the request. Eight cues, four per side, so neither case wins without reading the request.
IMPLIED_CUES = {"lowercase": ("as a text message to a friend", "for a minimalist poster",
                              "in the style of a quiet diary", "for a whispered lullaby card"),
                "capital_start": ("as a newspaper headline", "for a formal letter",
                                  "for a museum plaque", "as the first line of a novel")}
ANNOTATED_SHARE = 1 / 3  # training rubrics (pretraining, SFT) name the implied rule this often: when it decides
HELD_OUT_BUCKETS = 5     # a prompt is held out when crc32(prompt) % 5 == 0: no training split ever holds it


def prompt_held_out(prompt: str) -> bool:
    return zlib.crc32(prompt.encode()) % HELD_OUT_BUCKETS == 0


def make_implicit_example(rng: random.Random, idx: int, prefix: str, annotated: bool) -> dict:
    """One minimal pair of the implicit task. The request states one constraint (a required word) and
    implies a case rule through its cue. annotated=True makes a training row as a partial annotator
    would: with probability ANNOTATED_SHARE the implied rule decides the pair and the rubric names it,
    else the stated word decides and the rubric leaves the implied rule out (the responses then share
    their case), so the judge's trajectory always checks exactly what its rubric lists and the label
    always follows from it. annotated=False (RL and held-out rows): the implied rule decides every pair,
    and the row's rubric is the complete reference (stated + implied)."""
    topic = rng.choice(TOPICS)
    head = topic.split()[-1]
    implied_kind = rng.choice(("lowercase", "capital_start"))
    cue = rng.choice(IMPLIED_CUES[implied_kind])
    word = Constraint("include", rng.choice([w for w in WORDS if w in BASE and w != head]))
    implied = Constraint(implied_kind)
    decides_implied = not annotated or rng.random() < ANNOTATED_SHARE
    good, bad = _minimal_pair(rng, head, [word, implied], 1 if decides_implied else 0)
    if not decides_implied:  # the near word of the loser never repeats a word the text already has
        while len(set(bad.lower().split())) < len(set(good.lower().split())):
            good, bad = _minimal_pair(rng, head, [word, implied], 0)
    return _implied_row(rng, f"{prefix}-{idx:05d}", "toy-implicit", topic, cue, word, implied, decides_implied, good, bad)


def _implied_row(rng: random.Random, row_id: str, source: str, topic: str, cue: str, word: Constraint,
                 implied: Constraint, decides_implied: bool, good: str, bad: str, **extra) -> dict:
    """A row of an implied-rule task from its minimal pair: checked, shown in a random order, with the rubric
    and trajectory of what its annotator lists (the implied rule only where it decides) and the reference rubric."""
    ok_good, ok_bad = satisfied([word, implied], good), satisfied([word, implied], bad)
    assert all(ok_good) and sum(ok_bad) == 1, (word, implied, good, bad)
    listed = [word, implied] if decides_implied else [word]
    winner = rng.choice("AB")
    a, b = (good, bad) if winner == "A" else (bad, good)
    prompt = f"Write a short text about {topic} {cue}. Constraints: {word.instruction()}."
    return {"id": row_id, "prompt": prompt, "response_a": a, "response_b": b, "winner": winner,
            "rubric": make_rubric(topic, listed), "judge_trajectory": make_judge_trajectory(listed, a, b, winner),
            "source": source, "constraints": [[c.kind, c.value] for c in listed],
            "implied": [implied.kind, None], "cue": cue, "reference_rubric": make_rubric(topic, [word, implied]),
            "decisive": f"implied {implied.kind}" if decides_implied else "include", **extra}


# rows, seed, annotated (training rubrics), held-out prompts: the splits of experiments/toy_rubric_phase.py, whose
# base is bundled as data/toy_implicit_base; the default demo runs on the same SFT, RL and held-out splits
IMPLICIT_SPLITS = {"pretrain": (4000, 1100, True, False), "sft": (320, 1200, True, False),
                   "rl": (1024, 1300, False, False), "eval": (200, 1400, False, True)}


def implicit_fingerprint() -> str:
    """What a model trained on the implicit task depends on: a digest of rows its generator makes."""
    rows = make_implicit_split(32, 12345, "fp", True, False) + make_implicit_split(32, 12346, "fp", False, True)
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]


def make_implicit_split(n: int, seed: int, prefix: str, annotated: bool, held_out: bool) -> list[dict]:
    """n rows of the implicit task; held_out=True keeps only held-out prompts (prompt_held_out), False
    only the others, so the held-out split's requests were never seen in pretraining, SFT or RL."""
    rng, rows = random.Random(seed), []
    while len(rows) < n:
        row = make_implicit_example(rng, len(rows), prefix, annotated)
        if prompt_held_out(row["prompt"]) == held_out:
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# The two-rule variant: two implied rules, one the SFT roles know and one they barely know, so that
# neither role can learn the second alone (experiments/toy_rubric_phase.py --task two-rule)
# ---------------------------------------------------------------------------------------------
# A request's cue implies either a case rule (as in the implicit task) or a rule on the final mark.
# Training rubrics name the case rule a third of the time and the ending rule END_SHARE of the time, so
# the SFT generator rarely writes the ending rule and the SFT judge has seen few trajectories that check
# it. A rubric phase alone is then rewarded by a judge that checks the ending poorly; a judge phase alone
# trains on cached greedy rubrics that never name it. Only their alternation can lift both.
RULE_FAMILIES = {"case": ("lowercase", "capital_start"), "ending": ("exclaim_end", "period_end")}
ENDING_CUES = {"exclaim_end": ("as a cheer for the home team", "for a party invitation",
                               "as an excited announcement", "for a birthday shout"),
               "period_end": ("as a calm weather report", "for a train timetable note",
                              "as a sober meeting record", "for a plain index card")}
RULE_CUES = {**IMPLIED_CUES, **ENDING_CUES}
END_SHARE = 0.1  # training rubrics name the ending rule this often (when it decides); the case rule ANNOTATED_SHARE


def make_two_rule_example(rng: random.Random, idx: int, prefix: str, annotated: bool,
                          end_share: float = END_SHARE) -> dict:
    """One minimal pair of the two-rule task: the request states a required word and implies one rule
    (a case rule or an ending rule) through its cue; the other family's feature is drawn at random and
    shared by both responses. annotated=True (pretraining, SFT): the implied rule decides, and the rubric
    names it, with the family's share (ANNOTATED_SHARE or end_share), else the word decides and both
    responses meet the implied rule; annotated=False (RL, held-out): the implied rule decides every pair
    and the rubric is the full reference."""
    topic = rng.choice(TOPICS)
    head = topic.split()[-1]
    family = rng.choice(tuple(RULE_FAMILIES))
    implied = Constraint(rng.choice(RULE_FAMILIES[family]))
    cue = rng.choice(RULE_CUES[implied.kind])
    word = Constraint("include", rng.choice([w for w in WORDS if w in BASE and w != head]))
    share = ANNOTATED_SHARE if family == "case" else end_share
    decides_implied = not annotated or rng.random() < share
    pool = [w for w in BASE if w not in (word.value, head)]
    capital = implied.kind == "capital_start" if family == "case" else rng.random() < 0.5
    mark = ("!" if implied.kind == "exclaim_end" else ".") if family == "ending" else rng.choice(".!")
    while True:
        words = [head] + [rng.choice(pool) for _ in range(rng.randint(5, 11))]
        words.insert(rng.randint(1, len(words)), word.value)
        good = _render(words, capital, mark)
        if decides_implied:  # the one edit: the implied feature flipped
            bad = (_render(words, not capital, mark) if family == "case"
                   else _render(words, capital, "." if mark == "!" else "!"))
            break
        near = rng.choice([w for w in WORDS if w in BASE and w not in (word.value, head)])
        if near not in words:  # the near word never repeats a word the text has: no count marks a side
            bad = _render([near if w == word.value else w for w in words], capital, mark)
            break
    return _implied_row(rng, f"{prefix}-{idx:05d}", "toy-two-rule", topic, cue, word, implied, decides_implied,
                        good, bad, family=family)


# rows, seed, annotated, held-out prompts: the splits of experiments/toy_rubric_phase.py --task two-rule
TWO_RULE_SPLITS = {"pretrain": (4000, 2100, True, False), "sft": (320, 2200, True, False),
                   "rl": (1024, 2300, False, False), "eval": (200, 2400, False, True)}


def make_two_rule_split(n: int, seed: int, prefix: str, annotated: bool, held_out: bool,
                        end_share: float = END_SHARE) -> list[dict]:
    """n rows of the two-rule task, held-out prompts only or never (as make_implicit_split). RL and
    held-out splits hold each implied rule equally often (n/4 each, n a multiple of 4), so that a surface
    rule such as "more exclamation marks wins" is at chance on each family."""
    rng, rows, per_kind = random.Random(seed), [], {}
    while len(rows) < n:
        row = make_two_rule_example(rng, len(rows), prefix, annotated, end_share)
        kind = row["implied"][0]
        if prompt_held_out(row["prompt"]) == held_out and (annotated or per_kind.get(kind, 0) < n // 4):
            per_kind[kind] = per_kind.get(kind, 0) + 1
            rows.append(row)
    return rows


def two_rule_fingerprint(end_share: float = END_SHARE) -> str:
    """What a model trained on the two-rule task depends on: a digest of rows its generator makes."""
    rows = (make_two_rule_split(32, 12345, "fp", True, False, end_share)
            + make_two_rule_split(32, 12346, "fp", False, True, end_share))
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# The tiny offline model of the tests and the toy ablation: a byte-level BPE tokenizer trained on
# this task's text, with a Qwen-style chat template, and a small random Qwen3
# ---------------------------------------------------------------------------------------------

TINY_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}{{ '<think>\n\n</think>\n\n' }}{%- endif -%}"
    "{%- endif -%}"
)


def make_tiny_model(out_dir: str | os.PathLike, hidden: int = 64, layers: int = 2, heads: int = 4,
                    kv_heads: int = 2, vocab: int = 1024, seed: int = 0, corpus: list[str] | None = None,
                    init_std: float = 0.2) -> Path:
    """A byte-level BPE tokenizer with a Qwen-style chat template and a small random Qwen3 model,
    saved with save_pretrained, so that tests and the demo need no hub."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if corpus is None:
        rows = make_split(200, seed, "corpus")
        corpus = [C.RUBRIC_TEMPLATE, C.JUDGE_TEMPLATE, C.DIRECT_JUDGE_TEMPLATE] + [
            f"{r['prompt']}\n{r['rubric']}\n{r['response_a']}\n{r['response_b']}\n{r['judge_trajectory']}" for r in rows]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  padding_side="left", additional_special_tokens=specials[1:])
    tok.chat_template = TINY_CHAT_TEMPLATE
    tok.save_pretrained(out)
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 3,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      head_dim=hidden // heads, max_position_embeddings=8192, tie_word_embeddings=True,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
                      initializer_range=init_std)
    Qwen3ForCausalLM(cfg).save_pretrained(out, safe_serialization=True)
    return out


def task_fingerprint(kinds: tuple = KINDS) -> str:
    """What a model trained on this task depends on: a digest of rows the generator makes (prompts,
    responses, labels, rubrics, trajectories). Edits elsewhere in this file leave it unchanged."""
    rows = make_split(64, 12345, "fingerprint", kinds)
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]


# The pretrained toy base shipped for the default demo (experiments/toy_ablation.py's base, 2 MB) and the
# splits the demo runs on: the same generator seeds as that driver's SFT, RL and held-out splits.
TOY_BASE = ROOT / "data" / "toy_base"
IMPLICIT_BASE = ROOT / "data" / "toy_implicit_base"  # the default demo's
DEMO_SPLITS = {"sft": (320, 200), "rl": (1024, 300), "eval": (200, 400)}  # rows, seed


def demo_splits(out_dir: Path, base: Path = TOY_BASE) -> dict[str, Path]:
    """Write the toy demo's splits, after checking that `base` was pretrained on this very generator
    (its made_by.json records task_fingerprint() or, for the implicit task, implicit_fingerprint()): a
    base from another version is refused."""
    made = base / "made_by.json"
    if not made.exists():
        raise SystemExit(f"error: {made}: missing; a toy base comes from experiments/toy_ablation.py or "
                         "experiments/toy_rubric_phase.py --export-base")
    rec = json.loads(made.read_text())
    if rec.get("task") == "implicit":
        now = implicit_fingerprint()
        if rec.get("task_fingerprint") != now:
            raise SystemExit(f"error: {made}: field 'task_fingerprint' is {rec.get('task_fingerprint')}, but this "
                             f"tasks/toy_task.py makes {now}: the base was pretrained on another version of the implicit "
                             "task; rebuild it with experiments/toy_rubric_phase.py --export-base")
        paths = {}
        for name in ("sft", "rl", "eval"):
            paths[name] = out_dir / f"{name}.jsonl"
            C.write_jsonl_atomic(paths[name], make_implicit_split(*IMPLICIT_SPLITS[name][:2], name, *IMPLICIT_SPLITS[name][2:]))
        return paths
    now = task_fingerprint(tuple(rec.get("kinds", KINDS)))
    if rec.get("task_fingerprint") != now:
        raise SystemExit(f"error: {made}: field 'task_fingerprint' is {rec.get('task_fingerprint')}, but this "
                         f"tasks/toy_task.py makes {now}: the base was pretrained on another version of the task; "
                         "rebuild it with experiments/toy_ablation.py --export-base")
    paths = {}
    for name, (n, seed) in DEMO_SPLITS.items():
        paths[name] = out_dir / f"{name}.jsonl"
        C.write_jsonl_atomic(paths[name], make_split(n, seed, name, tuple(rec["kinds"])))
    return paths


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "demo-splits":
        ap = argparse.ArgumentParser(allow_abbrev=False, prog="tasks/toy_task.py demo-splits", description="the default demo's toy splits")
        ap.add_argument("--out-dir", required=True)
        ap.add_argument("--base", default=str(TOY_BASE), help="the pretrained toy base whose task version to check")
        a = ap.parse_args(sys.argv[2:])
        paths = demo_splits(Path(a.out_dir), Path(a.base))
        print(" ".join(f"{k}={v}" for k, v in paths.items()))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "make-tiny-model":
        ap = argparse.ArgumentParser(allow_abbrev=False, prog="tasks/toy_task.py make-tiny-model",
                                     description="build the offline tiny model")
        ap.add_argument("out_dir", nargs="?", default="tiny-model")
        ap.add_argument("--hidden", type=int, default=64)
        ap.add_argument("--layers", type=int, default=2)
        ap.add_argument("--vocab", type=int, default=1024)
        ap.add_argument("--seed", type=C.seed_value, default=0)
        a = ap.parse_args(sys.argv[2:])
        print(make_tiny_model(a.out_dir, hidden=a.hidden, layers=a.layers, vocab=a.vocab, seed=a.seed))
        return
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 usage="%(prog)s [flags: listed below]")
    ap.add_argument("--out-dir", default="data", help="folder for demo_train.jsonl and demo_eval.jsonl")
    ap.add_argument("--n-train", type=int, default=240, help="training rows")
    ap.add_argument("--n-eval", type=int, default=200, help="held-out rows")
    ap.add_argument("--seed", type=C.seed_value, default=0)
    args = ap.parse_args()
    C.write_jsonl_atomic(os.path.join(args.out_dir, "demo_train.jsonl"), make_split(args.n_train, args.seed, "train"))
    C.write_jsonl_atomic(os.path.join(args.out_dir, "demo_eval.jsonl"), make_split(args.n_eval, args.seed + 1, "eval"))
    print(f"wrote {args.n_train} train and {args.n_eval} eval rows to {args.out_dir}/")


if __name__ == "__main__":
    main()
