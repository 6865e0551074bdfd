"""The class-conditional AR prior: sequences, teacher forcing, guidance, the KV cache.

References: LlamaGen's `autoregressive/models/generate.py` (CFG on a doubled [cond; null]
batch, logits combined as u + s (c - u) before temperature and top-k/top-p, the same token
to both halves, s = 1 equal to no guidance) and REFERENCE_FACTS.md ("Autoregressive
sampling"). Teacher forcing is checked against running every prefix on its own.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minitok.prior import (
    ARPrior,
    PriorConfig,
    class_tokens,
    count_forward,
    drop_labels,
    generate,
    load_prior,
    make_pick,
    make_sequences,
    mean_pairwise_distance,
    pairwise_distance_per_class,
    prior_loss,
    save_prior,
)
from minitok.sampling import sample_logits
from minitok.transformer import generate as transformer_generate

K, G = 16, 4


def tiny_prior(device, dropout=0.0, seed=0) -> ARPrior:
    torch.manual_seed(seed)
    config = PriorConfig(num_codes=K, grid_size=G, n_layer=2, n_head=2, n_embd=32,
                         dropout=dropout)
    return ARPrior(config).to(device).eval()


def random_sequences(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, K, (n, G, G), generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return make_sequences(codes, labels, K), codes, labels


# --------------------------------------------------------------------------- sequences


def test_sequences_put_the_class_token_first_then_the_codes_in_raster_order():
    seqs, codes, labels = random_sequences(5)
    assert seqs.shape == (5, 1 + G * G) and seqs.dtype == torch.long
    assert torch.equal(seqs[:, 0], labels + K)
    for n in range(5):  # raster order, written out: row r, column c is position 1 + r*G + c
        for r in range(G):
            for c in range(G):
                assert seqs[n, 1 + r * G + c] == codes[n, r, c]


def test_the_id_table_does_not_collide():
    config = PriorConfig(num_codes=K, grid_size=G)
    classes = class_tokens(torch.arange(10), K)
    assert classes.min() == K and classes.max() == K + 9
    assert config.null_id == K + 10 and config.vocab_size == K + 11
    assert config.transformer_config().block_size == 1 + G * G


@pytest.mark.parametrize("bad", [10, -1, [3, 11]])
def test_an_unknown_class_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="unknown class"):
        class_tokens(bad, K)


def test_drop_labels_replaces_only_the_class_token_at_rate_p():
    seqs, _, _ = random_sequences(4000)
    dropped = drop_labels(seqs, 0.1, K + 10, torch.Generator().manual_seed(0))
    assert torch.equal(dropped[:, 1:], seqs[:, 1:])
    nulls = (dropped[:, 0] == K + 10)
    assert torch.equal(dropped[~nulls, 0], seqs[~nulls, 0])
    assert 0.085 < nulls.float().mean().item() < 0.115  # 0.1 +- 3.2 sigma
    assert torch.equal(drop_labels(seqs, 0.0, K + 10), seqs)


# --------------------------------------------------------------------------- teacher forcing


def test_teacher_forcing_loss_equals_predicting_each_token_from_its_prefix(device):
    """One pass over [class, t_1..t_{N-1}] equals N separate runs on growing prefixes."""
    prior = tiny_prior(device)
    seqs = random_sequences(3)[0].to(device)
    with torch.no_grad():
        got = prior_loss(prior, seqs, K)
        per_step = []
        for i in range(1, seqs.shape[1]):  # predict token i from tokens 0..i-1 only
            logits = prior(seqs[:, :i])[:, -1, :K]  # (B, K)
            per_step.append(F.cross_entropy(logits, seqs[:, i], reduction="none"))
        expected = torch.stack(per_step).mean()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_the_loss_learns_a_fixed_sequence(device):
    """A few steps of the loss on one repeated sequence drive it down: the shift is right."""
    prior = tiny_prior(device)
    seqs = random_sequences(1)[0].repeat(8, 1).to(device)
    opt = torch.optim.AdamW(prior.parameters(), lr=1e-2)
    start = prior_loss(prior, seqs, K).item()
    for _ in range(60):
        loss = prior_loss(prior, seqs, K)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * start


# --------------------------------------------------------------------------- generation


def test_generate_returns_grids_of_valid_codes_even_if_class_ids_score_highest(device):
    prior = tiny_prior(device)
    with torch.no_grad():  # make every non-code id far more likely than any code
        prior.transformer.head.weight[:K] = 0.0
        prior.transformer.head.weight[K:] = 1.0
        prior.transformer.ln_f.bias.fill_(5.0)
    grids = generate(prior, [0, 3, 9], seed=0)
    assert grids.shape == (3, G, G) and grids.dtype == torch.long
    assert grids.min() >= 0 and grids.max() < K


@pytest.mark.parametrize("cfg_scale", [1.0, 2.5])
def test_cached_and_uncached_generation_give_identical_tokens(device, cfg_scale):
    prior = tiny_prior(device)
    settings = {"temperature": 0.9, "top_k": 8, "top_p": 0.95, "cfg_scale": cfg_scale}
    with_cache = generate(prior, [1, 2, 7, 7], use_cache=True, seed=3, **settings)
    without = generate(prior, [1, 2, 7, 7], use_cache=False, seed=3, **settings)
    assert torch.equal(with_cache, without)


def test_same_seed_same_digits_and_generator_equals_seed(device):
    prior = tiny_prior(device)
    a = generate(prior, [4, 5], seed=11)
    b = generate(prior, [4, 5], generator=torch.Generator(device=device).manual_seed(11))
    assert torch.equal(a, b)
    assert not torch.equal(a, generate(prior, [4, 5], seed=12))


def test_scale_one_is_plain_conditional_sampling_without_a_doubled_batch(device):
    prior = tiny_prior(device)
    labels = [0, 6, 8]
    with count_forward(prior.transformer) as stats:
        got = generate(prior, labels, cfg_scale=1.0, temperature=0.8, seed=5)
    assert stats["positions"] == len(labels) * G * G  # B sequences, one new token a pass
    gen = torch.Generator(device=device).manual_seed(5)
    prompt = class_tokens(labels, K).to(device)[:, None]

    def pick(logits):
        return sample_logits(logits[:, :K], temperature=0.8, generator=gen)

    plain = transformer_generate(prior.transformer, prompt, G * G, pick=pick)[:, 1:]
    assert torch.equal(got, plain.reshape(3, G, G))
    with count_forward(prior.transformer) as stats:
        generate(prior, labels, cfg_scale=2.0, seed=5)
    assert stats["positions"] == 2 * len(labels) * G * G  # [cond; null]


def test_scale_zero_is_the_null_class_in_eval_mode(device):
    """The unconditional half reads the null class at sampling time, not only in training."""
    prior = tiny_prior(device, dropout=0.1)
    got = generate(prior, [2, 3], cfg_scale=0.0, seed=9)
    gen = torch.Generator(device=device).manual_seed(9)
    null = torch.full((2, 1), prior.config.null_id, device=device)

    def pick(logits):
        return sample_logits(logits[:, :K], generator=gen)

    unconditional = transformer_generate(prior.transformer, null, G * G, pick=pick)[:, 1:]
    assert torch.equal(got, unconditional.reshape(2, G, G))
    assert prior.training is False


def test_guidance_changes_the_samples_in_eval_mode(device):
    prior = tiny_prior(device, dropout=0.1)
    prior.eval()
    labels = list(range(10)) * 4
    assert not torch.equal(generate(prior, labels, cfg_scale=1.0, seed=0),
                           generate(prior, labels, cfg_scale=4.0, seed=0))


def test_guided_pick_combines_before_filtering_and_feeds_both_halves_the_same_token(device):
    cond = torch.tensor([[1.0, 1.1, -5.0], [0.0, 0.0, 1.0]], device=device)
    uncond = torch.tensor([[0.0, 1.05, -5.0], [0.0, 0.0, 1.0]], device=device)
    logits = torch.cat([cond, uncond])  # (2B, V) as the doubled batch gives them
    # u + 3 (c - u) = [3.0, 1.2, -5] -> token 0, while c alone and u alone prefer token 1;
    # the swapped c + 3 (u - c) = [-2, 0.95, -5] would prefer token 1 too.
    greedy = make_pick(3, 2, cfg_scale=3.0, greedy=True)(logits)
    assert greedy.tolist() == [0, 2, 0, 2]
    gen = torch.Generator(device=device).manual_seed(0)
    top1 = make_pick(3, 2, cfg_scale=3.0, top_k=1, generator=gen)(logits)  # top-k after CFG
    assert top1.tolist() == [0, 2, 0, 2]
    sampled = make_pick(3, 1000, cfg_scale=3.0, temperature=2.0, generator=gen)(
        torch.cat([cond.repeat(500, 1), uncond.repeat(500, 1)]))
    assert torch.equal(sampled[:1000], sampled[1000:])  # the same token to both halves


def test_generate_leaves_the_mode_as_it_found_it(device):
    prior = tiny_prior(device, dropout=0.2).train()
    a = generate(prior, [1, 2], seed=0)
    assert prior.training is True
    assert torch.equal(a, generate(prior, [1, 2], seed=0))  # dropout was off while sampling


def test_the_cache_reads_one_token_per_pass_and_no_cache_rereads_the_prefix(device):
    prior = tiny_prior(device)
    with count_forward(prior.transformer) as cached:
        generate(prior, [1, 2], use_cache=True, seed=0)
    with count_forward(prior.transformer) as uncached:
        generate(prior, [1, 2], use_cache=False, seed=0)
    n = G * G
    assert cached["passes"] == uncached["passes"] == n  # one pass per code
    assert cached["positions"] == 2 * n
    assert uncached["positions"] == 2 * n * (n + 1) // 2  # 1 + 2 + ... + n per sequence


# --------------------------------------------------------------------------- bad input


def test_bad_sampling_arguments_are_clear_errors():
    prior = tiny_prior("cpu")
    with pytest.raises(ValueError, match="unknown class 10"):
        generate(prior, [1, 10])
    with pytest.raises(ValueError, match="cfg_scale must be >= 0"):
        generate(prior, [1], cfg_scale=-1.0)
    with pytest.raises(ValueError, match="temperature.*greedy=True"):
        generate(prior, [1], temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        generate(prior, [1], top_p=1.2)
    with pytest.raises(ValueError, match="either seed or generator"):
        generate(prior, [1], seed=0, generator=torch.Generator())
    with pytest.raises(ValueError, match=r"codes must be \(N, G, G\)"):
        make_sequences(torch.zeros(2, 16, dtype=torch.long), torch.zeros(2, dtype=torch.long), K)
    greedy = generate(prior, [1], temperature=0.0, greedy=True)  # explicit greedy is fine
    assert greedy.shape == (1, G, G)


# --------------------------------------------------------------------------- checkpoints


def test_save_and_load_round_trip(tmp_path):
    prior = tiny_prior("cpu")
    path = save_prior(prior, tmp_path / "prior.pt", meta={"note": "test"})
    payload = torch.load(path, weights_only=True)  # plain tensors and values only
    assert payload["kind"] == "prior"
    loaded = load_prior(path)
    assert loaded.config == prior.config and loaded.meta == {"note": "test"}
    seqs = random_sequences(2)[0]
    with torch.no_grad():
        torch.testing.assert_close(loaded(seqs), prior(seqs))


def test_the_shipped_prior_matches_the_shipped_tokenizer():
    from minitok.tokenizer import load_tokenizer

    prior, tokenizer = load_prior(), load_tokenizer()
    assert prior.config.num_codes == tokenizer.num_codes
    assert prior.config.grid_size == tokenizer.grid_size
    assert prior.meta["script"] == "scripts/train_prior.py"
    grids = generate(prior, [7, 7], seed=0)
    assert tokenizer.decode(grids).shape == (2, 1, 16, 16)


@pytest.mark.slow
def test_the_shipped_prior_draws_the_digit_it_is_asked_for():
    """A regression guard (benchmarks/bench_ar.py measures the goal on more samples)."""
    from minitok.classifier import load_classifier
    from minitok.tokenizer import load_tokenizer

    prior, tokenizer, classifier = load_prior(), load_tokenizer(), load_classifier()
    labels = torch.arange(10).repeat(5)
    grids = generate(prior, labels, cfg_scale=2.0, seed=0)
    assert classifier.accuracy(tokenizer.decode(grids), labels) >= 0.9
    assert len(torch.unique(grids.reshape(50, -1), dim=0)) == 50  # no mode collapse


def test_spread_is_the_mean_distance_over_pairs_of_a_class_by_brute_force():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(9, 1, 4, 4, generator=gen)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 7])  # class 7 has a single image: skipped
    expected = {}
    for c in (0, 1, 2):
        idx = (labels == c).nonzero()[:, 0].tolist()
        pairs = [(i, j) for i in idx for j in idx if i != j]
        expected[c] = sum(float((images[i] - images[j]).double().norm()) for i, j in pairs) / len(
            pairs)
    got = pairwise_distance_per_class(images, labels)
    assert got.keys() == expected.keys()
    for c in expected:
        assert got[c] == pytest.approx(expected[c], rel=1e-12)
    assert mean_pairwise_distance(images, labels) == pytest.approx(sum(expected.values()) / 3)
    same = images[:1].expand(4, 1, 4, 4)
    assert mean_pairwise_distance(same, torch.zeros(4, dtype=torch.long)) == 0.0
    with pytest.raises(ValueError, match="at least two images"):
        mean_pairwise_distance(images[:1], labels[:1])
