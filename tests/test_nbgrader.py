"""nbgrader (pinned in the `instructor` extra) on a lesson: generate_assignment gives the same
learner code as `minitok assign`, and autograde scores a solved and an unsolved notebook as
`minitok grade` does.

The solution notebook gets nbgrader's metadata on a temporary copy (assign.add_nbgrader_metadata),
in a temporary nbgrader course.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from notebooks import ROOT

from minitok.tools.assign import add_nbgrader_metadata, make_lesson
from minitok.tools.grade import grade_reports

pytestmark = pytest.mark.slow

NOTEBOOK = "01_vector_quantization.ipynb"


def _nbgrader_problem() -> str | None:
    try:
        import nbgrader  # noqa: F401
    except ImportError:
        return "nbgrader is not installed (pip install -e '.[instructor]')"
    return None


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A one-assignment nbgrader course: ps1 is Lesson 01 with nbgrader's metadata."""
    if _nbgrader_problem():
        pytest.skip(_nbgrader_problem())
    root = tmp_path_factory.mktemp("nbgrader-course")
    shutil.copy(ROOT / "docs" / "nbgrader_config.py", root / "nbgrader_config.py")  # shipped
    solution = nbformat.read(ROOT / "solutions" / NOTEBOOK, as_version=4)
    source = add_nbgrader_metadata(solution, NOTEBOOK)
    (root / "source" / "ps1").mkdir(parents=True)
    nbformat.write(source, root / "source" / "ps1" / NOTEBOOK)
    for student, notebook in (("solved", source), ("unsolved", make_lesson(source, NOTEBOOK)),
                              ("helpers", _with_helpers(source))):
        folder = root / "submitted" / student / "ps1"
        folder.mkdir(parents=True)
        nbformat.write(notebook, folder / NOTEBOOK)
    _nbgrader(root, "generate_assignment", "ps1", "--force")
    return root


def _with_helpers(source: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The solved notebook as a learner with another style writes it: a constant, a lambda
    and a decorator from a new cell, a helper from another cell, and a constant set by a
    cell the grader does not run (a call)."""
    notebook = nbformat.from_dict(source)
    answers = {cell.metadata.get("nbgrader", {}).get("grade_id"): cell for cell in notebook.cells}
    edits = {
        "squared_distances": ("def squared_distances", "@passthrough\ndef squared_distances",
                              "2.0 * z @", "TWO * z @"),
        "perplexity": ("(-(p * p.log()).sum())", "(entropy(p))"),
        "codebook_usage": ("def codebook_usage", "@torch.no_grad()\ndef codebook_usage",
                           "torch.unique(indices).numel()", "count_distinct(indices)"),
        "nearest_code": ("distances.argmin(dim=1)", "distances.argmin(dim=1) * int(2 * HALF)"),
    }
    for name, pairs in edits.items():
        for old, new in zip(pairs[::2], pairs[1::2], strict=True):
            assert old in answers[name].source, (name, old)
            answers[name].source = answers[name].source.replace(old, new, 1)
    first = next(i for i, c in enumerate(notebook.cells) if "lesson01 as check" in c.source)
    notebook.cells[first + 1:first + 1] = [
        nbformat.v4.new_code_cell("TWO = 2.0\nentropy = lambda p: -(p * p.log()).sum()\n\n\n"
                                  "def passthrough(fn):\n    return fn\n\n\n"
                                  "def count_distinct(x):\n    return torch.unique(x).numel()"),
        nbformat.v4.new_code_cell("HALF = float('0.5')  # not kept by the grader: a call")]
    return notebook


def _nbgrader(course: Path, *args: str) -> None:
    """Run nbgrader in the course (it calls alembic: the venv's bin/ goes on PATH). The
    course's nbgrader_config.py, not this environment, sets MINITOK_FAST and the timeout."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]


def test_generate_assignment_gives_the_learner_code_of_minitok_assign(course):
    released = nbformat.read(course / "release" / "ps1" / NOTEBOOK, as_version=4)
    ours = make_lesson(nbformat.read(course / "source" / "ps1" / NOTEBOOK, as_version=4), NOTEBOOK)
    code = [[c.source for c in nb.cells if c.cell_type == "code"] for nb in (released, ours)]
    assert code[0] == code[1]


def test_autograde_scores_as_minitok_grade(course):
    """Solved, unsolved, and solved with notebook-level constants, lambdas, helpers and
    decorators: the same scores, except the one answer that reads a constant set by a call,
    which the grader cannot keep and says so."""
    _nbgrader(course, "autograde", "ps1", "--create", "--force")
    from nbgrader.api import Gradebook

    students = ("solved", "unsolved", "helpers")
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        nbgrader_scores = {student: gradebook.find_submission("ps1", student).score
                           for student in students}
    paths = [course / "submitted" / student / "ps1" / NOTEBOOK for student in students]
    reports, _ = grade_reports(paths, timeout=120, jobs=2)
    minitok = {path.parts[-3]: report for path, report in zip(paths, reports, strict=True)}
    assert nbgrader_scores == {"solved": 7.0, "unsolved": 0.0, "helpers": 7.0}
    assert {student: report.score for student, report in minitok.items()} == {
        "solved": 7, "unsolved": 0, "helpers": 6}
    (missed,) = [e for e in minitok["helpers"].exercises if e["status"] != "passed"]
    assert missed["exercise"] == "nearest_code"
    assert "HALF is not defined outside the notebook" in missed["message"]
    assert "it calls a function" in missed["message"]


def test_the_shipped_config_sets_the_cell_timeout_and_fast_mode(monkeypatch):
    """docs/nbgrader_config.py, read as nbgrader reads it: nbgrader's 30 s default would
    stop Lesson 01's codebook loop; the kernels inherit MINITOK_FAST from its environment."""
    from traitlets.config import Config

    config, environment = Config(), {}
    monkeypatch.setattr(os, "environ", environment)
    exec((ROOT / "docs" / "nbgrader_config.py").read_text(), {"get_config": lambda: config})
    assert config.Execute.timeout >= 600
    assert environment == {"MINITOK_FAST": "1"}
