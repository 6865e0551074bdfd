"""The machinery behind every learner check: run, judge, explain, fall back.

A check is written as a plain test function that takes the learner's function and raises
`CheckFailed(message, hint)` at the first thing that is wrong. The `exercise` decorator turns
it into what the notebook calls:

    @exercise("nearest_code", reference=quantize.nearest_code)
    def nearest_code(fn):
        z, codebook = ...
        expect_equal(fn(z, codebook), quantize.nearest_code(z, codebook), "indices",
                     hint="...")
        return "random vectors, ties, a (B, C, H, W) map"   # what was checked

Checks draw their inputs from their own seeded torch.Generator, never from the global RNG,
so calling a check does not change the numbers the rest of a notebook prints.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import ModuleType

import torch

from minitok.course import strict_mode


class CheckFailed(AssertionError):
    """Raised by a check's test when the learner's code gives a wrong answer."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class ExerciseFailed(AssertionError):
    """Raised in strict mode (MINITOK_STRICT=1) when an exercise is unfinished or wrong."""


@dataclass
class Result:
    """The outcome of one check, for printing (notebooks) or for a report (grading)."""

    exercise: str
    status: str  # "passed", "failed", "not done" or "error"
    message: str
    hint: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict:
        return asdict(self)

    def render(self) -> str:
        """The verdict a learner reads, in a few plain lines."""
        label = {"passed": "PASS", "failed": "FAIL", "not done": "TODO", "error": "ERROR"}
        lines = [f"[{label[self.status]}] {self.exercise}: {self.message}"]
        if self.hint:
            lines.append(f"       hint: {self.hint}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- expectations


def expect(condition: bool, message: str, hint: str | None = None) -> None:
    """Fail with `message` (and `hint`) unless `condition` holds."""
    if not condition:
        raise CheckFailed(message, hint)


def expect_tensor(got, what: str, dtype: torch.dtype | None = None, hint: str | None = None):
    """Fail unless `got` is a torch.Tensor (of `dtype`, when given)."""
    if not isinstance(got, torch.Tensor):
        raise CheckFailed(f"{what} should be a torch.Tensor, got {type(got).__name__}", hint)
    if dtype is not None and got.dtype != dtype:
        raise CheckFailed(f"{what} should have dtype {dtype}, got {got.dtype}", hint)


def expect_shape(got: torch.Tensor, shape: tuple, what: str, hint: str | None = None) -> None:
    """Fail unless `got` is a tensor of exactly `shape`."""
    expect_tensor(got, what, hint=hint)
    if tuple(got.shape) != tuple(shape):
        raise CheckFailed(
            f"{what} should have shape {tuple(shape)}, got {tuple(got.shape)}", hint
        )


def _short(t: torch.Tensor, limit: int = 12) -> str:
    flat = t.detach().flatten().cpu()
    text = ", ".join(f"{v:.4g}" if flat.is_floating_point() else str(int(v)) for v in flat[:limit])
    more = f", ... ({flat.numel()} values)" if flat.numel() > limit else ""
    return f"[{text}{more}]"


def expect_equal(got, expected: torch.Tensor, what: str, hint: str | None = None) -> None:
    """Fail unless `got` equals `expected` exactly (shape and every value)."""
    expect_shape(got, tuple(expected.shape), what, hint)
    if not torch.equal(got.cpu(), expected.cpu()):
        wrong = (got.cpu() != expected.cpu()).sum().item()
        raise CheckFailed(
            f"{what} differs in {wrong} of {expected.numel()} places\n"
            f"       expected: {_short(expected)}\n"
            f"       got:      {_short(got)}",
            hint,
        )


def expect_close(
    got,
    expected: torch.Tensor,
    what: str,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    hint: str | None = None,
) -> None:
    """Fail unless `got` is allclose to `expected` (same shape, within atol + rtol|expected|)."""
    expect_shape(got, tuple(expected.shape), what, hint)
    got_f = got.detach().cpu().double()
    exp_f = expected.detach().cpu().double()
    if not torch.allclose(got_f, exp_f, atol=atol, rtol=rtol):
        err = (got_f - exp_f).abs().max().item()
        raise CheckFailed(
            f"{what} is off by up to {err:.3g} (allowed {atol:g} + {rtol:g}*|expected|)\n"
            f"       expected: {_short(expected)}\n"
            f"       got:      {_short(got)}",
            hint,
        )


# --------------------------------------------------------------------------- running checks


def _learner_frame(err: BaseException) -> str:
    """The last line of the traceback, so the learner sees where their code broke."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f" (line {last.lineno}: {last.line})" if last.line else ""


def run_check(name: str, test: Callable, fn: Callable) -> Result:
    """Run `test(fn)` and turn whatever happens into a Result. Never raises."""
    if not callable(fn):
        return Result(name, "error", f"expected a function, got {type(fn).__name__}")
    try:
        checked = test(fn)
    except NotImplementedError:
        return Result(name, "not done", "not done yet (your code raises NotImplementedError).")
    except CheckFailed as failure:
        return Result(name, "failed", failure.message, failure.hint)
    except Exception as err:  # the learner's code crashed: report it, do not crash the lesson
        return Result(
            name,
            "error",
            f"your code raised {type(err).__name__}: {err}{_learner_frame(err)}",
            "run the exercise cell on a small input and read the full traceback.",
        )
    detail = f" ({checked})" if checked else ""
    return Result(name, "passed", f"correct on every case{detail}.")


def exercise(name: str, reference: Callable):
    """Decorator: make a notebook-facing check from a test function (see module docstring)."""

    def wrap(test: Callable) -> Callable:
        def check(fn: Callable) -> Callable:
            result = run_check(name, test, fn)
            print(result.render())
            if result.passed:
                return fn
            if strict_mode():
                raise ExerciseFailed(f"MINITOK_STRICT is set and exercise {name!r} did not pass")
            print(f"       -> the rest of this notebook uses minitok's reference {name}.")
            return reference

        check.__name__ = test.__name__
        check.__doc__ = test.__doc__
        check.exercise = name  # what the grader looks for
        check.test = test
        check.reference = reference
        return check

    return wrap


def exercises_in(module: ModuleType) -> dict[str, Callable]:
    """Every check a lesson's check module defines, by exercise name, in definition order."""
    found = {}
    for value in vars(module).values():
        if callable(value) and hasattr(value, "exercise") and hasattr(value, "test"):
            found[value.exercise] = value
    return found
