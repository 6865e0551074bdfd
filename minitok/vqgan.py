"""Lesson 03: the VQ-GAN additions to a VQ-VAE tokenizer.

A VQ-VAE trained with a pixel loss (MSE) learns the average of what a token could mean, and
averages are blurry. VQGAN (Esser et al., 2021, taming-transformers) adds a second network,
a discriminator, that learns to tell real images from reconstructions; the decoder is then
also trained to fool it, which pushes reconstructions towards sharp, realistic detail
instead of the blurry mean. Four pieces, each small:

1. a PatchGAN discriminator: a few strided convolutions that output one real/fake logit
   per image *patch* (a grid of logits, not one per image), so it judges local texture;
2. the hinge loss that trains it: 0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat)));
3. the decoder's adversarial term -mean D(x_hat), weighted *adaptively* so that its
   gradient at the decoder's last layer is as large as the reconstruction loss's:
   lambda = ||grad_W L_rec|| / (||grad_W L_G|| + 1e-4), clamped to [0, 1e4], detached;
4. the `disc_start` gate: the adversarial terms are off until the autoencoder has learned
   something (a discriminator facing noise wins at once and teaches nothing).

The formulas follow taming's `taming/modules/losses/vqperceptual.py` (see
docs/references.md); the code is minitok's own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minitok import validate

ADAPTIVE_EPS = 1e-4  # taming's epsilon in the adaptive weight's denominator
ADAPTIVE_MAX = 1e4  # taming clamps the adaptive weight to [0, 1e4]


# --------------------------------------------------------------------------- discriminator


class PatchDiscriminator(nn.Module):
    """A PatchGAN discriminator: images (B, C, S, S) -> real/fake logits (B, 1, S/4, S/4).

    taming's NLayerDiscriminator, scaled down for 16 x 16 digits: two stride-2 convolutions
    (each halves the size) with LeakyReLU, then a 3 x 3 convolution to one channel. A
    logit's receptive field is 18 x 18 pixels: on a 16 x 16 digit an inner logit reads 15 x 15
    of it, so here each logit judges nearly the whole digit from its own position (PatchGAN's
    locality pays off on large images). taming puts BatchNorm in the middle layers; we use
    none, so a logit depends only on its own image.
    """

    def __init__(self, in_channels: int = 1, channels: int = 32):
        super().__init__()
        self.in_channels = validate.positive_int(in_channels, "in_channels")
        validate.positive_int(channels, "channels")  # nn.Conv2d accepts 0 channels silently
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, channels, 4, stride=2, padding=1),  # S -> S/2
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1),  # S/2 -> S/4
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * channels, 1, 3, stride=1, padding=1),  # one logit per patch
        )

    def forward(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) -> logits (B, 1, H/4, W/4). The check reads only the shape."""
        c = self.in_channels
        if images.dim() != 4 or images.shape[1] != c or images.shape[2] % 4 or images.shape[3] % 4:
            raise ValueError(f"images must be (B, {c}, H, W) with H and W multiples of 4 (the "
                             f"patch grid is H/4 x W/4), got shape {tuple(images.shape)}")
        return self.layers(images)  # (B, 1, H/4, W/4)


# --------------------------------------------------------------------------- losses


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """The discriminator's hinge loss: 0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat))).

    Real patches are pushed to logits >= 1, fake ones to <= -1; beyond those margins a
    patch costs nothing, so the discriminator stops pushing on what it already gets right.
    Pass D(x_hat) computed on a *detached* reconstruction: this loss trains D only.
    """
    loss_real = F.relu(1.0 - logits_real).mean()
    loss_fake = F.relu(1.0 + logits_fake).mean()
    return 0.5 * (loss_real + loss_fake)


def generator_loss(logits_fake: Tensor) -> Tensor:
    """The decoder's adversarial term: -mean D(x_hat), lower when D calls x_hat real."""
    return -logits_fake.mean()


def adaptive_weight(
    rec_loss: Tensor, g_loss: Tensor, decoder: nn.Module, max_weight: float = ADAPTIVE_MAX
) -> Tensor:
    """lambda = ||grad_W L_rec|| / (||grad_W L_G|| + 1e-4), clamped to [0, max_weight], detached.

    W is the weight of the decoder's last convolution, `decoder.conv_out.weight` (not its
    bias). Scaling the adversarial term by lambda makes its gradient at W as large as the
    reconstruction loss's, whatever the two losses' scales are, so neither drowns the other.
    The 1e-4 keeps lambda finite when the adversarial gradient vanishes, the clamp bounds it
    (taming: 1e4; Lesson 03 measures why a smaller bound helps on digits), and the detach
    makes lambda a number: no gradient flows through the weighting itself. Both losses must
    still have their graphs (the grads are taken with retain_graph).
    """
    validate.number(max_weight, "max_weight", low=0)
    for name, loss in (("rec_loss", rec_loss), ("g_loss", g_loss)):
        if loss.dim() != 0:
            raise ValueError(f"{name} must be a scalar tensor")
        if not loss.requires_grad:  # autograd would only say "element 0 ... has no grad_fn"
            raise ValueError(f"{name} has no graph: it must depend on decoder.conv_out.weight")
    w = decoder.conv_out.weight
    rec_grad = torch.autograd.grad(rec_loss, w, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, w, retain_graph=True)[0]
    weight = rec_grad.norm() / (g_grad.norm() + ADAPTIVE_EPS)
    return weight.clamp(0.0, max_weight).detach()


def disc_factor(step: int, disc_start: int) -> float:
    """The `disc_start` gate: 0.0 while step < disc_start, then 1.0 (taming's adopt_weight)."""
    validate.non_negative_int(step, "step")
    validate.non_negative_int(disc_start, "disc_start")
    return 0.0 if step < disc_start else 1.0
