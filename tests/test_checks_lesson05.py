"""Lesson 05's checks fail each classic mistake with the hint that names it.

What every lesson's checks must do (pass the reference, report an unfinished exercise, leave
the RNG and thread count alone) is tested once for all lessons in tests/test_checks_all.py.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from checking import assert_each_hint_is_its_own, assert_fails_with, assert_passes, verdict

from minitok import prior, sampling, training
from minitok.checks import exercises_in, lesson05
from minitok.checks import lesson05 as check
from minitok.training import CLIP, lr_scale

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


# --------------------------------------------------------------------------- the training step


def learner_step(prior_model, codes, labels, generator, batch_size=64, p_uncond=0.1,
                 mistake=None):
    """A learner's step, written differently from minitok's, with one classic `mistake`."""
    n = codes.shape[0]
    rows = torch.randint(n, (batch_size,), generator=None if mistake == "global_rng" else generator)
    p = {"no_drop": 0.0, "p_flipped": 1.0 - p_uncond}.get(mistake, p_uncond)
    batch_labels = labels[rows].clone()
    if mistake != "no_drop":
        batch_labels = sampling.drop_labels(batch_labels, p, prior_model.config.null_class,
                                            generator)
    K = prior_model.config.num_codes
    seqs = prior.make_sequences(codes[rows], batch_labels, K)
    if mistake == "detached":
        with torch.no_grad():
            return prior.prior_loss(prior_model, seqs, K)
    return prior.prior_loss(prior_model, seqs, K)


def step_with(mistake):
    def step(prior_model, codes, labels, generator, batch_size=64, p_uncond=0.1):
        return learner_step(prior_model, codes, labels, generator, batch_size, p_uncond, mistake)
    return step


def test_prior_batch_loss_passes_a_different_correct_step():
    assert_passes(check.prior_batch_loss, step_with(None))


@pytest.mark.parametrize(("mistake", "words"), [
    ("no_drop", "no label was dropped"),
    ("p_flipped", "IS dropped"),
    ("global_rng", "global RNG must stay untouched"),
    ("detached", "torch.no_grad"),
])
def test_prior_batch_loss_catches(mistake, words):
    assert_fails_with(check.prior_batch_loss, step_with(mistake), words)


# --------------------------------------------------------------------------- the training loop


def learner_fit(model, batch_loss, steps, lr=3e-3, weight_decay=0.05, warmup=None, seed=0,
                eval_loss=None, eval_every=100, mistake=None):
    """A learner's loop, written differently from minitok's (a LambdaLR scheduler stepped
    after the update, the step counted from 1), with one classic `mistake`."""
    if mistake == "wrong_seed":
        seed += 1
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay,
                                  betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 1.0 if mistake == "no_schedule" else lr_scale(s, steps, warmup))
    losses = []
    if mistake != "no_train":
        model.train()
    for done in range(1, steps + 1):
        if mistake == "fresh_generator":
            generator = torch.Generator().manual_seed(seed)
        if mistake == "train_once":
            pass
        elif mistake != "no_train":
            model.train()
        loss = batch_loss(None if mistake == "global_rng" else generator)
        if mistake == "clip_before_backward":
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        if mistake != "no_zero_grad":
            optimizer.zero_grad()
        loss.backward()
        if mistake not in ("no_clip", "clip_before_backward"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        schedule.step()
        losses.append(loss if mistake == "tensors" else loss.item())
        due = (done - 1) % eval_every == 0 if mistake == "eval_off_by_one" else (
            done % eval_every == 0 or done == steps)
        if eval_loss is not None and due:
            if mistake != "eval_in_train_mode":
                model.eval()
            if mistake == "eval_with_grad":
                held = eval_loss().item()
            else:
                with torch.no_grad():
                    held = eval_loss().item()
            if mistake != "silent":
                print(f"{done}: {losses[-1]:.4f} / {held:.4f}")
    if mistake != "left_training":
        model.eval()
    return losses


def fit_with(mistake):
    def fit(model, batch_loss, steps, lr=3e-3, weight_decay=0.05, warmup=None, seed=0,
            eval_loss=None, eval_every=100):
        return learner_fit(model, batch_loss, steps, lr, weight_decay, warmup, seed, eval_loss,
                           eval_every, mistake)
    return fit


def test_fit_passes_a_different_correct_loop():
    assert_passes(check.fit, fit_with(None))


def test_fit_passes_minitoks_own_with_its_extra_keywords():
    assert_passes(check.fit, functools.partial(training.fit, desc="prior", progress=False))


@pytest.mark.parametrize(("mistake", "words"), [
    ("no_schedule", "lr_scale(step, steps, warmup)"),
    ("no_clip", "clip_grad_norm_"),
    ("clip_before_backward", "before backward there is nothing to clip"),
    ("no_zero_grad", "zero_grad() every step"),
    ("wrong_seed", "seeded with seed"),
    ("fresh_generator", "ONE torch.Generator before the loop"),
    ("global_rng", "pass it to batch_loss"),
    ("no_train", "model.train() at the start of every step"),
    ("train_once", "measuring the held-out loss switches it"),
    ("left_training", "model.eval() before returning"),
    ("eval_in_train_mode", "model.eval() before eval_loss()"),
    ("eval_with_grad", "torch.no_grad()"),
    ("eval_off_by_one", "counting updates from 1"),
    ("silent", "print one line"),
    ("tensors", "loss.item()"),
])
def test_fit_catches(mistake, words):
    assert_fails_with(check.fit, fit_with(mistake), words)


def variant_fit(mistake):
    def fit(model, batch_loss, steps, lr=3e-3, weight_decay=0.05, warmup=None, seed=0,
            eval_loss=None, eval_every=100):
        return lesson05._variant_fit(model, batch_loss, steps, lr, weight_decay, warmup, seed,
                                     eval_loss, eval_every, mistake)
    return fit


def test_each_mistake_in_the_update_gets_its_own_hint():
    """Every weight-level mistake the check knows, each named by its own hint (a wrong loop
    matching none of them gets the general one, tested below)."""
    rows = [(variant_fit(mistake), [hint.split(":")[0][:40]])
            for mistake, _, hint in lesson05.FIT_MISTAKES]
    assert_each_hint_is_its_own(check.fit, rows)


def test_fit_gives_an_unknown_mistake_the_general_hint():
    def half_lr(model, batch_loss, steps, lr=3e-3, weight_decay=0.05, warmup=None, seed=0,
                eval_loss=None, eval_every=100):
        return learner_fit(model, batch_loss, steps, lr / 2, weight_decay, warmup, seed,
                           eval_loss, eval_every)
    result = verdict(check.fit, half_lr)
    assert result.status == "failed" and "the same seed must give the reference's weights" \
        in result.hint, result.render()


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


def test_prior_loss_catches_a_backward_inside():
    def with_backward(model, seqs, num_codes):
        loss = prior.prior_loss(model, seqs, num_codes)
        loss.backward(retain_graph=True)  # the training loop backpropagates it again
        return loss

    assert_fails_with(check.prior_loss, with_backward, "without calling backward")


def test_prior_batch_loss_catches_a_backward_inside():
    def with_backward(model, codes, labels, generator, batch_size=64, p_uncond=0.1):
        loss = prior.prior_batch_loss(model, codes, labels, generator, batch_size, p_uncond)
        loss.backward(retain_graph=True)
        return loss

    assert_fails_with(check.prior_batch_loss, with_backward, "without calling backward")


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


def test_sample_logits_catches_top_p_before_top_k():
    """The two filters' orders differ only where top-p's nucleus changes once top-k has
    renormalised the distribution: the check has such a case."""
    def p_first(logits, temperature=1.0, top_k=None, top_p=None, generator=None,
                greedy=False):
        if greedy:
            return logits.argmax(-1)
        logits = logits / temperature
        if top_p is not None:
            logits = sampling.top_p_filter(logits, top_p)
        if top_k is not None:
            logits = sampling.top_k_filter(logits, top_k)
        probs = torch.softmax(logits, -1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    assert_fails_with(check.sample_logits, p_first, "top-k comes before top-p")


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


def test_cfg_catches_inputs_changed_in_place():
    def in_place(cond, uncond, scale):
        return uncond.add_(scale * (cond - uncond))
    assert_fails_with(check.cfg_logits, in_place, "leave both inputs")



# --------------------------------------------------------------------------- hints on demand

EXERCISES = list(exercises_in(check))


def test_every_check_has_three_hints():
    assert "ar_generate" in EXERCISES
    for name in EXERCISES:
        hints = getattr(check, name).hints
        assert len(hints) == 3 and all(isinstance(h, str) and h.strip() for h in hints), name


def test_hint_prints_each_level(capsys):
    for name in EXERCISES:
        for level in (1, 2, 3):
            check.hint(name, level)
            assert f"hint {level} of 3 for {name}" in capsys.readouterr().out


# --------------------------------------------------------------------------- the loss's layout


def test_prior_loss_catches_logits_in_the_wrong_layout():
    def b_t_v(model, seqs, num_codes):  # (B, T, V) logits: cross_entropy reads T as classes
        logits = model(seqs[:, :-1])[..., :num_codes]
        return F.cross_entropy(logits, seqs[:, 1:])
    assert_fails_with(check.prior_loss, b_t_v, "classes on dim 1", "(B, V, T)")


def test_prior_loss_passes_the_classes_on_dim_one():
    def b_v_t(model, seqs, num_codes):
        logits = model(seqs[:, :-1])[..., :num_codes]
        return F.cross_entropy(logits.transpose(1, 2), seqs[:, 1:])
    assert_passes(check.prior_loss, b_v_t)


# --------------------------------------------------------------------------- the generation loop


def learner_generate(prior_model, labels, temperature=1.0, top_k=None, top_p=None, greedy=False,
                     cfg_scale=1.0, use_cache=True, generator=None, mistake=None):
    """A learner's loop, written differently from minitok's, with one classic `mistake`."""
    config = prior_model.config
    K, G, B = config.num_codes, config.grid_size, len(labels)
    guided = cfg_scale != 1.0 or mistake == "always_doubled"
    if mistake == "no_guidance":
        guided = False
    if mistake == "labels_in_place":
        labels += K
        first = labels[:, None]
    else:
        first = (labels + K)[:, None]
    null_id = config.null_class if mistake == "null_id" else K + config.null_class
    rows = [first, torch.full_like(first, null_id)] if guided else [first]
    tokens = torch.cat(rows)
    cache = None
    if use_cache or mistake == "always_cache":
        cache = prior_model.transformer.new_cache(tokens.shape[0])
    if mistake == "cache_unused":
        cache = None
    step_input = tokens
    passes = G * G + 1 if mistake == "extra_pass" else G * G
    for _ in range(passes):
        if mistake == "fresh_cache":
            cache = prior_model.transformer.new_cache(tokens.shape[0])
        logits = prior_model(step_input, cache)[:, -1, :K]
        if guided:
            cond, uncond = logits.chunk(2)
            if mistake == "swapped":
                cond, uncond = uncond, cond
            logits = sampling.cfg_logits(cond, uncond, cfg_scale)
        if mistake == "settings_dropped":
            token = sampling.sample_logits(logits, generator=generator)
        else:
            draw_from = None if mistake == "global_rng" else generator
            token = sampling.sample_logits(logits, temperature, top_k, top_p, draw_from, greedy)
        if guided:
            token = token.repeat(2)
        tokens = torch.cat([tokens, token[:, None]], dim=1)
        if mistake == "stale_input":
            continue  # step_input stays the prompt
        if mistake == "whole_sequence" or cache is None:
            step_input = tokens
        else:
            step_input = token[:, None]
    if mistake == "both_halves":
        return tokens[:, 1:].reshape(-1, G, G)
    if mistake == "class_token_kept":
        return tokens[:B, :-1].reshape(B, G, G)
    return tokens[:B, 1 : 1 + G * G].reshape(B, G, G)


def with_mistake(mistake):
    def generate(prior_model, labels, temperature=1.0, top_k=None, top_p=None, greedy=False,
                 cfg_scale=1.0, use_cache=True, generator=None):
        return learner_generate(prior_model, labels, temperature, top_k, top_p, greedy,
                                cfg_scale, use_cache, generator, mistake)
    return generate


def test_ar_generate_passes_a_different_correct_loop():
    assert_passes(check.ar_generate, with_mistake(None))


def test_ar_generate_passes_two_caches_of_b_rows_are_not_needed():
    """The reference itself, called through another name, passes (a sanity check that the
    check's own loop and minitok's ar_generate agree on every case)."""
    def wrapper(prior_model, labels, temperature=1.0, top_k=None, top_p=None, greedy=False,
                cfg_scale=1.0, use_cache=True, generator=None):
        return prior.ar_generate(prior_model, labels, temperature, top_k, top_p, greedy,
                                 cfg_scale, use_cache, generator)
    assert_passes(check.ar_generate, wrapper)


@pytest.mark.parametrize(("mistake", "words"), [
    ("fresh_cache", "make the cache once"),
    ("stale_input", "feed the code you just drew back in"),
    ("cache_unused", "feed it only the newest token"),
    ("whole_sequence", "feed it only the newest token"),
    ("extra_pass", "one forward pass per code"),
    ("class_token_kept", "the class token is still in them"),
    ("both_halves", "return the conditional half only"),
    ("global_rng", "global RNG must stay untouched"),
    ("labels_in_place", "do not modify labels in place"),
    ("always_cache", "re-reads the whole sequence"),
    ("settings_dropped", "pass temperature, top_k, top_p"),
    ("always_doubled", "cfg_scale = 1 is plain conditional sampling"),
    ("no_guidance", "ONE doubled batch"),
    ("swapped", "the halves are swapped"),
    ("null_id", "num_codes + null_class"),
])
def test_ar_generate_catches(mistake, words):
    assert_fails_with(check.ar_generate, with_mistake(mistake), words)


def test_ar_generate_catches_two_separate_batches():
    """Guidance from two batches of B (cond, then null) is not the doubled batch asked for."""
    def two_batches(prior_model, labels, temperature=1.0, top_k=None, top_p=None,
                    greedy=False, cfg_scale=1.0, use_cache=True, generator=None):
        K, G, B = prior_model.config.num_codes, prior_model.config.grid_size, len(labels)
        cond_seq = (labels + K)[:, None]
        null_seq = torch.full_like(cond_seq, K + prior_model.config.null_class)
        caches = [prior_model.transformer.new_cache(B) if use_cache else None for _ in "cu"]
        cond_in, null_in = cond_seq, null_seq
        for _ in range(G * G):
            c = prior_model(cond_in, caches[0])[:, -1, :K]
            if cfg_scale != 1.0:
                u = prior_model(null_in, caches[1])[:, -1, :K]
                c = sampling.cfg_logits(c, u, cfg_scale)
            token = sampling.sample_logits(c, temperature, top_k, top_p, generator, greedy)
            cond_seq = torch.cat([cond_seq, token[:, None]], 1)
            null_seq = torch.cat([null_seq, token[:, None]], 1)
            cond_in, null_in = (token[:, None],) * 2 if use_cache else (cond_seq, null_seq)
        return cond_seq[:, 1:].reshape(B, G, G)
    assert_fails_with(check.ar_generate, two_batches, "ONE doubled batch")


def test_ar_generate_under_no_grad_is_judged_with_minitoks_other_exercises():
    """The solutions write `@torch.no_grad()` above ar_generate: its wrapper lives in
    torch.utils._contextlib, but the check must still bind minitok's sample_logits where the
    learner's code reads it (their notebook), so a wrong earlier exercise costs only itself."""
    import inspect

    from minitok.checks._core import run_check

    notebook = {"__name__": "notebook"}
    exec("import torch\nfrom minitok import validate\nfrom minitok.sampling import cfg_logits\n\n"
         "def sample_logits(logits, temperature=1.0, top_k=None, top_p=None, generator=None,\n"
         "                  greedy=False):\n"
         "    return logits.argmin(-1)  # a wrong earlier exercise\n\n"
         + inspect.getsource(prior.ar_generate), notebook)
    fn, learners = notebook["ar_generate"], notebook["sample_logits"]
    assert fn.__globals__ is not notebook  # the wrapper's globals are torch's
    assert run_check("ar_generate", check.ar_generate.test, fn).status == "failed"
    assert_passes(check.ar_generate, fn)
    assert notebook["sample_logits"] is learners  # restored afterwards
    assert "sample_logits" not in vars(torch.utils._contextlib)
