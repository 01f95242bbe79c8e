"""A verifiable instruction-following preference task, labelled by the official IFEval / IFBench checkers.

Each request is a short writing task plus 1 to 3 constraints whose wording comes from the official
`build_description` of the IFEval (or IFBench) instruction classes shipped by the `if-verifiable`
package. The responses are written by a real model (SmolLM2-135M-Instruct by default, two samples
per request), reduced to plain sentences, and then edited deterministically so that both passing and
failing responses exist:

    chosen    sample 1 with every constraint enforced (e.g. commas removed, a title added, a P.S. added)
    rejected  sample 2 with every constraint enforced but one ("hard" pairs, 70%), or sample 2 as the
              model wrote it ("easy" pairs)

The label always comes from the official `check_following` of every constraint: a pair is kept only
if exactly one of its responses satisfies all constraints, so an edit that fails to do what it meant
costs a pair, never a wrong label. Each row also carries a reference rubric (one [Hard Rule] per
constraint, restating its wording, plus one [Principle]) and a reference judge trajectory in the
judge's layout, for SFT warm-up.

Splits (the paper's IFBench column is the out-of-distribution idea):
    if_train.jsonl   IFEval constraint types, training writing tasks
    if_test.jsonl    IFEval constraint types, held-out writing tasks
    if_ood.jsonl     IFBench constraint types (never seen in training), held-out writing tasks

    python if_preference_task.py --out-dir data --seed 0       # builds once; a rerun reuses the files
    python if_preference_task.py score-policy --adapter runs/dpo/round1/adapter --out runs/dpo/ifeval.json
    python if_preference_task.py judge-claims runs/eval      # the judge's per-constraint claims vs the checkers

Checkers left out, and why: IFEval number_sentences and capital_word_frequency, IFBench title_case,
start_verb, words_position and stop_words need NLTK data that is not installed (and must not be
downloaded at run time); response_language, letter_frequency, keyword frequency, constrained_response,
json_format, two_responses and repeat_prompt have no edit that keeps a response natural; most other
IFBench types (palindromic sentences, alliteration, syllable parity, ...) cannot be enforced by an edit.
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
from dataclasses import dataclass, field
from pathlib import Path

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
# Constraints: the official checker, the arguments we pass to build_description, and a "draft"
# edit that enforces it. Drafts keep the parts of a response apart (prefix lines, body sentences,
# suffix lines, whole-text transforms), so that edits compose in one fixed order.
# ---------------------------------------------------------------------------------------------

NAMES = ["Emma", "Liam", "Sophia", "Jackson", "Olivia", "Noah", "Ava", "Lucas", "Isabella", "Mason"]
PALINDROMES = ["level", "radar", "civic", "refer", "rotor", "madam", "kayak", "stats", "tenet", "racecar"]
CONJUNCTION_SENTENCES = [  # k distinct coordinating conjunctions in the k-th sentence
    "Take your time and enjoy it.",
    "Take your time and enjoy it, but stay focused.",
    "Take your time and enjoy it, but stay focused, or ask for help.",
    "Take your time and enjoy it, but stay focused, or ask for help, so nothing is missed.",
    "Take your time and enjoy it, but stay focused, or ask for help, so nothing is missed, yet keep it simple.",
]


@dataclass
class Draft:
    prefix: list[str] = field(default_factory=list)    # lines before the body (a title)
    body: list[str] = field(default_factory=list)      # sentences
    layout: str = "paragraph"                          # how the body is written out
    layout_arg: object = None
    extra: list[str] = field(default_factory=list)     # sentences appended to the body
    suffix: list[str] = field(default_factory=list)    # lines after the body (a P.S.)
    ending: str | None = None                          # a phrase the text must end with
    transforms: list[str] = field(default_factory=list)  # whole-text edits, applied last, in order
    max_words: int | None = None                       # the whole text has fewer words than this

    def render(self) -> str:
        body = self.body + self.extra
        if self.max_words is not None:
            body = _fit_words(self, body)
        text = "\n\n".join(self.prefix + [_layout(body, self.layout, self.layout_arg)] + self.suffix)
        if self.ending:
            text = text.rstrip() + " " + self.ending
        for t in self.transforms:
            text = TRANSFORMS[t[0]](text, *t[1:])
        return text


def _words(text: str) -> int:
    return len(re.findall(r"\w+", text))


def _fit_words(d: Draft, body: list[str]) -> list[str]:
    """Drop body sentences (then words) until the whole text is under the word limit."""
    fixed = _words(" ".join(d.prefix + d.suffix + [d.ending or ""])) + 6  # headroom for layout words
    kept = list(body)
    while kept and _words(" ".join(kept)) + fixed >= d.max_words:
        if len(kept) > 1:
            kept.pop(len(kept) - 1 - len(d.extra) if len(kept) > len(d.extra) else -1)
        else:
            words = kept[0].split()
            kept = [" ".join(words[:max(1, d.max_words - fixed - 1)]).rstrip(",;:") + "."]
            break
    return kept


def _layout(body: list[str], kind: str, arg) -> str:
    if kind == "paragraph":
        return " ".join(body)
    if kind == "bullets":  # exactly arg bullet lines
        n = arg
        groups = [body[i::n] for i in range(n)] if len(body) >= n else [[s] for s in body] + [["More to add."]] * (n - len(body))
        return "\n".join("* " + " ".join(g) for g in groups)
    if kind == "paragraphs":  # arg paragraphs separated by ***
        n = arg
        chunks = _chunks(body, n)
        return "\n***\n".join(" ".join(c) for c in chunks)
    if kind == "sections":  # arg sections marked "Section k" (or another splitter word)
        n, word = arg
        return "\n\n".join(f"{word} {k + 1}\n" + " ".join(c) for k, c in enumerate(_chunks(body, n)))
    if kind == "template":
        parts = _chunks(body, 3)
        return (f"My Answer: {' '.join(parts[0])}\nMy Conclusion: {' '.join(parts[1])}\n"
                f"Future Outlook: {' '.join(parts[2])}")
    if kind == "separator":
        return "\n".join(f"{arg} {s}" for s in body)
    if kind == "lines":
        return "\n".join(body)
    if kind == "flat_bullets":
        return "\n".join(f"* {s}" for s in body)
    if kind == "stairs":
        return "\n".join(" " * (2 * k) + s for k, s in enumerate(body))
    if kind == "sub_bullets":
        return "\n".join(f"* {s}\n  - {'In short, it helps.' if k % 2 else 'This matters.'}" for k, s in enumerate(body))
    if kind == "one_word_per_line":
        return "\n".join(" ".join(body).split())
    raise ValueError(kind)


def _chunks(items: list[str], n: int) -> list[list[str]]:
    items = items + ["There is more to say."] * max(0, n - len(items))
    size = len(items) / n
    return [items[round(k * size):round((k + 1) * size)] for k in range(n)]


def _remove_words(text: str, words: list[str]) -> str:
    for w in words:
        text = re.sub(r"\b" + re.escape(w) + r"\b", "", text, flags=re.I)
    return re.sub(r"[ \t]{2,}", " ", text).replace(" .", ".").replace(" ,", ",")


TRANSFORMS = {
    "no_comma": lambda t: re.sub(r"\s*,\s*", " ", t),
    "lower": lambda t: t.lower(),
    "upper": lambda t: t.upper(),
    "quote": lambda t: '"' + t.strip().strip('"') + '"',
    "remove_words": _remove_words,
    "no_whitespace": lambda t: re.sub(r"\s+", "", t),
}


def _highlight(body: list[str], n: int) -> list[str]:
    out = list(body) + ["Here is one more point."] * max(0, n - len(body))
    for k in range(n):
        out[k] = f"*{out[k].strip('*')}*"
    return out


def _title(task: str) -> str:
    words = [w for w in re.findall(r"[A-Za-z]+", task) if len(w) > 3][:3] or ["Note"]
    return "<<" + " ".join(w.capitalize() for w in words) + ">>"


# id -> (kwargs sampler, enforce(draft, args, task) -> None). The kwargs are passed to the official
# build_description; `args` is what the checker reports back (get_instruction_args()). VIOLATE holds
# the edits that make a rejected response break a constraint that plain sentences would pass anyway.
IFEVAL_SPECS = {
    "punctuation:no_comma": (lambda r: {}, lambda d, a, t: d.transforms.append(("no_comma",))),
    "change_case:english_lowercase": (lambda r: {}, lambda d, a, t: d.transforms.append(("lower",))),
    "change_case:english_capital": (lambda r: {}, lambda d, a, t: d.transforms.append(("upper",))),
    "detectable_content:postscript": (
        lambda r: {"postscript_marker": r.choice(["P.S.", "P.P.S"])},
        lambda d, a, t: d.suffix.append(f"{a['postscript_marker']} I hope this helps.")),
    "detectable_format:title": (lambda r: {}, lambda d, a, t: d.prefix.insert(0, _title(t))),
    "startend:end_checker": (
        lambda r: {"end_phrase": r.choice(["Any other questions?", "Is there anything else I can help with?",
                                           "Let me know if you have additional questions."])},
        lambda d, a, t: setattr(d, "ending", a["end_phrase"][0].upper() + a["end_phrase"][1:])),
    "startend:quotation": (lambda r: {}, lambda d, a, t: d.transforms.append(("quote",))),
    "detectable_format:number_highlighted_sections": (
        lambda r: {"num_highlights": r.randint(1, 3)},
        lambda d, a, t: setattr(d, "body", _highlight(d.body, a["num_highlights"]))),
    "keywords:existence": (
        lambda r: {"keywords": r.sample(["plan", "simple", "morning", "light", "friend", "careful", "garden", "future"], 2)},
        lambda d, a, t: d.extra.append(f"It is also about {a['keywords'][0]} and {a['keywords'][1]}.")),
    "keywords:forbidden_words": (
        lambda r: {"forbidden_words": r.sample(["the", "and", "very", "you", "is", "it"], 2)},
        lambda d, a, t: d.transforms.append(("remove_words", a["forbidden_words"]))),
    "length_constraints:number_words": (
        lambda r: {"num_words": r.randint(25, 50), "relation": "less than"},
        lambda d, a, t: setattr(d, "max_words", a["num_words"])),
    "detectable_content:number_placeholders": (
        lambda r: {"num_placeholders": r.randint(1, 3)},
        lambda d, a, t: d.extra.append(
            "Reach me at " + " or ".join(["[name]", "[phone number]", "[email]"][:a["num_placeholders"]]) + ".")),
    "detectable_format:number_bullet_lists": (
        lambda r: {"num_bullets": r.randint(2, 4)},
        lambda d, a, t: (setattr(d, "layout", "bullets"), setattr(d, "layout_arg", a["num_bullets"]))),
    "length_constraints:number_paragraphs": (
        lambda r: {"num_paragraphs": r.randint(2, 3)},
        lambda d, a, t: (setattr(d, "layout", "paragraphs"), setattr(d, "layout_arg", a["num_paragraphs"]))),
    "detectable_format:multiple_sections": (
        lambda r: {"section_spliter": r.choice(["Section", "SECTION"]), "num_sections": r.randint(2, 3)},
        lambda d, a, t: (setattr(d, "layout", "sections"),
                         setattr(d, "layout_arg", (a["num_sections"], a["section_spliter"])))),
}
IFBENCH_SPECS = {
    "format:output_template": (lambda r: {}, lambda d, a, t: setattr(d, "layout", "template")),
    "count:person_names": (
        lambda r: {"N": r.randint(2, 4)},
        lambda d, a, t: d.extra.append("Ask " + ", ".join(NAMES[:a["N"]]) + " for their view.")),
    "format:list": (
        lambda r: {"sep": r.choice(["SEPARATOR", "-->", ">>>"])},
        lambda d, a, t: (setattr(d, "layout", "separator"), setattr(d, "layout_arg", a["sep"]))),
    "count:conjunctions": (
        lambda r: {"small_n": r.randint(2, 4)},
        lambda d, a, t: d.extra.append(CONJUNCTION_SENTENCES[a["small_n"] - 1])),
    "count:numbers": (
        lambda r: {"N": r.randint(1, 3)},
        lambda d, a, t: (setattr(d, "body", [re.sub(r"\d+", "", s) for s in d.body]),
                         d.extra.append("Remember these numbers: " + " and ".join(str(7 * k + 3) for k in range(a["N"])) + "."))),
    "format:parentheses": (lambda r: {}, lambda d, a, t: d.extra.append("(See the notes [on this {topic (in [detail])}].)")),
    "words:palindrome": (lambda r: {}, lambda d, a, t: d.extra.append("Some palindromes: " + " ".join(PALINDROMES) + ".")),
    "format:line_indent": (lambda r: {}, lambda d, a, t: setattr(d, "layout", "stairs")),
    "format:sub-bullets": (lambda r: {}, lambda d, a, t: setattr(d, "layout", "sub_bullets")),
    "format:newline": (lambda r: {}, lambda d, a, t: setattr(d, "layout", "one_word_per_line")),
}
CONJUNCTIONS = ["and", "but", "or", "so", "yet", "for", "nor"]
VIOLATE = {
    "format:line_indent": lambda d, a, t: setattr(d, "layout", "lines"),          # one sentence a line, no indent
    "format:sub-bullets": lambda d, a, t: setattr(d, "layout", "flat_bullets"),   # bullets without sub-bullets
    "count:conjunctions": lambda d, a, t: d.transforms.append(("remove_words", CONJUNCTIONS)),
}
# Pairs we do not combine (beyond the official IFEval conflicts): two layouts, or edits that undo each other.
LAYOUTS = {"detectable_format:number_bullet_lists", "length_constraints:number_paragraphs", "detectable_format:multiple_sections",
           "format:output_template", "format:list", "format:line_indent", "format:sub-bullets", "format:newline"}
EXTRA_CONFLICTS = [
    {"change_case:english_lowercase", "change_case:english_capital"},
    {"change_case:english_lowercase", "detectable_format:multiple_sections"},
    {"change_case:english_capital", "keywords:existence"},
    {"detectable_format:number_highlighted_sections", "detectable_format:number_bullet_lists"},
    {"length_constraints:number_words", "detectable_format:multiple_sections"},
    {"format:newline", "count:person_names"}, {"format:newline", "format:parentheses"},
    {"format:newline", "words:palindrome"}, {"format:newline", "count:numbers"},
]


@dataclass
class Constraint:
    iid: str
    registry: str          # "ifeval" | "ifbench"
    kwargs: dict
    description: str
    args: dict             # the checker's own view of its arguments

    def checker(self, regs):
        cls = (regs[0] if self.registry == "ifeval" else regs[1])[self.iid]
        c = cls(self.iid)
        c.build_description(**self.kwargs)
        return c


def _check(regs, constraints: list[Constraint], text: str) -> list[bool]:
    return [bool(text.strip()) and bool(c.checker(regs).check_following(text)) for c in constraints]


def _sample_constraints(rng: random.Random, regs, registry: str, k: int) -> list[Constraint]:
    specs = IFEVAL_SPECS if registry == "ifeval" else IFBENCH_SPECS
    conflicts = regs[2]
    chosen: list[str] = []
    for iid in rng.sample(sorted(specs), len(specs)):
        if len(chosen) == k:
            break
        if any(iid in conflicts.get(c, ()) or c in conflicts.get(iid, ()) for c in chosen):
            continue
        if iid in LAYOUTS and any(c in LAYOUTS for c in chosen):
            continue
        if any({iid, c} in EXTRA_CONFLICTS for c in chosen):
            continue
        chosen.append(iid)
    out = []
    for iid in chosen:
        kwargs = specs[iid][0](rng)
        cls = (regs[0] if registry == "ifeval" else regs[1])[iid]
        c = cls(iid)
        desc = c.build_description(**kwargs)
        out.append(Constraint(iid, registry, kwargs, desc, dict(c.get_instruction_args() or {})))
    return out


def _enforce(body: list[str], constraints: list[Constraint], task: str, skip: int | None = None) -> str:
    """The sentences written out with every constraint enforced, except `skip`, which is broken."""
    d = Draft(body=list(body))
    for k, c in enumerate(constraints):
        if k != skip:
            (IFEVAL_SPECS if c.registry == "ifeval" else IFBENCH_SPECS)[c.iid][1](d, c.args, task)
        elif c.iid in VIOLATE:
            VIOLATE[c.iid](d, c.args, task)
    return d.render()


def plain_sentences(text: str, max_sentences: int = 4, max_words: int = 70) -> list[str]:
    """A model response as plain sentences: markdown and list markers dropped, a sentence cut off
    by the length limit removed, at most max_sentences sentences and about max_words words."""
    text = re.sub(r"(?im)^\s*p\.\s?(?:p\.\s?)?s\b.*$", "", text)  # the model's own postscripts
    text = re.sub(r"[*#_`<>\[\]{}\"]+", "", text)  # markdown, titles, placeholders, quotes: the edits add these
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
    """What a careful reader sees when checking one IFEval constraint: the fact behind the verdict
    (a count, a missing word), computed the way the official checker does. The reference judge
    writes it before its "Met" / "Not met", so that the verdict rests on the response's content."""
    a = args or {}
    if iid == "punctuation:no_comma":
        return f"it has {_n(text.count(','), 'comma')}"
    if iid == "change_case:english_lowercase":
        return "it has capital letters" if any(c.isupper() for c in text) else "every letter is lowercase"
    if iid == "change_case:english_capital":
        return "it has lowercase letters" if any(c.islower() for c in text) else "every letter is a capital"
    if iid == "detectable_content:postscript":
        marker = a.get("postscript_marker", "P.S.")
        has = re.search(r"(?im)^\s*" + re.escape(marker.lower()).replace(r"\ ", r"\s?"), text.lower())
        return f"it has {'a' if has else 'no'} postscript starting with {marker}"
    if iid == "detectable_format:title":
        return "it has a title in double angular brackets" if re.search(r"<<[^\n]+>>", text) else \
            "it has no title in double angular brackets"
    if iid == "startend:end_checker":
        ends = text.strip().strip('"').lower().endswith(a.get("end_phrase", "").strip().lower())
        return f"it {'ends' if ends else 'does not end'} with the required phrase"
    if iid == "startend:quotation":
        t = text.strip()
        return f"it {'is' if len(t) > 1 and t[0] == t[-1] == chr(34) else 'is not'} wrapped in double quotation marks"
    if iid == "detectable_format:number_highlighted_sections":
        k = len([h for h in re.findall(r"\*[^\n\*]*\*", text) if h.strip("*").strip()])
        return f"it has {_n(k, 'highlighted section')}"
    if iid == "keywords:existence":
        missing = [k for k in a.get("keywords", []) if not re.search(k, text, re.I)]
        return f"the keyword {missing[0]} is missing" if missing else "every keyword appears"
    if iid == "keywords:forbidden_words":
        present = [w for w in a.get("forbidden_words", []) if re.search(r"\b" + w + r"\b", text, re.I)]
        return f"the word {present[0]} appears" if present else "no forbidden word appears"
    if iid == "length_constraints:number_words":
        return f"it has {_n(_words(text), 'word')}"
    if iid == "detectable_content:number_placeholders":
        k = len(re.findall(r"\[.*?\]", text))
        return f"it has {_n(k, 'placeholder')} in square brackets"
    if iid == "detectable_format:number_bullet_lists":
        k = len(re.findall(r"^\s*\*[^\*].*$", text, re.M)) + len(re.findall(r"^\s*-.*$", text, re.M))
        return f"it has {_n(k, 'bullet point')}"
    if iid == "length_constraints:number_paragraphs":
        return f"it has {_n(len([p for p in re.split(r'[ ]?[*][*][*][ ]?', text) if p.strip()]), 'paragraph')}"
    if iid == "detectable_format:multiple_sections":
        word = a.get("section_spliter", "Section")
        return f"it has {_n(len(re.split(r'[ ]?' + word + r'[ ]?[0-9]+[ ]?', text)) - 1, 'section')} marked {word}"
    return "checked against the requirement"  # IFBench types (held out, never trained on)


def make_rubric(constraints: list[Constraint]) -> str:
    items = [f'The response must follow this explicit requirement: "{" ".join(c.description.split())}" [Hard Rule]'
             for c in constraints]
    items.append(f"{PRINCIPLE} [Principle]")
    return "\n".join(f"{k}. {item}" for k, item in enumerate(items, 1))


def make_judge_trajectory(constraints: list[Constraint], a: str, b: str, ok_a: list[bool], ok_b: list[bool],
                          winner: str) -> str:
    n = len(constraints)
    gate = next((k for k in range(n) if ok_a[k] != ok_b[k]), 0)
    lines = ["--- Compliance Check ---", f"Identified Gatekeeper Criterion: Criterion {gate + 1} [Hard Rule]",
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

FORMAT_VERSION = 2  # of the rows (2: judge trajectories carry the evidence behind each verdict)
SPLITS = {  # name -> (registry, writing tasks, id prefix)
    "train": ("ifeval", TRAIN_TASKS, "if-train"),
    "test": ("ifeval", HELD_OUT_TASKS, "if-test"),
    "ood": ("ifbench", HELD_OUT_TASKS, "if-ood"),
}


def make_requests(split: str, n: int, seed: int, regs) -> list[dict]:
    registry, tasks, prefix = SPLITS[split]
    rng = random.Random(f"{seed}-{split}")
    out = []
    for i in range(n):
        task = rng.choice(tasks)
        k = rng.choice([1, 2, 2, 3]) if registry == "ifeval" else rng.choice([1, 2])
        random.seed(f"{seed}-{split}-{i}")  # build_description draws anything we leave out from `random`
        cs = _sample_constraints(rng, regs, registry, k)
        prompt = task + " " + " ".join(" ".join(c.description.split()) for c in cs)
        out.append({"id": f"{prefix}-{i:05d}", "task": task, "prompt": prompt, "constraints": cs, "registry": registry,
                    "hard": rng.random() < 0.7, "skip": rng.randrange(len(cs)), "swap": rng.random() < 0.5})
    return out


def make_pair(req: dict, sample_1: str, sample_2: str, regs) -> dict | None:
    """The labelled row of one request and two model samples, or None when no clean pair exists."""
    cs = req["constraints"]
    s1, s2 = plain_sentences(sample_1), plain_sentences(sample_2)
    if not s1 or not s2:
        return None
    chosen = _enforce(s1, cs, req["task"])
    rejected = _enforce(s2, cs, req["task"], skip=req["skip"]) if req["hard"] else " ".join(s2)
    ok_c, ok_r = _check(regs, cs, chosen), _check(regs, cs, rejected)
    if not all(ok_c) or all(ok_r) or chosen.strip() == rejected.strip():
        return None  # the label must come out of the official checkers: exactly one passes everything
    winner = "B" if req["swap"] else "A"
    a, b = (rejected, chosen) if req["swap"] else (chosen, rejected)
    ok_a, ok_b = (ok_r, ok_c) if req["swap"] else (ok_c, ok_r)
    return {"id": req["id"], "prompt": req["prompt"], "response_a": a, "response_b": b, "winner": winner,
            "rubric": make_rubric(cs), "judge_trajectory": make_judge_trajectory(cs, a, b, ok_a, ok_b, winner),
            "source": f"if-{req['registry']}",
            "constraints": [{"id": c.iid, "registry": c.registry, "kwargs": c.kwargs} for c in cs],
            "pair": "hard" if req["hard"] else "easy", "satisfied_a": ok_a, "satisfied_b": ok_b}


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


def sample_responses(model_name: str, prompts: list[str], seed: int, cache: Path, batch: int,
                     max_new_tokens: int, temperature: float, dtype: str) -> dict[str, list[str]]:
    """Two samples per prompt from the model, appended to `cache` batch by batch (resumable)."""
    import torch

    import common as C
    done = {r["prompt"]: r["samples"] for r in C.read_jsonl_resumable(cache)}
    todo = [p for p in dict.fromkeys(prompts) if p not in done]
    if todo:
        tok = C.load_tokenizer(model_name)
        model = C.load_base_model(model_name, device=torch.device("cpu"), dtype=dtype)
        bar = C.progress(total=len(todo), desc="responses")
        for s in range(0, len(todo), batch):
            chunk = todo[s:s + batch]
            torch.manual_seed(seed * 100003 + len(done))  # fixed per batch position: a resumed build draws the same
            ro = C.generate(model, tok, [C.chat_prompt_ids(tok, [{"role": "user", "content": p}]) for p in chunk],
                            n=2, max_new_tokens=max_new_tokens, temperature=temperature, top_p=0.95)
            rows = [{"prompt": p, "samples": ro.texts[2 * j:2 * j + 2]} for j, p in enumerate(chunk)]
            C.append_jsonl(cache, rows)
            done.update((r["prompt"], r["samples"]) for r in rows)
            bar.update(len(chunk))
        bar.close()
    return done


def build(out_dir: Path, sizes: dict[str, int], seed: int, model: str, batch: int, max_new_tokens: int,
          temperature: float, dtype: str, force: bool = False) -> dict:
    import common as C
    manifest_path = out_dir / "if_task_manifest.json"
    settings = {"sizes": sizes, "seed": seed, "model": model, "max_new_tokens": max_new_tokens,
                "temperature": temperature, "dtype": dtype, "format": FORMAT_VERSION}
    if manifest_path.exists() and not force:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("settings") == settings and all((out_dir / f"if_{s}.jsonl").exists() for s in sizes):
            print(f"{out_dir}: the task is built with these settings (built in {manifest['build_seconds']:.0f} s); "
                  "nothing to do (--force rebuilds)")
            return manifest
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    regs = _registries()
    # over-ask: some requests yield no clean pair (about 10-30%, see the manifest)
    requests = {split: make_requests(split, int(n * 1.5) + 8, seed, regs) for split, n in sizes.items()}
    prompts = [r["prompt"] for rs in requests.values() for r in rs]
    t_sample = time.perf_counter()
    samples = sample_responses(model, prompts, seed, out_dir / ".if_task_samples.jsonl", batch, max_new_tokens,
                               temperature, dtype)
    sampling_seconds = time.perf_counter() - t_sample
    if manifest_path.exists() and sampling_seconds < 60:  # the samples came from the cache: keep their cost
        old = json.loads(manifest_path.read_text())
        sampling_seconds = old.get("sampling_seconds", old.get("build_seconds", sampling_seconds))
    counts = {}
    for split, n in sizes.items():
        rows, tried = [], 0
        for req in requests[split]:
            if len(rows) == n:
                break
            tried += 1
            row = make_pair(req, *samples[req["prompt"]], regs)
            if row is not None:
                rows.append(row)
        if len(rows) < n:
            raise SystemExit(f"error: only {len(rows)} clean {split} pairs of {n} asked; raise the over-ask in build()")
        C.write_jsonl_atomic(out_dir / f"if_{split}.jsonl", rows)
        counts[split] = {"rows": n, "requests_tried": tried,
                         "constraint_types": sorted({c["id"] for r in rows for c in r["constraints"]})}
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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default="data", help="folder for if_{train,test,ood}.jsonl")
    ap.add_argument("--n-train", type=int, default=480)
    ap.add_argument("--n-test", type=int, default=96)
    ap.add_argument("--n-ood", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="smollm2-135m", help="the model that writes the responses")
    ap.add_argument("--batch", type=int, default=32, help="requests per generate call (2 samples each)")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--force", action="store_true", help="rebuild even if the files exist with these settings")
    args = ap.parse_args()
    import common as C
    C.setup_logging()
    build(Path(args.out_dir), {"train": args.n_train, "test": args.n_test, "ood": args.n_ood}, args.seed, args.model,
          args.batch, args.max_new_tokens, args.temperature, args.dtype, args.force)


def score_policy_cli(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="if_preference_task.py score-policy",
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
    ap = argparse.ArgumentParser(prog="if_preference_task.py judge-claims",
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
