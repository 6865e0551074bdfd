"""Lesson 02's checks fail each classic mistake with the hint that names it.

What every lesson's checks must do (pass the reference, report an unfinished exercise, leave
the RNG and thread count alone) is tested once for all lessons in tests/test_checks_all.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from checking import assert_fails_with

from minitok import fsq, vq
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

    assert_fails_with(check.vq_loss, no_detach, "commitment term")
    assert_fails_with(check.vq_loss, summed, "Use means, not sums")


# --------------------------------------------------------------------------- ema_update


def test_ema_case_discriminates_old_and_new_assignments():
    codebook, cluster_size, embed_avg, z = check._ema_case()
    step = vq.ema_update(codebook, cluster_size, embed_avg, z, 0.5)
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

    assert_fails_with(check.ema_update, raw_counts, "Laplace smoothing")
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
