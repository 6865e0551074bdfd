"""Every measured number a lesson's prose states agrees with what its solution prints.

A number here is a decimal (0.86, 6.18, 3.7x) or a percentage (36%) in a markdown cell of a
solved notebook; integers are settings and counts (16 x 16, 8 steps) and are not read. Each
must equal, within its own rounding, a number printed by one of the notebook's code cells
(or written in a code cell: a setting such as `temperature=0.5`), unless the prose marks
where it comes from instead:

- a source: a link `[...](...)`, "et al.", "(paper", "README", "Table N", "reports", or a
  benchmark named by its command (`python -m minitok.bench...`) or docs/benchmarks.md;
- a number worked out in the text: "(computed", "(by hand", or written as `= 0.25`;
- code spans, math and fenced blocks are not prose and are skipped.

A stale sentence (the prose says 14.0% where the cell now prints 14.5%) fails here.
"""

from __future__ import annotations

import re

import nbformat
import pytest
from notebooks import CAPSTONE, ROOT, SOLUTIONS

# The lessons with exercises, and the capstone after them (it has none, but prose and numbers)
NOTEBOOKS = [*SOLUTIONS, ROOT / "solutions" / CAPSTONE]

NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(%|x)?(?!\w)")
SOURCE = re.compile(r"\]\(|et al\.|\(paper|README|\bTable \d|\breports\b|minitok\.bench|"
                    r"docs/benchmarks|\((?:computed|by hand|quoted)", re.IGNORECASE)



def _value(whole: str, frac: str | None) -> float:
    return float(whole.replace(",", "") + (frac or ""))


def printed_numbers(notebook) -> list[float]:
    """Every number in the code cells of the notebook: their text outputs and their source."""
    values = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        texts = [cell.source] + [output.get("text", "") or output.get("data", {}).get(
            "text/plain", "") for output in cell.get("outputs", [])]
        for text in texts:
            values += [_value(m.group(1), m.group(2)) for m in NUMBER.finditer(text)]
    return values


def stated_numbers(markdown: str) -> list[tuple[str, float, int, str]]:
    """(as written, value, decimals, sentence) for each measured number the prose states."""
    prose = re.sub(r"```.*?```", " ", markdown, flags=re.S)
    found = []
    for sentence in re.split(r"(?<=[.;:!?])\s+(?=[A-Z(*])|\n\n|\n- ", prose):
        if SOURCE.search(sentence):
            continue
        sentence = re.sub(r"`[^`]*`|\$[^$]*\$", " ", sentence)  # code and math are not claims
        for m in NUMBER.finditer(sentence):
            whole, frac, suffix = m.groups()
            if not (frac or suffix == "%") or re.search(r"=\s*$", sentence[:m.start()]):
                continue
            decimals = len(frac) - 1 if frac else 0
            found.append((m.group(0), _value(whole, frac), decimals, " ".join(sentence.split())))
    return found


def mismatches(notebook) -> list[str]:
    printed = printed_numbers(notebook)
    wrong = []
    for cell in notebook.cells:
        if cell.cell_type != "markdown":
            continue
        for text, value, decimals, sentence in stated_numbers(cell.source):
            if not any(abs(p - value) <= 0.5 * 10**-decimals + 1e-9 for p in printed):
                wrong.append(f"{text!r} in: {sentence[:150]}")
    return wrong


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_every_stated_number_is_printed_or_sourced(path):
    wrong = mismatches(nbformat.read(path, as_version=4))
    assert not wrong, f"{path.name}: numbers its outputs do not print:\n" + "\n".join(wrong)


def test_a_stale_number_is_caught_and_a_sourced_one_is_not():
    notebook = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("print(...)")
    code.outputs = [nbformat.v4.new_output("stream", text="accuracy 14.5%, FD 0.86\n")]
    notebook.cells = [
        code,
        nbformat.v4.new_markdown_cell("It reads 14.0% of them. The floor is 0.86."),
        nbformat.v4.new_markdown_cell("The paper reports 6.18. With beta = 0.25 it is 2.8x."),
    ]
    wrong = mismatches(notebook)
    assert len(wrong) == 2 and "14.0%" in wrong[0] and "2.8x" in wrong[1], wrong


def test_the_capstone_is_covered():
    assert [p.name[:2] for p in NOTEBOOKS][-1] == "10" and NOTEBOOKS[-1].is_file()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_a_lesson_closes_with_what_was_measured_and_the_idea_to_keep(path):
    markdown = [cell.source for cell in nbformat.read(path, as_version=4).cells
                if cell.cell_type == "markdown"]
    closing = "\n".join(markdown[-2:])
    assert "What you measured:" in closing and "The one idea to keep:" in closing, path.name
