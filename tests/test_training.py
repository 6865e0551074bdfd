"""minitok.training: the one schedule, the one loop, the token models' recipe.

lr_scale against its definition (linear warm-up, then a cosine from the peak to 10%);
train_loop sets every optimiser group's learning rate from its own initial value, runs on
one thread with deterministic kernels and puts both settings back; fit repeats itself for a
seed.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from minitok.training import FLOOR, fit, lr_scale, train_loop

# --------------------------------------------------------------------------- lr_scale


@pytest.mark.parametrize("steps, warmup", [(2000, None), (2000, 100), (6000, 100), (40, 7),
                                           (20, None)])
def test_lr_scale_warms_up_linearly_then_decays_to_the_floor(steps, warmup):
    w = max(1, steps // 20) if warmup is None else warmup
    scales = [lr_scale(step, steps, warmup) for step in range(steps)]
    # warm-up: (step + 1) / w, a straight line that reaches 1 at step w - 1
    for step in range(w):
        assert scales[step] == pytest.approx((step + 1) / w, rel=1e-12)
    assert scales[w - 1] == 1.0
    # after it: a cosine from 1 towards FLOOR = 0.1, never rising, never below the floor
    after = scales[w - 1:]
    assert all(b <= a for a, b in zip(after, after[1:], strict=False))
    assert all(s > FLOOR for s in after[:-1]) and min(after) >= FLOOR
    # the last step sits within one cosine step of the floor; one step later it is the floor
    last_gap = (1 - FLOOR) * 0.5 * (1 - math.cos(math.pi / (steps - w)))
    assert scales[-1] == pytest.approx(FLOOR + last_gap, rel=1e-9)
    assert lr_scale(steps, steps, warmup) == pytest.approx(FLOOR, abs=1e-15)
    # half-way through the decay: half-way between the peak and the floor
    if (steps - w) % 2 == 0:
        assert lr_scale(w + (steps - w) // 2, steps, warmup) == pytest.approx((1 + FLOOR) / 2)


def test_lr_scale_ends_at_a_tenth_for_the_shipped_recipes():
    assert FLOOR == 0.1
    assert lr_scale(1999, 2000) == pytest.approx(0.1, abs=1e-5)  # prior, MaskGIT, tokenizer
    assert lr_scale(5999, 6000, 100) == pytest.approx(0.1, abs=1e-5)  # any-to-any


def test_lr_scale_default_warmup_is_five_percent_and_at_least_one_step():
    assert lr_scale(0, 2000) == 1 / 100 and lr_scale(99, 2000) == 1.0
    assert lr_scale(0, 10) == 1.0  # 10 // 20 = 0: one step of warm-up
    assert lr_scale(0, 10, warmup=0) == 1.0


# --------------------------------------------------------------------------- train_loop


def test_train_loop_sets_each_groups_lr_from_its_initial_value_and_collects_values():
    a, b, c = (nn.Parameter(torch.zeros(1)) for _ in range(3))
    first = torch.optim.SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.5}])
    second = torch.optim.Adam([c], lr=0.01)
    groups = [*first.param_groups, *second.param_groups]
    seen = []

    def step_fn(step):
        seen.append([g["lr"] for g in groups])
        return {"loss": float(step), "twice": 2.0 * step}

    history = train_loop(step_fn, 10, [first, second], warmup=3, progress=False)
    assert history == {"loss": [float(s) for s in range(10)],
                       "twice": [2.0 * s for s in range(10)]}
    for step, lrs in enumerate(seen):
        scale = lr_scale(step, 10, 3)
        assert lrs == pytest.approx([1.0 * scale, 0.5 * scale, 0.01 * scale], rel=1e-12)


def test_train_loop_runs_on_one_deterministic_thread_and_restores_both_settings():
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    torch.set_num_threads(2)  # not 1: a loop that pins 1 thread and forgets fails here
    torch.use_deterministic_algorithms(False)
    seen = []
    try:
        train_loop(lambda step: seen.append((torch.get_num_threads(),
                                             torch.are_deterministic_algorithms_enabled()))
                   or {}, 3, [], progress=False)
        assert seen == [(1, True)] * 3
        assert torch.get_num_threads() == 2 and not torch.are_deterministic_algorithms_enabled()

        def broken(step):
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            train_loop(broken, 3, [], progress=False)
        assert torch.get_num_threads() == 2 and not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1], warn_only=before[2])


@pytest.mark.parametrize("steps", [0, -1, 2.0, True])
def test_train_loop_refuses_a_bad_number_of_steps(steps):
    with pytest.raises(ValueError, match="steps must be a positive int"):
        train_loop(lambda step: {}, steps, [], progress=False)


# --------------------------------------------------------------------------- fit


def _regression(seed: int = 0):
    """A tiny model and a loss on random mini-batches of a fixed linear problem."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1), nn.Linear(8, 1))
    x = torch.randn(256, 4, generator=torch.Generator().manual_seed(99))
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])

    def batch_loss(generator):
        rows = torch.randint(0, 256, (16,), generator=generator)
        return ((model(x[rows]) - y[rows]) ** 2).mean()

    return model, batch_loss


def test_fit_gives_identical_losses_for_the_same_seed_and_learns():
    runs = []
    for _ in range(2):
        model, batch_loss = _regression()
        runs.append(fit(model, batch_loss, 60, lr=1e-2, seed=3, progress=False))
        assert not model.training  # left in eval mode
    assert runs[0] == runs[1] and len(runs[0]) == 60
    assert sum(runs[0][-10:]) < 0.5 * sum(runs[0][:10])
    model, batch_loss = _regression()
    assert fit(model, batch_loss, 60, lr=1e-2, seed=4, progress=False) != runs[0]


def test_fit_draws_the_batches_from_a_generator_seeded_with_seed():
    model, _ = _regression()
    draws = []

    def batch_loss(generator):
        draws.append(torch.rand(1, generator=generator).item())
        return model(torch.ones(1, 4)).sum()

    fit(model, batch_loss, 3, seed=7, progress=False)
    expected = torch.rand(3, generator=torch.Generator().manual_seed(7)).tolist()
    assert draws == pytest.approx(expected)


def test_fit_clips_the_gradient_norm_at_one():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    # a huge gradient (1e6) reaches the optimiser clipped to norm 1
    grads = []  # what backward computed, before the clipping
    model.weight.register_hook(lambda g: grads.append(g.clone()))

    def batch_loss(generator):
        return 1e6 * model(torch.ones(1, 1)).sum()

    fit(model, batch_loss, 2, lr=1e-3, weight_decay=0.0, progress=False)
    assert grads[0].abs().item() == pytest.approx(1e6)
    assert model.weight.grad.norm().item() == pytest.approx(1.0, rel=1e-5)  # after clipping


def test_fit_measures_the_held_out_loss_in_eval_mode_without_gradients(capsys):
    model, batch_loss = _regression()
    updates, seen = [], []

    def counted(generator):
        updates.append(model.training)
        return batch_loss(generator)

    def eval_loss():
        seen.append((len(updates), model.training, torch.is_grad_enabled()))
        return torch.tensor(0.25)

    losses = fit(model, counted, 12, lr=1e-2, eval_loss=eval_loss, eval_every=5)
    assert [after for after, _, _ in seen] == [5, 10, 12]  # every 5th update and the last
    assert not any(training or grad for _, training, grad in seen)
    assert all(updates) and not model.training  # each step in train mode, eval at the end
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"step {n:4d}: train loss {losses[n - 1]:.3f}, held-out loss 0.250"
                     for n in (5, 10, 12)]


def test_fit_without_a_held_out_loss_prints_nothing_and_matches_with_it(capsys):
    model, batch_loss = _regression()
    plain = fit(model, batch_loss, 12, lr=1e-2)
    weights = [p.detach().clone() for p in model.parameters()]
    assert capsys.readouterr().out == ""
    model, batch_loss = _regression()  # measuring (in eval mode, no grad) changes no update
    measured = fit(model, batch_loss, 12, lr=1e-2, eval_loss=lambda: 0.0, eval_every=3)
    assert measured == plain
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters(), strict=True))
