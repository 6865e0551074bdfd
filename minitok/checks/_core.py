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

A check judges one function at a time: while it runs, the lesson's other exercises that the
learner's function can see are minitok's references (in a notebook, where one of them failed,
and in `minitok grade`), so one mistake costs exactly one exercise.

The same test functions run in `minitok grade`, where the learner's function lives in another
process: `fn` is then a `Remote` that sends each call's inputs to that process and brings plain
data back. A check whose inputs carry autograd graphs runs a small part of itself next to the
learner's function with `probe` (see there).
"""

from __future__ import annotations

import functools
import sys
import sysconfig
import traceback
import types
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

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


class Remote:
    """A learner's function (or an object it returned) that lives in another process.

    `minitok grade` hands checks a subclass of this instead of the learner's function; its
    `run_probe(probe_fn, args)` runs `probe_fn(learner_fn, *args)` in that process.
    """


def probe(probe_fn: Callable, fn, *args):
    """`probe_fn(fn, *args)`, run where the learner's function `fn` lives; what it returns.

    For the few checks whose inputs carry autograd graphs (a loss whose graph reaches a
    decoder's weight): a graph cannot travel to the grader's worker process, so the check
    sends plain data instead (a state dict, tensors) and a probe, a module-level function
    of its minitok.checks module that rebuilds the graph next to the learner's function,
    calls it and returns plain data. In a notebook the probe simply runs here. The check
    still computes the expected values itself.
    """
    if isinstance(fn, Remote):
        return fn.run_probe(probe_fn, args)
    return probe_fn(fn, *args)


def learner_line(err: BaseException) -> str:
    """Where the learner's code broke, as " (line N: text)", for the verdict.

    The deepest frame of a notebook cell (the grader compiles cells as "<cell N>"), else the
    deepest frame of the traceback. An error that came back from the grader's worker carries
    its line in `learner_frame`.
    """
    known = getattr(err, "learner_frame", None)
    if isinstance(known, str):
        return known
    frames = traceback.extract_tb(err.__traceback__)
    cells = [frame for frame in frames if frame.filename.startswith("<cell ")]
    frames = cells or frames
    if not frames or not frames[-1].line:
        return ""
    return f" (line {frames[-1].lineno}: {frames[-1].line})"


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
        kind = getattr(err, "learner_type", type(err).__name__)
        return Result(
            name,
            "error",
            f"your code raised {kind}: {err}{learner_line(err)}",
            "run the exercise cell on a small input and read the full traceback.",
        )
    detail = f" ({checked})" if checked else ""
    return Result(name, "passed", f"correct on every case{detail}.")


@contextmanager
def bound(namespace: dict | None, values: dict) -> Iterator[None]:
    """Bind `values` in `namespace` (a function's globals) for a block, then restore it.

    Names that were not bound before are removed again, also when the block raises.
    """
    if not isinstance(namespace, dict):
        yield
        return
    missing = object()
    saved = {name: namespace.get(name, missing) for name in values}
    namespace.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is missing:
                namespace.pop(name, None)
            else:
                namespace[name] = value


def other_references(check: Callable) -> dict[str, Callable]:
    """minitok's reference of every exercise of `check`'s lesson except its own, and of the
    earlier lessons' exercises that the lesson's code calls by name (its checks module's
    EARLIER, e.g. {"nearest_code": quantize.nearest_code}: the notebook binds the learner's
    own with `minitok.earlier.passed`, the grader has only the one notebook)."""
    lesson = sys.modules[check.test.__module__]
    return {**getattr(lesson, "EARLIER", {}),
            **{name: other.reference for name, other in exercises_in(lesson).items()
               if name != check.exercise}}


def verdict(check: Callable, fn: Callable) -> Result:
    """What `check` says about `fn`, judged in this process.

    While it runs, the lesson's other exercises are minitok's references in the namespace
    the learner's code reads (the notebook's, see `learner_namespaces`), as the grader's
    worker binds them: a learner's `nearest_code` is judged with minitok's
    `squared_distances` even where their own one failed.
    """
    with references_bound(check, fn):
        return run_check(check.exercise, check.test, fn)


@contextmanager
def references_bound(check: Callable, fn) -> Iterator[None]:
    """The lesson's other exercises bound to minitok's references where `fn`'s code reads
    them (every namespace of `learner_namespaces(fn)`), for a block, then restored."""
    with ExitStack() as stack:
        for namespace in learner_namespaces(fn):
            stack.enter_context(bound(namespace, other_references(check)))
        yield


def learner_namespaces(fn) -> list[dict]:
    """The namespaces the learner's code behind `fn` reads its other names from.

    However the function is wrapped: a decorator's wrapper lives in the decorator's module
    (`@torch.no_grad()`'s in torch.utils._contextlib), so this follows `__wrapped__`
    (functools.wraps), a method's or staticmethod's `__func__`, a partial's `func` and the
    functions a wrapper's closure holds, to the learner's own function, and keeps the
    globals of every function (the module namespace of every class) found on the way that
    is not a library's (installed packages, the standard library, minitok).
    """
    found: list[dict] = []
    seen: list = []  # kept alive, so that no id is reused while this runs
    todo = [fn]
    while todo and len(seen) < 100:
        item = todo.pop()
        if any(item is known for known in seen):
            continue
        seen.append(item)
        todo.extend(_inner_callables(item))
        namespace = _namespace_of(item)
        if namespace is not None and not _is_library(namespace) and \
                all(namespace is not known for known in found):
            found.append(namespace)
    return found


def _inner_callables(item) -> list:
    """What `item` wraps: functools.wraps' `__wrapped__`, `__func__`, a partial's `func`, the
    callables a function's closure holds, a class's methods, a callable object's `__call__`."""
    inner = [getattr(item, name, None) for name in ("__wrapped__", "__func__")]
    if isinstance(item, functools.partial):
        inner.append(item.func)
    if isinstance(item, types.FunctionType):
        inner += [cell.cell_contents for cell in item.__closure__ or ()
                  if _has_contents(cell)]
    elif isinstance(item, type):  # its methods
        inner += [value for value in vars(item).values()
                  if isinstance(value, (types.FunctionType, staticmethod, classmethod))]
    else:
        inner.append(vars(type(item)).get("__call__"))  # a callable object: its method
    return [x for x in inner if callable(x) or isinstance(x, (staticmethod, classmethod))]


def _has_contents(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018 (an empty cell raises ValueError)
    except ValueError:
        return False
    return True


def _namespace_of(item) -> dict | None:
    """A function's globals; the module namespace of a class, or of a callable object's
    class (a notebook's module is __main__)."""
    if isinstance(item, types.FunctionType):
        return item.__globals__
    module = sys.modules.get(getattr(item if isinstance(item, type) else type(item),
                                     "__module__", None) or "")
    return vars(module) if module is not None else None


def _library_roots() -> tuple[Path, ...]:
    paths = sysconfig.get_paths()
    return tuple({Path(paths[key]).resolve() for key in ("stdlib", "platstdlib", "purelib",
                                                          "platlib") if key in paths})


_LIBRARY_ROOTS = _library_roots()


def _is_library(namespace: dict) -> bool:
    """True for the namespace of a module installed as a library (torch's, functools') or of
    minitok itself (a check never rebinds minitok's own names)."""
    name = namespace.get("__name__", "")
    if name in sys.builtin_module_names or name == "minitok" or name.startswith("minitok."):
        return True
    module = sys.modules.get(name)
    file = getattr(module, "__file__", None)
    if module is None or vars(module) is not namespace or not file:
        return False
    path = Path(file).resolve()
    return any(path.is_relative_to(root) for root in _LIBRARY_ROOTS)


def exercise(name: str, reference: Callable, solution: Callable | None = None,
             hints: tuple[str, ...] = ()):
    """Decorator: make a notebook-facing check from a test function (see module docstring).

    `reference` is what the notebook falls back to; `solution` is minitok's own function
    that the exercise asks the learner to write, when `reference` only wraps it (the grader
    hides it from the submission). It defaults to `reference`. `hints` are the steps
    `check.hint(name)` gives on request: the idea, then the formula, then near-code.
    """

    def wrap(test: Callable) -> Callable:
        def check(fn: Callable) -> Callable:
            result = verdict(check, fn)
            print(result.render())
            if result.passed:
                return fn
            if strict_mode():
                raise ExerciseFailed(f"exercise {name!r} did not pass (strict mode: "
                                     "MINITOK_STRICT, or nbgrader's autograder)")
            if check.hints:
                print(f"       more help, one step at a time: check.hint({name!r})")
            print(f"       -> the rest of this notebook uses minitok's reference {name}.")
            return reference

        check.__name__ = test.__name__
        check.__doc__ = test.__doc__
        check.exercise = name  # what the grader looks for
        check.test = test
        check.reference = reference
        check.solution = reference if solution is None else solution
        check.hints = tuple(hints)
        return check

    return wrap


def exercises_in(module: types.ModuleType) -> dict[str, Callable]:
    """Every check a lesson's check module defines, by exercise name, in definition order."""
    found = {}
    for value in vars(module).values():
        if callable(value) and hasattr(value, "exercise") and hasattr(value, "test"):
            found[value.exercise] = value
    return found


# --------------------------------------------------------------------------- hints on demand

_hints_seen: dict[tuple[str, str], int] = {}  # (lesson module, exercise) -> last level shown


def show_hint(lesson: str, name: str, level: int | None = None) -> None:
    """Print a hint for exercise `name` of the checks module `lesson`.

    Each call gives the next level (1 the idea, 2 the formula or the shapes, 3 near-code)
    and then repeats the last; `level` asks for one directly. A lesson's checks module
    exposes this as `check.hint(name, level=None)`.
    """
    checks = exercises_in(sys.modules[lesson])
    if name not in checks:
        raise ValueError(f"name must be one of this lesson's exercises {list(checks)}, "
                         f"got {name!r}")
    hints = checks[name].hints
    if not hints:
        print(f"{name}: no hints written for this exercise; its check's verdict says what is "
              "wrong when it fails.")
        return
    if level is None:
        level = min(_hints_seen.get((lesson, name), 0) + 1, len(hints))
    if not (isinstance(level, int) and 1 <= level <= len(hints)):
        raise ValueError(f"level must be an int in 1..{len(hints)}, got {level!r}")
    _hints_seen[(lesson, name)] = level
    more = f" (check.hint({name!r}) again for hint {level + 1})" if level < len(hints) else ""
    print(f"hint {level} of {len(hints)} for {name}{more}:\n{hints[level - 1]}")
