"""Lesson 05's checks fail each classic mistake with the hint that names it.

What every lesson's checks must do (pass the reference, report an unfinished exercise, leave
the RNG and thread count alone) is tested once for all lessons in tests/test_checks_all.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from checking import assert_fails_with

from minitok import prior, sampling
from minitok.checks import lesson05 as check

pytestmark = pytest.mark.usefixtures("transport")  # local and through the wire

# --------------------------------------------------------------------------- sequences


def test_make_sequences_catches_the_bare_label():
    def bare_label(codes, labels, num_codes):
        return torch.cat([labels[:, None], codes.reshape(codes.shape[0], -1)], dim=1)
    assert_fails_with(check.make_sequences, bare_label, "K + c")


def test_make_sequences_catches_column_order():
    def columns(codes, labels, num_codes):
        rest = codes.transpose(1, 2).reshape(codes.shape[0], -1)
        return torch.cat([(labels + num_codes)[:, None], rest], dim=1)
    assert_fails_with(check.make_sequences, columns, "raster order")


# --------------------------------------------------------------------------- the loss


def test_prior_loss_catches_predicting_a_token_from_itself():
    def no_shift(model, seqs, num_codes):
        logits = model(seqs)[:, 1:, :num_codes]
        return F.cross_entropy(logits.reshape(-1, num_codes), seqs[:, 1:].reshape(-1))
    assert_fails_with(check.prior_loss, no_shift, "shift by one")


def test_prior_loss_catches_scoring_the_whole_vocabulary():
    def all_logits(model, seqs, num_codes):
        logits = model(seqs[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), seqs[:, 1:].reshape(-1))
    assert_fails_with(check.prior_loss, all_logits, "only the first num_codes")


def test_prior_loss_catches_a_detached_loss():
    def detached(model, seqs, num_codes):
        with torch.no_grad():
            return prior.prior_loss(model, seqs, num_codes)
    assert_fails_with(check.prior_loss, detached, "torch.no_grad")


# --------------------------------------------------------------------------- filters


def test_top_k_catches_zero_instead_of_minus_inf():
    def zeros(logits, k):
        v, i = torch.topk(logits, min(k, logits.shape[-1]), -1)
        return torch.zeros_like(logits).scatter(-1, i, v)
    assert_fails_with(check.top_k_filter, zeros, "-inf")


def test_top_k_catches_an_unclamped_k():
    def unclamped(logits, k):
        v, i = torch.topk(logits, k, -1)
        return torch.full_like(logits, float("-inf")).scatter(-1, i, v)
    assert_fails_with(check.top_k_filter, unclamped, "clamp k")


def test_top_k_catches_ties_kept_by_a_threshold():
    def threshold(logits, k):  # nanoGPT's way: every logit >= the k-th survives
        v, _ = torch.topk(logits, min(k, logits.shape[-1]), -1)
        return logits.masked_fill(logits < v[:, [-1]], float("-inf"))
    assert_fails_with(check.top_k_filter, threshold, "exactly k")


def test_top_p_catches_dropping_the_crossing_token():
    def drops_crossing(logits, p):
        sorted_logits, order = torch.sort(logits, -1, descending=True)
        cum = torch.softmax(sorted_logits, -1).cumsum(-1)
        keep_sorted = cum < p  # the token whose cumulative sum reaches p is dropped
        keep_sorted[:, 0] = True
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        return logits.masked_fill(~keep, float("-inf"))
    assert_fails_with(check.top_p_filter, drops_crossing, "crosses p")


def test_top_p_catches_an_empty_nucleus():
    def rolled(logits, p):  # shift "remove" right with roll: the last True wraps to the top
        sorted_logits, order = torch.sort(logits, -1, descending=True)
        remove_sorted = torch.roll(torch.softmax(sorted_logits, -1).cumsum(-1) > p, 1, -1)
        remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
        return logits.masked_fill(remove, float("-inf"))
    assert_fails_with(check.top_p_filter, rolled, "at least the most likely")


def test_top_p_catches_a_mask_left_in_sorted_order():
    def sorted_mask(logits, p):
        sorted_logits, _ = torch.sort(logits, -1, descending=True)
        probs = torch.softmax(sorted_logits, -1)
        keep = probs.cumsum(-1) - probs < p  # never mapped back to vocabulary order
        return logits.masked_fill(~keep, float("-inf"))
    assert_fails_with(check.top_p_filter, sorted_mask, "original (unsorted) positions")


# --------------------------------------------------------------------------- sampling


def test_sample_logits_catches_top_k_after_sampling():
    def top_k_too_late(logits, temperature=1.0, top_k=None, top_p=None, generator=None,
                       greedy=False):
        if greedy:
            return logits.argmax(-1)
        probs = torch.softmax(logits / temperature, -1)
        token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        if top_k is not None:
            sampling.top_k_filter(logits, top_k)  # the token is already drawn
        return token
    assert_fails_with(check.sample_logits, top_k_too_late, "top-k came after sampling")


def test_sample_logits_catches_the_global_rng():
    def ignores_generator(logits, temperature=1.0, top_k=None, top_p=None, generator=None,
                          greedy=False):
        return sampling.sample_logits(logits, temperature, top_k, top_p, None, greedy)
    assert_fails_with(check.sample_logits, ignores_generator, "generator=generator")


def test_sample_logits_catches_temperature_after_top_p():
    def wrong_order(logits, temperature=1.0, top_k=None, top_p=None, generator=None,
                    greedy=False):
        if greedy:
            return logits.argmax(-1)
        if top_k is not None:
            logits = sampling.top_k_filter(logits, top_k)
        if top_p is not None:
            logits = sampling.top_p_filter(logits, top_p)
        probs = torch.softmax(logits / temperature, -1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    assert_fails_with(check.sample_logits, wrong_order, "divide by the temperature, then top-k")


def test_sample_logits_catches_greedy_ignored():
    def never_greedy(logits, temperature=1.0, top_k=None, top_p=None, generator=None,
                     greedy=False):
        return sampling.sample_logits(logits, temperature, top_k, top_p, generator)
    assert_fails_with(check.sample_logits, never_greedy, "argmax")


# --------------------------------------------------------------------------- guidance


def test_cfg_catches_swapped_halves():
    def swapped(cond, uncond, scale):
        return cond + scale * (uncond - cond)
    assert_fails_with(check.cfg_logits, swapped, "halves are swapped")


def test_cfg_catches_the_one_plus_w_parametrisation():
    def one_plus_w(cond, uncond, scale):  # (1 + w) c - w u with w = s: s = 1 is not "off"
        return (1 + scale) * cond - scale * uncond
    assert_fails_with(check.cfg_logits, one_plus_w, "s = 1 must be plain conditional")
