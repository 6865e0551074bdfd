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
import hashlib
import json
import os
import re
import subprocess
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
            safe_write(path, text)
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


WRITTEN = ".assign-written.json"  # lessons/: the sha256 of each notebook assign wrote here


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _committed_build(root: Path, name: str) -> str | None:
    """What assign writes from the committed solutions/`name` (git HEAD), or None without
    git: a fresh clone's lessons/ is exactly that, so it holds no learner work."""
    try:
        shown = subprocess.run(["git", "-C", str(root), "show", f"HEAD:./solutions/{name}"],
                               capture_output=True, text=True, timeout=30)
        if shown.returncode != 0:
            return None
        solution = nbformat.reads(shown.stdout, as_version=4)
        return nbformat.writes(make_lesson(solution, name)) + "\n"
    except (OSError, subprocess.SubprocessError, ValueError, AssignError):
        return None


def generated(root: Path, path: Path, text: str) -> bool:
    """True when `text` (the lesson at `path` now) is a notebook assign wrote: the one it
    last wrote here (lessons/.assign-written.json), or the one it writes from the committed
    solution. Anything else holds the learner's work, however small the difference."""
    try:
        written = json.loads((path.parent / WRITTEN).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        written = {}
    if isinstance(written, dict) and written.get(path.name) == _sha256(text):
        return True
    return _committed_build(root, path.name) == text


def _remember(folder: Path, written: dict[str, str]) -> None:
    """Record the sha256 of the notebooks just written (see `generated`)."""
    record = folder / WRITTEN
    try:
        known = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    known = {**(known if isinstance(known, dict) else {}), **written}
    safe_write(record, json.dumps(known, indent=1, sort_keys=True) + "\n")


def learner_work(path: Path) -> list[str]:
    """What in the lesson notebook at `path` is plainly the learner's: cells that were run,
    exercises whose stub was replaced (`generated` decides whether any other difference is
    theirs: it is, unless assign wrote exactly this notebook)."""
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


def safe_write(path: Path, text: str, new: bool = False) -> None:
    """Write `text` to `path`, never through a symlink (the file's, or its folder's): an
    AssignError instead. `new`: the file must not exist yet (not even as a dangling link)."""
    if path.parent.is_symlink():
        raise AssignError(f"{path.parent} is a symlink: minitok never writes through one")
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_EXCL if new else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o644)
    except FileExistsError:
        raise AssignError(f"{path} exists (or is a symlink): not overwritten") from None
    except OSError as err:
        if path.is_symlink():
            raise AssignError(f"{path} is a symlink: minitok never writes through one "
                              "(replace it with the file itself)") from None
        raise AssignError(f"cannot write {path}: {err.strerror or err}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _backup(path: Path) -> Path:
    """A copy of `path` beside it, never overwriting an earlier copy (nor a symlink)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    backup = path.with_name(f"{path.name}.bak-{stamp}")
    n = 1
    while os.path.lexists(backup):
        backup, n = path.with_name(f"{path.name}.bak-{stamp}-{n}"), n + 1
    safe_write(backup, path.read_text(encoding="utf-8"), new=True)
    return backup


def _refuse_symlinks(root: Path) -> None:
    """assign writes lessons/ from solutions/: neither they nor a lesson is a symlink."""
    for folder in (root / "solutions", root / "lessons"):
        if folder.is_symlink():
            raise AssignError(f"{folder} is a symlink: minitok never writes through one")
    for path in sorted((root / "lessons").glob("*.ipynb")):
        if path.is_symlink():
            raise AssignError(f"lessons/{path.name} is a symlink: minitok never writes "
                              "through one (replace it with the file itself)")


def assign(root: Path, check: bool = False, force: bool = False) -> int:
    """Write (or, with check=True, compare) lessons/; return a process exit code.

    A lesson notebook that differs in any way from what assign wrote (`generated`) holds a
    learner's work and is never overwritten: assign says so and exits 1, unless `force`,
    which first keeps a backup beside it. No lesson is written through a symlink.
    """
    built = build(root)
    if not check:
        _refuse_symlinks(root)
    stale, refused, written = [], [], {}
    for path, text in built.items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            written[path.name] = _sha256(text)
            continue
        stale.append(path)
        if check:
            continue
        work = [] if current is None or generated(root, path, current) else (
            learner_work(path) or ["it differs from what assign wrote: a cell added, "
                                   "changed or removed"])
        if work and not force:
            refused.append(path)
            print(f"lessons/{path.name} holds your work ({'; '.join(work[:3])}): not "
                  f"overwritten. Work in workspace/ (`make lab`); to rebuild it anyway, "
                  f"`python -m minitok assign --force` keeps a backup first")
            continue
        if work:
            print(f"kept a backup of lessons/{path.name} in {_backup(path).name}")
        path.parent.mkdir(parents=True, exist_ok=True)
        safe_write(path, text)
        written[path.name] = _sha256(text)
    if not check:
        _remember(root / "lessons", written)
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
    changed = [path for path in stale if path not in refused]
    for path in changed:
        print(f"wrote lessons/{path.name}")
    print(f"{len(built)} lessons built, {len(changed)} changed")
    return 1 if orphans or refused else 0
