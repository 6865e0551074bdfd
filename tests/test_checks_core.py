"""The check machinery: verdicts, fallback to the reference, strict mode."""

from __future__ import annotations

import functools

import pytest
import torch
from checking import verdict

from minitok.checks import (
    CheckFailed,
    ExerciseFailed,
    exercise,
    exercises_in,
    expect_close,
    expect_equal,
    expect_shape,
)
from minitok.checks._core import other_references, run_check
from minitok.notebook_code import parse_cells
from minitok.tools.grading.remote import RemoteObject, Session
from minitok.tools.grading.server import Server


def reference(x):
    return x * 2


@exercise("double", reference=reference)
def double(fn):
    x = torch.arange(4.0)
    expect_close(fn(x), reference(x), "double(x)", hint="multiply by two")
    return "one small case"


def test_pass_returns_the_learners_function(capsys):
    def mine(x):
        return x + x

    assert double(mine) is mine
    assert "[PASS] double: correct on every case (one small case)." in capsys.readouterr().out


def test_failure_prints_expected_got_and_hint_then_falls_back(capsys):
    def wrong(x):
        return x * 3

    assert double(wrong) is reference
    out = capsys.readouterr().out
    assert "[FAIL] double" in out and "expected:" in out and "got:" in out
    assert "hint: multiply by two" in out
    assert "uses minitok's reference double" in out


def test_not_done_and_crash_are_reported_not_raised(capsys):
    def todo(x):
        raise NotImplementedError

    def crash(x):
        return x.nope

    assert double(todo) is reference
    assert double(crash) is reference
    out = capsys.readouterr().out
    assert "[TODO] double: not done yet" in out
    assert "[ERROR] double: your code raised AttributeError" in out


def test_strict_mode_raises_on_failure(monkeypatch):
    monkeypatch.setenv("MINITOK_STRICT", "1")
    with pytest.raises(ExerciseFailed, match="double"):
        double(lambda x: x)
    assert double(reference) is reference


def test_non_callable_is_an_error_result():
    assert run_check("double", double.test, 3).status == "error"


def test_expectations_fail_with_the_right_message():
    with pytest.raises(CheckFailed, match=r"shape \(2,\), got \(3,\)"):
        expect_shape(torch.zeros(3), (2,), "x")
    with pytest.raises(CheckFailed, match="differs in 1 of 3 places"):
        expect_equal(torch.tensor([1, 2, 3]), torch.tensor([1, 2, 4]), "x")
    with pytest.raises(CheckFailed, match="should be a torch.Tensor"):
        expect_equal([1, 2], torch.tensor([1, 2]), "x")
    with pytest.raises(CheckFailed, match="off by up to"):
        expect_close(torch.ones(2), torch.zeros(2), "x")


def test_exercises_in_finds_checks_by_name():
    import sys

    assert exercises_in(sys.modules[__name__]) == {"double": double, "inner": inner_check,
                                                   "outer": outer_check}


# --------------------------------------------------------------------------- hints on demand


def test_hints_come_one_step_at_a_time_then_repeat_the_last(capsys):
    import types

    from minitok.checks._core import show_hint

    lesson = types.ModuleType("fake_lesson_hints")
    lesson.__dict__["triple"] = exercise("triple", reference=lambda x: 3 * x,
                                         hints=("the idea", "the formula", "near code"))(
        lambda fn: None)
    import sys

    sys.modules[lesson.__name__] = lesson
    try:
        for _ in range(4):
            show_hint(lesson.__name__, "triple")
        out = capsys.readouterr().out
        assert out.count("hint 1 of 3") == 1 and "the idea" in out
        assert out.count("hint 3 of 3 for triple:\nnear code") == 2
        show_hint(lesson.__name__, "triple", 2)
        assert "the formula" in capsys.readouterr().out
        with pytest.raises(ValueError, match="name must be one of"):
            show_hint(lesson.__name__, "nope")
        with pytest.raises(ValueError, match="level must be an int in 1..3"):
            show_hint(lesson.__name__, "triple", 4)
    finally:
        del sys.modules[lesson.__name__]


def test_a_failing_verdict_points_to_the_hints(capsys):
    @exercise("halve", reference=lambda x: x / 2, hints=("divide by two",))
    def halve(fn):
        expect_close(fn(torch.ones(2)), torch.full((2,), 0.5), "halve(x)", hint="x / 2")

    halve(lambda x: x)
    out = capsys.readouterr().out
    assert "hint: x / 2" in out and "check.hint('halve')" in out


def test_every_lesson_module_offers_hint():
    import importlib
    import pkgutil

    import minitok.checks

    for info in pkgutil.iter_modules(minitok.checks.__path__):
        if info.name.startswith("lesson"):
            module = importlib.import_module(f"minitok.checks.{info.name}")
            assert callable(getattr(module, "hint", None)), info.name


# --------------------------------------------------------------------------- one verdict, however wrapped
#
# A check binds the lesson's other exercises to minitok's references where the learner's code
# reads them. `outer` calls the lesson's `inner`; the learner's own `inner` is wrong, so
# `outer` passes only if the check's binding reaches the namespace `outer` really reads,
# however it is wrapped (a decorator's wrapper lives in the decorator's module).


def _inner_reference(x):
    return x * 2


def _outer_reference(x):
    return _inner_reference(x) + 1


@exercise("inner", reference=_inner_reference)
def inner_check(fn):
    expect_close(fn(torch.arange(3.0)), torch.arange(3.0) * 2, "inner(x)", hint="x * 2")


@exercise("outer", reference=_outer_reference)
def outer_check(fn):
    x = torch.arange(3.0, requires_grad=True)
    expect_close(fn(x), x.detach() * 2 + 1, "outer(x)", hint="inner(x) + 1")


NOTEBOOK = """
import functools
import torch

def inner(x):  # wrong: outer's check must use minitok's inner
    return x * 3

def plain(x):
    return inner(x) + 1

def wraps_deco(f):
    @functools.wraps(f)
    def wrapper(*args):
        return f(*args)
    return wrapper

def bare_deco(f):
    def wrapper(*args):
        return f(*args)
    return wrapper

@wraps_deco
def wrapped(x):
    return inner(x) + 1

@bare_deco
def bare(x):
    return inner(x) + 1

@torch.no_grad()
def no_grad(x):
    return inner(x) + 1

class Sampler:
    def method(self, x):
        return inner(x) + 1

    @staticmethod
    def static(x):
        return inner(x) + 1

    @classmethod
    def klass(cls, x):
        return inner(x) + 1

    def __call__(self, x):
        return inner(x) + 1
"""


def _notebook() -> dict:
    namespace = {"__name__": "notebook"}
    exec(NOTEBOOK, namespace)
    return namespace


WRAPPINGS = {
    "plain": lambda nb: nb["plain"],
    "functools.wraps": lambda nb: nb["wrapped"],
    "a decorator without wraps": lambda nb: nb["bare"],
    "@torch.no_grad()": lambda nb: nb["no_grad"],
    "torch.no_grad() around it": lambda nb: torch.no_grad()(nb["plain"]),
    "a bound method": lambda nb: nb["Sampler"]().method,
    "a staticmethod": lambda nb: nb["Sampler"].static,
    "a staticmethod object": lambda nb: nb["Sampler"].__dict__["static"],
    "a classmethod": lambda nb: nb["Sampler"].klass,
    "a callable object": lambda nb: nb["Sampler"](),
    "a lambda around it": lambda nb: (lambda f: lambda x: f(x))(nb["no_grad"]),
    "a partial": lambda nb: functools.partial(nb["wrapped"]),
}


@pytest.mark.usefixtures("transport")
@pytest.mark.parametrize("wrapping", list(WRAPPINGS))
def test_a_check_binds_the_references_where_the_learners_code_reads_them(wrapping):
    notebook = _notebook()
    fn = WRAPPINGS[wrapping](notebook)
    learners_inner = notebook["inner"]
    unbound = run_check("outer", outer_check.test, fn)  # the learner's own inner: wrong
    assert unbound.status == "failed", unbound.render()
    result = verdict(outer_check, fn)
    assert result.status == "passed", result.render()
    assert notebook["inner"] is learners_inner  # restored afterwards
    assert "inner" not in vars(torch.utils._contextlib) and "inner" not in vars(functools)


@pytest.mark.parametrize("decorator", ["", "@torch.no_grad()\n", "@wraps_deco\n",
                                       "@bare_deco\n", "@functools.lru_cache\n"])
def test_the_grader_binds_the_references_for_a_decorated_function(decorator):
    """The grader's own path (the judge's load and call, without the sandbox): a submission
    whose `outer` is decorated is judged with minitok's `inner`, as in the notebook."""
    cell = NOTEBOOK + f"\n\n{decorator}def outer(x):\n    return inner(x) + 1\n"
    statements = parse_cells([{"cell_type": "code", "source": cell}]).kept()
    session = Session(Server().reply)
    loaded = session.load(statements, "outer", other_references(outer_check))
    assert loaded["defined"] and loaded["callable"] and not loaded["problem"], loaded
    result = run_check("outer", outer_check.test, RemoteObject(session))
    assert result.status == "passed", result.render()
