"""Sampling controls against their definitions (LlamaGen's generate.py, nanoGPT's model.py).

Reference behaviour (docs/references.md, "Transformers and autoregressive sampling"):
temperature divides logits; top-k keeps exactly k logits, k clamped to the vocabulary; top-p
keeps the smallest prefix whose cumulative probability >= p, including the crossing token and
at least one token; CFG is u + s (c - u) with s = 1 equal to no guidance.
"""

from __future__ import annotations

import math

import pytest
import torch

from minitok.sampling import (
    apply_temperature,
    cfg_logits,
    drop_labels,
    sample_logits,
    top_k_filter,
    top_p_filter,
)
from minitok.transformer import greedy


def _gen(device, seed=0):
    return torch.Generator(device=device).manual_seed(seed)


def _frequencies(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    return torch.bincount(tokens.cpu(), minlength=vocab).double() / tokens.numel()


def _assert_matches(freq: torch.Tensor, probs: torch.Tensor, n: int) -> None:
    """Empirical frequencies within 5 binomial standard deviations (+ a floor) of probs."""
    probs = probs.cpu().double()
    sigma = (probs * (1 - probs) / n).sqrt()
    assert torch.all((freq - probs).abs() <= 5 * sigma + 1e-4), (freq, probs)


def _nucleus_reference(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Top-p written as the definition, one row and one token at a time (a slow loop)."""
    keep = torch.zeros_like(logits, dtype=torch.bool)
    probs = torch.softmax(logits.double(), dim=-1)
    for row in range(logits.shape[0]):
        total = 0.0
        for token in torch.argsort(probs[row], descending=True).tolist():
            keep[row, token] = True
            total += probs[row, token].item()
            if total >= p:
                break
    return keep


# --------------------------------------------------------------------------- plain sampling


def test_temperature_one_without_filters_samples_the_softmax(device):
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]], device=device)
    n = 200_000
    tokens = sample_logits(logits.expand(n, -1), generator=_gen(device))
    assert tokens.shape == (n,) and tokens.dtype == torch.long
    _assert_matches(_frequencies(tokens, 6), torch.softmax(logits[0].double(), -1), n)


def test_temperature_divides_the_logits(device):
    logits = torch.randn(3, 7, generator=torch.Generator().manual_seed(1)).to(device)
    torch.testing.assert_close(apply_temperature(logits, 0.5), logits * 2.0)
    n = 200_000
    tokens = sample_logits(logits[:1].expand(n, -1), temperature=2.0, generator=_gen(device))
    _assert_matches(_frequencies(tokens, 7), torch.softmax(logits[0].double() / 2.0, -1), n)


def test_same_generator_seed_gives_the_same_tokens(device):
    logits = torch.randn(64, 50, generator=torch.Generator().manual_seed(2)).to(device)
    a = sample_logits(logits, top_k=10, top_p=0.9, generator=_gen(device, 7))
    b = sample_logits(logits, top_k=10, top_p=0.9, generator=_gen(device, 7))
    assert torch.equal(a, b)


def test_temperature_towards_zero_is_argmax_and_greedy_is_argmax(device):
    logits = torch.randn(256, 30, generator=torch.Generator().manual_seed(3)).to(device)
    argmax = logits.argmax(-1)
    assert torch.equal(sample_logits(logits, temperature=1e-4, generator=_gen(device)), argmax)
    assert torch.equal(sample_logits(logits, greedy=True), argmax)
    assert torch.equal(greedy(logits), argmax)  # Lesson 04's default pick, the same rule
    # greedy with an explicit temperature of 0 is allowed: the flag says what is meant
    assert torch.equal(sample_logits(logits, temperature=0.0, greedy=True), argmax)


# --------------------------------------------------------------------------- top-k


@pytest.mark.parametrize("k", [1, 3, 10])
def test_top_k_keeps_exactly_k_of_the_largest(device, k):
    logits = torch.randn(16, 40, generator=torch.Generator().manual_seed(4)).to(device)
    out = top_k_filter(logits, k)
    finite = torch.isfinite(out)
    assert torch.equal(finite.sum(-1).cpu(), torch.full((16,), k))
    expected = torch.zeros_like(finite).scatter(-1, torch.topk(logits, k, -1).indices, True)
    assert torch.equal(finite, expected)
    assert torch.equal(out[finite], logits[finite])  # kept logits are unchanged


def test_top_k_with_ties_still_keeps_exactly_k(device):
    logits = torch.tensor([[3.0, 1.0, 1.0, 1.0, 0.0]], device=device)
    assert torch.isfinite(top_k_filter(logits, 2)).sum().item() == 2


def test_top_k_larger_than_the_vocabulary_is_clamped(device):
    logits = torch.randn(4, 5, generator=torch.Generator().manual_seed(5)).to(device)
    with pytest.raises(RuntimeError):
        torch.topk(logits, 6)  # what an unclamped top-k would hit
    assert torch.equal(top_k_filter(logits, 6), logits)
    assert torch.equal(top_k_filter(logits, 10_000), logits)


def test_top_k_samples_only_the_k_best_with_renormalised_probabilities(device):
    logits = torch.tensor([[1.0, 2.0, 0.0, 3.0, -1.0, 2.5]], device=device)
    n = 100_000
    tokens = sample_logits(logits.expand(n, -1), top_k=3, generator=_gen(device))
    freq = _frequencies(tokens, 6)
    keep = torch.tensor([False, True, False, True, False, True])
    assert freq[~keep].sum() == 0
    expected = torch.softmax(logits[0].cpu().double().masked_fill(~keep, -math.inf), -1)
    _assert_matches(freq, expected, n)


# --------------------------------------------------------------------------- top-p


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.8, 0.9, 0.99])
def test_top_p_matches_the_definition(device, p):
    logits = 2.0 * torch.randn(32, 25, generator=torch.Generator().manual_seed(6)).to(device)
    kept = torch.isfinite(top_p_filter(logits, p))
    assert torch.equal(kept.cpu(), _nucleus_reference(logits.cpu(), p))


def test_top_p_keeps_the_crossing_token(device):
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]], device=device)
    kept = torch.isfinite(top_p_filter(probs.log(), 0.6))
    # 0.5 alone is below 0.6; the token that crosses it (0.3) must be kept, nothing more
    assert kept.cpu().tolist() == [[True, True, False, False]]


def test_top_p_always_keeps_at_least_one_token(device):
    logits = torch.randn(8, 20, generator=torch.Generator().manual_seed(7)).to(device)
    kept = torch.isfinite(top_p_filter(logits, 1e-9))
    assert torch.equal(kept.sum(-1).cpu(), torch.ones(8, dtype=torch.long))
    assert torch.equal(kept.float().argmax(-1), logits.argmax(-1))


def test_top_p_of_one_keeps_everything_even_a_tiny_tail(device):
    logits = torch.tensor([[30.0, 0.0, -30.0, -60.0]], device=device)
    assert torch.equal(top_p_filter(logits, 1.0), logits)


def test_top_p_comes_after_temperature(device):
    """At T = 3 the distribution is flat enough that p = 0.7 keeps 3 tokens (2 at T = 1)."""
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]], device=device)
    n = 50_000
    tokens = sample_logits(logits.expand(n, -1), temperature=3.0, top_p=0.7, generator=_gen(device))
    assert _nucleus_reference(logits.cpu(), 0.7)[0].sum() == 2
    expected_keep = _nucleus_reference(logits.cpu() / 3.0, 0.7)[0]
    assert expected_keep.sum() == 3
    assert set(tokens.unique().cpu().tolist()) == set(expected_keep.nonzero().flatten().tolist())


# --------------------------------------------------------------------------- guidance


def test_cfg_is_u_plus_s_times_c_minus_u(device):
    g = torch.Generator().manual_seed(8)
    c, u = torch.randn(4, 9, generator=g).to(device), torch.randn(4, 9, generator=g).to(device)
    torch.testing.assert_close(cfg_logits(c, u, 1.65), u + 1.65 * (c - u))
    torch.testing.assert_close(cfg_logits(c, u, 1.0), c)
    torch.testing.assert_close(cfg_logits(c, u, 0.0), u)
    # s > 1 moves away from u: further from u than c is
    assert ((cfg_logits(c, u, 3.0) - u).norm() > (c - u).norm()).item()


def test_drop_labels_replaces_labels_by_the_null_class_at_rate_p():
    labels = torch.randint(0, 10, (4000,), generator=torch.Generator().manual_seed(0))
    dropped = drop_labels(labels, 0.1, 10, torch.Generator().manual_seed(0))
    nulls = dropped == 10
    assert torch.equal(dropped[~nulls], labels[~nulls])  # the others are kept
    assert 0.085 < nulls.float().mean().item() < 0.115  # 0.1 +- 3.2 sigma
    assert torch.equal(drop_labels(labels, 0.0, 10), labels)
    again = drop_labels(labels, 0.1, 10, torch.Generator().manual_seed(0))
    assert torch.equal(again, dropped)  # the generator decides
    assert labels.max() < 10  # a new tensor: the labels were not changed


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature_is_a_clear_error(temperature):
    with pytest.raises(ValueError, match="temperature.*greedy=True"):
        sample_logits(torch.zeros(1, 3), temperature=temperature)


@pytest.mark.parametrize("top_p", [0.0, -0.1, 1.5, float("nan")])
def test_top_p_outside_zero_one_is_a_clear_error(top_p):
    with pytest.raises(ValueError, match=r"top_p must (lie in \(0, 1\]|be a finite number)"):
        sample_logits(torch.zeros(1, 3), top_p=top_p)
    with pytest.raises(ValueError, match="top_p"):
        sample_logits(torch.zeros(1, 3), top_p=top_p, greedy=True)  # not silently ignored


@pytest.mark.parametrize("top_k", [0, -2, 2.5, True])
def test_bad_top_k_is_a_clear_error(top_k):
    with pytest.raises(ValueError, match="top_k must be a positive int"):
        sample_logits(torch.zeros(1, 3), top_k=top_k)


def test_negative_cfg_scale_and_mismatched_halves_are_clear_errors():
    with pytest.raises(ValueError, match=r"cfg_scale must lie in \[0, inf\], got -0.5"):
        cfg_logits(torch.zeros(2, 3), torch.zeros(2, 3), -0.5)
    for bad in (float("inf"), float("-inf"), float("nan"), True, "2"):  # inf: inf/NaN logits
        with pytest.raises(ValueError, match="cfg_scale must be a finite number"):
            cfg_logits(torch.zeros(2, 3), torch.zeros(2, 3), bad)
    with pytest.raises(ValueError, match="same shape"):
        cfg_logits(torch.zeros(2, 3), torch.zeros(1, 3), 2.0)


def test_logits_of_the_wrong_shape_or_dtype_are_clear_errors():
    with pytest.raises(ValueError, match="logits must be a 2-d tensor"):
        sample_logits(torch.zeros(3))
    with pytest.raises(TypeError, match="logits must be a floating-point"):
        sample_logits(torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="logits must be a torch.Tensor"):
        sample_logits([[0.0, 1.0]])


@pytest.mark.parametrize("greedy", [True, False], ids=["greedy", "sampled"])
def test_nan_logits_are_a_clear_error(greedy):
    """argmax of a row with a NaN returns the NaN's position: a silently wrong token."""
    logits = torch.tensor([[0.0, float("nan"), 1.0], [0.0, 1.0, 2.0]])
    assert logits.argmax(-1)[0] == 1  # what greedy decoding returned before the check
    with pytest.raises(ValueError, match="logits hold NaN"):
        sample_logits(logits, greedy=greedy)
    inf = torch.tensor([[0.0, float("-inf"), 1.0]])  # -inf is a filtered token, not a mistake
    assert sample_logits(inf, greedy=True).tolist() == [2]


def test_cfg_logits_of_non_tensors_is_a_type_error():
    with pytest.raises(TypeError, match="cond must be a torch.Tensor, got list"):
        cfg_logits([1.0, 2.0], torch.zeros(2), 2.0)
    with pytest.raises(TypeError, match="uncond must be a torch.Tensor, got float"):
        cfg_logits(torch.zeros(2), 0.0, 2.0)
