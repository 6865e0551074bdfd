"""Build the learner's notebooks in lessons/ from the solved notebooks in solutions/.

The solutions mark what the learner writes with nbgrader's markers:

    def nearest_code(z, codebook):
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

`assign` replaces each marked region (markers included) with nbgrader's stub at the same
indent, exactly as `nbgrader generate_assignment` does,

        # YOUR CODE HERE
        raise NotImplementedError()

clears every output, execution count and run timestamp, and keeps everything else exactly as it is. A
marked region must sit inside a `def` (the stub raises, and a raise at the top level of a
cell would stop the unsolved notebook). In Markdown cells a marked region becomes a prompt
for the learner's answer.

For instructors who grade with nbgrader, `add_nbgrader_metadata` gives a solution notebook
nbgrader's cell metadata: each exercise's `def` becomes an autograded-answer cell (grade_id
the exercise's name) and its check call moves to its own autograder-tests cell (1 point,
grade_id check_<name>, locked), which takes the check's printed verdict with it. Under
nbgrader a failing check raises (checks._core: strict mode), so nbgrader scores a notebook as
`minitok grade` does. The split is idempotent.

    python -m minitok assign                      # rewrite lessons/ from solutions/
    python -m minitok assign --check              # exit 1 if lessons/ is out of date (CI)
    python -m minitok assign --force              # also over a lesson holding learner work
    python -m minitok assign --normalize          # solutions/: nbgrader's cells, nbval's tags
"""

from __future__ import annotations

import ast
import datetime
import re
import shutil
from pathlib import Path

import nbformat

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
DEF_LINE = re.compile(r"^\s*(?:async\s+)?(?:def|class)\s+(\w+)")
STUB = ["# YOUR CODE HERE", "raise NotImplementedError()"]  # nbgrader's default code stub
VERDICT = re.compile(r"\[(?:PASS|FAIL|TODO|ERROR)\] (\w+):")
NBVAL_COMMENT = "# NBVAL_CHECK_OUTPUT"  # nbval's old marker, now a cell tag
NBVAL_TAG = "nbval-check-output"


class AssignError(ValueError):
    """A solution notebook whose markers cannot be turned into an exercise."""


def strip_code(source: str, where: str) -> str:
    """Replace each marked region of a code cell's source with nbgrader's stub."""
    out: list[str] = []
    inside = False
    name = None
    for number, line in enumerate(source.split("\n"), start=1):
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
            out.extend(indent + stub for stub in STUB)
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
    return "\n".join(out)


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


# --------------------------------------------------------------------------- nbgrader


def _nbgrader(name: str, test: bool) -> dict:
    """nbgrader's metadata (schema 3) of an autograded answer, or of its test cell."""
    if test:
        return {"grade": True, "grade_id": f"check_{name}", "locked": True, "points": 1,
                "schema_version": 3, "solution": False, "task": False}
    return {"grade": False, "grade_id": name, "locked": False, "schema_version": 3,
            "solution": True, "task": False}


def _check_call(node: ast.stmt) -> str | None:
    """The exercise a `name = check.name(name)` (or `check.name(name)`) statement checks."""
    call = node.value if isinstance(node, (ast.Assign, ast.Expr)) else None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
            and len(call.args) == 1 and isinstance(call.args[0], ast.Name)
            and call.args[0].id == call.func.attr):
        return None
    targets = node.targets if isinstance(node, ast.Assign) else []
    if not all(isinstance(t, ast.Name) and t.id == call.func.attr for t in targets):
        return None
    return call.func.attr


def _split_outputs(outputs: list, names: list[str]) -> dict[str, list]:
    """A cell's outputs shared among its checks: each verdict line (and the lines after it)
    goes to the check of the exercise it names; anything else to the last check."""
    texts: dict[str, list[str]] = {name: [] for name in names}
    others, current = [], names[0]
    for output in outputs:
        if output.get("output_type") != "stream" or output.get("name") != "stdout":
            others.append(output)
            continue
        for line in output["text"].splitlines(keepends=True):
            found = VERDICT.match(line)
            if found and found.group(1) in texts:
                current = found.group(1)
            texts[current].append(line)
    split = {name: [nbformat.v4.new_output("stream", name="stdout", text="".join(lines))]
             if lines else [] for name, lines in texts.items()}
    split[names[-1]] += others
    return split


def nbgrader_cells(cell: nbformat.NotebookNode, where: str) -> list[nbformat.NotebookNode]:
    """One code cell as nbgrader grades it: an answer cell per exercise def it holds, then a
    test cell per check call (see the module docstring). Other cells come back unchanged."""
    if cell.cell_type != "code" or "nbgrader" in cell.metadata:
        return [cell]
    lines = cell.source.split("\n")
    tree = ast.parse(cell.source)
    starts = [min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
              for node in tree.body] + [len(lines) + 1]
    answers, checks = [], []
    for node, first, following in zip(tree.body, starts, starts[1:], strict=False):
        # up to the next statement: a def's closing comment (### END SOLUTION) is its own
        text = "\n".join(lines[first - 1:following - 1]).rstrip()
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and BEGIN in text:
            answers.append((node.name, text))
        elif _check_call(node):
            checks.append((_check_call(node), text))
        elif answers or checks:
            raise AssignError(f"{where}: only exercise defs and their check calls can share "
                              "a cell with an exercise")
    if not checks and not answers:
        return [cell]
    before = "\n".join(lines[:starts[0] - 1]).strip()
    if before and answers:  # comments above the first def stay with it
        answers[0] = (answers[0][0], f"{before}\n{answers[0][1]}")
    outputs = _split_outputs(cell.outputs, [name for name, _ in checks]) if checks else {}
    made = []
    for name, text in answers:
        answer = nbformat.v4.new_code_cell(text, id=f"answer-{name}")
        answer.metadata = {**cell.metadata, "nbgrader": _nbgrader(name, test=False)}
        made.append(answer)
    for name, text in checks:
        test = nbformat.v4.new_code_cell(text, id=f"check-{name}")
        test.metadata = {**cell.metadata, "nbgrader": _nbgrader(name, test=True)}
        test.outputs, test.execution_count = outputs[name], cell.execution_count
        made.append(test)
    return made


def add_nbgrader_metadata(notebook: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The notebook with nbgrader's cells and metadata (a new object; idempotent)."""
    out = nbformat.from_dict(notebook)
    out.cells = [made for index, cell in enumerate(notebook.cells)
                 for made in nbgrader_cells(nbformat.from_dict(cell), f"{name}, cell {index}")]
    return out


def nbval_tags(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook with nbval's `# NBVAL_CHECK_OUTPUT` comments turned into the cell tag
    `nbval-check-output` (nbval reads both; the tag is invisible to learners), and every
    check cell tagged (a verdict is deterministic). A new object."""
    out = nbformat.from_dict(notebook)
    for cell in out.cells:
        if cell.cell_type != "code":
            continue
        lines = cell.source.split("\n")
        kept = [line for line in lines if line.strip() != NBVAL_COMMENT]
        is_check = (cell.metadata.get("nbgrader") or {}).get("grade", False)
        if len(kept) < len(lines) or is_check:
            cell.source = "\n".join(kept).rstrip("\n")
            tags = cell.metadata.setdefault("tags", [])
            if NBVAL_TAG not in tags:
                tags.append(NBVAL_TAG)
    return out


def normalize_solutions(root: Path) -> int:
    """Give every solution notebook nbval's cell tags and nbgrader's cells and metadata
    (idempotent); a process exit code."""
    for path in sorted((root / "solutions").glob("[0-9][0-9]_*.ipynb")):
        solution = add_nbgrader_metadata(nbformat.read(path, as_version=4), path.name)
        text = nbformat.writes(nbval_tags(solution)) + "\n"
        if text != path.read_text(encoding="utf-8"):
            path.write_text(text, encoding="utf-8")
            print(f"wrote solutions/{path.name}")
    return 0


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


def learner_work(path: Path) -> list[str]:
    """Why the lesson notebook at `path` holds a learner's work (empty if it does not):
    cells that were run, or exercises whose stub was replaced. assign never writes those."""
    notebook = nbformat.read(path, as_version=4)
    reasons = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("outputs") or cell.get("execution_count"):
            reasons.append(f"cell {index} was run")
        name = (cell.metadata.get("nbgrader") or {}).get("grade_id")
        solution_cell = (cell.metadata.get("nbgrader") or {}).get("solution")
        if solution_cell and STUB[1] not in cell.source:
            reasons.append(f"exercise {name} is filled in")
    return reasons


def _backup(path: Path) -> Path:
    """A copy of `path` beside it, never overwriting an earlier copy."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    backup = path.with_name(f"{path.name}.bak-{stamp}")
    n = 1
    while backup.exists():
        backup, n = path.with_name(f"{path.name}.bak-{stamp}-{n}"), n + 1
    shutil.copy2(path, backup)
    return backup


def assign(root: Path, check: bool = False, force: bool = False) -> int:
    """Write (or, with check=True, compare) lessons/; return a process exit code.

    A lesson notebook that holds a learner's work is never overwritten: assign says so and
    exits 1, unless `force`, which first keeps a backup beside it.
    """
    built = build(root)
    stale, refused = [], []
    for path, text in built.items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if check:
            continue
        work = learner_work(path) if current is not None else []
        if work and not force:
            refused.append(path)
            print(f"lessons/{path.name} holds your work ({'; '.join(work[:3])}): not "
                  f"overwritten. Work in workspace/ (`make lab`); to rebuild it anyway, "
                  f"`python -m minitok assign --force` keeps a backup first")
            continue
        if work:
            print(f"kept a backup of lessons/{path.name} in {_backup(path).name}")
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
    written = [path for path in stale if path not in refused]
    for path in written:
        print(f"wrote lessons/{path.name}")
    print(f"{len(built)} lessons built, {len(written)} changed")
    return 1 if orphans or refused else 0
