"""Lesson 03's checks fail each classic mistake with the hint that names it.

What every lesson's checks must do (pass the reference, report an unfinished exercise, leave
the RNG and thread count alone) is tested once for all lessons in tests/test_checks_all.py.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from checking import assert_each_hint_is_its_own, assert_fails_with, assert_passes

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


# --------------------------------------------------------------------------- fit_tokenizer


def _loop(model, images, train, step_fn=None, disc=None, progress=False, *, mistake=None):
    """A learner's loop, written out, with one classic `mistake` switched on."""
    from minitok.tokenizer import tokenizer_step
    from minitok.training import lr_scale

    step_fn = tokenizer_step if step_fn is None or mistake == "not called" else step_fn
    seed = 0 if mistake == "seed 0" else train.seed
    generator = torch.Generator().manual_seed(seed)
    optimizer_class = torch.optim.AdamW if mistake == "AdamW" else torch.optim.Adam
    optimizer = optimizer_class(model.parameters(), lr=train.lr)
    if disc is not None:
        betas = (0.9, 0.999) if mistake == "D betas" else (0.5, 0.9)
        d_optimizer = torch.optim.Adam(disc.parameters(), lr=train.disc_lr, betas=betas)
    if mistake != "no train()":
        model.train()
    history = {}
    for step in range(train.steps):
        if mistake == "new optimizer":
            optimizer = torch.optim.Adam(model.parameters(), lr=train.lr)
        scale = {"constant lr": 1.0, "lr ahead": lr_scale(step + 1, train.steps),
                 "lr after": lr_scale(step - 1, train.steps) if step else 1.0}
        for group in optimizer.param_groups:
            group["lr"] = train.lr * scale.get(mistake, lr_scale(step, train.steps))
        size = 2 if mistake == "batch size" else train.batch_size
        rows = (torch.randint(0, len(images), (size,)) if mistake == "global RNG"
                else torch.randint(0, len(images), (size,), generator=generator))
        batch = images[rows]
        start = {"late gate": train.disc_start + 1, "no gate": 0}.get(mistake, train.disc_start)
        if disc is not None and step >= start:
            weights = ((1.0, 1e4) if mistake == "weights dropped"
                       else (train.disc_weight, train.max_weight))
            stats = step_fn(model, batch, optimizer, disc, d_optimizer, *weights)
        else:
            stats = step_fn(model, batch, optimizer)
            if disc is not None and mistake != "no zeros":
                stats = {**stats, "g_loss": 0.0, "d_loss": 0.0, "lambda": 0.0}
        for name, value in stats.items():
            history.setdefault(name, []).append(value)
    if mistake != "no eval()":
        model.eval()
    return list(history["rec"]) if mistake == "a list" else history


LOOP_MISTAKES = {
    "not called": "call the step you are given",
    "global RNG": "global random state",
    "seed 0": "seed the batches' generator with train.seed",
    "batch size": "a batch is train.batch_size rows",
    "constant lr": "stayed at train.lr",
    "lr ahead": "one step ahead",
    "lr after": "set after the step",
    "new optimizer": "a new optimizer was built during the run",
    "AdamW": "Adam's default betas",
    "no train()": "model.train() before the loop",
    "no eval()": "model.eval() after the loop",
    "late gate": "one step late",
    "no gate": "before it, call the plain step",
    "D betas": "betas=(0.5, 0.9)), taming's",
    "weights dropped": "pass the run's weights on",
    "no zeros": "log 'g_loss', 'd_loss' and 'lambda' as 0.0",
    "a list": "return a dict",
}


@pytest.mark.parametrize("mistake", list(LOOP_MISTAKES))
def test_fit_tokenizer_catches(mistake):
    def wrong(*args, **kwargs):
        return _loop(*args, **kwargs, mistake=mistake)

    assert_fails_with(check.fit_tokenizer, wrong, LOOP_MISTAKES[mistake])


def test_fit_tokenizer_names_each_mistake_with_its_own_hint():
    rows = [(functools.partial(_loop, mistake=mistake), (words,))
            for mistake, words in LOOP_MISTAKES.items()]
    assert_each_hint_is_its_own(check.fit_tokenizer, rows)


def test_fit_tokenizer_passes_correct_variants():
    from minitok.training import lr_scale
    from minitok.vqgan import disc_factor

    def variant(model, images, train, step_fn, disc=None, progress=False):
        # torch's LambdaLR for the schedule, D's optimizer built when it joins, taming's gate
        generator = torch.Generator().manual_seed(train.seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=train.lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_scale(step, train.steps))
        d_optimizer, history = None, {"rec": [], "vq": [], "usage": [], "perplexity": []}
        if disc is not None:
            history.update(g_loss=[], d_loss=[], **{"lambda": []})
        model.train()
        for step in range(train.steps):
            batch = images[torch.randint(0, images.shape[0], (train.batch_size,),
                                         generator=generator)]
            if disc is not None and disc_factor(step, train.disc_start) > 0:
                if d_optimizer is None:
                    d_optimizer = torch.optim.Adam(disc.parameters(), lr=train.disc_lr,
                                                   betas=(0.5, 0.9))
                stats = step_fn(model, batch, optimizer, disc, d_optimizer,
                                disc_weight=train.disc_weight, max_weight=train.max_weight)
            else:
                stats = dict.fromkeys(history, 0.0) | step_fn(model, batch, optimizer)
            for name in history:
                history[name].append(stats[name])
            schedule.step()
        model.eval()
        return history

    assert_passes(check.fit_tokenizer, variant)
    assert_passes(check.fit_tokenizer, _loop)


def test_fit_tokenizer_is_the_loop_train_tokenizer_runs():
    """The package's train_tokenizer hands its model to the loop it is given (Lesson 03
    passes the learner's), and the exercise's reference is that loop."""
    from minitok.tokenizer import TokenizerConfig, TrainConfig, fit_tokenizer, train_tokenizer

    seen = []

    def loop(model, images, train, step_fn, disc=None, progress=False):
        seen.append((type(model).__name__, tuple(images.shape), train.steps, disc is None))
        return fit_tokenizer(model, images, train, step_fn, disc, progress)

    images = torch.rand(10, 1, 8, 8) * 2 - 1
    config = TokenizerConfig(image_size=8, channels=8, num_codes=8)
    mine, history = train_tokenizer(config, TrainConfig(steps=3, batch_size=4), images,
                                    progress=False, loop=loop)
    ref, ref_history = train_tokenizer(config, TrainConfig(steps=3, batch_size=4), images,
                                       progress=False)
    assert seen == [("VQTokenizer", (10, 1, 8, 8), 3, True)]
    assert history == ref_history and not mine.training
    assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(),
                                                 ref.state_dict().values(), strict=True))
    assert check.fit_tokenizer.reference is fit_tokenizer


# --------------------------------------------------------------------------- hints


def test_every_check_has_three_hints():
    from minitok.checks import exercises_in

    for name, one in exercises_in(check).items():
        assert len(one.hints) == 3 and all(len(h) > 40 for h in one.hints), name
