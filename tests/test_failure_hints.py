"""A failure hint names the mistake; it does not print the answer (issue 28).

A hint ladder's last step leaves the key lines blank (tests/test_hints.py); a failing check
must not then hand them out in its verdict. For lessons 01, 02 and 04, every string of the
check module that can reach a learner as a failure hint (every string literal outside the
docstrings and the `*_HINTS` ladders, f-strings by their fixed parts) must hold none of the
lesson's solution lines: the solved notebook's `### BEGIN SOLUTION` lines, each read as the
expression it computes (`return e` and `names = e` give `e`), whitespace and quotes
normalised. Expressions shorter than KEY_CHARS characters (`q.shape[-1]`, `weights @ v`) name
a quantity rather than give the answer and are not counted.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re

import pytest
from notebooks import SOLUTIONS
from test_hints import _solutions

LESSONS = ("01", "02", "04")
KEY_CHARS = 16


def _normal(text: str) -> str:
    """Runs of whitespace as one space, double quotes as single ones."""
    return re.sub(r"\s+", " ", text).replace('"', "'").strip()


def key_expression(line: str) -> str | None:
    """The expression a solution line computes, or None for a statement that gives none."""
    line = _normal(line)
    if line.endswith(":") or line.endswith(","):  # `if ...:`, `for ...:`, a call split in two
        return None
    line = re.sub(r"^return ", "", line)
    assign = re.match(r"^[\w.\[\], ]+? = (?!=)(.*)$", line)  # `a, b = e`, `self.x = e`
    expression = assign.group(1) if assign else line
    if len(expression) < KEY_CHARS or not re.search(r"[(\[+*/@-]", expression):
        return None  # short, or names only (`quantized, indices`: the contract, not a step)
    return expression


# The message argument of each expectation: it says what was checked ("kmeans_step(vectors,
# codebook)"), which may name a call; the hint is another argument.
MESSAGE_ARG = {"expect": 1, "expect_tensor": 1, "expect_shape": 2, "expect_equal": 2,
               "expect_close": 2, "CheckFailed": 0}


def key_fragments(expression: str) -> list[str]:
    """The expression, and each keyword argument in it that computes something
    (`diagonal=T_k - T_q`, `minlength=codebook.shape[0]`): a hint that prints the argument
    gives the line away as surely as one that prints the call."""
    keywords = re.findall(r"\b\w+=(?!=)[^,()]*[.\[+*/@-][^,()]*", expression)
    return [expression] + [k.strip() for k in keywords if len(k.strip()) >= KEY_CHARS]


def failure_hints(source: str) -> list[str]:
    """Every string literal of a module's `source` that can become a failure hint: not a
    docstring, not part of a `*_HINTS` ladder, not an expectation's message (`what`); an
    f-string by its fixed parts ('{}')."""
    tree = ast.parse(source)
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            at = MESSAGE_ARG.get(node.func.id)
            if at is not None and len(node.args) > at:
                skip.update(id(n) for n in ast.walk(node.args[at]))
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "what" for t in node.targets):
            skip.update(id(n) for n in ast.walk(node.value))
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skip.add(id(first.value))
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id.endswith("_HINTS") for t in node.targets):
            skip.update(id(n) for n in ast.walk(node.value))
    hints = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.JoinedStr):
            skip.update(id(n) for n in ast.walk(node))
            hints.append("".join(v.value if isinstance(v, ast.Constant) else "{}"
                                 for v in node.values))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            hints.append(node.value)
    return [_normal(h) for h in hints if len(h) > 20]


def _keys(lesson: str) -> dict[str, str]:
    """Each key expression of the lesson's solutions -> the exercise it solves."""
    path = next(p for p in SOLUTIONS if p.name.startswith(lesson))
    keys = {}
    for exercise, lines in _solutions(path).items():
        for line in lines:
            key = key_expression(line)
            for fragment in key_fragments(key) if key else ():
                keys[fragment] = exercise
    return keys


@pytest.mark.parametrize("lesson", LESSONS)
def test_no_failure_hint_prints_a_solution_line(lesson):
    module = importlib.import_module(f"minitok.checks.lesson{lesson}")
    keys = _keys(lesson)
    assert keys, f"lesson {lesson}: no solution lines found"
    given = [(keys[key], key, hint[:90]) for hint in failure_hints(inspect.getsource(module))
             for key in keys if key in hint]
    assert not given, "failure hints that print a solution line (exercise, line, hint):\n" + \
        "\n".join(map(str, given))


def test_the_measure_reads_the_expression_of_a_line():
    assert key_expression("return torch.tril(ones, diagonal=T_k - T_q)") == \
        "torch.tril(ones, diagonal=T_k - T_q)"
    assert key_expression('q, k, v = self.qkv(x).split(C, dim=2)') == "self.qkv(x).split(C, dim=2)"
    assert key_expression('scores = scores.masked_fill(~mask, float("-inf"))') == \
        "scores.masked_fill(~mask, float('-inf'))"
    assert key_expression("d = q.shape[-1]") is None  # too short to be the answer
    assert key_expression("for start in range(0, n, step):") is None
    assert key_expression("x = x + self.mlp(self.ln2(x))") == "x + self.mlp(self.ln2(x))"
    assert key_expression("return quantized, indices, distances") is None  # the contract
    assert key_fragments("torch.tril(ones, diagonal=T_k - T_q)") == [
        "torch.tril(ones, diagonal=T_k - T_q)", "diagonal=T_k - T_q"]
    assert key_fragments("torch.ones(n, dim=1, keepdim=True)") == [
        "torch.ones(n, dim=1, keepdim=True)"]  # settings, nothing computed


def test_the_measure_finds_a_hint_that_prints_the_answer():
    """The collector sees plain, concatenated and f-string hints, and skips the ladder."""
    source = '''
"""Docstring: torch.tril(ones, diagonal=T_k - T_q) is fine here."""
A_HINTS = ("a ladder may say torch.tril(ones, diagonal=T_k - T_q) in step 2", "x", "y")
PLAIN_HINT = ("your mask is off by one: use "
              "torch.tril(ones, diagonal=T_k - T_q) instead")
def check(n):
    expect(n > 0, "torch.tril(ones, diagonal=T_k - T_q) is what was called", "a hint")
    raise CheckFailed(f"got {n}", f"{n}: the answer is torch.tril(ones, diagonal=T_k - T_q)")
'''
    tree_hints = failure_hints(source)
    key = "torch.tril(ones, diagonal=T_k - T_q)"
    assert sum(key in h for h in tree_hints) == 2, tree_hints

