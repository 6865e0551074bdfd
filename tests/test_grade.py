"""`minitok grade` on real submissions: solved, unsolved, one mistake, a hang, not a notebook."""

from __future__ import annotations

import hashlib
import json

import nbformat
import pytest
from notebooks import ROOT

from minitok.grade import grade, grade_one

SOLUTION = ROOT / "solutions" / "01_vector_quantization.ipynb"
LESSON = ROOT / "lessons" / "01_vector_quantization.ipynb"
EXERCISES = 6

pytestmark = pytest.mark.slow


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mutated(tmp_path, old: str, new: str):
    """The solution with one line of one exercise changed into a classic mistake."""
    notebook = nbformat.read(SOLUTION, as_version=4)
    hits = 0
    for cell in notebook.cells:
        if old in cell.source:
            cell.source = cell.source.replace(old, new)
            hits += 1
    assert hits == 1, f"the solution no longer contains {old!r}"
    path = tmp_path / "submission.ipynb"
    nbformat.write(notebook, path)
    return path


def test_solution_gets_full_marks_and_is_not_modified(tmp_path):
    before = _digest(SOLUTION)
    report_path = tmp_path / "report.json"
    assert grade([SOLUTION], json_path=report_path, timeout=120) == 0
    assert _digest(SOLUTION) == before
    (report,) = json.loads(report_path.read_text())
    assert report["lesson"] == "lesson01"
    assert (report["score"], report["max_score"]) == (EXERCISES, EXERCISES)


def test_unsolved_lesson_scores_zero_without_error():
    report = grade_one(LESSON, timeout=120)
    assert report.error is None
    assert (report.score, report.max_score) == (0, EXERCISES)
    assert {item["status"] for item in report.exercises} == {"not done"}


@pytest.mark.parametrize(
    "exercise, old, new, hint",
    [
        ("squared_distances", "z_sq - 2.0 * z @ codebook.T", "z_sq + 2.0 * z @ codebook.T", "sign"),
        ("perplexity", "(p * p.log()).sum()", "(p * p.log2()).sum()", "log"),
    ],
)
def test_one_mistake_fails_exactly_that_exercise(tmp_path, exercise, old, new, hint):
    report = grade_one(_mutated(tmp_path, old, new), timeout=120)
    status = {item["exercise"]: item for item in report.exercises}
    assert status[exercise]["status"] == "failed"
    assert hint in (status[exercise]["hint"] or "").lower()
    others = {name: item["status"] for name, item in status.items() if name != exercise}
    assert set(others.values()) == {"passed"}, others
    assert report.score == EXERCISES - 1


def test_infinite_loop_is_timed_out_and_reported(tmp_path):
    path = _mutated(tmp_path, "return torch.unique(indices).numel() / num_codes",
                    "while True:\n        pass")
    report = grade_one(path, timeout=30)
    status = {item["exercise"]: item for item in report.exercises}
    assert status["codebook_usage"]["status"] == "error"
    assert "timed out" in status["codebook_usage"]["message"]
    assert status["nearest_code"]["status"] == "passed"


def test_not_a_notebook_is_a_clear_error(tmp_path, capsys):
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{ this is not json")
    assert grade([broken], timeout=10) == 1
    out = capsys.readouterr().out
    assert "cannot grade: broken.ipynb is not valid JSON" in out
    assert broken.read_text() == "{ this is not json"
