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
stream), `masked_targets` and `span_loss`, `train`, `allowed_next` and `generate`, then the
two tasks `text_to_image` (with `guided_image` for classifier-free guidance) and
`image_to_text`, and their checkers.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from minitok.checkpoints import checkpoint_path, load_checkpoint
from minitok.sampling import cfg_logits, sample_logits
from minitok.transformer import Transformer, TransformerConfig
from minitok.vocab import Vocabulary, build_sequence, split_sequence

IGNORE = -100  # the target value F.cross_entropy skips (its default ignore_index)

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
    if not isinstance(template, int) or not 0 <= template < len(TEMPLATES):
        raise ValueError(f"template must be an int in [0, {len(TEMPLATES) - 1}], got {template!r}")
    if not isinstance(digit, int) or not 0 <= digit <= 9:
        raise ValueError(f"digit must be an int in [0, 9], got {digit!r}")
    return TEMPLATES[template].format(word=DIGIT_WORDS[digit], numeral=str(digit))


def held_out_pairs() -> list[tuple[int, int]]:
    """The (template, digit) combinations never shown in training: six wordings per digit.

    Template t is (prefix p, form f, suffix s) with t = (p * 2 + f) * 3 + s. Digit d is held
    out in the six wordings with (p + f + s + d) % 6 == 0: one for each (form, suffix), each
    with another prefix. So every wording is still seen with other digits, and every digit
    in each form and with each suffix: to draw "the number four" the model must combine a
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
    for word in re.findall(r"[a-z]+|[0-9]+", text.lower()):
        if word in DIGIT_WORDS:
            named.add(DIGIT_WORDS.index(word))
        elif word.isdigit() and len(word) == 1:
            named.add(int(word))
        elif word.isdigit():
            return None  # "17" names no single digit
    return named.pop() if len(named) == 1 else None


def is_known_wording(text: str) -> bool:
    """True if `text` is exactly one of the 360 captions (any template, any digit)."""
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
    """

    def __init__(self, grids: torch.Tensor, labels: torch.Tensor, vocab: Vocabulary,
                 pairs: list[tuple[int, int]] | None = None, p_text_to_image: float = 0.5,
                 p_uncond: float = 0.0):
        G = vocab.grid_size
        if not isinstance(grids, torch.Tensor) or grids.dim() != 3 or grids.shape[1:] != (G, G):
            shape = tuple(grids.shape) if isinstance(grids, torch.Tensor) else type(grids).__name__
            raise ValueError(f"grids must be (N, {G}, {G}) image codes, got {shape}")
        if not isinstance(labels, torch.Tensor) or labels.shape != (grids.shape[0],):
            raise ValueError(f"labels must be ({grids.shape[0]},) digits, one per grid")
        if not 0.0 <= p_text_to_image <= 1.0:
            raise ValueError(f"p_text_to_image must be in [0, 1], got {p_text_to_image!r}")
        if not 0.0 <= p_uncond <= 1.0:
            raise ValueError(f"p_uncond must be in [0, 1], got {p_uncond!r}")
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
        self.max_len = longest + vocab.image_tokens + 3  # <boi>, <eoi>, <eot>

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
            return build_sequence([grid], self.vocab), 1
        text = caption(template, int(self.labels[index]))
        if text_to_image:
            return build_sequence([text, grid], self.vocab), len(text) + 1
        return build_sequence([grid, text], self.vocab), self.vocab.image_tokens + 2

    def batch(self, batch_size: int, generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch: documents (B, max_len) padded with <pad>, answer starts (B,)."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
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


# --------------------------------------------------------------------------- the loss


def masked_targets(seqs: torch.Tensor, answer_start: torch.Tensor, vocab: Vocabulary
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets with the loss restricted to the answer.

    seqs: (B, L) documents, answer_start: (B,) the position of each answer's first token.
    Returns inputs = seqs[:, :-1] and targets = seqs[:, 1:], both (B, L-1), where a target
    is set to IGNORE (-100) when it is part of the prompt (its position in seqs is before
    answer_start) or padding. Target j is the token at position j + 1.
    """
    inputs = seqs[:, :-1]  # (B, L-1)
    targets = seqs[:, 1:].clone()  # (B, L-1): target j is token j+1
    position = torch.arange(1, seqs.shape[1], device=seqs.device)  # (L-1,) where targets sit
    in_prompt = position[None, :] < answer_start[:, None]  # (B, L-1)
    is_pad = targets == vocab.pad  # (B, L-1)
    targets[in_prompt | is_pad] = IGNORE
    return inputs, targets


def span_loss(model: Transformer, seqs: torch.Tensor, answer_start: torch.Tensor,
              vocab: Vocabulary) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens only (a scalar)."""
    inputs, targets = masked_targets(seqs, answer_start, vocab)  # (B, L-1) each
    logits = model(inputs)  # (B, L-1, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE)


# --------------------------------------------------------------------------- training


def model_config(vocab: Vocabulary, block_size: int, n_layer: int = 4, n_head: int = 4,
                 n_embd: int = 128, dropout: float = 0.1) -> TransformerConfig:
    """The transformer for a vocabulary: vocab_size = vocab.size, causal attention."""
    return TransformerConfig(vocab_size=vocab.size, block_size=block_size, n_layer=n_layer,
                             n_head=n_head, n_embd=n_embd, dropout=dropout, causal=True)


def learning_rate(step: int, steps: int, peak: float, warmup: int = 100) -> float:
    """Linear warm-up to `peak`, then a cosine decay to peak / 10 at the last step."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def train(model: Transformer, data: CaptionedDigits, steps: int, batch_size: int = 64,
          lr: float = 1e-3, generator: torch.Generator | None = None,
          log_every: int = 0) -> list[float]:
    """Train on the mixed stream with the answer-only loss; returns the loss of every step."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1,
                                  betas=(0.9, 0.95))
    model.train()
    losses = []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, lr, warmup=min(100, steps // 10 + 1))
        seqs, starts = data.batch(batch_size, generator)
        loss = span_loss(model, seqs.to(device), starts.to(device), data.vocab)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"step {step:5d}  loss {loss.item():.4f}")
    model.eval()
    return losses


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
    B, T = tokens.shape
    ids = torch.arange(vocab.size, device=tokens.device)  # (V,)
    position = torch.arange(T, device=tokens.device)  # (T,)
    last_boi = torch.where(tokens == vocab.boi, position, -1).max(dim=1).values  # (B,)
    last_eoi = torch.where(tokens == vocab.eoi, position, -1).max(dim=1).values  # (B,)
    ended = (tokens == vocab.eot).any(dim=1)  # (B,)
    in_image = (last_boi > last_eoi) & ~ended  # (B,)
    n_codes = T - 1 - last_boi  # (B,) tokens since the <boi> (meaningful when in_image)
    want_code = in_image & (n_codes < vocab.image_tokens)  # (B,)
    want_eoi = in_image & (n_codes >= vocab.image_tokens)  # (B,)
    in_text = ~ended & ~in_image  # (B,)

    text_ok = vocab.is_text(ids) | (ids == vocab.eot) | (ids == vocab.boi)  # (V,)
    allowed = torch.zeros(B, vocab.size, dtype=torch.bool, device=tokens.device)  # (B, V)
    allowed[ended] = ids == vocab.pad
    allowed[want_code] = vocab.is_image(ids)
    allowed[want_eoi] = ids == vocab.eoi
    allowed[in_text] = text_ok
    return allowed


def constrain_logits(logits: torch.Tensor, tokens: torch.Tensor, vocab: Vocabulary
                     ) -> torch.Tensor:
    """Set the logits of every id the grammar forbids to -inf: (B, V) -> (B, V)."""
    return logits.masked_fill(~allowed_next(tokens, vocab), float("-inf"))


@torch.no_grad()
def generate(model: Transformer, prompt: torch.Tensor, vocab: Vocabulary, max_new_tokens: int,
             temperature: float = 1.0, top_k: int | None = None, greedy: bool = False,
             generator: torch.Generator | None = None, constrained: bool = True
             ) -> torch.Tensor:
    """Continue the documents in `prompt` (B, T0): (B, T0 + n) with n <= max_new_tokens.

    One token per step with a KV cache (prefill the prompt, then feed each new token).
    With `constrained`, each step's logits are masked by `allowed_next` before the draw, so
    the output always follows the grammar; generation stops early once every row has
    reached <eot>. The prompt must be a well-formed start of a document (no <pad>).
    """
    if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2 or prompt.shape[1] == 0:
        raise ValueError("prompt must be a (B, T0) tensor of token ids with T0 >= 1")
    for row in prompt:
        split_sequence(row, vocab, complete=False)  # a clear error for a malformed prompt
    B, T0 = prompt.shape
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if T0 + max_new_tokens > model.config.block_size:
        raise ValueError(
            f"max_new_tokens: prompt ({T0}) + max_new_tokens ({max_new_tokens}) exceeds the "
            f"model's block_size = {model.config.block_size}"
        )
    model.eval()
    tokens = prompt.long()  # (B, T)
    cache = model.new_cache(B, max_len=T0 + max_new_tokens)
    step_input = tokens  # the prompt first (prefill), then one token per step
    for _ in range(max_new_tokens):
        logits = model(step_input, cache)[:, -1, :].float()  # (B, V)
        if constrained:
            logits = constrain_logits(logits, tokens, vocab)
        next_token = sample_logits(logits, temperature=temperature, top_k=top_k,
                                   generator=generator, greedy=greedy)  # (B,)
        step_input = next_token[:, None]  # (B, 1)
        tokens = torch.cat([tokens, step_input], dim=1)  # (B, T + 1)
        if constrained and (tokens == vocab.eot).any(dim=1).all():
            break
    return tokens


# --------------------------------------------------------------------------- the two tasks


def text_prompt(text: str, vocab: Vocabulary) -> torch.Tensor:
    """The prompt that asks for an image of `text`: its characters then <boi>, (T0,)."""
    if not text:
        raise ValueError("text: an empty caption gives the model nothing to draw from")
    return torch.cat([vocab.encode_text(text), torch.tensor([vocab.boi])])  # (T0,)


def image_prompt(grids: torch.Tensor, vocab: Vocabulary) -> torch.Tensor:
    """The prompts that ask for captions: <boi> codes <eoi> per grid, (N, G*G + 2)."""
    G = vocab.grid_size
    if not isinstance(grids, torch.Tensor) or grids.dim() != 3 or grids.shape[1:] != (G, G):
        shape = tuple(grids.shape) if isinstance(grids, torch.Tensor) else type(grids).__name__
        raise ValueError(f"grids must be (N, {G}, {G}) image codes (grid_size={G}), got {shape}")
    N = grids.shape[0]
    codes = vocab.image_ids(grids.reshape(N, -1).long())  # (N, G*G)
    boi = torch.full((N, 1), vocab.boi, dtype=torch.long, device=codes.device)
    eoi = torch.full((N, 1), vocab.eoi, dtype=torch.long, device=codes.device)
    return torch.cat([boi, codes, eoi], dim=1)  # (N, G*G + 2)


@torch.no_grad()
def guided_image(model: Transformer, prompt: torch.Tensor, vocab: Vocabulary, cfg_scale: float,
                 temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Write one image after each prompt (n, T0) that ends in <boi>, with classifier-free
    guidance on the caption: (n, G*G) image ids.

    Two documents are continued side by side with the same tokens: the captioned one and
    the caption-less one that starts at <boi> (trained with `p_uncond`). Each step mixes
    their logits, uncond + cfg_scale * (cond - uncond), masks them by the grammar and
    draws the code that both documents then take.
    """
    n, T0 = prompt.shape
    G2 = vocab.image_tokens
    blank = torch.full((n, 1), vocab.boi, dtype=torch.long, device=prompt.device)  # (n, 1)
    cond_cache = model.new_cache(n, max_len=T0 + G2)
    blank_cache = model.new_cache(n, max_len=1 + G2)
    tokens = prompt.long()  # (n, T) the captioned document, for the grammar
    cond_input, blank_input = tokens, blank  # the prompts first, then one code per step
    for _ in range(G2):
        cond = model(cond_input, cond_cache)[:, -1, :].float()  # (n, V)
        uncond = model(blank_input, blank_cache)[:, -1, :].float()  # (n, V)
        logits = constrain_logits(cfg_logits(cond, uncond, cfg_scale), tokens, vocab)
        next_token = sample_logits(logits, temperature=temperature, top_k=top_k,
                                   generator=generator)  # (n,)
        cond_input = blank_input = next_token[:, None]  # (n, 1)
        tokens = torch.cat([tokens, cond_input], dim=1)  # (n, T + 1)
    return tokens[:, T0:]  # (n, G*G)


@torch.no_grad()
def text_to_image(model: Transformer, vocab: Vocabulary, text: str, n: int,
                  temperature: float = 1.0, top_k: int | None = None,
                  generator: torch.Generator | None = None,
                  cfg_scale: float = 1.0) -> torch.Tensor:
    """Draw `n` images of the caption `text`: (n, G, G) image codes.

    The prompt ends with <boi>, so the constrained decoder writes exactly grid_size**2
    image codes and then the forced <eoi>. cfg_scale 1 is plain sampling from the
    captioned document; any other value uses classifier-free guidance (`guided_image`),
    which needs a model trained with caption dropout (p_uncond > 0); `cfg_logits` refuses
    a scale that is not a number >= 0.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    device = next(model.parameters()).device
    prompt = text_prompt(text, vocab).to(device).expand(n, -1)  # (n, T0)
    T0 = prompt.shape[1]
    if cfg_scale == 1:
        out = generate(model, prompt, vocab, vocab.image_tokens + 1, temperature=temperature,
                       top_k=top_k, generator=generator)  # (n, T0 + G*G + 1)
        ids = out[:, T0 : T0 + vocab.image_tokens]  # (n, G*G)
    else:
        ids = guided_image(model, prompt, vocab, float(cfg_scale), temperature=temperature,
                           top_k=top_k, generator=generator)  # (n, G*G)
    codes = vocab.image_codes(ids)  # (n, G*G)
    return codes.reshape(n, vocab.grid_size, vocab.grid_size).cpu()  # (n, G, G)


@torch.no_grad()
def image_to_text(model: Transformer, vocab: Vocabulary, grids: torch.Tensor,
                  max_len: int | None = None, greedy: bool = True, temperature: float = 1.0,
                  generator: torch.Generator | None = None) -> list[str]:
    """Caption each (G, G) grid of codes: a list of N strings.

    The caption is the text the model writes after <eoi>, up to its <eot> (greedy by
    default: the most likely caption). A caption that is cut off by `max_len` (default:
    as long as the model's context allows) is returned as far as it got.
    """
    device = next(model.parameters()).device
    prompt = image_prompt(grids, vocab).to(device)  # (N, G*G + 2)
    T0 = prompt.shape[1]
    room = model.config.block_size - T0
    max_len = room if max_len is None else max_len
    if not isinstance(max_len, int) or not 1 <= max_len <= room:
        raise ValueError(f"max_len must be an int in [1, {room}] (the context left after "
                         f"the image), got {max_len!r}")
    out = generate(model, prompt, vocab, max_len, greedy=greedy, temperature=temperature,
                   generator=generator).cpu()  # (N, T0 + n)
    captions = []
    for row in out[:, T0:]:
        is_text = vocab.is_text(row)  # (n,)
        stop = int((~is_text).nonzero()[0]) if (~is_text).any() else len(row)
        captions.append(vocab.decode_text(row[:stop]))
    return captions


# --------------------------------------------------------------------------- checkpoint


def file_digest(path: str | Path) -> str:
    """sha256 of a file: ties the any-to-any checkpoint to the tokenizer it was trained on."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_anytoany(path: str | Path | None = None, device: torch.device | str = "cpu",
                  tokenizer_path: str | Path | None = None
                  ) -> tuple[Transformer, Vocabulary]:
    """The shipped any-to-any model (scripts/train_anytoany.py) and its vocabulary.

    Its image ids only mean something for the tokenizer it was trained with, so loading
    checks that the tokenizer checkpoint is the same file (same sha256) and says how to
    retrain when it is not.
    """
    path = checkpoint_path("anytoany") if path is None else Path(path)
    payload = load_checkpoint(path, kind="anytoany")
    tokenizer_path = checkpoint_path("tokenizer") if tokenizer_path is None else tokenizer_path
    expected = payload["meta"].get("tokenizer_sha256")
    if expected is not None and Path(tokenizer_path).is_file():
        found = file_digest(tokenizer_path)
        if found != expected:
            raise ValueError(
                f"path: {str(path)!r} was trained on a different tokenizer checkpoint "
                f"(sha256 {expected[:12]}..., found {found[:12]}... at {str(tokenizer_path)!r}); "
                f"its image ids would mean other codes. Rebuild it: "
                f"python scripts/train_anytoany.py"
            )
    v = payload["config"]["vocab"]
    vocab = Vocabulary(n_image_codes=v["n_image_codes"], grid_size=v["grid_size"],
                       alphabet=v["alphabet"])
    model = Transformer(TransformerConfig(**payload["config"]["model"]))
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), vocab


# --------------------------------------------------------------------------- the held-out goals


@torch.no_grad()
def encode_digits(tokenizer, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The bundled digits of `split` ("train" or "test") as token grids: (N, G, G), (N,)."""
    from minitok.data import load_digits

    images, labels = load_digits(split, size=tokenizer.config.image_size)  # (N, 1, S, S)
    return tokenizer.encode(images).cpu(), labels  # (N, G, G) int64, (N,)


@torch.no_grad()
def text_to_image_accuracy(model: Transformer, vocab: Vocabulary, tokenizer, classifier,
                           per_caption: int = 20, pairs: list[tuple[int, int]] | None = None,
                           temperature: float = 1.0, top_k: int | None = None,
                           generator: torch.Generator | None = None,
                           cfg_scale: float = 1.0) -> dict:
    """Draw `per_caption` images for each caption of `pairs` (default: the held-out ones).

    Each drawn grid is decoded by the tokenizer and read by the Lesson 03 digit classifier;
    an image matches its caption when the classifier reads the digit the caption names.
    Returns {"accuracy": fraction matching, "per_digit": {digit: fraction}, "n": count}.
    """
    if not isinstance(per_caption, int) or per_caption < 1:
        raise ValueError(f"per_caption must be a positive int, got {per_caption!r}")
    pairs = held_out_pairs() if pairs is None else pairs
    right, drawn = [0] * 10, [0] * 10  # per digit
    for template, digit in pairs:
        grids = text_to_image(model, vocab, caption(template, digit), per_caption,
                              temperature=temperature, top_k=top_k, generator=generator,
                              cfg_scale=cfg_scale)
        images = tokenizer.decode(grids).cpu()  # (n, 1, S, S)
        right[digit] += int((classifier.predict(images) == digit).sum())
        drawn[digit] += per_caption
    per_digit = {d: right[d] / drawn[d] for d in range(10) if drawn[d]}
    n = sum(drawn)
    return {"accuracy": sum(right) / n, "per_digit": per_digit, "n": n}


@torch.no_grad()
def image_to_text_accuracy(model: Transformer, vocab: Vocabulary, grids: torch.Tensor,
                           labels: torch.Tensor, batch_size: int = 128) -> dict:
    """Caption every grid (greedy) and count the captions that name the image's digit.

    Returns {"accuracy": fraction naming the right digit, "known_wording": fraction that are
    exactly one of the course's 360 captions, "n": count, "captions": the captions}.
    """
    if labels.shape != (grids.shape[0],):
        raise ValueError(f"labels must be ({grids.shape[0]},), one per grid, "
                         f"got shape {tuple(labels.shape)}")
    captions = []
    for start in range(0, grids.shape[0], batch_size):
        captions += image_to_text(model, vocab, grids[start : start + batch_size])
    right = sum(read_digit(c) == int(d) for c, d in zip(captions, labels.tolist(), strict=True))
    known = sum(is_known_wording(c) for c in captions)
    n = len(captions)
    return {"accuracy": right / n, "known_wording": known / n, "n": n, "captions": captions}
