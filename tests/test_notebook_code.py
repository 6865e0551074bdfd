"""Reading a notebook's code (minitok.notebook_code): which statements run outside the
notebook, what an exercise's load runs, the reader's bounds, and a NameError that says why."""

from __future__ import annotations

import subprocess
import sys

import nbformat
import pytest
from notebooks import ROOT, write_notebook

from minitok.notebook_code import (
    MAX_CODE,
    MAX_STATEMENTS,
    Notebook,
    NotebookError,
    bound_names,
    load_statements,
    missing_name,
    read,
    split_cell,
)


def _notebook(*cells: str) -> Notebook:
    return Notebook([s for i, cell in enumerate(cells, 1) for s in split_cell(i, cell)])


def _kind(name: str, *cells: str) -> tuple[str, str] | None:
    """(kind, why) of the last statement binding `name`, None when none does."""
    found = None
    for statement, kind, why in _notebook(*cells).classified():
        if name in bound_names(statement.node):
            found = kind, why
    return found


@pytest.mark.parametrize("line, name, kind, why", [
    ("TWO = 2.0", "TWO", "assign", ""),
    ("x: float = 0.5", "x", "assign", ""),
    ("square = lambda x: x * TWO * undefined_yet", "square", "assign", ""),  # body runs later
    ("CONFIG = {'dim': 4, 'scale': TWO ** 2, 'names': ('a', 'b')}", "CONFIG", "assign", ""),
    ("DTYPE = torch.float32", "DTYPE", "assign", ""),
    ("HALF, ONE = TWO / 4, -TWO // 2", "ONE", "assign", ""),
    ("TWO += 1", "TWO", "assign", ""),
    ("STEPS = int('10')", "STEPS", "skip", "it calls a function"),
    ("SQUARES = [i * i for i in range(3)]", "SQUARES", "skip", "it loops"),
    ("BIG = 7 ** 7 ** 7", "BIG", "skip", "power"),
    ("B = A", "B", "skip", "it uses A, which is not kept"),
    ("f = lambda x, n=len('ab'): x", "f", "skip", "it calls a function"),
    ("for i in range(3):\n    pass", "i", "skip", "not an assignment"),
    ("TWO = check.TWO(TWO)", "TWO", "assign", ""),  # a check line: TWO's binding is line 1
])
def test_which_assignments_run_outside_the_notebook(line, name, kind, why):
    found_kind, found_why = _kind(name, "import torch\nTWO = 2.0", line)
    assert found_kind == kind and why in found_why, (found_kind, found_why)


def test_a_name_rebound_by_a_statement_not_kept_is_unbound_and_says_why():
    """`N = 3`, then a training cell sets N: outside the notebook N is not the stale 3."""
    notebook = _notebook("N = 3\nM = N + 1", "N = train()", "def uses_n():\n    return N + M")
    namespace, skipped = {}, {}
    assert load_statements(notebook.kept(), namespace, {"uses_n"}, skipped) == {}
    assert namespace["M"] == 4 and "N" not in namespace  # M was made while N was 3
    with pytest.raises(NameError) as caught:
        namespace["uses_n"]()
    said = missing_name(caught.value, skipped)
    assert "N is not defined outside the notebook: cell 2, line 1 binds it" in said
    assert "it calls a function" in said


def test_loading_an_exercise_runs_only_what_it_uses():
    """A default argument that never returns (here: that says it ran) costs only the defs
    that use it; another exercise the grader binds itself is not followed."""
    notebook = _notebook(
        "import math",
        "def spin():\n    RAN.append('spin')  # an endless loop, in the attack",
        "def stuck(x, _=spin()):\n    return x",
        "def helper(x):\n    return math.sqrt(x)",
        "@staticmethod\ndef exercise(x, scale=2.0):\n    return helper(x) * scale",
    )
    ran = []
    namespace = {"RAN": ran}
    assert load_statements(notebook.kept(), namespace, {"exercise"}) == {}
    assert "stuck" not in namespace and "spin" not in namespace and ran == []
    assert namespace["exercise"](4.0) == 4.0
    load_statements(notebook.kept(), namespace, {"stuck"})
    assert ran == ["spin"]
    namespace = {"helper": lambda x: -x}  # another exercise, bound by the grader
    load_statements(notebook.kept(), namespace, {"exercise"})
    assert "math" not in namespace and namespace["exercise"](4.0) == -8.0


def test_a_def_whose_default_uses_a_skipped_name_says_which_line(tmp_path):
    notebook = _notebook("steps = int('10')", "def f(x, n=steps):\n    return x")
    problems = load_statements(notebook.kept(), {}, {"f"})
    assert "steps is not defined outside the notebook: cell 1, line 1 binds it" in problems["f"]


def test_a_50_mb_markdown_cell_is_not_read(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell("x" * (50 << 20)),
                      nbformat.v4.new_code_cell("import torch\ndef f(x):\n    return x")]
    nbformat.write(notebook, tmp_path / "big.ipynb")
    assert [s.line for s in read(tmp_path / "big.ipynb").statements] == [1, 2]


def test_300000_helpers_are_refused_in_one_message(tmp_path):
    helpers = "".join(f"def h{i}():\n    return {i}\n" for i in range(300_000))
    path = write_notebook(tmp_path / "helpers.ipynb", "import torch", helpers)
    with pytest.raises(NotebookError, match=f"at most {MAX_CODE:,} characters of code"):
        read(path)
    path = write_notebook(tmp_path / "lines.ipynb", "a=1\n" * (MAX_STATEMENTS + 1))
    with pytest.raises(NotebookError, match=f"more than {MAX_STATEMENTS:,} top-level"):
        read(path)


def test_the_learners_side_never_imports_the_grader():
    """Lessons 05-07 load minitok.earlier: it reads notebooks with notebook_code alone, and
    nothing of the course machinery (minitok.tools: the grader, its wire protocol)."""
    code = ("import sys, minitok.earlier\n"
            "print(sorted(m for m in sys.modules if m.startswith('minitok.tools')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]"
