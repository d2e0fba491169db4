"""ViT image classification: end-to-end backprop beside DiffusionBlocks (§4.1: B blocks of L/B
layers, each denoising a label embedding, trained alone). The local baseline (the same B pieces
trained greedily, each with its own head) and the read-out study: study_vit.py.

  python train_vit.py  # both methods on bundled digits, CPU, minutes
  python train_vit.py --method diffusionblocks --block 1 --out runs/vit  # block 1 alone
  python train_vit.py --method diffusionblocks --assemble --out runs/vit  # the saved blocks
  python train_vit.py --preset paper                    # CIFAR-100, one GPU
"""

import dataclasses
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

import common
import diffusionblocks as db
import report
from data import load_images, random_shift

METHODS = ["backprop", "diffusionblocks"]
option = common.option


@dataclasses.dataclass
class Config(common.DiscreteConfig):
    # DiffusionBlocks (§3), each chosen on validation data (results/README.md, ViT)
    blocks: int = option(3, "B, blocks trained independently (paper: 3)")
    gamma: float = option(0.05, "overlap γ of neighbouring noise slices (paper: 0.05)")
    partition: str = option("equiprob", "noise partition (Eq. 8)", ["equiprob", "uniform"])
    weighting: str = option("uniform", "loss weight over σ: 1, or EDM's λ(σ)", ["uniform", "edm"])
    mislabel: float = option(0.2, "rate of wrong-class hints in training (db.DiffusionBlocks)")
    start: str = option("mean", "read-out chain start: z_0 = 0 (a prediction) or noise (a draw)",
                        ["mean", "noise"])
    grid: str = option("final", "read-out σ grid: the authors' Euler steps and a last call at "
                       "σ_min, or one call per block at its top", ["final", "boundaries"])
    readout: str = option("sum", "logits read out: every call's log-softmax summed, or the last "
                          "call's", ["sum", "last"])
    calls: int = option(0, "network calls of the read-out chain (0: B, one pass of L layers)")
    # the network and its training
    layers: int = option(6, "L, transformer layers of the whole network (CPU-sized; paper: 12)")
    width: int = option(64, "model width (CPU-sized; paper: 128)")
    heads: int = option(4, "attention heads (paper: 4)")
    patch: int = option(2, "patch size in pixels (CPU-sized for 8×8 digits; paper: 4)")
    steps: int = option(1500, "baseline iterations N (CPU-sized); each block gets N updates")
    batch_size: int = option(128, "batch size (paper: 128)")
    lr: float = option(2e-3, "peak AdamW learning rate (CPU-sized; paper: 5e-4)")
    min_lr: float = option(1e-4, "learning rate at the end of the cosine decay (paper code: 5e-5)")
    warmup: float = option(0.05, "warm-up fraction of the iterations (paper: 10 epochs)")
    weight_decay: float = option(0.05, "AdamW weight decay")
    augment: str = option("shift", "augmentation: random shifts (and flips on CIFAR), or "
                          "RandAugment + flip + crop (paper)", ["none", "shift", "randaug"])
    eval_every: int = option(250, "iterations between test evaluations (learning curves)")
    validation: bool = option(False, "evaluate on 20 % of the training split held out (to choose "
                              "settings), not on the test split; the metric is then val_acc")


PRESETS = {
    "smoke": dict(layers=3, width=32, steps=30, batch_size=32, eval_every=15, ckpt_every=15),
    "cpu": {},
    "paper": dict(dataset="cifar100", layers=12, width=128, heads=4, patch=4, blocks=3, gamma=0.05,
                  batch_size=128, lr=5e-4, min_lr=5e-5, steps=390 * 1000, warmup=0.01,
                  augment="randaug", eval_every=3900, ckpt_every=3900),  # 1000 epochs (official)
}


class ViT(nn.Module):
    """Patch embedding → L AdaLN-Zero layers → final layer on the first token (DiT layers, ViT
    readout). A classifier: a learned CLS token and condition. A DiffusionBlocks block
    (`label_dim`): the first token carries the noisy label c_in·z, the condition σ's embedding."""

    def __init__(self, image_size, channels, patch, width, depth, heads, num_classes,
                 label_dim=None):
        super().__init__()
        tokens = (image_size // patch) ** 2 + 1
        self.patch_embed = nn.Conv2d(channels, width, patch, stride=patch)
        self.pos = nn.Parameter(0.02 * torch.randn(1, tokens, width))
        if label_dim:
            self.label_in = nn.Linear(label_dim, width)
            self.embed_sigma = db.SigmaEmbedder(width)
        else:
            self.cls = nn.Parameter(torch.zeros(1, 1, width))
            self.cond = nn.Parameter(torch.zeros(1, width))
        self.layers = nn.ModuleList(db.AdaLNZeroLayer(width, heads) for _ in range(depth))
        self.final = db.FinalLayer(width, num_classes)

    def features(self, z_in, c_noise, x):
        """Images x (N, C, H, W) → tokens (N, T+1, D), condition (N, D)."""
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, T, D)
        first = (self.label_in(z_in)[:, None] if z_in is not None
                 else self.cls.expand(len(x), -1, -1))  # (N, 1, D)
        h = torch.cat([first, patches], dim=1) + self.pos  # (N, T+1, D)
        c = self.cond.expand(len(h), -1) if c_noise is None else self.embed_sigma(c_noise)  # (N, D)
        for layer in self.layers:
            h = layer(h, c)
        return h, c

    def forward(self, z_in, c_noise, x):
        h, c = self.features(z_in, c_noise, x)
        return self.final(h[:, :1], c)[:, 0]  # (N, classes)


def build_model(cfg, method, image_size, channels, num_classes):
    """A ViT of L layers (backprop), or B ViTs of L/B layers, each denoising the label embedding (in
    R^width: DiffusionBlocks)."""
    vit = (image_size, channels, cfg.patch, cfg.width)
    depths = db.split_layers(cfg.layers, cfg.blocks)
    if method == "diffusionblocks":
        blocks = [ViT(*vit, d, cfg.heads, num_classes, label_dim=cfg.width) for d in depths]
        embedding = db.target_embedding(num_classes, cfg.width, seed=cfg.seed)
        return db.DiffusionBlocks(blocks, embedding, cfg.gamma, cfg.partition, cfg.weighting,
                                  cfg.mislabel)
    return ViT(*vit, cfg.layers, cfg.heads, num_classes)


@dataclasses.dataclass
class Images:
    """Raw training images on the CPU (a batch is augmented there and copied without blocking),
    normalized evaluation images (the test split, or the held-out 20 %) on the device."""

    x_train: torch.Tensor  # (N, C, H, W) as loaded
    y_train: torch.Tensor  # (N,)
    x_eval: torch.Tensor  # (M, C, H, W) normalized
    y_eval: torch.Tensor  # (M,)
    mean: torch.Tensor  # (1, C, 1, 1) per-channel mean of the training images
    std: torch.Tensor  # (1, C, 1, 1) and their standard deviation
    num_classes: int
    metric: str  # test_acc, or val_acc with --validation
    flips: bool  # random horizontal flips (CIFAR)
    randaug: object  # torchvision's RandAugment with --augment randaug, else None


def normalize(x, mean, std):
    """(x − mean) / std per channel, in float32."""
    return (x.float() - mean) / std


def load_data(cfg, device):
    """The images of --dataset (--validation: the training split, 20 % of it held out), checked."""
    data = load_images(cfg.dataset, cfg.data_dir, cfg.seed, cfg.validation)
    _, C, H, W = data["x_train"].shape
    if H != W or H % cfg.patch:
        common.fail(f"--patch {cfg.patch} must divide the {H}×{W} images (allowed: divisors of "
                    f"{H})")
    try:
        db.prediction_sigmas(db.block_sigmas(cfg.blocks), cfg.calls or cfg.blocks, cfg.grid)
    except ValueError as e:
        common.fail(f"--calls {cfg.calls} with --grid {cfg.grid}: {e}")
    print(f"{cfg.dataset}: {len(data['x_train'])} train / {len(data['x_test'])} "
          f"{'validation' if cfg.validation else 'test'} images {C}×{H}×{W}, "
          f"{data['num_classes']} classes")
    mean = data["x_train"].float().mean((0, 2, 3), keepdim=True).to(device)  # (1, C, 1, 1)
    std = data["x_train"].float().std((0, 2, 3), keepdim=True).to(device)
    randaug = None
    if cfg.augment == "randaug":
        import torchvision.transforms.v2 as T  # paper preset only: torchvision's RandAugment

        randaug = T.RandAugment()
    x_eval = normalize(data["x_test"].to(device), mean, std)
    return Images(data["x_train"], data["y_train"], x_eval, data["y_test"].to(device), mean, std,
                  data["num_classes"], "val_acc" if cfg.validation else "test_acc",
                  cfg.dataset.startswith("cifar"), randaug)


def get_batch(cfg, data, generator):
    """(images (batch, C, H, W) normalized and augmented: --augment, CIFAR's flips; labels)."""
    device = data.x_eval.device
    idx = torch.randint(len(data.x_train), (cfg.batch_size,), generator=generator)
    x, y = data.x_train[idx], common.to_device(data.y_train[idx], device)
    if cfg.augment == "randaug":
        x = torch.stack([data.randaug(img) for img in x])
    x = normalize(common.to_device(x, device), data.mean, data.std)
    if cfg.augment != "none":
        x = random_shift(x, max(1, x.shape[-1] // 8))
        if data.flips:
            x = torch.where(torch.rand(len(x), 1, 1, 1, device=device) < 0.5, x.flip(3), x)
    return x, y


def evaluate(cfg, data, model):
    """{metric: accuracy} of the classifier's argmax, or of DiffusionBlocks' read-out chain (§4:
    by default B calls from z_0 = 0, the summed log-softmax)."""
    predict = lambda x: model(None, None, x)  # noqa: E731
    if isinstance(model, db.DiffusionBlocks):
        sigmas = db.prediction_sigmas(model.sigmas, cfg.calls or cfg.blocks, cfg.grid)
        g = torch.Generator(data.x_eval.device).manual_seed(cfg.seed)
        predict = lambda x: model.predict(  # noqa: E731
            x, (len(x), cfg.width), sigmas, cfg.start, cfg.readout, g, x.device)
    with torch.no_grad(), common.autocast(data.x_eval.device):
        correct = sum((predict(x).argmax(-1) == y).sum().item()
                      for x, y in zip(data.x_eval.split(500), data.y_eval.split(500)))
    return {data.metric: correct / len(data.x_eval)}


def extras(cfg, method, per_block):
    """metrics.json beyond the common fields: DiffusionBlocks' settings, the memory per block."""
    if method == "diffusionblocks":
        return {"blocks": cfg.blocks, "gamma": cfg.gamma, "partition": cfg.partition,
                "weighting": cfg.weighting, "mislabel": cfg.mislabel,
                "readout": f"{cfg.start}/{cfg.grid}/{cfg.calls or cfg.blocks}/{cfg.readout}",
                "layers_per_block": db.split_layers(cfg.layers, cfg.blocks),
                "train_memory_per_block": per_block}
    return {}


# Training: one step, the loop, main ---------------------------------------------------------------


def train_step(model, optimizers, batch, b, generator=None):
    """One iteration that trains block b alone on batch = (images, labels) → (loss, gradient norm).
    DiffusionBlocks (Fig. 3): block b's loss on its noise slice (Eq. 6), noise from `generator`;
    backprop: the whole network's cross-entropy (b = 0)."""
    x, y = batch
    with common.autocast(x.device):
        if isinstance(model, db.DiffusionBlocks):
            loss = model.loss(x, y, block=b, generator=generator)
        else:
            loss = F.cross_entropy(model(None, None, x).float(), y)
    block = common.blocks_of(model)[b]
    optimizers[b].zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(block.parameters(), 1.0)  # before clipping
    optimizers[b].step()
    return loss.detach(), grad_norm


def train(cfg, data, method, model, run_dir, step=train_step):
    """Train `model` by `method` (its iterations: `step`), cfg.steps updates per block → (stats,
    memory of the largest block, memory per block); None after --block b, which saves block b."""
    blocks = common.blocks_of(model)  # DiffusionBlocks' B blocks, or backprop's 1 (local: pieces)
    optimizers = [common.adamw(block, cfg) for block in blocks]
    device = data.x_eval.device
    gen = torch.Generator().manual_seed(cfg.seed)  # the batches and the block drawn each iteration
    noise = torch.Generator(device).manual_seed(cfg.seed)  # DiffusionBlocks' σ, ε and wrong hints
    trained = range(len(blocks)) if cfg.block < 0 else [cfg.block]
    iters = cfg.steps * len(trained)  # compute matching: every trained block gets cfg.steps updates
    batch0 = get_batch(cfg, data, torch.Generator().manual_seed(cfg.seed))
    memory, per_block = common.measure_blocks(
        model, optimizers, lambda m, o, b: step(m, o, batch0, b), trained)
    print(f"{method}: {[common.count_params(b) for b in blocks]} parameters in {len(blocks)} "
          f"block(s), {iters} iterations of one block (= {cfg.steps} per block)")
    state = {"model": model, "opts": common.Many(optimizers), "gen": gen, "noise": noise}
    layers_per_iter = cfg.layers / len(blocks)  # layers one iteration trains (backprop: all L)
    loop = common.Loop(cfg, run_dir, iters, state, method, layers_per_iter)
    for it in loop:
        batch = get_batch(cfg, data, gen)
        # Fig. 3: a block drawn uniformly (or --block's), lr on one schedule
        if method == "diffusionblocks":
            b = db.pick_block(len(blocks), gen) if cfg.block < 0 else cfg.block
            progress = it / iters
        else:  # backprop: the one network (study_vit's local: piece after piece, each scheduled)
            b, progress = it // cfg.steps, (it % cfg.steps) / cfg.steps
        common.set_lr(optimizers[b], common.lr_at(cfg, progress))
        loop.record(*step(model, optimizers, batch, b, noise))
        if loop.every(cfg.eval_every):
            loop.log(evaluate(cfg, data, model) if cfg.block < 0 else {})
        if loop.every(cfg.ckpt_every):
            loop.checkpoint()
    if cfg.block >= 0:  # this block alone, in its own process: evaluated later with --assemble
        common.save_block(cfg, model, memory, loop.stats, iters)
        return None
    return loop.stats, memory, per_block


def main(cfg):
    """Train and evaluate each --method (or evaluate --assemble'd blocks) → metrics.json."""
    device = common.start(cfg)
    data = load_data(cfg, device)
    _, C, H, _ = data.x_eval.shape
    if cfg.assemble:
        model = build_model(cfg, "diffusionblocks", H, C, data.num_classes).to(device)
        return common.assemble(cfg, "train_vit.py", data.metric, model,
                               lambda m: evaluate(cfg, data, m), device)
    for method in common.methods_to_run(cfg, METHODS):
        common.seed_everything(cfg.seed)
        model = build_model(cfg, method, H, C, data.num_classes).to(device)
        if method == "diffusionblocks":
            print(common.describe_blocks(cfg, model, db.split_layers(cfg.layers, cfg.blocks)))
        trained = train(cfg, data, method, model, os.path.join(cfg.out, method))
        if trained is None:  # --block: saved alone
            return None
        stats, memory, per_block = trained
        result = common.method_result(stats, memory, extras(cfg, method, per_block))
        common.write_metrics(cfg, "train_vit.py", method, result, device)
    metrics = common.read_metrics(cfg.out)
    report.print_table(metrics["methods"], data.metric)
    report.plot_comparison(metrics["methods"], data.metric, cfg.out)
    return metrics


if __name__ == "__main__":
    config = common.parse_config(Config, PRESETS, METHODS)
    common.run_seeds(main, config, "val_acc" if config.validation else "test_acc")
