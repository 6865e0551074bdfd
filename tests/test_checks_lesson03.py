"""Lesson 03's checks fail each classic mistake with the hint that names it.

What every lesson's checks must do (pass the reference, report an unfinished exercise, leave
the RNG and thread count alone) is tested once for all lessons in tests/test_checks_all.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from checking import assert_fails_with

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


def test_adaptive_weight_catches_a_freed_graph():
    def wrong(rec_loss, g_loss, decoder):
        w = decoder.conv_out.weight
        rec = torch.autograd.grad(rec_loss, w)[0].norm()  # no retain_graph
        adv = torch.autograd.grad(g_loss, w)[0].norm()
        return (rec / (adv + 1e-4)).clamp(0, 1e4)

    assert_fails_with(check.adaptive_weight, wrong, "retain_graph=True")
