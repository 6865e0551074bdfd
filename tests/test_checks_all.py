"""What every lesson's checks must do, whatever the lesson: one check per exercise, named like
the exercise, that passes minitok's reference (leaving the global RNG and the thread count as
it found them, one run of each check for all three), reports an unfinished exercise as "not
done".

The lesson-specific tests (each classic mistake fails with its hint) live in
tests/test_checks_lessonNN.py.
"""

from __future__ import annotations

import functools

import pytest
import torch
from checking import verdict

from minitok import anytoany, diffusion, quantize, tokenizer, vocab, vqgan
from minitok.checks import (
    exercises_in,
    lesson01,
    lesson02,
    lesson03,
    lesson04,
    lesson05,
    lesson06,
    lesson07,
    lesson08,
    lesson09,
)

pytestmark = pytest.mark.usefixtures("transport")  # local and through the wire

# Each lesson's exercises, in the order the lesson asks for them (and its check module defines
# them). A new exercise gets a row here; a new lesson gets a line.
EXERCISES = {
    lesson01: ["squared_distances", "nearest_code", "quantize_feature_map", "codebook_usage",
               "perplexity", "kmeans_step", "kmeans"],
    lesson02: ["straight_through", "vq_loss", "ema_update", "VectorQuantizer", "fsq_quantize"],
    lesson03: ["tokens_to_image", "hinge_d_loss", "adaptive_weight", "tokenizer_step",
               "fit_tokenizer"],
    lesson04: ["attention", "causal_mask", "split_heads", "merge_heads", "SelfAttention", "Block",
               "Transformer"],
    lesson05: ["make_sequences", "prior_loss", "prior_batch_loss", "fit", "top_k_filter",
               "top_p_filter", "sample_logits", "cfg_logits", "ar_generate"],
    lesson06: ["gamma", "mask_len", "random_mask", "masked_loss", "sample_with_confidence",
               "remask_lowest", "decode_loop"],
    lesson07: ["build_sequence", "masked_targets", "allowed_next", "constrained_generate"],
    lesson08: ["add_noise", "diffusion_loss", "ddim_step", "sample_loop"],
    lesson09: ["encode_scales", "scales_to_fhat", "var_inputs", "block_causal_mask",
               "var_generate"],
}


def _lesson_id(module) -> str:
    return module.__name__.rsplit(".", 1)[-1]  # "minitok.checks.lesson01" -> "lesson01"


LESSONS = [pytest.param(module, id=_lesson_id(module)) for module in EXERCISES]
CHECKS = [
    pytest.param(module, name, id=f"{_lesson_id(module)}-{name}")
    for module, names in EXERCISES.items()
    for name in names
]


@pytest.mark.parametrize("module", LESSONS)
def test_the_table_lists_every_check_in_order(module):
    assert list(exercises_in(module)) == EXERCISES[module]


@pytest.mark.parametrize(("module", "name"), CHECKS)
def test_every_exercise_has_a_check(module, name):
    """A notebook calls `check.<name>`: the attribute must be the check of exercise <name>."""
    check_fn = getattr(module, name, None)
    assert check_fn is not None, f"{module.__name__} has no check called {name}"
    assert check_fn.exercise == name


@pytest.mark.parametrize(("module", "name"), CHECKS)
def test_reference_passes_leaving_the_global_rng_and_the_thread_count(module, name):
    check_fn = getattr(module, name)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # not 1: a check that pins 1 thread and forgets to restore it fails
    try:
        torch.manual_seed(123)
        expected = torch.rand(3)
        torch.manual_seed(123)
        result = verdict(check_fn, check_fn.reference)
        assert result.status == "passed", result.render()
        assert torch.equal(torch.rand(3), expected), "the check drew from the global RNG"
        assert torch.get_num_threads() == 2, "the check changed the thread count"
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("module", "name"), CHECKS)
def test_unfinished_exercise_is_not_done(module, name):
    def unfinished(*args, **kwargs):
        raise NotImplementedError(f"Exercise {name}: write it")

    result = verdict(getattr(module, name), unfinished)
    assert result.status == "not done", result.render()


@pytest.mark.parametrize(("module", "name"), CHECKS)
def test_every_exercise_has_three_hints_on_demand(module, name):
    """The v2 pattern: the idea, then the formula, then near-code (a line at least), and no
    hint repeated (a copy-pasted hint would name the wrong exercise's mistake)."""
    hints = getattr(module, name).hints
    assert len(hints) == 3, f"{name} has {len(hints)} hints"
    assert all(isinstance(h, str) and len(h.strip()) >= 20 for h in hints), hints
    assert len(set(hints)) == 3, f"{name} repeats a hint"


# --------------------------------------------------------------------------- the general hint
#
# A check whose hint is chosen by comparing a wrong answer with what each known mistake gives
# must fall back to its general hint when the answer matches none of them: a known mistake's
# hint (the last one tried, or a default) would name a mistake the learner did not make. Each
# row is a wrong version that matches no known mistake (minitok's answer, shifted or
# garbled) and the general hint it must get, word for word.


def _shifted(ref, amount):
    @functools.wraps(ref)
    def fn(*args, **kwargs):
        return ref(*args, **kwargs) + amount
    return fn


def _rolled_tokens(z, codebook):
    quantized, indices = quantize.quantize(z, codebook)
    return quantized, (indices + 1) % codebook.shape[0]


def _nudged_loop(model, images, train, step_fn, disc=None, progress=False):
    history = tokenizer.fit_tokenizer(model, images, train, step_fn, disc, progress)
    with torch.no_grad():
        model.decoder.conv_out.bias.add_(0.01)  # right calls, right history, other weights
    return history


def _last_target_dropped(seqs, starts, v):
    inputs, targets = anytoany.masked_targets(seqs, starts, v)
    return inputs, targets.index_fill(1, torch.tensor([targets.shape[1] - 1]), -100)


GARBLED = [
    (lesson01, "squared_distances", _shifted(quantize.squared_distances, 0.25),
     lesson01.DISTANCES_HINT),
    (lesson01, "nearest_code",
     lambda z, c, chunk_size=None: (quantize.nearest_code(z, c, chunk_size) + 1) % len(c),
     lesson01.NEAREST_HINT),
    (lesson01, "quantize_feature_map", _rolled_tokens, lesson01.TOKENS_HINT),
    (lesson01, "codebook_usage", lambda i, k: quantize.codebook_usage(i, k) * 0.5,
     "usage = (number of distinct codes used) / K."),
    (lesson01, "perplexity", lambda i, k: quantize.perplexity(i, k) + 0.37,
     "perplexity = exp(-sum_k p_k log p_k), p_k = count_k / N."),
    (lesson01, "kmeans_step", _shifted(quantize.kmeans_step, 0.1), lesson01.MEAN_HINT),
    (lesson01, "kmeans", _shifted(quantize.kmeans, 0.1), lesson01.START_HINT),
    (lesson03, "tokens_to_image", _shifted(lesson03.tokens_to_image.reference, 0.1),
     "decoder(codebook[indices].permute(0, 3, 1, 2)): one code per token."),
    (lesson03, "hinge_d_loss", _shifted(vqgan.hinge_d_loss, 0.1),
     "0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat)))."),
    (lesson03, "adaptive_weight",
     lambda rec, adv, decoder, max_weight=1e4: vqgan.adaptive_weight(rec, adv, decoder,
                                                                     max_weight) * 0.9,
     "||grad_W L_rec|| / (||grad_W L_G|| + 1e-4), clamped to [0, max_weight], "
     "with W = decoder.conv_out.weight."),
    (lesson03, "fit_tokenizer", _nudged_loop, lesson03.LOOP_GENERAL),
    (lesson07, "build_sequence", lambda parts, v: vocab.build_sequence(parts, v).flip(0),
     "text becomes vocab.encode_text(text); the document ends with vocab.eot."),
    (lesson07, "masked_targets", _last_target_dropped, lesson07.TARGETS_HINT),
    (lesson08, "add_noise", _shifted(diffusion.add_noise, 0.01),
     "x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, abar_t = alphas_cumprod[t]."),
]


@pytest.mark.parametrize(("module", "name", "garbled", "general"),
                         [pytest.param(*row, id=f"{_lesson_id(row[0])}-{row[1]}")
                          for row in GARBLED])
def test_an_answer_matching_no_known_mistake_gets_the_general_hint(module, name, garbled,
                                                                   general):
    result = verdict(getattr(module, name), garbled)
    assert result.status == "failed", result.render()
    assert result.hint == general, result.render()
