"""minitok.fsq against vector-quantize-pytorch's FSQ and the FSQ paper's definitions."""

from __future__ import annotations

import math

import pytest
import torch
from vector_quantize_pytorch import FSQ as ReferenceFSQ

from minitok.fsq import (
    FSQ,
    codes_to_indices,
    fsq_bound,
    fsq_quantize,
    indices_to_codes,
    round_ste,
)

# The paper's recommended levels for 2^8, 2^10, 2^12 codes, plus a small even/odd mix.
LEVELS = [[8, 6, 5], [8, 5, 5, 5], [7, 5, 5, 5, 5], [3, 4]]


@pytest.mark.parametrize("levels", LEVELS)
def test_codebook_size_is_the_product_of_levels(levels):
    assert FSQ(levels).num_codes == math.prod(levels)


@pytest.mark.parametrize("levels", LEVELS)
def test_index_code_index_round_trip(device, levels):
    indices = torch.arange(math.prod(levels), device=device)
    codes = indices_to_codes(indices, levels)  # (K, d)
    assert codes.shape == (len(indices), len(levels))
    assert torch.equal(codes_to_indices(codes, levels), indices)
    # every code is distinct and lies in [-1, 1]
    assert torch.unique(codes, dim=0).shape[0] == len(indices)
    assert codes.abs().max() <= 1


@pytest.mark.parametrize("levels", LEVELS)
def test_matches_vector_quantize_pytorch(device, gen, levels):
    d = len(levels)
    ref = ReferenceFSQ(levels).to(device)
    z = (torch.randn(4, 50, d, generator=gen) * 3).to(device)
    ref_codes, ref_indices = ref(z)
    out = FSQ(levels).to(device)(z)
    torch.testing.assert_close(out.quantized, ref_codes, rtol=0, atol=1e-6)
    assert out.indices.dtype == torch.int64
    assert torch.equal(out.indices, ref_indices.long())
    # the implicit codebook, entry by entry
    all_codes = indices_to_codes(torch.arange(math.prod(levels), device=device), levels)
    torch.testing.assert_close(all_codes, ref.implicit_codebook.to(device), rtol=0, atol=0)


def test_feature_map_layout(device, gen):
    levels = [8, 5, 5, 5]
    ref = ReferenceFSQ(levels).to(device)
    z = torch.randn(2, 4, 3, 5, generator=gen).to(device)  # (B, C, H, W)
    ref_codes, ref_indices = ref(z)
    fsq = FSQ(levels).to(device)
    out = fsq(z)
    assert out.quantized.shape == z.shape and out.indices.shape == (2, 3, 5)
    torch.testing.assert_close(out.quantized, ref_codes, rtol=0, atol=1e-6)
    assert torch.equal(out.indices, ref_indices.long())
    torch.testing.assert_close(fsq.codes(out.indices), out.quantized, rtol=0, atol=1e-6)
    assert out.loss.item() == 0.0


@pytest.mark.parametrize("levels", LEVELS)
def test_each_channel_takes_exactly_its_levels(levels, gen):
    z = torch.randn(20000, len(levels), generator=gen) * 4
    codes = fsq_quantize(z, levels)
    for i, level in enumerate(levels):
        assert torch.unique(codes[:, i]).numel() == level  # all reachable, no extra values


def test_bound_maps_zero_to_zero_and_stays_in_range(gen):
    levels = [8, 5]
    assert torch.allclose(fsq_bound(torch.zeros(1, 2), levels), torch.zeros(1, 2), atol=1e-6)
    b = fsq_bound(torch.randn(1000, 2, generator=gen) * 100, levels)
    assert b[:, 0].min() >= -4.01 and b[:, 0].max() <= 3.01  # rounds into -4..3
    assert b[:, 1].min() >= -2.01 and b[:, 1].max() <= 2.01  # rounds into -2..2


def test_rounding_has_a_straight_through_gradient(device, gen):
    z = torch.randn(5, 3, generator=gen).to(device).requires_grad_()
    g = torch.randn(5, 3, generator=gen).to(device)
    (round_ste(z) * g).sum().backward()
    assert torch.equal(z.grad, g)
    z.grad = None
    levels = [8, 6, 5]
    (fsq_quantize(z, levels) * g).sum().backward()
    # the gradient of bound(z) / (L // 2): nonzero everywhere, as if rounding were absent
    z2 = z.detach().clone().requires_grad_()
    half = torch.tensor(levels, device=device) // 2
    (fsq_bound(z2, levels) / half * g).sum().backward()
    torch.testing.assert_close(z.grad, z2.grad)
    assert torch.all(z.grad != 0)


def test_bf16_autocast_indices_equal_fp32(device, gen):
    levels = [8, 5, 5, 5]
    fsq = FSQ(levels).to(device)
    z = (torch.randn(8, 4, 16, 16, generator=gen) * 2).to(device)
    fp32 = fsq(z)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        bf16 = fsq(z)
    assert torch.equal(bf16.indices, fp32.indices)


def test_projection_when_dim_differs(gen):
    fsq = FSQ([8, 5, 5, 5], dim=16)
    z = torch.randn(2, 16, 4, 4, generator=gen, requires_grad=True)
    out = fsq(z)
    assert out.quantized.shape == z.shape and out.indices.shape == (2, 4, 4)
    out.quantized.square().sum().backward()
    assert z.grad.abs().sum() > 0


@pytest.mark.parametrize("levels", [[], [1, 5], [2.5, 3], "85", [True, 3], 5])
def test_invalid_levels(levels):
    with pytest.raises(ValueError, match="levels"):
        FSQ(levels)


def test_bad_input():
    fsq = FSQ([8, 5, 5, 5])
    with pytest.raises(ValueError, match="channels"):
        fsq(torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="z must be a 3-d or 4-d tensor"):
        fsq(torch.randn(4, 4))  # (B, C, H, W) or (B, N, C)
    with pytest.raises(ValueError, match="len\\(levels\\)"):
        fsq_quantize(torch.randn(3, 2), [8, 5, 5])
    with pytest.raises(ValueError, match="indices"):
        indices_to_codes(torch.tensor([1000]), [8, 5, 5, 5])
    with pytest.raises(TypeError, match="integer"):
        indices_to_codes(torch.tensor([1.0]), [8, 5, 5, 5])


def test_fsq_quantize_refuses_integer_and_nan_input():
    """An integer z used to come back as 1.0 everywhere, and a NaN passed straight through."""
    with pytest.raises(TypeError, match="z must be a floating-point tensor"):
        fsq_quantize(torch.ones(3, 4, dtype=torch.long), [8, 5, 5, 5])
    z = torch.zeros(3, 4)
    z[1, 2] = float("nan")
    with pytest.raises(ValueError, match="z holds NaN"):
        fsq_quantize(z, [8, 5, 5, 5])
    with pytest.raises(ValueError, match="z holds NaN"):
        FSQ([8, 5, 5, 5])(z[None])


@pytest.mark.parametrize(
    "codes, why",
    [
        ([2.0, 1.0], "beyond the grid: was read as index 9 of a 9-code grid"),
        ([1.0, -2.0], "beyond the grid on the other side"),
        ([0.5, 0.0], "halfway between two levels"),
    ],
)
def test_codes_to_indices_refuses_codes_off_the_grid(codes, why):
    with pytest.raises(ValueError, match="codes must lie on the FSQ grid"):
        codes_to_indices(torch.tensor([codes]), [3, 3])


def test_codes_to_indices_refuses_nan_and_a_wrong_last_dimension():
    with pytest.raises(ValueError, match="codes holds NaN"):
        codes_to_indices(torch.tensor([[float("nan"), 0.0]]), [3, 3])
    with pytest.raises(ValueError, match="last dimension of codes must be len\\(levels\\) = 4"):
        codes_to_indices(torch.zeros(5, 1), [8, 5, 5, 5])  # (5, 1) would broadcast to (5, 4)
    with pytest.raises(TypeError, match="codes must be a floating-point tensor"):
        codes_to_indices(torch.zeros(5, 2, dtype=torch.long), [3, 3])


@pytest.mark.parametrize("levels", LEVELS + [[15, 7]])
def test_codes_to_indices_accepts_bf16_codes(levels):
    """bf16 rounds k / 3 or k / 7, but far less than the quarter step the grid check allows."""
    indices = torch.arange(math.prod(levels))
    codes = indices_to_codes(indices, levels).bfloat16()
    assert torch.equal(codes_to_indices(codes, levels), indices)
