"""The learner's workspace: copied once, never overwritten; progress read by the grader."""

from __future__ import annotations

import shutil

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
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "workspace").mkdir()
    shutil.copy(root / "solutions" / "01_vector_quantization.ipynb", tmp_path / "workspace")
    shutil.copy(root / "lessons" / "02_straight_through.ipynb", tmp_path / "workspace")
    assert progress(tmp_path, sandbox="none") == 0
    out = capsys.readouterr().out
    assert "01_vector_quantization" in out and "7/7" in out and "all done" in out
    assert "02_straight_through" in out and "0/5" in out and "straight_through" in out


def test_workspace_never_writes_through_a_symlink(tmp_path, capsys):
    root = _course(tmp_path)
    (root / "workspace").mkdir()
    outside = tmp_path / "outside.ipynb"
    (root / "workspace" / "01_x.ipynb").symlink_to(outside)  # dangling
    assert make_workspace(root) == 1
    assert not outside.exists()
    assert "is a symlink: not written through" in capsys.readouterr().out
    outside.write_text("mine")  # no longer dangling: not read as the learner's copy either
    assert make_workspace(root) == 1 and outside.read_text() == "mine"


def test_a_symlinked_workspace_folder_is_refused(tmp_path, capsys):
    root = _course(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (root / "workspace").symlink_to(tmp_path / "elsewhere")
    assert make_workspace(root) == 1 and not list((tmp_path / "elsewhere").iterdir())
    assert "symlink" in capsys.readouterr().out


def test_progress_reads_untouched_lessons_without_running_them(tmp_path, capsys, monkeypatch):
    """Every exercise of the eight lessons is still the stub: "not done" by reading, a line
    per lesson, and no worker started (grade_reports is not called)."""
    from notebooks import LESSONS

    import minitok.tools.grade

    def no_worker(*args, **kwargs):
        raise AssertionError("progress started the grader for an untouched lesson")

    monkeypatch.setattr(minitok.tools.grade, "grade_reports", no_worker)
    (tmp_path / "lessons").mkdir()
    for lesson in LESSONS:
        shutil.copy(lesson, tmp_path / "lessons")
    assert make_workspace(tmp_path) == 0
    assert progress(tmp_path) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line[:2].isdigit()]
    assert [row.split()[0] for row in rows] == [lesson.stem for lesson in LESSONS]
    for row in rows:
        passed, written = row.split()[1:3]
        total = passed.split("/")[1]
        assert passed == f"0/{total}" and written == f"0/{total}", row
    assert "none run" in lines[-1]
    assert lines[-2] == ("your pipeline (minitok demo --yours): tokenizer: 0/3 yours (minitok's: "
                         "tokenizer_step, fit_tokenizer, tokens_to_image); AR prior: 0/4 yours "
                         "(minitok's: Transformer, prior_batch_loss, fit, ar_generate); "
                         "MaskGIT: 0/5 yours (minitok's: Transformer, random_mask, masked_loss, "
                         "fit, decode_loop)")
