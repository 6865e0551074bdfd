"""Shared fixtures: every numerical test runs on the CPU, and on CUDA when one is present."""

from __future__ import annotations

import pytest
import torch

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ),
]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """The device under test: 'cpu' always, 'cuda' when available (skipped otherwise)."""
    return torch.device(request.param)


@pytest.fixture
def gen() -> torch.Generator:
    """A CPU generator with a fixed seed, for inputs that must be the same on every run."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(autouse=True)
def _lenient_course(monkeypatch):
    """Unit tests judge checks themselves: never inherit MINITOK_STRICT/FAST from the shell."""
    monkeypatch.delenv("MINITOK_STRICT", raising=False)
    monkeypatch.delenv("MINITOK_FAST", raising=False)


@pytest.fixture(params=["local", "wire"])
def transport(request):
    """Judge checks in this process ("local") or through the grader's wire ("wire"): see
    tests/checking.py. A check test module opts in with `pytestmark`."""
    import checking

    checking.TRANSPORT["name"] = request.param
    yield request.param
    checking.TRANSPORT["name"] = "local"
