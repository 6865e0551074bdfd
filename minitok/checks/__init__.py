"""Learner checks: one module per lesson, one check per exercise.

A notebook calls a check right after an exercise and keeps what it returns:

    from minitok.checks import lesson01 as check
    nearest_code = check.nearest_code(nearest_code)

The check runs the learner's function on small seeded cases against minitok's reference and
prints a verdict in plain words. It returns the learner's function when it passes, and
minitok's reference otherwise, so a learner stuck on one exercise still sees the rest of the
lesson run. With MINITOK_STRICT=1 (how CI runs solutions/), and under nbgrader's autograder,
a failure raises instead.
"""

from minitok.checks._core import (
    CheckFailed,
    ExerciseFailed,
    Result,
    exercise,
    exercises_in,
    expect,
    expect_close,
    expect_equal,
    expect_shape,
    expect_tensor,
    probe,
    verdict,
)

__all__ = [
    "CheckFailed",
    "ExerciseFailed",
    "Result",
    "exercise",
    "exercises_in",
    "expect",
    "expect_close",
    "expect_equal",
    "expect_shape",
    "expect_tensor",
    "probe",
    "verdict",
]
