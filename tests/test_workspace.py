"""The learner's workspace: copied once, never overwritten; progress read by the grader."""

from __future__ import annotations

import nbformat
import pytest

from minitok.tools.workspace import make_workspace, progress


def _course(tmp_path, title="# Lesson"):
    (tmp_path / "lessons").mkdir(exist_ok=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(title)]
    nbformat.write(nb, tmp_path / "lessons" / "01_x.ipynb")
    return tmp_path


def test_workspace_copies_lessons_once_and_never_overwrites(tmp_path, capsys):
    root = _course(tmp_path)
    assert make_workspace(root) == 0
    mine = root / "workspace" / "01_x.ipynb"
    assert "copied lessons/01_x.ipynb" in capsys.readouterr().out
    mine.write_text(mine.read_text().replace("# Lesson", "# my notes"))
    work = mine.read_text()
    assert make_workspace(root) == 0 and mine.read_text() == work
    assert capsys.readouterr().out == ""  # the lesson did not change: nothing to say
    _course(tmp_path, title="# Lesson, revised")
    assert make_workspace(root) == 0 and mine.read_text() == work
    assert "kept your workspace/01_x.ipynb" in capsys.readouterr().out


def test_workspace_needs_lessons(tmp_path, capsys):
    assert make_workspace(tmp_path) == 1
    assert "no lessons" in capsys.readouterr().out


def test_progress_without_a_workspace_says_what_to_do(tmp_path, capsys):
    assert progress(tmp_path) == 1
    assert "make lab" in capsys.readouterr().out


@pytest.mark.slow
def test_progress_grades_the_workspace_with_the_graders_checks(tmp_path, capsys):
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "workspace").mkdir()
    shutil.copy(root / "solutions" / "01_vector_quantization.ipynb", tmp_path / "workspace")
    shutil.copy(root / "lessons" / "02_straight_through.ipynb", tmp_path / "workspace")
    assert progress(tmp_path, sandbox="none") == 0
    out = capsys.readouterr().out
    assert "01_vector_quantization" in out and "7/7" in out and "all done" in out
    assert "02_straight_through" in out and "0/5" in out and "straight_through" in out
