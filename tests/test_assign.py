"""The exercise builder: stubs where the solution was, everything else untouched."""

from __future__ import annotations

import subprocess

import nbformat
import pytest

from minitok.tools.assign import (
    AssignError,
    add_nbgrader_metadata,
    assign,
    learner_work,
    make_lesson,
    nbval_tags,
    normalize_solutions,
    safe_write,
    strip_code,
    strip_markdown,
)

SOLVED = '''import torch


def double(x):
    """Twice x."""
    ### BEGIN SOLUTION
    y = x * 2
    return y
    ### END SOLUTION


double = check.double(double)'''


def test_strip_code_replaces_only_the_region_with_nbgraders_stub():
    out = strip_code(SOLVED, "cell")
    assert "y = x * 2" not in out
    assert "    # YOUR CODE HERE\n    raise NotImplementedError()\n" in out
    before, after = SOLVED.split("    ### BEGIN SOLUTION\n")[0], SOLVED.split("### END SOLUTION\n")[1]
    assert out.startswith(before)
    assert out.endswith(after)


def test_stub_raises_not_implemented():
    namespace = {"check": type("C", (), {"double": staticmethod(lambda f: f)})}
    exec(strip_code(SOLVED, "cell"), namespace)
    with pytest.raises(NotImplementedError):
        namespace["double"](1)


def test_source_without_trailing_newline_keeps_its_ending():
    src = "def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION"
    assert not strip_code(src, "cell").endswith("\n")


@pytest.mark.parametrize(
    "source, message",
    [
        ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n", "inside a def"),
        ("def f():\n    ### BEGIN SOLUTION\n    return 1\n", "never closed"),
        ("def f():\n    ### END SOLUTION\n", "without"),
        (
            "def f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n    ### END SOLUTION\n",
            "inside another",
        ),
    ],
)
def test_bad_markers_are_clear_errors(source, message):
    with pytest.raises(AssignError, match=message):
        strip_code(source, "cell 3")


def test_markdown_region_becomes_a_prompt():
    text = "Why?\n\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION\n"
    assert strip_markdown(text, "cell") == "Why?\n\n*Your answer here.*\n"


def _notebook():
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell(SOLVED)
    code.outputs = [nbformat.v4.new_output("stream", text="[PASS] double")]
    code.execution_count = 3
    code.metadata["execution"] = {"iopub.status.idle": "2026-11-28T18:00:00Z"}
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"), code]
    return nb


def test_make_lesson_clears_outputs_and_leaves_the_solution_alone():
    solution = _notebook()
    lesson = make_lesson(solution, "00_x.ipynb")
    assert lesson.cells[1].outputs == [] and lesson.cells[1].execution_count is None
    assert "execution" not in lesson.cells[1].metadata, "run timestamps would churn lessons/"
    assert lesson.cells[0].source == "# Title"
    assert solution.cells[1].outputs, "the solution notebook must not be modified"
    assert "y = x * 2" in solution.cells[1].source


def test_assign_writes_then_check_passes_then_detects_drift(tmp_path, capsys):
    (tmp_path / "solutions").mkdir()
    nbformat.write(_notebook(), tmp_path / "solutions" / "01_x.ipynb")
    assert assign(tmp_path, check=True) == 1  # lessons/ missing
    assert assign(tmp_path) == 0
    assert assign(tmp_path, check=True) == 0
    lesson = tmp_path / "lessons" / "01_x.ipynb"
    lesson.write_text(lesson.read_text().replace("Title", "Edited"))
    assert assign(tmp_path, check=True) == 1
    assert "out of date" in capsys.readouterr().out


def test_assign_flags_a_lesson_without_a_solution(tmp_path, capsys):
    (tmp_path / "solutions").mkdir()
    nbformat.write(_notebook(), tmp_path / "solutions" / "01_x.ipynb")
    assign(tmp_path)
    nbformat.write(_notebook(), tmp_path / "lessons" / "02_orphan.ipynb")
    assert assign(tmp_path, check=True) == 1
    assert "no twin" in capsys.readouterr().out


# --------------------------------------------------------------------------- nbgrader metadata

TWO = """# NBVAL_CHECK_OUTPUT
def double(x):
    ### BEGIN SOLUTION
    return x * 2
    ### END SOLUTION


def triple(x):
    ### BEGIN SOLUTION
    return x * 3
    ### END SOLUTION


double = check.double(double)
triple = check.triple(triple)"""


def _two_exercises():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(TWO)
    cell.outputs = [nbformat.v4.new_output(
        "stream", name="stdout", text="[PASS] double: correct on every case.\n"
        "[FAIL] triple: wrong\n       hint: times three\n")]
    cell.execution_count = 7
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"), cell]
    return nb


def test_nbgrader_metadata_splits_answers_from_their_checks():
    out = nbval_tags(add_nbgrader_metadata(_two_exercises(), "00_x.ipynb"))
    kinds = [(c.cell_type, c.metadata.get("nbgrader", {}).get("grade_id")) for c in out.cells]
    assert kinds == [("markdown", None), ("code", "double"), ("code", "triple"),
                     ("code", "check_double"), ("code", "check_triple")]
    double, triple, check_double, check_triple = out.cells[1:]
    assert double.source.startswith("def double(x):") and "x * 2" in double.source
    assert double.metadata.nbgrader["solution"] and not double.metadata.nbgrader["grade"]
    assert check_double.metadata.nbgrader == {
        "grade": True, "grade_id": "check_double", "locked": True, "points": 1,
        "schema_version": 3, "solution": False, "task": False}
    assert check_double.source == "double = check.double(double)"
    assert check_double.outputs[0].text == "[PASS] double: correct on every case.\n"
    assert check_triple.outputs[0].text == "[FAIL] triple: wrong\n       hint: times three\n"
    assert check_triple.execution_count == 7 and double.outputs == []


def test_nbgrader_metadata_is_idempotent_and_keeps_the_learners_code():
    once = add_nbgrader_metadata(_two_exercises(), "00_x.ipynb")
    assert add_nbgrader_metadata(once, "00_x.ipynb") == once
    lesson = make_lesson(once, "00_x.ipynb")
    code = "\n".join(c.source for c in lesson.cells if c.cell_type == "code")
    assert code.count("raise NotImplementedError()") == 2 and "x * 2" not in code
    assert lesson.cells[1].metadata.nbgrader["grade_id"] == "double"


def test_nbgrader_metadata_refuses_a_cell_it_cannot_split():
    nb = _two_exercises()
    nb.cells[1].source += "\nprint('training')"
    with pytest.raises(AssignError, match="only exercise defs"):
        add_nbgrader_metadata(nb, "00_x.ipynb")


def test_nbval_comments_become_cell_tags_and_every_check_cell_is_compared():
    split = add_nbgrader_metadata(_two_exercises(), "00_x.ipynb")
    tagged = nbval_tags(split)
    code = [c for c in tagged.cells if c.cell_type == "code"]
    assert not any("NBVAL" in c.source for c in code)
    checks = [c for c in code if c.metadata.nbgrader["grade"]]
    assert checks and all("nbval-check-output" in c.metadata.tags for c in checks)
    assert nbval_tags(tagged) == tagged  # idempotent


def test_normalize_solutions_is_idempotent(tmp_path):
    (tmp_path / "solutions").mkdir()
    path = tmp_path / "solutions" / "01_x.ipynb"
    nbformat.write(_two_exercises(), path)
    assert normalize_solutions(tmp_path) == 0
    once = path.read_text()
    assert normalize_solutions(tmp_path) == 0 and path.read_text() == once
    assert "# NBVAL_CHECK_OUTPUT" not in once and "nbval-check-output" in once


def _course_with_a_lesson(tmp_path):
    (tmp_path / "solutions").mkdir()
    nbformat.write(add_nbgrader_metadata(_two_exercises(), "01_x.ipynb"),
                   tmp_path / "solutions" / "01_x.ipynb")
    assert assign(tmp_path) == 0
    return tmp_path / "lessons" / "01_x.ipynb"


def test_assign_never_overwrites_a_lesson_holding_learner_work(tmp_path, capsys):
    lesson = _course_with_a_lesson(tmp_path)
    notebook = nbformat.read(lesson, as_version=4)
    answer = next(c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("solution"))
    answer.source = answer.source.replace("raise NotImplementedError()", "return x + x")
    nbformat.write(notebook, lesson)
    mine = lesson.read_text()
    assert learner_work(lesson) == ["exercise double is filled in"]
    solution = tmp_path / "solutions" / "01_x.ipynb"
    solution.write_text(solution.read_text().replace("# Title", "# New title"))
    assert assign(tmp_path) == 1
    assert lesson.read_text() == mine  # untouched
    assert "holds your work" in capsys.readouterr().out
    assert assign(tmp_path, force=True) == 0  # with --force: rebuilt, and a backup kept
    backups = list(lesson.parent.glob("01_x.ipynb.bak-*"))
    assert len(backups) == 1 and backups[0].read_text() == mine
    assert "New title" in lesson.read_text()
    assert assign(tmp_path, check=True) == 0  # a backup is not an orphan lesson


def test_a_lesson_that_was_run_holds_learner_work(tmp_path):
    lesson = _course_with_a_lesson(tmp_path)
    notebook = nbformat.read(lesson, as_version=4)
    notebook.cells[1].execution_count = 3
    nbformat.write(notebook, lesson)
    assert learner_work(lesson) == ["cell 1 was run"]


def _edited(lesson, edit):
    """The lesson after `edit(notebook)`, as the learner saved it; its text."""
    notebook = nbformat.read(lesson, as_version=4)
    edit(notebook)
    nbformat.write(notebook, lesson)
    return lesson.read_text()


def _code_above_the_stub(notebook):
    answer = next(c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("solution"))
    answer.source = answer.source.replace("    # YOUR CODE HERE", "    return 0\n    # YOUR CODE HERE")


def _markdown_changed(notebook):
    notebook.cells[0].source += "\n\nmy notes: the stub raises"


def _cell_added(notebook):
    notebook.cells.append(nbformat.v4.new_code_cell("double(21)"))


@pytest.mark.parametrize("edit", [_code_above_the_stub, _markdown_changed, _cell_added])
def test_any_difference_from_what_assign_wrote_is_the_learners(tmp_path, capsys, edit):
    """Code above an untouched stub, a changed Markdown cell, a new cell: never overwritten,
    although none of them is run or fills a stub in."""
    lesson = _course_with_a_lesson(tmp_path)
    mine = _edited(lesson, edit)
    assert learner_work(lesson) == []  # nothing the old rule saw
    solution = tmp_path / "solutions" / "01_x.ipynb"
    solution.write_text(solution.read_text().replace("# Title", "# New title"))
    capsys.readouterr()
    assert assign(tmp_path) == 1 and lesson.read_text() == mine
    assert "holds your work (it differs from what assign wrote" in capsys.readouterr().out
    assert assign(tmp_path, force=True) == 0 and "New title" in lesson.read_text()
    (backup,) = lesson.parent.glob("01_x.ipynb.bak-*")
    assert backup.read_text() == mine


def test_a_lesson_assign_wrote_is_rebuilt_when_its_solution_changes(tmp_path, capsys):
    lesson = _course_with_a_lesson(tmp_path)
    solution = tmp_path / "solutions" / "01_x.ipynb"
    solution.write_text(solution.read_text().replace("# Title", "# New title"))
    assert assign(tmp_path) == 0 and "New title" in lesson.read_text()
    assert not list(lesson.parent.glob("*.bak-*"))


def test_a_fresh_clone_lesson_is_what_assign_writes_from_the_committed_solution(tmp_path):
    """No record of what assign wrote here (a fresh clone): the committed solution says."""
    lesson = _course_with_a_lesson(tmp_path)
    (lesson.parent / ".assign-written.json").unlink()
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "solutions", "lessons"], ["commit", "-qm", "course"]):
        subprocess.run(git + args, check=True)
    solution = tmp_path / "solutions" / "01_x.ipynb"
    solution.write_text(solution.read_text().replace("# Title", "# New title"))
    assert assign(tmp_path) == 0 and "New title" in lesson.read_text()
    _edited(lesson, _markdown_changed)
    (lesson.parent / ".assign-written.json").unlink()
    solution.write_text(solution.read_text().replace("# New title", "# Newer title"))
    assert assign(tmp_path) == 1 and "my notes" in lesson.read_text()  # theirs now


def test_assign_never_writes_through_a_symlinked_lesson(tmp_path, capsys):
    lesson = _course_with_a_lesson(tmp_path)
    outside = tmp_path / "outside.ipynb"
    outside.write_text("mine")
    lesson.unlink()
    lesson.symlink_to(outside)
    solution = tmp_path / "solutions" / "01_x.ipynb"
    solution.write_text(solution.read_text().replace("# Title", "# New title"))
    for force in (False, True):
        with pytest.raises(AssignError, match="01_x.ipynb is a symlink"):
            assign(tmp_path, force=force)
    assert outside.read_text() == "mine" and lesson.is_symlink()
    lesson.unlink()
    lesson.symlink_to(tmp_path / "nowhere.ipynb")  # dangling: not created through it either
    with pytest.raises(AssignError, match="symlink"):
        assign(tmp_path, force=True)
    assert not (tmp_path / "nowhere.ipynb").exists()


def test_safe_write_refuses_symlinks_and_existing_files_when_new(tmp_path):
    target = tmp_path / "target"
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(AssignError, match="symlink"):
        safe_write(link, "x")
    with pytest.raises(AssignError, match="exists"):
        safe_write(link, "x", new=True)
    assert not target.exists()
    safe_write(tmp_path / "plain", "ok")
    assert (tmp_path / "plain").read_text() == "ok"
