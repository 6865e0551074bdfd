"""The course's switches, seeds and devices: what every notebook calls first.

Environment switches (read each time, so a test can set them):

    MINITOK_FAST=1    shrink training cells (CI uses it to execute the unsolved lessons fast)
    MINITOK_STRICT=1  a failing or unfinished exercise is an error instead of a report
                      (CI uses it for solutions/, where every exercise must pass; nbgrader's
                      autograder, which sets NBGRADER_EXECUTION, gets it too)
    MINITOK_DEVICE    "cpu" (default) or "cuda": where the notebooks run their models

and the two settings every training run and benchmark shares: `one_thread()` and
`reproducible()`.
"""

from __future__ import annotations

import os
import random
from contextlib import contextmanager

import numpy as np
import torch


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def fast_mode() -> bool:
    """True when MINITOK_FAST is set: training cells should use their short settings."""
    return _flag("MINITOK_FAST")


def strict_mode() -> bool:
    """True when MINITOK_STRICT is set, or under nbgrader: checks raise instead of falling back.

    nbgrader scores a check cell by whether it raises, so under its execution (it sets
    NBGRADER_EXECUTION) a failing exercise must raise, as in CI.
    """
    return _flag("MINITOK_STRICT") or bool(os.environ.get("NBGRADER_EXECUTION"))


def handoff_strict() -> bool:
    """True under MINITOK_STRICT only: a lesson's hand-off from an earlier one (`earlier.yours`,
    `earlier.passed`) that falls back to minitok's is then an error.

    Not under nbgrader: its autograder runs each submission alone, without the earlier
    lessons' notebooks beside it, and the hand-off is not graded, so it falls back and says so.
    """
    return _flag("MINITOK_STRICT")


def steps(full: int, fast: int) -> int:
    """How many steps a training cell runs: `full` normally, `fast` under MINITOK_FAST."""
    if full < 1 or fast < 1:
        raise ValueError(f"steps: full and fast must be >= 1, got full={full}, fast={fast}")
    return fast if fast_mode() else full


@contextmanager
def one_thread():
    """Run a block on one CPU thread, then restore the thread count.

    minitok's models are so small that a second thread spends more time waiting than
    computing (on a busy 2-core machine, 100 tokenizer steps took 6-10 s on one thread and
    40-60 s on two), and with one thread a result does not depend on the core count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextmanager
def reproducible():
    """Run a block on one thread with deterministic kernels, then restore both settings.

    Some backward kernels (the codebook lookup `codebook[indices]` adds up the gradients of
    repeated indices) sum in parallel in a varying order, so two runs with the same seed
    would drift apart after a few steps; `torch.use_deterministic_algorithms` fixes the order
    (on CUDA, an op without a deterministic kernel only warns).
    """
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with one_thread():
            yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch, and return a torch.Generator seeded the same way.

    Notebooks call this at the top so that a run repeated on the same CPU prints the same
    numbers. Functions that sample take an explicit generator when they can.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def default_device() -> torch.device:
    """The device the notebooks use: MINITOK_DEVICE if set, otherwise the CPU.

    The CPU is the default even when a GPU is present, so that a notebook gives the same
    numbers everywhere; set MINITOK_DEVICE=cuda to run the lessons on a GPU.
    """
    name = os.environ.get("MINITOK_DEVICE", "cpu").strip() or "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"MINITOK_DEVICE={name!r} asks for CUDA, but torch.cuda.is_available() is False "
            f"(torch {torch.__version__}). Unset MINITOK_DEVICE to run on the CPU."
        )
    return device
