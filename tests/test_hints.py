"""Every exercise's hint ladder teaches instead of handing out the answer.

A ladder is three steps: the idea, the formula or key API, a skeleton with the essential lines
left blank. The last step must not be the solution: at most half of the solution's non-trivial
lines (whitespace normalised; `def`, docstrings, comments, a bare `return x` and the like left
out) may appear in it. The solution is the solved notebook's `### BEGIN SOLUTION` region(s)
inside the exercise's `def` or `class` (named by the `x = check.name(x)` line that checks it).
"""

from __future__ import annotations

import importlib
import re

import nbformat
import pytest
from notebooks import SOLUTIONS

from minitok.checks import exercises_in

TRIVIAL = re.compile(r"(return \w+|return|pass|\.\.\.|else:|try:|[)\]}],?)")


def _normal(line: str) -> str:
    """A line without its comment, with runs of whitespace as one space."""
    return re.sub(r"\s+", " ", line.split("#")[0]).strip()


def _non_trivial(region: str) -> set[str]:
    """The lines of a solution region that carry the answer."""
    lines = set()
    for line in map(_normal, region.splitlines()):
        if line and not line.startswith(("def ", "class ", '"""', "'''", "@")) \
                and not TRIVIAL.fullmatch(line):
            lines.add(line)
    return lines


def _solutions(path) -> dict[str, set[str]]:
    """Exercise name -> the non-trivial lines of its solution, from a solved notebook."""
    code = "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells
                     if cell.cell_type == "code")
    blocks = re.split(r"^(?=(?:def|class) )", code, flags=re.M)  # top-level defs and classes
    regions: dict[str, str] = {}
    for block in blocks:
        name = re.match(r"(?:def|class) (\w+)", block)
        if name:
            found = re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", block, re.S)
            regions[name.group(1)] = regions.get(name.group(1), "") + "\n".join(found)
    checked = dict(re.findall(r"^(\w+) = check\.(\w+)\(\1\)", code, flags=re.M))  # def -> ex
    return {exercise: _non_trivial(regions.get(fn, "")) for fn, exercise in checked.items()}


CASES = []
for _path in SOLUTIONS:
    _module = importlib.import_module(f"minitok.checks.lesson{_path.name[:2]}")
    CASES += [(_path, name, check) for name, check in exercises_in(_module).items()]


@pytest.mark.parametrize("path,name,check", CASES, ids=[f"{p.name[:2]}-{n}" for p, n, _ in CASES])
def test_the_last_hint_leaves_the_answer_to_write(path, name, check):
    assert len(check.hints) == 3, f"{name}: the ladder is idea, formula, skeleton"
    solution = _solutions(path).get(name)
    assert solution, f"{name}: no solution region found in {path.name}"
    skeleton = " ".join(map(_normal, check.hints[-1].splitlines()))
    given = sorted(line for line in solution if line in skeleton)
    assert len(given) <= len(solution) / 2, (
        f"{name}'s last hint gives {len(given)} of the solution's {len(solution)} lines: "
        f"{given}")


def test_the_measure_catches_a_transcribed_hint():
    """The measure itself: a ladder whose last step is the solution fails it."""
    region = ("    ### BEGIN SOLUTION\n    x = a + b  # sum\n    y = x * 2\n    return y\n"
              "    ### END SOLUTION\n")
    lines = _non_trivial(region)
    assert lines == {"x = a + b", "y = x * 2"}
    copied = " ".join(map(_normal, "x = a + b\ny = x * 2\nreturn y".splitlines()))
    assert sum(line in copied for line in lines) > len(lines) / 2
