"""`python -m minitok env`: is this setup able to run the course?

Prints one OK/FAIL line per requirement, so a learner can tell a broken setup from a broken
exercise. Exit code 0 when everything needed is OK.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
from collections.abc import Callable

REQUIRED = ["torch", "numpy", "matplotlib", "tqdm", "sklearn", "PIL"]
TESTED_TORCH = "2.13.0"  # the version `make setup` installs and CI runs (the Makefile's TORCH)


def _python() -> str:
    version = platform.python_version()
    if sys.version_info < (3, 10):  # noqa: UP036 (the env check must say so, not crash)
        raise RuntimeError(f"Python {version}; minitok needs 3.10 or newer")
    return f"Python {version} ({sys.executable})"


def _package(name: str) -> Callable[[], str]:
    def probe() -> str:
        module = importlib.import_module(name)
        return f"{name} {getattr(module, '__version__', '(version unknown)')}"

    return probe


def _device() -> str:
    import torch

    from minitok.course import default_device

    device = default_device()  # raises when MINITOK_DEVICE asks for a missing GPU
    cuda = (
        f"CUDA available: {torch.cuda.get_device_name(0)}"
        if torch.cuda.is_available()
        else "no CUDA device (lessons and tests run on the CPU)"
    )
    return f"lessons run on {device}; {cuda}; {torch.get_num_threads()} CPU threads"


def torch_warnings() -> list[str]:
    """What works but is not what the course is tested on: another torch version, or a CUDA
    build on a machine without a GPU (gigabytes of NVIDIA libraries doing nothing)."""
    import torch

    warnings = []
    if torch.__version__.split("+")[0] != TESTED_TORCH:
        warnings.append(f"torch {torch.__version__} is untested here: the course is tested on "
                        f"{TESTED_TORCH} (make setup installs it); if something fails, try that")
    if torch.version.cuda and not torch.cuda.is_available():
        warnings.append(f"torch {torch.__version__} is a CUDA {torch.version.cuda} build, but "
                        f"there is no GPU here: the CPU build is a fraction of its size "
                        f"(make setup installs it from https://download.pytorch.org/whl/cpu)")
    return warnings


def _data() -> str:
    from minitok.data import load_digits

    train, _ = load_digits("train")
    test, _ = load_digits("test")
    total = len(train) + len(test)
    if total != 1797:
        raise RuntimeError(f"expected 1,797 bundled digits, found {total}")
    return f"digits: {len(train)} train + {len(test)} test images, no download needed"


def _switches() -> str:
    names = ["MINITOK_FAST", "MINITOK_STRICT", "MINITOK_DEVICE"]
    set_ = [f"{n}={os.environ[n]}" for n in names if n in os.environ]
    return "course switches: " + (", ".join(set_) if set_ else "none set")


def run() -> int:
    """Print the report; return 0 when every requirement is met, 1 otherwise."""
    probes = [("python", _python)]
    probes += [(name, _package(name)) for name in REQUIRED]
    probes += [("device", _device), ("data", _data), ("switches", _switches)]
    failed = 0
    for name, probe in probes:
        try:
            print(f"OK   {name:<10} {probe()}")
        except Exception as err:  # report every failure, then exit non-zero
            failed += 1
            print(f"FAIL {name:<10} {type(err).__name__}: {err}")
    if not failed:
        for warning in torch_warnings():
            print(f"WARN {'torch':<10} {warning}")
    print("environment OK" if not failed else f"{failed} requirement(s) FAILED: see above")
    return 0 if not failed else 1
