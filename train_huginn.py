"""A recurrent-depth character LM (Huginn: prelude → weight-tied core × K → coda) trained two ways:
--method bptt, Huginn's random K with truncated back-propagation through time; or --method
diffusionblocks, which reads the K iterations as Euler steps of the reverse diffusion and trains the
core as ONE σ-conditioned denoiser (B = 1), one core pass per step (DiffusionBlocks v4,
recurrent-depth experiment). Huginn: https://arxiv.org/abs/2502.05171.

  python train_huginn.py                         # both methods, bundled pydoc text, CPU preset
  python train_huginn.py --db-steps-mult 3       # DiffusionBlocks on the paper's 3× longer schedule
  python train_huginn.py --preset paper          # text8, width 512, 2+4+2 layers, K 32, one GPU

Metrics: next-character accuracy, cross-entropy and draw accuracy against test-time K, gen_ppl of
held-out continuations (lm_eval), layer evaluations per training step, training time and memory.
The settings, and the read-out among every --grid × --readout, were chosen on validation text by
study_huginn.py.
"""

import dataclasses
import math
import os
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention.bias import causal_upper_left

import common
import diffusionblocks as db
import report
from lm_eval import continue_held_out, reference_accuracy, text_corpus, write_samples

METHODS = ["bptt", "diffusionblocks"]
K_SPREAD = 0.5  # Huginn's σ of ln λ in the iteration sampler


option = common.option


@dataclasses.dataclass
class Config(common.DiscreteConfig):
    # DiffusionBlocks (§4.4): the core is one σ-conditioned denoiser; the rest chosen on validation
    # text (results/README.md). Its read-out is the last of K calls on the boundaries grid, not the
    # summed log-softmax of ViT and the AR LM: the four read-outs agreed within 0.1 point here
    blocks: int = option(1, "B = 1: the core is one σ-conditioned denoiser, no partition (fixed)")
    mislabel: float = option(0.9, "rate of wrong-character hints in DiffusionBlocks training")
    grid: str = option("boundaries", "read-out σ grid of its K calls: K equal-CDF steps from "
                       "σ_max, or the authors' K − 1 steps and a last call at σ_min",
                       ["boundaries", "final"])
    readout: str = option("last", "logits read out: the last call's, or every call's "
                          "log-softmax summed", ["last", "sum"])
    db_steps_mult: int = option(1, "DiffusionBlocks iterations per baseline iteration: 1 = equal "
                                "data passes, 3 = the paper's 3× longer schedule")
    # the recurrent-depth model (Huginn §3), its training and evaluation
    dataset: str = option("pydoc", "pydoc (CPython's bundled docs, offline), shakespeare, text8, "
                          "or txt:PATH")
    width: int = option(64, "model width (CPU-sized; paper: 512)")
    heads: int = option(4, "attention heads (CPU-sized; paper: 8)")
    prelude: int = option(2, "prelude layers (the paper's 2)")
    core: int = option(4, "core layers, shared across iterations (the paper's 4)")
    coda: int = option(2, "coda layers (the paper's 2)")
    seq_len: int = option(64, "characters per training sequence (CPU-sized; paper: 256)")
    mean_iters: int = option(32, "mean K of the baseline's iteration sampler (the paper's 32; at "
                             "16 the measured time ratio falls under 5× on a CPU)")
    bptt: int = option(4, "baseline: iterations that get gradients, the last ones (paper: 8)")
    infer_iters: int = option(0, "test-time iterations K of both methods; 0 = --mean-iters")
    steps: int = option(1200, "baseline iterations N (CPU-sized; chosen on validation text); "
                        "DiffusionBlocks runs N·--db-steps-mult")
    batch_size: int = option(32, "sequences per batch (CPU-sized)")
    lr: float = option(5e-3, "peak AdamW learning rate (CPU-sized; chosen on validation text)")
    min_lr: float = option(1e-4, "learning rate at the end of the cosine decay")
    weight_decay: float = option(0.03, "AdamW weight decay (as train_lm.py)")
    eval_every: int = option(200, "iterations between test evaluations (learning curves)")
    gen_samples: int = option(24, "held-out prompts continued and scored by the judge for gen_ppl")
    gen_tokens: int = option(24, "characters generated per prompt of seq_len − gen_tokens")
    temperature: float = option(0.0, "sampling temperature of generation; 0 = greedy")
    judge_order: int = option(6, "order n of the character n-gram judge of gen_ppl")
    eval_sequences: int = option(0, "test sequences per evaluation, evenly spaced; 0 = all")
    validation: bool = option(False, "evaluate on the validation split (5 per cent of the text "
                              "before the test split), to choose settings; metrics are val_*")


TEXT8_TRAIN_CHARS = 90_000_000
PRESETS = {
    "smoke": dict(width=32, heads=2, seq_len=32, mean_iters=4, bptt=2, steps=12, batch_size=8,
                  eval_every=6, ckpt_every=6, gen_samples=4, gen_tokens=8, eval_sequences=8),
    "cpu": {},
    # 5 epochs of text8's training split, DiffusionBlocks 15 as in the paper; batch, learning rate,
    # evaluation subset: not in the paper
    "paper": dict(dataset="text8", width=512, heads=8, seq_len=256, mean_iters=32, bptt=8,
                  batch_size=256, steps=round(5 * TEXT8_TRAIN_CHARS / (256 * 256)),
                  db_steps_mult=3, lr=3e-4, min_lr=3e-5, eval_every=1000, ckpt_every=1000,
                  gen_tokens=128, eval_sequences=2048),
}


# The recurrent-depth model (Huginn §3) and its two readings ---------------------------------------


class RecurrentDepthLM(nn.Module):
    """Prelude P → core R (weight-tied, applied K times) → coda C, causal, on AdaLN-Zero layers
    (Huginn §3).

    e = P(x) (N, n, D); s_k = norm(R(adapter([s_{k−1} ; e]), c)) (N, n, D); logits = C(s_K) (N, n,
    V). The LayerNorm after the core is Huginn's sandwich norm: it keeps the state's scale fixed
    across iterations. Baseline (`target_dim` None): c is a learned vector, s_0 is noise, K core
    passes (`recurrent_logits`); it trains with K drawn around `mean_iters`, back-propagating
    through the last `bptt` passes (`train_step`). DiffusionBlocks block (`target_dim` E): called as
    F(c_in·z, c_noise, x) with z (N, n, E) the noisy embeddings of the next tokens x_{2..n+1}: s_0 =
    z_in(c_in·z), ONE core pass with c the embedding of each token's σ. The core is causal and
    position i's state is the noisy x_{i+1}, so position i sees noisy tokens ≤ i+1 only: no future
    leak, and no sequence concatenation (train_lm.py's AR trick) is needed. `layer_evals` counts the
    transformer-layer calls (prelude, core and coda), under no_grad too.
    """

    def __init__(self, vocab, width, heads, seq_len, prelude=2, core=4, coda=2, target_dim=None,
                 mean_iters=32, bptt=None):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        nn.init.normal_(self.tok.weight, std=0.02)  # the positions' scale (GPT-2; 1 drowns them)
        self.pos = nn.Parameter(0.02 * torch.randn(seq_len, width))  # learned (as CausalLM's)
        self.cond = nn.Parameter(torch.zeros(width))  # condition of prelude, coda, baseline's core
        self.prelude = nn.ModuleList(db.AdaLNZeroLayer(width, heads) for _ in range(prelude))
        self.adapter = nn.Linear(2 * width, width)  # [state ; e] → width, as Huginn
        self.core = nn.ModuleList(db.AdaLNZeroLayer(width, heads) for _ in range(core))
        self.state_norm = nn.LayerNorm(width)
        self.input_norm = nn.LayerNorm(width)  # e at the state's scale (else noise ≫ input)
        self.coda = nn.ModuleList(db.AdaLNZeroLayer(width, heads) for _ in range(coda))
        self.final = db.FinalLayer(width, vocab)
        if target_dim:
            self.z_in = nn.Linear(target_dim, width)
            self.embed_sigma = db.SigmaEmbedder(width)
        self.state_std = math.sqrt(2 / (5 * width))  # Huginn's init std, also of s_0
        self.mean_iters, self.bptt = mean_iters, bptt  # the baseline's training K (mean), window
        self.layer_evals = 0

    def compile(self, *args, **kwargs):
        """torch.compile each layer, not the whole pass: K changes from step to step, and a
        compiled pass would be compiled again for every K."""
        for layer in (*self.prelude, *self.core, *self.coda):
            layer.compile(*args, **kwargs)

    def run(self, layers, h, c):
        """Causal AdaLN-Zero layers on h (N, n, D) (torch's causal bias: the flash path), counting
        each call."""
        mask = causal_upper_left(h.shape[1], h.shape[1])
        for layer in layers:
            h = layer(h, c, mask)
            self.layer_evals += 1
        return h

    def encode(self, x):
        """The prelude: e = norm(P(x)) for context ids x (N, n) → (N, n, D), unit scale like the
        state."""
        h = self.tok(x) + self.pos[: x.shape[1]]
        return self.input_norm(self.run(self.prelude, h, self.cond.expand(len(x), -1)))

    def iterate(self, s, e, c):
        """One core pass: s ← norm(R(adapter([s ; e]), c)), (N, n, D) → (N, n, D)."""
        return self.state_norm(self.run(self.core, self.adapter(torch.cat([s, e], -1)), c))

    def decode(self, s):
        """The coda: logits (N, n, V) of the state s (N, n, D)."""
        c = self.cond.expand(len(s), -1)
        return self.final(self.run(self.coda, s, c), c)

    def recurrent_logits(self, x, iters, bptt=None, generator=None):
        """Huginn's forward: logits (N, n, V) after `iters` core passes from s_0 ~ N(0, σ²)
        truncated at ±3σ; gradients flow through the last `bptt` passes only (all when None), and
        into e from those."""
        e = self.encode(x)
        c = self.cond.expand(len(x), -1)
        s = torch.nn.init.trunc_normal_(torch.empty_like(e), 0.0, self.state_std,
                                        -3 * self.state_std, 3 * self.state_std,
                                        generator=generator)
        grad_iters = iters if bptt is None else min(bptt, iters)
        with torch.no_grad():
            for _ in range(iters - grad_iters):
                s = self.iterate(s, e, c)
        for _ in range(grad_iters):
            s = self.iterate(s, e, c)
        return self.decode(s)

    def forward(self, z_in, c_noise, x):
        """F(c_in·z, c_noise, x) of DiffusionBlocks: z_in (N, n, E), c_noise (N, n) per token, x the
        context ids (N, n) or their prelude output e (N, n, D), reused across Euler steps → logits
        (N, n, V)."""
        e = x if x.is_floating_point() else self.encode(x)
        c = self.embed_sigma(c_noise)  # (N, n, D), one σ per token
        return self.decode(self.iterate(self.z_in(z_in), e, c))


def build_model(cfg, method, vocab):
    """The baseline RecurrentDepthLM, or a one-block db.DiffusionBlocks whose block is the
    σ-conditioned one (target space: the fixed, seeded embedding of the characters,
    width-dimensional)."""
    sizes = (vocab, cfg.width, cfg.heads, cfg.seq_len, cfg.prelude, cfg.core, cfg.coda)
    if method == "bptt":
        return RecurrentDepthLM(*sizes, mean_iters=cfg.mean_iters, bptt=cfg.bptt)
    return db.DiffusionBlocks([RecurrentDepthLM(*sizes, target_dim=cfg.width)],
                              embedding=db.target_embedding(vocab, cfg.width, seed=cfg.seed),
                              weighting=cfg.weighting, mislabel=cfg.mislabel)


def network(model):
    """The RecurrentDepthLM inside a model of either method."""
    return model.blocks[0] if isinstance(model, db.DiffusionBlocks) else model


def huginn_iters(mean_iters, generator=None):
    """K = Poisson(λ) + 1, ln λ ~ N(ln(mean − 1) − ½·0.5², 0.5²): Huginn's log-normal Poisson
    shifted by one, so that E[K] = mean_iters (Huginn's code gives E[K] = r̄ + 1)."""
    log_normal = math.exp(K_SPREAD * float(torch.randn((), generator=generator)) - K_SPREAD**2 / 2)
    rate = (mean_iters - 1) * log_normal
    return int(torch.poisson(torch.tensor(rate, dtype=torch.float64), generator=generator)) + 1


@torch.no_grad()
def next_token_logits(model, x, iters, generator=None, start="mean", grid="boundaries",
                      readout="last"):
    """Logits (N, n, V) for contexts x (N, n) with K = iters test-time iterations: K core passes
    (baseline: 2 + 4K + 2 layer evaluations), or the `readout` of K calls on the `grid` of
    db.prediction_sigmas (DiffusionBlocks §4; every position shares the step's σ, the prelude runs
    once, the coda at every call: 2 + 6K) from z_0 = 0 (a prediction) or σ_max·ε (a draw); readout
    "all": every call's logits, (K, N, n, V)."""
    if not isinstance(model, db.DiffusionBlocks):
        return model.recurrent_logits(x, iters, generator=generator)
    e = model.blocks[0].encode(x)
    grid = grid if iters >= 2 else "boundaries"  # "final" needs ≥ 2 calls
    sigmas = db.prediction_sigmas(model.sigmas, iters, grid)
    return model.predict(e, (*x.shape, model.embedding.shape[1]), sigmas, start, readout, generator,
                         x.device)


# Data and evaluation ------------------------------------------------------------------------------


def check_config(cfg):
    """One-line errors (exit 2) for this script's flags, run by parse_config (before --out is
    created)."""
    if cfg.block >= 0 or cfg.assemble:
        common.fail("--block / --assemble: train_huginn.py trains one block (B = 1), there is "
                    "nothing to train apart")
    if cfg.blocks != 1:
        common.fail(f"--blocks must be 1 here (the core is one σ-conditioned denoiser, no "
                    f"partition), got {cfg.blocks}")
    if not 1 <= cfg.gen_tokens < cfg.seq_len:
        common.fail(f"--gen-tokens must be in 1..{cfg.seq_len - 1} (the prompt is seq_len − "
                    f"gen_tokens), got {cfg.gen_tokens}")


def test_iters(cfg):
    """Test-time K of both methods: --infer-iters, by default the baseline's mean (Huginn's
    default)."""
    return cfg.infer_iters or cfg.mean_iters


def load_corpus(cfg, device):
    """--dataset cut into windows of seq_len + 1 characters (n contexts, each followed by its
    target), and its judge."""
    corpus = text_corpus(cfg, cfg.seq_len + 1, device)
    print(f"{cfg.dataset}: {len(corpus.data['train']):,} / {len(corpus.data['test']):,} train / "
          f"{corpus.split} characters, V = {len(corpus.chars)}; {len(corpus.test_eval)} "
          f"{corpus.split} sequences of {cfg.seq_len + 1} per evaluation; test-time K = "
          f"{test_iters(cfg)}; gen_ppl judge: Witten–Bell {cfg.judge_order}-gram")
    return corpus


@torch.no_grad()
def evaluate(model, cfg, corpus, iters):
    """At K = iters, like with like (as train_lm.py --model ar): predictions, the argmax accuracy
    and cross-entropy of the baseline's logits and of DiffusionBlocks' chain from z_0 = 0; draws,
    `{split}_sample_acc`, the expected accuracy of a temperature-1 draw (baseline: mean probability
    of the truth; DiffusionBlocks: the argmax accuracy of its chain from noise, which lands on a
    draw). {split}: test, or val under --validation."""
    gen, ce, correct, sampled = torch.Generator(corpus.device).manual_seed(cfg.seed), 0.0, 0, 0.0
    with common.autocast(corpus.device):
        for x in corpus.test_eval.split(cfg.batch_size):
            x, y = x[:, :-1].to(corpus.device), x[:, 1:].to(corpus.device)  # contexts, targets
            logits = next_token_logits(model, x, iters, gen, "mean", cfg.grid, cfg.readout).float()
            ce += float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum"))
            correct += int((logits.argmax(-1) == y).sum())
            if isinstance(model, db.DiffusionBlocks):
                draws = next_token_logits(model, x, iters, gen, "noise", cfg.grid, cfg.readout)
                sampled += float((draws.argmax(-1) == y).sum())
            else:
                sampled += float(logits.softmax(-1).gather(-1, y[..., None]).sum())
    count, split = len(corpus.test_eval) * cfg.seq_len, corpus.split
    return {f"{split}_next_token_acc": correct / count, f"{split}_ce": ce / count,
            f"{split}_sample_acc": sampled / count}


def prediction_layers(cfg, method, iters):
    """Layer evaluations of one prediction at K = iters: prelude + K·core + coda (baseline), or
    prelude + K·(core + coda) for DiffusionBlocks' K calls (the coda reads every call out)."""
    if method == "bptt":
        return cfg.prelude + iters * cfg.core + cfg.coda
    return cfg.prelude + iters * (cfg.core + cfg.coda)


def last_logits(model, cfg, iters, generator, start, x):
    """Logits (N, V) of the character after contexts x (N, n), for lm_eval's generation."""
    return next_token_logits(model, x, iters, generator, start, cfg.grid, cfg.readout)[:, -1]


def final_evaluation(model, cfg, corpus, run_dir):
    """Quality against K (powers of two up to twice the mean, the mean and the test K); gen_ppl of
    greedy (DiffusionBlocks: chain from z_0 = 0) and gen_ppl_t1 of temperature-1 (DiffusionBlocks:
    chain from noise) continuations of held-out prompts (train_lm.py's AR protocol; both
    frontiers: study_samples.py)."""
    K, chain = test_iters(cfg), isinstance(model, db.DiffusionBlocks)
    method = "diffusionblocks" if chain else "bptt"
    powers = {2**i for i in range(int(math.log2(2 * cfg.mean_iters)) + 1)}
    Ks = sorted(powers | {cfg.mean_iters, 2 * cfg.mean_iters, K})
    quality = [{"iters": k, **evaluate(model, cfg, corpus, k),  # and one prediction's layers
                "layer_evals_per_forward": prediction_layers(cfg, method, k)} for k in Ks]
    gen = torch.Generator(corpus.device).manual_seed(cfg.seed)
    # DiffusionBlocks' draws come from the chain's start, not a temperature
    predict = partial(last_logits, model, cfg, K, gen, "mean")
    decoders = {"": (predict, 0.0 if chain else cfg.temperature),
                "_t1": (partial(last_logits, model, cfg, K, gen, "noise"), 0.0 if chain else 1.0)}
    texts, gen_ppl, distinct, judge_ppl = continue_held_out(
        list(decoders.values()), corpus.test, cfg, corpus.judge, corpus.chars, gen, corpus.device)
    write_samples(texts[0], run_dir)
    return {**{f"gen_ppl{name}": ppl for name, ppl in zip(decoders, gen_ppl)},
            **{f"distinct_4{name}": dist for name, dist in zip(decoders, distinct)},
            "judge_ppl_held_out": judge_ppl, "samples": texts[0][:3], "quality_vs_iters": quality,
            **reference_accuracy(corpus.data, corpus.test_eval, corpus.split)}


def extras(cfg, method, layer_evals, iters):
    """What metrics.json records beyond the common fields and final_evaluation: the training compute
    in layer evaluations, the test K, the method's settings."""
    extra = {"train_layer_evals_per_step": layer_evals / iters, "train_layer_evals": layer_evals,
             "test_iters": test_iters(cfg), "layers": [cfg.prelude, cfg.core, cfg.coda]}
    if method == "bptt":
        extra.update(mean_iters=cfg.mean_iters, bptt=cfg.bptt)
    else:
        extra.update(blocks=1, db_steps_mult=cfg.db_steps_mult, weighting=cfg.weighting,
                     mislabel=cfg.mislabel, readout=f"{cfg.grid}/{cfg.readout}")
    return extra


# Training: one step, the loop, main ---------------------------------------------------------------


class Tally(dict):
    """Layer evaluations summed over the training steps ("total"), checkpointed with the run."""

    state_dict, load_state_dict = dict.copy, dict.update


def train_step(model, optimizers, batch, block, generator=None):
    """One iteration on windows (N, n+1) → the loss, detached, and the gradient norm (block: 0, the
    one block).

    Baseline: batch (x, K), or x at K = model.mean_iters; cross-entropy after K core passes from a
    noise state drawn from `generator`, back-propagated through the last model.bptt (truncated BPTT,
    Huginn §3). DiffusionBlocks: batch x; one core pass at a random σ per token,
    db.DiffusionBlocks.loss (Eq. 6) of block 0 with --weighting and --mislabel (with B = 1 the slice
    is all of [σ_min, σ_max]), noise from `generator`.
    """
    x, iters = batch if isinstance(batch, tuple) else (batch, None)
    with common.autocast(x.device):
        if isinstance(model, db.DiffusionBlocks):
            loss = model.loss(x[:, :-1], x[:, 1:], block, generator)
        else:
            logits = model.recurrent_logits(x[:, :-1], iters or model.mean_iters, model.bptt,
                                            generator)
            # logits (N, n, V)
            loss = F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
    optimizers[block].zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # before clipping
    optimizers[block].step()
    return loss.detach(), grad_norm


def train(cfg, corpus, method, model, run_dir):
    """Train `model` by `method` → (stats, memory, layer evaluations of all its training steps). B =
    1: no block is drawn (db.pick_block would take a draw from the batch generator and shift the
    batches and Ks)."""
    optimizers = [common.adamw(model, cfg)]
    # the batches, and the baseline's K of each iteration
    gen = torch.Generator().manual_seed(cfg.seed)
    # the baseline's s_0; DiffusionBlocks' σ, ε
    noise = torch.Generator(corpus.device).manual_seed(cfg.seed)
    iters = cfg.steps * (cfg.db_steps_mult if method == "diffusionblocks" else 1)
    x0 = corpus.train[: cfg.batch_size].to(corpus.device)

    def step0(m, o):  # one step at the seed's noise (the baseline at K = its mean)
        return train_step(m, o, x0, 0, torch.Generator(corpus.device).manual_seed(cfg.seed))

    memory = common.measure_memory(model, optimizers, step0, lambda m, o: (m.parameters(), o[0]))
    print(f"{method}: {common.count_params(model):,} parameters, {iters} iterations, "
          + (f"K ~ log-normal Poisson with mean {cfg.mean_iters}, gradients through the last "
             f"{cfg.bptt}" if method == "bptt" else "one core pass per step at a random σ per "
             f"token ({cfg.db_steps_mult}× the baseline's iterations)"))
    tally = Tally(total=0)
    state = {"model": model, "opt": optimizers[0], "gen": gen, "noise": noise, "tally": tally}
    layers_per_iter = cfg.prelude + cfg.core + cfg.coda  # every layer is updated at every step
    loop = common.Loop(cfg, run_dir, iters, state, method, layers_per_iter)
    for it in loop:
        x = corpus.batch(cfg.batch_size, gen)  # training windows (N, n+1)
        # Huginn §3: this iteration's K, drawn after the windows from the same generator
        if method == "bptt":
            batch = (x, huginn_iters(cfg.mean_iters, gen))
        else:  # DiffusionBlocks: the one block, trained at a σ per token drawn in train_step
            batch = x
        common.set_lr(optimizers[0], common.lr_at(cfg, it / iters))
        before = network(model).layer_evals
        loop.record(*train_step(model, optimizers, batch, 0, noise))
        # bptt: 2 + 4K + 2; DiffusionBlocks: 2 + 4 + 2
        tally["total"] += network(model).layer_evals - before
        if loop.every(cfg.eval_every):
            loop.log(evaluate(model, cfg, corpus, test_iters(cfg)))
        if loop.every(cfg.ckpt_every):
            loop.checkpoint()
    return loop.stats, memory, tally["total"]


def main(cfg):
    """Train and evaluate each --method → metrics.json's content; print and plot the comparison."""
    device = common.start(cfg)
    corpus = load_corpus(cfg, device)
    for method in common.methods_to_run(cfg, METHODS):
        common.seed_everything(cfg.seed)
        model = build_model(cfg, method, len(corpus.chars)).to(device)
        run_dir = os.path.join(cfg.out, method)
        stats, memory, layer_evals = train(cfg, corpus, method, model, run_dir)
        final = final_evaluation(model, cfg, corpus, run_dir)
        extra = extras(cfg, method, layer_evals, stats["iter"])
        result = common.method_result(stats, memory, {**final, **extra})
        common.write_metrics(cfg, "train_huginn.py", method, result, device)
    metrics = common.read_metrics(cfg.out)
    headline = f"{corpus.split}_next_token_acc"
    report.print_table(metrics["methods"], headline, baseline="bptt")
    report.huginn(metrics["methods"], corpus.split)
    report.plot_comparison(metrics["methods"], headline, cfg.out, "train_seconds",
                           "training seconds")
    report.plot_quality_vs_iters(metrics["methods"], cfg.mean_iters, cfg.out, corpus.split)
    return metrics


if __name__ == "__main__":
    config = common.parse_config(Config, PRESETS, METHODS, check=check_config)
    headline = f"{'val' if config.validation else 'test'}_next_token_acc"
    common.run_seeds(main, config, headline, baseline="bptt")
