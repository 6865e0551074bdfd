"""VQ-GAN pieces against taming's formulas (docs/references.md): discriminator, hinge loss,
generator term, adaptive weight, the disc_start gate, and how train_tokenizer uses them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minitok.tokenizer import Decoder, TokenizerConfig, TrainConfig, train_tokenizer
from minitok.vqgan import (
    PatchDiscriminator,
    adaptive_weight,
    disc_factor,
    generator_loss,
    hinge_d_loss,
)

# --------------------------------------------------------------------------- hinge and generator


def test_hinge_d_loss_follows_the_formula_elementwise(device, gen):
    real = torch.randn(5, 1, 4, 4, generator=gen) * 2
    fake = torch.randn(5, 1, 4, 4, generator=gen) * 2
    r, f = real.double().numpy(), fake.double().numpy()
    expected = 0.5 * (np.maximum(0.0, 1.0 - r).mean() + np.maximum(0.0, 1.0 + f).mean())
    got = hinge_d_loss(real.to(device), fake.to(device))
    assert got.shape == ()
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_hinge_d_loss_known_values(device):
    zeros = torch.zeros(2, 1, 4, 4, device=device)
    assert hinge_d_loss(zeros, zeros).item() == 1.0  # 0.5 * (1 + 1)
    right = torch.full((2, 1, 4, 4), 1.5, device=device)
    assert hinge_d_loss(right, -right).item() == 0.0  # beyond both margins: no cost
    assert hinge_d_loss(-right, right).item() == pytest.approx(2.5)  # 0.5 * (2.5 + 2.5)


def test_hinge_d_loss_gradients(device, gen):
    real = (torch.randn(3, 1, 4, 4, generator=gen) * 2).to(device).requires_grad_()
    fake = (torch.randn(3, 1, 4, 4, generator=gen) * 2).to(device).requires_grad_()
    hinge_d_loss(real, fake).backward()
    n = real.numel()
    torch.testing.assert_close(real.grad, -0.5 * (real.detach() < 1).float() / n)
    torch.testing.assert_close(fake.grad, 0.5 * (fake.detach() > -1).float() / n)


def test_generator_loss_is_minus_the_mean_logit(device, gen):
    logits = torch.randn(4, 1, 4, 4, generator=gen).to(device)
    assert generator_loss(logits).item() == pytest.approx(-logits.double().mean().item(), rel=1e-6)


# --------------------------------------------------------------------------- adaptive weight


def _tiny_decoder_losses(device, gen, g_scale: float = 1.0):
    """A tiny minitok Decoder, a reconstruction loss and a stand-in adversarial loss."""
    torch.manual_seed(0)
    decoder = Decoder(in_channels=1, channels=8, code_dim=4).to(device)
    codes = torch.randn(2, 4, 4, 4, generator=gen).to(device)  # (B, D, G, G)
    target = torch.randn(2, 1, 8, 8, generator=gen).clamp(-1, 1).to(device)
    disc = PatchDiscriminator(1, 8).to(device)
    x_hat = decoder(codes)  # (B, 1, 8, 8)
    rec = F.mse_loss(x_hat, target)
    adv = g_scale * generator_loss(disc(x_hat))
    return decoder, rec, adv


def test_adaptive_weight_is_the_ratio_of_autograd_grad_norms(device, gen):
    decoder, rec, adv = _tiny_decoder_losses(device, gen)
    w = decoder.conv_out.weight
    rec_grad = torch.autograd.grad(rec, w, retain_graph=True)[0]
    adv_grad = torch.autograd.grad(adv, w, retain_graph=True)[0]
    expected = rec_grad.double().norm() / (adv_grad.double().norm() + 1e-4)
    got = adaptive_weight(rec, adv, decoder)
    assert got.shape == () and not got.requires_grad
    assert 0 < got.item() < 1e4
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_adaptive_weight_clamps_at_max_weight(device, gen):
    decoder, rec, adv = _tiny_decoder_losses(device, gen, g_scale=0.0)
    assert adaptive_weight(100 * rec, adv, decoder, max_weight=3.0).item() == 3.0


def test_adaptive_weight_is_clamped_and_finite_when_the_adversarial_gradient_vanishes(device, gen):
    decoder, rec, adv = _tiny_decoder_losses(device, gen, g_scale=0.0)  # grad_W L_G = 0
    w = decoder.conv_out.weight
    rec_norm = torch.autograd.grad(rec, w, retain_graph=True)[0].norm().item()
    assert rec_norm > 0.01
    # ||grad L_rec|| / (0 + 1e-4) with 100 * L_rec is far above 1e4: clamped.
    assert adaptive_weight(100 * rec, adv, decoder).item() == 1e4
    # With 1e-3 * L_rec it is below the clamp: finite, thanks to the epsilon.
    small = adaptive_weight(1e-3 * rec, adv, decoder).item()
    assert small < 1e4
    assert small == pytest.approx(1e-3 * rec_norm / 1e-4, rel=1e-5)


def test_adaptive_weight_keeps_the_graph_and_leaves_no_grad(device, gen):
    decoder, rec, adv = _tiny_decoder_losses(device, gen)
    lam = adaptive_weight(rec, adv, decoder)
    assert all(p.grad is None for p in decoder.parameters())
    (rec + lam * adv).backward()  # the graph is still there for the training step
    assert decoder.conv_out.weight.grad is not None


def test_adaptive_weight_bad_input(gen):
    decoder, rec, adv = _tiny_decoder_losses("cpu", gen)
    with pytest.raises(ValueError, match="max_weight"):
        adaptive_weight(rec, adv, decoder, max_weight=float("inf"))
    with pytest.raises(ValueError, match="rec_loss must be a scalar"):
        adaptive_weight(rec.expand(3), adv, decoder)
    with pytest.raises(ValueError, match="g_loss has no graph"):
        adaptive_weight(rec, adv.detach(), decoder)


# --------------------------------------------------------------------------- gate


def test_disc_factor_gate():
    assert [disc_factor(s, 3) for s in range(6)] == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    assert disc_factor(0, 0) == 1.0
    with pytest.raises(ValueError, match="step"):
        disc_factor(-1, 3)
    with pytest.raises(ValueError, match="disc_start"):
        disc_factor(2, 1.5)


# --------------------------------------------------------------------------- discriminator


def test_patch_discriminator_gives_one_logit_per_patch(device, gen):
    torch.manual_seed(0)
    disc = PatchDiscriminator(1, 16).to(device)
    images = torch.randn(3, 1, 16, 16, generator=gen).to(device)
    logits = disc(images)
    assert logits.shape == (3, 1, 4, 4)
    # No batch norm: an image's logits do not depend on the rest of the batch.
    torch.testing.assert_close(disc(images[1:2]), logits[1:2], rtol=1e-5, atol=1e-5)
    # Local: changing the top-left pixel moves only the patches that can see it.
    moved = images.clone()
    moved[:, :, 0, 0] += 5.0
    changed = (disc(moved) - logits).abs()[0, 0] > 1e-6  # (4, 4)
    assert changed[0, 0] and not changed[3, 3]


def test_patch_discriminator_bad_input():
    disc = PatchDiscriminator(1, 8)
    with pytest.raises(ValueError, match=r"images must be \(B, 1, H, W\)"):
        disc(torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="multiples of 4"):
        disc(torch.zeros(2, 1, 10, 10))
    with pytest.raises(ValueError, match="channels"):
        PatchDiscriminator(1, 0)


# --------------------------------------------------------------------------- in the training loop


def test_train_tokenizer_gates_the_gan(device):
    config = TokenizerConfig(channels=8, num_codes=16)
    train = TrainConfig(steps=6, batch_size=8, gan=True, disc_start=3, disc_channels=8)
    _, history = train_tokenizer(config, train, device=device, progress=False)
    assert history["lambda"][:3] == [0.0, 0.0, 0.0]
    assert history["d_loss"][:3] == [0.0, 0.0, 0.0]
    assert all(v > 0 for v in history["lambda"][3:])
    assert all(v > 0 for v in history["d_loss"][3:])  # a fresh D is not past its margins


def test_patch_discriminator_receptive_field():
    """Each logit's field is 18 x 18 (1 + 3 + 3*2 + 2*4); by gradients on a 16 x 16 digit an
    inner logit reads 15 x 15 pixels and a corner one 11 x 11 (docs/references.md, VQ-GAN)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        disc = PatchDiscriminator()
    strides, field = 1, 1
    for layer in disc.layers:
        if isinstance(layer, torch.nn.Conv2d):
            field += (layer.kernel_size[0] - 1) * strides
            strides *= layer.stride[0]
    assert field == 18
    for (i, j), side in (((1, 1), 15), ((2, 2), 15), ((0, 0), 11)):
        x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0),
                        requires_grad=True)
        disc(x)[0, 0, i, j].backward()
        seen = x.grad[0, 0] != 0
        assert int(seen.any(1).sum()) == side and int(seen.any(0).sum()) == side
