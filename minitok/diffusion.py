"""Lesson 08: a small class-conditional diffusion model on the digits, and a diffusion decoder.

Lessons 05-07 generate an image as tokens. Diffusion generates the pixels themselves, by
learning to undo noise (Ho et al. 2020, DDPM):

    forward (fixed):  x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,   eps ~ N(0, I)
    training:         show the model x_t, t and the class; it predicts eps (an MSE loss)
    sampling:         start from pure noise x_T and step t -> t_prev with the predicted
                      noise, down to t = -1 (the clean image), in `steps` forward passes

abar_t ("alpha bar", `alphas_cumprod[t]`) is the share of the signal's variance left at
step t: the product of (1 - beta_s) for s = 0 .. t, where betas is the noise schedule. Step
t = 0 is the first noising step, t = T - 1 the last; "t_prev = -1" means the clean image,
whose abar is 1.

Two samplers share the loop: DDIM (Song et al. 2021, deterministic, eta = 0) jumps from t to
any earlier t_prev through the predicted clean image; DDPM ancestral sampling draws x_prev
from the Gaussian posterior q(x_prev | x_t, x_0) with fresh noise. Classifier-free guidance
is Lesson 05's u + s (c - u), on the predicted noise instead of logits.

The layout matches `diffusers` (DDPMScheduler / DDIMScheduler), which tests/test_diffusion.py
uses as the reference in float64: the schedules ("linear", and "cosine" = diffusers'
"squaredcos_cap_v2"), `add_noise`, the posterior, one step of each sampler, and the
"trailing" timesteps (the first step starts at t = T - 1, pure noise).

    DiffusionModel    noise predictor eps(x_t, t, label), a small U-Net, labels 0..9 + null
    DiffusionDecoder  the same U-Net conditioned on a tokenizer's G x G token grid: the
                      "hybrid" renderer of tokens an AR prior drew (Lesson 08, section 7)
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minitok import validate
from minitok.checkpoints import Checkpointable
from minitok.sampling import cfg_logits, drop_labels
from minitok.training import train_loop

BETA_SCHEDULES = ("linear", "cosine")
SAMPLERS = ("ddim", "ddpm")

# --------------------------------------------------------------------------- the noise schedule


def make_betas(beta_schedule: str, timesteps: int, beta_start: float = 1e-4,
               beta_end: float = 0.02) -> Tensor:
    """The noise added at each of `timesteps` forward steps: betas (T,), float64.

    linear  beta_start .. beta_end evenly (DDPM's 1e-4 .. 0.02 for T = 1000)
    cosine  chosen so that abar_t = f(t + 1) / f(0) with f(u) = cos((u / T + 0.008) / 1.008
            pi / 2)^2, each beta capped at 0.999 (Nichol & Dhariwal 2021; diffusers'
            "squaredcos_cap_v2"): it destroys the signal more gently early on, which suits
            small images, where a linear schedule leaves little signal after mid-way.
    """
    validate.one_of(beta_schedule, "beta_schedule", BETA_SCHEDULES)
    validate.positive_int(timesteps, "timesteps")
    # each step adds some noise and keeps some signal: 0 < beta < 1 (beta = 0 makes the
    # first step's 1 - abar zero, a division by 0 in the samplers)
    validate.number(beta_start, "beta_start", low=0, high=1, low_open=True, high_open=True)
    validate.number(beta_end, "beta_end", low=0, high=1, low_open=True, high_open=True)
    if beta_start > beta_end:
        raise ValueError(f"beta_start must be at most beta_end (the noise grows with t), got "
                         f"{beta_start} > {beta_end}")
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)

    def f(u: float) -> float:
        return math.cos((u / timesteps + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - f(i + 1) / f(i), 0.999) for i in range(timesteps)]
    return torch.tensor(betas, dtype=torch.float64)


def alphas_cumprod_of(betas: Tensor) -> Tensor:
    """abar_t = prod_{s <= t} (1 - beta_s): (T,) float64, from 1 - beta_0 down to nearly 0."""
    validate.float_tensor(betas, "betas", dim=1, finite=True)
    if not bool(((betas > 0) & (betas < 1)).all()):  # once, when a schedule is built
        raise ValueError(f"betas must lie in (0, 1), got values in [{betas.min().item():.3g}, "
                         f"{betas.max().item():.3g}]")
    return torch.cumprod(1 - betas.double(), dim=0)


def sampling_timesteps(steps: int, timesteps: int = 1000) -> list[int]:
    """The `steps` timesteps a sampler visits, from the noisiest down: "trailing" spacing.

    T / steps apart, ending at T / steps - 1, and always starting at T - 1 (pure noise):
    steps = 10, T = 1000 gives [999, 899, ..., 99]. (diffusers' "trailing"; its default
    "leading" spacing, [900, 800, ..., 0], never starts from the noisiest step.)
    """
    validate.positive_int(steps, "steps")
    validate.positive_int(timesteps, "timesteps")
    if steps > timesteps:
        raise ValueError(f"steps must be at most timesteps = {timesteps}, got {steps}")
    ratio = timesteps / steps
    ts = torch.round(torch.arange(timesteps, 0, -ratio, dtype=torch.float64)).long() - 1
    return ts.tolist()


def abar_at(alphas_cumprod: Tensor, t: int) -> Tensor:
    """alphas_cumprod[t], and 1 at t = -1 (the clean image: no noise at all)."""
    T = alphas_cumprod.shape[0]
    if not -1 <= t < T:  # alphas_cumprod[-2] would silently read the second-to-last step
        raise ValueError(f"t must lie in [-1, {T - 1}] (-1: the clean image), got {t}")
    return alphas_cumprod[t] if t >= 0 else torch.ones((), dtype=alphas_cumprod.dtype,
                                                       device=alphas_cumprod.device)


def check_schedule(alphas_cumprod) -> Tensor:
    """Refuse a schedule that is not a (T,) floating-point tensor."""
    return validate.float_tensor(alphas_cumprod, "alphas_cumprod", dim=1)


def check_step(x_t, eps, t, t_prev, alphas_cumprod, names: str = "x_t and eps"
               ) -> tuple[int, int]:
    """Refuse a sampler step's arguments unless x_t and eps are tensors of one shape and
    -1 <= t_prev < t < T (ints, or one-element integer tensors); returns them as ints.
    `names`: the two tensors' names (posterior_mean_variance's are x_t and x0)."""
    first, second = names.split(" and ")
    validate.same_shape(validate.float_tensor(x_t, first), validate.float_tensor(eps, second),
                        names)
    T = check_schedule(alphas_cumprod).shape[0]
    try:
        t, t_prev = operator.index(t), operator.index(t_prev)
    except TypeError as err:
        raise TypeError(f"t and t_prev must be ints, got {t!r} and {t_prev!r}") from err
    if not 0 <= t < T:
        raise ValueError(f"t must lie in [0, {T - 1}] (the schedule's T = {T}), got {t}")
    if not -1 <= t_prev < t:
        raise ValueError(f"t_prev must be an earlier step than t = {t}, in [-1, {t - 1}] "
                         f"(-1: the clean image), got {t_prev}")
    return t, t_prev


# --------------------------------------------------------------------------- the forward process


def add_noise(x0: Tensor, noise: Tensor, t: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """Noise clean images to step t in one jump: sqrt(abar_t) x0 + sqrt(1 - abar_t) noise.

    x0, noise: (B, C, H, W); t: (B,) int64 in [0, T); alphas_cumprod: (T,). Returns x_t
    (B, C, H, W) in x0's dtype: each image keeps sqrt(abar_t) of its signal and gets noise
    of variance 1 - abar_t, so a unit-variance input stays unit-variance.
    """
    validate.same_shape(validate.float_tensor(x0, "x0", dim=4),
                        validate.float_tensor(noise, "noise"), "x0 and noise")
    validate.index_tensor(t, "t", check_schedule(alphas_cumprod).shape[0], dim=1)
    if t.shape[0] != x0.shape[0]:
        raise ValueError(f"t must hold one step per image ({x0.shape[0]}), got {t.shape[0]}")
    abar = alphas_cumprod.to(x0.device, x0.dtype)[t].view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def diffusion_loss(model, x0: Tensor, labels: Tensor, alphas_cumprod: Tensor,
                   generator: torch.Generator | None = None) -> Tensor:
    """The training objective: noise each image to a random step, predict the noise (MSE).

    For each image draw t uniformly in [0, T) and eps ~ N(0, I) (from `generator`), make
    x_t = add_noise(x0, eps, t), and return mean((model(x_t, t, labels) - eps)^2). The
    target is the noise, not the clean image: the sampler reads the model's output as eps.
    """
    if not callable(model):
        raise TypeError(f"model must be a noise predictor model(x_t, t, labels), got "
                        f"{type(model).__name__}")
    validate.float_tensor(x0, "x0", dim=4)
    check_schedule(alphas_cumprod)
    validate.generator(generator)
    if isinstance(model, DiffusionModel):  # any noise predictor will do; ours knows its sizes
        model.check_images(x0, "x0")
        model.check_timesteps(alphas_cumprod)
    B, T = x0.shape[0], alphas_cumprod.shape[0]
    where = generator.device if generator is not None else "cpu"
    t = torch.randint(0, T, (B,), generator=generator, device=where).to(x0.device)  # (B,)
    noise = torch.randn(x0.shape, generator=generator, device=where).to(x0.device, x0.dtype)
    x_t = add_noise(x0, noise, t, alphas_cumprod)
    return F.mse_loss(model(x_t, t, labels), noise)


def predict_x0(x_t: Tensor, eps: Tensor, abar_t: Tensor) -> Tensor:
    """The clean image the predicted noise implies: add_noise solved for x0."""
    return (x_t - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()


def posterior_mean_variance(x0: Tensor, x_t: Tensor, t: int, t_prev: int,
                            alphas_cumprod: Tensor) -> tuple[Tensor, Tensor]:
    """q(x_prev | x_t, x0): the Gaussian a DDPM step samples from, as (mean, variance).

    With a = abar_t / abar_prev (the signal kept from t_prev to t) and b = 1 - a:
      mean     = sqrt(abar_prev) b / (1 - abar_t) x0 + sqrt(a) (1 - abar_prev) / (1 - abar_t) x_t
      variance = (1 - abar_prev) / (1 - abar_t) b   (at least 1e-20, as diffusers clamps it)
    t_prev may skip steps (strided sampling) or be -1 (the clean image: variance 0).
    """
    t, t_prev = check_step(x_t, x0, t, t_prev, alphas_cumprod, "x_t and x0")
    abar_t = abar_at(alphas_cumprod, t).to(x_t.dtype)
    abar_prev = abar_at(alphas_cumprod, t_prev).to(x_t.dtype)
    a = abar_t / abar_prev
    b = 1 - a
    mean = (abar_prev.sqrt() * b / (1 - abar_t)) * x0 + (a.sqrt() * (1 - abar_prev)
                                                         / (1 - abar_t)) * x_t
    variance = ((1 - abar_prev) / (1 - abar_t) * b).clamp(min=1e-20)
    return mean, variance


# --------------------------------------------------------------------------- sampler steps


def ddim_step(x_t: Tensor, eps: Tensor, t: int, t_prev: int, alphas_cumprod: Tensor,
              generator: torch.Generator | None = None, clip: bool = True) -> Tensor:
    """One deterministic DDIM step (eta = 0) from step t to step t_prev < t (-1: clean).

    Read the clean image off the predicted noise (clipped to the data range [-1, 1]), then
    noise it again to t_prev with the same noise: x_prev = sqrt(abar_prev) x0 +
    sqrt(1 - abar_prev) eps. `generator` is unused (DDIM draws nothing); it is there so
    that both samplers' steps take the same arguments.
    """
    t, t_prev = check_step(x_t, eps, t, t_prev, alphas_cumprod)
    validate.flag(clip, "clip")
    abar_t = abar_at(alphas_cumprod, t).to(x_t.dtype)
    abar_prev = abar_at(alphas_cumprod, t_prev).to(x_t.dtype)
    x0 = predict_x0(x_t, eps, abar_t)
    if clip:
        x0 = x0.clamp(-1, 1)
    return abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps


def ddpm_step(x_t: Tensor, eps: Tensor, t: int, t_prev: int, alphas_cumprod: Tensor,
              generator: torch.Generator | None = None, clip: bool = True) -> Tensor:
    """One ancestral DDPM step: x_prev ~ q(x_prev | x_t, x0), x0 read off the predicted noise.

    mean + sqrt(variance) z with z ~ N(0, I) drawn from `generator`; no noise at the step
    t = 0 (diffusers' rule; for t_prev = -1 the variance is 0 anyway).
    """
    t, t_prev = check_step(x_t, eps, t, t_prev, alphas_cumprod)
    validate.generator(generator)
    validate.flag(clip, "clip")
    abar_t = abar_at(alphas_cumprod, t).to(x_t.dtype)
    x0 = predict_x0(x_t, eps, abar_t)
    if clip:
        x0 = x0.clamp(-1, 1)
    mean, variance = posterior_mean_variance(x0, x_t, t, t_prev, alphas_cumprod)
    if t == 0:
        return mean
    where = generator.device if generator is not None else "cpu"
    z = torch.randn(x_t.shape, generator=generator, device=where, dtype=eps.dtype)  # as diffusers
    return mean + variance.sqrt() * z.to(x_t.device)


# --------------------------------------------------------------------------- the sampling loop


def sample_loop(model, labels: Tensor, alphas_cumprod: Tensor, steps: int,
                cfg_scale: float = 1.0, generator: torch.Generator | None = None,
                step=None) -> Tensor:
    """Draw one image per label: pure noise, then `steps` denoising steps. (B, C, S, S).

    labels: (B,) class labels (or, for a DiffusionDecoder, (B, G, G) token grids).
    `model(x, t, labels)` predicts the noise, t a (B,) int64 tensor; `model.image_shape` is
    (C, S, S) and `model.null_class` the "no condition" label. The timesteps are
    `sampling_timesteps(steps, T)`; each step goes to the next one, the last to -1. With
    cfg_scale != 1 every pass runs the doubled batch [labels; null] and combines the two
    predicted noises as u + s (c - u). `step` is the sampler step (default `ddim_step`).
    Noise is drawn from `generator` (on the CPU, or on the generator's device), in the
    dtype of alphas_cumprod, which is the dtype the loop computes in.
    """
    validate.tensor(labels, "labels")
    check_schedule(alphas_cumprod)
    validate.number(cfg_scale, "cfg_scale", low=0)
    validate.generator(generator)
    if isinstance(model, DiffusionModel):  # any noise predictor will do; ours knows its sizes
        model.check_condition(labels)
        model.check_timesteps(alphas_cumprod)
    step = ddim_step if step is None else step
    if not callable(step):
        raise TypeError(f"step must be a sampler step such as ddim_step or ddpm_step, got "
                        f"{step!r}")
    B = labels.shape[0]
    device = alphas_cumprod.device
    where = generator.device if generator is not None else "cpu"
    x = torch.randn((B, *model.image_shape), generator=generator, device=where,
                    dtype=alphas_cumprod.dtype).to(device)  # (B, C, S, S): pure noise
    timesteps = sampling_timesteps(steps, alphas_cumprod.shape[0])
    if cfg_scale != 1.0:
        null = torch.full_like(labels, model.null_class)
        both = torch.cat([labels, null])  # (2B, ...)
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        t_batch = torch.full((B,), t, dtype=torch.long, device=device)
        if cfg_scale == 1.0:
            eps = model(x, t_batch, labels)
        else:
            cond, uncond = model(torch.cat([x, x]), torch.cat([t_batch, t_batch]), both).chunk(2)
            eps = cfg_logits(cond, uncond, cfg_scale)  # Lesson 05's u + s (c - u), on the noise
        x = step(x, eps, t, t_prev, alphas_cumprod, generator)
    return x


@torch.no_grad()
def sample(model, labels: Tensor, steps: int = 20, sampler: str = "ddim", cfg_scale: float = 1.0,
           generator: torch.Generator | None = None, loop=sample_loop) -> Tensor:
    """Images (B, C, S, S) in [-1, 1] for `labels`, in `steps` forward passes (a doubled batch
    with guidance): the public sampler of a DiffusionModel or a DiffusionDecoder.

    sampler: "ddim" (deterministic given the starting noise) or "ddpm" (ancestral, fresh
    noise every step). cfg_scale: classifier-free guidance on the predicted noise, 1 = none,
    0 = the unconditional model. The output is clamped to [-1, 1].
    loop: the loop that runs the steps, called as `sample_loop` is (a learner's loop: Lesson
    08's race); for "ddim" it gets step=None, so it steps with its own `ddim_step`.
    """
    validate.instance(model, "model", DiffusionModel)  # a DiffusionDecoder is one too
    validate.one_of(sampler, "sampler", SAMPLERS)
    validate.positive_int(steps, "steps")
    validate.number(cfg_scale, "cfg_scale", low=0)
    validate.generator(generator)
    labels = model.check_condition(labels)
    was_training = model.training
    model.eval()
    try:
        step = None if sampler == "ddim" else ddpm_step  # None: the loop's own ddim_step
        ac = model.alphas_cumprod.to(model.device, torch.float32)  # the model's dtype
        x = loop(model, labels.to(model.device), ac, steps, cfg_scale, generator, step)
    finally:
        model.train(was_training)
    return x.float().clamp(-1, 1)


# --------------------------------------------------------------------------- the network


@dataclass(frozen=True)
class DiffusionConfig:
    """A diffusion model's images, conditioning, U-Net width and noise schedule.

    num_classes: class labels 0 .. num_classes-1 (num_classes itself is the null class).
    num_codes: 0 for a class-conditional model; K for a DiffusionDecoder, conditioned on a
    grid_size x grid_size grid of K codes (K itself is the null code), each embedded in
    code_dim channels. channels: the U-Net's width at full resolution, inner_channels at
    1/2 and 1/4. timesteps: T, with the named beta_schedule.
    """

    image_size: int = 16
    in_channels: int = 1
    num_classes: int = 10
    num_codes: int = 0
    grid_size: int = 8
    code_dim: int = 8
    channels: int = 16
    inner_channels: int = 32
    emb_dim: int = 64
    timesteps: int = 1000
    beta_schedule: str = "cosine"

    def __post_init__(self):
        for name in ("image_size", "in_channels", "num_classes", "grid_size", "code_dim",
                     "channels", "inner_channels", "emb_dim", "timesteps"):
            validate.positive_int(getattr(self, name), name)
        validate.non_negative_int(self.num_codes, "num_codes")
        validate.one_of(self.beta_schedule, "beta_schedule", BETA_SCHEDULES)
        if self.image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 (the U-Net halves it twice), "
                             f"got {self.image_size}")
        if self.emb_dim % 2:
            raise ValueError(f"emb_dim must be even (half sines, half cosines), got "
                             f"{self.emb_dim}")
        for name in ("channels", "inner_channels"):
            if getattr(self, name) % 8:
                raise ValueError(f"{name} must be a multiple of 8 (GroupNorm's 8 groups), got "
                                 f"{getattr(self, name)}")


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal features of the timesteps, as a transformer embeds positions: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device) / half)  # (half,)
    angles = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([angles.sin(), angles.cos()], dim=1)  # (B, dim)


class ResBlock(nn.Module):
    """Two 3 x 3 convolutions; the timestep (and condition) embedding scales and shifts each
    channel in between, after the normalisation (ADM's `use_scale_shift_norm`, Dhariwal &
    Nichol 2021). Added before it, a per-channel constant would be taken out again by the
    GroupNorm, which subtracts each group's mean: the condition would never reach the output."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)  # a scale and a shift per channel
        self.norm2 = nn.GroupNorm(8, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # (B, in, H, W), (B, E)
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out, H, W)
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)  # (B, out, 1, 1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


class UNet(nn.Module):
    """(B, C_in, S, S), embedding (B, E) -> (B, C_out, S, S), at S, S/2 and S/4, with skips."""

    def __init__(self, in_ch: int, out_ch: int, ch: int, inner: int, emb_dim: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_ch, ch, 3, padding=1)
        self.down1 = ResBlock(ch, ch, emb_dim)  # S
        self.pool1 = nn.Conv2d(ch, ch, 3, stride=2, padding=1)  # S -> S/2
        self.down2 = ResBlock(ch, inner, emb_dim)  # S/2
        self.pool2 = nn.Conv2d(inner, inner, 3, stride=2, padding=1)  # S/2 -> S/4
        self.mid = ResBlock(inner, inner, emb_dim)  # S/4
        self.up2 = ResBlock(2 * inner, inner, emb_dim)  # S/2, with the skip from down2
        self.up1 = ResBlock(inner + ch, ch, emb_dim)  # S, with the skip from down1
        self.norm_out = nn.GroupNorm(8, ch)
        self.conv_out = nn.Conv2d(ch, out_ch, 3, padding=1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h1 = self.down1(self.conv_in(x), emb)  # (B, ch, S, S)
        h2 = self.down2(self.pool1(h1), emb)  # (B, inner, S/2, S/2)
        h = self.mid(self.pool2(h2), emb)  # (B, inner, S/4, S/4)
        h = F.interpolate(h, scale_factor=2.0, mode="nearest")  # (B, inner, S/2, S/2)
        h = self.up2(torch.cat([h, h2], dim=1), emb)
        h = F.interpolate(h, scale_factor=2.0, mode="nearest")  # (B, inner, S, S)
        h = self.up1(torch.cat([h, h1], dim=1), emb)  # (B, ch, S, S)
        return self.conv_out(F.silu(self.norm_out(h)))


class DiffusionModel(Checkpointable):
    """The noise predictor eps(x_t, t, label) of a class-conditional diffusion model.

    forward(x_t (B, C, S, S), t (B,) int64, labels (B,) with num_classes = null) -> (B, C, S, S).
    The timestep and the class enter as one embedding, which scales and shifts the
    normalised channels inside every residual block.
    """

    kind = "diffusion"
    config_class = DiffusionConfig

    def __init__(self, config: DiffusionConfig | None = None):
        config = DiffusionConfig() if config is None else config
        super().__init__(config)  # checks it: self.config
        E = config.emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(E, E), nn.SiLU(), nn.Linear(E, E))
        self.class_emb = nn.Embedding(config.num_classes + 1, E)  # + the null class
        self.unet = UNet(config.in_channels + self._cond_channels(), config.in_channels,
                         config.channels, config.inner_channels, E)
        betas = make_betas(config.beta_schedule, config.timesteps)
        self.register_buffer("alphas_cumprod", alphas_cumprod_of(betas), persistent=False)

    def _cond_channels(self) -> int:
        return 0

    @property
    def null_class(self) -> int:
        """The label meaning "no class" (classifier-free guidance's unconditional half)."""
        return self.config.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, s = self.config.in_channels, self.config.image_size
        return (c, s, s)

    @property
    def device(self) -> torch.device:
        return self.unet.conv_out.weight.device

    def check_condition(self, labels) -> Tensor:
        """Refuse labels that are not (B,) class ids in [0, num_classes]."""
        labels = torch.as_tensor(labels)
        return validate.index_tensor(labels, "labels", self.config.num_classes + 1, dim=1)

    def check_images(self, x, name: str = "x") -> Tensor:
        """Refuse images that are not (B, C, S, S) floats of the config's size."""
        validate.float_tensor(x, name, dim=4)
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"{name} must be (B, {', '.join(map(str, self.image_shape))}) "
                             f"images, the config's size, got shape {tuple(x.shape)}")
        return x

    def check_timesteps(self, alphas_cumprod: Tensor) -> None:
        """Refuse a schedule of another length than the T the model was built for."""
        if alphas_cumprod.shape[0] != self.config.timesteps:
            raise ValueError(f"alphas_cumprod must have the model's T = {self.config.timesteps} "
                             f"entries, got {alphas_cumprod.shape[0]}")

    def check_inputs(self, x, t, condition) -> None:
        """forward's arguments: images of the config's size, one int64 step in [0, T) and one
        condition per image (refused with an error naming the argument)."""
        self.check_images(x)
        validate.index_tensor(t, "t", self.config.timesteps, dim=1)
        condition = self.check_condition(condition)
        if not x.shape[0] == t.shape[0] == condition.shape[0]:
            raise ValueError(f"x, t and the condition must hold one entry per image, got "
                             f"{x.shape[0]}, {t.shape[0]} and {condition.shape[0]}")

    def embed(self, t: Tensor, labels: Tensor) -> Tensor:
        """The timestep's and the class's embedding, summed: (B, E)."""
        return self.time_mlp(timestep_embedding(t, self.config.emb_dim)) + self.class_emb(labels)

    def forward(self, x: Tensor, t: Tensor, labels: Tensor) -> Tensor:
        self.check_inputs(x, t, labels)
        return self.unet(x, self.embed(t, labels))


class DiffusionDecoder(DiffusionModel):
    """A diffusion model that renders a tokenizer's token grid: eps(x_t, t, grid).

    forward(x_t (B, C, S, S), t (B,), grids (B, G, G) ids in [0, K], K = null) -> (B, C, S, S).
    Each token is embedded in code_dim channels and the (B, code_dim, G, G) map is stretched
    to the image's size and read alongside x_t: the network sees which code sits under
    every pixel, and learns the pixels real digits have under such codes.
    """

    kind = "diffusion_decoder"

    def __init__(self, config: DiffusionConfig):
        config = validate.instance(config, "config", DiffusionConfig)
        if config.num_codes < 1:
            raise ValueError("config.num_codes must be the tokenizer's K >= 1 for a decoder")
        super().__init__(config)
        self.code_emb = nn.Embedding(config.num_codes + 1, config.code_dim)  # + the null code

    def _cond_channels(self) -> int:
        return self.config.code_dim

    @property
    def null_class(self) -> int:
        """The code meaning "no token": a grid of it is the unconditional input."""
        return self.config.num_codes

    def check_condition(self, grids) -> Tensor:
        """Refuse token grids that are not (B, G, G) ids in [0, K]."""
        g = self.config.grid_size
        grids = validate.index_tensor(grids, "grids", self.config.num_codes + 1, dim=3)
        if grids.shape[1:] != (g, g):
            raise ValueError(f"grids must be (B, {g}, {g}), got shape {tuple(grids.shape)}")
        return grids.long()

    def forward(self, x: Tensor, t: Tensor, grids: Tensor) -> Tensor:
        self.check_inputs(x, t, grids)
        codes = self.code_emb(grids).permute(0, 3, 1, 2)  # (B, code_dim, G, G)
        codes = F.interpolate(codes, size=x.shape[-2:], mode="nearest")  # (B, code_dim, S, S)
        emb = self.time_mlp(timestep_embedding(t, self.config.emb_dim))  # (B, E)
        return self.unet(torch.cat([x, codes], dim=1), emb)


# --------------------------------------------------------------------------- training


def train_diffusion(model: DiffusionModel, images: Tensor, conditions: Tensor, steps: int,
                    batch_size: int = 64, lr: float = 2e-3, p_uncond: float = 0.1,
                    ema_decay: float = 0.999, seed: int = 0, progress: bool = True
                    ) -> list[float]:
    """Train on images (N, C, S, S) in [-1, 1] and their conditions; returns each step's loss.

    conditions: labels (N,) for a DiffusionModel, token grids (N, G, G) for a decoder. Each
    mini-batch drops its conditions to the null one with probability p_uncond (for
    guidance), then takes `diffusion_loss`. AdamW with `training.train_loop`'s schedule and
    clipping at 1, as the token models (`training.fit`); in addition the weights that are
    kept are an exponential moving average of the trained ones (decay `ema_decay`, 0 = none),
    the usual practice for diffusion models, whose raw weights jitter from batch to batch.
    The model is left in eval mode holding the averaged weights.
    """
    validate.instance(model, "model", DiffusionModel)
    model.check_images(images, "images")
    model.check_condition(conditions)
    validate.positive_int(batch_size, "batch_size")
    validate.non_negative_int(seed, "seed")
    validate.flag(progress, "progress")
    validate.number(lr, "lr", low=0, low_open=True)
    validate.number(p_uncond, "p_uncond", low=0, high=1)
    if conditions.shape[0] != images.shape[0]:
        raise ValueError(f"conditions must hold one entry per image ({images.shape[0]}), got "
                         f"{conditions.shape[0]}")
    validate.number(ema_decay, "ema_decay", low=0, high=1, high_open=True)
    low, high = torch.stack(torch.aminmax(images)).tolist()  # once: 0..255 pixels, or NaN
    if not -1 <= low <= high <= 1:
        raise ValueError(f"images must lie in [-1, 1] (as data.load_digits gives them), got "
                         f"values in [{low:.3g}, {high:.3g}]")
    device = model.device
    images, conditions = images.to(device), conditions.to(device).long()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    ema = [p.detach().clone() for p in model.parameters()]
    ac = model.alphas_cumprod

    def step_fn(step: int) -> dict[str, float]:
        rows = torch.randint(0, images.shape[0], (batch_size,), generator=generator).to(device)
        kept = conditions[rows]
        flat = drop_labels(torch.zeros(batch_size, dtype=torch.long, device=device), p_uncond,
                           1, generator).bool()  # (B,) True where the condition is dropped
        kept = kept.masked_fill(flat.view(-1, *([1] * (kept.dim() - 1))), model.null_class)
        loss = diffusion_loss(model, images[rows], kept, ac, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            for average, p in zip(ema, model.parameters(), strict=True):
                average.lerp_(p, 1 - ema_decay)
        return {"loss": loss.item()}

    model.train()
    history = train_loop(step_fn, steps, [optimizer], desc=model.kind, progress=progress)
    with torch.no_grad():
        for average, p in zip(ema, model.parameters(), strict=True):
            p.copy_(average)
    model.eval()
    return history["loss"]


@torch.no_grad()
def render(decoder: DiffusionDecoder, grids: Tensor, steps: int = 20, sampler: str = "ddim",
           cfg_scale: float = 1.0, generator: torch.Generator | None = None,
           loop=sample_loop) -> Tensor:
    """Token grids (B, G, G) -> images (B, C, S, S) drawn by a DiffusionDecoder: `sample`
    with the grids as the condition (the hybrid's decoder, in place of the VQ decoder)."""
    validate.instance(decoder, "decoder", DiffusionDecoder)
    return sample(decoder, grids, steps, sampler, cfg_scale, generator, loop)
