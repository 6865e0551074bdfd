"""Lesson 06's checks fail each classic mistake with the hint that names it.

What every lesson's checks must do (pass the reference, report an unfinished exercise, leave
the RNG and thread count alone) is tested once for all lessons in tests/test_checks_all.py.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from checking import assert_fails_with, verdict

from minitok import maskgit
from minitok.checks import lesson06 as check

pytestmark = pytest.mark.usefixtures("transport")  # local and through the wire

# --------------------------------------------------------------------------- gamma


def _formula(name, r):
    r = torch.as_tensor(r, dtype=torch.float64)
    return {"cosine": torch.cos(math.pi / 2 * r), "linear": 1 - r, "square": 1 - r**2}[name]


def test_gamma_catches_a_missing_clip():
    assert_fails_with(check.gamma, _formula, "clipped to 1e-6")


def test_gamma_catches_the_fraction_revealed_instead_of_masked():
    def wrong(name, r):  # sin: the fraction revealed so far
        r = torch.as_tensor(r, dtype=torch.float64)
        return (1 - _formula(name, r)).clamp(1e-6, 1)

    assert_fails_with(check.gamma, wrong, "gamma(0) = 1")


# --------------------------------------------------------------------------- mask_len


def _mask_len(off_by_one=False, clamp=True, rounding=torch.floor):
    def fn(n_initial, n_unknown, step, steps, schedule="cosine"):
        if step == steps - 1:
            return torch.zeros_like(n_unknown)
        ratio = step / steps if off_by_one else (step + 1) / steps
        planned = rounding(n_initial.double() * maskgit.gamma(schedule, ratio)).long()
        if not clamp:
            return planned
        return torch.minimum(torch.minimum(n_unknown - 1, planned).clamp(min=1), n_unknown)

    return fn


def test_mask_len_catches_the_off_by_one_ratio():
    assert_fails_with(check.mask_len, _mask_len(off_by_one=True), "(t + 1) / T")


def test_mask_len_catches_a_missing_clamp():
    assert_fails_with(check.mask_len, _mask_len(clamp=False), "at most n_unknown - 1")


def test_mask_len_catches_ceil():
    assert_fails_with(check.mask_len, _mask_len(rounding=torch.ceil), "floor(N0 * gamma")


# --------------------------------------------------------------------------- random_mask


def _random_mask(count, choose="random", hide=True, use_generator=True):
    def fn(tokens, mask_id, schedule="cosine", ratio=None, generator=None):
        B, N = tokens.shape
        g = generator if use_generator else None
        if ratio is None:
            ratio = torch.rand(B, generator=g, dtype=torch.float64)
        n = count(ratio, N, schedule)  # (B,)
        if choose == "random":
            rank = torch.rand(B, N, generator=g).argsort(1).argsort(1)
        else:
            rank = torch.arange(N).expand(B, N)
        mask = rank < n[:, None]
        return (tokens.masked_fill(mask, mask_id) if hide else tokens.clone()), mask

    return fn


def _ceil(ratio, N, name):
    return torch.ceil(maskgit.gamma(name, ratio) * N).long()


def test_random_mask_catches_floor():
    wrong = _random_mask(lambda r, N, name: torch.floor(maskgit.gamma(name, r) * N).long())
    assert_fails_with(check.random_mask, wrong, "round UP")


def test_random_mask_catches_r_as_the_fraction():
    wrong = _random_mask(lambda r, N, name: torch.ceil(r * N).long())
    assert_fails_with(check.random_mask, wrong, "not r itself")


def test_random_mask_catches_showing_the_answers():
    assert_fails_with(check.random_mask, _random_mask(_ceil, hide=False), "must not see the answer")


def test_random_mask_catches_the_first_n_positions():
    assert_fails_with(check.random_mask, _random_mask(_ceil, choose="first"), "uniformly at random")


def test_random_mask_catches_the_global_rng():
    wrong = _random_mask(_ceil, use_generator=False)
    assert_fails_with(check.random_mask, wrong, "from `generator`")


# --------------------------------------------------------------------------- masked_loss


def test_masked_loss_catches_every_position():
    def wrong(logits, targets, mask):
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    assert_fails_with(check.masked_loss, wrong, "only the masked positions")


def test_masked_loss_catches_the_visible_positions():
    def wrong(logits, targets, mask):
        return F.cross_entropy(logits[~mask], targets[~mask])

    assert_fails_with(check.masked_loss, wrong, "True where the token was hidden")


def test_masked_loss_catches_a_sum():
    def wrong(logits, targets, mask):
        return F.cross_entropy(logits[mask], targets[mask], reduction="sum")

    assert_fails_with(check.masked_loss, wrong, "average over the masked")


# --------------------------------------------------------------------------- sample_with_confidence


def _sample(confidence="prob", resample_known=False, greedy=False, known_value=math.inf):
    def fn(logits, tokens, mask_id, generator=None):
        unknown = tokens == mask_id
        probs = torch.softmax(logits, dim=-1)  # (B, N, K)
        if greedy:
            draws = probs.argmax(-1)
        else:
            draws = torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(tokens.shape)
        sampled = draws if resample_known else torch.where(unknown, draws, tokens)
        source = logits if confidence == "logit" else probs
        picked = source.gather(-1, sampled[..., None])[..., 0]
        conf = torch.where(unknown, picked, torch.full_like(picked, known_value))
        return sampled, conf

    return fn


def test_sample_catches_confidence_from_raw_logits():
    assert_fails_with(check.sample_with_confidence, _sample(confidence="logit"),
                      "not the raw logit")


def test_sample_catches_resampling_known_tokens():
    assert_fails_with(check.sample_with_confidence, _sample(resample_known=True),
                      "a known token was resampled")


def test_sample_catches_argmax():
    assert_fails_with(check.sample_with_confidence, _sample(greedy=True), "not argmax")


def test_sample_catches_known_confidence_not_inf():
    assert_fails_with(check.sample_with_confidence, _sample(known_value=1.0),
                      "confidence +inf")


def test_sample_accepts_multinomial():
    assert verdict(check.sample_with_confidence, _sample()).passed


# --------------------------------------------------------------------------- remask_lowest


def _remask(descending=False, noise_on="log"):
    def fn(confidence, n_mask, temperature, generator=None):
        u = torch.rand(confidence.shape, generator=generator).clamp(min=1e-20)
        gumbel = -torch.log(-torch.log(u))
        base = confidence.log() if noise_on == "log" else confidence
        score = base + temperature * gumbel
        if descending:
            score = torch.where(torch.isinf(confidence), -math.inf, score)
        rank = score.argsort(dim=1, descending=descending).argsort(dim=1)
        return rank < n_mask[:, None]

    return fn


def test_remask_catches_the_most_confident():
    assert_fails_with(check.remask_lowest, _remask(descending=True), "MOST confident")


def test_remask_catches_noise_on_the_probability():
    assert_fails_with(check.remask_lowest, _remask(noise_on="prob"), "log(confidence)")


def test_remask_accepts_an_own_gumbel():
    assert verdict(check.remask_lowest, _remask()).passed


# --------------------------------------------------------------------------- decode_loop


def _loop(n0_from="start", resample=False, last_step_remask=False, most_confident=False,
          off_by_one=False):
    """A decode loop built from minitok's pieces, with one classic mistake switched on."""

    def fn(model, labels, tokens, steps=8, choice_temperature=4.5, generator=None):
        mask_id = model.mask_id
        n_initial = (tokens == mask_id).sum(1)
        if n0_from == "grid":
            n_initial = torch.full_like(n_initial, tokens.shape[1])
        for t in range(steps):
            logits = model(tokens, labels)
            if n0_from == "current":
                n_initial = (tokens == mask_id).sum(1)
            ask = torch.full_like(tokens, mask_id) if resample else tokens
            sampled, confidence = maskgit.sample_with_confidence(logits, ask, mask_id, generator)
            n_unknown = (tokens == mask_id).sum(1)
            n_mask = maskgit.mask_len(n_initial, n_unknown, t, steps)
            if off_by_one:  # floor(N0 gamma(t / T)), clamped: the ratio one step behind
                planned = torch.floor(n_initial * maskgit.gamma("cosine", t / steps)).long()
                n_mask = torch.minimum(n_unknown - 1, planned).clamp(min=1)
            if last_step_remask and t == steps - 1:
                n_mask = torch.ones_like(n_mask)
            if most_confident:
                confidence = 1 / confidence
            temperature = choice_temperature * (1 - (t + 1) / steps)
            remask = maskgit.remask_lowest(confidence, n_mask, temperature, generator)
            tokens = sampled.masked_fill(remask, mask_id)
        return tokens

    return fn


def test_loop_built_from_the_pieces_passes():
    assert verdict(check.decode_loop, _loop()).passed


def test_loop_catches_counting_from_the_grid_size():
    assert_fails_with(check.decode_loop, _loop(n0_from="grid"), "counted from the grid size")


def test_loop_catches_recounting_n0_every_step():
    result = verdict(check.decode_loop, _loop(n0_from="current"))
    assert result.status == "failed" and "(t + 1) / T" in result.hint


def test_loop_catches_the_off_by_one_schedule():
    result = verdict(check.decode_loop, _loop(off_by_one=True))
    assert result.status == "failed" and "(t + 1) / T" in result.hint


def test_loop_catches_resampling_revealed_tokens():
    assert_fails_with(check.decode_loop, _loop(resample=True), "never change")


def test_loop_catches_masks_left_at_the_end():
    assert_fails_with(check.decode_loop, _loop(last_step_remask=True), "nothing stays masked")


def test_loop_catches_keeping_the_least_confident():
    assert_fails_with(check.decode_loop, _loop(most_confident=True),
                      "re-mask the least confident")
