"""Lesson 08's checks fail each classic mistake with the hint that names it, and pass correct
versions written differently from the package.

What every lesson's checks must do (pass the reference, report an unfinished exercise, leave
the RNG and thread count alone) is tested once for all lessons in tests/test_checks_all.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from checking import assert_fails_with, assert_passes

from minitok import diffusion
from minitok.checks import lesson08 as check

pytestmark = pytest.mark.usefixtures("transport")  # local and through the wire

# --------------------------------------------------------------------------- add_noise


def _add_noise(index=0, root_signal=True, root_noise=True, swap=False, float32=False,
               flat=False):
    def fn(x0, noise, t, alphas_cumprod):
        abar = alphas_cumprod[t + index]
        if float32:
            abar = abar.float()
        else:
            abar = abar.to(x0.dtype)
        if not flat:
            abar = abar[:, None, None, None]
        a = abar.sqrt() if root_signal else abar
        b = (1 - abar).sqrt() if root_noise else 1 - abar
        if swap:
            a, b = b, a
        return a * x0 + b * noise

    return fn


def test_add_noise_accepts_an_own_version():
    assert_passes(check.add_noise, _add_noise())


def test_add_noise_accepts_a_gather_and_view():
    def fn(x0, noise, t, alphas_cumprod):
        abar = alphas_cumprod.to(x0.dtype).gather(0, t).view(-1, *([1] * (x0.dim() - 1)))
        return torch.sqrt(abar) * x0 + torch.sqrt(1 - abar) * noise

    assert_passes(check.add_noise, fn)


def test_add_noise_catches_the_index_before():
    assert_fails_with(check.add_noise, _add_noise(index=-1), "alphas_cumprod[t]", "not t - 1")


def test_add_noise_catches_the_index_after():
    assert_fails_with(check.add_noise, _add_noise(index=1), "wrong alpha-bar index")


def test_add_noise_catches_a_missing_square_root_on_the_signal():
    assert_fails_with(check.add_noise, _add_noise(root_signal=False), "missing square root")


def test_add_noise_catches_a_missing_square_root_on_the_noise():
    assert_fails_with(check.add_noise, _add_noise(root_noise=False), "missing square root")


def test_add_noise_catches_signal_and_noise_swapped():
    assert_fails_with(check.add_noise, _add_noise(swap=True), "swapped")


def test_add_noise_catches_float32_rounding():
    assert_fails_with(check.add_noise, _add_noise(float32=True), "x0's dtype")


def test_add_noise_names_the_broadcast():
    assert_fails_with(check.add_noise, _add_noise(flat=True), "(B, 1, 1, 1)")


def test_add_noise_catches_float64_out_for_float32_images():
    def fn(x0, noise, t, alphas_cumprod):  # alphas_cumprod (float64) never cast
        abar = alphas_cumprod[t].view(-1, 1, 1, 1)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    assert_fails_with(check.add_noise, fn, "cast alphas_cumprod, not the images")


def test_add_noise_catches_changing_the_inputs():
    def fn(x0, noise, t, alphas_cumprod):
        abar = alphas_cumprod.to(x0.dtype)[t].view(-1, 1, 1, 1)
        return x0.mul_(abar.sqrt()).add_((1 - abar).sqrt() * noise)

    assert_fails_with(check.add_noise, fn, "leave the inputs alone")


# --------------------------------------------------------------------------- diffusion_loss


def _loss(target="noise", high=None, one_t=False, rand=False, reduction="mean",
          use_generator=True, drop=False):
    def fn(model, x0, labels, alphas_cumprod, generator=None):
        g = generator if use_generator else None
        B, T = x0.shape[0], alphas_cumprod.shape[0]
        noise = (torch.rand if rand else torch.randn)(x0.shape, generator=g, dtype=x0.dtype)
        if one_t:
            t = torch.randint(0, T, (1,), generator=g).expand(B)
        else:
            t = torch.randint(0, T if high is None else high, (B,), generator=g)
        x_t = diffusion.add_noise(x0, noise, t, alphas_cumprod)
        if drop:
            labels = labels.masked_fill(torch.rand(B, generator=g) < 0.5, 10)
        out = model(x_t, t, labels)
        goal = {"noise": noise, "x0": x0, "x_t": x_t}[target]
        return F.mse_loss(out, goal, reduction=reduction)

    return fn


def test_loss_accepts_an_own_version():
    assert_passes(check.diffusion_loss, _loss())


def test_loss_accepts_the_noise_drawn_before_t():
    def fn(model, x0, labels, alphas_cumprod, generator=None):
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        t = torch.randint(0, alphas_cumprod.shape[0], (x0.shape[0],), generator=generator)
        x_t = diffusion.add_noise(x0, noise, t, alphas_cumprod)
        return ((model(x_t, t, labels) - noise) ** 2).mean()

    assert_passes(check.diffusion_loss, fn)


def test_loss_catches_predicting_x0():
    assert_fails_with(check.diffusion_loss, _loss(target="x0"), "predicts the NOISE")


def test_loss_catches_predicting_x_t():
    assert_fails_with(check.diffusion_loss, _loss(target="x_t"), "not the noisy image")


def test_loss_catches_a_sum():
    assert_fails_with(check.diffusion_loss, _loss(reduction="sum"), "average")


def test_loss_catches_t_that_never_reaches_the_last_step():
    T = 50
    assert_fails_with(check.diffusion_loss, _loss(high=T - 1), "upper bound is exclusive")


def test_loss_catches_one_t_for_the_whole_batch():
    assert_fails_with(check.diffusion_loss, _loss(one_t=True), "one t per image")


def test_loss_catches_uniform_noise():
    assert_fails_with(check.diffusion_loss, _loss(rand=True), "torch.randn, not torch.rand")


def test_loss_catches_the_global_rng():
    assert_fails_with(check.diffusion_loss, _loss(use_generator=False), "from `generator`")


def test_loss_catches_a_fresh_noise_as_the_target():
    def fn(model, x0, labels, alphas_cumprod, generator=None):
        t = torch.randint(0, alphas_cumprod.shape[0], (x0.shape[0],), generator=generator)
        x_t = diffusion.add_noise(x0, torch.randn(x0.shape, generator=generator,
                                                   dtype=x0.dtype), t, alphas_cumprod)
        target = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)  # another draw
        return F.mse_loss(model(x_t, t, labels), target)

    assert_fails_with(check.diffusion_loss, fn, "the same noise that made x_t")


def test_loss_catches_t_that_never_is_zero():
    def fn(model, x0, labels, alphas_cumprod, generator=None):
        t = torch.randint(1, alphas_cumprod.shape[0], (x0.shape[0],), generator=generator)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        return F.mse_loss(model(diffusion.add_noise(x0, noise, t, alphas_cumprod), t, labels),
                          noise)

    assert_fails_with(check.diffusion_loss, fn, "t = 0 is a step too")


def test_loss_catches_t_from_1_to_T():
    def fn(model, x0, labels, alphas_cumprod, generator=None):
        T = alphas_cumprod.shape[0]
        t = torch.randint(1, T + 1, (x0.shape[0],), generator=generator)  # 1 .. T
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        x_t = diffusion.add_noise(x0, noise, t - 1, alphas_cumprod)
        return F.mse_loss(model(x_t, t, labels), noise)

    assert_fails_with(check.diffusion_loss, fn, "torch.randint(0, T, (B,))")


def test_loss_catches_non_uniform_timesteps():
    def fn(model, x0, labels, alphas_cumprod, generator=None):
        T = alphas_cumprod.shape[0]
        u = torch.rand(x0.shape[0], generator=generator, dtype=torch.float64)
        t = (u**2 * T).long()  # mostly small t
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        return F.mse_loss(model(diffusion.add_noise(x0, noise, t, alphas_cumprod), t, labels),
                          noise)

    assert_fails_with(check.diffusion_loss, fn, "draw t uniformly")


def test_loss_catches_float_timesteps():
    def fn(model, x0, labels, alphas_cumprod, generator=None):
        t = torch.randint(0, alphas_cumprod.shape[0], (x0.shape[0],), generator=generator)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        x_t = diffusion.add_noise(x0, noise, t, alphas_cumprod)
        return F.mse_loss(model(x_t, t.float(), labels), noise)

    assert_fails_with(check.diffusion_loss, fn, "(B,) int64 tensor")


def test_loss_catches_one_call_per_image():
    def fn(model, x0, labels, alphas_cumprod, generator=None):
        t = torch.randint(0, alphas_cumprod.shape[0], (x0.shape[0],), generator=generator)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        x_t = diffusion.add_noise(x0, noise, t, alphas_cumprod)
        out = torch.cat([model(x_t[i : i + 1], t[i : i + 1], labels[i : i + 1])
                         for i in range(x0.shape[0])])
        return F.mse_loss(out, noise)

    assert_fails_with(check.diffusion_loss, fn, "one forward pass")


def test_loss_catches_changing_x0():
    def fn(model, x0, labels, alphas_cumprod, generator=None):
        t = torch.randint(0, alphas_cumprod.shape[0], (x0.shape[0],), generator=generator)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        abar = alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = x0.mul_(abar.sqrt()).add_((1 - abar).sqrt() * noise)  # x0 overwritten
        return F.mse_loss(model(x_t, t, labels), noise)

    assert_fails_with(check.diffusion_loss, fn, "leave the inputs alone")


def test_loss_catches_dropping_labels_inside_the_loss():
    assert_fails_with(check.diffusion_loss, _loss(drop=True), "labels to the model unchanged")


# --------------------------------------------------------------------------- ddim_step


def _ddim(prev="right", current="right", root=True, clip_rule="right", keep_eps=True,
          float32=False):
    def fn(x_t, eps, t, t_prev, alphas_cumprod, generator=None, clip=True):
        ac = alphas_cumprod.float() if float32 else alphas_cumprod.to(x_t.dtype)
        a_t = ac[t - 1] if current == "t-1" else ac[t]
        if prev == "t-1":
            a_prev = ac[t - 1]
        elif prev == "python":
            a_prev = ac[t_prev]  # ac[-1] at the end
        else:
            a_prev = ac[t_prev] if t_prev >= 0 else torch.ones((), dtype=ac.dtype)
        sq = torch.sqrt if root else (lambda v: v)
        x0 = (x_t - sq(1 - a_t) * eps) / sq(a_t)
        do_clip = {"right": clip, "never": False, "always": True}[clip_rule]
        if do_clip:
            x0 = x0.clamp(-1, 1)
        e = eps if keep_eps else (x_t - a_t.sqrt() * x0) / (1 - a_t).sqrt()
        return sq(a_prev) * x0 + sq(1 - a_prev) * e

    return fn


def test_ddim_accepts_an_own_version():
    assert_passes(check.ddim_step, _ddim())


def test_ddim_catches_t_minus_one_for_the_jump():
    assert_fails_with(check.ddim_step, _ddim(prev="t-1"), "alphas_cumprod[t_prev]")


def test_ddim_catches_t_minus_one_for_the_current_step():
    assert_fails_with(check.ddim_step, _ddim(current="t-1"), "wrong alpha-bar index")


def test_ddim_catches_python_minus_one():
    assert_fails_with(check.ddim_step, _ddim(prev="python"), "LAST entry")


def test_ddim_catches_a_missing_square_root():
    assert_fails_with(check.ddim_step, _ddim(root=False), "missing square root")


def test_ddim_catches_no_clipping():
    assert_fails_with(check.ddim_step, _ddim(clip_rule="never"), "clamp the predicted x0")


def test_ddim_catches_clipping_when_told_not_to():
    assert_fails_with(check.ddim_step, _ddim(clip_rule="always"), "with clip=False, do not")


def test_ddim_catches_a_recomputed_eps():
    assert_fails_with(check.ddim_step, _ddim(keep_eps=False), "model's eps as given")


def test_ddim_catches_float32_rounding():
    assert_fails_with(check.ddim_step, _ddim(float32=True), "do not round anything to float32")


def test_ddim_catches_float64_out_for_float32_inputs():
    def fn(x_t, eps, t, t_prev, alphas_cumprod, generator=None, clip=True):
        return diffusion.ddim_step(x_t.double(), eps.double(), t, t_prev, alphas_cumprod,
                                   clip=clip)

    assert_fails_with(check.ddim_step, fn, "in x_t's dtype")


def test_ddim_catches_changing_x_t():
    def fn(x_t, eps, t, t_prev, alphas_cumprod, generator=None, clip=True):
        out = diffusion.ddim_step(x_t, eps, t, t_prev, alphas_cumprod, clip=clip)
        x_t.zero_()
        return out

    assert_fails_with(check.ddim_step, fn, "return a new tensor")


# --------------------------------------------------------------------------- sample_loop


def _loop(combine="right", order="down", last="clean", null="full_like", draw=torch.randn,
          use_generator=True, use_step=True, separate=False):
    def fn(model, labels, alphas_cumprod, steps, cfg_scale=1.0, generator=None, step=None):
        step = diffusion.ddim_step if (step is None or not use_step) else step
        g = generator if use_generator else None
        B = labels.shape[0]
        x = draw((B, *model.image_shape), generator=g, dtype=alphas_cumprod.dtype)
        ts = diffusion.sampling_timesteps(steps, alphas_cumprod.shape[0])
        if order == "up":
            ts = ts[::-1]
        pairs = list(zip(ts, ts[1:] + [-1], strict=True))
        if last == "skip":
            pairs = pairs[:-1]
        elif last == "minus_one":
            pairs = [(t, t - 1) for t, _ in pairs]
        if null == "full_like":
            nulls = torch.full_like(labels, model.null_class)
        else:
            nulls = torch.full((B,), model.null_class)
        for t, t_prev in pairs:
            tb = torch.full((B,), t)
            if cfg_scale == 1.0:
                eps = model(x, tb, labels)
            elif separate:
                c, u = model(x, tb, labels), model(x, tb, nulls)
                eps = u + cfg_scale * (c - u)
            else:
                c, u = model(torch.cat([x, x]), torch.cat([tb, tb]),
                             torch.cat([labels, nulls])).chunk(2)
                eps = {"right": u + cfg_scale * (c - u), "flipped": c + cfg_scale * (u - c),
                       "minus": u - cfg_scale * (c - u)}[combine]
            x = step(x, eps, t, t_prev, alphas_cumprod, generator)
        return x

    return fn


def test_loop_accepts_an_own_version():
    assert_passes(check.sample_loop, _loop())


def test_loop_accepts_two_passes_for_guidance():
    assert_passes(check.sample_loop, _loop(separate=True))


def test_loop_accepts_float32_noise():
    def fn(model, labels, alphas_cumprod, steps, cfg_scale=1.0, generator=None, step=None):
        return _loop()(model, labels, alphas_cumprod.float(), steps, cfg_scale, generator, step)

    assert_passes(check.sample_loop, fn)


def test_loop_catches_guidance_in_the_wrong_direction():
    assert_fails_with(check.sample_loop, _loop(combine="flipped"), "wrong direction")


def test_loop_catches_guidance_subtracted():
    assert_fails_with(check.sample_loop, _loop(combine="minus"), "wrong direction")


def test_loop_catches_the_timesteps_upwards():
    assert_fails_with(check.sample_loop, _loop(order="up"), "from the noisiest down")


def test_loop_catches_a_missing_last_step():
    assert_fails_with(check.sample_loop, _loop(last="skip"), "t_prev = -1")


def test_loop_catches_t_minus_one_as_the_next_step():
    assert_fails_with(check.sample_loop, _loop(last="minus_one"), "NEXT timestep")


def test_loop_catches_a_null_batch_that_only_fits_class_labels():
    assert_fails_with(check.sample_loop, _loop(null="full"), "full_like(labels")


def test_loop_catches_uniform_noise():
    assert_fails_with(check.sample_loop, _loop(draw=torch.rand), "Gaussian noise")


def test_loop_catches_the_global_rng():
    assert_fails_with(check.sample_loop, _loop(use_generator=False), "from `generator`")


def test_loop_catches_ignoring_the_step_argument():
    assert_fails_with(check.sample_loop, _loop(use_step=False), "`step` argument")


def test_loop_catches_a_zero_dimensional_t():
    def fn(model, labels, alphas_cumprod, steps, cfg_scale=1.0, generator=None, step=None):
        x = torch.randn((labels.shape[0], *model.image_shape), generator=generator,
                        dtype=alphas_cumprod.dtype)
        ts = diffusion.sampling_timesteps(steps, alphas_cumprod.shape[0])
        for t, t_prev in zip(ts, ts[1:] + [-1], strict=True):
            eps = model(x, torch.tensor(t), labels)  # one t for all, 0-d
            x = step(x, eps, t, t_prev, alphas_cumprod, generator)
        return x

    assert_fails_with(check.sample_loop, fn, "one t per image")


def test_loop_catches_a_fixed_seed_inside():
    def fn(model, labels, alphas_cumprod, steps, cfg_scale=1.0, generator=None, step=None):
        return _loop()(model, labels, alphas_cumprod, steps, cfg_scale,
                       torch.Generator().manual_seed(0), step)

    assert_fails_with(check.sample_loop, fn, "from `generator`")



# --------------------------------------------------------------------------- hints


@pytest.mark.parametrize("name", ["add_noise", "diffusion_loss", "ddim_step", "sample_loop"])
def test_every_exercise_has_three_hints_on_demand(name, capsys):
    assert len(getattr(check, name).hints) == 3
    for level in (1, 2, 3):
        check.hint(name, level)
        assert f"hint {level} of 3 for {name}" in capsys.readouterr().out
