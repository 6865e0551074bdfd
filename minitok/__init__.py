"""minitok: how images become tokens, and tokens become images.

One module per concept, in the order the lessons build them. Read them top to bottom:

    course       seeds, devices and the switches the notebooks read (fast, strict)
    data         the bundled digits (scikit-learn), a learner's own image folder, shapes
    quantize     Lesson 01: nearest-code lookup, quantizing a feature map, k-means, usage
    vq           Lesson 02: the straight-through estimator, VQ losses, EMA, dead-code restarts
    fsq          Lesson 02: finite scalar quantization, a quantizer with no codebook
    tokenizer    Lesson 03: the VQ-VAE image tokenizer (digits -> 8 x 8 token grids)
    vqgan        Lesson 03: PatchGAN discriminator, hinge loss, adaptive weight
    classifier   Lesson 03: the digit classifier that judges reconstructions and samples
    transformer  Lesson 04: attention from scratch, causal masks, the KV cache, generate
    rope         Lesson 04: 2D rotary position embeddings for token grids
    sampling     Lesson 05: temperature, top-k, top-p, classifier-free guidance on logits
    prior        Lesson 05: the class-conditional autoregressive prior over digit tokens
    maskgit      Lesson 06: mask schedules, the masker, parallel decoding, AR vs MaskGIT
    vocab        Lesson 07: one vocabulary for text and image tokens, mixed sequences
    anytoany     Lesson 07: one transformer for text-to-image (with guidance) and captioning
    diffusion    Lesson 08: noise schedules, the noise-prediction loss, DDIM / DDPM sampling
                 with guidance, a small U-Net, and a diffusion decoder for token grids
    msvq         Lesson 09: VAR's multi-scale residual quantizer (token maps 1x1 .. 8x8) and
                 the multi-scale tokenizer
    var          Lesson 09: next-scale prediction: the block-causal mask, the VAR model, its
                 training loss and its sampler (one pass per scale, guidance ramped)

The course's tooling beside the lessons:

    checks       the learner checks each lesson calls after an exercise
    checkpoints  the small pretrained models shipped in minitok/checkpoints/
    earlier      your Lesson 04 Transformer, from your own notebook, with the shipped weights
                 (Lessons 05-07 and 09 draw with it)
    notebook_code  reads a notebook's code without running the notebook: what `earlier` and
                 the grader load (imports, def/class blocks, cheap assignments)
    evaluate     the referees: classifier accuracy, diversity, the Fréchet distance, the race
    training     the training loop every lesson (and `minitok train`) runs
    validate     argument checks at the public boundary, with errors naming the argument

The course's machinery, in minitok/tools/ (no lesson module or check imports it):

    cli          the `minitok` command (also `python -m minitok`)
    env          `minitok env`: is this setup able to run the course?
    assign       builds the exercise notebooks in lessons/ from solutions/
    workspace    `make lab`'s own copy of the lessons, never overwritten; `minitok progress`
    grade        `minitok grade`: scores submitted notebooks (tools/grading: the judge,
                 sandboxed workers, the wire between them)
    demo         `minitok demo`: the whole pipeline as one picture and one table
    trainer      `minitok train`: the models on your own image folder, on one CPU, one GPU or
                 many (torchrun, DistributedDataParallel), with exact resume
    bench        `python -m minitok.bench`: every benchmark in one run, one Markdown table
                 (minitok/bench.py only forwards that command to minitok/tools/bench/)
"""

__version__ = "0.1.0"
