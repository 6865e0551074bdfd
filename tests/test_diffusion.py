"""minitok.diffusion against diffusers (DDPMScheduler, DDIMScheduler) in float64, and against
the closed form: on Gaussian data the optimal noise predictor is known exactly, and sampling
with it must give back the data's mean and covariance.

diffusers builds its schedule in float32. The schedule tests compare minitok's float64
betas and alphas_cumprod with diffusers' float32 ones at float32 precision; every other test
hands diffusers minitok's float64 schedule (same betas in both) and compares in float64.
"""

from __future__ import annotations

import re

import pytest
import torch

from minitok import checkpoints, diffusion
from minitok.diffusion import (
    DiffusionConfig,
    DiffusionDecoder,
    DiffusionModel,
    add_noise,
    alphas_cumprod_of,
    ddim_step,
    ddpm_step,
    make_betas,
    posterior_mean_variance,
    sample_loop,
    sampling_timesteps,
)

diffusers = pytest.importorskip("diffusers")

# minitok's name -> diffusers' beta_schedule
DIFFUSERS_SCHEDULE = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
T = 1000


def reference(cls, beta_schedule: str, timesteps: int = T, float64: bool = True, **kwargs):
    """A diffusers scheduler; with float64, running on minitok's float64 schedule."""
    scheduler = cls(num_train_timesteps=timesteps, beta_schedule=DIFFUSERS_SCHEDULE[beta_schedule],
                    timestep_spacing="trailing", **kwargs)
    if float64:
        betas = make_betas(beta_schedule, timesteps)
        scheduler.betas = betas
        scheduler.alphas = 1 - betas
        scheduler.alphas_cumprod = alphas_cumprod_of(betas)
        scheduler.one = torch.tensor(1.0, dtype=torch.float64)
        if hasattr(scheduler, "final_alpha_cumprod"):
            scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    return scheduler


# --------------------------------------------------------------------------- the schedule


@pytest.mark.parametrize("beta_schedule", ["linear", "cosine"])
@pytest.mark.parametrize("timesteps", [1000, 50])
def test_schedule_equals_diffusers(beta_schedule, timesteps):
    ref = reference(diffusers.DDPMScheduler, beta_schedule, timesteps, float64=False)
    betas = make_betas(beta_schedule, timesteps)
    assert betas.dtype == torch.float64 and betas.shape == (timesteps,)
    # diffusers computes in float32: equal to float32 rounding (a cumprod of 1000 factors
    # accumulates a few float32 ulps)
    torch.testing.assert_close(betas.float(), ref.betas, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(alphas_cumprod_of(betas).float(), ref.alphas_cumprod,
                               rtol=2e-5, atol=1e-8)


def test_schedules_run_from_signal_to_noise():
    for beta_schedule in ("linear", "cosine"):
        abar = alphas_cumprod_of(make_betas(beta_schedule, T))
        assert abar[0] > 0.999 and abar[-1] < 1e-4  # almost clean at 0, almost noise at T - 1
        assert bool((abar[1:] < abar[:-1]).all())  # strictly decreasing
    # the cosine schedule keeps more signal mid-way (why small images prefer it)
    lin, cos = (alphas_cumprod_of(make_betas(n, T)) for n in ("linear", "cosine"))
    assert cos[T // 2] > 2 * lin[T // 2]


@pytest.mark.parametrize("steps", [1, 4, 7, 10, 20, 50, 1000])
def test_sampling_timesteps_are_diffusers_trailing(steps):
    ref = reference(diffusers.DDIMScheduler, "cosine", float64=False)
    ref.set_timesteps(steps)
    assert sampling_timesteps(steps, T) == ref.timesteps.tolist()
    assert sampling_timesteps(steps, T)[0] == T - 1  # always starts from pure noise


# --------------------------------------------------------------------------- forward noising


@pytest.mark.parametrize("beta_schedule", ["linear", "cosine"])
def test_add_noise_equals_diffusers(beta_schedule, gen):
    ref = reference(diffusers.DDPMScheduler, beta_schedule)
    x0 = torch.rand(6, 1, 5, 7, generator=gen, dtype=torch.float64) * 2 - 1
    noise = torch.randn(6, 1, 5, 7, generator=gen, dtype=torch.float64)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    ours = add_noise(x0, noise, t, ref.alphas_cumprod)
    torch.testing.assert_close(ours, ref.add_noise(x0, noise, t), rtol=1e-12, atol=1e-12)
    assert ours.dtype == torch.float64


def test_add_noise_keeps_unit_variance(gen):
    abar = alphas_cumprod_of(make_betas("cosine", T))
    x0 = torch.randn(20000, 1, 1, 1, generator=gen, dtype=torch.float64)
    noise = torch.randn(20000, 1, 1, 1, generator=gen, dtype=torch.float64)
    for t in (0, 300, 700, 999):
        x_t = add_noise(x0, noise, torch.full((20000,), t), abar)
        assert abs(x_t.var().item() - 1) < 0.04
        # the signal's share is abar_t: the correlation of x_t and x0 is sqrt(abar_t)
        corr = torch.corrcoef(torch.stack([x_t.flatten(), x0.flatten()]))[0, 1]
        assert abs(corr - abar[t].sqrt()) < 0.02


# --------------------------------------------------------------------------- the posterior and the steps


@pytest.mark.parametrize("beta_schedule", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [1000, 10, 4])
def test_posterior_mean_and_variance_equal_diffusers_ddpm(beta_schedule, steps, gen):
    ref = reference(diffusers.DDPMScheduler, beta_schedule, clip_sample=False)
    ref.set_timesteps(steps)
    ts = ref.timesteps.tolist()
    x0 = torch.randn(3, 1, 4, 4, generator=gen, dtype=torch.float64)
    x_t = torch.randn(3, 1, 4, 4, generator=gen, dtype=torch.float64)
    for i, t in enumerate(ts[:: max(1, len(ts) // 5)] + [ts[-1]]):
        t_prev = int(ref.previous_timestep(t))
        assert t_prev == (ts[ts.index(t) + 1] if t != ts[-1] else -1)
        # diffusers' step with prediction_type="sample" returns the posterior mean + noise;
        # with the noise switched off (it draws it from this generator, we subtract it)
        mean, variance = posterior_mean_variance(x0, x_t, t, t_prev, ref.alphas_cumprod)
        torch.testing.assert_close(variance, ref._get_variance(t), rtol=1e-12, atol=0)
        out = _ddpm_reference_step(ref, x0, t, x_t, prediction="sample", seed=i)
        z = _noise_like(x_t, seed=i)
        expected = out - (variance.sqrt() * z if t > 0 else 0)
        torch.testing.assert_close(mean, expected, rtol=1e-10, atol=1e-12)


def _noise_like(x, seed):
    return torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)


def _ddpm_reference_step(ref, model_output, t, x_t, prediction="epsilon", seed=0):
    ref.register_to_config(prediction_type=prediction)
    return ref.step(model_output, t, x_t, generator=torch.Generator().manual_seed(seed)).prev_sample


@pytest.mark.parametrize("beta_schedule", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [1000, 20, 5])
@pytest.mark.parametrize("clip", [True, False])
def test_one_ddpm_step_equals_diffusers(beta_schedule, steps, clip, gen):
    ref = reference(diffusers.DDPMScheduler, beta_schedule, clip_sample=clip)
    ref.set_timesteps(steps)
    ts = ref.timesteps.tolist()
    x_t = torch.randn(3, 1, 4, 4, generator=gen, dtype=torch.float64) * 1.5
    eps = torch.randn(3, 1, 4, 4, generator=gen, dtype=torch.float64)
    for i, t in enumerate([ts[0], ts[len(ts) // 2], ts[-1]]):
        t_prev = ts[ts.index(t) + 1] if t != ts[-1] else -1
        expected = _ddpm_reference_step(ref, eps, t, x_t, seed=i)
        ours = ddpm_step(x_t, eps, t, t_prev, ref.alphas_cumprod,
                         torch.Generator().manual_seed(i), clip=clip)
        torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("beta_schedule", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [1000, 50, 10, 4, 1])
@pytest.mark.parametrize("clip", [True, False])
def test_one_ddim_step_equals_diffusers(beta_schedule, steps, clip, gen):
    """Step counts that divide T: diffusers' DDIM goes from t to t - T // steps, which is then
    exactly the next trailing timestep (for other counts it is not: see docs/references.md)."""
    ref = reference(diffusers.DDIMScheduler, beta_schedule, clip_sample=clip)
    ref.set_timesteps(steps)
    ts = ref.timesteps.tolist()
    x_t = torch.randn(3, 1, 4, 4, generator=gen, dtype=torch.float64) * 1.5
    eps = torch.randn(3, 1, 4, 4, generator=gen, dtype=torch.float64)
    for t in sorted({ts[0], ts[len(ts) // 2], ts[-1]}, reverse=True):
        t_prev = ts[ts.index(t) + 1] if t != ts[-1] else -1
        expected = ref.step(eps, t, x_t, eta=0.0).prev_sample
        torch.testing.assert_close(ddim_step(x_t, eps, t, t_prev, ref.alphas_cumprod, clip=clip),
                                   expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_whole_loop_equals_diffusers_with_a_fixed_noise_predictor(sampler):
    """Every step of our loop against the diffusers scheduler's, with a fixed eps(x, t)."""
    g = torch.Generator().manual_seed(5)
    weight = torch.randn(1, dtype=torch.float64, generator=g)

    class Linear:
        image_shape = (1, 3, 3)
        null_class = 10

        def __call__(self, x, t, labels):
            return torch.tanh(weight * x + t[:, None, None, None] / 1000 + labels[:, None, None, None])

    model = Linear()
    cls = diffusers.DDIMScheduler if sampler == "ddim" else diffusers.DDPMScheduler
    ref = reference(cls, "cosine")
    steps = 10
    ref.set_timesteps(steps)
    labels = torch.tensor([1, 2])
    step = ddim_step if sampler == "ddim" else ddpm_step
    ours = sample_loop(model, labels, ref.alphas_cumprod, steps,
                       generator=torch.Generator().manual_seed(0), step=step)
    # the same starting noise, then diffusers' steps (DDPM: fed the same generator)
    g = torch.Generator().manual_seed(0)
    x = torch.randn((2, 1, 3, 3), generator=g, dtype=torch.float64)
    for t in ref.timesteps.tolist():
        eps = model(x, torch.full((2,), t), labels)
        x = ref.step(eps, t, x, generator=g).prev_sample
    torch.testing.assert_close(ours, x, rtol=1e-9, atol=1e-10)


# --------------------------------------------------------------------------- guidance


class Spy:
    """A noise predictor that records its calls and answers a fixed function."""

    image_shape = (1, 2, 2)
    null_class = 10

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, labels):
        self.calls.append((x.clone(), t.clone(), labels.clone()))
        return 0.1 * x + labels[:, None, None, None].double() / 10


def test_guidance_is_u_plus_s_c_minus_u_on_the_noise():
    abar = alphas_cumprod_of(make_betas("cosine", T))
    spy = Spy()
    out = sample_loop(spy, torch.tensor([3, 7]), abar, 2, cfg_scale=2.5,
                      generator=torch.Generator().manual_seed(0))
    assert len(spy.calls) == 2  # one doubled pass per step
    x, t, labels = spy.calls[0]
    assert torch.equal(labels, torch.tensor([3, 7, 10, 10]))  # [cond; null]
    assert torch.equal(x[:2], x[2:]) and torch.equal(t, torch.full((4,), 999))
    # by hand: eps = u + 2.5 (c - u), then the DDIM steps
    x = torch.randn((2, 1, 2, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t, t_prev in ((999, 499), (499, -1)):
        c = 0.1 * x + torch.tensor([3, 7]).view(2, 1, 1, 1) / 10
        u = 0.1 * x + 1.0
        x = ddim_step(x, u + 2.5 * (c - u), t, t_prev, abar)
    torch.testing.assert_close(out, x)


def test_guidance_scale_one_is_a_single_conditional_pass():
    abar = alphas_cumprod_of(make_betas("cosine", T))
    spy = Spy()
    sample_loop(spy, torch.tensor([3, 7]), abar, 3, generator=torch.Generator().manual_seed(0))
    assert [c[1][0].item() for c in spy.calls] == [999, 666, 332]
    assert all(torch.equal(c[2], torch.tensor([3, 7])) for c in spy.calls)


# --------------------------------------------------------------------------- the closed form


def _gaussian_optimal_eps(mean: torch.Tensor, cov: torch.Tensor, abar: torch.Tensor):
    """The exact E[eps | x_t] when x0 ~ N(mean, cov): with S_t = abar cov + (1 - abar) I,
    E[eps | x_t] = sqrt(1 - abar) S_t^{-1} (x_t - sqrt(abar) mean)."""

    class Optimal:
        image_shape = (1, 1, mean.shape[0])
        null_class = 1

        def __call__(self, x, t, labels):
            a = abar[t[0]]
            S = a * cov + (1 - a) * torch.eye(cov.shape[0], dtype=cov.dtype)
            flat = x.reshape(x.shape[0], -1) - a.sqrt() * mean  # (B, D)
            return ((1 - a).sqrt() * torch.linalg.solve(S, flat.T).T).reshape(x.shape)

    return Optimal()


@pytest.mark.slow
@pytest.mark.parametrize(("sampler", "steps"), [("ddim", 50), ("ddpm", 200)])
def test_sampling_with_the_optimal_denoiser_reproduces_a_gaussian(sampler, steps):
    """x0 ~ N(m, C) in 3 dimensions; the exact noise predictor is linear in x_t. Sampling with
    it (no clipping: the data leave [-1, 1]) must give mean m and covariance C."""
    mean = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    A = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [-0.3, 0.5, 0.4]], dtype=torch.float64)
    cov = A @ A.T  # correlated, unequal variances
    abar = alphas_cumprod_of(make_betas("cosine", T))
    model = _gaussian_optimal_eps(mean, cov, abar)
    labels = torch.zeros(40000, dtype=torch.long)

    def unclipped(*args):
        step = ddim_step if sampler == "ddim" else ddpm_step
        return step(*args, clip=False)

    x = sample_loop(model, labels, abar, steps, generator=torch.Generator().manual_seed(0),
                    step=unclipped).reshape(-1, 3)
    assert x.dtype == torch.float64
    torch.testing.assert_close(x.mean(0), mean, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.04, rtol=0)


# --------------------------------------------------------------------------- the model


def _tiny(cls=DiffusionModel, **kwargs):
    torch.manual_seed(0)
    config = DiffusionConfig(image_size=8, channels=8, inner_channels=8, emb_dim=16,
                             timesteps=100, **kwargs)
    return cls(config)


def _relative_change(a, b):
    """Per image: ||a - b|| / ||a||, (B,). Float noise is about 1e-7; a real effect is not."""
    return (a - b).flatten(1).norm(dim=1) / a.flatten(1).norm(dim=1)


def _shipped_size_model(cls=DiffusionModel, **kwargs):
    from repo_scripts import load_script

    torch.manual_seed(0)
    return cls(DiffusionConfig(**load_script("scripts/train_diffusion.py").SIZE, **kwargs))


# the conditioning must reach the output well above float noise: the margin a change of
# class or timestep moves the output by, relative to its size (at random initialisation;
# float noise is about 1e-7, a condition the GroupNorm removed moved it by that much)
MARGIN = 1e-2


@pytest.mark.parametrize("build", [_tiny, _shipped_size_model], ids=["tiny", "shipped-size"])
def test_output_depends_on_the_class_and_the_timestep(build, device):
    model = build().to(device)
    S, T = model.config.image_size, model.config.timesteps
    x = torch.randn(3, 1, S, S, generator=torch.Generator().manual_seed(0)).to(device)
    t = torch.tensor([0, T // 2, T - 1], device=device)
    labels = torch.tensor([1, 2, 10], device=device)
    with torch.no_grad():
        out = model(x, t, labels)
        other_class = model(x, t, torch.tensor([4, 2, 10], device=device))
        other_t = model(x, torch.tensor([T // 2, T // 2, 0], device=device), labels)
    assert out.shape == (3, 1, S, S)
    assert _relative_change(out, other_class)[0] > MARGIN  # class 1 -> 4
    assert _relative_change(out, other_t)[[0, 2]].min() > MARGIN  # t 0 -> T/2, T-1 -> 0
    # the images whose condition did not change are untouched (no mixing across the batch)
    torch.testing.assert_close(out[1:], other_class[1:])
    torch.testing.assert_close(out[1], other_t[1])


def test_model_shapes_and_buffers(device):
    model = _tiny().to(device)
    assert model.null_class == 10 and model.image_shape == (1, 8, 8)
    assert model.alphas_cumprod.dtype == torch.float64 and model.alphas_cumprod.shape == (100,)
    assert "alphas_cumprod" not in model.state_dict()  # rebuilt from the config


@pytest.mark.parametrize("build", [_tiny, _shipped_size_model], ids=["tiny", "shipped-size"])
def test_decoder_reads_the_token_grid(build, device):
    decoder = build(DiffusionDecoder, num_codes=12, grid_size=4).to(device)
    S = decoder.config.image_size
    x = torch.randn(2, 1, S, S, generator=torch.Generator().manual_seed(0)).to(device)
    t = torch.tensor([10, 10], device=device)
    grids = torch.randint(0, 12, (2, 4, 4), generator=torch.Generator().manual_seed(1))
    grids = grids.to(device)
    changed = grids.clone()
    changed[0, 0, 0] = (changed[0, 0, 0] + 1) % 12
    with torch.no_grad():
        out, other = decoder(x, t, grids), decoder(x, t, changed)
        later = decoder(x, torch.tensor([decoder.config.timesteps - 1, 10], device=device), grids)
    assert out.shape == (2, 1, S, S)
    assert _relative_change(out, other)[0] > MARGIN / 10  # one token of 16 changed
    assert _relative_change(out, later)[0] > MARGIN
    torch.testing.assert_close(out[1], other[1])
    assert decoder.null_class == 12
    images = diffusion.render(decoder, grids, steps=3, cfg_scale=2.0,
                              generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 1, S, S) and images.abs().max() <= 1


def test_sample_is_reproducible_and_restores_the_mode(device):
    model = _tiny().to(device).train()
    labels = torch.tensor([0, 5], device=device)
    for sampler in ("ddim", "ddpm"):
        a = diffusion.sample(model, labels, 4, sampler, 2.0, torch.Generator().manual_seed(1))
        b = diffusion.sample(model, labels, 4, sampler, 2.0, torch.Generator().manual_seed(1))
        assert torch.equal(a, b) and a.shape == (2, 1, 8, 8)
    assert model.training


def test_sample_runs_a_given_loop_with_its_own_ddim_step():
    """A learner's loop (Lesson 08's race) gets step=None for DDIM, so it steps with its own
    ddim_step, and minitok's ddpm_step for DDPM; with the default loop nothing changes."""
    model, labels = _tiny().eval(), torch.tensor([0, 5])
    calls = []

    def mine(*args):
        calls.append(args[-1])  # the step it is given
        return diffusion.sample_loop(*args)

    for sampler in ("ddim", "ddpm"):
        a = diffusion.sample(model, labels, 3, sampler, 2.0, torch.Generator().manual_seed(1),
                             loop=mine)
        b = diffusion.sample(model, labels, 3, sampler, 2.0, torch.Generator().manual_seed(1))
        assert torch.equal(a, b)
    assert calls == [None, diffusion.ddpm_step]
    decoder, grids = _decoder().eval(), torch.randint(0, 12, (2, 4, 4))
    diffusion.render(decoder, grids, 2, loop=mine)
    assert len(calls) == 3


# --------------------------------------------------------------------------- bad input
# Each row: a call at the public boundary with one bad argument, the error it must raise and
# the words the message must contain (the argument's name first).

TINY_AC = alphas_cumprod_of(make_betas("cosine", 100))  # the tiny model's schedule (T = 100)
X8 = torch.zeros(2, 1, 8, 8)
T2 = torch.tensor([3, 40])
L2 = torch.tensor([1, 10])


def _decoder():
    return _tiny(DiffusionDecoder, num_codes=12, grid_size=4)


BAD_INPUT = {
    # DiffusionModel.forward
    "forward t = T": (lambda m: m(X8, torch.tensor([3, 100]), L2), ValueError, "t must lie"),
    "forward t < 0": (lambda m: m(X8, torch.tensor([-1, 4]), L2), ValueError, "t must lie"),
    "forward float t": (lambda m: m(X8, T2.float(), L2), TypeError, "t must be an integer"),
    "forward t (B, 1)": (lambda m: m(X8, T2[:, None], L2), ValueError, "t must be a 1-d"),
    "forward image of another size": (lambda m: m(torch.zeros(2, 1, 16, 16), T2, L2),
                                      ValueError, "x must be (B, 1, 8, 8)"),
    "forward image of other channels": (lambda m: m(torch.zeros(2, 3, 8, 8), T2, L2),
                                        ValueError, "x must be (B, 1, 8, 8)"),
    "forward int image": (lambda m: m(X8.long(), T2, L2), TypeError, "x must be a floating"),
    "forward label beyond null": (lambda m: m(X8, T2, torch.tensor([1, 11])), ValueError,
                                  "labels must lie in [0, 10]"),
    "forward negative label": (lambda m: m(X8, T2, torch.tensor([-1, 1])), ValueError,
                               "labels must lie in [0, 10]"),
    "forward float labels": (lambda m: m(X8, T2, L2.float()), TypeError, "labels must be an"),
    "forward batch mismatch": (lambda m: m(X8, torch.tensor([3]), L2[:1]), ValueError,
                               "one entry per image"),
    # DiffusionDecoder.forward
    "decoder grid beyond null": (lambda m: _decoder()(X8, T2, torch.full((2, 4, 4), 13)),
                                 ValueError, "grids must lie in [0, 12]"),
    "decoder grid of another size": (lambda m: _decoder()(X8, T2, torch.zeros(2, 3, 3).long()),
                                     ValueError, "grids must be (B, 4, 4)"),
    "decoder t = T": (lambda m: _decoder()(X8, torch.tensor([100, 0]),
                                           torch.zeros(2, 4, 4).long()), ValueError, "t must lie"),
    # add_noise
    "add_noise t = T": (lambda m: add_noise(X8, X8, torch.tensor([0, 100]), TINY_AC),
                        ValueError, "t must lie in [0, 99]"),
    "add_noise float t": (lambda m: add_noise(X8, X8, T2.float(), TINY_AC), TypeError,
                          "t must be an integer"),
    "add_noise t per image": (lambda m: add_noise(X8, X8, T2[:1], TINY_AC), ValueError,
                              "t must hold one step per image"),
    "add_noise noise shape": (lambda m: add_noise(X8, X8[:, :, :4], T2, TINY_AC), ValueError,
                              "x0 and noise must have the same shape"),
    "add_noise 3-d x0": (lambda m: add_noise(X8[0], X8[0], T2, TINY_AC), ValueError,
                         "x0 must be a 4-d"),
    "add_noise 2-d schedule": (lambda m: add_noise(X8, X8, T2, TINY_AC[None]), ValueError,
                               "alphas_cumprod must be a 1-d"),
    # diffusion_loss
    "diffusion_loss x0 of another size": (
        lambda m: diffusion.diffusion_loss(m, torch.zeros(2, 1, 16, 16), L2, TINY_AC),
        ValueError, "x0 must be (B, 1, 8, 8)"),
    "diffusion_loss schedule of another T": (
        lambda m: diffusion.diffusion_loss(m, X8, L2, alphas_cumprod_of(make_betas("cosine", 1000))),
        ValueError, "alphas_cumprod must have the model's T = 100"),
    "diffusion_loss int x0": (lambda m: diffusion.diffusion_loss(m, X8.long(), L2, TINY_AC),
                              TypeError, "x0 must be a floating"),
    "diffusion_loss labels beyond null": (
        lambda m: diffusion.diffusion_loss(m, X8, torch.tensor([1, 11]), TINY_AC), ValueError,
        "labels must lie"),
    "diffusion_loss generator": (lambda m: diffusion.diffusion_loss(m, X8, L2, TINY_AC, 0),
                                 TypeError, "generator must be"),
    # ddim_step / ddpm_step
    "ddim_step t = T": (lambda m: ddim_step(X8, X8, 100, 50, TINY_AC), ValueError,
                        "t must lie in [0, 99]"),
    "ddim_step t_prev < -1": (lambda m: ddim_step(X8, X8, 50, -2, TINY_AC), ValueError,
                              "t_prev must be an earlier step"),
    "ddim_step t_prev > t": (lambda m: ddim_step(X8, X8, 10, 20, TINY_AC), ValueError,
                             "t_prev must be an earlier step than t = 10"),
    "ddpm_step t_prev = t": (lambda m: ddpm_step(X8, X8, 10, 10, TINY_AC), ValueError,
                             "t_prev must be an earlier step than t = 10"),
    "ddim_step float t": (lambda m: ddim_step(X8, X8, 50.0, 10, TINY_AC), TypeError,
                          "t and t_prev must be ints"),
    "ddim_step eps shape": (lambda m: ddim_step(X8, X8[:1], 50, 10, TINY_AC), ValueError,
                            "x_t and eps must have the same shape"),
    "ddpm_step t = T": (lambda m: ddpm_step(X8, X8, 100, 50, TINY_AC), ValueError,
                        "t must lie in [0, 99]"),
    "ddpm_step generator": (lambda m: ddpm_step(X8, X8, 50, 10, TINY_AC, 0), TypeError,
                            "generator must be"),
    # sample_loop, sample, render
    "sample_loop schedule of another T": (
        lambda m: sample_loop(m, L2, alphas_cumprod_of(make_betas("cosine", 1000)), 2),
        ValueError, "alphas_cumprod must have the model's T = 100"),
    "sample_loop labels beyond null": (lambda m: sample_loop(m, torch.tensor([11]), TINY_AC, 2),
                                       ValueError, "labels must lie"),
    "sample_loop steps > T": (lambda m: sample_loop(m, L2, TINY_AC, 101), ValueError,
                              "steps must be at most"),
    "sample_loop negative cfg_scale": (lambda m: sample_loop(m, L2, TINY_AC, 2, cfg_scale=-1.0),
                                       ValueError, "cfg_scale"),
    "sample sampler": (lambda m: diffusion.sample(m, L2, sampler="euler"), ValueError,
                       "sampler must be one of"),
    "sample labels beyond null": (lambda m: diffusion.sample(m, torch.tensor([11])), ValueError,
                                  "labels must lie"),
    "sample float labels": (lambda m: diffusion.sample(m, torch.tensor([1.0])), TypeError,
                            "labels must be an"),
    "sample negative cfg_scale": (lambda m: diffusion.sample(m, L2, cfg_scale=-1.0), ValueError,
                                  "cfg_scale"),
    "sample steps 0": (lambda m: diffusion.sample(m, L2, steps=0), ValueError, "steps must be"),
    "render grids of another size": (
        lambda m: diffusion.render(_decoder(), torch.zeros(2, 3, 3, dtype=torch.long)),
        ValueError, "grids must be (B, 4, 4)"),
    "render a class model": (lambda m: diffusion.render(m, L2), TypeError,
                             "decoder must be a DiffusionDecoder"),
    # the schedule and the config
    "sampling_timesteps steps > T": (lambda m: sampling_timesteps(101, 100), ValueError,
                                     "steps must be at most"),
    "config beta_schedule": (lambda m: DiffusionConfig(beta_schedule="sigmoid"), ValueError,
                             "beta_schedule must be one of"),
    "decoder without codes": (lambda m: DiffusionDecoder(DiffusionConfig()), ValueError,
                              "num_codes"),
    # train_diffusion
    "train images of another size": (
        lambda m: diffusion.train_diffusion(m, torch.zeros(4, 1, 16, 16), L2.repeat(2), 1,
                                            progress=False), ValueError, "images must be (B, 1, 8, 8)"),
    "train p_uncond 1.5": (lambda m: diffusion.train_diffusion(m, X8, L2, 1, p_uncond=1.5,
                                                               progress=False),
                           ValueError, "p_uncond must lie"),
    "train conditions per image": (lambda m: diffusion.train_diffusion(m, X8, L2[:1], 1,
                                                                       progress=False),
                                   ValueError, "conditions must hold one entry per image"),
}


@pytest.mark.parametrize("row", list(BAD_INPUT))
def test_bad_input_is_a_clear_error_naming_the_argument(row):
    call, error, words = BAD_INPUT[row]
    with pytest.raises(error, match=re.escape(words)):
        call(_tiny())


def test_steps_accept_one_element_integer_tensors():
    """A sampler loop may hand the step its t as a 0-d tensor (iterating a tensor of steps)."""
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ddim_step(x, x, torch.tensor(50), torch.tensor(10), TINY_AC),
                               ddim_step(x, x, 50, 10, TINY_AC))


def test_training_reduces_the_loss_and_is_reproducible():
    images = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    labels = torch.arange(8) % 3
    losses = []
    for _ in range(2):
        model = _tiny()
        losses.append(diffusion.train_diffusion(model, images, labels, steps=40, batch_size=8,
                                                lr=3e-3, progress=False))
    assert losses[0] == losses[1]
    assert sum(losses[0][-10:]) < 0.8 * sum(losses[0][:10])


def test_checkpoint_round_trip(tmp_path):
    for cls, kind, extra in ((DiffusionModel, "diffusion", {}),
                             (DiffusionDecoder, "diffusion_decoder",
                              {"num_codes": 12, "grid_size": 4})):
        model = _tiny(cls, **extra)
        path = checkpoints.save(model, tmp_path / f"{kind}.pt", {"seed": 0})
        loaded = checkpoints.load(kind, path)
        assert type(loaded) is cls and loaded.config == model.config
        x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 40])
        cond = torch.tensor([1, 10]) if not extra else torch.randint(0, 12, (2, 4, 4))
        torch.testing.assert_close(loaded(x, t, cond), model(x, t, cond))



# --------------------------------------------------------------------------- the shipped models

SHIPPED = {kind: checkpoints.checkpoint_path(kind).is_file()
           for kind in ("diffusion", "diffusion_decoder")}


@pytest.mark.skipif(not SHIPPED["diffusion"], reason="no shipped diffusion checkpoint")
def test_shipped_diffusion_model_is_the_scripts_recipe_and_small():
    from repo_scripts import load_script

    script = load_script("scripts/train_diffusion.py")
    model = checkpoints.load("diffusion")
    assert model.meta["recipe"] == {**script.SIZE, **script.RECIPE}
    assert model.meta["script"] == "scripts/train_diffusion.py"
    assert {k: getattr(model.config, k) for k in script.SIZE} == script.SIZE
    assert checkpoints.checkpoint_path("diffusion").stat().st_size <= 2 * 2**20  # 2 MB
    assert model.meta["results"]["test_loss"] < 0.1  # predicting eps = 0 scores 1


@pytest.mark.skipif(not SHIPPED["diffusion_decoder"], reason="no shipped decoder checkpoint")
def test_shipped_decoder_is_the_scripts_recipe_on_the_shipped_tokenizer():
    from repo_scripts import load_script

    script = load_script("scripts/train_diffusion_decoder.py")
    decoder, tokenizer = checkpoints.load("diffusion_decoder"), checkpoints.load("tokenizer")
    checkpoints.check_tokenizer(decoder, tokenizer)  # its codes are this tokenizer's
    assert decoder.meta["recipe"] == {**script.DECODER_SIZE, **script.RECIPE}
    assert decoder.config.num_codes == tokenizer.num_codes
    assert checkpoints.checkpoint_path("diffusion_decoder").stat().st_size <= 2 * 2**20


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED["diffusion"], reason="no shipped diffusion checkpoint")
def test_shipped_diffusion_model_draws_recognisable_digits():
    from minitok.classifier import load_classifier

    model = checkpoints.load("diffusion")
    labels = torch.arange(100) % 10
    images = diffusion.sample(model, labels, 20, generator=torch.Generator().manual_seed(0))
    assert images.shape == (100, 1, 16, 16)
    assert load_classifier().accuracy(images, labels) > 0.9


# --------------------------------------------------------------------------- the benchmark


def _row(setting, accuracy, fd, grids=None):
    return {"setting": setting, "accuracy": accuracy, "fd": fd, "diversity": 0.9,
            "passes/image": 8, "grids": grids}


def test_benchmark_goals_compare_the_best_rows_and_the_same_tokens():
    from minitok.tools.bench import diffusion as bench

    grids = torch.zeros(4, 8, 8, dtype=torch.long)
    hybrid_name = evaluate_setting_name("hybrid", bench.HYBRID_STEPS)
    result = {"race": [_row("AR (KV cache)", 0.92, 1.5, grids),
                       _row("MaskGIT 4 cosine", 0.99, 1.1, grids),
                       _row("diffusion DDIM 5", 0.95, 0.9),
                       _row("diffusion DDIM 20", 0.975, 0.6),
                       _row("diffusion DDIM 20, s=2", 1.0, 2.0),  # guided: not in the goal
                       _row(hybrid_name, 0.93, 1.4, grids.clone())],
              "quality": [_row("MaskGIT 1 cosine", 0.8, 5.0, grids)]}
    g = bench.goals(result)
    assert g["maskgit"]["setting"] == "MaskGIT 4 cosine"
    assert g["diffusion"]["setting"] == "diffusion DDIM 20"
    assert g["gap"] == pytest.approx(1.5) and g["accuracy_met"]
    (h,) = g["hybrids"]
    assert h["same_tokens"] and h["met"] and h["ar"]["setting"] == "AR (KV cache)"
    lines = bench.goal_lines(result)
    assert "1.5 points below" in lines[0] and "-> met" in lines[0]
    assert "FD 1.40" in lines[1] and "-> met" in lines[1]
    result["race"][-1]["fd"] = 1.6  # worse than the VQ decoder's 1.5
    result["race"][3]["accuracy"] = 0.96  # 3 points below
    assert "NOT met" in bench.goal_lines(result)[0] and "NOT met" in bench.goal_lines(result)[1]
    result["race"][-1]["fd"] = 1.4
    result["race"][-1]["grids"] = torch.ones(4, 8, 8, dtype=torch.long)  # other tokens
    assert not bench.goals(result)["hybrids"][0]["met"]
    assert "tokens differ" in bench.goal_lines(result)[1]
    # a guided hybrid is compared with the guided AR row
    result["quality"] += [_row("AR (KV cache), s=2", 0.99, 1.5, grids),
                          _row("hybrid: AR, s=2 + diffusion decoder DDIM 10", 0.99, 1.3, grids)]
    guided = bench.goals(result)["hybrids"][1]
    assert guided["ar"]["setting"] == "AR (KV cache), s=2" and guided["met"]


def evaluate_setting_name(method, steps):
    from minitok.evaluate import RaceSetting

    return RaceSetting(method, steps).name
