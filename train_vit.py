"""ViT classification trained block-wise with DiffusionBlocks, beside end-to-end backprop and a
local-objective baseline (DiffusionBlocks §4.1: CIFAR-100, 12 layers, B=3, 60.25 % → 59.30 %).

  python train_vit.py                                   # all methods on bundled digits, CPU, minutes
  python train_vit.py --method diffusionblocks --block 1 --out runs/vit   # block 1 alone (own process)
  python train_vit.py --method diffusionblocks --assemble --out runs/vit  # evaluate the saved blocks
  python train_vit.py --preset paper                    # CIFAR-100, one GPU

Backprop: patch embedding, position embeddings, L AdaLN-Zero layers (condition: a learned vector),
a final layer on the CLS token, cross-entropy. DiffusionBlocks: B independent ViTs of L/B layers,
each with its own patch embedding and head; the first token carries the noisy label embedding c_in·z,
σ enters every layer through AdaLN, the target is a fixed label embedding, the loss CE (--weighting) with
wrong-label hints (--mislabel); inference is B calls from z_0 = 0 (the authors' grid: B − 1 Euler steps, then
a call at σ_min), then the argmax of the summed log-softmax (--start, --grid, --calls, --readout; --ablation).
Local: the same B pieces trained greedily, one after another, each with its own head on the frozen features of the previous ones.
"""
import dataclasses
import json
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
    layers: int = common.option(6, "L, transformer layers of the whole network (CPU-sized; paper: 12)")
    width: int = common.option(64, "model width (CPU-sized; paper: 128)")
    heads: int = common.option(4, "attention heads (paper: 4)")
    patch: int = common.option(2, "patch size in pixels (CPU-sized for 8×8 digits; paper: 4)")
    steps: int = common.option(1500, "baseline iterations N (CPU-sized); each block gets N updates")
    batch_size: int = common.option(128, "batch size (paper: 128)")
    lr: float = common.option(2e-3, "peak AdamW learning rate (CPU-sized; paper: 5e-4)")
    min_lr: float = common.option(1e-4, "learning rate at the end of the cosine decay (paper code: 5e-5)")
    warmup: float = common.option(0.05, "warm-up fraction of the iterations (paper: 10 epochs)")
    weight_decay: float = common.option(0.05, "AdamW weight decay")
    augment: str = common.option("shift", "augmentation: random shifts (and flips on CIFAR), or "
                                 "RandAugment + flip + crop (paper)", ["none", "shift", "randaug"])
    eval_every: int = common.option(250, "iterations between test evaluations (learning curves)")
    start: str = common.option("mean", "read-out chain start: mean (z_0 = 0, a prediction) or noise (a draw)",
                               ["mean", "noise"])
    grid: str = common.option("final", "read-out σ grid (db.prediction_sigmas): the authors' Euler steps + a final "
                              "call at σ_min, or one call per block at its top; chosen on validation data (README)",
                              ["final", "boundaries"])
    readout: str = common.option("sum", "logits read out: the sum of every call's log-softmax, or the last call's; "
                                 "chosen on validation data (README)", ["sum", "last"])
    calls: int = common.option(0, "network calls of the read-out chain (0: B, one pass of L layers, as backprop)")
    validation: bool = common.option(False, "evaluate on 20 % of the training split held out (to choose "
                                     "settings), not on the test split; the metric is then val_acc")
    ablation: bool = common.option(False, "train DiffusionBlocks with each loss weighting × mislabel rate and read "
                                   "each out with every start × grid × calls × readout, on validation data")


PRESETS = {
    "smoke": dict(layers=3, width=32, steps=30, batch_size=32, eval_every=15, ckpt_every=15),
    "cpu": {},
    "paper": dict(dataset="cifar100", layers=12, width=128, heads=4, patch=4, blocks=3, gamma=0.05,
                  batch_size=128, lr=5e-4, min_lr=5e-5, steps=390 * 1000, warmup=0.01, augment="randaug",
                  eval_every=3900, ckpt_every=3900),  # official code: 1000 epochs, 3900 warm-up steps
}


class ViT(nn.Module):
    """Patch embedding → L AdaLN-Zero layers → final layer on the first token (DiT layers, ViT readout).

    As a plain classifier the first token is a learned CLS and the AdaLN condition a learned vector.
    As a DiffusionBlocks block (`label_dim` set) the first token carries the noisy label c_in·z and the
    condition is the σ embedding. Without a stem (`stem=False`, local baseline) it takes tokens.
    """

    def __init__(self, image_size, channels, patch, width, depth, heads, num_classes, label_dim=None, stem=True):
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
        """x: images (N, C, H, W), or tokens (N, T+1, D) without a stem → tokens and the AdaLN condition."""
        if self.patch_embed is None:
            h = x
        else:
            patches = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, T, D)
            first = self.cls.expand(len(x), -1, -1) if z_in is None else self.label_in(z_in)[:, None]
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
    """B ViTs of L/B layers (cfg.blocks, cfg.layers), each denoising the fixed label embedding (in R^width)."""
    blocks = [ViT(image_size, channels, cfg.patch, cfg.width, depth, cfg.heads, num_classes, label_dim=cfg.width)
              for depth in db.split_layers(cfg.layers, cfg.blocks)]
    return db.DiffusionBlocks(blocks, embedding=db.target_embedding(num_classes, cfg.width, seed=cfg.seed),
                              gamma=cfg.gamma, partition=cfg.partition, weighting=cfg.weighting, mislabel=cfg.mislabel)


READOUTS = [(start, grid, k) for start in ("mean", "noise") for grid in ("boundaries", "final") for k in (1, 2, 4)]


def readout_accuracy(model, x, y, start, grid, calls, generator):
    """Accuracy after each call of one read-out chain, for the "last" and the "sum" read-outs (db.predict)."""
    sigmas = db.prediction_sigmas(model.sigmas, calls, grid)
    hits = {"last": torch.zeros(calls), "sum": torch.zeros(calls)}
    with torch.no_grad(), common.autocast(x.device):
        for i in range(0, len(x), 500):
            logits = model.predict(x[i:i + 500], (len(x[i:i + 500]), model.embedding.shape[1]), sigmas, start,
                                   "all", generator, x.device).float()  # (calls, N, K)
            summed = logits.log_softmax(-1).cumsum(0)  # the "sum" read-out after each call
            for name, scores in (("last", logits), ("sum", summed)):
                hits[name] += (scores.argmax(-1) == y[i:i + 500]).sum(1).cpu()
    return {name: (h / len(x)).tolist() for name, h in hits.items()}


def ce_step(m, o, x, y):
    """One cross-entropy step of a classifier (backprop, or a local piece); the loss, detached."""
    with common.autocast(x.device):
        loss = F.cross_entropy(m(None, None, x).float(), y)
    return common.optimize(loss, m, o)


def db_step(m, o, x, y, b, g=None):
    """One DiffusionBlocks iteration of block b (Fig. 3); the loss, detached."""
    with common.autocast(x.device):
        return m.train_step(x, y, o, block=b, generator=g)[1]


def main(cfg):
    if cfg.ablation:
        return ablation(cfg)
    device = common.pick_device(cfg.device)
    common.seed_everything(cfg.seed)
    data = load_images(cfg.dataset, cfg.data_dir, cfg.seed)
    if cfg.validation:
        data = validation_split(data, cfg.seed)
    acc_key = "val_acc" if cfg.validation else "test_acc"
    _, C, H, W = data["x_train"].shape
    if H != W or H % cfg.patch:
        common.fail(f"--patch {cfg.patch} must divide the {H}×{W} images (allowed: divisors of {H})")
    try:
        split = db.split_layers(cfg.layers, cfg.blocks)
    except ValueError as e:
        common.fail(f"--blocks {cfg.blocks} with --layers {cfg.layers}: {e}")
    if cfg.width % cfg.heads:
        common.fail(f"--width {cfg.width} must be divisible by --heads {cfg.heads}")
    try:
        db.prediction_sigmas(db.block_sigmas(cfg.blocks), cfg.calls or cfg.blocks, cfg.grid)
    except ValueError as e:
        common.fail(f"--calls {cfg.calls} with --grid {cfg.grid}: {e}")
    K = data["num_classes"]
    mean = data["x_train"].float().mean((0, 2, 3), keepdim=True)
    std = data["x_train"].float().std((0, 2, 3), keepdim=True)
    normalize = lambda x: ((x.float() - mean.to(x.device)) / std.to(x.device))  # noqa: E731
    x_train, y_train = data["x_train"].to(device), data["y_train"].to(device)
    x_test, y_test = normalize(data["x_test"].to(device)), data["y_test"].to(device)
    flips = cfg.dataset.startswith("cifar")
    if cfg.augment == "randaug":
        import torchvision.transforms.v2 as T  # paper preset only: torchvision's RandAugment
        randaug = T.RandAugment()
    print(f"device {device}, dtype {'bf16 autocast' if device.type == 'cuda' else 'float32'}, "
          f"{cfg.dataset}: {len(x_train)} train / {len(x_test)} {'validation' if cfg.validation else 'test'} "
          f"images {C}×{H}×{W}, {K} classes")

    def get_batch(it, gen):
        idx = torch.randint(len(x_train), (cfg.batch_size,), generator=gen).to(device)
        x, y = x_train[idx], y_train[idx]
        if cfg.augment == "randaug":
            x = torch.stack([randaug(img) for img in x.cpu()]).to(device)
        x = normalize(x)
        if cfg.augment != "none":
            x = random_shift(x, max(1, H // 8))
            if flips:
                x = torch.where(torch.rand(len(x), 1, 1, 1, device=device) < 0.5, x.flip(3), x)
        return x, y

    def new_vit(depth, **kw):
        return ViT(H, C, cfg.patch, cfg.width, depth, cfg.heads, K, **kw).to(device)

    def accuracy(predict):
        with torch.no_grad(), common.autocast(device):
            correct = sum((predict(x_test[i:i + 500]).argmax(-1) == y_test[i:i + 500]).sum().item()
                          for i in range(0, len(x_test), 500))
        return {acc_key: correct / len(x_test)}

    def new_diffusionblocks():
        return diffusion_vit(cfg, H, C, K).to(device)

    def chain_accuracy(model):  # the configured read-out chain (§4): by default one call per block from z_0 = 0
        grid = db.prediction_sigmas(model.sigmas, cfg.calls or cfg.blocks, cfg.grid)
        g = torch.Generator(device).manual_seed(cfg.seed)
        return accuracy(lambda x: model.predict(x, (len(x), cfg.width), grid, cfg.start, cfg.readout, g, device))

    if cfg.assemble:
        return common.assemble(cfg, "train_vit.py", acc_key, new_diffusionblocks(), chain_accuracy, device)

    methods = METHODS if cfg.method == "all" else [cfg.method]
    results = {}
    for method in methods:
        common.seed_everything(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        run_dir = os.path.join(cfg.out, method)
        ckpt = os.path.join(run_dir, "ckpt.pt")
        batch = lambda it: get_batch(it, gen)  # noqa: E731

        if method == "backprop":
            model = new_vit(cfg.layers)
            opt = common.adamw(model, cfg)

            def step(it, xy):
                common.set_lr(opt, common.lr_at(cfg, it / cfg.steps))
                return ce_step(model, opt, *xy)

            x0, y0 = get_batch(0, torch.Generator().manual_seed(cfg.seed))
            memory = common.measure_memory(model, opt, lambda m, o: ce_step(m, o, x0, y0))
            print(f"backprop: {common.count_params(model):,} parameters, {cfg.steps} iterations of {cfg.layers} layers")
            stats = common.train_loop(cfg, step, batch, cfg.steps, {"model": model, "opt": opt, "gen": gen}, ckpt,
                                      lambda: accuracy(lambda x: model(None, None, x)), cfg.eval_every,
                                      cfg.ckpt_every, "backprop", cfg.layers)
            extra = {}

        elif method == "diffusionblocks":
            model = new_diffusionblocks()
            opts = [common.adamw(block, cfg) for block in model.blocks]
            noise_gen = torch.Generator(device).manual_seed(cfg.seed)
            trained = range(cfg.blocks) if cfg.block < 0 else [cfg.block]
            iters = cfg.steps * len(trained)  # compute matching: every block gets N updates

            def step(it, xy):
                b = int(torch.randint(cfg.blocks, (1,), generator=gen)) if cfg.block < 0 else cfg.block
                common.set_lr(opts[b], common.lr_at(cfg, it / iters))
                return db_step(model, opts, *xy, b, noise_gen)

            x0, y0 = get_batch(0, torch.Generator().manual_seed(cfg.seed))
            memory, per_block = common.measure_blocks(model, opts, lambda m, o, b: db_step(m, o, x0, y0, b), trained)
            print(common.describe_blocks(cfg, model, split, iters))
            if cfg.block >= 0:
                ckpt = os.path.join(run_dir, f"block{cfg.block}.ckpt.pt")
            evaluate_fn = (lambda: {}) if cfg.block >= 0 else (lambda: chain_accuracy(model))
            stats = common.train_loop(cfg, step, batch, iters, {"model": model, "opts": common.Many(opts), "gen": gen,
                                                                "noise": noise_gen}, ckpt, evaluate_fn, cfg.eval_every,
                                      cfg.ckpt_every, f"diffusionblocks{'' if cfg.block < 0 else cfg.block}",
                                      cfg.layers / cfg.blocks)
            if cfg.block >= 0:  # this block alone, in its own process: save it, evaluate later with --assemble
                common.save_block(cfg, model, memory, stats, iters)
                return None
            # every read-out of the same blocks: accuracy after each call, for B, 2B and 4B calls
            readouts = {f"{start}/{grid}/{k * cfg.blocks}": readout_accuracy(
                model, x_test, y_test, start, grid, k * cfg.blocks, torch.Generator(device).manual_seed(cfg.seed))
                for start, grid, k in READOUTS}
            extra = {"blocks": cfg.blocks, "gamma": cfg.gamma, "partition": cfg.partition, "weighting": cfg.weighting,
                     "mislabel": cfg.mislabel, "readout": f"{cfg.start}/{cfg.grid}/{cfg.calls or cfg.blocks}/{cfg.readout}",
                     "layers_per_block": split, "train_memory_per_block": per_block,
                     f"{acc_key}_readouts": readouts}

        else:  # local: block b trained greedily on the frozen features of blocks < b, its own head, no noise
            pieces = [new_vit(d, stem=(b == 0)) for b, d in enumerate(split)]
            opts = [common.adamw(p, cfg) for p in pieces]
            iters = cfg.steps * cfg.blocks

            def frozen_features(x, b):
                with torch.no_grad(), common.autocast(device):
                    h = x
                    for piece in pieces[:b]:
                        h = piece.features(None, None, h)[0]
                return h

            current = [0]  # the piece in training: the learning curve reads its head

            def step(it, xy):
                b, x = it // cfg.steps, xy[0]
                current[0] = b
                common.set_lr(opts[b], common.lr_at(cfg, (it % cfg.steps) / cfg.steps))
                return ce_step(pieces[b], opts[b], frozen_features(x, b), xy[1])

            def predict(x):
                return pieces[current[0]](None, None, frozen_features(x, current[0]))

            x0, y0 = get_batch(0, torch.Generator().manual_seed(cfg.seed))
            per_block = [common.measure_memory(pieces[b], opts[b], lambda m, o, b=b: ce_step(
                m, o, frozen_features(x0, b), y0)) for b in range(cfg.blocks)]
            memory = max(per_block, key=lambda m: m["total"])
            print(f"local: {cfg.blocks} pieces of {split} layers trained one after another, {cfg.steps} iterations each")
            model = nn.ModuleList(pieces)
            stats = common.train_loop(cfg, step, batch, iters, {"model": model, "opts": common.Many(opts), "gen": gen},
                                      ckpt, lambda: accuracy(predict), cfg.eval_every, cfg.ckpt_every,
                                      "local", cfg.layers / cfg.blocks)
            extra = {"blocks": cfg.blocks, "train_memory_per_block": per_block,  # the frozen pieces also sit in memory:
                     "frozen_parameter_bytes": sum(p.nbytes for piece in pieces[:-1] for p in piece.parameters())}

        results[method] = common.method_result(stats, memory, extra)
        metrics = common.write_metrics(cfg, "train_vit.py", method, results[method], device)

    common.print_table({k: v for k, v in metrics["methods"].items()}, acc_key)
    common.plot_comparison(metrics["methods"], acc_key, cfg.out)
    if "diffusionblocks" in metrics["methods"]:
        plot_readouts(metrics["methods"], acc_key, cfg.out)
    return metrics


def plot_readouts(methods, acc_key, out):
    """--out/readouts.png: DiffusionBlocks' accuracy after each call of every read-out chain of 4B calls."""
    plt = common.pyplot()
    readouts, B = methods["diffusionblocks"][f"{acc_key}_readouts"], methods["diffusionblocks"]["blocks"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, start in zip(axes, ("mean", "noise")):
        for grid, color in (("boundaries", "C0"), ("final", "C1")):
            for readout, style in (("last", "-"), ("sum", "--")):
                accs = readouts[f"{start}/{grid}/{4 * B}"][readout]
                ax.plot(range(1, len(accs) + 1), accs, style, color=color, marker=".", label=f"{grid}, {readout}")
        if "backprop" in methods:
            ax.axhline(methods["backprop"][acc_key], color="gray", ls=":", label="backprop")
        ax.set_title(f"chain from {'z_0 = 0 (prediction)' if start == 'mean' else 'σ_max·ε (a draw)'}")
        ax.set_xlabel(f"network calls ({B} = one pass of L layers)")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel(acc_key)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "readouts.png"), dpi=120)
    plt.close(fig)


ABLATION = [("edm", 0.0), ("uniform", 0.0), ("uniform", 0.2)]  # (weighting, mislabel) of the training


def ablation(cfg):
    """Validation accuracy of every training variant × read-out (start × grid × calls × readout), after each call."""
    runs = {"backprop": main(dataclasses.replace(cfg, ablation=False, validation=True, method="backprop",
                                                 out=os.path.join(cfg.out, "backprop")))["methods"]["backprop"]}
    rows = [f"{'training':<18} {'read-out':<28} {'val_acc after each call'}"]
    for weighting, mislabel in ABLATION:
        name = f"{weighting}-mislabel{mislabel}"
        r = main(dataclasses.replace(cfg, ablation=False, validation=True, method="diffusionblocks", weighting=weighting,
                                     mislabel=mislabel, out=os.path.join(cfg.out, name)))["methods"]["diffusionblocks"]
        runs[name] = {key: r[key] for key in ("weighting", "mislabel", "readout", "val_acc", "train_memory_bytes",
                                              "seconds_per_iter", "iters", "train_seconds")}
        for chain, accs in r["val_acc_readouts"].items():
            for readout, per_call in accs.items():
                runs[name].update({f"{chain}/{readout}@{k + 1}": a for k, a in enumerate(per_call)})
                rows.append(f"{name:<18} {chain + '/' + readout:<28} " + " ".join(f"{a:.3f}" for a in per_call))
    table = "\n".join(rows)
    print(f"backprop val_acc {runs['backprop']['val_acc']:.3f}\n{table}")
    with open(os.path.join(cfg.out, "ablation.txt"), "w") as f:
        f.write(f"backprop val_acc {runs['backprop']['val_acc']:.4f}\n{table}\n")
    result = {"script": "train_vit.py", "dataset": cfg.dataset, "preset": cfg.preset, "seed": cfg.seed,
              "torch": torch.__version__, "config": dataclasses.asdict(cfg), "methods": runs}  # as metrics.json
    with open(os.path.join(cfg.out, "ablation.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    config = common.parse_config(Config, PRESETS, METHODS)
    if config.ablation and (config.method != "all" or config.block >= 0 or config.assemble or config.validation):
        common.fail("--ablation trains its own list of models on validation data; "
                    "drop --method, --block, --assemble and --validation")
    common.run_seeds(main, config, "val_acc" if config.validation or config.ablation else "test_acc")
