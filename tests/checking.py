"""Helpers for the tests of learner checks: run a check quietly and judge its verdict.

Every check test runs twice (the `transport` fixture in conftest.py): "local" judges the
function in this process, as a notebook does; "wire" judges it through the grader's whole
wire (pickled inputs, the worker's Server, the strict decoder, state and gradients synced
back), in this process, so each hint test also shows that `minitok grade` gives that verdict.
"""

from __future__ import annotations

from minitok.checks._core import Result, references_bound, run_check
from minitok.checks._core import verdict as local_verdict
from minitok.tools.grading.remote import loopback

TRANSPORT = {"name": "local"}  # set by the transport fixture


def verdict(check_fn, fn) -> Result:
    """What `check_fn` says about `fn`, without printing or falling back."""
    if TRANSPORT["name"] == "local":
        return local_verdict(check_fn, fn)
    with references_bound(check_fn, fn):
        return run_check(check_fn.exercise, check_fn.test, loopback(fn))


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


def assert_each_hint_is_its_own(check_fn, rows: list[tuple]) -> None:
    """Each (fn, words) row must fail with a hint holding its own words, and with none that
    holds every word of another row's (a mistake-specific hint triggered by another mistake,
    or a default hint every mistake falls back to)."""
    hints = []
    for fn, words in rows:
        result = verdict(check_fn, fn)
        assert result.status == "failed", result.render()
        assert all(w in (result.hint or "") for w in words), result.render()
        hints.append(result.hint or "")
    for i, (hint, (_, words)) in enumerate(zip(hints, rows, strict=True)):
        for j, (_, other) in enumerate(rows):
            if j != i and tuple(other) != tuple(words):
                assert not all(w in hint for w in other), (
                    f"row {i} got a hint naming row {j}'s mistake: {hint}")
