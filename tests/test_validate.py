"""minitok.validate: each argument check accepts good values and refuses bad ones, naming the
argument in its message (the public functions' bad-input tests rely on that wording)."""

from __future__ import annotations

import math

import pytest
import torch

from minitok import validate

NAN, INF = float("nan"), float("inf")


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("value", [1, 2, 10**9])
def test_positive_int_accepts(value):
    assert validate.positive_int(value, "steps") is value


@pytest.mark.parametrize("value", [0, -1, 1.0, 2.5, True, False, "3", None, NAN])
def test_positive_int_refuses(value):
    with pytest.raises(ValueError, match=r"^steps must be a positive int, got "):
        validate.positive_int(value, "steps")


@pytest.mark.parametrize("value", [0, 1, 64])
def test_non_negative_int_accepts(value):
    assert validate.non_negative_int(value, "n_masked") is value


@pytest.mark.parametrize("value", [-1, 0.0, True, False, "0", None])
def test_non_negative_int_refuses(value):
    with pytest.raises(ValueError, match=r"^n_masked must be a non-negative int, got "):
        validate.non_negative_int(value, "n_masked")


def test_true_is_not_an_int():
    for check in (validate.positive_int, validate.non_negative_int):
        with pytest.raises(ValueError, match="got True"):
            check(True, "n")
    with pytest.raises(ValueError, match="n must be a finite number, got True"):
        validate.number(True, "n")


def test_number_accepts_finite_reals_in_range_and_returns_a_float():
    assert validate.number(2, "cfg_scale") == 2.0 and isinstance(validate.number(2, "x"), float)
    assert validate.number(0, "cfg_scale", low=0) == 0.0  # closed ends include the bound
    assert validate.number(1, "p", low=0, high=1) == 1.0
    assert validate.number(0.5, "p", low=0, high=1, low_open=True, high_open=True) == 0.5
    assert validate.number(-1e300, "x") == -1e300


@pytest.mark.parametrize("value", [NAN, INF, -INF, True, "1", None, torch.tensor(1.0)])
def test_number_refuses_what_is_not_a_finite_real(value):
    with pytest.raises(ValueError, match=r"^cfg_scale must be a finite number, got "):
        validate.number(value, "cfg_scale", low=0)


@pytest.mark.parametrize("value, kwargs, span", [
    (-0.5, {"low": 0}, "[0, inf]"),
    (0, {"low": 0, "low_open": True}, "(0, inf]"),
    (1, {"low": 0, "high": 1, "high_open": True}, "[0, 1)"),
    (1.5, {"low": 0, "high": 1}, "[0, 1]"),
    (3, {"high": 2}, "[-inf, 2]"),
])
def test_number_refuses_values_out_of_range_and_says_the_range(value, kwargs, span):
    with pytest.raises(ValueError) as info:
        validate.number(value, "temperature", **kwargs)
    assert str(info.value) == f"temperature must lie in {span}, got {value!r}"


def test_one_of():
    assert validate.one_of("cosine", "schedule", ("cosine", "linear")) == "cosine"
    with pytest.raises(ValueError, match="schedule must be one of 'cosine', 'linear'; got 'cos'"):
        validate.one_of("cos", "schedule", ("cosine", "linear"))


# --------------------------------------------------------------------------- tensors


def test_tensor_checks_the_type_and_the_number_of_dimensions():
    x = torch.zeros(2, 3)
    assert validate.tensor(x, "x") is x and validate.tensor(x, "x", dim=2) is x
    assert validate.tensor(x, "x", dim=(1, 2)) is x
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        validate.tensor([[0.0]], "x")
    with pytest.raises(ValueError, match=r"x must be a 3-d tensor, got shape \(2, 3\)"):
        validate.tensor(x, "x", dim=3)
    with pytest.raises(ValueError, match=r"x must be a 1-d or 3-d tensor, got shape \(2, 3\)"):
        validate.tensor(x, "x", dim=(1, 3))


def test_float_tensor_refuses_integers_and_with_finite_nan_and_inf():
    z = torch.randn(4, 2)
    assert validate.float_tensor(z, "z", finite=True) is z
    assert validate.float_tensor(z.half(), "z", dim=2) is not None
    with pytest.raises(TypeError, match="z must be a floating-point tensor, got dtype torch.int64"):
        validate.float_tensor(torch.zeros(4, 2, dtype=torch.long), "z")
    for bad in (NAN, INF, -INF):
        with_bad = z.clone()
        with_bad[1, 1] = bad
        validate.float_tensor(with_bad, "z")  # allowed unless finite values are asked for
        with pytest.raises(ValueError, match="z holds NaN or inf values"):
            validate.float_tensor(with_bad, "z", finite=True)
    with pytest.raises(ValueError, match="z must be a 1-d tensor"):
        validate.float_tensor(z, "z", dim=1)


def test_index_tensor_accepts_ids_in_range():
    ids = torch.tensor([[0, 3], [9, 1]])
    assert validate.index_tensor(ids, "indices", size=10) is ids
    assert validate.index_tensor(ids.int(), "indices", size=10, dim=2) is not None
    assert validate.index_tensor(torch.zeros(0, dtype=torch.long), "indices", size=1) is not None
    assert validate.index_tensor(torch.tensor([0, 10**12]), "indices") is not None  # no size
    assert validate.index_tensor(torch.tensor([3], dtype=torch.uint8), "indices", 4) is not None


@pytest.mark.parametrize("ids", [torch.tensor([0.0, 1.0]), torch.tensor([0.5]),
                                 torch.tensor([True, False]), torch.tensor([1 + 0j])])
def test_index_tensor_refuses_float_bool_and_complex_ids(ids):
    with pytest.raises(TypeError, match="codes must be an integer tensor of ids, got dtype"):
        validate.index_tensor(ids, "codes", size=10)


@pytest.mark.parametrize("bad, low, high", [(10, 0, 10), (-1, -1, 3)])
def test_index_tensor_refuses_ids_out_of_range(bad, low, high):
    ids = torch.tensor([0, 3, bad])
    with pytest.raises(ValueError) as info:
        validate.index_tensor(ids, "labels", size=10)
    assert str(info.value) == f"labels must lie in [0, 9], got values in [{low}, {high}]"


def test_index_tensor_without_a_size_still_refuses_negative_ids():
    with pytest.raises(ValueError, match=r"^codes must lie in \[0, inf\), got values in \[-5, 2\]$"):
        validate.index_tensor(torch.tensor([2, -5]), "codes")


def test_flag():
    assert validate.flag(True, "greedy") is True and validate.flag(False, "greedy") is False
    for bad in ("no", 0, 1, None):
        with pytest.raises(TypeError, match="greedy must be True or False, got "):
            validate.flag(bad, "greedy")


def test_same_shape_and_same_device():
    a = torch.zeros(2, 3)
    validate.same_shape(a, torch.ones(2, 3), "cond and uncond")
    with pytest.raises(ValueError, match=r"cond and uncond must have the same shape, got "
                                         r"\(2, 3\) and \(1, 3\)"):
        validate.same_shape(a, torch.zeros(1, 3), "cond and uncond")  # would broadcast
    validate.same_device(a, torch.ones(5), "z and codebook")
    elsewhere = torch.empty(2, 3, device="meta")
    with pytest.raises(ValueError, match="z and codebook must be on the same device, got cpu "
                                         "and meta"):
        validate.same_device(a, elsewhere, "z and codebook")


def test_last_dim():
    z = torch.zeros(2, 3, 4)
    assert validate.last_dim(z, "z", 4, "the codebook's D") is z
    with pytest.raises(ValueError, match=r"the last dimension of z must be the codebook's D = 4, "
                                         r"got shape \(2, 3, 1\)"):
        validate.last_dim(torch.zeros(2, 3, 1), "z", 4, "the codebook's D")  # would broadcast
    with pytest.raises(ValueError, match=r"got shape \(\)"):
        validate.last_dim(torch.tensor(1.0), "z", 4, "the codebook's D")

def test_generator():
    g = torch.Generator()
    assert validate.generator(g) is g and validate.generator(None) is None
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
        validate.generator(0)
    with pytest.raises(TypeError, match="gen must be a torch.Generator or None, got float"):
        validate.generator(math.pi, "gen")
