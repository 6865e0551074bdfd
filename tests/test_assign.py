"""The exercise builder: stubs where the solution was, everything else untouched."""

from __future__ import annotations

import nbformat
import pytest

from minitok.assign import AssignError, assign, make_lesson, strip_code, strip_markdown

SOLVED = '''import torch


def double(x):
    """Twice x."""
    ### BEGIN SOLUTION
    y = x * 2
    return y
    ### END SOLUTION


double = check.double(double)'''


def test_strip_code_replaces_only_the_region():
    out = strip_code(SOLVED, "cell")
    assert "y = x * 2" not in out
    assert '    raise NotImplementedError("Exercise double: write it' in out
    assert "    # YOUR CODE HERE\n" in out
    before, after = SOLVED.split("    ### BEGIN SOLUTION\n")[0], SOLVED.split("### END SOLUTION\n")[1]
    assert out.startswith(before)
    assert out.endswith(after)


def test_stub_raises_with_the_exercise_name():
    namespace = {"check": type("C", (), {"double": staticmethod(lambda f: f)})}
    exec(strip_code(SOLVED, "cell"), namespace)
    with pytest.raises(NotImplementedError, match="Exercise double"):
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
