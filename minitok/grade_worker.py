"""Runs one exercise's check on a submission's definitions, in its own process.

    python -m minitok.grade_worker minitok.checks.lesson01 nearest_code defs.py

Before the learner's code runs, network sockets and file deletion are switched off in this
process (a guard for honest mistakes, not a security sandbox). The Result is printed as one
JSON line on stdout; the grader reads it.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import socket
import sys


def _refuse(*_args, **_kwargs):
    raise PermissionError("the grader does not allow this (network or deleting files)")


def lock_down() -> None:
    """No network, no deleting files, for everything that runs after this call."""
    socket.socket = _refuse  # type: ignore[assignment, misc]
    socket.create_connection = _refuse  # type: ignore[assignment]
    for name in ("remove", "unlink", "rmdir", "removedirs"):
        setattr(os, name, _refuse)
    shutil.rmtree = _refuse  # type: ignore[assignment]


def main(module: str, name: str, source_file: str) -> None:
    from minitok.checks import exercises_in
    from minitok.checks._core import Result, run_check

    checks = exercises_in(importlib.import_module(module))
    with open(source_file, encoding="utf-8") as f:
        source = f.read()
    lock_down()
    namespace: dict = {"__name__": "submission"}
    try:
        exec(compile(source, "submission", "exec"), namespace)
    except Exception as err:  # a cell's imports or defs failed: report, don't crash
        result = Result(name, "error", f"your notebook's definitions raised "
                        f"{type(err).__name__}: {err}")
    else:
        # As in the notebook, where a failed exercise is replaced by the reference, the other
        # exercises this one calls are minitok's: one mistake costs exactly one exercise.
        for other, check in checks.items():
            if other != name:
                namespace[other] = check.reference
        fn = namespace.get(name)
        if fn is None:
            result = Result(name, "not done", f"no function named {name} in the notebook.")
        else:
            result = run_check(name, checks[name].test, fn)
    sys.stdout.flush()
    print(json.dumps(result.to_dict()))


if __name__ == "__main__":
    main(*sys.argv[1:4])
