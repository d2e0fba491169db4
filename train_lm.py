"""Character-level language models trained block-wise with DiffusionBlocks, beside the same networks
trained end-to-end (DiffusionBlocks §4.3). --model mdm: a bidirectional masked-diffusion transformer
(MD4, α(t) = 1 − t), block b owning a slice of t (db.MaskedDiffusionBlocks); --model ar: a causal
transformer whose blocks denoise the next character's embedding over [noisy slots ; clean tokens]
(Block Diffusion's mask, block size 1: db.concat_mask, db.two_stream_layer). Metrics: test bits per
character (MDM's ELBO) or next-character accuracy and cross-entropy (AR), and gen_ppl of generated
text under a character n-gram.

Read: the two networks and build_model; evaluate and final_evaluation; train_step, train (the loop)
and main.

  python train_lm.py  # masked diffusion, both methods, pydoc text, CPU
  python train_lm.py --model ar                         # autoregressive, both methods
  python train_lm.py --model ar --method diffusionblocks --block 1 --out runs/ar   # block 1 alone
  python train_lm.py --model ar --method diffusionblocks --assemble --out runs/ar  # saved blocks
  python train_lm.py --model mdm --preset paper         # text8, one GPU (likewise --model ar)
"""

import argparse
import dataclasses
import math
import os
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

import common
import diffusionblocks as db
import report
from data import UNK, decode
from lm_eval import (continue_held_out, distinct_ngrams, reference_accuracy, reference_bpc,
                     text_corpus, write_samples)

METHODS = ["backprop", "diffusionblocks"]
MODELS = ["mdm", "ar"]


option = common.option


@dataclasses.dataclass
class Config(common.DiscreteConfig):
    model: str = option("mdm", "mdm: masked diffusion (bidirectional, MD4); ar: autoregressive "
                        "(causal)", MODELS)
    # DiffusionBlocks (§3; B, γ: the presets, the paper's per model), AR's chosen on validation
    # text (results/README.md)
    weighting: str = option("uniform", "AR: loss weight, 1 or EDM's λ(σ)", ["uniform", "edm"])
    mislabel: float = option(0.2, "AR: rate of wrong-character hints in training (presets: 0.8)")
    stream: str = option("single", "AR block: single, one causal stream whose position i also "
                         "carries the noisy hint of x_{i+1} (n tokens), or two, [noisy slots ; "
                         "clean tokens] under Block Diffusion's mask (the paper's, 2n tokens)",
                         ["single", "two"])
    grid: str = option("final", "AR read-out σ grid: the authors' Euler steps and a last call at "
                       "σ_min, or one call per block at its top", ["final", "boundaries"])
    readout: str = option("sum", "AR logits read out: every call's log-softmax summed, or the "
                          "last call's", ["sum", "last"])
    bridge: str = option("soft", "AR read-out chain's denoiser: soft, D = softmax(logits) @ E; "
                         "hard, D = E[argmax]", ["soft", "hard"])
    # the network, its training and evaluation
    dataset: str = option("pydoc", "pydoc (CPython's bundled docs, offline), shakespeare, text8, "
                          "or txt:PATH")
    layers: int = option(6, "L, transformer layers of the whole network (CPU-sized; paper: 12)")
    width: int = option(128, "model width (CPU-sized; paper: 768)")
    heads: int = option(4, "attention heads (CPU-sized; paper: 12)")
    seq_len: int = option(128, "characters per training sequence (CPU-sized; paper: 256)")
    steps: int = option(1500, "baseline iterations N (CPU-sized); each block gets N updates")
    batch_size: int = option(32, "sequences per batch (CPU-sized)")
    lr: float = option(1e-3, "peak AdamW learning rate (CPU-sized; paper: 3e-4)")
    min_lr: float = option(1e-4, "learning rate at the end of the cosine decay")
    weight_decay: float = option(0.03, "AdamW weight decay (paper, MDM: 0.03)")
    elbo_samples: int = option(8, "MDM: (t, mask) draws per test sequence of the ELBO estimate")
    sample_steps: int = option(48, "MDM: ancestral unmasking steps (a multiple of B gives each "
                               "block as many)")
    gen_samples: int = option(32, "sequences generated and scored by the judge for gen_ppl")
    gen_tokens: int = option(64, "AR: characters generated per held-out prompt of seq_len − "
                             "gen_tokens")
    temperature: float = option(0.0, "sampling temperature of AR generation; 0 = greedy (paper)")
    judge_order: int = option(6, "order n of the character n-gram judge of gen_ppl")
    eval_sequences: int = option(0, "test sequences per evaluation, evenly spaced; 0 = all")
    validation: bool = option(False, "evaluate on the validation split (5 per cent of the text "
                              "before the test split), to choose settings; metrics are val_*")


# per --model; a flag overrides any of these. The paper's AR runs on LM1B, whose word pieces this
# character-level script stands in for with text8; batch and steps: not in the paper, for one GPU
PRESETS = {
    "mdm": {
        "smoke": dict(layers=3, width=32, heads=2, seq_len=32, steps=12, batch_size=8, eval_every=6,
                      ckpt_every=6, elbo_samples=2, sample_steps=6, gen_samples=4,
                      eval_sequences=8),
        # lr, steps: backprop's validation bpc (results/README.md)
        "cpu": dict(blocks=3, gamma=0.05, seq_len=64, steps=2000, lr=6e-4),
        "paper": dict(dataset="text8", layers=12, width=768, heads=12, seq_len=256, blocks=3,
                      gamma=0.05, lr=3e-4, min_lr=3e-5, weight_decay=0.03,
                      warmup=2000 / 100_000, eval_every=5000, ckpt_every=5000, eval_sequences=0,
                      sample_steps=255, batch_size=256, steps=100_000),
    },
    "ar": {
        "smoke": dict(layers=4, width=32, heads=2, seq_len=32, steps=12, batch_size=8, eval_every=6,
                      ckpt_every=6, blocks=4, gamma=0.1, gen_samples=4, gen_tokens=8,
                      eval_sequences=8),
        # lr, steps: backprop's validation accuracy; mislabel (and stream): DiffusionBlocks'
        "cpu": dict(layers=8, width=64, blocks=4, gamma=0.1, seq_len=64, steps=800, lr=3e-3,
                    gen_tokens=32, mislabel=0.8),
        "paper": dict(dataset="text8", layers=12, width=768, heads=12, seq_len=256, blocks=4,
                      gamma=0.1, lr=3e-4, min_lr=3e-5, warmup=2500 / 100_000, gen_tokens=128,
                      eval_every=5000, mislabel=0.8, ckpt_every=5000, eval_sequences=0,
                      batch_size=256, steps=100_000),
    },
}


def parse_args(argv=None):
    """Every flag; --model picks its presets first (MDM: B=3, γ=0.05; AR: B=4, γ=0.1, the
    paper's)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model", choices=MODELS, default="mdm")
    model = pre.parse_known_args(argv)[0].model
    return common.parse_config(Config, PRESETS[model], METHODS, argv, check_config)


def check_config(cfg):
    """One-line errors (exit 2) for the LM flags, run by parse_config (before --out is created)."""
    if cfg.model == "mdm" and cfg.partition != "equiprob":
        common.fail("--partition picks σ slices of --model ar; --model mdm splits t into equal "
                    "drops of α")
    if (cfg.width // cfg.heads) % 2:
        common.fail(f"--width {cfg.width} / --heads {cfg.heads} = {cfg.width // cfg.heads}: "
                    f"--model {cfg.model} rotates channel pairs of each head (RoPE), so a head's "
                    "width must be even")
    if cfg.model == "ar" and not 1 <= cfg.gen_tokens < cfg.seq_len:
        common.fail(f"--gen-tokens must be in 1..{cfg.seq_len - 1} (the prompt is seq_len − "
                    f"gen_tokens), got {cfg.gen_tokens}")


# The networks: a masked-diffusion denoiser (MDM) and a causal transformer (AR) --------------------


class MaskedDenoiser(nn.Module):
    """Bidirectional transformer x_θ(z_t, t): tokens (id V = mask) + learned positions → L
    AdaLN-Zero layers with rotary attention (as MDLM's DiT: a masked position learns only through
    attention, and RoPE makes its neighbours easy to find) conditioned on DiT's timestep embedding
    of 1000·t → logits over the V characters (never the mask). A block of
    db.MaskedDiffusionBlocks."""

    def __init__(self, vocab, width, depth, heads, seq_len):
        super().__init__()
        self.tok = nn.Embedding(vocab + 1, width)
        nn.init.normal_(self.tok.weight, std=0.02)  # the scale of the positions (GPT-2)
        self.pos = nn.Parameter(0.02 * torch.randn(seq_len, width))
        self.embed_sigma = db.SigmaEmbedder(width)
        self.layers = nn.ModuleList(db.AdaLNZeroLayer(width, heads, rope=True)
                                    for _ in range(depth))
        self.final = db.FinalLayer(width, vocab)

    def forward(self, z, t):
        """z: (N, n) ids with masks, t: (N,) → logits (N, n, V); zero at init (AdaLN-Zero), i.e.
        uniform."""
        h = self.tok(z) + self.pos[: z.shape[1]]  # (N, n, D)
        c = self.embed_sigma(t)  # (N, D)
        for layer in self.layers:
            h = layer(h, c)
        return self.final(h, c)  # (N, n, V)


class CausalLM(nn.Module):
    """Pre-norm causal transformer: tokens → L AdaLN-Zero layers with rotary attention (Llama-style
    positions) → final layer → logits.

    Plain LM (`target_dim` None): the AdaLN condition is a learned vector; logits at i predict
    x_{i+1}. DiffusionBlocks block: called as F(c_in·z, c_noise, x) with x the clean context (N, n)
    and z the noisy embeddings of the next characters, each with its own σ:
      stream "single": z (N, n, E). One causal stream; position i's input is tok(x_i) + W_z(c_in·z),
        z the hint of x_{i+1}, and its condition the embedding of its own σ; logits (N, n, V) at i
        predict x_{i+1}. Position j > i reads x_{i+1} clean anyway, so the hints leak nothing.
      stream "two": z (N, m, E) for the targets at positions n−m+1..n. [noisy slots ; clean tokens]
        under db.concat_mask (Block Diffusion's layout, the paper's), the slots conditioned on their
        own σ, the clean tokens on a learned vector (db.two_stream_layer); logits (N, m, V).
    In one stream W_z starts at zero, so the hint starts silent.
    """

    def __init__(self, vocab, width, depth, heads, target_dim=None, stream="single"):
        super().__init__()
        self.stream = stream
        self.tok = nn.Embedding(vocab, width)
        nn.init.normal_(self.tok.weight, std=0.02)  # GPT-2's
        if target_dim:
            self.z_in = nn.Linear(target_dim, width)
            if stream == "single":  # the hint starts silent beside the token (two streams: the
                # slot is the hint alone, and a LayerNorm of zeros has a 1/√eps gradient)
                nn.init.zeros_(self.z_in.weight)
                nn.init.zeros_(self.z_in.bias)
            self.embed_sigma = db.SigmaEmbedder(width)
        # the condition of clean tokens (of all, plain LM)
        self.cond = nn.Parameter(torch.zeros(width))
        self.layers = nn.ModuleList(db.AdaLNZeroLayer(width, heads, rope=True)
                                    for _ in range(depth))
        self.final = db.FinalLayer(width, vocab)

    def forward(self, z_in, c_noise, x):
        N, n = x.shape
        h = self.tok(x)  # (N, n, D)
        mask = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()  # causal
        if z_in is None:  # plain LM
            c = self.cond.expand(N, -1)
        elif self.stream == "single":
            if z_in.shape[1] != n:
                raise ValueError(f"stream 'single' takes a hint per position: z {z_in.shape}, "
                                 f"x {x.shape}")
            h = h + self.z_in(z_in)  # (N, n, D): x_i and the noisy x_{i+1}
            c = self.embed_sigma(c_noise)  # (N, n, D): each position's own σ
        else:
            return self.two_streams(z_in, c_noise, h)
        for layer in self.layers:
            h = layer(h, c, mask)
        return self.final(h, c)  # (N, n, V)

    def two_streams(self, z_in, c_noise, h):
        """Logits (N, m, V) of the m noisy slots beside the clean tokens h (N, n, D)."""
        m, n = z_in.shape[1], h.shape[1]
        hz = self.z_in(z_in)  # (N, m, D): the noisy slots, at positions n−m+1..n (RoPE)
        cz = self.embed_sigma(c_noise)  # (N, m, D): each slot's own σ
        mask = db.concat_mask(n, m, h.device)  # (m+n, m+n)
        for i, layer in enumerate(self.layers):
            hz, h = db.two_stream_layer(layer, hz, cz, h, self.cond, mask,
                                        last=i == len(self.layers) - 1)
        return self.final(hz, cz)


def build_model(cfg, method, vocab):
    """Backprop: one network of cfg.layers (MDM: a one-block container over all t); DiffusionBlocks:
    cfg.blocks networks of the split, block b owning its t slice (MDM) or its σ slice (AR, §3)."""
    depths = db.split_layers(cfg.layers, 1 if method == "backprop" else cfg.blocks)
    if cfg.model == "mdm":  # backprop: one denoiser over all of t ∈ [0, 1]; id `vocab` is the mask
        return db.MaskedDiffusionBlocks([MaskedDenoiser(vocab, cfg.width, d, cfg.heads, cfg.seq_len)
                                         for d in depths], vocab, cfg.gamma)
    if method == "backprop":
        return CausalLM(vocab, cfg.width, cfg.layers, cfg.heads)
    blocks = [CausalLM(vocab, cfg.width, d, cfg.heads, cfg.width, cfg.stream) for d in depths]
    return db.DiffusionBlocks(blocks,
                              embedding=db.target_embedding(vocab, cfg.width, seed=cfg.seed),
                              gamma=cfg.gamma, partition=cfg.partition, weighting=cfg.weighting,
                              mislabel=cfg.mislabel)


# Data ---------------------------------------------------------------------------------------------


def load_corpus(cfg, device):
    """--dataset cut into windows of seq_len characters (AR: seq_len + 1, each context character and
    its target)."""
    corpus = text_corpus(cfg, cfg.seq_len + 1 if cfg.model == "ar" else cfg.seq_len, device)
    data, chars = corpus.data, corpus.chars
    print(f"{cfg.dataset}: {len(data['train']):,} / {len(data['val']):,} / {len(data['test']):,} "
          f"train / val / test characters, V = {len(chars)}"
          f"{' (with UNK)' if chars[-1] == UNK else ''}; {len(corpus.test_eval)} {corpus.split} "
          f"sequences of {corpus.test.shape[1]} per evaluation; gen_ppl judge: Witten–Bell "
          f"{cfg.judge_order}-gram of the training split")
    return corpus


def get_batch(cfg, corpus, generator):
    """cfg.batch_size training windows drawn uniformly with `generator`: (N, window) on the
    device."""
    return corpus.batch(cfg.batch_size, generator)


# Prediction and evaluation ------------------------------------------------------------------------


def ar_logits(model, cfg, context, m, generator, start="mean"):
    """Logits (N, m, V) of the last m next characters given context (N, n); DiffusionBlocks: the
    --readout of its B calls on the --grid (§4), from z_0 = 0 (a prediction) or σ_max·ε (a draw,
    noise from `generator`). In one stream every position runs its own chain (as in training, all
    hints noisy), whose last m are read."""
    if isinstance(model, db.DiffusionBlocks):
        sigmas = db.prediction_sigmas(model.sigmas, len(model.blocks), cfg.grid)
        k = context.shape[1] if cfg.stream == "single" else m  # the positions that carry a chain
        shape = (len(context), k, cfg.width)
        logits = model.predict(context, shape, sigmas, start, cfg.readout, generator,
                               context.device, cfg.bridge)
        return logits[:, -m:]
    return model(None, None, context)[:, -m:]


def next_char_logits(model, cfg, generator, start, context):
    """Logits (N, V) of the character after context (N, n): ar_logits of one position."""
    return ar_logits(model, cfg, context, 1, generator, start)[:, 0]


@torch.no_grad()
def mdm_elbo_bits(logits_fn, x, mask_id, num_blocks, samples, generator):
    """MD4's NELBO in bits per character of each sequence of x (N, n), summed over the N sequences
    and split by the block owning t: a (B,) tensor; divide by N for the estimate, sum it for the
    whole ELBO.

    The ELBO ∫₀¹ (1/t)·E[Σ_masked −log p(x_i | z_t, t)] dt, with t and the number m of masked tokens
    integrated jointly, is n·E[mean over the masked tokens of −log p], where m ~ U{1..n}, t = u_(m)
    the m-th smallest of n uniform masking times u_i (t ~ Beta(m, n−m+1)), masked = {i : u_i ≤ t}.
    Unbiased, and exact for a predictor whose loss is the same on every token (log V for the uniform
    one). `logits_fn(z, t)` → (N, n, V); m is stratified over the `samples` draws, all drawn from
    the CPU `generator`.
    """
    N, n = x.shape
    total = torch.zeros(num_blocks, dtype=torch.float64)
    for k in range(samples):
        # (N,) stratified in 1..n
        m = 1 + ((k + torch.rand(N, generator=generator)) / samples * n).long()
        u = torch.rand(N, n, generator=generator)  # (N, n) masking times
        t = u.sort(1).values.gather(1, m[:, None] - 1)  # (N, 1): the m-th smallest
        masked = (u <= t).to(x.device)  # exactly m per row
        logits = logits_fn(torch.where(masked, mask_id, x), t[:, 0].to(x.device))  # (N, n, V)
        ce = F.cross_entropy(logits.float().transpose(1, 2), x, reduction="none")  # (N, n)
        bits = (ce * masked).sum(1).cpu().double() / m / math.log(2)  # (N,)
        total.index_add_(0, db.mdm_block_of(t[:, 0], num_blocks), bits)
    return total / samples


def bpc_per_slice(model, cfg, corpus):
    """MDM test ELBO in bits per character (mdm_elbo_bits), split by the t slices of --blocks: (B,);
    the same draws for every model."""
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad(), common.autocast(corpus.device):
        total = sum(
            mdm_elbo_bits(model.logits, x.to(corpus.device), model.mask_id, cfg.blocks,
                          cfg.elbo_samples, gen)
            for x in corpus.test_eval.split(cfg.batch_size)
        )
    return total / len(corpus.test_eval)


def add_scores(sums, split, logits, y, draws=None):
    """Add to `sums` the summed cross-entropy and argmax hits of logits (N, n, V) against y (N, n),
    and the hits of a temperature-1 draw: the argmax of `draws` (N, n, V), or without draws the
    probability of the true character."""
    if draws is not None:
        sample_hits = draws.argmax(-1) == y
    else:
        sample_hits = logits.softmax(-1).gather(-1, y[..., None])
    ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
    hits = (logits.argmax(-1) == y).sum()
    for key, value in ((f"{split}_ce", ce), (f"{split}_next_token_acc", hits),
                       (f"{split}_sample_acc", sample_hits.sum())):
        sums[key] = sums.get(key, 0.0) + float(value)


@torch.no_grad()
def evaluate_ar(model, cfg, corpus):
    """AR metrics, like with like. Predictions: next-token accuracy (argmax) and cross-entropy of
    backprop's logits and of DiffusionBlocks' chain from z_0 = 0 (--grid, --readout; every read-out:
    study_lm.py). Draws: `_sample_acc`, the expected accuracy of a temperature-1 draw (backprop: the
    mean probability of the true character; DiffusionBlocks: the argmax accuracy of its chain from
    noise, which lands on a draw). Block 0 alone at σ_max: study_lm.py."""
    gen, sums, split = torch.Generator(corpus.device).manual_seed(cfg.seed), {}, corpus.split
    n, chain = cfg.seq_len, isinstance(model, db.DiffusionBlocks)
    with common.autocast(corpus.device):
        for x in corpus.test_eval.split(cfg.batch_size):
            x = x.to(corpus.device)
            context, y = x[:, :-1], x[:, 1:]  # (N, n), (N, n)
            draws = ar_logits(model, cfg, context, n, gen, "noise") if chain else None  # (N, n, V)
            add_scores(sums, split, ar_logits(model, cfg, context, n, gen).float(), y, draws)
    return {key: value / (len(corpus.test_eval) * n) for key, value in sums.items()}


def evaluate(model, cfg, corpus):
    """The learning-curve metrics: MDM's ELBO {split}_bpc (bits per character), or evaluate_ar's."""
    if cfg.model == "ar":
        return evaluate_ar(model, cfg, corpus)
    return {f"{corpus.split}_bpc": float(bpc_per_slice(model, cfg, corpus).sum())}


def final_evaluation(model, cfg, corpus, run_dir):
    """gen_ppl of generated text under the judge, samples to run_dir/samples.txt; MDM: bpc per t
    slice. AR: continuations of held-out prompts, like with like: backprop's argmax (--temperature)
    against the chain from z_0 = 0, and (_t1 keys) backprop's T = 1 draws against the chain from
    noise, a draw (study_samples.py: the paper's protocol and both frontiers); the argmax bigram
    and trigram reference accuracies."""
    gen, chars = torch.Generator(corpus.device).manual_seed(cfg.seed), corpus.chars
    if cfg.model == "ar":
        predict = partial(next_char_logits, model, cfg, gen, "mean")
        decoders = {"": (predict, cfg.temperature), "_t1": (predict, 1.0)}
        if isinstance(model, db.DiffusionBlocks):  # its chain decides: from z_0 = 0, from noise
            decoders = {"": (predict, 0.0),
                        "_t1": (partial(next_char_logits, model, cfg, gen, "noise"), 0.0)}
        texts, gen_ppl, distinct, judge_ppl = continue_held_out(
            list(decoders.values()), corpus.test, cfg, corpus.judge, chars, gen, corpus.device)
        result = {"judge_ppl_held_out": judge_ppl,
                  **reference_accuracy(corpus.data, corpus.test_eval, corpus.split)}
        for name, ppl, dist in zip(decoders, gen_ppl, distinct):
            result.update({f"gen_ppl{name}": ppl, f"distinct_4{name}": dist})
        texts = texts[0]
    else:
        with torch.no_grad(), common.autocast(corpus.device):
            samples = model.sample((cfg.gen_samples, cfg.seq_len), cfg.sample_steps, gen,
                                   corpus.device)
            texts = [decode(s, chars) for s in samples]
            result = {"gen_ppl": corpus.judge.perplexity(samples),
                      "distinct_4": distinct_ngrams(samples.cpu()),
                      "judge_ppl_held_out": corpus.judge.perplexity(corpus.test),
                      f"{corpus.split}_bpc_per_block": bpc_per_slice(model, cfg, corpus).tolist()}
    write_samples(texts, run_dir)
    return {**result, **reference_bpc(corpus.data, corpus.judge), "samples": texts[:3]}


def extras(cfg, method, model, per_block):
    """What metrics.json records beyond the common fields: the blocks, DiffusionBlocks' settings."""
    blocks = len(common.blocks_of(model))
    extra = {"blocks": blocks, "layers_per_block": db.split_layers(cfg.layers, blocks),
             "train_memory_per_block": per_block}
    if method == "diffusionblocks":
        extra.update(gamma=cfg.gamma,
                     partition=cfg.partition if cfg.model == "ar" else "equal drops of α")
        if cfg.model == "ar":
            extra.update(weighting=cfg.weighting, mislabel=cfg.mislabel,
                         readout=f"{cfg.grid}/{cfg.readout}/{cfg.bridge}", stream=cfg.stream)
    return extra


# Training: one step, the loop, main ---------------------------------------------------------------


def train_step(model, optimizers, batch, b, generator=None):
    """One iteration that trains block b alone on windows batch (N, window) → the loss, detached,
    and the gradient norm.

    AR DiffusionBlocks (Fig. 3): the loss of block b on its σ slice (Eq. 6,
    `db.DiffusionBlocks.loss`) for the noisy embeddings of the next characters, given the context;
    AR backprop: next-character cross-entropy of the whole network (b = 0); MDM: block b's
    masked-diffusion ELBO on its t slice (`db.MaskedDiffusionBlocks.loss`; backprop: one block over
    all t). Noise drawn from `generator`. Only block b's parameters are in the graph and stepped.
    """
    x = batch  # (N, window)
    with common.autocast(x.device):
        # AR: the context x[:, :-1] predicts its next characters
        if isinstance(model, db.DiffusionBlocks):
            loss = model.loss(x[:, :-1], x[:, 1:], block=b, generator=generator)
        elif isinstance(model, CausalLM):
            loss = F.cross_entropy(model(None, None, x[:, :-1]).float().flatten(0, 1),
                                   x[:, 1:].flatten())
        else:
            loss = model.loss(x, b, generator)
    block = common.blocks_of(model)[b]
    optimizers[b].zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(block.parameters(), 1.0)  # before clipping
    optimizers[b].step()
    return loss.detach(), grad_norm


def train(cfg, corpus, method, model, run_dir):
    """Train `model` by `method` with cfg.steps updates per block (compute matching) → (stats,
    memory of the largest block, memory per block); None after --block b, which saves block b alone
    for --assemble."""
    # DiffusionBlocks' B blocks, or backprop's one network (MDM: one block)
    blocks = common.blocks_of(model)
    optimizers = [common.adamw(block, cfg) for block in blocks]
    gen = torch.Generator().manual_seed(cfg.seed)  # the batches and the block drawn each iteration
    # MDM: t and masks; AR: σ, ε, wrong hints
    noise = torch.Generator(corpus.device).manual_seed(cfg.seed)
    trained = range(len(blocks)) if cfg.block < 0 else [cfg.block]
    iters = cfg.steps * len(trained)  # compute matching: every trained block gets cfg.steps updates
    batch0 = get_batch(cfg, corpus, torch.Generator().manual_seed(cfg.seed))
    memory, per_block = common.measure_blocks(
        model, optimizers, lambda m, o, b: train_step(m, o, batch0, b), trained)
    print(f"{method}: {[common.count_params(b) for b in blocks]} parameters in {len(blocks)} "
          f"block(s), {iters} iterations of one block (= {cfg.steps} per block, compute-matched)")
    state = {"model": model, "opts": common.Many(optimizers), "gen": gen, "noise": noise}
    layers_per_iter = cfg.layers / len(blocks)  # layers one iteration trains (backprop: all L)
    loop = common.Loop(cfg, run_dir, iters, state, method, layers_per_iter)
    for it in loop:
        batch = get_batch(cfg, corpus, gen)
        # Fig. 3 (backprop: B = 1)
        b = db.pick_block(len(blocks), gen) if cfg.block < 0 else cfg.block
        common.set_lr(optimizers[b], common.lr_at(cfg, it / iters))
        loop.record(*train_step(model, optimizers, batch, b, noise))
        if loop.every(cfg.eval_every):
            loop.log(evaluate(model, cfg, corpus) if cfg.block < 0 else {})
        if loop.every(cfg.ckpt_every):
            loop.checkpoint()
    if cfg.block >= 0:  # this block alone, in its own process: evaluated later with --assemble
        common.save_block(cfg, model, memory, loop.stats, iters)
        return None
    return loop.stats, memory, per_block


def describe(cfg, model):
    """One line: DiffusionBlocks' blocks, layers, γ and slices (AR: of σ; MDM: of t)."""
    layers = db.split_layers(cfg.layers, cfg.blocks)
    if cfg.model == "ar":
        return common.describe_blocks(cfg, model, layers)
    return (f"diffusionblocks: B={cfg.blocks} blocks of {layers} layers, γ={cfg.gamma}, t slices "
            f"{[(round(lo, 4), round(hi, 4)) for lo, hi in model.slices]} (block 0 most masked)")


def main(cfg):
    """Train and evaluate each --method (or evaluate --assemble'd blocks) → metrics.json's
    content."""
    device = common.start(cfg)
    corpus = load_corpus(cfg, device)
    ar, split = cfg.model == "ar", corpus.split
    headline, curve = ((f"{split}_next_token_acc", f"{split}_ce") if ar
                       else (f"{split}_bpc", f"{split}_bpc"))
    if cfg.assemble:
        model = build_model(cfg, "diffusionblocks", len(corpus.chars)).to(device)
        run_dir = os.path.join(cfg.out, "assembled")
        metrics = common.assemble(cfg, "train_lm.py", headline, model, lambda m: {
            **evaluate(m, cfg, corpus), **final_evaluation(m, cfg, corpus, run_dir)}, device)
        report.lm(metrics["methods"], ar, split)
        return metrics
    for method in common.methods_to_run(cfg, METHODS):
        common.seed_everything(cfg.seed)
        model = build_model(cfg, method, len(corpus.chars)).to(device)
        if method == "diffusionblocks":
            print(describe(cfg, model))
        run_dir = os.path.join(cfg.out, method)
        trained = train(cfg, corpus, method, model, run_dir)
        if trained is None:  # --block: saved alone
            return None
        stats, memory, per_block = trained
        final = final_evaluation(model, cfg, corpus, run_dir)
        extra = extras(cfg, method, model, per_block)
        result = common.method_result(stats, memory, {**final, **extra})
        common.write_metrics(cfg, "train_lm.py", method, result, device)
    metrics = common.read_metrics(cfg.out)
    report.print_table(metrics["methods"], headline)
    report.lm(metrics["methods"], ar, split)
    report.plot_comparison(metrics["methods"], curve, cfg.out)
    if not ar:
        report.plot_bpc_per_block(metrics["methods"], cfg.out, split)
    return metrics


if __name__ == "__main__":
    config = parse_args()
    split = "val" if config.validation else "test"
    common.run_seeds(main, config,
                     f"{split}_next_token_acc" if config.model == "ar" else f"{split}_bpc")
