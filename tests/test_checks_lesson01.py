"""Lesson 01's checks fail each classic mistake with the hint that names it and pass a
learner's correct code.

What every lesson's checks must do (pass the reference, report an unfinished exercise, leave
the RNG and thread count alone) is tested once for all lessons in tests/test_checks_all.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from checking import assert_each_hint_is_its_own, assert_fails_with, assert_passes, verdict

from minitok import quantize
from minitok.checks import exercises_in
from minitok.checks import lesson01 as check
from minitok.checks._core import _hints_seen

pytestmark = pytest.mark.usefixtures("transport")  # local and through the wire


def test_precision_trap_is_a_real_trap():
    """fp32 finds the planted codes; the same expansion in bf16 does not."""
    z, codebook, answer = check.precision_trap(torch.Generator().manual_seed(0))
    assert torch.equal(quantize.nearest_code(z, codebook), answer)
    assert torch.equal(z.bfloat16().float(), z) and torch.equal(codebook.bfloat16().float(), codebook)
    zb, cb = z.bfloat16(), codebook.bfloat16()
    bf16 = ((zb * zb).sum(1, keepdim=True) - 2 * zb @ cb.t() + (cb * cb).sum(1)).argmin(1)
    assert (bf16 != answer).sum() >= 5


# --------------------------------------------------------------------------- squared_distances


def learner_distances(z, codebook):
    """How a learner writes it after reading the lesson."""
    with torch.autocast(device_type=z.device.type, enabled=False):
        z, codebook = z.float(), codebook.float()
        z_sq = (z**2).sum(dim=1, keepdim=True)
        e_sq = (codebook**2).sum(dim=1)
        return z_sq - 2 * z @ codebook.T + e_sq


def test_squared_distances_accepts_a_learners_version():
    assert_passes(check.squared_distances, learner_distances)


def test_squared_distances_catches_the_wrong_sign():
    def wrong(z, codebook):
        return (z**2).sum(1, keepdim=True) + 2 * z @ codebook.T + (codebook**2).sum(1)

    assert_fails_with(check.squared_distances, wrong, "minus sign")


def test_squared_distances_catches_a_missing_two():
    def wrong(z, codebook):
        return (z**2).sum(1, keepdim=True) - z @ codebook.T + (codebook**2).sum(1)

    assert_fails_with(check.squared_distances, wrong, "twice the dot product")


def test_squared_distances_catches_a_square_root():
    def wrong(z, codebook):
        return torch.cdist(z, codebook)

    assert_fails_with(check.squared_distances, wrong, "no square root")


def test_squared_distances_catches_the_transpose():
    def wrong(z, codebook):
        return learner_distances(codebook, z)

    assert_fails_with(check.squared_distances, wrong, "(N, K)")


def test_squared_distances_mistakes_each_get_their_own_hint():
    def expanded(sign=-1.0, two=2.0, z_sq=True):
        def fn(z, codebook):
            z, codebook = z.float(), codebook.float()
            norm = (z**2).sum(1, keepdim=True) if z_sq else 0 * z[:, :1]
            return norm + sign * two * z @ codebook.T + (codebook**2).sum(1)
        return fn

    assert_each_hint_is_its_own(check.squared_distances, [
        (expanded(sign=1.0), ("minus sign",)),
        (expanded(two=1.0), ("twice the dot product",)),
        (torch.cdist, ("no square root",)),
        (expanded(z_sq=False), ("||z||^2 is missing",)),
        (lambda z, c: learner_distances(z, c) + 0.25, ("every pair's squared distance",)),
    ])


def test_squared_distances_catches_low_precision_under_autocast():
    def wrong(z, codebook):  # correct in float32, but the matmul follows autocast into bf16
        return (z**2).sum(1, keepdim=True) - 2 * z @ codebook.T + (codebook**2).sum(1)

    assert_fails_with(check.squared_distances, wrong, "lost precision")


def test_squared_distances_catches_bf16_arithmetic_on_bf16_inputs():
    def wrong(z, codebook):  # autocast is off, but bf16 inputs are never cast up
        with torch.autocast(device_type=z.device.type, enabled=False):
            return (z**2).sum(1, keepdim=True) - 2 * z @ codebook.T + (codebook**2).sum(1)

    assert_fails_with(check.squared_distances, wrong, "lost precision")


# --------------------------------------------------------------------------- nearest_code


def learner_nearest(z, codebook, chunk_size=None, argmin_dim=1, drop_last=False, argmax=False):
    flat = z.reshape(-1, z.shape[-1])
    n = flat.shape[0]
    step = n if chunk_size is None else chunk_size
    indices = torch.zeros(n, dtype=torch.long)
    stop = n - step + 1 if drop_last else n
    for start in range(0, stop, step):
        d = learner_distances(flat[start : start + step], codebook)
        found = d.argmax(dim=1) if argmax else d.argmin(dim=argmin_dim)
        if argmin_dim == 0:
            return found
        indices[start : start + step] = found
    return indices.reshape(z.shape[:-1])


def test_nearest_code_accepts_a_learners_version():
    assert_passes(check.nearest_code, learner_nearest)


def test_nearest_code_catches_argmin_over_the_wrong_axis():
    def wrong(z, codebook, chunk_size=None):
        return learner_nearest(z, codebook, chunk_size, argmin_dim=0)

    assert_fails_with(check.nearest_code, wrong, "argmin over dim=1")


def test_nearest_code_catches_argmin_over_the_wrong_axis_when_n_equals_k():
    def wrong(z, codebook, chunk_size=None):  # right shape whenever N = K
        if z.shape[0] == codebook.shape[0]:
            return learner_distances(z, codebook).argmin(dim=0)
        return learner_nearest(z, codebook, chunk_size)

    assert_fails_with(check.nearest_code, wrong, "argmin over dim=1")


def test_nearest_code_catches_argmax():
    def wrong(z, codebook, chunk_size=None):
        return learner_nearest(z, codebook, chunk_size, argmax=True)

    assert_fails_with(check.nearest_code, wrong, "argmin, not argmax")


def test_nearest_code_mistakes_each_get_their_own_hint():
    def wrong_axis(z, codebook, chunk_size=None):  # right shape whenever N = K
        if z.shape[0] == codebook.shape[0]:
            return learner_distances(z, codebook).argmin(dim=0)
        return learner_nearest(z, codebook, chunk_size)

    assert_each_hint_is_its_own(check.nearest_code, [
        (wrong_axis, ("argmin over dim=1",)),
        (lambda z, c, chunk_size=None: learner_nearest(z, c, chunk_size, argmax=True),
         ("argmin, not argmax",)),
        (lambda z, c, chunk_size=None: (learner_nearest(z, c, chunk_size) + 1) % len(c),
         ("index of its smallest squared distance",)),
    ])


def test_nearest_code_catches_lost_leading_dims():
    def wrong(z, codebook, chunk_size=None):
        return learner_nearest(z, codebook, chunk_size).reshape(-1)

    assert_fails_with(check.nearest_code, wrong, "z.shape[:-1]")


def test_nearest_code_catches_a_dropped_last_chunk():
    def wrong(z, codebook, chunk_size=None):
        return learner_nearest(z, codebook, chunk_size, drop_last=True)

    assert_fails_with(check.nearest_code, wrong, "the last, shorter chunk")


def test_nearest_code_catches_an_ignored_chunk_size():
    """The same indices, but all N x K distances at once: chunk_size only changes memory."""
    def wrong(z, codebook, chunk_size=None):
        return learner_nearest(z, codebook)  # chunk_size ignored

    assert_fails_with(check.nearest_code, wrong, "chunk_size bounds the memory")


def test_nearest_code_catches_chunks_cut_from_all_the_distances():
    def wrong(z, codebook, chunk_size=None):
        flat = z.reshape(-1, z.shape[-1])
        d = learner_distances(flat, codebook)  # (N, K) at once, then cut
        step = len(flat) if chunk_size is None else chunk_size
        found = [d[s : s + step].argmin(dim=1) for s in range(0, len(flat), step)]
        return torch.cat(found).reshape(z.shape[:-1])

    assert_fails_with(check.nearest_code, wrong, "chunk_size bounds the memory")


def test_nearest_code_catches_low_precision_distances():
    def wrong(z, codebook, chunk_size=None):  # distances left to autocast
        flat = z.reshape(-1, z.shape[-1])
        d = (flat**2).sum(1, keepdim=True) - 2 * flat @ codebook.T + (codebook**2).sum(1)
        return d.argmin(dim=1).reshape(z.shape[:-1])

    assert_fails_with(check.nearest_code, wrong, "lost precision")


# --------------------------------------------------------------------------- quantize_feature_map


def learner_map(z, codebook, flatten="permute", back="permute", grid="hw"):
    b, c, h, w = z.shape
    if flatten == "permute":
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)
    elif flatten == "reshape":
        flat = z.reshape(-1, c)
    else:  # "wh": W before H
        flat = z.permute(0, 3, 2, 1).reshape(-1, c)
    indices = quantize.nearest_code(flat, codebook)
    indices = indices.reshape(b, h, w) if grid == "hw" else indices.reshape(b, w, h)
    looked_up = codebook[indices]  # (B, H, W, C)
    if back == "permute":
        quantized = looked_up.permute(0, 3, 1, 2)
    else:
        quantized = looked_up.reshape(b, c, h, w)
    return quantized, indices


def test_quantize_feature_map_accepts_a_learners_version():
    assert_passes(check.quantize_feature_map, learner_map)


def test_quantize_feature_map_catches_reshape_without_permute():
    assert_fails_with(
        check.quantize_feature_map, lambda z, cb: learner_map(z, cb, flatten="reshape"),
        "move the channels last",
    )


def test_quantize_feature_map_catches_w_before_h():
    assert_fails_with(
        check.quantize_feature_map, lambda z, cb: learner_map(z, cb, flatten="wh"),
        "puts H before W",
    )


def test_quantize_feature_map_catches_tokens_reshaped_back_wrongly():
    assert_fails_with(
        check.quantize_feature_map, lambda z, cb: learner_map(z, cb, grid="wh"),
        "reshape to (B, H, W)",
    )


def test_quantize_feature_map_catches_the_map_reshaped_back_wrongly():
    assert_fails_with(
        check.quantize_feature_map, lambda z, cb: learner_map(z, cb, back="reshape"),
        "permute(0, 3, 1, 2)",
    )


def test_quantize_feature_map_catches_the_pair_swapped():
    def wrong(z, codebook):
        quantized, indices = learner_map(z, codebook)
        return indices, quantized

    assert_fails_with(check.quantize_feature_map, wrong, "return (quantized, indices)")


# --------------------------------------------------------------------------- usage and perplexity


def test_codebook_usage_accepts_a_learners_version():
    assert_passes(check.codebook_usage, lambda idx, k: torch.unique(idx).numel() / k)


def test_codebook_usage_catches_counting_every_index():
    assert_fails_with(check.codebook_usage, lambda idx, k: idx.numel() / k, "distinct codes")


def test_codebook_usage_catches_dividing_by_n():
    assert_fails_with(
        check.codebook_usage, lambda idx, k: torch.unique(idx).numel() / idx.numel(),
        "divide by the number of codes K",
    )


def learner_perplexity(indices, num_codes, zero_log=False, by_k=False, log=torch.log,
                       exp=torch.exp, take_exp=True):
    counts = torch.bincount(indices.flatten(), minlength=num_codes).double()
    p = counts / (num_codes if by_k else indices.numel())
    if not zero_log:
        p = p[p > 0]
    entropy = -(p * log(p)).sum()
    return (exp(entropy) if take_exp else entropy).item()


def test_perplexity_accepts_a_learners_version():
    assert_passes(check.perplexity, learner_perplexity)


def test_perplexity_catches_zero_log_zero():
    assert_fails_with(check.perplexity, lambda i, k: learner_perplexity(i, k, zero_log=True),
                      "0 log 0")


def test_perplexity_catches_the_entropy_returned():
    assert_fails_with(check.perplexity, lambda i, k: learner_perplexity(i, k, take_exp=False),
                      "exp(entropy)")


def test_perplexity_catches_mixed_bases():
    assert_fails_with(check.perplexity, lambda i, k: learner_perplexity(i, k, log=torch.log2),
                      "one base for log and exp")
    assert_fails_with(check.perplexity,
                      lambda i, k: learner_perplexity(i, k, exp=lambda h: 2.0**h),
                      "one base for log and exp")


def test_perplexity_catches_dividing_by_k():
    assert_fails_with(check.perplexity, lambda i, k: learner_perplexity(i, k, by_k=True),
                      "not / K")


def test_perplexity_reference_agrees_with_its_definition():
    indices = torch.tensor([0, 0, 1, 2])
    assert math.isclose(quantize.perplexity(indices, 5), 2**1.5, rel_tol=1e-12)


# --------------------------------------------------------------------------- kmeans_step


def learner_kmeans_step(vectors, codebook, empty="keep", mean=True, in_place=False):
    indices = quantize.nearest_code(vectors, codebook)
    new = codebook if in_place else codebook.clone()
    for k in range(codebook.shape[0]):
        members = vectors[indices == k]
        if len(members) == 0 and empty == "keep":
            continue
        if len(members) == 0 and empty == "zero":
            new[k] = 0.0
            continue
        new[k] = members.mean(dim=0) if mean else members.sum(dim=0)
    return new


def test_kmeans_step_accepts_a_learners_version():
    assert_passes(check.kmeans_step, learner_kmeans_step)


def test_kmeans_step_catches_nan_for_an_empty_code():
    assert_fails_with(check.kmeans_step, lambda v, c: learner_kmeans_step(v, c, empty="nan"),
                      "0 / 0")


def test_kmeans_step_catches_an_empty_code_sent_to_zero():
    assert_fails_with(check.kmeans_step, lambda v, c: learner_kmeans_step(v, c, empty="zero"),
                      "leave it where it was")


def test_kmeans_step_catches_sums_instead_of_means():
    assert_fails_with(check.kmeans_step, lambda v, c: learner_kmeans_step(v, c, mean=False),
                      "MEAN of its vectors")


def test_kmeans_step_catches_changing_the_argument():
    assert_fails_with(check.kmeans_step, lambda v, c: learner_kmeans_step(v, c, in_place=True),
                      "changed the codebook it was given", "a copy")


def test_kmeans_step_catches_changing_the_vectors():
    def wrong(vectors, codebook):  # sorts the vectors by code, in the caller's tensor
        indices = quantize.nearest_code(vectors, codebook)
        vectors[:] = vectors[indices.argsort()]
        return learner_kmeans_step(vectors, codebook)

    assert_fails_with(check.kmeans_step, wrong, "changed the vectors")


# --------------------------------------------------------------------------- kmeans


def learner_kmeans(vectors, num_codes, iters=10, generator=None, extra=0, feed=True,
                   start="unique", rng="generator", shuffle_in_place=False):
    """A learner's loop over kmeans_step, with one of the classic mistakes switched on."""
    if shuffle_in_place:  # shuffles the caller's vectors, then takes distinct ones
        vectors[:] = vectors[torch.randperm(len(vectors), generator=generator)]
    pool = torch.unique(vectors, dim=0) if start == "unique" else vectors
    if rng == "global":
        order = torch.randperm(len(pool))
    elif rng == "reseed":
        torch.manual_seed(0)
        order = torch.randperm(len(pool))
    elif rng == "none":
        order = torch.arange(len(pool))
    elif rng == "own":
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(0))
    else:
        order = torch.randperm(len(pool), generator=generator)
    codebook = pool[order[:num_codes]]
    new = codebook
    for _ in range(iters + extra):
        if feed:
            codebook = quantize.kmeans_step(vectors, codebook)
        else:
            new = quantize.kmeans_step(vectors, codebook)
    return codebook if feed else new


def test_kmeans_accepts_a_learners_version():
    assert_passes(check.kmeans, learner_kmeans)


def test_kmeans_accepts_a_while_loop_with_its_own_counter():
    def mine(vectors, num_codes, iters=10, generator=None):
        rows = vectors.unique(dim=0)
        codebook = rows[torch.randperm(rows.shape[0], generator=generator)][:num_codes].clone()
        done = 0
        while done < iters:
            codebook = quantize.kmeans_step(vectors, codebook)
            done += 1
        return codebook

    assert_passes(check.kmeans, mine)


def test_kmeans_catches_the_global_rng():
    assert_fails_with(check.kmeans, lambda v, k, iters=10, generator=None:
                      learner_kmeans(v, k, iters, generator, rng="global"),
                      "global RNG", "generator=generator")


def test_kmeans_catches_a_manual_seed():
    assert_fails_with(check.kmeans, lambda v, k, iters=10, generator=None:
                      learner_kmeans(v, k, iters, generator, rng="reseed"),
                      "global RNG", "never call torch.manual_seed")


def test_kmeans_catches_a_generator_of_its_own():
    assert_fails_with(check.kmeans, lambda v, k, iters=10, generator=None:
                      learner_kmeans(v, k, iters, generator, rng="own"),
                      "the `generator` you are given")


def test_kmeans_catches_a_start_that_is_not_distinct():
    assert_fails_with(check.kmeans, lambda v, k, iters=10, generator=None:
                      learner_kmeans(v, k, iters, generator, start="all"),
                      "K distinct vectors", "U distinct rows")


def test_kmeans_catches_a_start_drawn_with_replacement():
    def wrong(vectors, num_codes, iters=10, generator=None):
        distinct = torch.unique(vectors, dim=0)
        codebook = distinct[torch.randint(0, len(distinct), (num_codes,), generator=generator)]
        for _ in range(iters):
            codebook = quantize.kmeans_step(vectors, codebook)
        return codebook

    assert_fails_with(check.kmeans, wrong, "with replacement", "torch.randperm")


def test_kmeans_accepts_stopping_once_converged():
    def mine(vectors, num_codes, iters=10, generator=None):  # a fixed point stays put
        codebook = learner_kmeans(vectors, num_codes, 0, generator)
        for _ in range(iters):
            new = quantize.kmeans_step(vectors, codebook)
            if torch.equal(new, codebook):
                break
            codebook = new
        return codebook

    assert_passes(check.kmeans, mine)


def test_kmeans_catches_the_first_k_distinct_vectors():
    def wrong(vectors, num_codes, iters=10, generator=None):  # no draw at all
        return learner_kmeans(vectors, num_codes, iters, generator, rng="none")

    assert_fails_with(check.kmeans, wrong, "the `generator` you are given")


def test_kmeans_catches_one_step_too_many():
    assert_fails_with(check.kmeans, lambda v, k, iters=10, generator=None:
                      learner_kmeans(v, k, iters, generator, extra=1),
                      "4 Lloyd steps", "exactly iters times")


def test_kmeans_catches_one_step_too_few():
    assert_fails_with(check.kmeans, lambda v, k, iters=10, generator=None:
                      learner_kmeans(v, k, iters, generator, extra=-1),
                      "2 Lloyd steps", "exactly iters times")


def test_kmeans_catches_the_codebook_not_fed_back():
    assert_fails_with(check.kmeans, lambda v, k, iters=10, generator=None:
                      learner_kmeans(v, k, iters, generator, feed=False),
                      "previous step's codebook")

    def discards(vectors, num_codes, iters=10, generator=None):  # never keeps a step's result
        codebook = learner_kmeans(vectors, num_codes, 0, generator)
        for _ in range(iters):
            quantize.kmeans_step(vectors, codebook)
        return codebook

    assert_fails_with(check.kmeans, discards, "previous step's codebook")


def test_kmeans_catches_changing_the_vectors():
    assert_fails_with(check.kmeans, lambda v, k, iters=10, generator=None:
                      learner_kmeans(v, k, iters, generator, shuffle_in_place=True),
                      "changed the vectors")


def test_kmeans_catches_a_step_at_iters_zero():
    def wrong(vectors, num_codes, iters=10, generator=None):  # at least one step, always
        return learner_kmeans(vectors, num_codes, max(iters, 1), generator)

    assert_fails_with(check.kmeans, wrong, "iters=0 must return the start")


def test_kmeans_is_the_start_and_a_loop_over_kmeans_step():
    """The package's kmeans is what the notebook builds: the seeded start, then the steps."""
    vectors = torch.randn(200, 4, generator=torch.Generator().manual_seed(1))
    start = quantize.kmeans(vectors, 6, iters=0, generator=torch.Generator().manual_seed(2))
    fitted = quantize.kmeans(vectors, 6, iters=3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(fitted, quantize.kmeans_step(vectors, quantize.kmeans_step(
        vectors, quantize.kmeans_step(vectors, start))))
    assert torch.equal(fitted, learner_kmeans(vectors, 6, 3, torch.Generator().manual_seed(2)))


# --------------------------------------------------------------------------- hints on demand


def test_every_check_has_hints_idea_formula_near_code():
    checks = exercises_in(check)
    assert list(checks) == ["squared_distances", "nearest_code", "quantize_feature_map",
                            "codebook_usage", "perplexity", "kmeans_step", "kmeans"]
    for name, check_fn in checks.items():
        assert len(check_fn.hints) == 3, name
        assert all(isinstance(h, str) and len(h.strip()) > 40 for h in check_fn.hints), name
        assert len(set(check_fn.hints)) == 3, name


def test_hint_gives_the_next_level_then_repeats_the_last(capsys):
    _hints_seen.clear()
    for name in exercises_in(check):
        for level in (1, 2, 3, 3):
            check.hint(name)
            assert f"hint {level} of 3 for {name}" in capsys.readouterr().out


# --------------------------------------------------------------------------- item-5 rules of the older checks


def test_squared_distances_catches_changing_its_inputs():
    def wrong(z, codebook):  # squares z in place on the way
        z_sq = z.pow_(2).sum(1, keepdim=True)
        return z_sq - 2 * z.sqrt() @ codebook.T + (codebook**2).sum(1)

    assert_fails_with(check.squared_distances, wrong, "changed its inputs")


def test_squared_distances_catches_a_norm_summed_over_the_codes():
    def wrong(z, codebook):  # ||e||^2 summed over the K codes: (D,), broadcasts only if K == D
        z, codebook = z.float(), codebook.float()
        return (z**2).sum(1, keepdim=True) - 2 * z @ codebook.T + (codebook**2).sum(0)

    result = verdict(check.squared_distances, wrong)
    assert result.status in ("failed", "error"), result.render()


def test_nearest_code_catches_view_on_a_permuted_map():
    def wrong(z, codebook, chunk_size=None):
        flat = z.view(-1, z.shape[-1])
        return learner_nearest(flat, codebook, chunk_size).view(z.shape[:-1])

    assert_fails_with(check.nearest_code, wrong, ".reshape")


def test_nearest_code_catches_changing_its_inputs():
    def wrong(z, codebook, chunk_size=None):  # centres z in place
        z -= 0.0 * z + 1.0
        return learner_nearest(z + 1.0, codebook, chunk_size)

    assert_fails_with(check.nearest_code, wrong, "changed its inputs")


def test_quantize_feature_map_catches_view_after_permute():
    def wrong(z, codebook):
        b, c, h, w = z.shape
        indices = quantize.nearest_code(z.permute(0, 2, 3, 1).view(-1, c), codebook)
        indices = indices.view(b, h, w)
        return codebook[indices].permute(0, 3, 1, 2), indices

    assert_fails_with(check.quantize_feature_map, wrong, ".reshape")


def test_quantize_feature_map_catches_changing_its_inputs():
    def wrong(z, codebook):
        quantized, indices = learner_map(z, codebook)
        z.copy_(quantized)  # "quantize in place"
        return quantized, indices

    assert_fails_with(check.quantize_feature_map, wrong, "changed its inputs")


def test_codebook_usage_catches_a_tensor_returned():
    assert_fails_with(check.codebook_usage,
                      lambda idx, k: torch.tensor(torch.unique(idx).numel() / k),
                      "Python float")


def test_codebook_usage_catches_rows_counted_instead_of_codes():
    def wrong(indices, num_codes):  # torch.unique(dim=0) counts distinct rows of a grid
        return torch.unique(indices, dim=0).shape[0] / num_codes

    assert_fails_with(check.codebook_usage, wrong, "any shape")


def test_codebook_usage_catches_sorting_the_indices_in_place():
    def wrong(indices, num_codes):
        flat = indices.view(-1)
        flat.copy_(flat.sort().values)
        return float((flat[1:] != flat[:-1]).sum().item() + 1) / num_codes

    assert_fails_with(check.codebook_usage, wrong, "changed the indices")


def test_perplexity_catches_a_tensor_returned():
    assert_fails_with(check.perplexity,
                      lambda i, k: torch.tensor(learner_perplexity(i, k)), "Python float")


def test_perplexity_catches_len_as_the_number_of_indices():
    def wrong(indices, num_codes):  # len() is the first axis only
        counts = torch.bincount(indices.flatten(), minlength=num_codes).double()
        p = counts / len(indices)
        p = p[p > 0]
        return math.exp(-(p * p.log()).sum().item())

    assert_fails_with(check.perplexity, wrong, "any shape")


# --------------------------------------------------------------------------- the remaining hints


def test_squared_distances_catches_a_missing_z_norm():
    def wrong(z, codebook):  # enough for the argmin, not for the distances
        z, codebook = z.float(), codebook.float()
        return (codebook**2).sum(1) - 2 * z @ codebook.T

    assert_fails_with(check.squared_distances, wrong, "||z||^2 is missing")


def test_nearest_code_catches_the_distances_returned():
    def wrong(z, codebook, chunk_size=None):
        return learner_distances(z.reshape(-1, z.shape[-1]), codebook).min(dim=1).values

    assert_fails_with(check.nearest_code, wrong, "return the indices from argmin (int64)")


def test_kmeans_step_catches_only_the_used_codes_returned():
    def wrong(vectors, codebook):
        new = learner_kmeans_step(vectors, codebook)
        used = torch.bincount(quantize.nearest_code(vectors, codebook), minlength=len(codebook))
        return new[used > 0]

    assert_fails_with(check.kmeans_step, wrong, "the whole (K, D) codebook")


def test_kmeans_catches_another_start():
    def wrong(vectors, num_codes, iters=10, generator=None):  # the last K of a permutation
        distinct = torch.unique(vectors, dim=0)
        codebook = distinct[torch.randperm(len(distinct), generator=generator)[-num_codes:]]
        for _ in range(iters):
            codebook = quantize.kmeans_step(vectors, codebook)
        return codebook

    assert_fails_with(check.kmeans, wrong, "first K positions of one random permutation")


def test_kmeans_catches_a_pair_returned():
    def wrong(vectors, num_codes, iters=10, generator=None):
        codebook = learner_kmeans(vectors, num_codes, iters, generator)
        return codebook, quantize.nearest_code(vectors, codebook)

    assert_fails_with(check.kmeans, wrong, "return the fitted (num_codes, D) codebook")


# --------------------------------------------------------------------------- one verdict


def test_kmeans_is_judged_with_minitoks_kmeans_step():
    """A learner's kmeans passes even where their kmeans_step (in the same namespace) is wrong:
    the check judges kmeans alone, in the notebook as in the grader."""
    namespace = {"torch": torch, "quantize": quantize}
    exec(  # noqa: S102 - a notebook's namespace, with a wrong kmeans_step in it
        "def kmeans_step(vectors, codebook):\n"
        "    return codebook * 0\n"
        "\n"
        "def kmeans(vectors, num_codes, iters=10, generator=None):\n"
        "    distinct = torch.unique(vectors, dim=0)\n"
        "    codebook = distinct[torch.randperm(len(distinct), generator=generator)[:num_codes]]\n"
        "    for _ in range(iters):\n"
        "        codebook = kmeans_step(vectors, codebook)\n"
        "    return codebook\n",
        namespace,
    )
    assert_passes(check.kmeans, namespace["kmeans"])
    assert namespace["kmeans_step"](torch.ones(2, 2), torch.ones(3, 2)).sum() == 0  # restored
