"""Lesson 02's checks fail each classic mistake with the hint that names it.

What every lesson's checks must do (pass the reference, report an unfinished exercise, leave
the RNG and thread count alone) is tested once for all lessons in tests/test_checks_all.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from checking import assert_fails_with, assert_passes
from torch import nn

from minitok import fsq, vq
from minitok.checks import exercises_in
from minitok.checks import lesson02 as check
from minitok.quantize import nearest_code

pytestmark = pytest.mark.usefixtures("transport")  # local and through the wire

# --------------------------------------------------------------------------- straight_through


def test_straight_through_catches_the_wrong_side_detached():
    def wrong(z, q):
        return q + (z - q).detach()

    assert_fails_with(check.straight_through, wrong, "q + (z - q).detach()")


def test_straight_through_catches_no_estimator():
    def no_ste(z, q):
        return q

    def no_detach(z, q):
        return z + (q - z)

    assert_fails_with(check.straight_through, no_ste, "gives z no gradient")
    assert_fails_with(check.straight_through, no_detach, "gives z no gradient")


# --------------------------------------------------------------------------- vq_loss


def test_vq_loss_catches_beta_on_the_codebook_term():
    def legacy(z, q, beta):
        return beta * F.mse_loss(q, z.detach()) + F.mse_loss(z, q.detach())

    assert_fails_with(check.vq_loss, legacy, "beta is on the codebook term")


def test_vq_loss_catches_the_loss_on_q_st():
    def on_q_st(z, q, beta):
        q_st = z + (q - z).detach()
        return F.mse_loss(q_st, z.detach()) + beta * F.mse_loss(z, q_st.detach())

    assert_fails_with(check.vq_loss, on_q_st, "computed on q_st")


def test_vq_loss_catches_missing_detach_and_sums():
    def no_detach(z, q, beta):
        return (1 + beta) * F.mse_loss(z, q)

    def summed(z, q, beta):
        return ((q - z.detach()) ** 2).sum() + beta * ((z - q.detach()) ** 2).sum()

    def fixed_beta(z, q, beta):
        return vq.vq_loss(z, q, 0.25)

    assert_fails_with(check.vq_loss, no_detach, "commitment term")
    assert_fails_with(check.vq_loss, fixed_beta, "the beta argument")
    assert_fails_with(check.vq_loss, summed, "Use means, not sums")


# --------------------------------------------------------------------------- ema_update


def test_ema_case_discriminates_old_and_new_assignments():
    codebook, cluster_size, embed_avg, z = check._ema_case()
    step = vq.ema_update(codebook, cluster_size, embed_avg, z, check.EMA_DECAY_CASE)
    assert not torch.equal(nearest_code(z, step.codebook), step.indices)


def test_ema_update_catches_the_updated_codebooks_assignments():
    def wrong(codebook, cluster_size, embed_avg, z, decay, eps=1e-5):
        first = vq.ema_update(codebook, cluster_size, embed_avg, z, decay, eps)
        # re-assigned with the updated codes: ema_update's codebook only decides assignments
        return vq.ema_update(first.codebook, cluster_size, embed_avg, z, decay, eps)

    def wrong_stats_only(codebook, cluster_size, embed_avg, z, decay, eps=1e-5):
        first = vq.ema_update(codebook, cluster_size, embed_avg, z, decay, eps)
        _, size, avg, new = vq.ema_update(first.codebook, cluster_size, embed_avg, z, decay, eps)
        return first.indices, size, avg, new

    assert_fails_with(check.ema_update, wrong, "UPDATED codebook's assignments")
    assert_fails_with(check.ema_update, wrong_stats_only, "UPDATED codebook's assignments")


def test_ema_update_catches_no_smoothing_mean_and_in_place():
    def raw_counts(codebook, cluster_size, embed_avg, z, decay, eps=1e-5):
        step = vq.ema_update(codebook, cluster_size, embed_avg, z, decay, eps)
        return (
            step.indices,
            step.cluster_size,
            step.embed_avg,
            step.embed_avg / step.cluster_size[:, None],
        )

    def means(codebook, cluster_size, embed_avg, z, decay, eps=1e-5):
        indices = nearest_code(z, codebook)
        counts = torch.bincount(indices, minlength=codebook.shape[0]).float()
        sums = torch.zeros_like(embed_avg).index_add_(0, indices, z)
        size = decay * cluster_size + (1 - decay) * counts
        avg = decay * embed_avg + (1 - decay) * sums / counts.clamp_min(1)[:, None]
        return indices, size, avg, avg / vq.laplace_smoothed(size, eps)[:, None]

    def in_place(codebook, cluster_size, embed_avg, z, decay, eps=1e-5):
        step = vq.ema_update(codebook, cluster_size, embed_avg, z, decay, eps)
        cluster_size.copy_(step.cluster_size)
        return step

    def decay_swapped(codebook, cluster_size, embed_avg, z, decay, eps=1e-5):
        return vq.ema_update(codebook, cluster_size, embed_avg, z, 1 - decay, eps)

    assert_fails_with(check.ema_update, decay_swapped, "multiplies the OLD statistic")
    def fixed_eps(codebook, cluster_size, embed_avg, z, decay, eps=1e-5):
        return vq.ema_update(codebook, cluster_size, embed_avg, z, decay)

    assert_fails_with(check.ema_update, raw_counts, "Laplace smoothing")
    assert_fails_with(check.ema_update, fixed_eps, "smoothed N_k")
    assert_fails_with(check.ema_update, means, "SUM of the vectors")
    assert_fails_with(check.ema_update, in_place, "return new tensors")


# --------------------------------------------------------------------------- fsq_quantize


def test_fsq_catches_rounding_without_ste():
    def plain_round(z, levels):
        return fsq.fsq_bound(z, levels).round() / (torch.tensor(levels) // 2)

    assert_fails_with(check.fsq_quantize, plain_round, "round() has zero gradient")


def test_fsq_catches_missing_even_offset_and_wrong_scale():
    def no_offset(z, levels):
        half_l = (torch.tensor(levels) - 1) * (1 + 1e-3) / 2
        return fsq.round_ste(torch.tanh(z) * half_l) / (torch.tensor(levels) // 2)

    def scaled_by_half_l(z, levels):
        half_l = (torch.tensor(levels) - 1) * (1 + 1e-3) / 2
        return fsq.round_ste(fsq.fsq_bound(z, levels)) / half_l

    assert_fails_with(check.fsq_quantize, no_offset, "even L needs the offset")
    assert_fails_with(check.fsq_quantize, scaled_by_half_l, "divide by L // 2")


# --------------------------------------------------------------------------- VectorQuantizer


def learner_vq(ema_decay=lambda d: d, loss_kind="vq", output="ste", update_in_eval=False,
               update=True, update_first=False, permute=True, beta=None, names=True,
               parameter=None, fields=5, in_place=False, usage="tensor"):
    """A learner's VectorQuantizer as the notebook's solution writes it, with one mistake
    switched on by an argument (the defaults give the correct class)."""

    class LearnerVQ(nn.Module):
        def __init__(self, num_codes, dim, beta_=0.25, *, ema=False, decay=0.99, eps=1e-5):
            super().__init__()
            self.num_codes, self.dim = num_codes, dim
            self.beta = beta_ if beta is None else beta
            self.ema, self.decay, self.eps = ema, decay, eps
            init = torch.empty(num_codes, dim).uniform_(-1 / num_codes, 1 / num_codes)
            if ema:
                self.register_buffer("cluster_size" if names else "counts", torch.ones(num_codes))
                self.register_buffer("embed_avg", init.clone())
            if parameter if parameter is not None else not ema:
                self.codebook = nn.Parameter(init)
            else:
                self.register_buffer("codebook", init)

        def _ema_step(self, z_last):
            with torch.no_grad():
                flat = z_last.detach().reshape(-1, self.dim)
                _, size, avg, codebook = vq.ema_update(self.codebook, self.cluster_size,
                                                       self.embed_avg, flat,
                                                       ema_decay(self.decay), self.eps)
                self.cluster_size.copy_(size)
                self.embed_avg.copy_(avg)
                self.codebook.copy_(codebook)

        def forward(self, z):
            if in_place:  # a learner's in-place op on the caller's tensor
                z.data.mul_(2.0)
            z_last = z.permute(0, 2, 3, 1) if z.dim() == 4 and permute else z
            ema_now = self.ema and update and (self.training or update_in_eval)
            if ema_now and update_first:
                self._ema_step(z_last)
            indices = nearest_code(z_last.detach(), self.codebook.detach())
            q = self.codebook[indices]
            q_st = vq.straight_through(z_last, q)
            if loss_kind == "vq":
                loss = (self.beta * F.mse_loss(z_last, q.detach()) if self.ema
                        else vq.vq_loss(z_last, q, self.beta))
            elif loss_kind == "full":  # the codebook term also with EMA
                loss = vq.vq_loss(z_last, q, self.beta)
            elif loss_kind == "no_detach":
                loss = (1 + self.beta) * F.mse_loss(z_last, q)
            elif loss_kind == "swapped":
                loss = self.beta * F.mse_loss(q, z_last.detach()) + F.mse_loss(z_last, q.detach())
            else:  # "on_q_st"
                loss = vq.vq_loss(z_last, q_st, self.beta)
            quantized = {"ste": q_st, "q": q, "z": z_last + 0 * q.detach(),
                         "leak": q + z_last - z_last.detach()}[output]
            if z.dim() == 4 and permute:
                quantized = quantized.permute(0, 3, 1, 2)
            perplexity, used = vq.usage_stats(indices, self.num_codes)
            if usage == "count":  # the number of codes used, not the fraction
                used = used * self.num_codes
            if ema_now and not update_first:
                self._ema_step(z_last)
            return vq.VQOutput(quantized, indices, loss, perplexity, used)[:fields]

    return LearnerVQ


def test_vq_passes_a_learners_class():
    assert_passes(check.VectorQuantizer, learner_vq())


def test_vq_catches_other_names():
    assert_fails_with(check.VectorQuantizer, learner_vq(names=False), "cluster_size")


def test_vq_catches_no_straight_through_and_the_wrong_side():
    assert_fails_with(check.VectorQuantizer, learner_vq(output="q"), "straight_through(z, q)")
    assert_fails_with(check.VectorQuantizer, learner_vq(output="z"), "q + (z - q).detach()")


def test_vq_catches_swapped_losses_loss_on_q_st_and_a_fixed_beta():
    assert_fails_with(check.VectorQuantizer, learner_vq(loss_kind="swapped"),
                      "beta is on the codebook term")
    assert_fails_with(check.VectorQuantizer, learner_vq(loss_kind="on_q_st"),
                      "computed on the straight-through")
    assert_fails_with(check.VectorQuantizer, learner_vq(beta=0.25), "self.beta")


def test_vq_catches_the_channels_left_first():
    assert_fails_with(check.VectorQuantizer, learner_vq(permute=False), "permute(0, 2, 3, 1)")


def test_vq_catches_ema_mistakes():
    assert_fails_with(check.VectorQuantizer, learner_vq(loss_kind="full"),
                      "only beta times the commitment loss")
    assert_fails_with(check.VectorQuantizer, learner_vq(ema_decay=lambda d: 1 - d),
                      "decay on the wrong term")
    assert_fails_with(check.VectorQuantizer, learner_vq(update=False),
                      "in train() mode call ema_update")
    assert_fails_with(check.VectorQuantizer, learner_vq(update_in_eval=True),
                      "only when self.training")
    assert_fails_with(check.VectorQuantizer, learner_vq(update_first=True),
                      "AFTER the EMA step")


# --------------------------------------------------------------------------- hints


def test_every_check_has_three_hints(capsys):
    """Idea, formula, near-code, on request (check.hint(name, level))."""
    for name, check_fn in exercises_in(check).items():
        assert len(check_fn.hints) == 3 and all(check_fn.hints), name
        check.hint(name, 3)
        assert f"hint 3 of 3 for {name}" in capsys.readouterr().out


def test_vq_catches_parameter_or_buffer_mixed_up():
    assert_fails_with(check.VectorQuantizer, learner_vq(parameter=False), "nn.Parameter")
    assert_fails_with(check.VectorQuantizer, learner_vq(parameter=True), "register_buffer")


def test_vq_catches_a_leak_a_missing_detach_usage_and_a_short_output():
    assert_fails_with(check.VectorQuantizer, learner_vq(output="leak"),
                      "the codebook learns from the loss only")
    assert_fails_with(check.VectorQuantizer, learner_vq(loss_kind="no_detach"),
                      "detach z there")
    assert_fails_with(check.VectorQuantizer, learner_vq(usage="count"), "usage_stats")
    assert_fails_with(check.VectorQuantizer, learner_vq(fields=4), "forward returns a VQOutput")
    assert_fails_with(check.VectorQuantizer, learner_vq(in_place=True), "do not modify z")


class InlineVQ(nn.Module):
    """Correct but different: flattened lookup by cdist, F.embedding, EMA written inline."""

    def __init__(self, num_codes, dim, beta=0.25, *, ema=False, decay=0.99, eps=1e-5):
        super().__init__()
        self.num_codes, self.dim, self.beta = num_codes, dim, beta
        self.ema, self.decay, self.eps = ema, decay, eps
        init = torch.rand(num_codes, dim) * 2 / num_codes - 1 / num_codes
        if ema:
            self.register_buffer("codebook", init)
            self.register_buffer("cluster_size", torch.ones(num_codes))
            self.register_buffer("embed_avg", init.clone())
        else:
            self.codebook = nn.Parameter(init)

    def forward(self, z):
        four = z.dim() == 4
        z_last = z.movedim(1, -1).contiguous() if four else z
        flat = z_last.reshape(-1, self.dim)
        indices = torch.cdist(flat.detach(), self.codebook.detach()).argmin(dim=1)
        q_flat = F.embedding(indices, self.codebook)
        q = q_flat.reshape(z_last.shape)
        if self.ema:
            loss = self.beta * ((z_last - q.detach()) ** 2).mean()
        else:
            loss = ((q - z_last.detach()) ** 2).mean() + self.beta * ((z_last - q.detach()) ** 2).mean()
        quantized = z_last + (q - z_last).detach()
        quantized = quantized.movedim(-1, 1) if four else quantized
        indices = indices.reshape(z_last.shape[:-1])
        perplexity, usage = vq.usage_stats(indices, self.num_codes)
        if self.training and self.ema:
            with torch.no_grad():
                onehot = F.one_hot(indices.flatten(), self.num_codes).float()  # (M, K)
                self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
                self.embed_avg.mul_(self.decay).add_(onehot.T @ flat, alpha=1 - self.decay)
                total = self.cluster_size.sum()
                smoothed = (self.cluster_size + self.eps) / (total + self.num_codes * self.eps)
                self.codebook.copy_(self.embed_avg / (smoothed * total)[:, None])
        return vq.VQOutput(quantized, indices, loss, perplexity, usage)


def test_vq_passes_a_correct_but_different_class():
    assert_passes(check.VectorQuantizer, InlineVQ)
