"""minitok.validate: each argument check accepts good values and refuses bad ones, naming the
argument in its message (the public functions' bad-input tests rely on that wording); then
one table of bad arguments to the public API, each refused with the argument's name."""

from __future__ import annotations

import math
import re

import pytest
import torch

from minitok import (
    anytoany,
    checkpoints,
    classifier,
    data,
    diffusion,
    evaluate,
    fsq,
    maskgit,
    prior,
    quantize,
    sampling,
    tokenizer,
    training,
    transformer,
    validate,
    vocab,
    vq,
)

NAN, INF = float("nan"), float("inf")


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("value", [1, 2, 10**9])
def test_positive_int_accepts(value):
    assert validate.positive_int(value, "steps") is value


@pytest.mark.parametrize("value", [0, -1, 1.0, 2.5, True, False, "3", None, NAN])
def test_positive_int_refuses(value):
    with pytest.raises(ValueError, match=r"^steps must be a positive int, got "):
        validate.positive_int(value, "steps")


@pytest.mark.parametrize("value", [0, 1, 64])
def test_non_negative_int_accepts(value):
    assert validate.non_negative_int(value, "n_masked") is value


@pytest.mark.parametrize("value", [-1, 0.0, True, False, "0", None])
def test_non_negative_int_refuses(value):
    with pytest.raises(ValueError, match=r"^n_masked must be a non-negative int, got "):
        validate.non_negative_int(value, "n_masked")


def test_true_is_not_an_int():
    for check in (validate.positive_int, validate.non_negative_int):
        with pytest.raises(ValueError, match="got True"):
            check(True, "n")
    with pytest.raises(ValueError, match="n must be a finite number, got True"):
        validate.number(True, "n")


def test_number_accepts_finite_reals_in_range_and_returns_a_float():
    assert validate.number(2, "cfg_scale") == 2.0 and isinstance(validate.number(2, "x"), float)
    assert validate.number(0, "cfg_scale", low=0) == 0.0  # closed ends include the bound
    assert validate.number(1, "p", low=0, high=1) == 1.0
    assert validate.number(0.5, "p", low=0, high=1, low_open=True, high_open=True) == 0.5
    assert validate.number(-1e300, "x") == -1e300


@pytest.mark.parametrize("value", [NAN, INF, -INF, True, "1", None, torch.tensor(1.0)])
def test_number_refuses_what_is_not_a_finite_real(value):
    with pytest.raises(ValueError, match=r"^cfg_scale must be a finite number, got "):
        validate.number(value, "cfg_scale", low=0)


@pytest.mark.parametrize("value, kwargs, span", [
    (-0.5, {"low": 0}, "[0, inf]"),
    (0, {"low": 0, "low_open": True}, "(0, inf]"),
    (1, {"low": 0, "high": 1, "high_open": True}, "[0, 1)"),
    (1.5, {"low": 0, "high": 1}, "[0, 1]"),
    (3, {"high": 2}, "[-inf, 2]"),
])
def test_number_refuses_values_out_of_range_and_says_the_range(value, kwargs, span):
    with pytest.raises(ValueError) as info:
        validate.number(value, "temperature", **kwargs)
    assert str(info.value) == f"temperature must lie in {span}, got {value!r}"


def test_one_of():
    assert validate.one_of("cosine", "schedule", ("cosine", "linear")) == "cosine"
    with pytest.raises(ValueError, match="schedule must be one of 'cosine', 'linear'; got 'cos'"):
        validate.one_of("cos", "schedule", ("cosine", "linear"))


# --------------------------------------------------------------------------- tensors


def test_tensor_checks_the_type_and_the_number_of_dimensions():
    x = torch.zeros(2, 3)
    assert validate.tensor(x, "x") is x and validate.tensor(x, "x", dim=2) is x
    assert validate.tensor(x, "x", dim=(1, 2)) is x
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        validate.tensor([[0.0]], "x")
    with pytest.raises(ValueError, match=r"x must be a 3-d tensor, got shape \(2, 3\)"):
        validate.tensor(x, "x", dim=3)
    with pytest.raises(ValueError, match=r"x must be a 1-d or 3-d tensor, got shape \(2, 3\)"):
        validate.tensor(x, "x", dim=(1, 3))


def test_float_tensor_refuses_integers_and_with_finite_nan_and_inf():
    z = torch.randn(4, 2)
    assert validate.float_tensor(z, "z", finite=True) is z
    assert validate.float_tensor(z.half(), "z", dim=2) is not None
    with pytest.raises(TypeError, match="z must be a floating-point tensor, got dtype torch.int64"):
        validate.float_tensor(torch.zeros(4, 2, dtype=torch.long), "z")
    for bad in (NAN, INF, -INF):
        with_bad = z.clone()
        with_bad[1, 1] = bad
        validate.float_tensor(with_bad, "z")  # allowed unless finite values are asked for
        with pytest.raises(ValueError, match="z holds NaN or inf values"):
            validate.float_tensor(with_bad, "z", finite=True)
    with pytest.raises(ValueError, match="z must be a 1-d tensor"):
        validate.float_tensor(z, "z", dim=1)


def test_index_tensor_accepts_ids_in_range():
    ids = torch.tensor([[0, 3], [9, 1]])
    assert validate.index_tensor(ids, "indices", size=10) is ids
    assert validate.index_tensor(ids.int(), "indices", size=10, dim=2) is not None
    assert validate.index_tensor(torch.zeros(0, dtype=torch.long), "indices", size=1) is not None
    assert validate.index_tensor(torch.tensor([0, 10**12]), "indices") is not None  # no size
    assert validate.index_tensor(torch.tensor([3], dtype=torch.uint8), "indices", 4) is not None


@pytest.mark.parametrize("ids", [torch.tensor([0.0, 1.0]), torch.tensor([0.5]),
                                 torch.tensor([True, False]), torch.tensor([1 + 0j])])
def test_index_tensor_refuses_float_bool_and_complex_ids(ids):
    with pytest.raises(TypeError, match="codes must be an integer tensor of ids, got dtype"):
        validate.index_tensor(ids, "codes", size=10)


@pytest.mark.parametrize("bad, low, high", [(10, 0, 10), (-1, -1, 3)])
def test_index_tensor_refuses_ids_out_of_range(bad, low, high):
    ids = torch.tensor([0, 3, bad])
    with pytest.raises(ValueError) as info:
        validate.index_tensor(ids, "labels", size=10)
    assert str(info.value) == f"labels must lie in [0, 9], got values in [{low}, {high}]"


def test_index_tensor_without_a_size_still_refuses_negative_ids():
    with pytest.raises(ValueError, match=r"^codes must lie in \[0, inf\), got values in \[-5, 2\]$"):
        validate.index_tensor(torch.tensor([2, -5]), "codes")


def test_flag():
    assert validate.flag(True, "greedy") is True and validate.flag(False, "greedy") is False
    for bad in ("no", 0, 1, None):
        with pytest.raises(TypeError, match="greedy must be True or False, got "):
            validate.flag(bad, "greedy")


def test_same_shape_and_same_device():
    a = torch.zeros(2, 3)
    validate.same_shape(a, torch.ones(2, 3), "cond and uncond")
    with pytest.raises(ValueError, match=r"cond and uncond must have the same shape, got "
                                         r"\(2, 3\) and \(1, 3\)"):
        validate.same_shape(a, torch.zeros(1, 3), "cond and uncond")  # would broadcast
    validate.same_device(a, torch.ones(5), "z and codebook")
    elsewhere = torch.empty(2, 3, device="meta")
    with pytest.raises(ValueError, match="z and codebook must be on the same device, got cpu "
                                         "and meta"):
        validate.same_device(a, elsewhere, "z and codebook")


def test_last_dim():
    z = torch.zeros(2, 3, 4)
    assert validate.last_dim(z, "z", 4, "the codebook's D") is z
    with pytest.raises(ValueError, match=r"the last dimension of z must be the codebook's D = 4, "
                                         r"got shape \(2, 3, 1\)"):
        validate.last_dim(torch.zeros(2, 3, 1), "z", 4, "the codebook's D")  # would broadcast
    with pytest.raises(ValueError, match=r"got shape \(\)"):
        validate.last_dim(torch.tensor(1.0), "z", 4, "the codebook's D")

def test_generator():
    g = torch.Generator()
    assert validate.generator(g) is g and validate.generator(None) is None
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
        validate.generator(0)
    with pytest.raises(TypeError, match="gen must be a torch.Generator or None, got float"):
        validate.generator(math.pi, "gen")


# --------------------------------------------------------------------------- the public API
#
# Bad arguments to the functions a learner or a user calls, one row each: every call must
# raise ValueError or TypeError, and its message must name the argument (a word of its own:
# "labels" does not count for "labels_x"). Before these checks, most of these rows returned
# a value without a word (issue 25): ids that collide with other tokens, rows of -inf, NaN.

G, K = 2, 16  # the token models below read G x G grids of K codes
torch.manual_seed(0)
PRIOR = prior.ARPrior(prior.PriorConfig(num_codes=K, grid_size=G, n_layer=1, n_head=1, n_embd=8))
MASKGIT = maskgit.MaskGIT(maskgit.MaskGITConfig(num_codes=K, grid_size=G, n_layer=1, n_head=1,
                                                n_embd=8)).eval()
MASK_ID, NULL = MASKGIT.mask_id, MASKGIT.null_class
GPT = transformer.Transformer(transformer.TransformerConfig(vocab_size=20, block_size=8,
                                                           n_layer=1, n_head=1, n_embd=8))
A2A = anytoany.AnyToAny(anytoany.AnyToAnyConfig(num_codes=K, grid_size=G, n_layer=1, n_head=1,
                                                n_embd=8)).eval()
VOCAB = A2A.vocab
TOKENIZER = tokenizer.VQTokenizer(tokenizer.TokenizerConfig(image_size=8, channels=8,
                                                            code_dim=4, num_codes=8))
CODES = torch.randint(0, K, (3, G, G), generator=torch.Generator().manual_seed(0))
LABELS = torch.tensor([0, 1, 2])
LOGITS = torch.randn(2, 5, generator=torch.Generator().manual_seed(1))
CONFIDENCE = torch.rand(2, 4, generator=torch.Generator().manual_seed(2))
CODEBOOK = torch.randn(8, 4, generator=torch.Generator().manual_seed(3))
MASKED = torch.full((2, G * G), MASK_ID)
DOCS = torch.zeros(2, 5, dtype=torch.long)
Z = torch.randn(5, 4, generator=torch.Generator().manual_seed(4))
DIFFUSION = diffusion.DiffusionModel(diffusion.DiffusionConfig(
    image_size=8, channels=8, inner_channels=8, emb_dim=8, timesteps=10)).eval()
AC = DIFFUSION.alphas_cumprod.float()
X8 = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(5)) * 2 - 1
L2 = torch.tensor([1, 2])


@pytest.fixture(scope="module")
def prior_file(tmp_path_factory):
    return checkpoints.save(PRIOR, tmp_path_factory.mktemp("ckpt") / "prior.pt")


def _filled_cache():
    cache = GPT.new_cache(1, max_len=4)
    cache.advance(3)
    return cache


BAD_CALLS = [  # (argument the message must name, call)
    # prior: ids that would collide with the class tokens, or are not ids at all
    ("codes", lambda: prior.make_sequences(CODES + K, LABELS, K)),
    ("codes", lambda: prior.make_sequences(CODES - K, LABELS, K)),
    ("codes", lambda: prior.make_sequences(CODES.float(), LABELS, K)),
    ("labels", lambda: prior.make_sequences(CODES, LABELS.float(), K)),
    ("labels", lambda: prior.make_sequences(CODES, torch.tensor([0, 1, -1]), K)),
    ("labels", lambda: prior.make_sequences(CODES, LABELS[:2], K)),
    ("num_codes", lambda: prior.make_sequences(CODES, LABELS, 0)),
    ("labels", lambda: prior.make_sequences(CODES, torch.tensor([0, 1, 11]), K)),  # null is 10
    ("labels", lambda: prior.make_sequences(CODES, torch.tensor([0, 1, 4]), K, num_classes=3)),
    ("num_classes", lambda: prior.make_sequences(CODES, LABELS, K, num_classes=0)),
    ("p_uncond", lambda: prior.prior_batch_loss(PRIOR, CODES, LABELS, None, 4, 1.5)),
    ("codes", lambda: prior.train_prior(PRIOR, torch.randint(0, K, (3, 3, 3)), LABELS, 1,
                                        progress=False)),
    ("labels", lambda: prior.train_prior(PRIOR, CODES, LABELS[:2], 1, progress=False)),
    ("lr", lambda: prior.train_prior(PRIOR, CODES, LABELS, 1, lr=-1.0, progress=False)),
    ("lr", lambda: prior.train_prior(PRIOR, CODES, LABELS, 1, lr=NAN, progress=False)),
    ("seed", lambda: prior.train_prior(PRIOR, CODES, LABELS, 1, seed=-1, progress=False)),
    ("seed", lambda: prior.train_prior(PRIOR, CODES, LABELS, 1, seed=1.5, progress=False)),
    ("labels", lambda: prior.ar_generate(PRIOR, [10])),
    # the training loop: a held-out measure that cannot run
    ("eval_every", lambda: training.fit(PRIOR, lambda g: None, 1, eval_every=0)),
    ("eval_loss", lambda: training.fit(PRIOR, lambda g: None, 1, eval_loss=1.5)),
    ("warmup", lambda: training.fit(PRIOR, lambda g: None, 1, warmup=-1)),
    ("steps", lambda: training.fit(PRIOR, lambda g: None, 0)),
    ("generator", lambda: prior.ar_generate(PRIOR, [1], generator=3)),
    # sampling: settings that leave no token to draw, or NaN
    ("k", lambda: sampling.top_k_filter(LOGITS, 0)),
    ("k", lambda: sampling.top_k_filter(LOGITS, -1)),
    ("k", lambda: sampling.top_k_filter(LOGITS, 1.5)),
    *[("p", lambda p=p: sampling.top_p_filter(LOGITS, p)) for p in (0.0, 1.5, -0.1, NAN, "1")],
    ("temperature", lambda: sampling.apply_temperature(LOGITS, "1")),
    ("greedy", lambda: sampling.sample_logits(LOGITS, greedy="no")),
    ("generator", lambda: sampling.sample_logits(LOGITS, generator=1)),
    ("cond", lambda: sampling.cfg_logits(LOGITS.long(), LOGITS.long(), 2.0)),
    *[("p_uncond", lambda p=p: sampling.drop_labels(LABELS, p, 10)) for p in (1.5, -0.5, NAN)],
    ("labels", lambda: sampling.drop_labels(LABELS.float(), 0.1, 10)),
    ("labels", lambda: sampling.drop_labels(LABELS[None], 0.1, 10)),
    ("null_class", lambda: sampling.drop_labels(LABELS, 0.1, -1)),
    ("null_class", lambda: sampling.drop_labels(LABELS, 0.1, 1.5)),
    ("generator", lambda: sampling.drop_labels(LABELS, 0.1, 10, 5)),
    # transformer: the cache and the mask
    ("T", lambda: _filled_cache().advance(2)),
    ("T", lambda: _filled_cache().advance(-1)),
    ("T", lambda: _filled_cache().advance(1.5)),
    ("max_len", lambda: transformer.KVCache(1, 1, 1, 0, 4)),
    ("batch_size", lambda: transformer.KVCache(1, 0, 1, 4, 4)),
    ("batch_size", lambda: GPT.new_cache(0)),
    ("batch_size", lambda: GPT.new_cache(1.5)),
    ("max_len", lambda: GPT.new_cache(1, 2.5)),
    ("T_q", lambda: transformer.causal_mask(0)),
    ("T_q", lambda: transformer.causal_mask(2.5)),
    ("causal", lambda: transformer.TransformerConfig(4, 4, causal="yes")),
    ("pick", lambda: transformer.generate(GPT, torch.tensor([[1]]), 2, pick=3)),
    # maskgit: ids beyond [MASK] or the null class, counts outside the sequence
    ("tokens", lambda: MASKGIT(torch.full((1, G * G), MASK_ID + 1), torch.tensor([0]))),
    ("tokens", lambda: MASKGIT(torch.full((1, G * G), -1), torch.tensor([0]))),
    ("tokens", lambda: MASKGIT(MASKED[:1].float(), torch.tensor([0]))),
    ("tokens", lambda: MASKGIT(MASKED[:1, :3], torch.tensor([0]))),
    ("labels", lambda: MASKGIT(MASKED[:1], torch.tensor([NULL + 1]))),
    ("labels", lambda: MASKGIT(MASKED[:1], torch.tensor([1.0]))),
    ("labels", lambda: MASKGIT(MASKED, torch.tensor([1]))),
    ("n_mask", lambda: maskgit.remask_lowest(CONFIDENCE, torch.tensor([-1, 1]), 0.0)),
    ("n_mask", lambda: maskgit.remask_lowest(CONFIDENCE, torch.tensor([5, 1]), 0.0)),
    ("n_mask", lambda: maskgit.remask_lowest(CONFIDENCE, torch.tensor([1.0, 1.0]), 0.0)),
    ("n_mask", lambda: maskgit.remask_lowest(CONFIDENCE, torch.tensor([1]), 0.0)),
    ("temperature", lambda: maskgit.remask_lowest(CONFIDENCE, torch.tensor([1, 1]), -1.0)),
    ("temperature", lambda: maskgit.remask_lowest(CONFIDENCE, torch.tensor([1, 1]), NAN)),
    ("confidence", lambda: maskgit.remask_lowest(CONFIDENCE.long(), torch.tensor([1, 1]), 0.0)),
    ("generator", lambda: maskgit.remask_lowest(CONFIDENCE, torch.tensor([1, 1]), 1.0, 3)),
    ("tokens", lambda: maskgit.random_mask(torch.rand(2, 4), 30)),
    ("tokens", lambda: maskgit.random_mask(torch.randint(0, K, (4,)), 30)),
    ("mask_id", lambda: maskgit.random_mask(torch.randint(0, K, (2, 4)), -1)),
    ("tokens", lambda: maskgit.sample_with_confidence(torch.randn(1, 4, 5), torch.zeros(1, 4), 7)),
    ("tokens", lambda: maskgit.sample_with_confidence(torch.randn(1, 4, 5),
                                                      torch.zeros(1, 3, dtype=torch.long), 7)),
    ("generator", lambda: maskgit.sample_with_confidence(torch.randn(1, 4, 5),
                                                         torch.full((1, 4), 7), 7, 3)),
    ("steps", lambda: maskgit.decode_loop(MASKGIT, torch.tensor([1]), MASKED[:1], 0)),
    ("generator", lambda: maskgit.decode(MASKGIT, torch.tensor([1]), generator=1)),
    ("p_uncond", lambda: maskgit.maskgit_loss(MASKGIT, CODES, LABELS, 1.5)),
    ("codes", lambda: maskgit.maskgit_loss(MASKGIT, CODES + K, LABELS)),
    ("labels", lambda: maskgit.maskgit_loss(MASKGIT, CODES, torch.tensor([0, 1, NULL + 1]))),
    ("labels", lambda: maskgit.maskgit_loss(MASKGIT, CODES, LABELS.float())),
    ("batch_size", lambda: maskgit.train_maskgit(MASKGIT, CODES, LABELS, 1, batch_size=0,
                                                 progress=False)),
    ("p_uncond", lambda: maskgit.train_maskgit(MASKGIT, CODES, LABELS, 1, p_uncond=2.0,
                                               progress=False)),
    ("label_smoothing", lambda: maskgit.train_maskgit(MASKGIT, CODES, LABELS, 1,
                                                      label_smoothing=-1.0, progress=False)),
    ("lr", lambda: maskgit.train_maskgit(MASKGIT, CODES, LABELS, 1, lr=0.0, progress=False)),
    # any-to-any and its vocabulary
    ("template", lambda: anytoany.caption(True, 1)),
    ("digit", lambda: anytoany.caption(0, False)),
    ("text", lambda: anytoany.read_digit(3)),
    ("text", lambda: anytoany.is_known_wording(3)),
    ("vocab", lambda: anytoany.CaptionedDigits(CODES, LABELS, "v")),
    ("generator", lambda: anytoany.CaptionedDigits(CODES, LABELS, VOCAB).batch(2, 3)),
    ("num_codes", lambda: anytoany.AnyToAnyConfig(num_codes=0)),
    ("dropout", lambda: anytoany.AnyToAnyConfig(dropout=2.0)),
    ("config", lambda: anytoany.AnyToAny(PRIOR.config)),
    ("answer_start", lambda: anytoany.masked_targets(DOCS, torch.tensor([1.0, 2.0]), VOCAB)),
    ("answer_start", lambda: anytoany.masked_targets(DOCS, torch.tensor([-1, 2]), VOCAB)),
    ("answer_start", lambda: anytoany.masked_targets(DOCS, torch.tensor([1, 5]), VOCAB)),
    ("answer_start", lambda: anytoany.masked_targets(DOCS, torch.tensor([1]), VOCAB)),
    ("seqs", lambda: anytoany.masked_targets(DOCS.float(), torch.tensor([1, 2]), VOCAB)),
    ("seqs", lambda: anytoany.masked_targets(DOCS + 999, torch.tensor([1, 2]), VOCAB)),
    ("vocab", lambda: anytoany.masked_targets(DOCS, torch.tensor([1, 2]), "v")),
    ("answer_start", lambda: anytoany.span_loss(A2A, DOCS, torch.tensor([1.5, 2.0]))),
    ("data", lambda: anytoany.train_anytoany(A2A, "x", 1, progress=False)),
    ("warmup", lambda: anytoany.train_anytoany(
        A2A, anytoany.CaptionedDigits(CODES, LABELS, VOCAB), 1, warmup=-1, progress=False)),
    ("tokens", lambda: anytoany.allowed_next(DOCS.float(), VOCAB)),
    ("tokens", lambda: anytoany.allowed_next(DOCS[0], VOCAB)),
    ("max_images_tokens", lambda: VOCAB.render(torch.tensor([1]), -1)),
    ("complete", lambda: vocab.split_sequence(torch.tensor([1]), VOCAB, complete="no")),
    ("vocab", lambda: vocab.split_sequence(torch.tensor([1]), "v")),
    # quantizers
    ("z", lambda: quantize.squared_distances(torch.randn(3, 3), CODEBOOK)),
    ("generator", lambda: quantize.kmeans(torch.randn(20, 4), 3, generator=1)),
    ("eps", lambda: vq.ema_update(CODEBOOK, torch.ones(8), CODEBOOK.clone(), torch.randn(5, 4),
                                  0.9, 0.0)),
    ("eps", lambda: vq.ema_update(CODEBOOK, torch.ones(8), CODEBOOK.clone(), torch.randn(5, 4),
                                  0.9, NAN)),
    # tokenizer
    ("beta", lambda: tokenizer.TokenizerConfig(beta=-1.0)),
    ("dead_code_threshold", lambda: tokenizer.TokenizerConfig(dead_code_threshold=NAN)),
    ("channels", lambda: tokenizer.TokenizerConfig(channels=12)),
    ("kmeans_init", lambda: tokenizer.TokenizerConfig(kmeans_init="yes")),
    ("gan", lambda: tokenizer.TrainConfig(gan="yes")),
    ("config", lambda: tokenizer.train_tokenizer(config="x", progress=False)),
    ("train", lambda: tokenizer.train_tokenizer(train="x", progress=False)),
    # the classifier, the data, the judges
    ("hidden", lambda: classifier.ClassifierConfig(0)),
    ("config", lambda: classifier.DigitClassifier(64)),
    ("seed", lambda: classifier.load_classifier(seed=-1)),
    ("max_iter", lambda: classifier.train_classifier(max_iter=0)),
    ("weight_decay", lambda: classifier.train_classifier(weight_decay=-1.0, max_iter=1)),
    ("seed", lambda: classifier.train_classifier(seed=-1, max_iter=1)),
    ("seed", lambda: data.load_digits(seed=-1)),
    ("test_fraction", lambda: data.load_digits(test_fraction=NAN)),
    ("test_fraction", lambda: data.load_digits(test_fraction="0.2")),
    ("batch_size", lambda: evaluate.reconstruct(TOKENIZER, torch.zeros(2, 1, 8, 8), 0)),
    ("labels", lambda: evaluate.spread(torch.randn(4, 1, 2, 2), torch.tensor([0.0, 0, 1, 1]))),
    ("labels", lambda: evaluate.spread(torch.randn(4, 1, 2, 2), torch.tensor([0, 0, 1]))),
    ("features", lambda: evaluate.feature_statistics(torch.full((3, 2), NAN))),
    ("mean_a", lambda: evaluate.frechet_distance(torch.full((2,), NAN), torch.eye(2),
                                                 torch.zeros(2), torch.eye(2))),
    ("cov_a", lambda: evaluate.frechet_distance(torch.zeros(2), torch.eye(3), torch.zeros(2),
                                                torch.eye(2))),
    ("seed", lambda: evaluate.real_sample(4, seed=-1)),
    ("n", lambda: evaluate.real_sample(4.5)),
    ("method", lambda: evaluate.RaceSetting("GAN")),
    ("sampler", lambda: evaluate.RaceSetting("diffusion", 4, sampler="euler")),
    ("repeats", lambda: evaluate.seconds_per_image(print, 1, 0, torch.device("cpu"))),
    ("samples_per_class", lambda: evaluate.race(MASKGIT, PRIOR, TOKENIZER, None, settings=[],
                                                samples_per_class=0)),
    ("per_caption", lambda: evaluate.text_to_image_accuracy(A2A, TOKENIZER, None,
                                                            per_caption=0)),
    ("batch_size", lambda: evaluate.image_to_text_accuracy(A2A, CODES, LABELS, 0)),
    ("labels", lambda: evaluate.image_to_text_accuracy(A2A, CODES, LABELS[:2])),
    ("indices", lambda: fsq.FSQ([3, 3]).codes(torch.full((1, 2, 2), 9))),
    # checkpoints (the rows that need a saved file take it as an argument: see CHECKPOINT_CALLS)
    ("kind", lambda: checkpoints.checkpoint_path("vqgan")),
    ("kind", lambda: checkpoints.checkpoint_path(None)),
    ("kind", lambda: checkpoints.load(["prior"])),
    ("model", lambda: checkpoints.save("x", "unused.pt")),
    ("model", lambda: checkpoints.save(torch.nn.Linear(2, 2), "unused.pt")),
    ("model", lambda: checkpoints.save(GPT, "unused.pt")),  # no kind: a part of a prior
    ("seconds", lambda: checkpoints.training_meta("s.py", {}, NAN)),
    ("seconds", lambda: checkpoints.training_meta("s.py", {}, -1.0)),
    ("recipe", lambda: checkpoints.training_meta("s.py", [("steps", 1)], 1.0)),
    ("script", lambda: checkpoints.training_meta(None, {}, 1.0)),
    ("tokenizer", lambda: checkpoints.training_meta("s.py", {}, 1.0, tokenizer=PRIOR)),
    # vq: state that would broadcast, flags that a string would turn on, ids beyond K
    ("z", lambda: vq.straight_through(torch.ones(3, dtype=torch.long),
                                      torch.ones(3, dtype=torch.long))),
    ("z", lambda: vq.straight_through([1.0], torch.ones(1))),
    *[("eps", lambda e=e: vq.laplace_smoothed(torch.tensor([0.0, 3.0]), e))
      for e in (0.0, -1.0, NAN)],
    ("cluster_size", lambda: vq.ema_update(CODEBOOK, torch.ones(1), CODEBOOK.clone(), Z)),
    ("embed_avg", lambda: vq.ema_update(CODEBOOK, torch.ones(8), CODEBOOK[:1].clone(), Z)),
    ("embed_avg", lambda: vq.ema_update(CODEBOOK, torch.ones(8), CODEBOOK[:, :1].clone(), Z)),
    ("z", lambda: vq.ema_update(CODEBOOK, torch.ones(8), CODEBOOK.clone(), Z[:, :1])),
    ("z", lambda: vq.ema_update(CODEBOOK, torch.ones(8), CODEBOOK.clone(), Z.long())),
    ("codebook", lambda: vq.ema_update(CODEBOOK.long(), torch.ones(8), CODEBOOK.clone(), Z)),
    *[(flag, lambda flag=flag: vq.VectorQuantizer(8, 4, **{flag: "no"}))
      for flag in ("ema", "kmeans_init", "l2_normalize")],
    ("indices", lambda: vq.usage_stats(torch.tensor([0, 9]), 8)),
    ("indices", lambda: vq.usage_stats(torch.tensor([0.0, 1.0]), 8)),
    ("num_codes", lambda: vq.usage_stats(torch.tensor([0, 1]), 0)),
    # sampling: integer logits (rounded already), a bool temperature, nothing left to draw
    ("logits", lambda: sampling.apply_temperature(LOGITS.long(), 2.0)),
    ("logits", lambda: sampling.apply_temperature([1.0, 2.0], 1.0)),
    ("temperature", lambda: sampling.apply_temperature(LOGITS, True)),
    ("logits", lambda: sampling.top_k_filter(LOGITS.long(), 2)),
    ("logits", lambda: sampling.top_p_filter(LOGITS.long(), 0.5)),
    ("logits", lambda: sampling.sample_logits(torch.full((1, 3), -INF))),
    ("logits", lambda: sampling.sample_logits(torch.tensor([[0.0, 1.0], [-INF, -INF]]))),
    # transformer
    ("T_k", lambda: transformer.causal_mask(1, True)),
    ("T_k", lambda: transformer.causal_mask(2, 2.5)),
    ("config", lambda: transformer.count_parameters({"vocab_size": 4})),
    ("cache", lambda: GPT(torch.tensor([[1]]), cache="x")),
    ("dtype", lambda: transformer.KVCache(1, 1, 1, 4, 4, dtype=torch.long)),
    ("use_cache", lambda: transformer.generate(GPT, torch.tensor([[1]]), 2, use_cache="no")),
    ("pick", lambda: transformer.generate(GPT, torch.tensor([[1]]), 2,
                                          pick=lambda logits: logits.softmax(-1).max(-1).values)),
    ("pick", lambda: transformer.generate(GPT, torch.tensor([[1]]), 1,
                                          pick=lambda logits: logits.argmax(-1) + 100)),
    # diffusion: schedules outside (0, 1), steps out of order, flags, pixels out of range
    ("beta_start", lambda: diffusion.make_betas("linear", 10, beta_start=-0.1)),
    ("beta_start", lambda: diffusion.make_betas("linear", 10, beta_start=0.0)),
    ("beta_start", lambda: diffusion.make_betas("linear", 10, beta_start=NAN)),
    ("beta_end", lambda: diffusion.make_betas("linear", 10, beta_end=1.5)),
    ("beta_start", lambda: diffusion.make_betas("linear", 10, beta_start=0.5, beta_end=0.1)),
    ("betas", lambda: diffusion.alphas_cumprod_of(torch.tensor([0.5, 1.5]))),
    ("betas", lambda: diffusion.alphas_cumprod_of(torch.tensor([0.5, NAN]))),
    ("betas", lambda: diffusion.alphas_cumprod_of([0.1, 0.2])),
    ("t", lambda: diffusion.abar_at(AC, -2)),
    ("t", lambda: diffusion.abar_at(AC, 10)),
    ("t_prev", lambda: diffusion.posterior_mean_variance(X8, X8, 3, 5, AC)),
    ("t", lambda: diffusion.posterior_mean_variance(X8, X8, 30, 5, AC)),
    ("x0", lambda: diffusion.posterior_mean_variance(X8[:1], X8, 5, 3, AC)),
    ("noise", lambda: diffusion.add_noise(X8, X8.long(), L2, AC)),
    ("clip", lambda: diffusion.ddim_step(X8, X8, 5, 3, AC, clip="no")),
    ("clip", lambda: diffusion.ddpm_step(X8, X8, 5, 3, AC, clip="no")),
    ("step", lambda: diffusion.sample_loop(DIFFUSION, torch.tensor([1]), AC, 2, step="ddim")),
    ("model", lambda: diffusion.sample("x", torch.tensor([1]))),
    ("model", lambda: diffusion.diffusion_loss("m", X8, L2, AC)),
    ("emb_dim", lambda: diffusion.DiffusionConfig(emb_dim=7)),
    ("seed", lambda: diffusion.train_diffusion(DIFFUSION, X8, L2, 1, seed=-1, progress=False)),
    ("seed", lambda: diffusion.train_diffusion(DIFFUSION, X8, L2, 1, seed=1.5, progress=False)),
    ("steps", lambda: diffusion.train_diffusion(DIFFUSION, X8, L2, 0, progress=False)),
    ("progress", lambda: diffusion.train_diffusion(DIFFUSION, X8, L2, 1, progress="no")),
    ("images", lambda: diffusion.train_diffusion(DIFFUSION, X8 * 127.5 + 127.5, L2, 1,
                                                 progress=False)),
    ("images", lambda: diffusion.train_diffusion(DIFFUSION, X8.masked_fill(X8 > 0.9, NAN), L2,
                                                 1, progress=False)),
    # evaluate: images are (N, C, H, W) batches, compared only with images of their size
    ("images", lambda: evaluate.spread(X8[:, 0], torch.tensor([1, 1]))),
    ("images", lambda: evaluate.spread(X8.masked_fill(X8 > 0.9, NAN), torch.tensor([1, 1]))),
    ("images", lambda: evaluate.pairwise_distance_per_class(X8.long(), L2)),
    ("reference", lambda: evaluate.diversity(X8, L2, torch.zeros(2, 1, 16, 16), L2)),
    ("reference_labels", lambda: evaluate.diversity(X8, L2, X8, L2.float())),
    ("reference_labels", lambda: evaluate.diversity(X8, L2, X8, L2[:1])),
    ("images", lambda: evaluate.nearest_distance(X8.flatten(1), X8)),
    ("reference", lambda: evaluate.nearest_distance(X8, X8[:, :, :4])),
    ("reference", lambda: evaluate.nearest_distance(X8, X8[:0])),
    ("images", lambda: evaluate.sharpness(X8[0, 0])),
    ("images", lambda: evaluate.sharpness(X8[:, :, :1])),
    ("images", lambda: evaluate.digit_fd(X8[:, 0], X8, None)),
    ("images", lambda: evaluate.digit_fd(X8[:1], X8, None)),
    ("reference", lambda: evaluate.digit_fd(X8, torch.zeros(2, 1, 16, 16), None)),
    ("reference", lambda: evaluate.digit_fd(X8, X8[:1], None)),
    ("steps", lambda: evaluate.race_settings(steps=(0,))),
    ("steps", lambda: evaluate.race_settings(steps=(4.0,))),
    ("steps", lambda: evaluate.race_settings(steps=8)),
    ("schedules", lambda: evaluate.race_settings(schedules=("cos",))),
    ("schedules", lambda: evaluate.race_settings(schedules="linear")),
    ("steps", lambda: evaluate.RaceSetting("MaskGIT", 0)),
    ("steps", lambda: evaluate.RaceSetting("diffusion", 0)),
    ("schedule", lambda: evaluate.RaceSetting("MaskGIT", 4, "pow0")),
]

# Rows that read a saved checkpoint: (argument, call taking the file's path).
CHECKPOINT_CALLS = [
    ("device", lambda path: checkpoints.load("prior", path, device="gpu")),
    ("device", lambda path: checkpoints.load("prior", path, device=3.5)),
    ("device", lambda path: checkpoints.load("prior", path, device="cuda")
     if not torch.cuda.is_available() else checkpoints.load("prior", path, device="gpu:0")),
    ("path", lambda path: checkpoints.load("prior", 3)),
    ("path", lambda path: checkpoints.load_payload(None, "prior")),
    ("kind", lambda path: checkpoints.load_payload(path, "vqgan")),
    ("meta", lambda path: checkpoints.save(PRIOR, path.with_name("m.pt"), 3)),
    ("meta", lambda path: checkpoints.save(PRIOR, path.with_name("m.pt"), {"t": torch.ones(1)})),
    ("meta", lambda path: checkpoints.save(PRIOR, path.with_name("m.pt"), {1: "one"})),
    ("path", lambda path: checkpoints.save(PRIOR, None)),
]


@pytest.mark.parametrize("name, call", CHECKPOINT_CALLS,
                         ids=[f"{i:03d}-{name}" for i, (name, _) in enumerate(CHECKPOINT_CALLS)])
def test_bad_checkpoint_arguments_are_refused_by_name(name, call, prior_file):
    with pytest.raises((ValueError, TypeError)) as info:
        call(prior_file)
    assert re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", str(info.value)), str(info.value)
    assert not prior_file.with_name("m.pt").exists()  # a refused save writes nothing


@pytest.mark.parametrize("name, call", BAD_CALLS,
                         ids=[f"{i:03d}-{name}" for i, (name, _) in enumerate(BAD_CALLS)])
def test_bad_arguments_are_refused_by_name(name, call):
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    assert re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", str(info.value)), str(info.value)
