"""The exercise builder: stubs where the solution was, everything else untouched."""

from __future__ import annotations

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
