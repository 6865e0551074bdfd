"""nbgrader (pinned in the `instructor` extra) on a lesson: generate_assignment gives the same
learner code as `minitok assign`, and autograde scores a solved and an unsolved notebook as
`minitok grade` does.

The solution notebook gets nbgrader's metadata on a temporary copy (assign.add_nbgrader_metadata),
in a temporary nbgrader course.
"""

from __future__ import annotations

import os
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
    (root / "nbgrader_config.py").write_text(
        'c = get_config()\nc.CourseDirectory.course_id = "minitok"\nc.Execute.timeout = 900\n')
    solution = nbformat.read(ROOT / "solutions" / NOTEBOOK, as_version=4)
    source = add_nbgrader_metadata(solution, NOTEBOOK)
    (root / "source" / "ps1").mkdir(parents=True)
    nbformat.write(source, root / "source" / "ps1" / NOTEBOOK)
    for student, notebook in (("solved", source), ("unsolved", make_lesson(source, NOTEBOOK))):
        folder = root / "submitted" / student / "ps1"
        folder.mkdir(parents=True)
        nbformat.write(notebook, folder / NOTEBOOK)
    _nbgrader(root, "generate_assignment", "ps1", "--force")
    return root


def _nbgrader(course: Path, *args: str) -> None:
    """Run nbgrader in the course (it calls alembic: the venv's bin/ goes on PATH)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MINITOK_FAST": "1"}
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]


def test_generate_assignment_gives_the_learner_code_of_minitok_assign(course):
    released = nbformat.read(course / "release" / "ps1" / NOTEBOOK, as_version=4)
    ours = make_lesson(nbformat.read(course / "source" / "ps1" / NOTEBOOK, as_version=4), NOTEBOOK)
    code = [[c.source for c in nb.cells if c.cell_type == "code"] for nb in (released, ours)]
    assert code[0] == code[1]


def test_autograde_scores_as_minitok_grade(course):
    _nbgrader(course, "autograde", "ps1", "--create", "--force")
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        nbgrader_scores = {student: gradebook.find_submission("ps1", student).score
                           for student in ("solved", "unsolved")}
    paths = [course / "submitted" / student / "ps1" / NOTEBOOK for student in nbgrader_scores]
    reports, _ = grade_reports(paths, timeout=120, jobs=2)
    minitok_scores = {path.parts[-3]: report.score
                      for path, report in zip(paths, reports, strict=True)}
    assert nbgrader_scores == {"solved": 7.0, "unsolved": 0.0}
    assert minitok_scores == {"solved": 7, "unsolved": 0}
