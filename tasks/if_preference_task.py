"""A verifiable instruction-following preference task of minimal pairs, labelled by the official
IFEval / IFBench checkers.

Most used:  python tasks/if_preference_task.py --out-dir data      (builds the task once; a rerun reuses it)

Each request is a short writing task plus 1 to 3 constraints whose wording comes from the official
`build_description` of the IFEval (or IFBench) instruction classes shipped by the `if-verifiable`
package. Both responses of a pair are ONE text written by a real model (SmolLM2-135M-Instruct by
default), reduced to plain sentences and put through the same edits: every constraint is enforced
identically on both sides except one, the deciding constraint, where the winner carries the form the
request names and the loser a sibling form from the same pool that the request does not name:

    postscript       P.S. vs P.P.S            end phrase        the named one vs another of the list
    keywords         both named vs one swapped for an unnamed one
    forbidden words  the named two removed vs one named and one other removed (as many deletions)
    case             lowercase vs capitals (and the converse)      sections   Section vs SECTION
    bullets / paragraphs   n vs n - 1 or n + 1                     words      fewer than / at least N
    IFBench (OOD)    word range, exact count of numbers, list marker, keyword in the n-th sentence, names

Because each form is drawn from one pool for winners and losers alike, no surface property (length,
lines, markup, commas, a marker) favours the winner across the task: a judge must read the request.
`tasks/baselines.py` measures that (a prompt-blind classifier and one-line rules; the suite keeps them at
or below 60%). The label always comes from the official `check_following`: a pair is kept only if the
winner passes every constraint and the loser fails exactly the deciding one. Each row also carries a
reference rubric (one [Hard Rule] per constraint, restating its wording, plus one [Principle]) and a
reference judge trajectory in the judge's layout, whose evidence states what the checker sees.

Splits (the paper's IFBench column is the out-of-distribution idea):
    if_train.jsonl   IFEval constraint types, training writing tasks (2,000 pairs over 720 texts)
    if_test.jsonl    IFEval constraint types, held-out writing tasks (200 pairs)
    if_ood.jsonl     IFBench constraint types (never seen in training), held-out writing tasks (200 pairs)

    python tasks/if_preference_task.py --out-dir data --seed 0       # builds once; a rerun reuses the files
    python tasks/if_preference_task.py score-policy --adapter runs/dpo/round1/adapter --out runs/dpo/ifeval.json
    python tasks/if_preference_task.py judge-claims runs/eval      # the judge's per-constraint claims vs the checkers

The model's samples are cached in data/.if_task_texts.jsonl (committed): a rebuild from it runs no model.

Types left out, and why: those whose right form is a fixed marker (a <<title>>, quotation marks, no
commas, highlighted sections, placeholders) would put that marker on the winner only, a cue that needs
no prompt; IFEval number_sentences and capital_word_frequency, IFBench title_case, start_verb and
stop_words need NLTK data that is not installed (and must not be downloaded at run time); most other
IFBench types (palindromes, alliteration, syllable parity, ...) cannot be enforced by an edit.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the project folder: common.py (run as a script, tasks/ is on the path)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# ---------------------------------------------------------------------------------------------
# The official checkers (imported quietly: ifbench tries to download NLTK stop words at import,
# which fails offline with a printed error; none of the checkers used here needs them)
# ---------------------------------------------------------------------------------------------


def _registries() -> tuple[dict, dict, dict]:
    import langdetect
    langdetect.DetectorFactory.seed = 0  # the lowercase / capital checkers detect English: make it deterministic
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        from if_verifiable.ifbench.instructions_registry import INSTRUCTION_DICT as IFBENCH
        from if_verifiable.ifeval.instructions_registry import INSTRUCTION_CONFLICTS
        from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT as IFEVAL
    return IFEVAL, IFBENCH, INSTRUCTION_CONFLICTS


# ---------------------------------------------------------------------------------------------
# Writing tasks (ours); the test and OOD splits use tasks never seen in training
# ---------------------------------------------------------------------------------------------

TRAIN_TASKS = [
    "Write a short note to a neighbour asking them to water your plants while you are away.",
    "Explain in a few sentences why people should drink enough water.",
    "Describe a quiet morning in a small village.",
    "Give a friend some advice on starting to run.",
    "Write a short description of a cozy reading corner.",
    "Explain how to make a cup of tea.",
    "Write a few sentences about why libraries matter.",
    "Describe the smell of rain to someone who has never noticed it.",
    "Write a short thank-you message to a teacher.",
    "Explain what a budget is to a teenager.",
    "Describe a walk along a beach in winter.",
    "Give three tips for keeping a desk tidy.",
    "Write a short invitation to a birthday picnic.",
    "Explain why sleep is important for students.",
    "Describe your ideal weekend in a few sentences.",
    "Write a short review of a imaginary coffee shop.",
    "Explain how bees help plants grow.",
    "Write a short message welcoming a new member to a book club.",
    "Describe a busy train station at rush hour.",
    "Give advice to someone learning to cook.",
    "Explain why it helps to stretch before exercise.",
    "Write a few sentences about a favourite season.",
    "Describe an old tree in a park.",
    "Write a short apology for arriving late to a meeting.",
    "Explain how to plant a seed in a pot.",
    "Write a few sentences encouraging someone before an exam.",
    "Describe a market on a Saturday morning.",
    "Explain why recycling is useful.",
    "Write a short note reminding a team about a deadline.",
    "Describe the view from a mountain top.",
    "Give tips for a first day at a new job.",
    "Explain what makes a good friend.",
    "Write a short story opening about a lost key.",
    "Describe a kitchen while bread is baking.",
    "Explain how to stay calm before a presentation.",
    "Write a few sentences about the joy of music.",
    "Describe a rainy afternoon at home.",
    "Give advice on saving money for a trip.",
    "Explain why people enjoy gardening.",
    "Write a short postcard message from a seaside town.",
    "Describe a snowy street at night.",
    "Explain how to write a good shopping list.",
    "Write a short message congratulating a colleague on a promotion.",
    "Describe a family dinner on a holiday.",
    "Give tips for learning a new language.",
]
HELD_OUT_TASKS = [
    "Write a short note asking a landlord to fix a leaking tap.",
    "Explain in a few sentences why walking is good for health.",
    "Describe a lighthouse on a stormy evening.",
    "Give advice to someone adopting their first cat.",
    "Write a short message inviting friends to a board game night.",
    "Explain how to wash vegetables properly.",
    "Describe a small bakery early in the morning.",
    "Write a few sentences about why trees matter in cities.",
    "Give tips for keeping houseplants alive.",
    "Explain what a volunteer does at a food bank.",
    "Describe a fairground at dusk.",
    "Write a short farewell message to a coworker who is moving away.",
    "Explain why breakfast can help people focus.",
    "Describe a river in early spring.",
    "Give advice on packing for a weekend trip.",
]

# ---------------------------------------------------------------------------------------------
# Minimal pairs. Both responses of a pair are the same sampled text through the same edits: every
# constraint of the request is enforced identically on both sides, except the deciding one, where
# the winner gets the form the request names and the loser a sibling form that the request does
# not name (P.P.S for P.S., another end phrase, one bullet more or fewer, SECTION for Section, ...).
# The sibling forms are drawn from the same pool as the named ones, so each form wins as often as
# it loses across the task: a judge that does not read the request cannot tell them apart.
#
# A spec turns (rng, body sentences) into a Made: the kwargs passed to the official
# build_description, the winning edit and the losing edit (each a function of a Draft). Length
# specs (word counts) know their kwargs only once both sides are rendered: `finish` computes them.
# ---------------------------------------------------------------------------------------------


@dataclass
class Draft:
    body: list[str]                                    # sentences
    prefix: list[str] = field(default_factory=list)    # lines before the body
    layout: str = "paragraph"                          # how the body is written out
    layout_arg: object = None
    extra: list[tuple[int, str]] = field(default_factory=list)  # (position, sentence) added to the body
    suffix: list[str] = field(default_factory=list)    # lines after the body (a P.S.)
    ending: str | None = None                          # a phrase the text must end with
    transforms: list[tuple] = field(default_factory=list)  # whole-text edits, applied last, in order
    keep: int | None = None                            # body sentences kept (the short side of a length pair)

    def render(self) -> str:
        body = self.body[:self.keep] if self.keep else list(self.body)
        for pos, sentence in self.extra:
            body.insert(len(body) if pos < 0 else min(pos, len(body)), sentence)
        text = "\n\n".join(self.prefix + [_layout(body, self.layout, self.layout_arg)] + self.suffix)
        if self.ending:
            text = text.rstrip() + " " + self.ending
        for t in self.transforms:
            text = TRANSFORMS[t[0]](text, *t[1:])
        return text


def _words(text: str) -> int:
    return len(re.findall(r"\w+", text))  # the checkers' count (nltk's RegexpTokenizer(r"\w+"))


def _chunks(items: list[str], n: int) -> list[list[str]]:
    """items in n contiguous, near-equal groups (n <= len(items))."""
    size = len(items) / n
    return [items[round(k * size):round((k + 1) * size)] for k in range(n)]


def _layout(body: list[str], kind: str, arg) -> str:
    if kind == "paragraph":
        return " ".join(body)
    if kind == "bullets":  # arg bullet lines
        return "\n".join("* " + " ".join(c) for c in _chunks(body, min(arg, len(body))))
    if kind == "paragraphs":  # arg paragraphs separated by ***
        return "\n***\n".join(" ".join(c) for c in _chunks(body, min(arg, len(body))))
    if kind == "sections":  # arg = (n, word): n sections headed "word k"
        n, word = arg
        return "\n\n".join(f"{word} {k + 1}\n" + " ".join(c) for k, c in enumerate(_chunks(body, min(n, len(body)))))
    if kind == "separator":  # one sentence a line, each after the marker arg
        return "\n".join(f"{arg} {s}" for s in body)
    raise ValueError(kind)


def _remove_words(text: str, words: list[str]) -> str:
    for w in words:
        text = re.sub(r"\b" + re.escape(w) + r"\b", "", text, flags=re.I)
    return re.sub(r"[ \t]{2,}", " ", text).replace(" .", ".").replace(" ,", ",")


TRANSFORMS = {
    "lower": lambda t: t.lower(),
    "upper": lambda t: t.upper(),
    "remove_words": _remove_words,
}


@dataclass
class Made:
    kwargs: dict | None                   # for build_description (None: finish computes it)
    win: Callable[[Draft], None]
    lose: Callable[[Draft], None]
    finish: Callable[[str, str], dict] | None = None  # (winner text, loser text) -> kwargs


def _set(**attrs) -> Callable[[Draft], None]:
    return lambda d: [setattr(d, k, v) for k, v in attrs.items()] and None


def _add(field_name: str, value) -> Callable[[Draft], None]:
    return lambda d: getattr(d, field_name).append(value)


def _other(rng: random.Random, pool: list, *not_these) -> object:
    return rng.choice([x for x in pool if x not in not_these])


def _count_pair(rng: random.Random, lo: int, hi: int) -> tuple[int, int]:
    """A count n in [lo, hi] and its sibling n - 1 or n + 1 (either, where both stay in [lo - 1, hi + 1])."""
    n = rng.randint(lo, hi)
    return n, n + rng.choice([-1, 1])


PS_LINES = ["I hope this helps.", "Thanks for reading.", "More soon.", "Talk to you later."]
END_PHRASES = ["Any other questions?", "Is there anything else I can help with?",
               "Let me know if you have additional questions."]
KEYWORDS = ["plan", "simple", "morning", "light", "friend", "careful", "garden", "future", "quiet", "bright",
            "patience", "journey"]
KEYWORD_TEMPLATES = ["It is also about {} and {}.", "Think of {} and {} as well.", "This touches on {} and {} too."]
FORBIDDEN = ["the", "and", "is", "it", "of", "to", "in", "with", "a", "you"]
SEPARATORS = ["SEPARATOR", "-->", ">>>", "!?!?"]
NAMES = ["Emma", "Liam", "Sophia", "Jackson", "Olivia", "Noah", "Ava", "Lucas", "Isabella", "Mason"]
NOT_NAMES = {3: "all", 4: "them", 5: "staff", 6: "others", 7: "friends", 8: "everyone"}  # by length
SENTENCE_KEYWORDS = ["harmony", "lantern", "compass", "ribbon", "meadow", "anchor"]


def _present(word: str, text: str) -> bool:
    return re.search(r"\b" + re.escape(word) + r"\b", text, re.I) is not None


def _postscript(rng, body):
    m = rng.choice(["P.S.", "P.P.S"])  # the checker's two markers; neither matches the other's pattern
    line = rng.choice(PS_LINES)
    return Made({"postscript_marker": m}, _add("suffix", f"{m} {line}"),
                _add("suffix", f"{_other(rng, ['P.S.', 'P.P.S'], m)} {line}"))


def _end_phrase(rng, body):
    p = rng.choice(END_PHRASES)
    return Made({"end_phrase": p}, _set(ending=p), _set(ending=_other(rng, END_PHRASES, p)))


def _keywords(rng, body):
    text = " ".join(body)
    free = [k for k in KEYWORDS if not re.search(k, text, re.I)]
    if len(free) < 3:
        return None
    k1, k2, k3 = rng.sample(free, 3)
    tpl, pos = rng.choice(KEYWORD_TEMPLATES), rng.choice([0, -1])
    lost = [k3, k2] if rng.random() < 0.5 else [k1, k3]  # one named keyword swapped for an unnamed one
    return Made({"keywords": [k1, k2]}, _add("extra", (pos, tpl.format(k1, k2))),
                _add("extra", (pos, tpl.format(*lost))))


def _forbidden(rng, body):
    present = [w for w in FORBIDDEN if _present(w, " ".join(body))]
    if len(present) < 3:
        return None
    w1, w2, w3 = rng.sample(present, 3)  # the loser drops w3 instead of w2: as many deletions, one named word kept
    return Made({"forbidden_words": [w1, w2]}, _add("transforms", ("remove_words", [w1, w2])),
                _add("transforms", ("remove_words", [w1, w3])))


def _case(named: str, sibling: str):
    return lambda rng, body: Made({}, _add("transforms", (named,)), _add("transforms", (sibling,)))


def _layout_count(kind: str, lo: int, hi: int, key: str, sibling_lo: int):
    def make(rng, body):
        top = min(hi, len(body) - 1)  # room for one more on the sibling side
        if top < lo:
            return None
        n, other = _count_pair(rng, lo, top)
        other = max(other, sibling_lo)
        return Made({key: n}, _set(layout=kind, layout_arg=n), _set(layout=kind, layout_arg=other))
    return make


def _sections(rng, body):
    if len(body) < 2:
        return None
    n, word = rng.randint(2, min(3, len(body))), rng.choice(["Section", "SECTION"])
    return Made({"section_spliter": word, "num_sections": n}, _set(layout="sections", layout_arg=(n, word)),
                _set(layout="sections", layout_arg=(n, _other(rng, ["Section", "SECTION"], word))))


def _length(make_kwargs: Callable[[random.Random, int, int], dict]):
    """A length constraint: one side keeps every body sentence, the other drops the last one; which one
    the request names (shorter or longer) is drawn at random, and the threshold falls between the two."""
    def make(rng, body):
        if len(body) < 2:
            return None
        short, keep = rng.random() < 0.5, len(body) - 1
        cut = _set(keep=keep)
        return Made(None, cut if short else (lambda d: None), (lambda d: None) if short else cut,
                    finish=lambda w, lo: make_kwargs(rng, _words(w), _words(lo)))
    return make


def _number_words(rng, w: int, other: int) -> dict:
    between = other + 1 + (w - other - 1) // 2 if w > other else w + 1 + (other - w - 1) // 2
    return {"num_words": between, "relation": "at least" if w > other else "less than"}


def _word_range(rng, w: int, other: int) -> dict:
    width = max(2, round(0.08 * w))
    if w < other:
        hi = min(w + rng.randint(0, 2), other - 1)
        return {"min_words": max(1, hi - width), "max_words": hi}
    lo = max(w - rng.randint(0, 2), other + 1)
    return {"min_words": lo, "max_words": lo + width}


def _numbers(rng, body):
    n, other = _count_pair(rng, 2, 4)
    values = rng.sample(range(2, 60), 5)
    say = lambda k: "Keep these numbers in mind: " + ", ".join(map(str, values[:k - 1])) + f" and {values[k - 1]}."
    strip = lambda d: setattr(d, "body", [re.sub(r"\s*\d+", "", s) for s in d.body])  # no other numbers, both sides
    return Made({"N": n}, lambda d: (strip(d), d.extra.append((-1, say(n)))),
                lambda d: (strip(d), d.extra.append((-1, say(other)))))


def _separator(rng, body):
    if len(body) < 2:
        return None
    sep = rng.choice(SEPARATORS)
    return Made({"sep": sep}, _set(layout="separator", layout_arg=sep),
                _set(layout="separator", layout_arg=_other(rng, SEPARATORS, sep)))


def _keyword_sentence(rng, body):
    free = [w for w in SENTENCE_KEYWORDS if w not in " ".join(body).lower()]
    if len(body) < 2 or not free:
        return None
    word, n = rng.choice(free), rng.randint(1, min(3, len(body)))
    moved = n + rng.choice([-1, 1]) if 1 < n < len(body) + 1 else (2 if n == 1 else n - 1)
    sentence = f"Here the word {word} matters."
    return Made({"word": word, "N": n}, _add("extra", (n - 1, sentence)), _add("extra", (moved - 1, sentence)))


def _person_names(rng, body):
    n = rng.randint(2, 4)
    names = rng.sample(NAMES, n)
    say = lambda xs: "Ask " + ", ".join(xs[:-1]) + f" and {xs[-1]} for their view."
    stand_in = NOT_NAMES[len(names[-1])]  # as long as the name it replaces: the loser is no longer or shorter
    return Made({"N": n}, _add("extra", (-1, say(names))), _add("extra", (-1, say(names[:-1] + [stand_in]))))


# id -> spec; both registries' types are checked by their official classes
IFEVAL_MINIMAL = {
    "detectable_content:postscript": _postscript,
    "startend:end_checker": _end_phrase,
    "keywords:existence": _keywords,
    "keywords:forbidden_words": _forbidden,
    "change_case:english_lowercase": _case("lower", "upper"),
    "change_case:english_capital": _case("upper", "lower"),
    "length_constraints:number_words": _length(_number_words),
    "detectable_format:number_bullet_lists": _layout_count("bullets", 2, 4, "num_bullets", 1),
    "length_constraints:number_paragraphs": _layout_count("paragraphs", 2, 4, "num_paragraphs", 1),
    "detectable_format:multiple_sections": _sections,
}
IFBENCH_MINIMAL = {
    "count:word_count_range": _length(_word_range),
    "count:numbers": _numbers,
    "format:list": _separator,
    "sentence:keyword": _keyword_sentence,
    "count:person_names": _person_names,
}
LENGTH_TYPES = {"length_constraints:number_words", "count:word_count_range"}
LAYOUTS = {"detectable_format:number_bullet_lists", "length_constraints:number_paragraphs",
           "detectable_format:multiple_sections", "format:list"}
# Pairs we do not combine: two layouts, a length with a layout, or edits that undo each other.
EXTRA_CONFLICTS = [
    {"change_case:english_lowercase", "change_case:english_capital"},
    {"change_case:english_lowercase", "detectable_format:multiple_sections"},
    {"change_case:english_capital", "detectable_format:multiple_sections"},
    {"keywords:forbidden_words", "startend:end_checker"},
    {"keywords:forbidden_words", "detectable_content:postscript"},
    {"format:list", "sentence:keyword"},
]


@dataclass
class Constraint:
    iid: str
    registry: str          # "ifeval" | "ifbench"
    kwargs: dict
    description: str = ""
    args: dict = field(default_factory=dict)  # the checker's own view of its arguments

    def checker(self, regs):
        cls = (regs[0] if self.registry == "ifeval" else regs[1])[self.iid]
        c = cls(self.iid)
        c.build_description(**self.kwargs)
        return c


def _check(regs, constraints: list[Constraint], text: str) -> list[bool]:
    return [bool(text.strip()) and bool(c.checker(regs).check_following(text)) for c in constraints]


def _compatible(iid: str, chosen: list[str], conflicts: dict) -> bool:
    if any(iid in conflicts.get(c, ()) or c in conflicts.get(iid, ()) for c in chosen):
        return False
    if any({iid, c} in EXTRA_CONFLICTS for c in chosen):
        return False
    kinds = [x for x in chosen + [iid] if x in LAYOUTS | LENGTH_TYPES]
    return len(kinds) <= 1


def choose_types(rng: random.Random, registry: str, k: int, conflicts: dict) -> list[str]:
    specs = IFEVAL_MINIMAL if registry == "ifeval" else IFBENCH_MINIMAL
    chosen: list[str] = []
    for iid in rng.sample(sorted(specs), len(specs)):
        if len(chosen) < k and _compatible(iid, chosen, conflicts):
            chosen.append(iid)
    return chosen


def make_minimal_pair(rng: random.Random, body: list[str], task: str, registry: str, k: int, regs
                      ) -> tuple[list[Constraint], str, str, int] | None:
    """(constraints, winner text, loser text, deciding index), or None when this text cannot carry them.
    The official checkers must agree: the winner passes every constraint, the loser fails exactly the
    deciding one."""
    specs = IFEVAL_MINIMAL if registry == "ifeval" else IFBENCH_MINIMAL
    iids = choose_types(rng, registry, k, regs[2])
    made = [specs[i](rng, body) for i in iids]
    if not iids or any(m is None for m in made):
        return None
    length = [j for j, i in enumerate(iids) if i in LENGTH_TYPES]
    decide = length[0] if length else rng.randrange(len(iids))
    win, lose = Draft(body=list(body)), Draft(body=list(body))
    for j, m in enumerate(made):
        m.win(win)
        (m.lose if j == decide else m.win)(lose)
    w, lo = win.render(), lose.render()
    cs = []
    for iid, m in zip(iids, made):
        kwargs = m.finish(w, lo) if m.finish else m.kwargs
        cls = (regs[0] if registry == "ifeval" else regs[1])[iid]
        c = cls(iid)
        desc = c.build_description(**kwargs)
        cs.append(Constraint(iid, registry, kwargs, desc, dict(c.get_instruction_args() or {})))
    ok_w, ok_l = _check(regs, cs, w), _check(regs, cs, lo)
    if not all(ok_w) or ok_l != [j != decide for j in range(len(cs))] or w.strip() == lo.strip():
        return None
    return cs, w, lo, decide


def plain_sentences(text: str, max_sentences: int = 4, max_words: int = 70) -> list[str]:
    """A model response as plain sentences: markdown and list markers dropped, a sentence cut off
    by the length limit removed, at most max_sentences sentences and about max_words words."""
    text = re.sub(r"(?im)^\s*p\.\s?(?:p\.\s?)?s\b.*$", "", text)  # the model's own postscripts
    text = re.sub(r"[*#_`<>\[\]{}\"]+", "", text)  # markdown, titles, placeholders, quotes
    text = re.sub(r"(?im)^\s*section\s*\d+\s*$", "", text)
    text = re.sub(r"(?m)^\s*(?:[-•]|\d+[.)])\s+", "", text)
    text = re.sub(r"\s+", " ", text).strip()
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
    if sentences and not re.search(r"[.!?]$", sentences[-1]) and len(sentences) > 1:
        sentences = sentences[:-1]
    out, n = [], 0
    for s in sentences[:max_sentences]:
        if out and n + _words(s) > max_words:
            break
        out.append(s if re.search(r"[.!?]$", s) else s + ".")
        n += _words(s)
    return out

# ---------------------------------------------------------------------------------------------
# Reference rubric and judge trajectory (the formats of prompts/rubric.txt and prompts/judge.txt)
# ---------------------------------------------------------------------------------------------

PRINCIPLE = "The response should carry out the requested writing task sensibly and stay on its subject."


def _n(k: int, word: str) -> str:
    return f"{k} {word}" + ("" if k == 1 else "s")


def evidence(iid: str, args: dict, text: str) -> str:
    """What a careful reader sees when checking one constraint: the fact behind the verdict (a count,
    a marker, a missing word), computed the way the official checker does. The reference judge writes
    it before its "met" / "not met", so that the verdict rests on the response's content."""
    a = args or {}
    if iid == "change_case:english_lowercase":
        return "it has capital letters" if any(c.isupper() for c in text) else "every letter is lowercase"
    if iid == "change_case:english_capital":
        return "it has lowercase letters" if any(c.islower() for c in text) else "every letter is a capital"
    if iid == "detectable_content:postscript":
        m = re.search(r"(?im)^\s*(p\.\s?(?:p\.\s?)?s\.?)", text)
        return f"its postscript starts with {m.group(1).upper()}" if m else "it has no postscript"
    if iid == "startend:end_checker":
        ends = text.strip().strip('"').lower().endswith(a.get("end_phrase", "").strip().lower())
        return f"it {'ends' if ends else 'does not end'} with the required phrase"
    if iid == "keywords:existence":
        missing = [k for k in a.get("keywords", []) if not re.search(k, text, re.I)]
        return f"the keyword {missing[0]} is missing" if missing else "every keyword appears"
    if iid == "keywords:forbidden_words":
        present = [w for w in a.get("forbidden_words", []) if _present(w, text)]
        return f"the word {present[0]} appears" if present else "no forbidden word appears"
    if iid == "length_constraints:number_words":
        w, n = _words(text), a.get("num_words", 0)
        below = w < n
        return f"it has {_n(w, 'word')}, {'fewer than' if below else 'at least'} {n}"
    if iid == "detectable_format:number_bullet_lists":
        k = len(re.findall(r"^\s*\*[^\*].*$", text, re.M)) + len(re.findall(r"^\s*-.*$", text, re.M))
        return f"it has {_n(k, 'bullet point')}"
    if iid == "length_constraints:number_paragraphs":
        return f"it has {_n(len([p for p in re.split(r'[ ]?[*][*][*][ ]?', text) if p.strip()]), 'paragraph')}"
    if iid == "detectable_format:multiple_sections":
        word = a.get("section_spliter", "Section")
        return f"it has {_n(len(re.split(r'[ ]?' + word + r'[ ]?[0-9]+[ ]?', text)) - 1, 'section')} marked {word}"
    if iid == "count:word_count_range":
        w, lo, hi = _words(text), a.get("min_words", 0), a.get("max_words", 0)
        return f"it has {_n(w, 'word')}, {'inside' if lo <= w <= hi else 'outside'} {lo} to {hi}"
    if iid == "count:numbers":
        k = len(re.findall(r"\d+", re.sub(r"[^\w\s]", "", text)))
        return f"it has {_n(k, 'number')}"
    if iid == "format:list":
        return f"it has {_n(text.count(a.get('sep', '')), 'item')} marked {a.get('sep', '')}"
    if iid == "sentence:keyword":
        word = a.get("word", "")
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if s]
        where = [str(k + 1) for k, s in enumerate(sentences) if word.lower() in s.lower()]
        return f"the keyword {word} is in sentence {', '.join(where)}" if where else f"the keyword {word} is missing"
    if iid == "count:person_names":
        return f"it names {_n(len({x for x in NAMES if _present(x, text)}), 'person')} from the list"
    return "checked against the requirement"


def make_rubric(constraints: list[Constraint]) -> str:
    items = [f'The response must follow this explicit requirement: "{" ".join(c.description.split())}" [Hard Rule]'
             for c in constraints]
    items.append(f"{PRINCIPLE} [Principle]")
    return "\n".join(f"{k}. {item}" for k, item in enumerate(items, 1))


def make_judge_trajectory(constraints: list[Constraint], a: str, b: str, ok_a: list[bool], ok_b: list[bool],
                          winner: str) -> str:
    n = len(constraints)
    # the gatekeeper comes from the rubric alone (its first hard rule), as in the paper's compliance
    # check; naming the criterion the responses differ on would decide the pair before the analysis
    lines = ["--- Compliance Check ---", "Identified Gatekeeper Criterion: Criterion 1 [Hard Rule]",
             "--- Analysis ---"]
    for name, text, ok in (("Response A", a, ok_a), ("Response B", b, ok_b)):
        lines.append(f"**{name}:**")
        for k, c in enumerate(constraints):
            lines.append(f"- Criterion {k + 1} [Hard Rule]: Justification: {evidence(c.iid, c.args, text)}; "
                         + ("met." if ok[k] else "not met."))
        lines.append(f"- Criterion {n + 1} [Principle]: Justification: it carries out the task; met.")
    loser = "B" if winner == "A" else "A"
    failed = [k + 1 for k in range(n) if not (ok_b if winner == "A" else ok_a)[k]]
    lines += ["--- Final Judgment ---",
              f"Justification: Response {winner} meets every hard rule, while Response {loser} fails "
              + ", ".join(f"criterion {k}" for k in failed) + ".",
              f"Winner: Response {winner}"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Building the splits
# ---------------------------------------------------------------------------------------------

FORMAT_VERSION = 4  # of the rows (3: minimal pairs, both sides from one sampled text; 4: gatekeeper from the rubric)
SPLITS = {  # name -> (registry, writing tasks, id prefix)
    "train": ("ifeval", TRAIN_TASKS, "if-train"),
    "test": ("ifeval", HELD_OUT_TASKS, "if-test"),
    "ood": ("ifbench", HELD_OUT_TASKS, "if-ood"),
}


def make_split(split: str, n: int, seed: int, texts: dict[str, list[str]], regs) -> tuple[list[dict], int]:
    """n labelled minimal pairs of one split, and how many draws it took. Draw i is seeded by
    (seed, split, i) alone, so a row does not depend on the rows before it."""
    registry, tasks, prefix = SPLITS[split]
    rows, draw = [], 0
    while len(rows) < n:
        if draw > 20 * n + 100:
            raise SystemExit(f"error: only {len(rows)} clean {split} pairs of {n} after {draw} draws")
        rng = random.Random(f"{seed}-{split}-{draw}")
        random.seed(f"{seed}-{split}-{draw}")  # build_description draws anything we leave out from `random`
        draw += 1
        task = rng.choice(tasks)
        body = plain_sentences(rng.choice(texts[task]))
        k = rng.choice([1, 2, 2, 3]) if registry == "ifeval" else rng.choice([1, 2])
        made = make_minimal_pair(rng, body, task, registry, k, regs) if body else None
        if made is None:
            continue
        cs, win, lose, decide = made
        rows.append(labelled_row(f"{prefix}-{len(rows):05d}", task, cs, win, lose, decide, swap=rng.random() < 0.5))
    return rows, draw


def labelled_row(row_id: str, task: str, cs: list[Constraint], win: str, lose: str, decide: int, swap: bool) -> dict:
    ok_w = [True] * len(cs)
    ok_l = [j != decide for j in range(len(cs))]
    a, b, ok_a, ok_b = (lose, win, ok_l, ok_w) if swap else (win, lose, ok_w, ok_l)
    winner = "B" if swap else "A"
    return {"id": row_id, "prompt": task + " " + " ".join(" ".join(c.description.split()) for c in cs),
            "response_a": a, "response_b": b, "winner": winner,
            "rubric": make_rubric(cs), "judge_trajectory": make_judge_trajectory(cs, a, b, ok_a, ok_b, winner),
            "source": f"if-{cs[0].registry}",
            "constraints": [{"id": c.iid, "registry": c.registry, "kwargs": c.kwargs} for c in cs],
            "pair": "minimal", "decisive": cs[decide].iid, "satisfied_a": ok_a, "satisfied_b": ok_b}


def check_row(row: dict, regs=None) -> bool:
    """True when the row's label agrees with the official checkers (chosen passes all, the other not)."""
    regs = regs or _registries()
    cs = [Constraint(c["id"], c["registry"], c["kwargs"], "", {}) for c in row["constraints"]]
    ok_a, ok_b = all(_check(regs, cs, row["response_a"])), all(_check(regs, cs, row["response_b"]))
    return ok_a != ok_b and row["winner"] == ("A" if ok_a else "B")


def ifeval_scores(rows: list[dict], responses: list[str], regs=None) -> dict:
    """IFEval's four numbers for a policy's responses to the rows' requests, with the official
    checkers and their loose variants (first/last line dropped, asterisks removed): prompt-level (all
    of a request's constraints met) and instruction-level (share of constraints met), strict and loose."""
    from if_verifiable.common import evaluate_instructions
    regs = regs or _registries()
    per = []
    for row, text in zip(rows, responses):
        ids = [c["id"] for c in row["constraints"]]
        registry = regs[0] if row["constraints"][0]["registry"] == "ifeval" else regs[1]
        results, _ = evaluate_instructions(text, ids, [c["kwargs"] for c in row["constraints"]], row["prompt"], registry)
        per.append(results)
    n_inst = sum(len(r) for r in per)
    out = {"prompt_strict": sum(all(x.strict_pass for x in r) for r in per) / len(per),
           "prompt_loose": sum(all(x.loose_pass for x in r) for r in per) / len(per),
           "instruction_strict": sum(x.strict_pass for r in per for x in r) / n_inst,
           "instruction_loose": sum(x.loose_pass for r in per for x in r) / n_inst}
    out["average"] = sum(out.values()) / 4
    out["prompts"] = len(per)
    return out


def score_policy(model_name: str, adapter: str | None, data: str, out: Path, max_new_tokens: int, dtype: str,
                 batch: int) -> dict:
    """A policy's greedy responses to the requests of `data`, scored by the official checkers."""
    import torch

    import common as C
    rows = [json.loads(line) for line in open(data, encoding="utf-8") if line.strip()]
    tok = C.load_tokenizer(model_name)
    model = C.load_base_model(model_name, device=torch.device("cpu"), dtype=dtype)
    if adapter:
        model = C.attach_lora(model, adapter, trainable=False)
    prompts = [C.chat_prompt_ids(tok, [{"role": "user", "content": r["prompt"]}]) for r in rows]
    texts = C.generate_batched(model, tok, prompts, batch, desc="policy", n=1, max_new_tokens=max_new_tokens,
                               temperature=0.0)
    scores = ifeval_scores(rows, texts)
    C.write_jsonl_atomic(out.with_suffix(".responses.jsonl"), [{"id": r["id"], "response": t} for r, t in zip(rows, texts)])
    C.atomic_write_text(out, json.dumps({"model": model_name, "adapter": adapter, "data": data, **scores}, indent=2))
    return scores


# ---------------------------------------------------------------------------------------------
# Where a judge fails: its met / not met claim for each hard rule against the official checkers
# ---------------------------------------------------------------------------------------------

_CLAIM = re.compile(r"\bcriterion\s+(\d+)\b.*?\b(not\s+met|met)\W*$", re.I)
_SHOWN = re.compile(r"^\s*response\s+([AB])\b", re.I)


def judge_claims(text: str) -> dict[str, dict[int, bool]]:
    """The judge's claim per criterion for each response shown, from the analysis part of its text:
    {'A': {1: True, 2: False}, 'B': {...}} (True = 'met'). A criterion line without a closing
    'met' / 'not met' makes no claim; the final judgment is not read."""
    import common as C
    claims: dict[str, dict[int, bool]] = {"A": {}, "B": {}}
    shown = None
    for line in text.splitlines():
        line = C._MD.sub("", line)  # markdown emphasis, as the verdict and format parsers drop it
        if re.search(r"final\s+judg", line, re.I):
            break
        if m := _SHOWN.match(line):
            shown = m.group(1).upper()
        elif shown and (m := _CLAIM.search(line)):
            claims[shown].setdefault(int(m.group(1)), not m.group(2).lower().startswith("not"))
    return claims


def _requirement(criterion: str) -> str:
    """The requirement a criterion states: its quoted part if any, lower-cased, spacing collapsed."""
    m = re.search(r'"(.+)"', criterion)
    return " ".join((m.group(1) if m else criterion).lower().split()).strip(' ."')


def checkable_criteria(used: list[dict], constraints: list[dict]) -> dict[int, int]:
    """{criterion number in the rubric used: k} for each [Hard Rule] whose requirement is all or part
    of the wording of exactly one constraint k (given as the reference rubric's hard rules, in order),
    so the official checker of constraint k can say whether a claim about it is right."""
    out = {}
    for it in used:
        req = _requirement(it["text"])
        ks = [k for k, c in enumerate(constraints) if len(req) >= 12 and req in _requirement(c["text"])]
        if it["kind"] == "hard_rule" and len(ks) == 1:
            out[it["index"]] = ks[0]
    return out


def claims_report(rows: dict[str, dict], predictions: list[dict], rubrics: dict[str, str] | None) -> dict:
    """How right a judge's per-constraint claims are, and whether its verdict follows from them.

    rows: benchmark rows by id (those with satisfied_a / satisfied_b); predictions: evaluate.py's
    predictions.jsonl; rubrics: the rubric each prompt was judged with (evaluate.py's rubrics.jsonl;
    None for a judge without rubric). A claim counts only where its criterion quotes all or part of
    one constraint's wording (checkable_criteria), so the checker can say if it is right. Returns:
      claims             checkable claims made; no_claim: checkable criteria the text left unclaimed
      said_met_if_met    P(judge says met | the checker says met); said_not_met_if_not: the converse
      balanced           their mean: 0.5 is no information about the response, 1.0 is the checker
      decisive           share of judgements whose own hard-rule claims single out one response
      follows_claims     of those, the share whose Winner is that response
      claims_accuracy    accuracy of the verdict the claims imply (0.5 where they single out none)
      accuracy           accuracy of the judge's own verdicts on the same judgements (0.5 if unparseable)"""
    import common as C
    said = {True: [0, 0], False: [0, 0]}  # truth -> [claims agreeing, claims]
    no_claim = decisive = follows = 0
    implied, actual, judgements = [], [], 0
    for p in predictions:
        row = rows.get(p["unit"])
        if row is None or "satisfied_a" not in row:
            continue
        chosen = row["satisfied_a"] if row["winner"] == "A" else row["satisfied_b"]
        rejected = row["satisfied_b"] if row["winner"] == "A" else row["satisfied_a"]
        truth = {"A": chosen, "B": rejected} if p["chosen_is"] == "A" else {"A": rejected, "B": chosen}
        reference = C.parse_rubric(row["rubric"])
        used = C.parse_rubric(rubrics.get(row["prompt"], "")) if rubrics is not None else []
        checkable = checkable_criteria(used, reference[:len(chosen)])
        hard = [it["index"] for it in used if it["kind"] == "hard_rule"]
        for text, vote in zip(p["judge_texts"], p["votes"]):
            judgements += 1
            claims = judge_claims(text)
            for shown in "AB":
                for index, k in checkable.items():
                    claim = claims[shown].get(index)
                    if claim is None:
                        no_claim += 1
                        continue
                    t = truth[shown][k]
                    said[t][1] += 1
                    said[t][0] += claim == t
            passes = {s: bool(hard) and all(claims[s].get(i) is True for i in hard) for s in "AB"}
            single = passes["A"] != passes["B"]
            pick = ("A" if passes["A"] else "B") if single else None
            decisive += single
            follows += single and vote == pick
            implied.append(0.5 if pick is None else float(pick == p["chosen_is"]))
            actual.append(0.5 if vote is None else float(vote == p["chosen_is"]))
    rate = {t: (said[t][0] / said[t][1] if said[t][1] else None) for t in (True, False)}
    both = None not in rate.values()
    return {"judgements": judgements, "claims": said[True][1] + said[False][1], "no_claim": no_claim,
            "said_met_if_met": rate[True], "said_not_met_if_not": rate[False],
            "balanced": (rate[True] + rate[False]) / 2 if both else None,
            "decisive": decisive / judgements if judgements else None,
            "follows_claims": follows / decisive if decisive else None,
            "claims_accuracy": sum(implied) / len(implied) if implied else None,
            "accuracy": sum(actual) / len(actual) if actual else None}


def _records(path: Path, needs: tuple[str, ...]) -> list[dict]:
    """The rows of a JSONL file through common's record reader; bad input stops with file, line and field."""
    import common as C
    rows = []
    for where, rec, err in C._read_records(Path(path)):
        missing = [k for k in needs if not isinstance(rec, dict) or k not in rec]
        if err or missing:
            raise C.DataError(f"{where}: {err or f'missing field {missing[0]!r}'}")
        rows.append(rec)
    return rows


def claims_of_eval(eval_dir: Path, data: list[Path]) -> dict:
    """claims_report of one evaluate.py output folder over the benchmark files it judged."""
    rows = {r["id"]: r for path in data for r in _records(path, ("id",))}
    preds = _records(eval_dir / "predictions.jsonl", ("unit", "chosen_is", "judge_texts", "votes"))
    rub_path = eval_dir / "rubrics.jsonl"
    rubrics = {r["prompt"]: r["rubric"] for r in _records(rub_path, ("prompt", "rubric"))} if rub_path.exists() else None
    return claims_report(rows, preds, rubrics)


SAMPLE_HINT = " Answer in a short paragraph of three or four sentences."


def sample_texts(model_name: str, tasks: list[str], per_task: int, seed: int, cache: Path, tasks_per_call: int,
                 max_new_tokens: int, temperature: float, dtype: str) -> dict[str, list[str]]:
    """per_task samples of the model's answer to each writing task (no constraints: the constraints are
    enforced by editing, identically on both sides of a pair), appended to `cache` one generate call at a
    time, so an interrupted build resumes where it stopped."""
    import torch

    import common as C
    done: dict[str, list[str]] = {}
    for r in C.read_jsonl_resumable(cache):
        done.setdefault(r["task"], []).extend(r["samples"])
    todo = [t for t in dict.fromkeys(tasks) if len(done.get(t, [])) < per_task]
    if todo:
        tok = C.load_tokenizer(model_name)
        model = C.load_base_model(model_name, device=torch.device("cpu"), dtype=dtype)
        bar = C.progress(total=len(todo), desc="writing samples")
        for s in range(0, len(todo), tasks_per_call):
            chunk = todo[s:s + tasks_per_call]
            torch.manual_seed(seed * 100003 + tasks.index(chunk[0]))  # fixed per task: a resumed build draws the same
            ids = [C.chat_prompt_ids(tok, [{"role": "user", "content": t + SAMPLE_HINT}]) for t in chunk]
            ro = C.generate(model, tok, ids, n=per_task, max_new_tokens=max_new_tokens, temperature=temperature,
                            top_p=0.95)
            rows = [{"task": t, "samples": ro.texts[per_task * j:per_task * (j + 1)]} for j, t in enumerate(chunk)]
            C.append_jsonl(cache, rows)
            for r in rows:
                done[r["task"]] = r["samples"]
            bar.update(len(chunk))
        bar.close()
    return done


TEXTS_PER_TASK = {"train": 16, "held_out": 24}  # samples per writing task; pairs reuse each under other constraints


def build(out_dir: Path, sizes: dict[str, int], seed: int, model: str, batch: int, max_new_tokens: int,
          temperature: float, dtype: str, force: bool = False) -> dict:
    import common as C
    manifest_path = out_dir / "if_task_manifest.json"
    settings = {"sizes": sizes, "seed": seed, "model": model, "max_new_tokens": max_new_tokens,
                "temperature": temperature, "dtype": dtype, "texts_per_task": TEXTS_PER_TASK, "format": FORMAT_VERSION}
    if manifest_path.exists() and not force:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("settings") == settings and all((out_dir / f"if_{s}.jsonl").exists() for s in sizes):
            print(f"{out_dir}: the task is built with these settings (built in {manifest['build_seconds']:.0f} s); "
                  "nothing to do (--force rebuilds)")
            return manifest
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    regs = _registries()
    cache = out_dir / ".if_task_texts.jsonl"
    texts = sample_texts(model, TRAIN_TASKS, TEXTS_PER_TASK["train"], seed, cache, batch, max_new_tokens,
                         temperature, dtype)
    texts.update(sample_texts(model, HELD_OUT_TASKS, TEXTS_PER_TASK["held_out"], seed + 1, cache, batch,
                              max_new_tokens, temperature, dtype))
    sampling_seconds = time.perf_counter() - t0
    if manifest_path.exists() and sampling_seconds < 60:  # the samples came from the cache: keep their cost
        sampling_seconds = json.loads(manifest_path.read_text()).get("sampling_seconds", sampling_seconds)
    counts = {}
    for split, n in sizes.items():
        rows, draws = make_split(split, n, seed, texts, regs)
        C.write_jsonl_atomic(out_dir / f"if_{split}.jsonl", rows)
        deciding: dict[str, int] = {}
        for r in rows:
            deciding[r["decisive"]] = deciding.get(r["decisive"], 0) + 1
        counts[split] = {"rows": n, "draws": draws, "deciding_types": dict(sorted(deciding.items())),
                         "winner_a": sum(r["winner"] == "A" for r in rows)}
    manifest = {"settings": settings, "counts": counts, "build_seconds": time.perf_counter() - t0,
                "sampling_seconds": sampling_seconds}
    C.atomic_write_text(manifest_path, json.dumps(manifest, indent=2))
    print(f"built {', '.join(f'{n} {s}' for s, n in sizes.items())} pairs in {manifest['build_seconds']:.0f} s "
          f"into {out_dir}")
    return manifest


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "score-policy":
        return score_policy_cli(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "judge-claims":
        import common as C
        return C.run_main(lambda: judge_claims_cli(sys.argv[2:]))
    import common as C
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 usage="%(prog)s [flags: listed below]")
    ap.add_argument("--out-dir", default="data", help="folder for if_{train,test,ood}.jsonl")
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--n-ood", type=int, default=200)
    ap.add_argument("--seed", type=C.seed_value, default=0)
    ap.add_argument("--model", default="smollm2-135m", help="the model that writes the responses")
    ap.add_argument("--batch", type=int, default=8, help="writing tasks per generate call (all their samples at once)")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--force", action="store_true", help="rebuild even if the files exist with these settings")
    args = ap.parse_args()
    C.setup_logging()
    build(Path(args.out_dir), {"train": args.n_train, "test": args.n_test, "ood": args.n_ood}, args.seed, args.model,
          args.batch, args.max_new_tokens, args.temperature, args.dtype, args.force)


def score_policy_cli(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, prog="tasks/if_preference_task.py score-policy",
                                 description="IFEval scores (official checkers) of a policy's greedy responses")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--adapter", default=None, help="the policy's LoRA adapter (none: the base model)")
    ap.add_argument("--data", default="data/if_test.jsonl", help="rows with prompt and constraints")
    ap.add_argument("--out", required=True, help="JSON file for the scores (responses go beside it)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    args = ap.parse_args(argv)
    import common as C
    C.setup_logging()
    scores = score_policy(args.model, args.adapter, args.data, Path(args.out), args.max_new_tokens, args.dtype, args.batch)
    print(json.dumps(scores, indent=2))


def judge_claims_cli(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, prog="tasks/if_preference_task.py judge-claims",
                                 description="Checks a judge's per-constraint met / not met claims (evaluate.py's "
                                 "predictions) against the official checkers, and whether its verdicts follow them")
    ap.add_argument("eval_dirs", nargs="+", help="evaluate.py --out folders (predictions.jsonl, rubrics.jsonl)")
    ap.add_argument("--data", action="append", default=None,
                    help="benchmark file(s) the evaluation judged (repeatable; default data/if_test.jsonl and data/if_ood.jsonl)")
    args = ap.parse_args(argv)
    data = [Path(d) for d in (args.data or ["data/if_test.jsonl", "data/if_ood.jsonl"])]
    keys = ("claims", "balanced", "said_met_if_met", "said_not_met_if_not", "decisive", "follows_claims", "claims_accuracy",
            "accuracy")
    for d in args.eval_dirs:
        if not (Path(d) / "predictions.jsonl").exists():
            raise SystemExit(f"error: {d}: no predictions.jsonl (an evaluate.py --out folder is expected)")
    reports = [(d, claims_of_eval(Path(d), data)) for d in args.eval_dirs]
    print("| eval | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
    for d, rep in reports:
        print(f"| {d} | " + " | ".join("-" if rep[k] is None else f"{rep[k]:.3f}" if isinstance(rep[k], float)
                                        else str(rep[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
