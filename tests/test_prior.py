"""The class-conditional AR prior: sequences, teacher forcing, guidance, the KV cache.

References: LlamaGen's `autoregressive/models/generate.py` (CFG on a doubled [cond; null]
batch, logits combined as u + s (c - u) before temperature and top-k/top-p, the same token
to both halves, s = 1 equal to no guidance) and docs/references.md ("Transformers and
autoregressive sampling"). Teacher forcing is checked against running every prefix on its
own. The judges of generated digits (spread, sample quality, forward-pass counts) are tested
in tests/test_evaluate.py, condition dropout (`sampling.drop_labels`) in
tests/test_sampling.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minitok import checkpoints
from minitok.evaluate import count_forward
from minitok.prior import (
    ARPrior,
    PriorConfig,
    ar_generate,
    make_sequences,
    prior_batch_loss,
    prior_loss,
    train_prior,
)
from minitok.sampling import sample_logits
from minitok.transformer import generate as transformer_generate

K, G = 16, 4


def seeded(device, seed: int) -> torch.Generator:
    """A generator on `device` (where the prior samples) seeded with `seed`."""
    return torch.Generator(device=device).manual_seed(seed)


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
    classes = make_sequences(torch.zeros(10, G, G, dtype=torch.long), torch.arange(10), K)[:, 0]
    assert classes.min() == K and classes.max() == K + 9
    assert config.null_class == 10 and K + config.null_class == K + 10
    assert config.vocab_size == K + 11 and config.tokens_per_image == G * G
    assert config.transformer_config().block_size == 1 + G * G


def test_sequences_take_the_null_class_and_refuse_a_label_beyond_it():
    codes = torch.zeros(2, G, G, dtype=torch.long)
    null = make_sequences(codes, torch.tensor([10, 3]), K)[:, 0]  # the null class: K + 10
    assert null.tolist() == [K + 10, K + 3]
    assert make_sequences(codes, torch.tensor([4, 0]), K, num_classes=4)[0, 0] == K + 4
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\]"):
        make_sequences(codes, torch.tensor([11, 0]), K)  # would be another table's id
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\]"):
        make_sequences(codes, torch.tensor([5, 0]), K, num_classes=4)


@pytest.mark.parametrize("bad", [[10], [-1], [3, 11]])
def test_an_unknown_class_is_a_clear_error(bad):
    prior = tiny_prior("cpu")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\]"):
        ar_generate(prior, bad)


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
    grids = ar_generate(prior, [0, 3, 9], generator=seeded(device, 0))
    assert grids.shape == (3, G, G) and grids.dtype == torch.long
    assert grids.min() >= 0 and grids.max() < K


@pytest.mark.parametrize("cfg_scale", [1.0, 2.5])
def test_cached_and_uncached_generation_give_identical_tokens(device, cfg_scale):
    prior = tiny_prior(device)
    settings = {"temperature": 0.9, "top_k": 8, "top_p": 0.95, "cfg_scale": cfg_scale}
    with_cache = ar_generate(prior, [1, 2, 7, 7], use_cache=True, generator=seeded(device, 3),
                             **settings)
    without = ar_generate(prior, [1, 2, 7, 7], use_cache=False, generator=seeded(device, 3),
                          **settings)
    assert torch.equal(with_cache, without)


def test_same_generator_seed_same_digits(device):
    prior = tiny_prior(device)
    a = ar_generate(prior, [4, 5], generator=seeded(device, 11))
    b = ar_generate(prior, torch.tensor([4, 5]), generator=seeded(device, 11))
    assert torch.equal(a, b)
    assert not torch.equal(a, ar_generate(prior, [4, 5], generator=seeded(device, 12)))


def test_scale_one_is_plain_conditional_sampling_without_a_doubled_batch(device):
    prior = tiny_prior(device)
    labels = [0, 6, 8]
    with count_forward(prior.transformer) as stats:
        got = ar_generate(prior, labels, cfg_scale=1.0, temperature=0.8,
                          generator=seeded(device, 5))
    assert stats["positions"] == len(labels) * G * G  # B sequences, one new token a pass
    gen = seeded(device, 5)
    prompt = (torch.tensor(labels) + K).to(device)[:, None]  # the class tokens

    def pick(logits):
        return sample_logits(logits[:, :K], temperature=0.8, generator=gen)

    plain = transformer_generate(prior.transformer, prompt, G * G, pick=pick)[:, 1:]
    assert torch.equal(got, plain.reshape(3, G, G))
    with count_forward(prior.transformer) as stats:
        ar_generate(prior, labels, cfg_scale=2.0, generator=seeded(device, 5))
    assert stats["positions"] == 2 * len(labels) * G * G  # [cond; null]


def test_scale_zero_is_the_null_class_in_eval_mode(device):
    """The unconditional half reads the null class at sampling time, not only in training."""
    prior = tiny_prior(device, dropout=0.1)
    got = ar_generate(prior, [2, 3], cfg_scale=0.0, generator=seeded(device, 9))
    gen = seeded(device, 9)
    null = torch.full((2, 1), K + prior.config.null_class, device=device)  # the null token

    def pick(logits):
        return sample_logits(logits[:, :K], generator=gen)

    unconditional = transformer_generate(prior.transformer, null, G * G, pick=pick)[:, 1:]
    assert torch.equal(got, unconditional.reshape(2, G, G))
    assert prior.training is False


def test_guidance_changes_the_samples_in_eval_mode(device):
    prior = tiny_prior(device, dropout=0.1)
    prior.eval()
    labels = list(range(10)) * 4
    assert not torch.equal(ar_generate(prior, labels, cfg_scale=1.0, generator=seeded(device, 0)),
                           ar_generate(prior, labels, cfg_scale=4.0, generator=seeded(device, 0)))


def test_guidance_combines_the_halves_before_filtering(device):
    """top_k=1 after the combination is the guided argmax; filtering each half first would
    mix -infs (-inf - -inf = nan) and could not draw at all."""
    prior = tiny_prior(device)
    labels = [3, 1, 4]
    top1 = ar_generate(prior, labels, cfg_scale=3.0, top_k=1, generator=seeded(device, 0))
    greedy = ar_generate(prior, labels, cfg_scale=3.0, greedy=True)
    assert torch.equal(top1, greedy)
    assert not torch.equal(greedy, ar_generate(prior, labels, greedy=True))


def test_generate_leaves_the_mode_as_it_found_it(device):
    prior = tiny_prior(device, dropout=0.2).train()
    a = ar_generate(prior, [1, 2], generator=seeded(device, 0))
    assert prior.training is True
    # dropout was off while sampling
    assert torch.equal(a, ar_generate(prior, [1, 2], generator=seeded(device, 0)))


def test_the_cache_reads_one_token_per_pass_and_no_cache_rereads_the_prefix(device):
    prior = tiny_prior(device)
    with count_forward(prior.transformer) as cached:
        ar_generate(prior, [1, 2], use_cache=True, generator=seeded(device, 0))
    with count_forward(prior.transformer) as uncached:
        ar_generate(prior, [1, 2], use_cache=False, generator=seeded(device, 0))
    n = G * G
    assert cached["passes"] == uncached["passes"] == n  # one pass per code
    assert cached["positions"] == 2 * n
    assert uncached["positions"] == 2 * n * (n + 1) // 2  # 1 + 2 + ... + n per sequence


def test_the_training_step_draws_rows_then_dropped_labels_from_its_generator():
    prior = tiny_prior("cpu")
    _, codes, labels = random_sequences(20, seed=3)
    got = prior_batch_loss(prior, codes, labels, torch.Generator().manual_seed(5), 6, 1.0)
    rows = torch.randint(0, 20, (6,), generator=torch.Generator().manual_seed(5))
    null = torch.full((6,), prior.config.null_class)  # p_uncond = 1: every label dropped
    assert torch.allclose(got, prior_loss(prior, make_sequences(codes[rows], null, K), K))
    kept = prior_batch_loss(prior, codes, labels, torch.Generator().manual_seed(5), 6, 0.0)
    assert torch.allclose(kept, prior_loss(prior, make_sequences(codes[rows], labels[rows], K), K))


# --------------------------------------------------------------------------- bad input


def test_bad_sampling_arguments_are_clear_errors():
    prior = tiny_prior("cpu")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\], got values in \[1, 10\]"):
        ar_generate(prior, [1, 10])
    with pytest.raises(ValueError, match=r"cfg_scale must lie in \[0, inf\]"):
        ar_generate(prior, [1], cfg_scale=-1.0)
    with pytest.raises(ValueError, match="temperature.*greedy=True"):
        ar_generate(prior, [1], temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        ar_generate(prior, [1], top_p=1.2)
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
        ar_generate(prior, [1], generator=0)
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        ar_generate(prior, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="codes must be a 3-d tensor"):
        train_prior(prior, torch.zeros(2, 16, dtype=torch.long), torch.zeros(2, dtype=torch.long), 1)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 15\]"):
        train_prior(prior, torch.full((2, G, G), K), torch.zeros(2, dtype=torch.long), 1)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\]"):
        train_prior(prior, torch.zeros(2, G, G, dtype=torch.long), torch.tensor([0, 10]), 1)
    greedy = ar_generate(prior, [1], temperature=0.0, greedy=True)  # explicit greedy is fine
    assert greedy.shape == (1, G, G)


@pytest.mark.parametrize("settings, words", [
    ({"p_uncond": 1.5}, r"p_uncond must lie in \[0, 1\], got 1.5"),
    ({"p_uncond": float("nan")}, "p_uncond must be a finite number"),
    ({"batch_size": 0}, "batch_size must be a positive int, got 0"),
])
def test_bad_training_settings_are_refused_before_training(settings, words):
    """drop_labels runs on every step and trusts p_uncond: train_prior checks it once."""
    prior = tiny_prior("cpu")
    before = [p.clone() for p in prior.parameters()]
    codes, labels = torch.zeros(2, G, G, dtype=torch.long), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match=words):
        train_prior(prior, codes, labels, 1, progress=False, **settings)
    assert all(torch.equal(a, b) for a, b in zip(before, prior.parameters(), strict=True))


# --------------------------------------------------------------------------- training


def test_train_prior_repeats_with_the_same_seed_and_learns():
    _, codes, labels = random_sequences(1)
    codes, labels = codes.repeat(8, 1, 1), labels.repeat(8)  # one digit, to learn by heart
    runs = []
    for _ in range(2):
        prior = tiny_prior("cpu", dropout=0.1)
        runs.append(train_prior(prior, codes, labels, 30, batch_size=8, lr=1e-2, seed=4,
                                progress=False))
        assert prior.training is False  # left in eval mode
    assert runs[0] == runs[1] and len(runs[0]) == 30
    assert runs[0][-1] < 0.5 * runs[0][0]


# --------------------------------------------------------------------------- checkpoints


def test_save_and_load_round_trip(tmp_path):
    prior = tiny_prior("cpu")
    path = checkpoints.save(prior, tmp_path / "prior.pt", meta={"note": "test"})
    payload = torch.load(path, weights_only=True)  # plain tensors and values only
    assert payload["kind"] == "prior"
    loaded = checkpoints.load("prior", path)
    assert loaded.config == prior.config and loaded.meta == {"note": "test"}
    seqs = random_sequences(2)[0]
    with torch.no_grad():
        torch.testing.assert_close(loaded(seqs), prior(seqs))


def test_the_shipped_prior_matches_the_shipped_tokenizer():
    prior, tokenizer = checkpoints.load("prior"), checkpoints.load("tokenizer")
    assert prior.config.num_codes == tokenizer.num_codes
    assert prior.config.grid_size == tokenizer.grid_size
    assert prior.meta["script"] == "scripts/train_prior.py"
    checkpoints.check_tokenizer(prior, tokenizer)  # trained on this very tokenizer file
    grids = ar_generate(prior, [7, 7], generator=seeded("cpu", 0))
    assert tokenizer.decode(grids).shape == (2, 1, 16, 16)


@pytest.mark.slow
def test_the_shipped_prior_draws_the_digit_it_is_asked_for():
    """A regression guard (minitok.bench.ar measures the goal on more samples)."""
    from minitok.classifier import load_classifier

    prior, tokenizer = checkpoints.load("prior"), checkpoints.load("tokenizer")
    classifier = load_classifier()
    labels = torch.arange(10).repeat(5)
    grids = ar_generate(prior, labels, cfg_scale=2.0, generator=seeded("cpu", 0))
    assert classifier.accuracy(tokenizer.decode(grids), labels) >= 0.9
    assert len(torch.unique(grids.reshape(50, -1), dim=0)) == 50  # no mode collapse
