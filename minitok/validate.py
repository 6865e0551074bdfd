"""Argument checks for minitok's public functions, each a line at the call site.

A public function checks its arguments once, when it is called, and each check raises an
error that names the argument and says what was expected. What runs behind the public
boundary (the inner loops, the forward passes a training step repeats) trusts its inputs.

    steps = positive_int(steps, "steps")
    z = float_tensor(z, "z", finite=True)
    indices = index_tensor(indices, "indices", size=num_codes)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(value, name: str) -> int:
    """`value` if it is an int >= 1 (True is not an int here)."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def non_negative_int(value, name: str) -> int:
    """`value` if it is an int >= 0."""
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return value


def number(value, name: str, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> float:
    """`value` as a float if it is a finite real number in [low, high] (or open ends)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        span = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise ValueError(f"{name} must lie in {span}, got {value!r}")
    return float(value)


def one_of(value, name: str, options) -> object:
    """`value` if it is one of `options`."""
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")
    return value


def instance(value, name: str, cls: type):
    """`value` if it is an instance of `cls` (a str, a config class, a Vocabulary...)."""
    if not isinstance(value, cls):
        raise TypeError(f"{name} must be a {cls.__name__}, got {type(value).__name__}")
    return value


def tensor(x, name: str, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """`x` if it is a torch.Tensor (with `dim` dimensions, or one of several, when given)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    dims = (dim,) if isinstance(dim, int) else dim
    if dims is not None and x.dim() not in dims:
        want = " or ".join(f"{d}-d" for d in dims)
        raise ValueError(f"{name} must be a {want} tensor, got shape {tuple(x.shape)}")
    return x


def float_tensor(x, name: str, dim=None, finite: bool = False) -> Tensor:
    """`x` if it is a floating-point tensor (holding no NaN or inf when `finite`)."""
    tensor(x, name, dim)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if finite and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds NaN or inf values")
    return x


def int_tensor(x, name: str, dim=None) -> Tensor:
    """`x` if it is an integer tensor (its values unread: no device sync, for a hot path)."""
    tensor(x, name, dim)
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of ids, got dtype {x.dtype}")
    return x


def index_tensor(x, name: str, size: int | None = None, dim=None) -> Tensor:
    """`x` if it is an integer tensor whose values lie in [0, size) (or are >= 0, no `size`).

    Token ids, code indices and labels are indices: a float tensor of them (even one holding
    whole numbers) is a mistake upstream, so it is refused rather than rounded. The range
    costs one device sync (min and max read together).
    """
    int_tensor(x, name, dim)
    if not x.numel():
        return x
    low, high = torch.stack(torch.aminmax(x)).tolist()
    if low < 0 or (size is not None and high >= size):
        span = f"[0, {size - 1}]" if size is not None else "[0, inf)"
        raise ValueError(f"{name} must lie in {span}, got values in [{low}, {high}]")
    return x


def last_dim(x: Tensor, name: str, size: int, what: str) -> Tensor:
    """`x` if it is (..., size): vectors whose length `what` names (e.g. "the codebook's D").

    Broadcasting would otherwise stretch a last dimension of 1 to `size` without a word.
    """
    if x.dim() == 0 or x.shape[-1] != size:
        raise ValueError(f"the last dimension of {name} must be {what} = {size}, got shape "
                         f"{tuple(x.shape)}")
    return x


def same_shape(a: Tensor, b: Tensor, names: str) -> None:
    """Refuse two tensors of different shapes (broadcasting would hide the mistake)."""
    if a.shape != b.shape:
        raise ValueError(f"{names} must have the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")


def same_device(a: Tensor, b: Tensor, names: str) -> None:
    """Refuse two tensors on different devices, naming both."""
    if a.device != b.device:
        raise ValueError(f"{names} must be on the same device, got {a.device} and {b.device}")


def flag(value, name: str) -> bool:
    """`value` if it is a bool (a string such as "no" would be read as True)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def generator(value, name: str = "generator") -> torch.Generator | None:
    """`value` if it is None or a torch.Generator."""
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(value).__name__}")
    return value
