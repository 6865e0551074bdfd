"""Lesson 03's checks fail each classic mistake with the hint that names it.

What every lesson's checks must do (pass the reference, report an unfinished exercise, leave
the RNG and thread count alone) is tested once for all lessons in tests/test_checks_all.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from checking import assert_fails_with, assert_passes

from minitok.checks import lesson03 as check

pytestmark = pytest.mark.usefixtures("transport")  # local and through the wire

# --------------------------------------------------------------------------- tokens_to_image


def test_tokens_to_image_catches_view_instead_of_permute():
    def wrong(indices, codebook, decoder):
        b, g, _ = indices.shape
        return decoder(codebook[indices].view(b, codebook.shape[1], g, g))

    assert_fails_with(check.tokens_to_image, wrong, ".permute(0, 3, 1, 2)")


def test_tokens_to_image_catches_a_transposed_grid():
    def wrong(indices, codebook, decoder):
        return decoder(codebook[indices].permute(0, 3, 2, 1))

    assert_fails_with(check.tokens_to_image, wrong, "transposed")


def test_tokens_to_image_catches_a_wrong_lookup():
    def wrong(indices, codebook, decoder):  # every token decoded as code 0
        return decoder(codebook[torch.zeros_like(indices)].permute(0, 3, 1, 2))

    assert_fails_with(check.tokens_to_image, wrong, "one code per token")


# --------------------------------------------------------------------------- hinge_d_loss

HINGE_MISTAKES = {
    "signs swapped": (
        lambda r, f: 0.5 * (F.relu(1 + r).mean() + F.relu(1 - f).mean()),
        "signs are swapped",
    ),
    "no 0.5": (lambda r, f: F.relu(1 - r).mean() + F.relu(1 + f).mean(), "0.5 *"),
    "no relu": (lambda r, f: 0.5 * ((1 - r).mean() + (1 + f).mean()), "relu"),
    "sums": (lambda r, f: 0.5 * (F.relu(1 - r).sum() + F.relu(1 + f).sum()), "means"),
    "softplus": (lambda r, f: 0.5 * (F.softplus(-r).mean() + F.softplus(f).mean()), "vanilla"),
    "detached": (
        lambda r, f: 0.5 * (F.relu(1 - r.detach()).mean() + F.relu(1 + f.detach()).mean()),
        "do not detach",
    ),
    "real term only": (lambda r, f: 0.5 * F.relu(1 - r).mean(), "0.5 * (mean relu"),
}


@pytest.mark.parametrize("mistake", list(HINGE_MISTAKES))
def test_hinge_d_loss_catches(mistake):
    wrong, words = HINGE_MISTAKES[mistake]
    assert_fails_with(check.hinge_d_loss, wrong, words)


# --------------------------------------------------------------------------- adaptive_weight


def _grad(loss, tensor, **kwargs):
    return torch.autograd.grad(loss, tensor, retain_graph=True, **kwargs)[0]


def _weight_at(tensor_of):
    def wrong(rec_loss, g_loss, decoder):
        w = tensor_of(decoder)
        return (_grad(rec_loss, w).norm() / (_grad(g_loss, w).norm() + 1e-4)).clamp(0, 1e4)

    return wrong


def test_adaptive_weight_catches_the_last_bias():
    wrong = _weight_at(lambda decoder: list(decoder.parameters())[-1])
    assert_fails_with(check.adaptive_weight, wrong, "wrong tensor")


def test_adaptive_weight_catches_the_first_layer():
    wrong = _weight_at(lambda decoder: decoder.conv_in.weight)
    assert_fails_with(check.adaptive_weight, wrong, "wrong tensor")


def test_adaptive_weight_catches_an_inverted_ratio():
    def wrong(rec_loss, g_loss, decoder):
        w = decoder.conv_out.weight
        return (_grad(g_loss, w).norm() / (_grad(rec_loss, w).norm() + 1e-4)).clamp(0, 1e4)

    assert_fails_with(check.adaptive_weight, wrong, "upside down")


def test_adaptive_weight_catches_a_missing_epsilon():
    def wrong(rec_loss, g_loss, decoder):
        w = decoder.conv_out.weight
        return (_grad(rec_loss, w).norm() / _grad(g_loss, w).norm()).clamp(0, 1e4)

    assert_fails_with(check.adaptive_weight, wrong, "+ 1e-4")


def test_adaptive_weight_catches_a_missing_clamp():
    def wrong(rec_loss, g_loss, decoder):
        w = decoder.conv_out.weight
        return _grad(rec_loss, w).norm() / (_grad(g_loss, w).norm() + 1e-4)

    assert_fails_with(check.adaptive_weight, wrong, "clamp")


def test_adaptive_weight_catches_an_ignored_max_weight():
    def wrong(rec_loss, g_loss, decoder, max_weight=1e4):
        w = decoder.conv_out.weight
        return (_grad(rec_loss, w).norm() / (_grad(g_loss, w).norm() + 1e-4)).clamp(0, 1e4)

    assert_fails_with(check.adaptive_weight, wrong, "max_weight argument")


def test_adaptive_weight_catches_a_missing_detach():
    def wrong(rec_loss, g_loss, decoder):
        w = decoder.conv_out.weight
        rec = _grad(rec_loss, w, create_graph=True).norm()
        adv = _grad(g_loss, w, create_graph=True).norm()
        return (rec / (adv + 1e-4)).clamp(0, 1e4)  # no .detach()

    assert_fails_with(check.adaptive_weight, wrong, ".detach()")


def test_adaptive_weight_catches_backward_into_grad():
    def wrong(rec_loss, g_loss, decoder):
        w = decoder.conv_out.weight
        rec_loss.backward(retain_graph=True)
        rec = w.grad.norm()
        w.grad = None
        g_loss.backward(retain_graph=True)
        return (rec / (w.grad.norm() + 1e-4)).clamp(0, 1e4).detach()

    assert_fails_with(check.adaptive_weight, wrong, ".backward() accumulates")


def test_adaptive_weight_catches_gradients_left_before_the_decoder():
    """backward() fills .grad all along the losses' graph; zeroing only the decoder's leaves
    the encoder's (and the quantizer's) for the optimiser to apply."""
    def wrong(rec_loss, g_loss, decoder, max_weight=1e4):
        w = decoder.conv_out.weight
        rec_loss.backward(retain_graph=True)
        rec = w.grad.norm()
        decoder.zero_grad(set_to_none=True)
        g_loss.backward(retain_graph=True)
        adv = w.grad.norm()
        decoder.zero_grad(set_to_none=True)
        return (rec / (adv + 1e-4)).clamp(0, max_weight).detach()

    assert_fails_with(check.adaptive_weight, wrong, ".backward() accumulates",
                      "misses the rest")


def test_adaptive_weight_catches_a_freed_graph():
    def wrong(rec_loss, g_loss, decoder):
        w = decoder.conv_out.weight
        rec = torch.autograd.grad(rec_loss, w)[0].norm()  # no retain_graph
        adv = torch.autograd.grad(g_loss, w)[0].norm()
        return (rec / (adv + 1e-4)).clamp(0, 1e4)

    assert_fails_with(check.adaptive_weight, wrong, "retain_graph=True")


# --------------------------------------------------------------------------- tokenizer_step


def _step(model, images, optimizer, disc=None, d_optimizer=None, disc_weight=1.0,
          max_weight=1e4, *, zero_grad=True, vq=True, sign=1.0, d_zero_grad=True,
          detach=True, d_first=False, pass_max_weight=True, stats_as_tensors=False,
          use_disc_weight=True):
    """A learner's step, written out, with switches for the classic mistakes."""
    from minitok.vqgan import adaptive_weight, generator_loss, hinge_d_loss

    if d_first and disc is not None:
        d_loss = hinge_d_loss(disc(images), disc(model(images)[0].detach()))
        d_optimizer.zero_grad()
        d_loss.backward()
        d_optimizer.step()
    x_hat, out = model(images)
    rec_loss = F.mse_loss(x_hat, images)
    loss = rec_loss + out.loss if vq else rec_loss
    if disc is not None:
        g_loss = generator_loss(disc(x_hat))
        lam = (adaptive_weight(rec_loss, g_loss, model.decoder, max_weight) if pass_max_weight
               else adaptive_weight(rec_loss, g_loss, model.decoder))
        loss = loss + sign * (disc_weight if use_disc_weight else 1.0) * lam * g_loss
    if zero_grad:
        optimizer.zero_grad()
    loss.backward(retain_graph=not detach)
    optimizer.step()
    stats = {"rec": rec_loss, "vq": out.loss, "usage": out.usage, "perplexity": out.perplexity}
    if disc is not None and not d_first:
        fake = x_hat.detach() if detach else x_hat
        d_loss = hinge_d_loss(disc(images), disc(fake))
        if d_zero_grad:
            d_optimizer.zero_grad()
        d_loss.backward()
        d_optimizer.step()
        stats.update(g_loss=g_loss, d_loss=d_loss, **{"lambda": lam})
    if disc is not None and d_first:
        stats.update(g_loss=g_loss, d_loss=d_loss, **{"lambda": lam})
    return stats if stats_as_tensors else {k: v.item() for k, v in stats.items()}


STEP_MISTAKES = {
    "no zero_grad": (dict(zero_grad=False), "optimizer.zero_grad()"),
    "no VQ loss": (dict(vq=False), "vq.loss"),
    "generator sign": (dict(sign=-1.0), "wrong sign"),
    "no d zero_grad": (dict(d_zero_grad=False), "d_optimizer.zero_grad()"),
    "no detach, retained graph": (dict(detach=False), "x_hat.detach()"),
    "discriminator first": (dict(d_first=True), "tokenizer's step first"),
    "max_weight ignored": (dict(pass_max_weight=False), "pass max_weight on"),
    "disc_weight ignored": (dict(use_disc_weight=False), "multiply by disc_weight"),
    "tensors, not floats": (dict(stats_as_tensors=True), "Python floats"),
}


@pytest.mark.parametrize("mistake", list(STEP_MISTAKES))
def test_tokenizer_step_catches(mistake):
    options, words = STEP_MISTAKES[mistake]

    def wrong(*args, **kwargs):
        return _step(*args, **kwargs, **options)

    assert_fails_with(check.tokenizer_step, wrong, words)


def test_tokenizer_step_catches_the_freed_graph_of_a_missing_detach():
    def wrong(model, images, optimizer, disc=None, d_optimizer=None, disc_weight=1.0,
              max_weight=1e4):
        from minitok.vqgan import adaptive_weight, generator_loss, hinge_d_loss

        x_hat, out = model(images)
        rec_loss = F.mse_loss(x_hat, images)
        loss = rec_loss + out.loss
        stats = {"rec": rec_loss.item(), "vq": out.loss.item(), "usage": out.usage.item(),
                 "perplexity": out.perplexity.item()}
        if disc is not None:
            g_loss = generator_loss(disc(x_hat))
            lam = adaptive_weight(rec_loss, g_loss, model.decoder, max_weight)
            loss = loss + disc_weight * lam * g_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if disc is not None:
            d_loss = hinge_d_loss(disc(images), disc(x_hat))  # not detached
            d_optimizer.zero_grad()
            d_loss.backward()
            d_optimizer.step()
            stats.update(g_loss=g_loss.item(), d_loss=d_loss.item(), **{"lambda": lam.item()})
        return stats

    assert_fails_with(check.tokenizer_step, wrong, "x_hat.detach()")


def test_tokenizer_step_catches_missing_keys():
    def wrong(*args, **kwargs):
        stats = _step(*args, **kwargs)
        stats.pop("usage")
        return stats

    assert_fails_with(check.tokenizer_step, wrong, "'usage'")


def test_tokenizer_step_passes_correct_variants():
    def variant(model, images, optimizer, disc=None, d_optimizer=None, disc_weight=1.0,
                max_weight=1e4):
        # model.zero_grad, -mean D written out, floats by float(), grads cleared at the end
        stats = _step(model, images, optimizer, disc, d_optimizer, disc_weight, max_weight,
                      stats_as_tensors=True)
        model.zero_grad(set_to_none=False)
        return {k: float(v.detach()) for k, v in stats.items()}

    assert_passes(check.tokenizer_step, variant)
    assert_passes(check.tokenizer_step, _step)


# --------------------------------------------------------------------------- hints


def test_every_check_has_three_hints():
    from minitok.checks import exercises_in

    for name, one in exercises_in(check).items():
        assert len(one.hints) == 3 and all(len(h) > 40 for h in one.hints), name
