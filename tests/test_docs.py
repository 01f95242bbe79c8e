"""The pages cannot drift from the runs: the README stays a front page, every link works, and every
number of a results table appears in the results file the table names."""

import json
import re

import pytest

from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_the_readme_is_a_front_page():
    assert len((ROOT / "README.md").read_bytes()) <= 15_500


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_and_image_resolves(page):
    text = page.read_text(encoding="utf-8")
    for target in LINK.findall(text):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: link to {target} is broken"
        if anchor and file.suffix == ".md":
            slugs = {re.sub(r"[^\w\- ]", "", h.strip("# ").lower()).replace(" ", "-")
                     for h in file.read_text(encoding="utf-8").splitlines() if h.startswith("#")}
            assert anchor in slugs, f"{page.name}: {target}: no heading '{anchor}' in {file.name}"


def _numbers_of(obj) -> set[str]:
    """Every way a results file's numbers are printed in the tables: as is, as a percentage, rounded."""
    out: set[str] = set()
    if isinstance(obj, dict):
        for v in obj.values():
            out |= _numbers_of(v)
    elif isinstance(obj, list):
        for v in obj:
            out |= _numbers_of(v)
    elif isinstance(obj, bool):
        pass
    elif isinstance(obj, (int, float)):
        out |= {str(obj), f"{obj:.0f}", f"{obj:.1f}", f"{obj:.2f}", f"{obj:.3f}", f"{100 * obj:.1f}", f"{100 * obj:.0f}"}
    return out


def _sourced_tables(text: str):
    """(source files, table lines) for each table that a 'Source: `FILE`' line (or 'Sources: `A`, `B`')
    follows or precedes."""
    blocks = re.split(r"\n\s*\n", text)
    for k, block in enumerate(blocks):
        lines = block.strip().splitlines()
        if not lines or not lines[0].startswith("|"):
            continue
        near = " ".join(blocks[max(0, k - 1):k + 2])
        m = re.search(r"Sources?: ((?:`[^`]+\.json`(?:,\s*|\s+and\s+)?)+)", near)
        if m:
            yield re.findall(r"`([^`]+\.json)`", m.group(1)), lines


def test_every_number_of_a_sourced_table_is_in_its_results_file():
    checked = 0
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for sources, lines in _sourced_tables(text):
            source = " + ".join(sources)
            known = set().union(*(_numbers_of(json.loads((ROOT / f).read_text())) for f in sources))
            for line in lines[2:]:
                cells = line.strip("|").split("|")[1:]  # the first cell names the row
                for number in re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])", " ".join(cells)):
                    assert number in known, f"{page.name}: {number} in '{line[:60]}...' is not in {source}"
                    checked += 1
    assert checked > 20  # the headline table at least is checked


@pytest.mark.parametrize("script", ["sft_warmup.py", "train_judge_phase.py", "train_rubric_phase.py", "evaluate.py",
                                    "policy_dpo.py", "policy_grpo.py", "tasks/if_preference_task.py", "tasks/baselines.py",
                                    "tasks/toy_task.py"])
def test_help_opens_with_what_the_script_does_and_the_command_most_used(script):
    import subprocess
    import sys
    p = subprocess.run([sys.executable, str(ROOT / script), "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    lines = [x for x in p.stdout.splitlines() if x.strip()]
    assert p.returncode == 0 and lines[0].startswith("usage:") and len(lines[0]) < 80  # no wall of flags first
    most = next(i for i, x in enumerate(lines[:6]) if x.startswith("Most used:"))
    what = " ".join(lines[1:most]).strip()
    assert what.endswith(".") and what.count(". ") == 0, what  # one sentence: what it does
    assert f"python {script}" in "\n".join(lines[most:most + 3])


def test_common_opens_with_its_sections_and_their_true_line_ranges():
    """common.py's table of sections names where each starts and ends: a reader jumps there in one step."""
    lines = (ROOT / "common.py").read_text(encoding="utf-8").splitlines()
    starts = [i + 1 for i, line in enumerate(lines[:-1]) if re.fullmatch(r"# =+", line) and re.match(r"# \d\. ", lines[i + 1])]
    ends = [s - 1 for s in starts[1:]] + ["end"]
    table = {int(m.group(1)): (int(m.group(2)), m.group(3)) for m in
             re.finditer(r"^  (\d)\. .*? L(\d+)-(\d+|end) ", "\n".join(lines[:20]), re.M)}
    want = {k + 1: (s, str(e)) for k, (s, e) in enumerate(zip(starts, ends))}
    assert table == want, "common.py's section table should read: " + ", ".join(f"{k}. L{s}-{e}" for k, (s, e) in want.items())
