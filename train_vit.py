"""ViT image classification: end-to-end backprop, DiffusionBlocks (§4.1: B blocks of L/B layers,
each denoising a label embedding, trained alone) and a local baseline (the same B pieces trained
greedily, each with its own head).

  python train_vit.py  # all methods on bundled digits, CPU, minutes
  python train_vit.py --method diffusionblocks --block 1 --out runs/vit  # block 1 alone
  python train_vit.py --method diffusionblocks --assemble --out runs/vit  # the saved blocks
  python train_vit.py --preset paper                    # CIFAR-100, one GPU

DiffusionBlocks reads out B calls from z_0 = 0 (B − 1 Euler steps, then a call at σ_min) and takes
the argmax of the summed log-softmax (--start, --grid, --calls, --readout).
"""

import dataclasses
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

import common
import diffusionblocks as db
from data import load_images, random_shift, validation_split

METHODS = ["backprop", "diffusionblocks", "local"]


@dataclasses.dataclass
class Config(common.DiscreteConfig):
    layers: int = common.option(
        6, "L, transformer layers of the whole network (CPU-sized; paper: 12)"
    )
    width: int = common.option(64, "model width (CPU-sized; paper: 128)")
    heads: int = common.option(4, "attention heads (paper: 4)")
    patch: int = common.option(2, "patch size in pixels (CPU-sized for 8×8 digits; paper: 4)")
    steps: int = common.option(1500, "baseline iterations N (CPU-sized); each block gets N updates")
    batch_size: int = common.option(128, "batch size (paper: 128)")
    lr: float = common.option(2e-3, "peak AdamW learning rate (CPU-sized; paper: 5e-4)")
    min_lr: float = common.option(
        1e-4, "learning rate at the end of the cosine decay (paper code: 5e-5)"
    )
    warmup: float = common.option(0.05, "warm-up fraction of the iterations (paper: 10 epochs)")
    weight_decay: float = common.option(0.05, "AdamW weight decay")
    augment: str = common.option(
        "shift",
        "augmentation: random shifts (and flips on CIFAR), or RandAugment + flip + crop (paper)",
        ["none", "shift", "randaug"],
    )
    eval_every: int = common.option(250, "iterations between test evaluations (learning curves)")
    start: str = common.option(
        "mean",
        "read-out chain start: mean (z_0 = 0, a prediction) or noise (a draw)",
        ["mean", "noise"],
    )
    grid: str = common.option(
        "final",
        "read-out σ grid (db.prediction_sigmas): the authors' Euler steps + a final "
        "call at σ_min, or one call per block at its top; chosen on validation data (README)",
        ["final", "boundaries"],
    )
    readout: str = common.option(
        "sum",
        "logits read out: the sum of every call's log-softmax, or the last call's; "
        "chosen on validation data (README)",
        ["sum", "last"],
    )
    calls: int = common.option(
        0, "network calls of the read-out chain (0: B, one pass of L layers, as backprop)"
    )
    validation: bool = common.option(
        False,
        "evaluate on 20 % of the training split held out (to choose "
        "settings), not on the test split; the metric is then val_acc",
    )


PRESETS = {
    "smoke": dict(layers=3, width=32, steps=30, batch_size=32, eval_every=15, ckpt_every=15),
    "cpu": {},
    "paper": dict(
        dataset="cifar100",
        layers=12,
        width=128,
        heads=4,
        patch=4,
        blocks=3,
        gamma=0.05,
        batch_size=128,
        lr=5e-4,
        min_lr=5e-5,
        steps=390 * 1000,
        warmup=0.01,
        augment="randaug",
        # official code: 1000 epochs, 3900 warm-up steps
        eval_every=3900,
        ckpt_every=3900,
    ),
}


class ViT(nn.Module):
    """Patch embedding → L AdaLN-Zero layers → final layer on the first token (DiT layers, ViT
    readout).

    As a plain classifier the first token is a learned CLS and the AdaLN condition a learned vector.
    As a DiffusionBlocks block (`label_dim` set) the first token carries the noisy label c_in·z and
    the condition is the σ embedding. Without a stem (`stem=False`, local baseline) it takes tokens.
    """

    def __init__(
        self,
        image_size,
        channels,
        patch,
        width,
        depth,
        heads,
        num_classes,
        label_dim=None,
        stem=True,
    ):
        super().__init__()
        tokens = (image_size // patch) ** 2 + 1
        self.patch_embed = nn.Conv2d(channels, width, patch, stride=patch) if stem else None
        self.pos = nn.Parameter(0.02 * torch.randn(1, tokens, width)) if stem else None
        if label_dim:
            self.label_in = nn.Linear(label_dim, width)
            self.embed_sigma = db.SigmaEmbedder(width)
        else:
            self.cls = nn.Parameter(torch.zeros(1, 1, width)) if stem else None
            self.cond = nn.Parameter(torch.zeros(1, width))
        self.layers = nn.ModuleList(db.AdaLNZeroLayer(width, heads) for _ in range(depth))
        self.final = db.FinalLayer(width, num_classes)

    def features(self, z_in, c_noise, x):
        """x: images (N, C, H, W), or tokens (N, T+1, D) without a stem → tokens and the AdaLN
        condition."""
        if self.patch_embed is None:
            h = x
        else:
            patches = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, T, D)
            first = (
                self.cls.expand(len(x), -1, -1) if z_in is None else self.label_in(z_in)[:, None]
            )
            h = torch.cat([first, patches], dim=1) + self.pos  # (N, T+1, D)
        if c_noise is None:
            c = self.cond.expand(len(h), -1)
        else:
            c = self.embed_sigma(c_noise)  # (N, D)
        for layer in self.layers:
            h = layer(h, c)
        return h, c

    def forward(self, z_in, c_noise, x):
        h, c = self.features(z_in, c_noise, x)
        return self.final(h[:, :1], c)[:, 0]  # (N, classes)


def diffusion_vit(cfg, image_size, channels, num_classes):
    """B ViTs of L/B layers (cfg.blocks, cfg.layers), each denoising the fixed label embedding (in
    R^width): the first token carries c_in·z, σ enters every layer through AdaLN, the loss is CE
    (--weighting) with wrong-label hints (--mislabel)."""
    blocks = [
        ViT(
            image_size,
            channels,
            cfg.patch,
            cfg.width,
            depth,
            cfg.heads,
            num_classes,
            label_dim=cfg.width,
        )
        for depth in db.split_layers(cfg.layers, cfg.blocks)
    ]
    return db.DiffusionBlocks(
        blocks,
        embedding=db.target_embedding(num_classes, cfg.width, seed=cfg.seed),
        gamma=cfg.gamma,
        partition=cfg.partition,
        weighting=cfg.weighting,
        mislabel=cfg.mislabel,
    )


class LocalViT(nn.ModuleList):
    """The local baseline: B ViT pieces (only the first with a stem), piece b trained with its own
    head on the frozen features of pieces < b; it classifies with the piece trained last."""

    def __init__(self, pieces):
        super().__init__(pieces)
        # the piece in training, set by train_step: the learning curve reads its head
        self.current = 0

    @property
    def blocks(self):
        """The pieces, trained one after another (common.blocks_of)."""
        return list(self)

    def frozen_features(self, x, b):
        """Images x (N, C, H, W) → tokens (N, T+1, D) of pieces < b, without gradients (x itself for
        b = 0)."""
        with torch.no_grad(), common.autocast(x.device):
            h = x
            for piece in list(self)[:b]:
                h = piece.features(None, None, h)[0]
        return h

    def forward(self, z_in, c_noise, x):
        return self[self.current](z_in, c_noise, self.frozen_features(x, self.current))


def build_model(cfg, method, image_size, channels, num_classes):
    """A ViT of cfg.layers layers (backprop), B blocks of L/B layers (diffusionblocks) or B pieces
    (local)."""
    if method == "diffusionblocks":
        return diffusion_vit(cfg, image_size, channels, num_classes)
    if method == "local":
        return LocalViT(
            ViT(
                image_size,
                channels,
                cfg.patch,
                cfg.width,
                depth,
                cfg.heads,
                num_classes,
                stem=(b == 0),
            )
            for b, depth in enumerate(db.split_layers(cfg.layers, cfg.blocks))
        )
    return ViT(image_size, channels, cfg.patch, cfg.width, cfg.layers, cfg.heads, num_classes)


# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Images:
    """The dataset: raw training images on the CPU (a batch is augmented there and copied without
    blocking), normalized evaluation images on the device."""

    x_train: torch.Tensor  # (N, C, H, W) as loaded, on the CPU
    y_train: torch.Tensor  # (N,), on the CPU
    # (M, C, H, W) normalized: the test split, or with --validation the held-out 20 %
    x_eval: torch.Tensor
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


def check_config(cfg, H, W):
    """Refuse, in one line, a --patch that does not divide the H×W images and --calls that the
    --grid cannot make (parse_config has checked --blocks and --width)."""
    if H != W or H % cfg.patch:
        common.fail(
            f"--patch {cfg.patch} must divide the {H}×{W} images (allowed: divisors of {H})"
        )
    try:
        db.prediction_sigmas(db.block_sigmas(cfg.blocks), cfg.calls or cfg.blocks, cfg.grid)
    except ValueError as e:
        common.fail(f"--calls {cfg.calls} with --grid {cfg.grid}: {e}")


def load_data(cfg, device):
    """The images of --dataset (with --validation: the training split and 20 % of it held out),
    checked."""
    data = load_images(cfg.dataset, cfg.data_dir, cfg.seed)
    if cfg.validation:
        data = validation_split(data, cfg.seed)
    _, C, H, W = data["x_train"].shape
    check_config(cfg, H, W)
    print(
        f"{cfg.dataset}: {len(data['x_train'])} train / {len(data['x_test'])} "
        f"{'validation' if cfg.validation else 'test'} images {C}×{H}×{W}, {data['num_classes']} "
        "classes"
    )
    mean = data["x_train"].float().mean((0, 2, 3), keepdim=True).to(device)  # (1, C, 1, 1)
    std = data["x_train"].float().std((0, 2, 3), keepdim=True).to(device)
    randaug = None
    if cfg.augment == "randaug":
        import torchvision.transforms.v2 as T  # paper preset only: torchvision's RandAugment

        randaug = T.RandAugment()
    x_eval = normalize(data["x_test"].to(device), mean, std)
    return Images(
        data["x_train"],
        data["y_train"],
        x_eval,
        data["y_test"].to(device),
        mean,
        std,
        data["num_classes"],
        "val_acc" if cfg.validation else "test_acc",
        cfg.dataset.startswith("cifar"),
        randaug,
    )


def get_batch(cfg, data, generator):
    """(images (batch, C, H, W) normalized and augmented: --augment, flips on CIFAR; labels
    (batch,))."""
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


def accuracy(data, predict):
    """{metric: fraction of the evaluation images whose argmax of predict(images) is the label}."""
    with torch.no_grad(), common.autocast(data.x_eval.device):
        correct = sum(
            (predict(data.x_eval[i : i + 500]).argmax(-1) == data.y_eval[i : i + 500]).sum().item()
            for i in range(0, len(data.x_eval), 500)
        )
    return {data.metric: correct / len(data.x_eval)}


def evaluate(cfg, data, model):
    """Accuracy of the classifier, or of DiffusionBlocks' configured read-out chain (§4: by default
    one call per block from z_0 = 0)."""
    if not isinstance(model, db.DiffusionBlocks):
        return accuracy(data, lambda x: model(None, None, x))
    sigmas = db.prediction_sigmas(model.sigmas, cfg.calls or cfg.blocks, cfg.grid)
    g = torch.Generator(data.x_eval.device).manual_seed(cfg.seed)
    return accuracy(
        data,
        lambda x: model.predict(
            x, (len(x), cfg.width), sigmas, cfg.start, cfg.readout, g, x.device
        ),
    )


def extras(cfg, method, model, per_block):
    """What metrics.json records beyond the common fields: DiffusionBlocks' settings, the memory per
    block."""
    if method == "diffusionblocks":
        return {
            "blocks": cfg.blocks,
            "gamma": cfg.gamma,
            "partition": cfg.partition,
            "weighting": cfg.weighting,
            "mislabel": cfg.mislabel,
            "readout": f"{cfg.start}/{cfg.grid}/{cfg.calls or cfg.blocks}/{cfg.readout}",
            "layers_per_block": db.split_layers(cfg.layers, cfg.blocks),
            "train_memory_per_block": per_block,
        }
    if method == "local":  # the frozen pieces also sit in memory
        return {
            "blocks": cfg.blocks,
            "train_memory_per_block": per_block,
            "frozen_parameter_bytes": sum(
                p.nbytes for piece in model.blocks[:-1] for p in piece.parameters()
            ),
        }
    return {}


# ----------------------------------------------------------------------------------------------
# Training: one step, the loop, main
# ----------------------------------------------------------------------------------------------


def train_step(model, optimizers, batch, b, generator=None):
    """One iteration that trains block b alone on batch = (images, labels) → the loss, detached,
    and the gradient norm.

    DiffusionBlocks (Fig. 3): the loss of block b on its noise slice (Eq. 6,
    `db.DiffusionBlocks.loss`), the noise drawn from `generator`; backprop: cross-entropy of the
    whole network (b = 0); local: of piece b on the frozen features of the pieces before it. Only
    block b's parameters are in the graph and stepped.
    """
    x, y = batch
    with common.autocast(x.device):
        if isinstance(model, db.DiffusionBlocks):
            loss = model.loss(x, y, block=b, generator=generator)
        else:
            if isinstance(model, LocalViT):
                model.current = b
            loss = F.cross_entropy(model(None, None, x).float(), y)
    block = common.blocks_of(model)[b]
    optimizers[b].zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(block.parameters(), 1.0)  # before clipping
    optimizers[b].step()
    return loss.detach(), grad_norm


def train(cfg, data, method, model, run_dir):
    """Train `model` by `method` with cfg.steps updates per block (compute matching) → (stats,
    memory of the largest block, memory per block); None after --block b, which saves block b alone
    for --assemble."""
    # DiffusionBlocks' B blocks, local's B pieces, or backprop's one network
    blocks = common.blocks_of(model)
    optimizers = [common.adamw(block, cfg) for block in blocks]
    device = data.x_eval.device
    gen = torch.Generator().manual_seed(cfg.seed)  # the batches and the block drawn each iteration
    noise = torch.Generator(device).manual_seed(cfg.seed)  # DiffusionBlocks' σ, ε and wrong hints
    trained = range(len(blocks)) if cfg.block < 0 else [cfg.block]
    iters = cfg.steps * len(trained)  # compute matching: every trained block gets cfg.steps updates
    batch0 = get_batch(cfg, data, torch.Generator().manual_seed(cfg.seed))
    memory, per_block = common.measure_blocks(
        model, optimizers, lambda m, o, b: train_step(m, o, batch0, b), trained
    )
    print(
        f"{method}: {[common.count_params(b) for b in blocks]} parameters in {len(blocks)} "
        f"block(s), {iters} "
        f"iterations of one block (= {cfg.steps} per block)"
    )
    state = {"model": model, "opts": common.Many(optimizers), "gen": gen, "noise": noise}
    layers_per_iter = cfg.layers / len(blocks)  # layers one iteration trains (backprop: all L)
    loop = common.Loop(cfg, run_dir, iters, state, method, layers_per_iter)
    for it in loop:
        batch = get_batch(cfg, data, gen)
        # Fig. 3: a block drawn uniformly (or --block's), lr on one schedule
        if method == "diffusionblocks":
            b = db.pick_block(len(blocks), gen) if cfg.block < 0 else cfg.block
            progress = it / iters
        else:  # backprop: the one network; local: piece after piece, each on its own schedule
            b, progress = it // cfg.steps, (it % cfg.steps) / cfg.steps
        common.set_lr(optimizers[b], common.lr_at(cfg, progress))
        loop.record(*train_step(model, optimizers, batch, b, noise))
        if loop.every(cfg.eval_every):
            loop.log(evaluate(cfg, data, model) if cfg.block < 0 else {})
        if loop.every(cfg.ckpt_every):
            loop.checkpoint()
    if cfg.block >= 0:  # this block alone, in its own process: evaluated later with --assemble
        common.save_block(cfg, model, memory, loop.stats, iters)
        return None
    return loop.stats, memory, per_block


def main(cfg):
    """Train and evaluate each --method (or evaluate --assemble'd blocks) → metrics.json's
    content."""
    device = common.start(cfg)
    data = load_data(cfg, device)
    _, C, H, _ = data.x_eval.shape
    if cfg.assemble:
        model = build_model(cfg, "diffusionblocks", H, C, data.num_classes).to(device)
        return common.assemble(
            cfg, "train_vit.py", data.metric, model, lambda m: evaluate(cfg, data, m), device
        )
    for method in common.methods_to_run(cfg, METHODS):
        common.seed_everything(cfg.seed)
        model = build_model(cfg, method, H, C, data.num_classes).to(device)
        if method == "diffusionblocks":
            print(common.describe_blocks(cfg, model, db.split_layers(cfg.layers, cfg.blocks)))
        trained = train(cfg, data, method, model, os.path.join(cfg.out, method))
        if trained is None:  # --block: saved alone
            return None
        stats, memory, per_block = trained
        result = common.method_result(stats, memory, extras(cfg, method, model, per_block))
        common.write_metrics(cfg, "train_vit.py", method, result, device)
    metrics = common.read_metrics(cfg.out)
    common.print_table(metrics["methods"], data.metric)
    common.plot_comparison(metrics["methods"], data.metric, cfg.out)
    return metrics


if __name__ == "__main__":
    config = common.parse_config(Config, PRESETS, METHODS)
    common.run_seeds(main, config, "val_acc" if config.validation else "test_acc")
