"""How the package reads: lines per module, the share spent on argument checks, the longest
functions, and each exercise's package reference against the notebook's solution.

    python scripts/layout_report.py            # the table, for a closing note or a review

Counting rules (the same before and after a change, so the numbers compare):
- a code line is a non-blank line that is not a comment and not part of a docstring;
- a validation line is a code line of minitok/validate.py, a code line of an `if` whose body
  only raises (the test and the raise), or a statement that is just a call to `validate.*`;
- the package is minitok/*.py without the course tooling (checks/, bench/, assign, grade and
  its helpers, cli, env, demo), since those are not what a learner compares with the
  notebooks;
- an exercise's reference is the function its check falls back to; one defined inside the
  checks themselves (a wrapper) is shown as "-".
"""

from __future__ import annotations

import ast
import inspect
import io
import json
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLING = {"__init__.py", "__main__.py", "assign.py", "cli.py", "env.py", "demo.py", "bench.py"}


def code_lines(source: str) -> set[int]:
    """Line numbers holding code: not blank, not only a comment, not inside a docstring."""
    lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                            tokenize.DEDENT, tokenize.ENDMARKER):
            lines.update(range(tok.start[0], tok.end[0] + 1))
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(
                getattr(body[0], "value", None), ast.Constant) and isinstance(
                body[0].value.value, str):
            lines -= set(range(body[0].lineno, body[0].end_lineno + 1))
    return lines


def validation_lines(source: str, path: Path) -> set[int]:
    if path.name == "validate.py":
        return code_lines(source)
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.If) and node.body and all(
                isinstance(s, ast.Raise) for s in node.body) and not node.orelse:
            found.update(range(node.lineno, node.end_lineno + 1))
        call = node.value if isinstance(node, (ast.Expr, ast.Assign)) else None
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and isinstance(
                call.func.value, ast.Name) and call.func.value.id == "validate":
            found.update(range(node.lineno, node.end_lineno + 1))
    return found & code_lines(source)


def package_files() -> list[Path]:
    files = sorted((ROOT / "minitok").glob("*.py"))
    return [f for f in files if f.name not in TOOLING and not f.name.startswith("grad")]


def functions(source: str) -> list[tuple[str, int]]:
    """(qualified name, code lines) of every function and method."""
    lines, out = code_lines(source), []

    def visit(node, prefix=""):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                span = set(range(child.lineno, child.end_lineno + 1)) & lines
                out.append((prefix + child.name, len(span)))
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")

    visit(ast.parse(source))
    return out


def solution_functions() -> dict[str, int]:
    """Code lines of every def that holds a solution region in solutions/*.ipynb."""
    found = {}
    for path in sorted((ROOT / "solutions").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            source = "".join(cell["source"])
            if cell["cell_type"] != "code" or "### BEGIN SOLUTION" not in source:
                continue
            clean = "\n".join(line for line in source.splitlines()
                              if not line.lstrip().startswith(("%", "!")))
            for name, n in functions(clean):
                found[name] = n
    return found


def size_of(name: str, sizes: dict[str, int]) -> int:
    """Code lines of a function, or of a class's methods together."""
    return sizes.get(name) or sum(n for q, n in sizes.items() if q.startswith(name + "."))


def main() -> None:
    total = valid = 0
    rows = []
    longest = []
    for path in package_files():
        source = path.read_text()
        code, checks = code_lines(source), validation_lines(source, path)
        total, valid = total + len(code), valid + len(checks)
        rows.append((path.name, len(code), len(checks)))
        longest += [(n, f"{path.name}:{name}") for name, n in functions(source)]
    print(f"{'module':<18} {'code lines':>10} {'validation':>10} {'share':>6}")
    for name, code, checks in rows:
        print(f"{name:<18} {code:>10} {checks:>10} {checks / max(code, 1):>6.0%}")
    print(f"{'total':<18} {total:>10} {valid:>10} {valid / total:>6.0%}")
    print("\nlongest functions:")
    for n, where in sorted(longest, reverse=True)[:5]:
        print(f"  {n:>3} lines  {where}")

    from minitok.checks import exercises_in

    print(f"\n{'exercise':<26} {'package':>7} {'notebook':>8} {'ratio':>6}")
    notebook = solution_functions()
    for lesson in sorted((ROOT / "minitok" / "checks").glob("lesson*.py")):
        module = __import__(f"minitok.checks.{lesson.stem}", fromlist=["x"])
        for name, check in exercises_in(module).items():
            ref = inspect.unwrap(check.reference)  # past @torch.no_grad()'s wrapper
            if "checks" in getattr(getattr(ref, "__code__", None), "co_filename", ""):
                print(f"{lesson.stem + '.' + name:<26} {'-':>7}")
                continue
            try:
                source = Path(ref.__code__.co_filename).read_text()
            except AttributeError:  # a class: count its methods
                source = Path(inspect.getsourcefile(ref)).read_text()
            mine = size_of(ref.__qualname__, dict(functions(source)))
            theirs = size_of(name, notebook)
            ratio = f"{mine / theirs:.1f}x" if theirs else "-"
            print(f"{lesson.stem + '.' + name:<26} {mine:>7} {theirs or '-':>8} {ratio:>6}")


if __name__ == "__main__":
    main()
