"""Rebuild the shipped any-to-any model, minitok/checkpoints/anytoany.pt (Lesson 07).

    .venv/bin/python scripts/train_anytoany.py            # the shipped checkpoint
    .venv/bin/python scripts/train_anytoany.py --steps 200 --out /tmp/anytoany.pt   # a quick try

It encodes the training digits with the shipped tokenizer (minitok/checkpoints/tokenizer.pt),
trains one causal transformer on the mixed stream of both directions (caption -> image and
image -> caption, the loss on the answer only), never showing a held-out (wording, digit)
pair, then measures both goals on the held-out split and writes a weights-only checkpoint
whose meta pins the tokenizer's sha256. Training runs on one thread with deterministic
kernels, so the same seed gives the same weights on the same machine.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from minitok.anytoany import (
    TEMPLATES,
    CaptionedDigits,
    caption,
    encode_digits,
    file_digest,
    image_to_text_accuracy,
    model_config,
    text_to_image_accuracy,
    train,
)
from minitok.checkpoints import checkpoint_path, save_checkpoint
from minitok.classifier import load_classifier
from minitok.course import seed_everything
from minitok.tokenizer import load_tokenizer, reproducible
from minitok.transformer import Transformer
from minitok.vocab import Vocabulary

DEFAULTS = {"steps": 6000, "batch_size": 64, "lr": 3e-3, "seed": 0,
            "n_layer": 4, "n_head": 4, "n_embd": 96, "dropout": 0.1, "p_uncond": 0.1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in DEFAULTS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    parser.add_argument("--eval-per-caption", type=int, default=20,
                        help="images drawn per held-out caption when measuring text-to-image")
    parser.add_argument("--cfg-scale", type=float, default=2.0,
                        help="the guidance scale measured beside plain sampling (scale 1)")
    parser.add_argument("--out", default=str(checkpoint_path("anytoany")))
    args = parser.parse_args()

    tokenizer_path = checkpoint_path("tokenizer")
    tokenizer = load_tokenizer(tokenizer_path)
    vocab = Vocabulary(n_image_codes=tokenizer.num_codes, grid_size=tokenizer.grid_size)
    grids, labels = encode_digits(tokenizer, "train")  # (1437, 8, 8), (1437,)
    test_grids, test_labels = encode_digits(tokenizer, "test")  # (360, 8, 8), (360,)
    data = CaptionedDigits(grids, labels, vocab, p_uncond=args.p_uncond)
    # the context fits every caption, held-out ones included: caption <boi> 64 codes <eoi> <eot>
    longest = max(len(caption(t, d)) for t in range(len(TEMPLATES)) for d in range(10))
    block_size = longest + vocab.image_tokens + 3

    with reproducible():  # one thread, deterministic kernels
        torch.use_deterministic_algorithms(True)
        seed_everything(args.seed)  # initial weights and dropout come from the global RNG
        config = model_config(vocab, block_size, n_layer=args.n_layer, n_head=args.n_head,
                              n_embd=args.n_embd, dropout=args.dropout)
        model = Transformer(config)
        generator = torch.Generator().manual_seed(args.seed)  # the batches
        threads = torch.get_num_threads()
        start = time.perf_counter()
        losses = train(model, data, args.steps, batch_size=args.batch_size, lr=args.lr,
                       generator=generator, log_every=max(1, args.steps // 20))
        seconds = time.perf_counter() - start

        start = time.perf_counter()
        classifier = load_classifier()
        t2i = text_to_image_accuracy(model, vocab, tokenizer, classifier,
                                     per_caption=args.eval_per_caption,
                                     generator=torch.Generator().manual_seed(1))
        t2i_cfg = text_to_image_accuracy(model, vocab, tokenizer, classifier,
                                         per_caption=args.eval_per_caption,
                                         generator=torch.Generator().manual_seed(1),
                                         cfg_scale=args.cfg_scale)
        i2t = image_to_text_accuracy(model, vocab, test_grids, test_labels)
        eval_seconds = time.perf_counter() - start

    meta = {
        "script": "scripts/train_anytoany.py",
        "train": {k: getattr(args, k) for k in DEFAULTS},
        "params": model.num_parameters(),
        "final_train_loss": sum(losses[-50:]) / len(losses[-50:]),
        "held_out_text_to_image": t2i["accuracy"],
        "held_out_text_to_image_cfg": {"cfg_scale": args.cfg_scale,
                                       "accuracy": t2i_cfg["accuracy"]},
        "held_out_image_to_text": i2t["accuracy"],
        "train_seconds": round(seconds, 1),
        "threads": threads,
        "deterministic": True,
        "machine": f"{platform.machine()} CPU ({platform.processor() or 'unknown'}), "
                   f"{threads} thread",
        "torch": str(torch.__version__),
        "tokenizer_sha256": file_digest(tokenizer_path),
    }
    config_dict = {"vocab": {"n_image_codes": vocab.n_image_codes, "grid_size": vocab.grid_size,
                             "alphabet": vocab.alphabet},
                   "model": {k: getattr(config, k) for k in (
                       "vocab_size", "block_size", "n_layer", "n_head", "n_embd", "dropout",
                       "causal", "bias")}}
    path = save_checkpoint(args.out, "anytoany", config_dict, model, meta)
    print(f"trained {args.steps} steps ({meta['params']:,} parameters) in {seconds:.0f} s: "
          f"train loss {meta['final_train_loss']:.3f}")
    print(f"held out: text-to-image {t2i['accuracy']:.1%} of {t2i['n']} images match their "
          f"caption, per digit {t2i['per_digit']}")
    print(f"held out: text-to-image with guidance {args.cfg_scale:g}: {t2i_cfg['accuracy']:.1%} "
          f"of {t2i_cfg['n']} images match, per digit {t2i_cfg['per_digit']}")
    print(f"held out: image-to-text {i2t['accuracy']:.1%} of {i2t['n']} captions name the "
          f"right digit ({i2t['known_wording']:.1%} in a known wording); eval {eval_seconds:.0f} s")
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
