"""The check machinery: verdicts, fallback to the reference, strict mode."""

from __future__ import annotations

import pytest
import torch

from minitok.checks import (
    CheckFailed,
    ExerciseFailed,
    exercise,
    exercises_in,
    expect_close,
    expect_equal,
    expect_shape,
)
from minitok.checks._core import run_check


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

    assert exercises_in(sys.modules[__name__]) == {"double": double}


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
