"""Lesson 07: any-to-any, one causal transformer that reads and writes text and images.

With the shared vocabulary of `minitok.vocab`, text-to-image and captioning are the same
thing: continue a document. Both directions are trained in one mixed stream:

    text -> image   "the digit 7" <boi> [64 codes] <eoi> <eot>     predict the image
    image -> text   <boi> [64 codes] <eoi> "the digit 7" <eot>     predict the caption

and the loss is taken only on the part being predicted (the answer), never on the prompt
or the padding. At generation time the decoding is constrained by the document's grammar:
inside an image span only image ids may be drawn and <eoi> is forced after exactly
grid_size**2 codes; in text no image id may be drawn.

Reading order: the captions and their held-out split, `CaptionedDigits` (the training
stream), the model `AnyToAny`, `masked_targets` and `span_loss`, `train_anytoany`,
`allowed_next` and `constrained_generate` (with `CaptionGuidance` for classifier-free
guidance), then the two tasks `text_to_image` and `image_to_text`. How well both directions
do on held-out captions is measured in `minitok.evaluate`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from minitok import validate
from minitok.checkpoints import Checkpointable
from minitok.sampling import cfg_logits, sample_logits
from minitok.training import fit
from minitok.transformer import Transformer, TransformerConfig
from minitok.vocab import ALPHABET, Vocabulary, build_sequence, split_sequence

IGNORE = -100  # the target value F.cross_entropy skips (its default ignore_index)

# The temperature images are drawn at: `text_to_image`'s default, so the benchmark, the
# lesson and the demo all draw at it. At 1 this small model's samples often smear one digit
# into another; at 0.5 each code is drawn from a sharper distribution (less variety, more
# legible digits, as in Lesson 05). It was chosen on training captions (the lowest-cost
# temperature that drew 85% of them legibly), then measured on the held-out ones.
DRAW_TEMPERATURE = 0.5

# --------------------------------------------------------------------------- captions

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# The wordings of a caption: a prefix, the digit as a word or a numeral, a suffix. 6 x 2 x 3
# = 36 ways to say which digit an image shows, so that the digit's name turns up in many
# contexts and the model has to find it in the caption to know what to draw.
PREFIXES = ("", "the digit ", "a handwritten ", "number ", "the number ", "a picture of ")
FORMS = ("{word}", "{numeral}")
SUFFIXES = ("", " by hand", " in ink")
TEMPLATES = tuple(p + f + s for p in PREFIXES for f in FORMS for s in SUFFIXES)


def caption(template: int, digit: int) -> str:
    """The caption of `digit` (0..9) in wording `template` (an index into TEMPLATES)."""
    if isinstance(template, bool) or not isinstance(template, int) or not (
            0 <= template < len(TEMPLATES)):
        raise ValueError(f"template must be an int in [0, {len(TEMPLATES) - 1}], got {template!r}")
    if isinstance(digit, bool) or not isinstance(digit, int) or not 0 <= digit <= 9:
        raise ValueError(f"digit must be an int in [0, 9], got {digit!r}")
    return TEMPLATES[template].format(word=DIGIT_WORDS[digit], numeral=str(digit))


def held_out_pairs() -> list[tuple[int, int]]:
    """The (template, digit) combinations never shown in training: six wordings per digit.

    Template t is (prefix p, form f, suffix s) with t = (p * 2 + f) * 3 + s. Digit d is held
    out in the six wordings with (p + f + s + d) % 6 == 0: one for each (form, suffix), each
    with another prefix. So every wording is still seen with other digits, and every digit
    in each form and with each suffix: to draw "a handwritten four" the model must combine a
    wording and a digit name that it only ever saw apart.
    """
    held = []
    for digit in range(10):
        for t in range(len(TEMPLATES)):
            p, rest = divmod(t, len(FORMS) * len(SUFFIXES))
            f, s = divmod(rest, len(SUFFIXES))
            if (p + f + s + digit) % 6 == 0:
                held.append((t, digit))
    return held


def training_pairs() -> list[tuple[int, int]]:
    """Every (template, digit) combination that is not held out (300 of 360)."""
    held = set(held_out_pairs())
    return [(t, d) for d in range(10) for t in range(len(TEMPLATES)) if (t, d) not in held]


def read_digit(text: str) -> int | None:
    """The digit a caption names, as a word or a numeral, or None if it names none or several.

    This is the captioning checker: "a handwritten seven" -> 7, "number 3" -> 3,
    "seven or 3" -> None, "" -> None.
    """
    named = set()
    for word in re.findall(r"[a-z]+|[0-9]+", validate.instance(text, "text", str).lower()):
        if word in DIGIT_WORDS:
            named.add(DIGIT_WORDS.index(word))
        elif word.isdigit() and len(word) == 1:
            named.add(int(word))
        elif word.isdigit():
            return None  # "17" names no single digit
    return named.pop() if len(named) == 1 else None


def is_known_wording(text: str) -> bool:
    """True if `text` is exactly one of the 360 captions (any template, any digit)."""
    validate.instance(text, "text", str)
    return any(text == caption(t, d) for t in range(len(TEMPLATES)) for d in range(10))


# --------------------------------------------------------------------------- the mixed stream


class CaptionedDigits:
    """Tokenised digit images with captions, served as a mixed stream of both directions.

    grids: (N, G, G) int64 image codes (the Lesson 03 tokenizer's output), labels: (N,) the
    digit of each. Each example draws an image, one of the wordings allowed for its digit
    (`pairs`, by default the training pairs), and a direction, then builds the document and
    notes where its answer starts:

        text -> image   caption <boi> | codes <eoi> <eot>     answer_start = len(caption) + 1
        image -> text   <boi> codes <eoi> | caption <eot>     answer_start = G*G + 2

    With probability `p_uncond` a text -> image example loses its caption, leaving
    "<boi> | codes <eoi> <eot>" (answer_start = 1): the model also learns to draw a digit
    when told nothing, which is what classifier-free guidance needs (see `text_to_image`).

    Documents are right-padded with <pad> to `max_len`, the longest possible document.
    `build` lays each document out: `vocab.build_sequence`, or Lesson 07's exercise of the
    same name (so that the lesson trains on the documents your code writes).
    """

    def __init__(self, grids: torch.Tensor, labels: torch.Tensor, vocab: Vocabulary,
                 pairs: list[tuple[int, int]] | None = None, p_text_to_image: float = 0.5,
                 p_uncond: float = 0.0,
                 build: Callable[[list, Vocabulary], torch.Tensor] = build_sequence):
        validate.instance(vocab, "vocab", Vocabulary).check_grids(grids, "grids")
        validate.index_tensor(labels, "labels", size=10, dim=1)
        if labels.shape != grids.shape[:1]:
            raise ValueError(f"labels must be ({grids.shape[0]},) digits, one per grid, got shape "
                             f"{tuple(labels.shape)}")
        validate.number(p_text_to_image, "p_text_to_image", low=0, high=1)
        validate.number(p_uncond, "p_uncond", low=0, high=1)
        if not callable(build):
            raise TypeError(f"build must be a function like vocab.build_sequence, got "
                            f"{type(build).__name__}")
        self.build = build
        self.grids = grids.long().cpu()
        self.labels = labels.long().cpu()
        self.vocab = vocab
        self.p_text_to_image = p_text_to_image
        self.p_uncond = p_uncond
        pairs = training_pairs() if pairs is None else pairs
        self.templates_for = {d: [t for t, d2 in pairs if d2 == d] for d in range(10)}
        missing = sorted({int(d) for d in self.labels.unique()} - {
            d for d, ts in self.templates_for.items() if ts})
        if missing:
            raise ValueError(f"pairs give no wording for digits {missing} that the labels hold")
        longest = max(len(caption(t, d)) for t, d in pairs)
        self.max_len = longest + vocab.tokens_per_image + 3  # <boi>, <eoi>, <eot>

    def __len__(self) -> int:
        return self.grids.shape[0]

    def example(self, index: int, template: int | None, text_to_image: bool
                ) -> tuple[torch.Tensor, int]:
        """One document (L,) and the position where its answer starts.

        template None with text_to_image is the caption-less document <boi> codes <eoi> <eot>.
        """
        grid = self.grids[index]  # (G, G)
        if template is None:
            if not text_to_image:
                raise ValueError("template: None (no caption) only exists for text -> image")
            return self.build([grid], self.vocab), 1
        text = caption(template, int(self.labels[index]))
        if text_to_image:
            return self.build([text, grid], self.vocab), len(text) + 1
        return self.build([grid, text], self.vocab), self.vocab.tokens_per_image + 2

    def batch(self, batch_size: int, generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch: documents (B, max_len) padded with <pad>, answer starts (B,)."""
        validate.positive_int(batch_size, "batch_size")
        validate.generator(generator)
        index = torch.randint(len(self), (batch_size,), generator=generator)  # (B,)
        choice = torch.rand(batch_size, generator=generator)  # (B,) picks the wording
        direction = torch.rand(batch_size, generator=generator) < self.p_text_to_image  # (B,)
        blank = torch.rand(batch_size, generator=generator) < self.p_uncond  # (B,) no caption
        seqs = torch.full((batch_size, self.max_len), self.vocab.pad, dtype=torch.long)
        starts = torch.empty(batch_size, dtype=torch.long)
        for b in range(batch_size):
            i = int(index[b])
            templates = self.templates_for[int(self.labels[i])]
            template = templates[int(choice[b] * len(templates))]
            if direction[b] and blank[b]:
                template = None  # the caption-less document
            seq, start = self.example(i, template, bool(direction[b]))
            seqs[b, : len(seq)] = seq
            starts[b] = start
        return seqs, starts


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class AnyToAnyConfig:
    """The shared vocabulary (image codes, grid, alphabet) and the transformer's size.

    The context holds the longest document: the longest caption, <boi>, G*G codes, <eoi>,
    <eot>.
    """

    num_codes: int = 64
    grid_size: int = 8
    alphabet: str = ALPHABET
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 96
    dropout: float = 0.1

    def __post_init__(self):
        self.transformer_config()  # checks every field, naming it, when the config is made

    def vocab(self) -> Vocabulary:
        return Vocabulary(self.num_codes, self.grid_size, self.alphabet)

    def transformer_config(self) -> TransformerConfig:
        vocab = self.vocab()
        longest = max(len(caption(t, d)) for t in range(len(TEMPLATES)) for d in range(10))
        return TransformerConfig(vocab_size=vocab.size,
                                 block_size=longest + vocab.tokens_per_image + 3,
                                 n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd,
                                 dropout=self.dropout, causal=True)


class AnyToAny(Checkpointable):
    """One causal Transformer over the shared vocabulary: ids (B, T) -> logits (B, T, V)."""

    kind = "anytoany"
    config_class = AnyToAnyConfig

    def __init__(self, config: AnyToAnyConfig):
        super().__init__(config)  # checks it: self.config
        self.vocab = config.vocab()
        self.transformer = Transformer(config.transformer_config())

    def forward(self, idx: torch.Tensor, cache=None) -> torch.Tensor:
        return self.transformer(idx, cache)

    def new_cache(self, batch_size: int, max_len: int | None = None):
        return self.transformer.new_cache(batch_size, max_len)

    @property
    def device(self) -> torch.device:
        return self.transformer.head.weight.device

    @property
    def block_size(self) -> int:
        return self.transformer.config.block_size


# --------------------------------------------------------------------------- the loss


def masked_targets(seqs: torch.Tensor, answer_start: torch.Tensor, vocab: Vocabulary
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets with the loss restricted to the answer.

    seqs: (B, L) documents, answer_start: (B,) the position of each answer's first token.
    Returns inputs = seqs[:, :-1] and targets = seqs[:, 1:], both (B, L-1), where a target
    is set to IGNORE (-100) when it is part of the prompt (its position in seqs is before
    answer_start) or padding. Target j is the token at position j + 1.
    """
    _check_documents(seqs, answer_start, vocab)
    inputs = seqs[:, :-1]  # (B, L-1)
    targets = seqs[:, 1:].clone()  # (B, L-1): target j is token j+1
    position = torch.arange(1, seqs.shape[1], device=seqs.device)  # (L-1,) where targets sit
    in_prompt = position[None, :] < answer_start[:, None]  # (B, L-1)
    targets[in_prompt | (targets == vocab.pad)] = IGNORE
    return inputs, targets


def _check_documents(seqs, answer_start, vocab) -> None:
    """masked_targets' arguments: (B, L) ids of `vocab` and a start in [0, L) per row."""
    validate.instance(vocab, "vocab", Vocabulary)
    B, L = validate.index_tensor(seqs, "seqs", vocab.size, dim=2).shape
    if validate.index_tensor(answer_start, "answer_start", L, dim=1).shape != (B,):
        raise ValueError(f"answer_start must be ({B},), one per document, got shape "
                         f"{tuple(answer_start.shape)}")


def span_loss(model: AnyToAny, seqs: torch.Tensor, answer_start: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens only (a scalar)."""
    inputs, targets = masked_targets(seqs, answer_start, model.vocab)  # (B, L-1) each
    logits = model(inputs)  # (B, L-1, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE)


def train_anytoany(model: AnyToAny, data: CaptionedDigits, steps: int, batch_size: int = 64,
                   lr: float = 3e-3, warmup: int | None = None, seed: int = 0,
                   progress: bool = True) -> list[float]:
    """Train on the mixed stream with the answer-only loss; returns the loss of every step.

    The recipe is `training.fit`'s (weight decay 0.1 here).
    """
    validate.instance(data, "data", CaptionedDigits)
    validate.positive_int(batch_size, "batch_size")

    def batch_loss(generator: torch.Generator) -> torch.Tensor:
        seqs, starts = data.batch(batch_size, generator)
        return span_loss(model, seqs.to(model.device), starts.to(model.device))

    return fit(model, batch_loss, steps, lr=lr, weight_decay=0.1, warmup=warmup, seed=seed,
               desc="any-to-any", progress=progress)


# --------------------------------------------------------------------------- decoding


def allowed_next(tokens: torch.Tensor, vocab: Vocabulary) -> torch.Tensor:
    """Which ids may come next after each prefix: (B, T) -> (B, V) bool, True = allowed.

    The grammar of a document, read from the tokens so far:
      - after <eot> the document is over: only <pad>;
      - inside an image span (the last <boi> comes after the last <eoi>) holding n codes:
        only image ids while n < grid_size**2, then only <eoi>;
      - otherwise we are in text: text ids, <eot> (finish), or <boi> (start an image);
        never an image id, an <eoi> or a <pad>.
    """
    B, T = validate.int_tensor(tokens, "tokens", dim=2).shape
    ids = torch.arange(vocab.size, device=tokens.device)  # (V,)
    position = torch.arange(T, device=tokens.device)  # (T,)
    last_boi = torch.where(tokens == vocab.boi, position, -1).max(dim=1).values  # (B,)
    last_eoi = torch.where(tokens == vocab.eoi, position, -1).max(dim=1).values  # (B,)
    ended = (tokens == vocab.eot).any(dim=1)  # (B,)
    in_image = (last_boi > last_eoi) & ~ended  # (B,)
    n_codes = T - 1 - last_boi  # (B,) tokens since the <boi> (meaningful when in_image)
    want_code = in_image & (n_codes < vocab.tokens_per_image)  # (B,)
    want_eoi = in_image & (n_codes >= vocab.tokens_per_image)  # (B,)
    in_text = ~ended & ~in_image  # (B,)

    text_ok = vocab.is_text(ids) | (ids == vocab.eot) | (ids == vocab.boi)  # (V,)
    allowed = torch.zeros(B, vocab.size, dtype=torch.bool, device=tokens.device)  # (B, V)
    allowed[ended] = ids == vocab.pad
    allowed[want_code] = vocab.is_image(ids)
    allowed[want_eoi] = ids == vocab.eoi
    allowed[in_text] = text_ok
    return allowed


@torch.no_grad()
def constrained_generate(model: AnyToAny, prompt: torch.Tensor, max_new_tokens: int,
                         temperature: float = 1.0, top_k: int | None = None,
                         greedy: bool = False, generator: torch.Generator | None = None,
                         constrained: bool = True) -> torch.Tensor:
    """Continue the documents in `prompt` (B, T0): (B, T0 + n) with n <= max_new_tokens.

    One token per step with a KV cache (prefill the prompt, then feed each new token).
    With `constrained`, each step's logits are masked by `allowed_next` before the draw, so
    the output always follows the grammar. Generation stops early once every row has
    reached <eot>. The prompt must be a well-formed start of a document (no <pad>).
    `model` is anything with `.vocab`, `.new_cache(B, max_len)` and `model(ids, cache)`
    -> (B, T, V) logits: an `AnyToAny`, or a `CaptionGuidance` around one.
    """
    vocab = model.vocab
    validate.index_tensor(prompt, "prompt", vocab.size, dim=2)
    for row in prompt:
        split_sequence(row, vocab, complete=False)  # a clear error for a malformed prompt
    validate.positive_int(max_new_tokens, "max_new_tokens")
    if prompt.shape[1] + max_new_tokens > model.block_size:
        raise ValueError(f"max_new_tokens: prompt ({prompt.shape[1]}) + max_new_tokens "
                         f"({max_new_tokens}) exceeds the model's block_size = {model.block_size}")
    model.eval()
    B, T0 = prompt.shape
    tokens = prompt.long()  # (B, T)
    cache = model.new_cache(B, max_len=T0 + max_new_tokens)
    step_input = tokens  # the prompt first (prefill), then one token per step
    for _ in range(max_new_tokens):
        logits = model(step_input, cache)[:, -1, :].float()  # (B, V)
        if constrained:  # forbidden ids get -inf before the draw: probability exactly 0
            logits = logits.masked_fill(~allowed_next(tokens, vocab), float("-inf"))
        next_token = sample_logits(logits, temperature=temperature, top_k=top_k,
                                   generator=generator, greedy=greedy)  # (B,)
        step_input = next_token[:, None]  # (B, 1)
        tokens = torch.cat([tokens, step_input], dim=1)  # (B, T + 1)
        if (tokens == vocab.eot).any(dim=1).all():  # every document has ended
            break
    return tokens


class CaptionGuidance(nn.Module):
    """`model` seen through classifier-free guidance on the caption, for `constrained_generate`.

    It continues two documents side by side with the same new tokens: the captioned prompt
    (which must end with <boi>) and the caption-less document that starts at that <boi>
    (trained with `p_uncond`). Each call returns the last position's mixed logits,
    uncond + cfg_scale * (cond - uncond), as (B, 1, V); its cache is the pair of caches.
    The cost is a second forward pass per token.
    """

    def __init__(self, model: AnyToAny, cfg_scale: float):
        super().__init__()
        self.model = model
        self.cfg_scale = float(validate.number(cfg_scale, "cfg_scale", low=0))
        self.vocab = model.vocab

    def new_cache(self, batch_size: int, max_len: int | None = None):
        return self.model.new_cache(batch_size, max_len), self.model.new_cache(batch_size, max_len)

    def forward(self, idx: torch.Tensor, cache) -> torch.Tensor:
        cond_cache, blank_cache = cache
        cond = self.model(idx, cond_cache)[:, -1:, :]  # (B, 1, V) the captioned document
        # the caption-less document: the prompt's last token (<boi>) first, then the same tokens
        uncond = self.model(idx[:, -1:], blank_cache)[:, -1:, :]  # (B, 1, V)
        return cfg_logits(cond, uncond, self.cfg_scale)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def block_size(self) -> int:
        return self.model.block_size


# --------------------------------------------------------------------------- the two tasks


def text_prompt(text: str, vocab: Vocabulary) -> torch.Tensor:
    """The prompt that asks for an image of `text`: its characters then <boi>, (T0,)."""
    if not validate.instance(text, "text", str):
        raise ValueError("text: an empty caption gives the model nothing to draw from")
    document = build_sequence([text], vocab)  # the caption, <eot>
    return torch.cat([document[:-1], torch.tensor([vocab.boi])])  # (T0,) <eot> -> <boi>


def image_prompt(grids: torch.Tensor, vocab: Vocabulary) -> torch.Tensor:
    """The prompts that ask for captions: <boi> codes <eoi> per grid, (N, G*G + 2)."""
    vocab.check_grids(grids, "grids")
    documents = [build_sequence([grid], vocab)[:-1] for grid in grids]  # each without <eot>
    return torch.stack(documents).to(grids.device)  # (N, G*G + 2)


@torch.no_grad()
def guided_image(model: AnyToAny, prompt: torch.Tensor, cfg_scale: float,
                 temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Write one image after each prompt (n, T0) that ends in <boi>, with classifier-free
    guidance on the caption (`CaptionGuidance`): (n, G*G) image ids."""
    if not (prompt[:, -1] == model.vocab.boi).all():
        raise ValueError("prompt: every row must end with <boi> (the caption-less document "
                         "starts there)")
    out = constrained_generate(CaptionGuidance(model, cfg_scale), prompt,
                               model.vocab.tokens_per_image, temperature=temperature,
                               top_k=top_k, generator=generator)  # (n, T0 + G*G)
    return out[:, prompt.shape[1]:]  # (n, G*G)


@torch.no_grad()
def text_to_image(model: AnyToAny, text: str, n: int, temperature: float = DRAW_TEMPERATURE,
                  top_k: int | None = None, generator: torch.Generator | None = None,
                  cfg_scale: float = 1.0) -> torch.Tensor:
    """Draw `n` images of the caption `text`: (n, G, G) image codes, on the CPU.

    The prompt ends with <boi>, so the constrained decoder writes exactly grid_size**2
    image codes (the <eoi> it would then be forced to write is not drawn), at
    DRAW_TEMPERATURE unless told otherwise. cfg_scale 1 is plain sampling from the
    captioned document; any other value uses classifier-free guidance (`CaptionGuidance`),
    which needs a model trained with caption dropout (p_uncond > 0).
    """
    vocab = model.vocab
    validate.positive_int(n, "n")
    validate.number(cfg_scale, "cfg_scale", low=0)
    prompt = text_prompt(text, vocab).to(model.device).expand(n, -1)  # (n, T0)
    drawer = model if cfg_scale == 1 else CaptionGuidance(model, cfg_scale)
    out = constrained_generate(drawer, prompt, vocab.tokens_per_image, temperature=temperature,
                               top_k=top_k, generator=generator)  # (n, T0 + G*G)
    ids = out[:, prompt.shape[1]:]  # (n, G*G): the forced <eoi> is not drawn
    return vocab.image_codes(ids).reshape(n, vocab.grid_size, vocab.grid_size).cpu()


@torch.no_grad()
def image_to_text(model: AnyToAny, grids: torch.Tensor, max_len: int | None = None,
                  greedy: bool = True, temperature: float = 1.0,
                  generator: torch.Generator | None = None) -> list[str]:
    """Caption each (G, G) grid of codes: a list of N strings.

    The caption is the text the model writes after <eoi>, up to its <eot> (greedy by
    default: the most likely caption). A caption that is cut off by `max_len` (default:
    as long as the model's context allows) is returned as far as it got.
    """
    vocab = model.vocab
    prompt = image_prompt(grids, vocab).to(model.device)  # (N, G*G + 2)
    T0 = prompt.shape[1]
    room = model.block_size - T0
    max_len = room if max_len is None else validate.positive_int(max_len, "max_len")
    validate.number(max_len, "max_len", low=1, high=room)
    out = constrained_generate(model, prompt, max_len, greedy=greedy,
                               temperature=temperature, generator=generator).cpu()
    captions = []
    for row in out[:, T0:]:
        not_text = (~vocab.is_text(row)).nonzero()  # the first non-text id ends the caption
        stop = int(not_text[0]) if len(not_text) else len(row)
        captions.append(vocab.decode_text(row[:stop]))
    return captions
