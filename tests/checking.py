"""Helpers for the tests of learner checks: run a check quietly and judge its verdict."""

from __future__ import annotations

from minitok.checks._core import Result, run_check


def verdict(check_fn, fn) -> Result:
    """What `check_fn` says about `fn`, without printing or falling back."""
    return run_check(check_fn.exercise, check_fn.test, fn)


def assert_passes(check_fn, fn) -> None:
    result = verdict(check_fn, fn)
    assert result.status == "passed", result.render()


def assert_fails_with(check_fn, fn, *hint_words: str) -> None:
    """The check must fail `fn` (not crash, not pass) with a hint containing each of
    `hint_words`."""
    result = verdict(check_fn, fn)
    assert result.status == "failed", result.render()
    for words in hint_words:
        assert words in (result.hint or ""), f"hint should mention {words!r}: {result.render()}"
