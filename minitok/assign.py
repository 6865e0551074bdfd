"""Build the learner's notebooks in lessons/ from the solved notebooks in solutions/.

The solutions mark what the learner writes with nbgrader's markers:

    def nearest_code(z, codebook):
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

`assign` replaces each marked region (markers included) with a stub at the same indent,

        # YOUR CODE HERE
        raise NotImplementedError("Exercise nearest_code: write it, then run the check below")

clears every output, execution count and run timestamp, and keeps everything else exactly as it is. A
marked region must sit inside a `def` (the stub raises, and a raise at the top level of a
cell would stop the unsolved notebook). In Markdown cells a marked region becomes a prompt
for the learner's answer.

    python -m minitok assign           # rewrite lessons/ from solutions/
    python -m minitok assign --check   # exit 1 if lessons/ is out of date (CI runs this)
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
DEF_LINE = re.compile(r"^\s*(?:async\s+)?(?:def|class)\s+(\w+)")


class AssignError(ValueError):
    """A solution notebook whose markers cannot be turned into an exercise."""


def _stub(indent: str, name: str) -> list[str]:
    message = f"Exercise {name}: write it, then run the check below"
    return [f"{indent}# YOUR CODE HERE\n", f'{indent}raise NotImplementedError("{message}")\n']


def strip_code(source: str, where: str) -> str:
    """Replace each marked region of a code cell's source with a NotImplementedError stub."""
    lines = source.splitlines(keepends=True)
    out: list[str] = []
    inside = False
    name = None
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise AssignError(f"{where}, line {number}: {BEGIN} inside another region")
            indent = line[: len(line) - len(line.lstrip())]
            if not indent or name is None:
                raise AssignError(
                    f"{where}, line {number}: a solution region must be inside a def "
                    "(a stub that raises at the top level would stop the unsolved lesson)"
                )
            out.extend(_stub(indent, name))
            inside = True
        elif stripped == END:
            if not inside:
                raise AssignError(f"{where}, line {number}: {END} without {BEGIN}")
            inside = False
        elif not inside:
            match = DEF_LINE.match(line)
            if match:
                name = match.group(1)
            out.append(line)
    if inside:
        raise AssignError(f"{where}: {BEGIN} is never closed by {END}")
    text = "".join(out)
    # A last stub line gains a newline the source did not end with: keep the source's ending.
    if not source.endswith("\n") and text.endswith("\n"):
        text = text[:-1]
    return text


def strip_markdown(source: str, where: str) -> str:
    """Replace each marked region of a Markdown cell with a prompt for the learner's answer."""
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)
    text = pattern.sub("*Your answer here.*", source)
    if BEGIN in text or END in text:
        raise AssignError(f"{where}: unbalanced solution markers in a Markdown cell")
    return text


def make_lesson(solution: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The learner's copy of a solution notebook (a new object; the input is not changed)."""
    lesson = nbformat.from_dict(solution)  # deep copy
    for index, cell in enumerate(lesson.cells):
        where = f"{name}, cell {index}"
        cell.metadata.pop("execution", None)  # run timestamps belong to the solved copy
        if cell.cell_type == "code":
            cell.source = strip_code(cell.source, where)
            cell.outputs = []
            cell.execution_count = None
        elif cell.cell_type == "markdown":
            cell.source = strip_markdown(cell.source, where)
    return lesson


def count_exercises(notebook: nbformat.NotebookNode) -> int:
    """How many solution regions a notebook has."""
    return sum(cell.source.count(BEGIN) for cell in notebook.cells)


def build(root: Path) -> dict[Path, str]:
    """Every lesson notebook's text, keyed by its path, built from root/solutions."""
    solutions = sorted((root / "solutions").glob("[0-9][0-9]_*.ipynb"))
    if not solutions:
        raise AssignError(f"no solution notebooks (NN_topic.ipynb) in {root / 'solutions'}")
    built = {}
    for path in solutions:
        solution = nbformat.read(path, as_version=4)
        if count_exercises(solution) == 0:
            raise AssignError(f"{path.name}: has no {BEGIN} regions, so no exercises")
        lesson = make_lesson(solution, path.name)
        built[root / "lessons" / path.name] = nbformat.writes(lesson) + "\n"
    return built


def assign(root: Path, check: bool = False) -> int:
    """Write (or, with check=True, compare) lessons/; return a process exit code."""
    built = build(root)
    stale = []
    for path, text in built.items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            stale.append(path)
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
    orphans = sorted(set((root / "lessons").glob("*.ipynb")) - set(built))
    for path in orphans:
        print(f"lessons/{path.name} has no twin in solutions/ (delete it or add its solution)")
    if check:
        for path in stale:
            print(f"lessons/{path.name} is out of date: run `python -m minitok assign`")
        if stale or orphans:
            return 1
        print(f"lessons/ is up to date with solutions/ ({len(built)} notebooks)")
        return 0
    for path in stale:
        print(f"wrote lessons/{path.name}")
    print(f"{len(built)} lessons built, {len(stale)} changed")
    return 1 if orphans else 0
