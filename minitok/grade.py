"""`minitok grade`: score learners' submitted lesson notebooks, exercise by exercise.

For each submission the grader:

1. reads the file (never writing to it) and finds its lesson from the notebook's
   `from minitok.checks import lessonNN as check` line;
2. keeps only the imports and the def/class blocks of its code cells (the learner's functions,
   without the training cells), exactly what the drift test does for solutions;
3. runs each exercise's check in its own Python process with a time limit, no network, and
   file deletion refused, so an infinite loop, a crash or a destructive call costs that one
   exercise, never the grader;
4. prints a per-exercise verdict and a score, and with --json writes a report an LMS can read.

    minitok grade submissions/*.ipynb --json report.json --timeout 60
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from minitok.checks._core import Result

KEEP = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


class SubmissionError(ValueError):
    """A submission that cannot be graded at all (not a notebook, no lesson)."""


@dataclass
class Report:
    submission: str
    lesson: str | None
    score: int = 0
    max_score: int = 0
    error: str | None = None
    exercises: list[dict] = field(default_factory=list)


def read_notebook(path: Path) -> dict:
    """The notebook as JSON, or a SubmissionError that says what is wrong with the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SubmissionError(f"cannot read {path.name}: {err}") from err
    try:
        notebook = json.loads(text)
    except json.JSONDecodeError as err:
        raise SubmissionError(f"{path.name} is not valid JSON ({err}): not a notebook") from err
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        raise SubmissionError(f"{path.name} is JSON but not a notebook (no 'cells' list)")
    return notebook


def code_cells(notebook: dict) -> list[str]:
    """The source of every code cell, as one string each."""
    sources = []
    for cell in notebook["cells"]:
        if cell.get("cell_type") == "code":
            source = cell.get("source", "")
            sources.append("".join(source) if isinstance(source, list) else source)
    return sources


def lesson_module(notebook: dict) -> str:
    """The check module a lesson imports, e.g. 'minitok.checks.lesson01'."""
    for source in code_cells(notebook):
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "minitok.checks":
                for alias in node.names:
                    if alias.name.startswith("lesson"):
                        return f"minitok.checks.{alias.name}"
    raise SubmissionError("no `from minitok.checks import lessonNN as check` line: which lesson?")


def definitions(notebook: dict) -> str:
    """Imports and def/class blocks of every code cell, in order, as one Python source.

    Cells with a syntax error are skipped (their exercises then show up as not done), and
    IPython magics (`%`, `!`) are dropped.
    """
    kept = []
    for source in code_cells(notebook):
        if source.lstrip().startswith(("%", "!")):
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        tree.body = [node for node in tree.body if isinstance(node, KEEP)]
        if tree.body:
            kept.append(ast.unparse(tree))
    return "\n\n".join(kept) + "\n"


def run_exercise(module: str, name: str, source_file: Path, timeout: float) -> Result:
    """Run one check in a separate process; turn a timeout or a crash into a Result."""
    command = [sys.executable, "-m", "minitok.grade_worker", module, name, str(source_file)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, cwd=source_file.parent
        )
    except subprocess.TimeoutExpired:
        return Result(name, "error", f"timed out after {timeout:g} s (an infinite loop?)",
                      "make sure every loop in this exercise ends on small inputs.")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Result(name, "error", f"the process running your code crashed "
                      f"(exit code {done.returncode}): {tail}")
    return Result(**json.loads(lines[-1]))


def grade_one(path: Path, timeout: float) -> Report:
    """Grade one submission; every failure ends up inside the Report, never raised."""
    report = Report(submission=str(path), lesson=None)
    try:
        notebook = read_notebook(path)
        module = lesson_module(notebook)
        checks = importlib.import_module(module)
    except (SubmissionError, ModuleNotFoundError) as err:
        report.error = str(err)
        return report
    from minitok.checks import exercises_in

    report.lesson = module.rsplit(".", 1)[-1]
    names = list(exercises_in(checks))
    report.max_score = len(names)
    with tempfile.TemporaryDirectory(prefix="minitok-grade-") as folder:
        source_file = Path(folder) / "submission_defs.py"
        source_file.write_text(definitions(notebook), encoding="utf-8")
        for name in names:
            result = run_exercise(module, name, source_file, timeout)
            report.exercises.append(result.to_dict())
            report.score += int(result.passed)
    return report


def render(report: Report) -> str:
    lines = [f"{report.submission} ({report.lesson or 'unknown lesson'})"]
    if report.error:
        lines.append(f"  cannot grade: {report.error}")
    for item in report.exercises:
        lines.append("  " + Result(**item).render().replace("\n", "\n  "))
    lines.append(f"  score: {report.score}/{report.max_score}")
    return "\n".join(lines)


def grade(paths: list[Path], json_path: Path | None = None, timeout: float = 60.0) -> int:
    """Grade every submission, print the verdicts, write the JSON report; 1 if any was ungradable."""
    reports = [grade_one(Path(p), timeout) for p in paths]
    for report in reports:
        print(render(report))
    if json_path is not None:
        Path(json_path).write_text(json.dumps([asdict(r) for r in reports], indent=2) + "\n")
        print(f"wrote {json_path}")
    return 1 if any(r.error for r in reports) else 0
