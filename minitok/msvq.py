"""Lesson 09, part 1: the multi-scale residual quantizer behind next-scale prediction (VAR).

Lesson 03's tokenizer replaces each of the 8 x 8 feature vectors by its nearest code: one
grid of 64 tokens, all at the finest scale. VAR's tokenizer (Tian et al. 2024,
FoundationVision/VAR `VectorQuantizer2`) writes the same feature map f (B, D, 8, 8) as a sum
of token maps from coarse to fine, 1 x 1, 2 x 2, 4 x 4, 8 x 8 here (85 tokens), with one
codebook shared by every scale:

    rest = f, f_hat = 0
    for each scale s (coarse to fine):
        ids_s = nearest_code(area_downsample(rest, s x s), codebook)   # (B, s*s)
        h     = phi_s(bicubic_upsample(codebook[ids_s], 8 x 8))         # (B, D, 8, 8)
        f_hat = f_hat + h,  rest = rest - h

The 1 x 1 token says roughly what the whole digit is, each finer map corrects what the coarser
ones left over. `phi_s` is a small 3 x 3 convolution blended half-and-half with its input
(`Phi`): bicubic upsampling of a 1 x 1 or 2 x 2 map is smooth, the convolution lets the
tokenizer sharpen it. The decoder reads f_hat exactly as Lesson 03's decoder read its codes.

Reading order: `Phi` and `phi_index` (which of the shared convolutions a scale uses),
`upsample` / `downsample`, then the lesson's exercises `encode_scales` (f -> token maps),
`scales_to_fhat` (token maps -> f_hat) and `var_inputs` (the teacher-forcing input of the
next-scale model, Lesson 09 part 2 in `minitok.var`), and the `MultiScaleTokenizer`.

Shapes: B batch, D code_dim, G the finest grid (8), s a scale's side, K num_codes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minitok import validate
from minitok.checkpoints import Checkpointable
from minitok.quantize import nearest_code
from minitok.tokenizer import Decoder, Encoder
from minitok.vq import VQOutput, straight_through, usage_stats

SCALES = (1, 2, 4, 8)  # this course's 8 x 8 grid: 1 + 4 + 16 + 64 = 85 tokens, 4 passes


def tokens_per_scale(scales) -> list[int]:
    """How many tokens each scale holds: s * s."""
    return [s * s for s in scales]


# --------------------------------------------------------------------------- phi


class Phi(nn.Module):
    """phi(h) = (1 - r) h + r conv3x3(h): a convolution blended with its input (r = 0.5).

    The official `Phi` (a Conv2d subclass) with its `quant_resi` ratio r; r = 0 would be the
    identity. Keeps the shape (B, D, H, W)."""

    def __init__(self, dim: int, ratio: float = 0.5):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)
        self.ratio = ratio

    def forward(self, h: Tensor) -> Tensor:
        return (1 - self.ratio) * h + self.ratio * self.conv(h)


def phi_index(k: int, num_scales: int, num_phi: int) -> int:
    """Which of `num_phi` shared convolutions scale k (0 = coarsest) of `num_scales` uses.

    The official rule: scale k sits at k / (num_scales - 1) in [0, 1]; the convolutions sit
    at evenly spaced ticks (linspace(1/12, 11/12, 4) for four of them); take the nearest.
    With 4 scales and 4 convolutions each scale has its own.
    """
    n = num_phi  # the ticks in the official arithmetic (1/3/n, not 1/(3n)): ties break alike
    ticks = np.linspace(1 / 3 / n, 1 - 1 / 3 / n, n) if n == 4 else np.linspace(1 / 2 / n, 1 - 1 / 2 / n, n)
    return int(np.argmin(np.abs(ticks - k / (num_scales - 1))))


# --------------------------------------------------------------------------- resampling


def downsample(f: Tensor, side: int) -> Tensor:
    """(B, D, H, W) -> (B, D, side, side) by area averaging (each output is a patch's mean)."""
    return F.interpolate(f, size=(side, side), mode="area")


def upsample(h: Tensor, side: int) -> Tensor:
    """(B, D, s, s) -> (B, D, side, side) bicubic: smooth, so a 1 x 1 map becomes a plane."""
    return F.interpolate(h, size=(side, side), mode="bicubic")


def lookup(ids: Tensor, codebook: Tensor, side: int) -> Tensor:
    """Token ids (B, side*side) -> their codes as a map (B, D, side, side), channels first."""
    B = ids.shape[0]
    return codebook[ids].view(B, side, side, -1).permute(0, 3, 1, 2)  # (B, D, s, s)


# --------------------------------------------------------------------------- the exercises


def encode_scales(f: Tensor, codebook: Tensor, phis, scales=SCALES) -> list[Tensor]:
    """A feature map f (B, D, G, G) -> one token map per scale, coarse to fine.

    Returns [ids (B, s*s) int64 for s in scales] (raster order inside a scale). Each scale
    quantizes the area-downsampled *residual* (what the coarser scales have not explained
    yet) and subtracts what its tokens explain: their codes upsampled (bicubic) to G x G,
    then refined by phis[k]. The finest scale (s = G) needs no resampling. The official
    `f_to_idxBl_or_fhat`; nearest_code is Lesson 01's.
    """
    G = f.shape[-1]
    rest = f  # (B, D, G, G) what is left to explain
    ids = []
    for k, s in enumerate(scales):
        z = downsample(rest, s) if s != G else rest  # (B, D, s, s)
        idx = nearest_code(z.permute(0, 2, 3, 1), codebook)  # (B, s, s)
        h = lookup(idx.flatten(1), codebook, s)  # (B, D, s, s)
        h = phis[k](upsample(h, G) if s != G else h)  # (B, D, G, G)
        rest = rest - h
        ids.append(idx.flatten(1))  # (B, s*s)
    return ids


def scales_to_fhat(ids: list[Tensor], codebook: Tensor, phis, scales=SCALES) -> Tensor:
    """Token maps [ids (B, s*s) for s in scales] -> f_hat (B, D, G, G): the sum over scales
    of each map's codes, upsampled (bicubic) to the finest grid and refined by phis[k].
    The decoder turns f_hat into pixels. The official `idxBl_to_fhat` (`embed_to_fhat`)."""
    G = scales[-1]
    f_hat = 0
    for k, s in enumerate(scales):
        h = lookup(ids[k], codebook, s)  # (B, D, s, s)
        f_hat = f_hat + phis[k](upsample(h, G) if s != G else h)  # (B, D, G, G)
    return f_hat


def var_inputs(ids: list[Tensor], codebook: Tensor, phis, scales=SCALES) -> Tensor:
    """The teacher-forcing input of the next-scale model: (B, L - 1, D), L = sum of s*s.

    For every scale after the first, in order: the running f_hat of all the coarser scales
    (their upsampled, phi-refined codes, summed at G x G) area-downsampled to that scale's
    size, as s*s vectors in raster order. The first scale's input is the class token, which
    the model adds itself. The official `idxBl_to_var_input`.
    """
    G = scales[-1]
    f_hat = 0
    inputs = []
    for k, s in enumerate(scales[:-1]):
        h = lookup(ids[k], codebook, s)  # (B, D, s, s)
        f_hat = f_hat + phis[k](upsample(h, G))  # (B, D, G, G) the coarser scales so far
        inputs.append(downsample(f_hat, scales[k + 1]).flatten(2).transpose(1, 2))  # (B, s'^2, D)
    return torch.cat(inputs, dim=1)  # (B, L - 1, D)


# --------------------------------------------------------------------------- the quantizer


class MultiScaleQuantizer(nn.Module):
    """One codebook (K, D) and `num_phi` shared phi convolutions for `scales`.

    forward(f) -> VQOutput: f_hat straight-through, all tokens (B, L) concatenated coarse to
    fine, and the official training loss: the mean over scales k of beta * mse(f,
    f_hat_k.detach()) (commitment: pulls the encoder) + mse(f_hat_k, f.detach()) (pulls the
    codes and phi), f_hat_k the running sum after scale k.
    """

    def __init__(self, num_codes: int, dim: int, scales=SCALES, num_phi: int = 4,
                 quant_resi: float = 0.5, beta: float = 0.25):
        super().__init__()
        self.scales, self.beta, self.num_codes = tuple(scales), beta, num_codes
        self.codebook = nn.Parameter(torch.randn(num_codes, dim) * 0.1)  # (K, D)
        self.phi = nn.ModuleList(Phi(dim, quant_resi) for _ in range(num_phi))

    def phis(self) -> list[nn.Module]:
        """The phi convolution of every scale, in order (shared ones repeat)."""
        n = len(self.scales)
        return [self.phi[phi_index(k, n, len(self.phi))] for k in range(n)]

    def forward(self, f: Tensor) -> VQOutput:
        """f (B, D, G, G) -> VQOutput(quantized f_hat, indices (B, L), loss, perplexity, usage)."""
        G, phis, codebook = f.shape[-1], self.phis(), self.codebook
        with torch.no_grad():  # which tokens: no gradient flows through the choice
            ids = encode_scales(f, codebook, phis, self.scales)
        f_hat, loss = 0, 0.0
        for k, s in enumerate(self.scales):  # the same sums again, with gradients to the codes
            h = lookup(ids[k], codebook, s)
            f_hat = f_hat + phis[k](upsample(h, G) if s != G else h)  # (B, D, G, G)
            loss = loss + self.beta * F.mse_loss(f, f_hat.detach()) + F.mse_loss(f_hat, f.detach())
        indices = torch.cat(ids, dim=1)  # (B, L)
        perplexity, usage = usage_stats(indices, self.num_codes)
        return VQOutput(straight_through(f, f_hat), indices, loss / len(self.scales),
                        perplexity, usage)


# --------------------------------------------------------------------------- the tokenizer


@dataclass(frozen=True)
class MultiScaleConfig:
    """The multi-scale tokenizer's shape: Lesson 03's encoder and decoder, VAR's quantizer."""

    image_size: int = 16
    in_channels: int = 1
    channels: int = 16
    code_dim: int = 16
    num_codes: int = 64
    scales: tuple = SCALES  # coarse to fine; the last is the grid (image_size / 2)
    num_phi: int = 4  # shared phi convolutions (the official share_quant_resi)
    quant_resi: float = 0.5  # phi's blend ratio r
    beta: float = 0.25

    def __post_init__(self):
        for name in ("image_size", "in_channels", "channels", "code_dim", "num_codes", "num_phi"):
            validate.positive_int(getattr(self, name), name)
        object.__setattr__(self, "scales", tuple(self.scales))  # a checkpoint stores a list
        scales = self.scales
        if len(scales) < 2 or list(scales) != sorted(set(scales)) or scales[-1] != self.grid_size:
            raise ValueError(f"scales must be at least two increasing sides ending at the grid "
                             f"size {self.grid_size}, got {scales}")

    @property
    def grid_size(self) -> int:
        return self.image_size // 2

    @property
    def tokens_per_image(self) -> int:
        """L: the tokens of all scales (85 for 1, 2, 4, 8)."""
        return sum(tokens_per_scale(self.scales))

    @classmethod
    def from_dict(cls, values: dict) -> MultiScaleConfig:
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"config: unknown MultiScaleConfig fields {sorted(unknown)}")
        return cls(**values)


class MultiScaleTokenizer(Checkpointable):
    """images <-> token maps of every scale: encode -> [ids (B, s*s)], decode -> images."""

    kind = "var_tokenizer"
    config_class = MultiScaleConfig

    def __init__(self, config: MultiScaleConfig | None = None):
        config = MultiScaleConfig() if config is None else config
        super().__init__(config)  # checks it: self.config
        self.encoder = Encoder(config.in_channels, config.channels, config.code_dim)
        self.quantizer = MultiScaleQuantizer(config.num_codes, config.code_dim, config.scales,
                                             config.num_phi, config.quant_resi, config.beta)
        self.decoder = Decoder(config.in_channels, config.channels, config.code_dim)

    @property
    def num_codes(self) -> int:
        return self.config.num_codes

    @property
    def scales(self) -> tuple:
        return self.config.scales

    @property
    def device(self) -> torch.device:
        return self.decoder.conv_out.weight.device

    def forward(self, images: Tensor) -> tuple[Tensor, VQOutput]:
        """images (B, C, S, S) -> (reconstruction, VQOutput with indices (B, L))."""
        vq = self.quantizer(self.encoder(images))
        return self.decoder(vq.quantized), vq

    @torch.no_grad()
    def encode(self, images: Tensor) -> list[Tensor]:
        """images (B, C, S, S) -> [ids (B, s*s) for each scale], on the model's device."""
        validate.float_tensor(images, "images", dim=4)
        f = self.encoder(images.to(self.device))
        q = self.quantizer
        return encode_scales(f, q.codebook, q.phis(), self.scales)

    @torch.no_grad()
    def decode(self, ids: list[Tensor]) -> Tensor:
        """[ids (B, s*s) for each scale] (or all of them, (B, L)) -> images (B, C, S, S)."""
        if isinstance(ids, Tensor):
            ids = split_scales(ids, self.scales)
        if len(ids) != len(self.scales):
            raise ValueError(f"ids: one map per scale {self.scales}, got {len(ids)}")
        for k, s in enumerate(self.scales):
            validate.index_tensor(ids[k], f"ids[{k}]", self.num_codes, dim=2)
            if ids[k].shape[1] != s * s:
                raise ValueError(f"ids[{k}] must be (B, {s * s}), got {tuple(ids[k].shape)}")
        q = self.quantizer
        f_hat = scales_to_fhat([i.to(self.device) for i in ids], q.codebook, q.phis(),
                               self.scales)
        return self.decoder(f_hat)


def split_scales(tokens: Tensor, scales=SCALES) -> list[Tensor]:
    """All tokens (B, L), coarse to fine -> [ids (B, s*s) for s in scales]."""
    return list(tokens.split(tokens_per_scale(scales), dim=1))


def from_single_scale(single, scales=SCALES) -> MultiScaleTokenizer:
    """A multi-scale tokenizer that starts from a trained Lesson 03 tokenizer: its encoder,
    decoder and codebook (phi starts as the identity: its convolution's weights at zero
    would be a plane, so it starts at the identity kernel)."""
    c = single.config
    config = MultiScaleConfig(c.image_size, c.in_channels, c.channels, c.code_dim,
                              c.num_codes, tuple(scales))
    model = MultiScaleTokenizer(config)
    model.encoder.load_state_dict(single.encoder.state_dict())
    model.decoder.load_state_dict(single.decoder.state_dict())
    with torch.no_grad():
        model.quantizer.codebook.copy_(single.quantizer.codebook)
        for phi in model.quantizer.phi:
            phi.conv.weight.zero_()
            phi.conv.bias.zero_()
            phi.conv.weight[:, :, 1, 1] = torch.eye(c.code_dim)
    return model


def train_multiscale(single, steps: int = 1500, batch_size: int = 32, lr: float = 1e-3,
                     seed: int = 0, progress: bool = True
                     ) -> tuple[MultiScaleTokenizer, dict[str, list[float]]]:
    """Fine-tune a multi-scale tokenizer started from the Lesson 03 tokenizer `single` on the
    training digits: reconstruction MSE + the quantizer's loss, Adam, `training.train_loop`'s
    schedule. Returns (tokenizer in eval mode, history of "rec" and "vq")."""
    from minitok.data import load_digits
    from minitok.training import train_loop

    validate.positive_int(steps, "steps")
    images = load_digits("train", size=single.config.image_size)[0]
    torch.manual_seed(seed)
    model = from_single_scale(single).train()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def one_step(step: int) -> dict[str, float]:
        x = images[torch.randint(0, images.shape[0], (batch_size,), generator=generator)]
        x_hat, vq = model(x)
        rec = F.mse_loss(x_hat, x)
        optimizer.zero_grad(set_to_none=True)
        (rec + vq.loss).backward()
        optimizer.step()
        return {"rec": rec.item(), "vq": vq.loss.item()}

    history = train_loop(one_step, steps, [optimizer], desc="var_tokenizer", progress=progress)
    return model.eval(), history
