"""Lesson 06's checks fail each classic mistake with the hint that names it.

What every lesson's checks must do (pass the reference, report an unfinished exercise, leave
the RNG and thread count alone) is tested once for all lessons in tests/test_checks_all.py.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from checking import assert_each_hint_is_its_own, assert_fails_with, verdict

from minitok import maskgit
from minitok.checks import exercises_in
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


def test_gamma_catches_float32_from_as_tensor():
    def wrong(name, ratio):  # torch.as_tensor(0.667) is float32, torch's default dtype
        r = torch.as_tensor(ratio)
        g = {"cosine": torch.cos(math.pi / 2 * r), "linear": 1 - r, "square": 1 - r**2}[name]
        return g.clamp(1e-6, 1.0)

    assert_fails_with(check.gamma, wrong, "float32", "511")


def test_gamma_catches_an_unknown_schedule_that_does_not_fail():
    def wrong(name, ratio):
        r = torch.as_tensor(ratio, dtype=torch.float64)
        g = torch.cos(math.pi / 2 * r) if name == "cosine" else (
            1 - r if name == "linear" else 1 - r**2)
        return g.clamp(1e-6, 1.0)

    assert_fails_with(check.gamma, wrong, "raise ValueError")


def test_gamma_accepts_math_on_floats():
    def fine(name, ratio):  # a Python float for a float ratio, float64 for a tensor
        if not isinstance(ratio, float):
            return maskgit.gamma(name, ratio)
        g = {"cosine": math.cos(math.pi / 2 * ratio), "linear": 1 - ratio,
             "square": 1 - ratio**2}.get(name)
        if g is None:
            raise KeyError(f"no schedule {name}")
        return min(max(g, 1e-6), 1.0)

    assert verdict(check.gamma, fine).passed


# --------------------------------------------------------------------------- mask_len


def _mask_len(off_by_one=False, clamp=True, rounding=torch.floor, as_float=False):
    def fn(n_initial, n_unknown, step, steps, schedule="cosine"):
        if step == steps - 1:
            return torch.zeros_like(n_unknown)
        ratio = step / steps if off_by_one else (step + 1) / steps
        planned = rounding(n_initial.double() * maskgit.gamma(schedule, ratio))
        planned = planned if as_float else planned.long()
        if not clamp:
            return planned
        return torch.minimum(torch.minimum(n_unknown - 1, planned).clamp(min=1), n_unknown)

    return fn


def test_mask_len_catches_the_off_by_one_ratio():
    assert_fails_with(check.mask_len, _mask_len(off_by_one=True), "(t + 1) / T")


def test_mask_len_catches_a_missing_clamp():
    assert_fails_with(check.mask_len, _mask_len(clamp=False), "at most n_unknown - 1")


def test_mask_len_catches_counts_left_as_floats():
    """The right values in a float64 tensor (torch.floor keeps the dtype)."""
    assert_fails_with(check.mask_len, _mask_len(as_float=True), "integer tensor", ".long()")


def test_mask_len_catches_ceil():
    assert_fails_with(check.mask_len, _mask_len(rounding=torch.ceil), "floor(N0 * gamma")


def test_mask_len_catches_its_own_float32_ratio():
    def wrong(n_initial, n_unknown, step, steps, schedule="cosine"):
        if step == steps - 1:
            return torch.zeros_like(n_unknown)
        ratio = torch.tensor((step + 1) / steps)  # float32
        planned = torch.floor(n_initial * gamma(schedule, ratio)).long()
        return torch.minimum(torch.minimum(n_unknown - 1, planned).clamp(min=1), n_unknown)

    assert_fails_with(check.mask_len, wrong, "inside mask_len")


def gamma(schedule, ratio):
    """A learner's gamma that returns float32 (fails its own check)."""
    return torch.cos(math.pi / 2 * torch.as_tensor(ratio)).clamp(1e-6, 1.0)


def test_mask_len_is_judged_with_minitoks_gamma():
    """One verdict: a float32 gamma costs gamma's check, not mask_len's."""
    def fine(n_initial, n_unknown, step, steps, schedule="cosine"):
        if step == steps - 1:
            return torch.zeros_like(n_unknown)
        planned = torch.floor(n_initial.double() * gamma(schedule, (step + 1) / steps)).long()
        return torch.minimum(torch.minimum(n_unknown - 1, planned).clamp(min=1), n_unknown)

    assert verdict(check.mask_len, fine).passed


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


def test_masked_loss_catches_label_smoothing_ignored():
    def wrong(logits, targets, mask, label_smoothing=0.0):
        return F.cross_entropy(logits[mask], targets[mask])

    assert_fails_with(check.masked_loss, wrong, "pass label_smoothing on")


def test_masked_loss_accepts_a_weighted_mean_with_smoothing():
    def fine(logits, targets, mask, label_smoothing=0.0):
        each = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none",
                               label_smoothing=label_smoothing)  # (B, N)
        return (each * mask).sum() / mask.sum()

    assert verdict(check.masked_loss, fine).passed


# --------------------------------------------------------------------------- sample_with_confidence


def _sample(confidence="prob", resample_known=False, greedy=False, known_value=math.inf,
            use_generator=True):
    def fn(logits, tokens, mask_id, generator=None):
        generator = generator if use_generator else None
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


def test_sample_catches_the_global_rng():
    assert_fails_with(check.sample_with_confidence, _sample(use_generator=False),
                      "from `generator`")


def test_sample_accepts_multinomial():
    assert verdict(check.sample_with_confidence, _sample()).passed


# --------------------------------------------------------------------------- remask_lowest


def _remask(descending=False, noise_on="log", use_generator=True):
    def fn(confidence, n_mask, temperature, generator=None):
        generator = generator if use_generator else None
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


def test_remask_catches_the_global_rng():
    assert_fails_with(check.remask_lowest, _remask(use_generator=False), "from `generator`")


def test_remask_accepts_an_own_gumbel():
    assert verdict(check.remask_lowest, _remask()).passed


def test_sample_with_confidence_catches_float_token_ids():
    def as_float(logits, tokens, mask_id, generator=None):
        sampled, confidence = maskgit.sample_with_confidence(logits, tokens, mask_id, generator)
        return sampled.float(), confidence  # the right values, the wrong dtype

    assert_fails_with(check.sample_with_confidence, as_float, "int64 like tokens")


# --------------------------------------------------------------------------- decode_loop


def _loop(n0_from="start", resample=False, last_step_remask=False, most_confident=False,
          off_by_one=False, schedule_ignored=False, choice="annealed", temperature_op="divide",
          guidance="right", use_generator=True, record=True, in_place=False, greedy=False,
          recount=True, extra_reveal=False):
    """A decode loop built from minitok's pieces, with one classic mistake switched on."""

    def fn(model, labels, tokens, steps=8, choice_temperature=4.5, generator=None,
           schedule="cosine", cfg_scale=1.0, temperature=1.0, trace=None):
        generator = generator if use_generator else None
        schedule = "cosine" if schedule_ignored else schedule
        mask_id = model.mask_id
        n_initial = n_start = (tokens == mask_id).sum(1)
        if n0_from == "grid":
            n_initial = torch.full_like(n_initial, tokens.shape[1])
        for t in range(steps):
            if cfg_scale == 1.0 and guidance != "always doubled":
                logits = model(tokens, labels)
            else:
                null = torch.full_like(labels, model.null_class)
                if guidance == "two passes":
                    cond, uncond = model(tokens, labels), model(tokens, null)
                else:
                    cond, uncond = model(torch.cat([tokens, tokens]),
                                         torch.cat([labels, null])).chunk(2)
                if guidance == "reversed":
                    cond, uncond = uncond, cond
                logits = uncond + cfg_scale * (cond - uncond)
            logits = logits * temperature if temperature_op == "multiply" else (
                logits if temperature_op == "ignore" else logits / temperature)
            if n0_from == "current":
                n_initial = (tokens == mask_id).sum(1)
            ask = torch.full_like(tokens, mask_id) if resample else tokens
            if greedy:
                probs = torch.softmax(logits, -1)
                best, draws = probs.max(-1)
                unknown = tokens == mask_id
                sampled = torch.where(unknown, draws, tokens)
                confidence = torch.where(unknown, best, torch.full_like(best, math.inf))
            else:
                sampled, confidence = maskgit.sample_with_confidence(logits, ask, mask_id,
                                                                     generator)
            n_unknown = (tokens == mask_id).sum(1) if recount else n_start
            n_mask = maskgit.mask_len(n_initial, n_unknown, t, steps, schedule)
            if off_by_one:  # floor(N0 gamma(t / T)), clamped: the ratio one step behind
                planned = torch.floor(n_initial * maskgit.gamma(schedule, t / steps)).long()
                n_mask = torch.minimum(n_unknown - 1, planned).clamp(min=1)
            if extra_reveal:  # a mistake no hint knows: one more token revealed per step
                n_mask = (n_mask - 1).clamp(min=0)
            if last_step_remask and t == steps - 1:
                n_mask = torch.ones_like(n_mask)
            if most_confident:
                confidence = 1 / confidence
            share = {"annealed": 1 - (t + 1) / steps, "t/T": 1 - t / steps, "constant": 1}[choice]
            remask = maskgit.remask_lowest(confidence, n_mask, choice_temperature * share,
                                           generator)
            if in_place:
                tokens.copy_(sampled.masked_fill(remask, mask_id))
            else:
                tokens = sampled.masked_fill(remask, mask_id)
            if trace is not None and record:
                trace.append((tokens, sampled))
        return tokens

    return fn


def test_loop_built_from_the_pieces_passes():
    assert verdict(check.decode_loop, _loop()).passed


def test_loop_with_two_guidance_passes_in_any_order_of_the_batch_passes():
    def fine(model, labels, tokens, steps=8, choice_temperature=4.5, generator=None,
             schedule="cosine", cfg_scale=1.0, temperature=1.0, trace=None):
        mask_id = model.mask_id
        n_initial = (tokens == mask_id).sum(1)
        for t in range(steps):
            if cfg_scale == 1.0:
                logits = model(tokens, labels)
            else:  # [null; cond], split accordingly
                null = torch.full_like(labels, model.null_class)
                uncond, cond = model(torch.cat([tokens, tokens]),
                                     torch.cat([null, labels])).chunk(2)
                logits = cond + (cfg_scale - 1) * (cond - uncond)
            sampled, confidence = maskgit.sample_with_confidence(logits / temperature, tokens,
                                                                 mask_id, generator)
            n_mask = maskgit.mask_len(n_initial, (tokens == mask_id).sum(1), t, steps, schedule)
            remask = maskgit.remask_lowest(confidence, n_mask,
                                           choice_temperature * (1 - (t + 1) / steps), generator)
            tokens = torch.where(remask, torch.full_like(sampled, mask_id), sampled)
            if trace is not None:
                trace.append((tokens, sampled))
        return tokens

    assert verdict(check.decode_loop, fine).passed


def test_loop_catches_counting_from_the_grid_size():
    assert_fails_with(check.decode_loop, _loop(n0_from="grid"), "counted from the grid size")


def test_loop_catches_recounting_n0_every_step():
    assert_fails_with(check.decode_loop, _loop(n0_from="current"), "recounted every step")


def test_loop_catches_never_recounting_the_masked_tokens():
    result = verdict(check.decode_loop, _loop(recount=False))
    assert result.status == "failed", result.render()
    assert "count the tokens still masked again" in result.hint, result.render()
    assert "grid size" not in result.hint


def test_loop_counting_mistakes_each_get_their_own_hint():
    assert_each_hint_is_its_own(check.decode_loop, [
        (_loop(n0_from="grid"), ("counted from the grid size",)),
        (_loop(n0_from="current"), ("recounted every step",)),
        (_loop(recount=False), ("count the tokens still masked again",)),
        (_loop(schedule_ignored=True), ("pass `schedule` on",)),
        (_loop(extra_reveal=True), ("masked (mask_len), nothing after the last step",)),
    ])


def test_loop_catches_float_token_ids():
    loop = _loop()

    def as_float(*args, **kwargs):
        return loop(*args, **kwargs).float()  # the right tokens, the wrong dtype

    assert_fails_with(check.decode_loop, as_float, "in the dtype of `tokens`")


def test_loop_counts_matching_no_known_mistake_get_the_general_hint():
    result = verdict(check.decode_loop, _loop(extra_reveal=True))
    assert result.status == "failed" and result.hint == check.SCHEDULE_COUNTS, result.render()


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


def test_loop_catches_the_schedule_ignored():
    assert_fails_with(check.decode_loop, _loop(schedule_ignored=True), "pass `schedule` on")


def test_loop_catches_changing_the_given_tokens_in_place():
    assert_fails_with(check.decode_loop, _loop(in_place=True), "not in-place writes")


def test_loop_catches_the_global_rng():
    assert_fails_with(check.decode_loop, _loop(use_generator=False), "from `generator`")


def test_loop_catches_argmax():
    assert_fails_with(check.decode_loop, _loop(greedy=True), "SAMPLE every masked position")


def test_loop_catches_the_choice_temperature_one_step_behind():
    assert_fails_with(check.decode_loop, _loop(choice="t/T"), "lags one step")


def test_loop_catches_a_constant_choice_temperature():
    assert_fails_with(check.decode_loop, _loop(choice="constant"), "must anneal")


def test_loop_catches_the_temperature_ignored():
    assert_fails_with(check.decode_loop, _loop(temperature_op="ignore"),
                      "temperature was ignored")


def test_loop_catches_the_temperature_multiplied():
    assert_fails_with(check.decode_loop, _loop(temperature_op="multiply"), "multiplied")


def test_loop_catches_guidance_the_wrong_way():
    assert_fails_with(check.decode_loop, _loop(guidance="reversed"), "wrong way")


def test_loop_catches_two_passes_for_guidance():
    assert_fails_with(check.decode_loop, _loop(guidance="two passes"), "ONE doubled batch")


def test_loop_catches_the_doubled_batch_without_guidance():
    assert_fails_with(check.decode_loop, _loop(guidance="always doubled"), "the plain batch")


def test_loop_catches_no_trace():
    assert_fails_with(check.decode_loop, _loop(record=False), "append (tokens, sampled)")


# --------------------------------------------------------------------------- hints


@pytest.mark.parametrize("name", list(exercises_in(check)))
def test_every_check_has_three_hints(name, capsys):
    hints = exercises_in(check)[name].hints
    assert len(hints) == 3 and all(len(h) > 40 for h in hints)
    check.hint(name, 3)
    assert "hint 3 of 3" in capsys.readouterr().out
