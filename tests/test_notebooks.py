"""Every lesson: generated from its solution, in step with the package, runnable unsolved."""

from __future__ import annotations

import importlib
import inspect

import nbformat
import pytest
from notebooks import (
    CAPSTONE,
    LESSONS,
    ROOT,
    SOLUTIONS,
    check_module_name,
    execute,
    exercise_namespace,
    stream_text,
)

from minitok.checks import exercises_in, verdict
from minitok.tools.assign import assign, count_exercises

IDS = [path.stem for path in SOLUTIONS]


def test_there_are_solutions_and_lessons():
    assert SOLUTIONS, "no solutions/NN_*.ipynb found"
    assert [p.name for p in LESSONS] == [p.name for p in SOLUTIONS]


def test_lessons_are_generated_from_solutions():
    assert assign(ROOT, check=True) == 0, "run `python -m minitok assign`"


@pytest.mark.parametrize("path", SOLUTIONS, ids=IDS)
def test_each_exercise_has_a_check_that_the_notebook_calls(path):
    notebook = nbformat.read(path, as_version=4)
    module = importlib.import_module(check_module_name(notebook))
    checks = exercises_in(module)
    assert count_exercises(notebook) >= 3, "a lesson has at least three exercises"
    assert len(checks) >= 3
    code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    for name in checks:
        assert f"def {name}(" in code or f"class {name}" in code, f"no exercise {name} in {path.name}"
        assert f"check.{name}(" in code, f"{path.name} never calls check.{name}"


@pytest.mark.parametrize("path", SOLUTIONS, ids=IDS)
def test_solution_code_matches_the_package(path):
    """The notebook's own def/class blocks pass every check against minitok's reference,
    judged as the notebook and the grader judge them (`verdict`: the lesson's other
    exercises, and the earlier lessons' functions it calls, bound to minitok's)."""
    notebook = nbformat.read(path, as_version=4)
    namespace = exercise_namespace(notebook)
    module = importlib.import_module(check_module_name(notebook))
    for name, check in exercises_in(module).items():
        result = verdict(check, namespace[name])
        assert result.passed, result.render()


def _parameters(fn) -> list[tuple[str, object]]:
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("path", SOLUTIONS, ids=IDS)
def test_solution_signatures_are_the_packages(path):
    """What a solution defines is what minitok contains: the same names, and the same
    parameters and defaults (the package may add trailing options that have defaults)."""
    notebook = nbformat.read(path, as_version=4)
    namespace = exercise_namespace(notebook)
    module = importlib.import_module(check_module_name(notebook))
    for name, check in exercises_in(module).items():
        mine, package = _parameters(namespace[name]), _parameters(check.solution)
        assert package[:len(mine)] == mine, f"{name}: notebook {mine} vs package {package}"
        extra = package[len(mine):]
        assert all(d is not inspect.Parameter.empty for _, d in extra), f"{name}: {extra}"


@pytest.mark.slow
@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_unsolved_lesson_runs_top_to_bottom(path):
    """A learner who has written nothing still gets a notebook that runs, with a TODO per exercise."""
    notebook = execute(path, env={"MINITOK_FAST": "1", "MINITOK_STRICT": "0"})
    printed = stream_text(notebook)
    module = importlib.import_module(check_module_name(notebook))
    for name in exercises_in(module):
        assert f"[TODO] {name}:" in printed, f"check {name} did not report TODO"
    assert "[PASS]" not in printed, "an unsolved exercise passed its check"


def test_the_capstone_follows_the_lessons():
    assert (ROOT / "solutions" / CAPSTONE).is_file() and (ROOT / "lessons" / CAPSTONE).is_file()
    assert int(CAPSTONE[:2]) > int(SOLUTIONS[-1].name[:2])


@pytest.mark.slow
def test_unsolved_capstone_runs_on_minitoks_code():
    """With every lesson beside it unsolved, the capstone still runs: minitok's code stands
    in at every stage, and the table says so."""
    printed = stream_text(execute(ROOT / "lessons" / CAPSTONE,
                                  env={"MINITOK_FAST": "1", "MINITOK_STRICT": "0"}))
    assert "nothing is yours" in printed
    assert "ran minitok's Transformer, random_mask, masked_loss, decode_loop (yours" in printed
