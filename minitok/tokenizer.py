"""Lesson 03: the image tokenizer, a VQ-VAE (optionally a VQ-GAN) that turns a digit into tokens.

    image (B, 1, 16, 16) --encoder--> z (B, D, 8, 8) --quantizer--> indices (B, 8, 8)
    indices (B, 8, 8) --codebook--> codes (B, D, 8, 8) --decoder--> image (B, 1, 16, 16)

The encoder is a small convolutional network that halves the image once: every 2 x 2 pixel
patch (with its neighbourhood) becomes one D-dimensional vector. Lesson 02's
`VectorQuantizer` replaces each vector by its nearest code, and the code's index is the
token. The decoder mirrors the encoder and turns the 8 x 8 grid of codes back into pixels.
Trained end to end with the reconstruction loss + the VQ loss (and, for a VQ-GAN, the
adversarial terms of `minitok/vqgan.py`), the tokenizer learns a vocabulary of K digit
fragments. Later lessons model the token grids with transformers and decode what they
generate with `decode`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from minitok import validate
from minitok.checkpoints import Checkpointable
from minitok.course import reproducible
from minitok.data import load_digits
from minitok.training import lr_scale
from minitok.vq import VectorQuantizer, VQOutput
from minitok.vqgan import (
    ADAPTIVE_MAX,
    PatchDiscriminator,
    adaptive_weight,
    generator_loss,
    hinge_d_loss,
)

# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class TokenizerConfig:
    """The tokenizer's shape. The token grid is (image_size / 2) x (image_size / 2)."""

    image_size: int = 16  # images are (B, in_channels, image_size, image_size)
    in_channels: int = 1
    channels: int = 16  # width of the encoder and decoder
    code_dim: int = 16  # D: the dimension of a code vector
    num_codes: int = 64  # K: the vocabulary size
    beta: float = 0.25  # commitment weight
    kmeans_init: bool = True  # fit the codebook to the first batch with k-means
    dead_code_threshold: float = 1.0  # restart codes used less than this (decayed count)

    def __post_init__(self):
        for name in ("image_size", "in_channels", "channels", "code_dim", "num_codes"):
            validate.positive_int(getattr(self, name), name)
        validate.number(self.beta, "beta", low=0)
        validate.number(self.dead_code_threshold, "dead_code_threshold", low=0)
        validate.flag(self.kmeans_init, "kmeans_init")
        if self.channels % 8:  # GroupNorm splits the channels into 8 groups
            raise ValueError(f"channels must be a multiple of 8, got {self.channels}")
        if self.image_size % 2:  # an odd size would decode to image_size - 1
            raise ValueError(f"image_size must be even (the encoder halves it), got "
                             f"{self.image_size}")

    @property
    def grid_size(self) -> int:
        """G: an image becomes a G x G grid of tokens."""
        return self.image_size // 2

    @classmethod
    def from_dict(cls, values: dict) -> TokenizerConfig:
        """The config saved as a dict (a checkpoint's "config"), refusing unknown fields."""
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"config: unknown TokenizerConfig fields {sorted(unknown)}")
        return cls(**values)


@dataclass(frozen=True)
class TrainConfig:
    """How `train_tokenizer` trains: optimiser, batches, and the VQ-GAN switches."""

    steps: int = 2000
    batch_size: int = 32
    lr: float = 2e-3  # Adam; training.lr_scale: a short warm-up, then cosine decay to 10%
    seed: int = 0
    gan: bool = False  # add the PatchGAN discriminator and the adversarial terms
    disc_start: int = 1000  # adversarial terms off while step < disc_start
    disc_weight: float = 1.0  # multiplies the adaptive weight (taming's discriminator_weight)
    max_weight: float = ADAPTIVE_MAX  # the adaptive weight's clamp (taming's 1e4)
    disc_lr: float = 2e-4
    disc_channels: int = 32

    def __post_init__(self):
        for name in ("steps", "batch_size", "disc_channels"):
            validate.positive_int(getattr(self, name), name)
        for name in ("seed", "disc_start"):
            validate.non_negative_int(getattr(self, name), name)
        for name in ("lr", "disc_lr"):
            validate.number(getattr(self, name), name, low=0, low_open=True)
        validate.number(self.disc_weight, "disc_weight", low=0)
        validate.number(self.max_weight, "max_weight", low=0)
        validate.flag(self.gan, "gan")


# --------------------------------------------------------------------------- building blocks


class ResBlock(nn.Module):
    """x + conv(act(norm(conv(act(norm(x)))))): two 3 x 3 convolutions that keep the shape."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(8, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C, H, W)
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return x + h


class Encoder(nn.Module):
    """images (B, C_in, S, S) -> z (B, D, S/2, S/2): one stride-2 convolution halves the size."""

    def __init__(self, in_channels: int, channels: int, code_dim: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)  # (B, ch, S, S)
        self.block1 = ResBlock(channels)
        self.down = nn.Conv2d(channels, channels, 4, stride=2, padding=1)  # (B, ch, S/2, S/2)
        self.block2 = ResBlock(channels)
        self.norm_out = nn.GroupNorm(8, channels)
        self.conv_out = nn.Conv2d(channels, code_dim, 1)  # (B, D, S/2, S/2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.block1(self.conv_in(x))
        h = self.block2(self.down(h))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """codes (B, D, G, G) -> images (B, C_in, 2G, 2G) in (-1, 1), mirroring the encoder.

    It upsamples with nearest-neighbour + a 3 x 3 convolution (no checkerboard artefacts,
    unlike a transposed convolution) and ends in `conv_out` and a tanh. The weight of
    `conv_out` is the W at which the VQ-GAN's adaptive weight compares gradients.
    """

    def __init__(self, in_channels: int, channels: int, code_dim: int):
        super().__init__()
        self.conv_in = nn.Conv2d(code_dim, channels, 3, padding=1)  # (B, ch, G, G)
        self.block1 = ResBlock(channels)
        self.up = nn.Conv2d(channels, channels, 3, padding=1)  # after 2x upsampling
        self.block2 = ResBlock(channels)
        self.norm_out = nn.GroupNorm(8, channels)
        self.conv_out = nn.Conv2d(channels, in_channels, 3, padding=1)  # (B, C_in, 2G, 2G)

    def forward(self, codes: Tensor) -> Tensor:
        h = self.block1(self.conv_in(codes))
        h = self.up(F.interpolate(h, scale_factor=2.0, mode="nearest"))  # (B, ch, 2G, 2G)
        h = self.block2(h)
        return torch.tanh(self.conv_out(F.silu(self.norm_out(h))))


def tokens_to_image(indices: Tensor, codebook: Tensor, decoder: nn.Module) -> Tensor:
    """Token ids (B, G, G) -> images: look up the codes, put channels first, decode.

    codebook[indices] is (B, G, G, D), channels last; a convolutional decoder wants
    (B, D, G, G). `permute` moves the axis; `view`/`reshape` to (B, D, G, G) would keep the
    numbers in memory order and scramble codes across positions.
    """
    codes = codebook[indices]  # (B, G, G, D)
    codes = codes.permute(0, 3, 1, 2)  # (B, D, G, G)
    return decoder(codes)  # (B, C, S, S)


# --------------------------------------------------------------------------- the tokenizer


class VQTokenizer(Checkpointable):
    """Encoder + VectorQuantizer + decoder: images <-> (G, G) grids of integer tokens.

    encode(images) -> indices (B, G, G); decode(indices) -> images (B, C, S, S);
    forward(images) -> (reconstruction, VQOutput) for training.
    """

    kind = "tokenizer"
    config_class = TokenizerConfig

    def __init__(self, config: TokenizerConfig | None = None):
        config = TokenizerConfig() if config is None else config
        super().__init__(config)  # checks it: self.config
        self.encoder = Encoder(config.in_channels, config.channels, config.code_dim)
        self.quantizer = VectorQuantizer(config.num_codes, config.code_dim, config.beta,
                                         kmeans_init=config.kmeans_init,
                                         dead_code_threshold=config.dead_code_threshold)
        self.decoder = Decoder(config.in_channels, config.channels, config.code_dim)

    @property
    def num_codes(self) -> int:
        return self.config.num_codes

    @property
    def grid_size(self) -> int:
        return self.config.grid_size

    @property
    def device(self) -> torch.device:
        return self.decoder.conv_out.weight.device

    def _check_images(self, images: Tensor) -> None:
        """Refuse images the convolutions would misread (another size gives another grid).

        It reads only the shape and dtype (no values, no device sync): forward, which every
        training step calls, keeps it because evaluation and the notebook call forward too.
        """
        c, s = self.config.in_channels, self.config.image_size
        validate.float_tensor(images, "images", dim=4)
        if images.shape[1:] != (c, s, s) or images.shape[0] == 0:
            raise ValueError(f"images must be (B, {c}, {s}, {s}), a non-empty batch (this "
                             f"tokenizer's in_channels={c}, image_size={s}), got shape "
                             f"{tuple(images.shape)}")

    def forward(self, images: Tensor) -> tuple[Tensor, VQOutput]:
        """images (B, C, S, S) -> (reconstruction (B, C, S, S), VQOutput with indices (B, G, G))."""
        self._check_images(images)
        z = self.encoder(images)  # (B, D, G, G)
        vq = self.quantizer(z)  # quantized (B, D, G, G), straight-through
        return self.decoder(vq.quantized), vq

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """images (B, C, S, S) -> token ids (B, G, G), int64 in [0, K), on the model's device.

        Encoding never changes the tokenizer: the quantizer runs in eval mode here even if
        the model is training, so no codebook update or dead-code restart happens.
        """
        self._check_images(images)
        was_training = self.quantizer.training
        self.quantizer.eval()
        try:
            return self.quantizer(self.encoder(images.to(self.device))).indices
        finally:
            self.quantizer.train(was_training)

    @torch.no_grad()
    def decode(self, indices: Tensor) -> Tensor:
        """token ids (B, G, G) -> images (B, C, S, S) in (-1, 1), on the model's device.

        This is `tokens_to_image` with the quantizer's codebook: the tokenizer's quantizer
        neither projects nor normalises its codes, so a code is its codebook row.
        """
        g = self.grid_size
        validate.index_tensor(indices, "indices", size=self.num_codes)
        if indices.shape[1:] != (g, g):
            raise ValueError(f"indices must be (B, {g}, {g}), got shape {tuple(indices.shape)}")
        indices = indices.to(self.device).long()  # a uint8 index would be read as a mask
        return tokens_to_image(indices, self.quantizer.codebook, self.decoder)


# --------------------------------------------------------------------------- training


def tokenizer_step(
    model: VQTokenizer,
    images: Tensor,
    optimizer: torch.optim.Optimizer,
    disc: nn.Module | None = None,
    d_optimizer: torch.optim.Optimizer | None = None,
    disc_weight: float = 1.0,
    max_weight: float = ADAPTIVE_MAX,
) -> dict[str, float]:
    """One training step on a batch images (B, C, S, S); returns the step's numbers as floats.

    The tokenizer's step: reconstruct, minimise mse(x_hat, x) + the VQ loss (with a
    discriminator `disc`, plus disc_weight * lambda * L_G, lambda the adaptive weight clamped
    to max_weight), one optimizer step. Then, with `disc`, the discriminator's step: the
    hinge loss on the real batch and the *detached* reconstruction, one d_optimizer step.
    Returns "rec", "vq", "usage", "perplexity", and with `disc` "g_loss", "d_loss", "lambda".
    """
    x_hat, vq = model(images)  # (B, C, S, S)
    rec_loss = F.mse_loss(x_hat, images)
    loss = rec_loss + vq.loss
    if disc is not None:
        g_loss = generator_loss(disc(x_hat))
        lam = adaptive_weight(rec_loss, g_loss, model.decoder, max_weight)
        loss = loss + disc_weight * lam * g_loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    stats = {"rec": rec_loss.item(), "vq": vq.loss.item(), "usage": vq.usage.item(),
             "perplexity": vq.perplexity.item()}

    if disc is not None:  # the discriminator's step, on a detached reconstruction
        d_loss = hinge_d_loss(disc(images), disc(x_hat.detach()))
        d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        d_optimizer.step()
        stats.update(g_loss=g_loss.item(), d_loss=d_loss.item(), **{"lambda": lam.item()})
    return stats


def fit_tokenizer(
    model: VQTokenizer,
    images: Tensor,
    train: TrainConfig,
    step_fn: Callable,
    disc: nn.Module | None = None,
    progress: bool = False,
) -> dict[str, list[float]]:
    """The training loop: train.steps calls of `step_fn` on random batches of `images`.

    One Adam for the whole run (its moments carry over from step to step), its learning rate
    set before every step to train.lr * lr_scale(step, train.steps) (a short warm-up, then a
    cosine decay to 10%). The batches are train.batch_size rows drawn with torch.randint from
    a generator seeded with train.seed, one batch per step: the same call trains the same
    model. With a discriminator `disc` the step is the VQ-GAN's from step train.disc_start
    on (D's Adam: lr train.disc_lr, betas (0.5, 0.9) as taming's, constant); before it the
    plain step, logged with g_loss, d_loss and lambda at 0.0. Returns each value the step
    returned, one list per name; leaves the model in eval mode.
    """
    generator = torch.Generator().manual_seed(train.seed)  # the batches, and nothing else
    optimizer = torch.optim.Adam(model.parameters(), lr=train.lr)
    if disc is not None:  # the discriminator keeps a constant learning rate
        d_optimizer = torch.optim.Adam(disc.parameters(), lr=train.disc_lr, betas=(0.5, 0.9))
    model.train()
    history = {}
    for step in tqdm(range(train.steps), desc="tokenizer", disable=not progress):
        for group in optimizer.param_groups:
            group["lr"] = train.lr * lr_scale(step, train.steps)
        rows = torch.randint(0, images.shape[0], (train.batch_size,), generator=generator)
        batch = images[rows.to(images.device)]  # (B, C, S, S)
        if disc is not None and step >= train.disc_start:  # the VQ-GAN's step
            stats = step_fn(model, batch, optimizer, disc, d_optimizer, train.disc_weight,
                            train.max_weight)
        else:
            stats = step_fn(model, batch, optimizer)
            if disc is not None:  # the adversarial terms are off before disc_start
                stats = {**stats, "g_loss": 0.0, "d_loss": 0.0, "lambda": 0.0}
        for name, value in stats.items():
            history.setdefault(name, []).append(value)
    model.eval()
    return history


def train_tokenizer(
    config: TokenizerConfig | None = None,
    train: TrainConfig | None = None,
    images: Tensor | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    quantizer: nn.Module | None = None,
    step_fn: Callable | None = None,
    loop: Callable = fit_tokenizer,
) -> tuple[VQTokenizer, dict[str, list[float]]]:
    """Train a tokenizer from scratch; returns (tokenizer in eval mode, history of the losses).

    It builds the model (and with `train.gan` the discriminator) from `train.seed`, then
    hands them to `loop` (`fit_tokenizer`, or a learner's loop with its signature: Lesson 03
    passes the learner's), whose every step is `tokenizer_step` (or `step_fn`, a function
    with its signature) on a random batch. images default to the training digits at the
    config's size. The loop runs under `course.reproducible()` (deterministic kernels, one
    CPU thread): the same call gives the same tokenizer on the same CPU. `quantizer` swaps
    in another module that maps z to a VQOutput (the benchmark compares with
    vector-quantize-pytorch's).

    history: per step "rec" (MSE), "vq" (VQ loss), "usage" (fraction of codes in the
    batch), "perplexity"; with the GAN also "g_loss", "d_loss", "lambda" (0 before disc_start).
    """
    config = validate.instance(TokenizerConfig() if config is None else config, "config",
                               TokenizerConfig)
    train = validate.instance(TrainConfig() if train is None else train, "train", TrainConfig)
    step_fn = tokenizer_step if step_fn is None else step_fn
    images = load_digits("train", size=config.image_size)[0] if images is None else images
    torch.manual_seed(train.seed)  # initial weights
    model = VQTokenizer(config)
    if quantizer is not None:
        model.quantizer = quantizer
    model.to(device)
    model._check_images(images)
    disc = None
    if train.gan:
        disc = PatchDiscriminator(config.in_channels, train.disc_channels).to(device)
    with reproducible():
        history = loop(model, images.to(device), train, step_fn=step_fn, disc=disc,
                       progress=progress)
    return model.eval(), history
