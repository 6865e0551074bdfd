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
