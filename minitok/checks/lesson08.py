"""Checks for Lesson 08: forward noising, the noise-prediction loss, a DDIM step, the sampling loop.

Each check runs the learner's function on small seeded cases, in the order that makes the
first failure name the likely mistake: the wrong alpha-bar index (t - 1 or t + 1 instead of
t; t - 1 instead of the step the sampler jumps to; alphas_cumprod[-1] for "clean"), a missing
square root, signal and noise swapped, a loss that targets the clean image x0 (or the noisy
x_t) instead of the noise, timesteps that skip the last one, a sampling loop that runs the
timesteps the wrong way or skips the last step, and guidance in the wrong direction.

The loss and the loop are judged with stand-in models that record what they are shown, so
the check can recompute, from what the learner's code actually drew, what it should have
returned; the checks do not depend on the order in which random numbers are drawn.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minitok import diffusion
from minitok.checks import expect, expect_close, expect_shape, expect_tensor
from minitok.checks._core import CheckFailed, exercise, show_hint

T = 50  # a short schedule: every index mistake moves the answer visibly


def _schedule() -> torch.Tensor:
    return diffusion.alphas_cumprod_of(diffusion.make_betas("cosine", T))  # (T,) float64


def _matches(got: torch.Tensor, candidate) -> bool:
    try:
        expected = candidate()
    except (IndexError, RuntimeError):  # the wrong formula itself cannot run here
        return False
    return got.shape == expected.shape and torch.allclose(got.double(), expected.double(),
                                                          rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------- add_noise

INDEX_T = (
    "the wrong alpha-bar index: x_t uses alphas_cumprod[t], the product of (1 - beta_s) for "
    "s = 0 .. t (step t's own noise included); not t - 1, not t + 1."
)
MISSING_SQRT = (
    "a missing square root: the coefficients are sqrt(abar_t) and sqrt(1 - abar_t), so that "
    "the variances, abar_t and 1 - abar_t, add up to 1."
)
SWAPPED = (
    "signal and noise are swapped: the image keeps sqrt(abar_t) (nearly 1 at t = 0) and the "
    "noise gets sqrt(1 - abar_t)."
)
BROADCAST = (
    "alphas_cumprod[t] is (B,): reshape it to (B, 1, 1, 1) so that each image gets its own "
    "step's value."
)


def _noise_variants(x0, noise, t, ac):
    """Each classic mistake of add_noise, by name."""

    def mix(a_signal, a_noise):
        return a_signal.view(-1, 1, 1, 1) * x0 + a_noise.view(-1, 1, 1, 1) * noise

    return {
        INDEX_T: [lambda: mix(ac[t - 1].sqrt(), (1 - ac[t - 1]).sqrt()),
                  lambda: mix(ac[t + 1].sqrt(), (1 - ac[t + 1]).sqrt())],
        MISSING_SQRT: [lambda: mix(ac[t], (1 - ac[t]).sqrt()),
                       lambda: mix(ac[t].sqrt(), 1 - ac[t]),
                       lambda: mix(ac[t], 1 - ac[t])],
        SWAPPED: [lambda: mix((1 - ac[t]).sqrt(), ac[t].sqrt())],
    }


ADD_NOISE_HINTS = (
    "The forward process has a closed form: x_t is a weighted sum of the clean image and the "
    "noise, with weights that depend only on the cumulative product abar_t at each image's "
    "own step t.",
    "The weights keep the variance at 1: the signal's weight squared plus the noise's weight "
    "squared equals 1. abar_t is a variance fraction, so each weight is a square root. abar is "
    "(T,) and t is (B,): index it per image and give it the shape (B, 1, 1, 1).",
    "abar = alphas_cumprod.to(x0.device, x0.dtype)[____].view(-1, 1, 1, 1)  # (B, 1, 1, 1)\n"
    "return ____ * x0 + ____ * noise   # the two weights: squares add up to 1",
)


@exercise("add_noise", reference=diffusion.add_noise, hints=ADD_NOISE_HINTS)
def add_noise(fn):
    g = torch.Generator().manual_seed(8)
    ac = _schedule()
    x0 = torch.rand(4, 2, 3, 5, generator=g, dtype=torch.float64) * 2 - 1  # (B, C, H, W)
    noise = torch.randn(4, 2, 3, 5, generator=g, dtype=torch.float64)
    before = (x0.clone(), noise.clone())
    t = torch.tensor([1, 17, 33, 48])  # away from the ends: t - 1 and t + 1 both exist
    expected = diffusion.add_noise(x0, noise, t, ac)
    try:
        got = fn(x0, noise, t, ac)
    except RuntimeError as err:  # (B,) against (B, C, H, W) broadcasts along W, and fails
        if "must match the size" not in str(err):
            raise
        raise CheckFailed(f"your code raised RuntimeError: {err}", BROADCAST) from err
    expect(torch.equal(x0, before[0]) and torch.equal(noise, before[1]),
           "x0 or noise was changed in place", hint="return a new tensor; leave the inputs alone.")
    expect_tensor(got, "x_t")
    expect_shape(got, (4, 2, 3, 5), "x_t", hint=BROADCAST)
    x0, noise = before
    expect(got.dtype == torch.float64, f"float64 inputs gave {got.dtype}",
           hint="compute in x0's dtype (alphas_cumprod.to(x0.dtype)); do not round to float32.")
    if not torch.allclose(got.double(), expected, rtol=1e-6, atol=1e-8):
        for hint, candidates in _noise_variants(x0, noise, t, ac).items():
            if any(_matches(got, c) for c in candidates):
                raise CheckFailed("x_t is not sqrt(abar_t) x0 + sqrt(1 - abar_t) noise", hint)
    if not torch.allclose(got.double(), expected, atol=1e-8, rtol=1e-6) and torch.allclose(
            got.double(), expected, atol=1e-5):
        raise CheckFailed("x_t is right only to float32 precision (about 1e-7) on float64 "
                          "inputs", "compute in x0's dtype (alphas_cumprod.to(x0.dtype)); do "
                          "not round anything to float32.")
    expect_close(got, expected, "x_t for t = [1, 17, 33, 48]", atol=1e-8, rtol=1e-6,
                 hint="x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, abar_t = alphas_cumprod[t].")

    # The ends of the schedule, and a float32 batch with one image per timestep.
    t = torch.tensor([0, 49, 0, 49])
    expect_close(fn(x0, noise, t, ac), diffusion.add_noise(x0, noise, t, ac),
                 "x_t at t = 0 and t = T - 1", atol=1e-8, rtol=1e-6, hint=INDEX_T)
    x0f = torch.rand(T, 1, 4, 4, generator=g) * 2 - 1
    noisef = torch.randn(T, 1, 4, 4, generator=g)
    every = torch.arange(T).flip(0)
    got = fn(x0f, noisef, every, ac)
    expect_close(got, diffusion.add_noise(x0f, noisef, every, ac), "x_t for every t at once",
                 atol=1e-5, hint=BROADCAST)
    expect(got.dtype == torch.float32, f"float32 images gave {got.dtype}",
           hint="return x_t in x0's dtype: cast alphas_cumprod, not the images.")
    return "every step of a 50-step schedule, its ends, float64 and float32, inputs untouched"


# --------------------------------------------------------------------------- diffusion_loss

TARGETS_X0 = (
    "the loss compares the model's output with the clean image x0: this model predicts the "
    "NOISE you added (the sampler reads its output as eps), so the target is that noise."
)
TARGETS_XT = "the target is the noise you added, not the noisy image x_t."
RANDINT_HIGH = (
    "t never reaches T - 1: torch.randint's upper bound is exclusive, so draw "
    "torch.randint(0, T, (B,)) for t in 0 .. T - 1."
)
ONE_T = "draw one t per image (B of them), not one t for the whole batch."


class _SpyNoiseModel:
    """A stand-in noise predictor: a fixed function of its inputs; records every call."""

    def __init__(self):
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def __call__(self, x, t, labels):
        self.calls.append((x.detach().clone(), t.detach().clone(), labels.detach().clone()))
        return 0.5 * x + 0.01 * labels.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)


def _loss_call(fn, x0, labels, ac, seed):
    model = _SpyNoiseModel()
    loss = fn(model, x0, labels, ac, torch.Generator().manual_seed(seed))
    expect_tensor(loss, "the loss")
    expect_shape(loss, (), "the loss (a scalar)")
    expect(len(model.calls) == 1, f"the model was called {len(model.calls)} times",
           hint="one forward pass: model(x_t, t, labels) on the whole batch.")
    return model.calls[0], loss


DIFFUSION_LOSS_HINTS = (
    "One training example: pick a step t and a noise at random, noise the clean batch to t in "
    "one jump (your add_noise), and ask the model to say which noise was added.",
    "t is uniform over 0..T-1 (randint's upper bound is exclusive), one per image; noise is a "
    "standard normal of x0's shape; the loss is the mean squared error between "
    "model(x_t, t, labels) and the noise (not x0, not x_t). Every draw goes through generator.",
    "t = torch.randint(0, T, (B,), generator=generator)     # one step per image\n"
    "noise = ...                                            # x0's shape, from generator\n"
    "x_t = ...\n"
    "return ...                                             # how far the prediction is from "
    "the noise",
)


@exercise("diffusion_loss", reference=diffusion.diffusion_loss, hints=DIFFUSION_LOSS_HINTS)
def diffusion_loss(fn):
    g = torch.Generator().manual_seed(9)
    ac = _schedule()
    B = 600
    x0 = torch.rand(B, 1, 2, 3, generator=g, dtype=torch.float64) * 2 - 1
    labels = torch.randint(0, 10, (B,), generator=g)
    x0_before, labels_before = x0.clone(), labels.clone()
    (x_t, t, seen), loss = _loss_call(fn, x0, labels, ac, seed=0)
    expect(torch.equal(x0, x0_before) and torch.equal(labels, labels_before),
           "x0 or labels were changed in place", hint="leave the inputs alone.")
    expect_shape(x_t, tuple(x0.shape), "the image the model is shown")
    expect_tensor(t, "the timesteps the model is shown")
    expect(t.dtype == torch.int64 and t.shape == (B,), f"t has dtype {t.dtype}, shape "
           f"{tuple(t.shape)}", hint="t is a (B,) int64 tensor: one step per image.")
    expect(bool(((t >= 0) & (t < T)).all()), f"t holds values outside 0 .. {T - 1}",
           hint="draw t in 0 .. T - 1 with torch.randint(0, T, (B,)).")
    expect(t.unique().numel() > 1, "every image got the same t", hint=ONE_T)
    expect(torch.equal(seen, labels), "the model was not shown the labels it was given",
           hint="pass labels to the model unchanged (dropping them for guidance happens in "
           "training, before the loss).")

    # What noise did the learner's code add? Recover it from x_t and t, then judge the loss.
    abar = ac[t].view(-1, 1, 1, 1)
    noise = (x_t.double() - abar.sqrt() * x0) / (1 - abar).sqrt()
    output = 0.5 * x_t + 0.01 * labels.view(-1, 1, 1, 1).double()
    std = float(noise.std())
    mean = float(noise.mean())
    expect(abs(mean) < 0.1 and abs(std - 1) < 0.1,
           f"the noise hidden in x_t has mean {mean:.2f} and standard deviation {std:.2f}, "
           "expected about 0 and 1",
           hint="x_t must be add_noise(x0, noise, t, alphas_cumprod) with noise ~ N(0, I) "
           "(torch.randn, not torch.rand), drawn with the generator.")
    got = float(loss)
    if abs(got - float(F.mse_loss(output, x0))) < 1e-6:
        raise CheckFailed("the loss is the error of predicting x0", TARGETS_X0)
    if abs(got - float(F.mse_loss(output, x_t.double()))) < 1e-6:
        raise CheckFailed("the loss is the error of predicting x_t", TARGETS_XT)
    if abs(got - float(((output - noise) ** 2).sum())) < 1e-6 * B:
        raise CheckFailed("the loss is a sum", "average the squared error (F.mse_loss's mean).")
    expected = float(F.mse_loss(output, noise))
    expect(abs(got - expected) < 1e-6 * max(1.0, expected),
           f"loss {got:.6f}, but the mean squared error between the model's output and the "
           f"noise in x_t is {expected:.6f}",
           hint="mean((model(x_t, t, labels) - noise) ** 2) with the same noise that made x_t.")

    # Over many draws t covers 0 .. T - 1 evenly.
    many = torch.zeros(4000, 1, 1, 1, dtype=torch.float64)
    (_, t, _), _ = _loss_call(fn, many, torch.zeros(4000, dtype=torch.long), ac, seed=1)
    counts = torch.bincount(t, minlength=T)
    expect(int(counts[T - 1]) > 0, f"over 4000 draws t reached at most {int(t.max())}",
           hint=RANDINT_HIGH)
    expect(int(counts[0]) > 0, f"over 4000 draws t was never 0 (min {int(t.min())})",
           hint="t = 0 is a step too: draw t in 0 .. T - 1.")
    expect(int(counts.min()) > 40, "some timesteps are drawn far less often than others",
           hint="draw t uniformly: torch.randint(0, T, (B,), generator=generator).")

    # The generator is honoured, and nothing is changed in place.
    again = fn(_SpyNoiseModel(), x0, labels, ac, torch.Generator().manual_seed(0))
    expect(float(again) == float(loss), "two calls with the same seeded generator differ",
           hint="draw t and the noise from `generator`.")
    return "t uniform in 0 .. T - 1 per image, Gaussian noise, MSE against the noise, seeded"


# --------------------------------------------------------------------------- ddim_step

INDEX_PREV = (
    "the wrong alpha-bar index: x_t was noised with alphas_cumprod[t], and the sampler jumps "
    "from t to t_prev (here 40 -> 30), so x_prev uses alphas_cumprod[t_prev], not "
    "alphas_cumprod[t - 1]."
)
MINUS_ONE = (
    "t_prev = -1 means the clean image, whose abar is 1; alphas_cumprod[-1] is Python's LAST "
    "entry (the noisiest step), not 'before the first'."
)
NO_CLIP = (
    "with clip=True, clamp the predicted x0 to [-1, 1] (the data's range) before noising it "
    "again to t_prev; with clip=False, do not."
)
KEEP_EPS = (
    "the direction term is sqrt(1 - abar_prev) times the model's eps as given (as diffusers' "
    "default), not a noise recomputed from the clipped x0."
)
STEP_SQRT = (
    "a missing square root: x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) and x_prev = "
    "sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps."
)


def _ddim_variants(x_t, eps, t, t_prev, ac, clip):
    """Each classic mistake of ddim_step, by hint."""

    def step(a_t, a_prev, root=True, keep_eps=True, do_clip=clip):
        sq = (lambda v: v.sqrt()) if root else (lambda v: v)
        x0 = (x_t - sq(1 - a_t) * eps) / sq(a_t)
        if do_clip:
            x0 = x0.clamp(-1, 1)
        e = eps if keep_eps else (x_t - a_t.sqrt() * x0) / (1 - a_t).sqrt()
        return sq(a_prev) * x0 + sq(1 - a_prev) * e

    a_t = ac[t]
    a_prev = ac[t_prev] if t_prev >= 0 else torch.ones((), dtype=ac.dtype)
    return {
        INDEX_PREV: [lambda: step(a_t, ac[t - 1]), lambda: step(ac[t - 1], a_prev)],
        MINUS_ONE: [lambda: step(a_t, ac[t_prev])],  # Python's ac[-1]
        STEP_SQRT: [lambda: step(a_t, a_prev, root=False)],
        NO_CLIP: [lambda: step(a_t, a_prev, do_clip=not clip)],
        KEEP_EPS: [lambda: step(a_t, a_prev, keep_eps=False)],
    }


def _judge_step(fn, x_t, eps, t, t_prev, ac, clip, what):
    before = (x_t.clone(), eps.clone())
    got = fn(x_t, eps, t, t_prev, ac, None, clip)
    expect_tensor(got, what)
    expect_shape(got, tuple(x_t.shape), what)
    expect(torch.equal(x_t, before[0]) and torch.equal(eps, before[1]),
           "x_t or eps was changed in place", hint="return a new tensor.")
    expected = diffusion.ddim_step(x_t, eps, t, t_prev, ac, clip=clip)
    if not torch.allclose(got.double(), expected.double(), rtol=1e-6, atol=1e-8):
        for hint, candidates in _ddim_variants(x_t, eps, t, t_prev, ac, clip).items():
            if any(_matches(got, c) for c in candidates):
                raise CheckFailed(f"{what} differs from the DDIM step", hint)
        if torch.allclose(got.double(), expected.double(), atol=1e-5):
            raise CheckFailed(f"{what} is right only to float32 precision on float64 inputs",
                              "compute in x_t's dtype (alphas_cumprod.to(x_t.dtype)); do not "
                              "round anything to float32.")
    expect_close(got, expected, what, atol=1e-8, rtol=1e-6,
                 hint="x0 from x_t and eps (clamped when clip), then x_prev = sqrt(abar_prev) "
                 "x0 + sqrt(1 - abar_prev) eps.")


DDIM_STEP_HINTS = (
    "Two moves: from x_t and the predicted noise, estimate the clean image x0 (invert "
    "add_noise); then noise that estimate forward to t_prev with the same predicted noise.",
    "Solve x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps for x0; clip it to [-1, 1] when clip is "
    "set; then x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps. At t_prev = -1 the "
    "target is the clean image: abar_prev = 1 (not alphas_cumprod[-1], the noisiest step).",
    "abar_t = ...                         # alphas_cumprod at t\n"
    "abar_prev = ...                      # at t_prev; and at t_prev = -1?\n"
    "x0 = ...                             # add_noise solved for x0 (then clip if asked)\n"
    "return ...                           # x0 noised to t_prev with the same eps",
)


@exercise("ddim_step", reference=diffusion.ddim_step, hints=DDIM_STEP_HINTS)
def ddim_step(fn):
    g = torch.Generator().manual_seed(10)
    ac = _schedule()
    x_t = torch.randn(3, 1, 4, 5, generator=g, dtype=torch.float64)
    eps = torch.randn(3, 1, 4, 5, generator=g, dtype=torch.float64)
    # mid-way, skipping 9 steps, no clipping: the indices and the roots
    _judge_step(fn, x_t, eps, 40, 30, ac, False, "x_prev for t = 40 -> t_prev = 30 (clip=False)")
    # the last step, to the clean image
    _judge_step(fn, x_t, eps, 9, -1, ac, False, "x_prev for t = 9 -> t_prev = -1 (clip=False)")
    # clipping matters where the predicted x0 leaves [-1, 1]
    loud = 3 * x_t
    _judge_step(fn, loud, eps, 25, 12, ac, True, "x_prev for t = 25 -> 12 (clip=True)")
    _judge_step(fn, loud, eps, 25, 12, ac, False, "x_prev for t = 25 -> 12 (clip=False)")
    _judge_step(fn, loud, eps, 49, 0, ac, True, "x_prev for t = 49 -> 0 (clip=True)")
    # float32 in, float32 out; and the default is clip=True
    x32, e32 = (3 * x_t).float(), eps.float()
    got = fn(x32, e32, 30, 20, ac)
    expect_close(got, diffusion.ddim_step(x32, e32, 30, 20, ac), "x_prev with the default clip",
                 atol=1e-5, hint=NO_CLIP)
    expect(got.dtype == torch.float32, f"float32 inputs gave {got.dtype}",
           hint="return x_prev in x_t's dtype: cast the alpha-bars (float64 here), not x_t.")
    return "strided steps, the last step to -1, clipping on and off, float64 and float32"


# --------------------------------------------------------------------------- sample_loop

WRONG_DIRECTION = (
    "guidance in the wrong direction: eps = u + s (c - u) starts from the unconditional "
    "prediction u and moves TOWARDS the conditional c and beyond (s = 0 is u, s = 1 is c)."
)
ORDER = (
    "run the timesteps from the noisiest down: sampling_timesteps(steps, T) is already in "
    "that order, [T - 1, ..., T / steps - 1]."
)
LAST_STEP = (
    "each step goes to the NEXT timestep in the list, and the last one to t_prev = -1 (the "
    "clean image): without that step the output is still slightly noisy."
)
NOT_NULL = (
    "the unconditional half of the doubled batch is torch.full_like(labels, "
    "model.null_class): labels may be (B,) classes or (B, G, G) token grids."
)


class _SpyDenoiser:
    """A stand-in noise predictor with a class-dependent answer; records every call."""

    def __init__(self, image_shape=(1, 4, 4), null_class=10):
        self.image_shape = image_shape
        self.null_class = null_class
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def answer(self, x, t, labels):
        cond = labels.reshape(labels.shape[0], -1).double().mean(dim=1)  # (B,) one per image
        bias = (0.05 * cond + t.double() / 500).view(-1, 1, 1, 1)
        return (0.3 * x.double() + bias).to(x.dtype)

    def __call__(self, x, t, labels):
        t = torch.as_tensor(t)
        self.calls.append((x.detach().clone(), t.detach().clone(), labels.detach().clone()))
        return self.answer(x, t.expand(x.shape[0]), labels)


class _RecordingStep:
    """A stand-in for the `step` argument: DDIM, recording each (t, t_prev) it is called with."""

    def __init__(self):
        self.seen: list[tuple[int, int]] = []

    def __call__(self, x, eps, t, t_prev, alphas_cumprod, generator=None):
        self.seen.append((int(t), int(t_prev)))
        return diffusion.ddim_step(x, eps, t, t_prev, alphas_cumprod)


def _replay(model, labels, ac, steps, cfg_scale, x, combine="right", order="down",
            last="clean"):
    """The loop by hand from the recorded starting noise x, with one mistake switched on."""
    ts = diffusion.sampling_timesteps(steps, ac.shape[0])
    if order == "up":
        ts = ts[::-1]
    null = torch.full_like(labels, model.null_class)
    pairs = list(zip(ts, ts[1:] + [-1], strict=True))
    if last == "skip":
        pairs = pairs[:-1]
    elif last == "minus_one":
        pairs = [(t, t - 1) for t, _ in pairs]
    for t, t_prev in pairs:
        tb = torch.full((labels.shape[0],), t, dtype=torch.long)
        c = model.answer(x, tb, labels)
        u = model.answer(x, tb, null) if cfg_scale != 1.0 else c
        eps = {"right": u + cfg_scale * (c - u), "flipped": c + cfg_scale * (u - c),
               "minus": u - cfg_scale * (c - u)}[combine]
        x = diffusion.ddim_step(x, eps, t, t_prev, ac)
    return x


def _run_loop(fn, labels, steps, cfg_scale, seed, model=None):
    model = _SpyDenoiser() if model is None else model
    ac = _schedule()
    try:
        out = fn(model, labels, ac, steps, cfg_scale, torch.Generator().manual_seed(seed),
                 diffusion.ddim_step)
    except ValueError as err:  # minitok's ddim_step refuses a step back up (t_prev > t)
        if "t_prev must be an earlier step" not in str(err):
            raise
        raise CheckFailed(f"your loop called the step with {err}", ORDER) from err
    expect_tensor(out, "the samples")
    expect_shape(out, (labels.shape[0], *model.image_shape), "the samples")
    expect(len(model.calls) > 0, "the model was never called",
           hint="one model call per step (a doubled batch with guidance).")
    return model, ac, out


def _start_noise(model, batch: int) -> torch.Tensor:
    """The starting x the learner's loop drew: its first call's input (cond half)."""
    return model.calls[0][0][:batch]


def _judge_guidance(fn, labels, steps, cfg_scale, seed, model=None):
    model, ac, out = _run_loop(fn, labels, steps, cfg_scale, seed, model)
    B = labels.shape[0]
    x = _start_noise(model, B).to(ac.dtype)
    expected = _replay(model, labels, ac, steps, cfg_scale, x)
    if torch.allclose(out.double(), expected.double(), rtol=1e-5, atol=1e-6):
        return model
    for kwargs, hint in (({"combine": "flipped"}, WRONG_DIRECTION),
                         ({"combine": "minus"}, WRONG_DIRECTION),
                         ({"order": "up"}, ORDER),
                         ({"last": "skip"}, LAST_STEP),
                         ({"last": "minus_one"}, LAST_STEP)):
        try:
            wrong = _replay(model, labels, ac, steps, cfg_scale, x, **kwargs)
        except ValueError:  # this mistake cannot run through minitok's ddim_step
            continue
        if torch.allclose(out.double(), wrong.double(), rtol=1e-5, atol=1e-6):
            raise CheckFailed(f"steps = {steps}, cfg_scale = {cfg_scale}: the samples differ "
                              "from the DDIM loop", hint)
    if cfg_scale != 1.0:
        shown = torch.cat([c[2] for c in model.calls])  # every label the model was shown
        expect(bool((shown == model.null_class).any()),
               "the model was never shown the null label", hint=NOT_NULL)
    expect_close(out, expected, f"the samples (steps = {steps}, cfg_scale = {cfg_scale})",
                 atol=1e-6, rtol=1e-5,
                 hint="start from the noise, then for each timestep: eps (guided), "
                 "x = step(x, eps, t, t_prev, alphas_cumprod, generator).")
    return model


SAMPLE_LOOP_HINTS = (
    "Start from pure noise drawn through generator, visit the sampling timesteps from the "
    "noisiest down, and at each one ask the model for the noise and take one step; the step "
    "after the last timestep is -1, the clean image.",
    "Guidance mixes two predictions of the noise: u + s (c - u), with c conditioned on the "
    "labels and u on the null class. Compute both in one doubled batch [x; x] with labels "
    "[labels; null] and split the output in two. At s = 1 one conditional pass is enough.",
    "x = torch.randn(..., generator=generator)        # pure noise\n"
    "timesteps = diffusion.sampling_timesteps(steps, T)\n"
    "for i, t in enumerate(timesteps):\n"
    "    t_prev = ...                                 # the next timestep, or -1 after the last\n"
    "    cond, uncond = model(torch.cat([x, x]), ..., torch.cat([labels, null])).chunk(2)\n"
    "    eps = ...                                    # guidance: u + s (c - u)\n"
    "    x = step(x, eps, t, t_prev, alphas_cumprod, generator)\n"
    "return x",
)


@exercise("sample_loop", reference=diffusion.sample_loop, hints=SAMPLE_LOOP_HINTS)
def sample_loop(fn):
    labels = torch.tensor([3, 7, 1])  # B = 3, images 1 x 4 x 4

    # No guidance: one pass per step, the timesteps in order, t as a (B,) int64 tensor.
    model = _judge_guidance(fn, labels, 5, 1.0, seed=0)
    ts = [int(c[1].reshape(-1)[0]) for c in model.calls]
    expect(ts == diffusion.sampling_timesteps(5, T),
           f"the model saw the timesteps {ts}, expected {diffusion.sampling_timesteps(5, T)}",
           hint=ORDER)
    t = model.calls[0][1]
    expect(t.dtype == torch.int64 and t.shape == (3,), f"t given to the model is a "
           f"{t.dtype} tensor of shape {tuple(t.shape)}, not a (B,) int64 tensor",
           hint="model(x, torch.full((B,), t), labels): one t per image.")

    # The noise comes from the generator: same seed, same samples; another seed, others.
    again = _run_loop(fn, labels, 5, 1.0, seed=0)[2]
    other = _run_loop(fn, labels, 5, 1.0, seed=1)[2]
    first = _run_loop(fn, labels, 5, 1.0, seed=0)[2]
    expect(torch.equal(first, again), "two runs with the same seeded generator differ",
           hint="draw the starting noise from `generator`.")
    expect(not torch.equal(first, other), "two different seeds gave the same samples",
           hint="draw the starting noise from `generator`.")
    many = _run_loop(fn, torch.zeros(2000, dtype=torch.long), 1, 1.0, seed=2)[0]
    noise = _start_noise(many, 2000)
    expect(abs(float(noise.mean())) < 0.05 and abs(float(noise.std()) - 1) < 0.05,
           f"the starting noise has mean {float(noise.mean()):.2f} and standard deviation "
           f"{float(noise.std()):.2f}", hint="start from Gaussian noise: torch.randn, not rand.")

    # Guidance: the direction, scale 0 (the unconditional model), a large scale.
    _judge_guidance(fn, labels, 4, 3.0, seed=3)
    _judge_guidance(fn, labels, 4, 0.0, seed=4)
    # Token grids as the condition (the diffusion decoder), with guidance.
    grids = torch.tensor([[[1, 2], [3, 4]], [[5, 6], [7, 8]], [[0, 0], [9, 9]]])
    decoder = _SpyDenoiser(image_shape=(1, 4, 4), null_class=12)
    try:
        _judge_guidance(fn, grids, 3, 2.0, seed=5, model=decoder)
    except (RuntimeError, IndexError, ValueError) as err:  # e.g. cat of (B, G, G) with (B,)
        raise CheckFailed(f"with (B, G, G) token grids as labels your loop raised "
                          f"{type(err).__name__}: {err}", NOT_NULL) from err

    # The step it is given is the step it uses, with the right (t, t_prev) pairs.
    recording = _RecordingStep()
    fn(_SpyDenoiser(), labels, _schedule(), 5, 1.0, torch.Generator().manual_seed(0), recording)
    seen = recording.seen
    ts = diffusion.sampling_timesteps(5, T)
    expected = list(zip(ts, ts[1:] + [-1], strict=True))
    expect([(int(a), int(b)) for a, b in seen] == expected,
           f"the step was called with (t, t_prev) = {seen}, expected {expected}",
           hint=f"use the `step` argument; {LAST_STEP}")
    return "noise from the generator, timesteps T-1 .. down to -1, guidance u + s (c - u)"


def hint(name: str, level: int | None = None) -> None:
    """The next hint for exercise `name` (1 the idea, 2 the formula, 3 near-code)."""
    show_hint(__name__, name, level)
