"""A recurrent-depth character LM (Huginn: prelude → weight-tied core × K → coda) trained two ways: with random K
and truncated back-propagation through time, as Huginn is, or with DiffusionBlocks, which reads the K iterations as
Euler steps of the reverse diffusion and trains the core as ONE σ-conditioned denoiser, one core pass per step
(DiffusionBlocks v4, recurrent-depth experiment: LM1B MAUVE 0.49 → 0.70 at about 10× less training compute).
Huginn: Geiping et al. 2025, "Scaling up Test-Time Compute with Latent Reasoning", https://arxiv.org/abs/2502.05171.

  python train_huginn.py                                # both methods, bundled pydoc text, CPU preset
  python train_huginn.py --db-steps-mult 3              # DiffusionBlocks on the paper's 3× longer schedule
  python train_huginn.py --preset paper                 # text8, width 512, 2+4+2 layers, mean K 32, BPTT 8, one GPU

Model (`RecurrentDepthLM`): tokens + learned positions → prelude (2 causal AdaLN-Zero layers) → e; the core maps
[state ; e] through a linear adapter and 4 layers, then a LayerNorm (Huginn's sandwich norm keeps the state's scale
fixed across iterations) → coda (2 layers) → logits. Attention is causal (torch's causal bias: the flash path).
--method bptt: K = Poisson(λ) + 1, ln λ ~ N(ln(mean − 1) − ½·0.5², 0.5²) (Huginn's sampler shifted by one so that
E[K] = --mean-iters; Huginn's code gives E[K] = r̄ + 1); s_0 ~ N(0, σ²) truncated at ±3σ, σ = √(2/(5·width)) (Huginn's
init); iterations before the last --bptt run without gradients. The AdaLN condition is a learned vector.
--method diffusionblocks (B = 1, no partition): position i's state is the noisy fixed embedding of x_{i+1} at its own
σ; ONE core pass conditioned on σ, loss db.DiffusionBlocks.loss with --weighting and --mislabel (as every discrete
target here; with B = 1 the slice is all of [σ_min, σ_max], and EDM's λ(σ), 4 at σ_max and 2.5·10⁵ at σ_min, would
starve the high-σ regime that must predict from the context).
Inference: K Euler steps of that core on db.prediction_sigmas (= db.sampling_sigmas(K) for B = 1), every position
sharing the step's σ, the prelude run once; K defaults to the baseline's mean. From z_0 = 0 the chain predicts
(compared with the baseline's argmax), from σ_max·ε it draws x_{i+1} (compared with the baseline's T = 1 draws).
The coda runs at every Euler step (the denoiser's output is logits), so inference costs 2 + 6K layer evaluations
against the baseline's 2 + 4K + 2; training is 8 per step against 4 + 4·E[K].

CPU preset: width 64, 4 heads, 64 characters × 16 sequences, mean K 32 (the paper's) with BPTT 4 (paper: 8), 600
iterations of each method (equal data passes). One thread, 2-core CPU: 0.43 s / 0.077 s per iteration (bptt /
diffusionblocks), about 6 minutes for both with evaluation; 20× fewer layer evaluations, about 5.5× less time.

Metrics: test_next_token_acc / test_ce / test_sample_acc at K = --infer-iters (and against K, quality_vs_iters.png);
gen_ppl (greedy) and gen_ppl_t1 (T = 1 draws), the perplexity of continuations of held-out prompts under
train_lm.py's n-gram judge; train_layer_evals_per_step, counted where the layers are called; seconds_per_iter, train_seconds, train_memory_bytes (measured).
--block / --assemble are refused: with one block there is nothing to train apart.
"""
import dataclasses
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention.bias import causal_upper_left

import common
import diffusionblocks as db
from data import load_windows
from lm_eval import CharNgram, continue_held_out, write_samples

METHODS = ["bptt", "diffusionblocks"]
K_SPREAD = 0.5  # Huginn's σ of ln λ in the iteration sampler


@dataclasses.dataclass
class Config(common.DiscreteConfig):
    dataset: str = common.option("pydoc", "pydoc (CPython's bundled docs, offline), shakespeare, text8, or txt:PATH")
    blocks: int = common.option(1, "B = 1: the core is one σ-conditioned denoiser, no partition (fixed)")
    width: int = common.option(64, "model width (CPU-sized; paper: 512)")
    heads: int = common.option(4, "attention heads (CPU-sized; paper: 8)")
    prelude: int = common.option(2, "prelude layers (the paper's 2)")
    core: int = common.option(4, "core layers, shared across iterations (the paper's 4)")
    coda: int = common.option(2, "coda layers (the paper's 2)")
    seq_len: int = common.option(64, "characters per training sequence (CPU-sized; paper: 256)")
    mean_iters: int = common.option(32, "mean K of the baseline's iteration sampler (the paper's 32; at 16 the "
                                        "measured time ratio falls under 5× on a CPU)")
    bptt: int = common.option(4, "baseline: iterations that get gradients, the last ones (CPU-sized; paper: 8)")
    infer_iters: int = common.option(0, "test-time iterations K of both methods; 0 = --mean-iters (Huginn's default)")
    steps: int = common.option(600, "baseline iterations N (CPU-sized); DiffusionBlocks runs N·--db-steps-mult")
    db_steps_mult: int = common.option(1, "DiffusionBlocks iterations per baseline iteration: 1 = equal data passes, "
                                          "3 = the paper's 3× longer schedule")
    batch_size: int = common.option(16, "sequences per batch (CPU-sized)")
    lr: float = common.option(1e-3, "peak AdamW learning rate (CPU-sized)")
    min_lr: float = common.option(1e-4, "learning rate at the end of the cosine decay")
    weight_decay: float = common.option(0.03, "AdamW weight decay (as train_lm.py)")
    eval_every: int = common.option(200, "iterations between test evaluations (learning curves)")
    gen_samples: int = common.option(24, "held-out prompts continued and scored by the judge for gen_ppl")
    gen_tokens: int = common.option(24, "characters generated per prompt of seq_len − gen_tokens")
    temperature: float = common.option(0.0, "sampling temperature of generation; 0 = greedy")
    judge_order: int = common.option(6, "order n of the character n-gram judge of gen_ppl")
    eval_sequences: int = common.option(64, "test sequences per evaluation; 0 = the whole test split")


TEXT8_TRAIN_CHARS = 90_000_000
PRESETS = {
    "smoke": dict(width=32, heads=2, seq_len=32, mean_iters=4, bptt=2, steps=12, batch_size=8, eval_every=6,
                  ckpt_every=6, gen_samples=4, gen_tokens=8, eval_sequences=8),
    "cpu": {},
    "paper": dict(dataset="text8", width=512, heads=8, seq_len=256, mean_iters=32, bptt=8, batch_size=256,
                  steps=round(5 * TEXT8_TRAIN_CHARS / (256 * 256)),  # 5 epochs of text8's training split
                  db_steps_mult=3,  # DiffusionBlocks: 15 epochs, as in the paper
                  lr=3e-4, min_lr=3e-5, eval_every=1000, ckpt_every=1000, gen_tokens=128,
                  eval_sequences=2048),  # batch, learning rate, evaluation subset: not in the paper
}


# ----------------------------------------------------------------------------------------------
# The recurrent-depth model (Huginn §3) and its two readings
# ----------------------------------------------------------------------------------------------

class RecurrentDepthLM(nn.Module):
    """Prelude P → core R (weight-tied, applied K times) → coda C, causal, on AdaLN-Zero layers (Huginn §3).

    e = P(x) (N, n, D); s_k = norm(R(adapter([s_{k−1} ; e]), c)) (N, n, D); logits = C(s_K) (N, n, V).
    Baseline (`target_dim` None): c is a learned vector, s_0 is noise, K core passes (`recurrent_logits`).
    DiffusionBlocks block (`target_dim` E): called as F(c_in·z, c_noise, x) with z (N, n, E) the noisy embeddings
    of the next tokens x_{2..n+1}: s_0 = z_in(c_in·z), ONE core pass with c the embedding of each token's σ. The
    core is causal and position i's state is the noisy x_{i+1}, so position i sees noisy tokens ≤ i+1 only: no
    future leak, and no sequence concatenation (train_lm.py's AR trick) is needed.
    `layer_evals` counts the transformer-layer calls (prelude, core and coda), under no_grad too.
    """

    def __init__(self, vocab, width, heads, seq_len, prelude=2, core=4, coda=2, target_dim=None):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(0.02 * torch.randn(seq_len, width))  # learned positions, as train_lm's CausalLM
        self.cond = nn.Parameter(torch.zeros(width))  # condition of the prelude, the coda and the baseline's core
        self.prelude = nn.ModuleList(db.AdaLNZeroLayer(width, heads) for _ in range(prelude))
        self.adapter = nn.Linear(2 * width, width)  # [state ; e] → width, as Huginn
        self.core = nn.ModuleList(db.AdaLNZeroLayer(width, heads) for _ in range(core))
        self.state_norm = nn.LayerNorm(width)
        self.coda = nn.ModuleList(db.AdaLNZeroLayer(width, heads) for _ in range(coda))
        self.final = db.FinalLayer(width, vocab)
        if target_dim:
            self.z_in = nn.Linear(target_dim, width)
            self.embed_sigma = db.SigmaEmbedder(width)
        self.state_std = math.sqrt(2 / (5 * width))  # Huginn's init std, also of s_0
        self.layer_evals = 0

    def run(self, layers, h, c):
        """Causal AdaLN-Zero layers on h (N, n, D), counting each call."""
        mask = causal_upper_left(h.shape[1], h.shape[1])
        for layer in layers:
            h = layer(h, c, mask)
            self.layer_evals += 1
        return h

    def encode(self, x):
        """The prelude: e = P(x) for context ids x (N, n) → (N, n, D)."""
        h = self.tok(x) + self.pos[:x.shape[1]]
        return self.run(self.prelude, h, self.cond.expand(len(x), -1))

    def iterate(self, s, e, c):
        """One core pass: s ← norm(R(adapter([s ; e]), c)), (N, n, D) → (N, n, D)."""
        return self.state_norm(self.run(self.core, self.adapter(torch.cat([s, e], -1)), c))

    def decode(self, s):
        """The coda: logits (N, n, V) of the state s (N, n, D)."""
        c = self.cond.expand(len(s), -1)
        return self.final(self.run(self.coda, s, c), c)

    def recurrent_logits(self, x, iters, bptt=None, generator=None):
        """Huginn's forward: logits (N, n, V) after `iters` core passes from s_0 ~ N(0, σ²) truncated at ±3σ;
        gradients flow through the last `bptt` passes only (all when None), and into e from those."""
        e = self.encode(x)
        c = self.cond.expand(len(x), -1)
        s = torch.nn.init.trunc_normal_(torch.empty_like(e), 0.0, self.state_std, -3 * self.state_std,
                                        3 * self.state_std, generator=generator)
        grad_iters = iters if bptt is None else min(bptt, iters)
        with torch.no_grad():
            for _ in range(iters - grad_iters):
                s = self.iterate(s, e, c)
        for _ in range(grad_iters):
            s = self.iterate(s, e, c)
        return self.decode(s)

    def forward(self, z_in, c_noise, x):
        """F(c_in·z, c_noise, x) of DiffusionBlocks: z_in (N, n, E), c_noise (N, n) per token, x the context ids
        (N, n) or their prelude output e (N, n, D), reused across Euler steps → logits (N, n, V)."""
        e = x if x.is_floating_point() else self.encode(x)
        c = self.embed_sigma(c_noise)  # (N, n, D), one σ per token
        return self.decode(self.iterate(self.z_in(z_in), e, c))


def build_model(method, vocab, width, heads, seq_len, prelude=2, core=4, coda=2, seed=0, weighting="uniform",
                mislabel=0.0):
    """The baseline RecurrentDepthLM, or a one-block db.DiffusionBlocks whose block is the σ-conditioned one
    (target space: the fixed, seeded embedding of the characters, width-dimensional)."""
    if method == "bptt":
        return RecurrentDepthLM(vocab, width, heads, seq_len, prelude, core, coda)
    net = RecurrentDepthLM(vocab, width, heads, seq_len, prelude, core, coda, target_dim=width)
    return db.DiffusionBlocks([net], embedding=db.target_embedding(vocab, width, seed=seed), weighting=weighting,
                              mislabel=mislabel)


def network(model):
    """The RecurrentDepthLM inside a model of either method."""
    return model.blocks[0] if isinstance(model, db.DiffusionBlocks) else model


def huginn_iters(mean_iters, generator=None):
    """K = Poisson(λ) + 1, ln λ ~ N(ln(mean − 1) − ½·0.5², 0.5²): Huginn's log-normal Poisson, E[K] = mean_iters."""
    rate = (mean_iters - 1) * math.exp(K_SPREAD * float(torch.randn((), generator=generator)) - K_SPREAD ** 2 / 2)
    return int(torch.poisson(torch.tensor(rate, dtype=torch.float64), generator=generator)) + 1


def bptt_step(model, optimizer, x, iters, bptt, generator=None):
    """One baseline iteration on windows x (N, n+1): cross-entropy after `iters` core passes, back-propagated
    through the last `bptt` (truncated BPTT, Huginn §3); the loss, detached."""
    with common.autocast(x.device):
        logits = model.recurrent_logits(x[:, :-1], iters, bptt, generator)
        loss = F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
    return common.optimize(loss, model, optimizer)


def diffusion_step(model, optimizer, x, generator=None):
    """One DiffusionBlocks iteration on windows x (N, n+1): one core pass at a random σ per token (db.DiffusionBlocks.loss
    with B = 1: its --weighting and --mislabel); the loss, detached."""
    with common.autocast(x.device):
        loss = model.loss(x[:, :-1], x[:, 1:], 0, generator)
    return common.optimize(loss, model, optimizer)


@torch.no_grad()
def next_token_logits(model, x, iters, generator=None, start="mean"):
    """Logits (N, n, V) for contexts x (N, n) with K = iters test-time iterations: K core passes (baseline), or the
    last call of K Euler steps (DiffusionBlocks §4) from z_0 = 0 (a prediction) or σ_max·ε (a draw), the prelude
    run once."""
    if not isinstance(model, db.DiffusionBlocks):
        return model.recurrent_logits(x, iters, generator=generator)
    e = model.blocks[0].encode(x)
    sigmas = db.prediction_sigmas(model.sigmas, iters)
    return model.predict(e, (*x.shape, model.embedding.shape[1]), sigmas, start, "last", generator, x.device)


# ----------------------------------------------------------------------------------------------
# Training and evaluation
# ----------------------------------------------------------------------------------------------

class Tally:
    """Layer evaluations summed over the training steps, checkpointed with the run (for --resume)."""

    def __init__(self):
        self.total = 0

    def state_dict(self):
        return {"total": self.total}

    def load_state_dict(self, state):
        self.total = state["total"]


def check_config(cfg):
    """One-line errors (exit 2) for this script's flags; parse_config has checked the common ones."""
    if cfg.block >= 0 or cfg.assemble:
        common.fail("--block / --assemble: train_huginn.py trains one block (B = 1), there is nothing to train apart")
    if cfg.blocks != 1:
        common.fail(f"--blocks must be 1 here (the core is one σ-conditioned denoiser, no partition), got {cfg.blocks}")
    if cfg.width % cfg.heads:
        common.fail(f"--width {cfg.width} must be divisible by --heads {cfg.heads}")
    if not 1 <= cfg.gen_tokens < cfg.seq_len:
        common.fail(f"--gen-tokens must be in 1..{cfg.seq_len - 1} (the prompt is seq_len − gen_tokens), "
                    f"got {cfg.gen_tokens}")


def main(cfg):
    device = common.pick_device(cfg.device)
    common.seed_everything(cfg.seed)
    check_config(cfg)
    K = cfg.infer_iters or cfg.mean_iters
    powers = {2 ** i for i in range(int(math.log2(2 * cfg.mean_iters)) + 1)}
    sweep = sorted(powers | {cfg.mean_iters, 2 * cfg.mean_iters, K})  # the K of quality_vs_iters
    window = cfg.seq_len + 1  # n context characters, each followed by its target
    data, train_windows, test, test_eval = load_windows(cfg, window)
    chars, V = data["chars"], len(data["chars"])
    judge = CharNgram(data["train"], V, cfg.judge_order)
    print(f"device {device}, dtype {'bf16 autocast' if device.type == 'cuda' else 'float32'}, {cfg.dataset}: "
          f"{len(data['train']):,} / {len(data['test']):,} train / test characters, V = {V}; {len(test_eval)} test "
          f"sequences of {window} per evaluation; test-time K = {K}; gen_ppl judge: Witten–Bell {judge.order}-gram")

    def evaluate(model, iters):
        """At K = iters, like with like (as train_lm.py --model ar): predictions, the argmax accuracy and cross-entropy
        of the baseline's logits and of DiffusionBlocks' chain from z_0 = 0; draws, `test_sample_acc`, the expected
        accuracy of a temperature-1 draw (baseline: mean probability of the truth; DiffusionBlocks: the argmax
        accuracy of its chain from noise, which lands on a draw)."""
        gen, ce, correct, sampled = torch.Generator(device).manual_seed(cfg.seed), 0.0, 0, 0.0
        with torch.no_grad(), common.autocast(device):
            for x in test_eval.split(cfg.batch_size):
                x, y = x.to(device), x[:, 1:].to(device)
                logits = next_token_logits(model, x[:, :-1], iters, gen).float()  # (N, n, V)
                ce += float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum"))
                correct += int((logits.argmax(-1) == y).sum())
                if isinstance(model, db.DiffusionBlocks):
                    sampled += float((next_token_logits(model, x[:, :-1], iters, gen, "noise").argmax(-1) == y).sum())
                else:
                    sampled += float(logits.softmax(-1).gather(-1, y[..., None]).sum())
        count = len(test_eval) * cfg.seq_len
        return {"test_next_token_acc": correct / count, "test_ce": ce / count, "test_sample_acc": sampled / count}

    def quality_at(model, iters):
        """evaluate() at K = iters, with the layer evaluations of one forward pass, counted."""
        net, before = network(model), network(model).layer_evals
        result = evaluate(model, iters)
        return {"iters": iters, **result,
                "layer_evals_per_forward": (net.layer_evals - before) / math.ceil(len(test_eval) / cfg.batch_size)}

    def final_evaluation(model, run_dir):
        """Quality against K; gen_ppl of greedy (DiffusionBlocks: chain from z_0 = 0) and gen_ppl_t1 of temperature-1
        (DiffusionBlocks: chain from noise) continuations of held-out prompts (train_lm.py's AR protocol)."""
        quality = [quality_at(model, k) for k in sweep]
        gen = torch.Generator(device).manual_seed(cfg.seed)

        def decoder(start, temperature):
            next_logits = lambda x: next_token_logits(model, x, K, gen, start)[:, -1]  # noqa: E731
            return next_logits, 0.0 if isinstance(model, db.DiffusionBlocks) else temperature

        (texts, _), (gen_ppl, gen_ppl_t1), judge_ppl = continue_held_out(
            [decoder("mean", cfg.temperature), decoder("noise", 1.0)], test, cfg, judge, chars, gen, device)
        write_samples(texts, run_dir)
        return {"gen_ppl": gen_ppl, "gen_ppl_t1": gen_ppl_t1, "judge_ppl_held_out": judge_ppl, "samples": texts[:3],
                "quality_vs_iters": quality}

    def train(method):
        common.seed_everything(cfg.seed)
        gen, noise_gen = torch.Generator().manual_seed(cfg.seed), torch.Generator(device).manual_seed(cfg.seed)
        model = build_model(method, V, cfg.width, cfg.heads, cfg.seq_len, cfg.prelude, cfg.core, cfg.coda,
                            cfg.seed, cfg.weighting, cfg.mislabel).to(device)
        net, opt, tally = network(model), common.adamw(model, cfg), Tally()
        iters = cfg.steps * (cfg.db_steps_mult if method == "diffusionblocks" else 1)

        def one_step(m, o, x, g, k):
            return bptt_step(m, o, x, k, cfg.bptt, g) if method == "bptt" else diffusion_step(m, o, x, g)

        def step(it, x):
            common.set_lr(opt, common.lr_at(cfg, it / iters))
            before = net.layer_evals
            loss = one_step(model, opt, x, noise_gen, huginn_iters(cfg.mean_iters, gen) if method == "bptt" else 0)
            tally.total += net.layer_evals - before
            return loss

        x0 = train_windows[:cfg.batch_size].to(device)
        memory = common.measure_memory(model, opt, lambda m, o: one_step(  # the baseline at K = its mean
            m, o, x0, torch.Generator(device).manual_seed(cfg.seed), cfg.mean_iters))
        print(f"{method}: {common.count_params(model):,} parameters, {iters} iterations, "
              + (f"K ~ log-normal Poisson with mean {cfg.mean_iters}, gradients through the last {cfg.bptt}"
                 if method == "bptt" else f"one core pass per step at a random σ per token ({cfg.db_steps_mult}× "
                                          f"the baseline's iterations)"))
        run_dir = os.path.join(cfg.out, method)
        stats = common.train_loop(cfg, step, lambda it: train_windows[torch.randint(
            len(train_windows), (cfg.batch_size,), generator=gen)].to(device), iters,
            {"model": model, "opt": opt, "gen": gen, "noise": noise_gen, "tally": tally},
            os.path.join(run_dir, "ckpt.pt"), lambda: evaluate(model, K), cfg.eval_every, cfg.ckpt_every,
            method, cfg.prelude + cfg.core + cfg.coda)  # every layer is updated at every step, in both methods
        extra = {"train_layer_evals_per_step": tally.total / iters, "train_layer_evals": tally.total,
                 "test_iters": K, "layers": [cfg.prelude, cfg.core, cfg.coda]}
        if method == "bptt":
            extra.update(mean_iters=cfg.mean_iters, bptt=cfg.bptt)
        else:
            extra.update(blocks=1, db_steps_mult=cfg.db_steps_mult, weighting=cfg.weighting, mislabel=cfg.mislabel)
        return common.method_result(stats, memory, {**final_evaluation(model, run_dir), **extra})

    for method in METHODS if cfg.method == "all" else [cfg.method]:
        metrics = common.write_metrics(cfg, "train_huginn.py", method, train(method), device)
    common.print_table(metrics["methods"], "test_next_token_acc", baseline="bptt")
    report(metrics["methods"], cfg)
    common.plot_comparison(metrics["methods"], "test_next_token_acc", cfg.out, "train_seconds", "training seconds")
    plot_quality_vs_iters(metrics["methods"], cfg.mean_iters, cfg.out)
    return metrics


def report(methods, cfg):
    """Quality, generation, and training compute of each method; the compute ratio when both ran."""
    for name, r in methods.items():
        print(f"{name}: test_next_token_acc {r['test_next_token_acc']:.4f}, test_ce {r['test_ce']:.4f} nats, "
              f"test_sample_acc {r['test_sample_acc']:.4f} at K = {r['test_iters']}, gen_ppl {r['gen_ppl']:.3f} "
              f"(T = 1 draws: {r['gen_ppl_t1']:.3f}; judge on the real continuations: "
              f"{r['judge_ppl_held_out']:.3f}); {r['train_layer_evals_per_step']:.2f} layer evaluations per step × "
              f"{r['iters']} steps = {r['train_layer_evals']:,}")
        for text in r["samples"][:2]:
            print(f"  sample: {text!r}")
    if set(methods) == set(METHODS):
        bp, dbk = methods["bptt"], methods["diffusionblocks"]
        schedule = "equal data passes" if dbk["iters"] == bp["iters"] else f"{dbk['iters'] / bp['iters']:g}× longer"
        print(f"training compute, bptt / diffusionblocks ({schedule}): layer evaluations "
              f"{bp['train_layer_evals'] / dbk['train_layer_evals']:.2f}×, measured time "
              f"{bp['train_seconds'] / dbk['train_seconds']:.2f}×")


def plot_quality_vs_iters(methods, mean_iters, out):
    """--out/quality_vs_iters.png: against test-time K, both methods, like with like: the accuracy of predictions
    (argmax; DiffusionBlocks from z_0 = 0) and of temperature-1 draws (DiffusionBlocks from noise); cross-entropy."""
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, keys in zip(axes, (("test_next_token_acc", "test_sample_acc"), ("test_ce",))):
        for name, r in methods.items():
            q = r["quality_vs_iters"]
            for key, style in zip(keys, ("-", "--")):
                label = f"{name}, {'draws' if key == 'test_sample_acc' else 'predictions'}" if len(keys) > 1 else name
                ax.plot([p["iters"] for p in q], [p[key] for p in q], style, marker="o", label=label)
        ax.axvline(mean_iters, color="gray", ls=":", label=f"training mean K = {mean_iters}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("test-time iterations K (core passes / Euler steps)")
        ax.set_ylabel("test next-character accuracy" if len(keys) > 1 else "test cross-entropy (nats)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "quality_vs_iters.png"), dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    common.run_seeds(main, common.parse_config(Config, PRESETS, METHODS), "test_next_token_acc", baseline="bptt")
