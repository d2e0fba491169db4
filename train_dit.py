"""Class-conditional DiT image generation: end-to-end backprop (one `db.DiffusionBlocks` block of L
layers over the whole σ range) beside DiffusionBlocks (§4.2: B blocks of L/B layers, each trained
alone; one block per sampling step).

  python train_dit.py                                   # both methods on bundled digits, CPU
  python train_dit.py --method diffusionblocks --block 1 --out runs/dit  # block 1 alone
  python train_dit.py --method diffusionblocks --assemble --out runs/dit  # the saved blocks
  python train_dit.py --preset paper                    # DiT-S/2 on CIFAR-10, one GPU
  python study_dit.py  # the ablations: partition (γ=0, B=3), B ∈ {1,2,3,4,6}

`fid` is NOT Inception FID unless --fid inception (the paper preset's): the Fréchet distance in the
features of a small CNN trained here (fid.py), comparable only between runs of this project on the
same data; `fid_ema`, `test_denoise_loss_ema`: those of the weights' EMA (--ema-std).
"""

import dataclasses
import os
import time

import torch
import torch.nn as nn
from tqdm import tqdm

import common
import diffusionblocks as db
import report
from data import load_images
from fid import FID_FEATURES, fid_of, reference, to_unit

METHODS = ["backprop", "diffusionblocks"]
option = common.option


@dataclasses.dataclass
class Config(common.BaseConfig):
    # DiffusionBlocks (§3): EDM's loss weighting, no wrong hints (continuous targets)
    blocks: int = option(3, "B, blocks trained independently (paper: 3)")
    gamma: float = option(0.05, "overlap γ of neighbouring noise slices (paper: 0.05)")
    partition: str = option("equiprob", "noise partition (Eq. 8)", ["equiprob", "uniform"])
    # the network, its training and sampling
    layers: int = option(6, "L, DiT layers of the whole network (CPU-sized; paper: 12, DiT-S)")
    width: int = option(96, "model width (CPU-sized; paper: 384)")
    heads: int = option(4, "attention heads (CPU-sized; paper: 6)")
    patch: int = option(2, "patch size in pixels (paper: 2, DiT-S/2)")
    steps: int = option(1500, "baseline iterations N (CPU-sized); each block gets N updates")
    batch_size: int = option(128, "batch size (CPU-sized; paper: 512)")
    lr: float = option(1e-3, "peak AdamW learning rate (CPU-sized; paper: 1e-4)")
    min_lr: float = option(1e-4, "learning rate at the end of the cosine decay (paper: constant)")
    warmup: float = option(0.05, "warm-up fraction of the iterations (paper: none)")
    label_dropout: float = option(0.1, "training labels replaced by the null class (paper: 0.1)")
    guidance: float = option(2.0, "classifier-free guidance scale s; 1 = none (paper: 2.0)")
    sample_steps: int = option(50, "sampling steps on the equal-CDF σ grid (paper: 50)")
    sampler: str = option("euler", "ODE sampler", ["euler", "heun"])
    ema_std: float = option(0.25, "σ_rel of each block's EMA of the weights (EDM2's power-function "
                            "EMA, at most 0.288); 0: none. Chosen on validation data")
    # the evaluation
    fid: str = option("classifier", "feature network of `fid` (fid.py): a small CNN trained here "
                      "(NOT Inception), or Inception-v3 (pip install torch-fidelity; the paper "
                      "preset's); the common protocol: --fid-samples 50000 --fid-reference train",
                      ["classifier", "inception"])
    fid_samples: int = option(1000, "generated images compared with the --fid-reference split")
    fid_reference: str = option("test", "what `fid` compares the samples with: the test split "
                                "(--validation: the held-out 20 %)", ["test", "train"])
    fid_classifier_steps: int = option(600, "training steps of the feature CNN (cached)")
    validation: bool = option(False, "evaluate on 20 % of the training split held out (tuning)")
    eval_every: int = option(500, "iterations between test denoising losses (learning curves)")
    curve_images: int = option(0, "test images per curve point (0: all; the final one uses all)")


PRESETS = {
    "smoke": dict(layers=3, width=32, heads=2, steps=12, batch_size=32, sample_steps=6,
                  fid_samples=100, fid_classifier_steps=30, eval_every=6, ckpt_every=6),
    "cpu": {},
    # 100 epochs of CIFAR-10's 50,000 images at batch 512, constant lr
    "paper": dict(dataset="cifar10", layers=12, width=384, heads=6, patch=2, blocks=3, gamma=0.05,
                  batch_size=512, lr=1e-4, min_lr=1e-4, warmup=0.0, steps=98 * 100,
                  fid="inception", fid_samples=10_000, fid_classifier_steps=5000, eval_every=980,
                  ckpt_every=980, curve_images=1000),
}


def pos_embedding_2d(grid, dim):
    """DiT's (MAE's) fixed 2-D sin-cos positions of a grid×grid of patches: (1, grid², dim)."""
    omega = 1 / 10_000 ** (torch.arange(dim // 4) / (dim // 4))  # (D/4,)
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    args = torch.cat([rows.reshape(-1, 1) * omega, cols.reshape(-1, 1) * omega], dim=1)  # (T, D/2)
    return torch.cat([args.sin(), args.cos()], dim=1)[None]  # (1, T, D)


class DiT(nn.Module):
    """Patchify → fixed positions → L AdaLN-Zero layers → final layer → unpatchify (DiT §3.2), the
    EDM network F(c_in·z, c_noise, class): every layer conditioned on c = MLP(sigma_embedding) +
    label_embedding(class), class `num_classes` the null class of guidance; F = 0 at init."""

    def __init__(self, image_size, channels, patch, width, depth, heads, num_classes):
        super().__init__()
        self.patch = patch
        self.patch_embed = nn.Conv2d(channels, width, patch, stride=patch)
        self.register_buffer("pos", pos_embedding_2d(image_size // patch, width))
        self.embed_sigma = db.SigmaEmbedder(width)
        self.label_embedding = nn.Embedding(num_classes + 1, width)
        nn.init.normal_(self.label_embedding.weight, std=0.02)  # DiT's init
        self.layers = nn.ModuleList(db.AdaLNZeroLayer(width, heads) for _ in range(depth))
        self.final = db.FinalLayer(width, patch * patch * channels)

    def forward(self, z_in, c_noise, label):
        N, C, H, W = z_in.shape
        p = self.patch
        h = self.patch_embed(z_in).flatten(2).transpose(1, 2) + self.pos  # (N, T, D), T = HW/p²
        c = self.embed_sigma(c_noise) + self.label_embedding(label)  # (N, D)
        for layer in self.layers:
            h = layer(h, c)
        out = self.final(h, c).view(N, H // p, W // p, p, p, C)  # (N, H/p, W/p, p, p, C)
        return out.permute(0, 5, 1, 3, 2, 4).reshape(N, C, H, W)  # unpatchify: (N, C, H, W)


def build_model(cfg, method, image_size, channels, num_classes):
    """DiTs splitting L layers in a DiffusionBlocks container: B blocks, or one (backprop)."""
    num_blocks = 1 if method == "backprop" else cfg.blocks
    blocks = [DiT(image_size, channels, cfg.patch, cfg.width, depth, cfg.heads, num_classes)
              for depth in db.split_layers(cfg.layers, num_blocks)]
    return db.DiffusionBlocks(blocks, gamma=cfg.gamma, partition=cfg.partition)


# Data ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Images:
    """The dataset on its device, and the features that `fid` compares."""

    x_train: torch.Tensor  # (N, C, H, W) uint8, on the device
    y_train: torch.Tensor  # (N,), on the device
    x_test: torch.Tensor  # (M, C, H, W) in [-1, 1], on the CPU (moved per batch)
    y_test: torch.Tensor  # (M,)
    num_classes: int  # K; class K is the null class of classifier-free guidance
    flips: bool  # random horizontal flips (CIFAR)
    device: torch.device
    features: object  # the feature network of `fid`: (n, C, H, W) in [-1, 1] -> (n, F); None
    reference_features: torch.Tensor  # (M, F): the --fid-reference split's; None with --block


def check_config(cfg):
    """One-line errors for flags that cannot work together (parse_config, before --out exists)."""
    if cfg.width % 4:
        common.fail(f"--width {cfg.width} must be divisible by 4 (2-D sin-cos positions)")


def load_data(cfg, device):
    """The images of --dataset (--validation: 20 % of the training split held out as the test
    split), checked against --patch, and the features of `fid`'s reference split (fid.py)."""
    data = load_images(cfg.dataset, cfg.data_dir, cfg.seed, cfg.validation)
    _, C, H, W = data["x_train"].shape
    if H != W or H % cfg.patch:
        common.fail(f"--patch {cfg.patch} must divide the {H}×{W} images (allowed: divisors of "
                    f"{H})")
    print(f"{cfg.dataset}: {len(data['x_train'])} train / {len(data['x_test'])} "
          f"{'validation' if cfg.validation else 'test'} images {C}×{H}×{W}, "
          f"{data['num_classes']} classes")
    # `fid`'s network and its reference features (fid.py); --block b only trains
    features, reference_features = reference(cfg, data, device) if cfg.block < 0 else (None, None)
    return Images(data["x_train"].to(device), data["y_train"].to(device), to_unit(data["x_test"]),
                  data["y_test"], data["num_classes"], cfg.dataset.startswith("cifar"), device,
                  features, reference_features)


def get_batch(cfg, data, generator):
    """(labels, --label-dropout of them the null class; images in [-1, 1], CIFAR's random flips)."""
    device = data.device
    idx = torch.randint(len(data.x_train), (cfg.batch_size,), generator=generator)
    drop = torch.rand(cfg.batch_size, generator=generator) < cfg.label_dropout
    idx, drop = common.to_device(idx, device), common.to_device(drop, device)
    x = to_unit(data.x_train[idx])  # (batch, C, H, W)
    if data.flips:
        flip = torch.rand(len(x), 1, 1, 1, generator=generator) < 0.5
        x = torch.where(common.to_device(flip, device), x.flip(3), x)
    return torch.where(drop, data.num_classes, data.y_train[idx]), x


# Evaluation: the test denoising loss, sampling, fid -----------------------------------------------


def test_denoise_loss(cfg, data, model, images=0, num_sigmas=8):
    """EDM's loss E_σ[λ(σ)·‖D(y + σε, σ, class) − y‖²] (Eq. 2, Table 1) on the first `images` test
    images (0: all): σ at the midpoints of 8 equal-mass bins of p_σ, fixed ε, σ's block."""
    n, total = images or len(data.x_test), 0.0
    with torch.no_grad(), common.autocast(data.device):
        sigmas = db.sampling_sigmas(2 * num_sigmas)[1::2].tolist()  # midpoints of equal-mass bins
        for i, sigma in enumerate(tqdm(sigmas, "test_denoise_loss", leave=False, mininterval=1)):
            gen = torch.Generator().manual_seed(cfg.seed * 1000 + i)
            for y, label in zip(data.x_test[:n].split(1000), data.y_test[:n].split(1000)):
                y, label = y.to(data.device), label.to(data.device)
                z = y + sigma * torch.randn(y.shape, generator=gen).to(data.device)
                error = (model.denoise(z, sigma, label).float() - y).square().flatten(1).mean(1)
                total += float(db.loss_weight(sigma) * error.sum())
    return {"test_denoise_loss": total / (num_sigmas * n)}


def generate(cfg, model, labels, noise, num_classes):
    """Samples of --sampler on D = D_u + s·(D_c − D_u) (classifier-free guidance, Ho & Salimans
    2022), quantised to 8 bits, and the layers run per sample (σ's block, twice with guidance)."""
    layers_run, null = [], torch.full_like(labels, num_classes)

    def D(z, sigma):
        b = int(db.block_of(sigma, model.sigmas))
        if cfg.guidance == 1:
            layers_run.append(len(model.blocks[b].layers))
            return model.denoise(z, sigma, labels, block=b)
        layers_run.append(2 * len(model.blocks[b].layers))  # the conditional and unconditional
        both = model.denoise(torch.cat([z, z]), sigma, torch.cat([labels, null]), block=b)
        d_cond, d_uncond = both.chunk(2)
        return d_uncond + cfg.guidance * (d_cond - d_uncond)

    sampler = {"euler": db.sample_euler, "heun": db.sample_heun}[cfg.sampler]
    with torch.no_grad(), common.autocast(noise.device):
        z = sampler(D, db.sampling_sigmas(cfg.sample_steps), noise)
    return ((z.float().clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1, sum(layers_run)


def final_evaluation(cfg, data, model, run_dir, grid_file="samples.pt"):
    """fid, the sampling cost, and a grid of samples (the same labels and noise for every method)
    to run_dir/grid_file."""
    K, (C, H, W), n = data.num_classes, data.x_test.shape[1:], cfg.fid_samples
    labels = torch.arange(n) % K  # balanced classes
    noise = torch.randn((n, C, H, W), generator=torch.Generator().manual_seed(cfg.seed))
    t0, samples = time.perf_counter(), []
    for label, eps in tqdm(list(zip(labels.split(500), noise.split(500))), "sampling", leave=False):
        images, layer_evals = generate(cfg, model, label.to(data.device), eps.to(data.device), K)
        samples.append(images.cpu())  # .cpu() waits for the device, so the time is the sampling's
    seconds = time.perf_counter() - t0
    samples = torch.cat(samples)  # (n, C, H, W) in [-1, 1]
    per_class = min(8, cfg.fid_samples // K)
    grid = samples[: per_class * K].view(per_class, K, C, H, W).transpose(0, 1)  # (K, per_class, …)
    common.save_atomic(grid, os.path.join(run_dir, grid_file))
    return {"fid": fid_of(data.features, samples, data.reference_features, data.device),
            "fid_features": FID_FEATURES[cfg.fid], "layer_evals_per_sample": layer_evals,
            "sample_seconds_per_image": seconds / cfg.fid_samples}


def evaluate(cfg, data, model, emas, run_dir, loss=True):
    """The final metrics: fid and the sampling cost (a grid of samples in run_dir/samples.pt),
    test_denoise_loss on every test image (`loss`; else the curve's last is it), and both of the
    EMA weights (fid_ema, test_denoise_loss_ema; samples_ema.pt)."""
    result = final_evaluation(cfg, data, model, run_dir)
    result.update(test_denoise_loss(cfg, data, model) if loss else {})
    if emas:
        with common.averaged(emas):
            fid_ema = final_evaluation(cfg, data, model, run_dir, "samples_ema.pt")["fid"]
            ema_loss = test_denoise_loss(cfg, data, model)["test_denoise_loss"]
        result.update(fid_ema=fid_ema, test_denoise_loss_ema=ema_loss, ema_std=cfg.ema_std)
    return result


# Training: one step, the loop, main ---------------------------------------------------------------


def train_step(model, optimizers, batch, b, generator=None):
    """One iteration that trains block b alone on batch = (labels, images) → (loss, gradient norm).
    Fig. 3: EDM's loss of block b on its noise slice (Eq. 6), σ and ε from `generator`; backprop is
    the one block (b = 0) over the whole σ range."""
    labels, images = batch
    with common.autocast(images.device):
        loss = model.loss(labels, images, block=b, generator=generator)
    optimizers[b].zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.blocks[b].parameters(), 1.0)  # before clipping
    optimizers[b].step()
    return loss.detach(), grad_norm


def train(cfg, data, method, model, emas, run_dir):
    """Train `model` by `method`, cfg.steps updates per block, emas[b] after each step of block b →
    (stats, memory of the largest block, memory per block); None after --block b (saved alone)."""
    blocks = common.blocks_of(model)  # DiffusionBlocks' B blocks, or backprop's one of L layers
    optimizers = [common.adamw(block, cfg) for block in blocks]
    gen = torch.Generator().manual_seed(cfg.seed)  # the batches and the block drawn each iteration
    noise = torch.Generator(data.device).manual_seed(cfg.seed)  # σ and ε of the loss
    trained = range(len(blocks)) if cfg.block < 0 else [cfg.block]
    iters = cfg.steps * len(trained)  # compute matching: every trained block gets cfg.steps updates
    batch0 = get_batch(cfg, data, torch.Generator().manual_seed(cfg.seed))
    memory, per_block = common.measure_blocks(
        model, optimizers, lambda m, o, b: train_step(m, o, batch0, b), trained)
    print(f"{method}: {[common.count_params(b) for b in blocks]} parameters in {len(blocks)} "
          f"block(s), {iters} iterations of one block (= {cfg.steps} per block)")
    state = {"model": model, "opts": common.Many(optimizers), "gen": gen, "noise": noise,
             **({"ema": common.Many(emas)} if emas else {})}
    layers_per_iter = cfg.layers / len(blocks)  # layers one iteration trains (backprop: all L)
    loop = common.Loop(cfg, run_dir, iters, state, method, layers_per_iter)
    for it in loop:
        batch = get_batch(cfg, data, gen)
        b = db.pick_block(len(blocks), gen) if cfg.block < 0 else cfg.block  # Fig. 3: uniformly
        common.set_lr(optimizers[b], common.lr_at(cfg, it / iters))
        loss, grad_norm = train_step(model, optimizers, batch, b, noise)
        if emas:  # each block's own EMA, updated when that block trains
            emas[b].update()
        loop.record(loss, grad_norm)
        if loop.every(cfg.eval_every):
            loop.log(test_denoise_loss(cfg, data, model, cfg.curve_images) if cfg.block < 0 else {})
        if loop.every(cfg.ckpt_every):
            loop.checkpoint()
    if cfg.block >= 0:  # this block alone, in its own process: evaluated later with --assemble
        common.save_block(cfg, model, memory, loop.stats, iters, emas[cfg.block] if emas else None)
        return None
    return loop.stats, memory, per_block


def run_method(cfg, data, method, run_dir, desc=None):
    """Build, train (one EMA per block) and evaluate `method`'s model → its metrics.json entry."""
    common.seed_everything(cfg.seed)
    _, C, H, _ = data.x_test.shape
    model = build_model(cfg, method, H, C, data.num_classes).to(data.device)
    if method == "diffusionblocks":
        print(common.describe_blocks(cfg, model, db.split_layers(cfg.layers, cfg.blocks)))
    emas = [common.EMA(block, cfg.ema_std) for block in model.blocks] if cfg.ema_std else []
    trained = train(cfg, data, desc or method, model, emas, run_dir)
    if trained is None:  # --block: saved alone
        return None
    stats, memory, per_block = trained
    final = evaluate(cfg, data, model, emas, run_dir, loss=cfg.curve_images > 0)
    B = len(model.blocks)  # and the blocks' settings, the memory per block
    return common.method_result(stats, memory, {
        **final, "blocks": B, "gamma": cfg.gamma, "partition": cfg.partition,
        "layers_per_block": db.split_layers(cfg.layers, B), "train_memory_per_block": per_block})


def main(cfg):
    """Train and evaluate each --method (or evaluate --assemble'd blocks) → metrics.json."""
    device = common.start(cfg)
    data = load_data(cfg, device)
    _, C, H, _ = data.x_test.shape
    if cfg.assemble:
        model = build_model(cfg, "diffusionblocks", H, C, data.num_classes).to(device)
        emas = [common.EMA(block, cfg.ema_std) for block in model.blocks] if cfg.ema_std else []
        run_dir = os.path.join(cfg.out, "assembled")
        metrics = common.assemble(cfg, "train_dit.py", "fid", model,
                                  lambda m: evaluate(cfg, data, m, emas, run_dir), device, emas)
        report.plot_samples(metrics["methods"], cfg.out)
        return metrics
    for method in common.methods_to_run(cfg, METHODS):
        result = run_method(cfg, data, method, os.path.join(cfg.out, method))
        if result is None:  # --block: saved alone
            return None
        common.write_metrics(cfg, "train_dit.py", method, result, device)
    metrics = common.read_metrics(cfg.out)
    report.dit(metrics["methods"], cfg.out, FID_FEATURES[cfg.fid])
    return metrics


if __name__ == "__main__":
    common.run_seeds(main, common.parse_config(Config, PRESETS, METHODS, check=check_config), "fid")
