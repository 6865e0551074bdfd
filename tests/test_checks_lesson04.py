"""Lesson 04's checks fail each classic mistake with the hint that names it.

What every lesson's checks must do (pass the reference, report an unfinished exercise, leave
the RNG and thread count alone) is tested once for all lessons in tests/test_checks_all.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from checking import assert_fails_with, verdict

from minitok.checks import lesson04

pytestmark = pytest.mark.usefixtures("transport")  # local and through the wire

# --------------------------------------------------------------------------- attention


def attention_parts(q, k, v, mask=None, scale=None, dim=-1, fill=float("-inf"), invert=False,
                    after=False):
    """A hand-written attention with a knob for each classic mistake."""
    d = q.shape[-1]
    scores = q @ k.transpose(-2, -1) * (1 / math.sqrt(d) if scale is None else scale)
    if mask is not None and not after:
        hide = mask if invert else ~mask
        scores = scores.masked_fill(hide, fill)
    weights = torch.softmax(scores, dim=dim)
    if mask is not None and after:
        weights = weights * mask
    return weights @ v


def test_attention_accepts_a_hand_written_version():
    assert verdict(lesson04.attention, attention_parts).passed


def test_attention_scaled_by_1_over_d_fails():
    def wrong(q, k, v, mask=None):
        return attention_parts(q, k, v, mask, scale=1 / q.shape[-1])

    assert_fails_with(lesson04.attention, wrong, "1/sqrt(d_head)", "1/d")


def test_attention_unscaled_fails():
    assert_fails_with(lesson04.attention, lambda q, k, v, mask=None:
                      attention_parts(q, k, v, mask, scale=1.0), "1/sqrt(d_head)")


def test_attention_softmax_over_the_wrong_axis_fails():
    def wrong(q, k, v, mask=None):
        return attention_parts(q, k, v, mask, dim=-2)

    assert_fails_with(lesson04.attention, wrong, "dim=-1", "over the keys")


def test_attention_masking_with_zero_instead_of_minus_inf_fails():
    def wrong(q, k, v, mask=None):
        return attention_parts(q, k, v, mask, fill=0.0)

    assert_fails_with(lesson04.attention, wrong, "-inf", "Masking with 0")


def test_attention_with_the_mask_meaning_reversed_fails():
    def wrong(q, k, v, mask=None):
        return attention_parts(q, k, v, mask, invert=True)

    assert_fails_with(lesson04.attention, wrong, "True where a query MAY attend")


def test_attention_masking_after_the_softmax_fails():
    def wrong(q, k, v, mask=None):
        return attention_parts(q, k, v, mask, after=True)

    assert_fails_with(lesson04.attention, wrong, "before the softmax")


# --------------------------------------------------------------------------- causal mask


def mask_with(diagonal_shift=0, top_left=False, upper=False, dtype=torch.bool):
    def make(T_q, T_k=None, device=None):
        T_k = T_q if T_k is None else T_k
        ones = torch.ones(T_q, T_k, dtype=torch.bool, device=device)
        if upper:
            return torch.triu(ones, diagonal=T_k - T_q).to(dtype)
        base = 0 if top_left else T_k - T_q
        return torch.tril(ones, diagonal=base + diagonal_shift).to(dtype)

    return make


def test_causal_mask_accepts_a_hand_written_version():
    assert verdict(lesson04.causal_mask, mask_with()).passed


def test_causal_mask_hiding_the_diagonal_fails():
    assert_fails_with(lesson04.causal_mask, mask_with(diagonal_shift=-1), "hides the diagonal")


def test_causal_mask_showing_the_future_fails():
    assert_fails_with(lesson04.causal_mask, mask_with(diagonal_shift=1),
                      "shows the future", "off by one")


def test_causal_mask_aligned_top_left_fails():
    assert_fails_with(lesson04.causal_mask, mask_with(top_left=True), "bottom-right", "key 0 only")


def test_causal_mask_upper_triangle_fails():
    assert_fails_with(lesson04.causal_mask, mask_with(upper=True), "lower triangle")


def test_causal_mask_of_floats_fails():
    assert_fails_with(lesson04.causal_mask, mask_with(dtype=torch.float32), "bool")


# --------------------------------------------------------------------------- heads


def test_split_heads_without_transpose_fails():
    def wrong(x, n_head):
        B, T, C = x.shape
        return x.view(B, n_head, T, C // n_head)

    assert_fails_with(lesson04.split_heads, wrong, "transpose(1, 2)", "cuts across tokens")


def test_merge_heads_without_transpose_fails():
    def wrong(x):
        B, H, T, d = x.shape
        return x.reshape(B, T, H * d)

    assert_fails_with(lesson04.merge_heads, wrong, "transpose(1, 2) back")


# --------------------------------------------------------------------------- forward with cache


def forward_with(offset=True, advance=True, use_cache=True):
    def forward(model, idx, cache=None):
        B, T = idx.shape
        start = 0 if cache is None or not offset else cache.length
        pos = torch.arange(start, start + T, device=idx.device)
        x = model.wte(idx) + model.wpe(pos)
        for layer, block in enumerate(model.blocks):
            x = block(x, pos, cache if use_cache else None, layer)
        if cache is not None and advance:
            cache.advance(T)
        return model.head(model.ln_f(x))

    return forward


def test_transformer_forward_accepts_a_hand_written_version():
    assert verdict(lesson04.transformer_forward, forward_with()).passed


def test_position_ids_not_offset_under_the_cache_fails():
    assert_fails_with(lesson04.transformer_forward, forward_with(offset=False),
                      "position ids not offset", "cache.length")


def test_forgetting_to_advance_the_cache_fails():
    assert_fails_with(lesson04.transformer_forward, forward_with(advance=False), "cache.advance(T)")


def test_not_passing_the_cache_to_the_blocks_fails():
    assert_fails_with(lesson04.transformer_forward, forward_with(use_cache=False),
                      "pass the cache")

