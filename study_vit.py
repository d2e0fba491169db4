"""The ViT studies (results/README.md): which training variant and which read-out chain of
DiffusionBlocks to use, chosen on validation data (20 % of the training split), never on the test
split; and the local baseline (--method local) beside train_vit.py's two methods.

  python study_vit.py --seeds 0,1,2 --out runs/vit_study   # every flag of train_vit.py applies
  python study_vit.py --method local --seeds 0,1,2 --out runs/vit_local     # the local baseline

It trains backprop and DiffusionBlocks with each loss weighting × wrong-hint rate (ABLATION) through
train_vit.py, then reads each trained model out with every start × grid × calls (READOUTS) and
reports the validation accuracy after each call for the "last" and "sum" read-outs (ablation.json,
ablation.txt, readouts.png per training variant). The local baseline trains the same B pieces as
DiffusionBlocks' blocks greedily, piece after piece, each with its own head on the frozen features
of the pieces before it, by train_vit.py's loop and on its batches. Nothing here is needed to use
the method.
"""

import dataclasses
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

import common
import diffusionblocks as db
import report
import train_vit

# (weighting, mislabel) of the training
ABLATION = [("edm", 0.0), ("uniform", 0.0), ("uniform", 0.2)]
READOUTS = [
    (start, grid, k)
    for start in ("mean", "noise")
    for grid in ("boundaries", "final")
    for k in (1, 2, 4)
]


class Piece(nn.Module):
    """A later piece of the local baseline: train_vit.ViT without its stem (its parameters but the
    patch embedding, position and CLS token, created in ViT's order), on tokens (N, T+1, D)."""

    def __init__(self, width, depth, heads, num_classes):
        super().__init__()
        self.cond = nn.Parameter(torch.zeros(1, width))
        self.layers = nn.ModuleList(db.AdaLNZeroLayer(width, heads) for _ in range(depth))
        self.final = db.FinalLayer(width, num_classes)

    def features(self, z_in, c_noise, h):
        """Tokens h (N, T+1, D) → tokens, condition (N, D)."""
        c = self.cond.expand(len(h), -1)
        for layer in self.layers:
            h = layer(h, c)
        return h, c

    def forward(self, z_in, c_noise, h):
        h, c = self.features(z_in, c_noise, h)
        return self.final(h[:, :1], c)[:, 0]  # (N, classes)


class LocalViT(nn.ModuleList):
    """The local baseline: a train_vit.ViT of L/B layers, then B − 1 Pieces, piece b trained with
    its own head on the frozen features of pieces < b; it classifies with the piece trained last."""

    def __init__(self, pieces):
        super().__init__(pieces)
        self.current = 0  # the piece in training, set by local_step: the learning curve reads it

    @property
    def blocks(self):
        """The pieces, trained one after another (common.blocks_of)."""
        return list(self)

    def frozen_features(self, x, b):
        """Images x → tokens (N, T+1, D) of pieces < b, without gradients (x itself for b = 0)."""
        with torch.no_grad(), common.autocast(x.device):
            for piece in list(self)[:b]:
                x = piece.features(None, None, x)[0]
        return x

    def forward(self, z_in, c_noise, x):
        return self[self.current](z_in, c_noise, self.frozen_features(x, self.current))


def local_step(model, optimizers, batch, b, generator=None):
    """One iteration of the local baseline: piece b's cross-entropy on frozen features → (loss,
    gradient norm)."""
    x, y = batch
    model.current = b
    with common.autocast(x.device):
        loss = F.cross_entropy(model(None, None, x).float(), y)
    optimizers[b].zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model[b].parameters(), 1.0)  # before clipping
    optimizers[b].step()
    return loss.detach(), grad_norm


def local(cfg):
    """Train and test the local baseline by train_vit.py's loop → metrics.json ("local")."""
    device = common.start(cfg)
    data = train_vit.load_data(cfg, device)
    _, C, H, _ = data.x_eval.shape
    for method in common.methods_to_run(cfg, ["local"]):
        common.seed_everything(cfg.seed)
        first, *later = db.split_layers(cfg.layers, cfg.blocks)
        K = data.num_classes
        model = LocalViT([train_vit.ViT(H, C, cfg.patch, cfg.width, first, cfg.heads, K),
                          *(Piece(cfg.width, d, cfg.heads, K) for d in later)]).to(device)
        run_dir = os.path.join(cfg.out, method)
        stats, memory, per_block = train_vit.train(cfg, data, method, model, run_dir, local_step)
        frozen = sum(p.nbytes for piece in model[:-1] for p in piece.parameters())  # also in memory
        extra = {"blocks": cfg.blocks, "train_memory_per_block": per_block,
                 "frozen_parameter_bytes": frozen}
        result = common.method_result(stats, memory, extra)
        common.write_metrics(cfg, "study_vit.py", method, result, device)
    metrics = common.read_metrics(cfg.out)
    report.print_table(metrics["methods"], data.metric)
    return metrics


def readout_accuracy(model, x, y, start, grid, calls, generator):
    """Accuracy after each call of one read-out chain, for the "last" and the "sum" read-outs
    (db.predict)."""
    sigmas = db.prediction_sigmas(model.sigmas, calls, grid)
    hits = {"last": torch.zeros(calls), "sum": torch.zeros(calls)}
    with torch.no_grad(), common.autocast(x.device):
        for i in range(0, len(x), 500):
            logits = model.predict(
                x[i : i + 500],
                (len(x[i : i + 500]), model.embedding.shape[1]),
                sigmas,
                start,
                "all",
                generator,
                x.device,
            ).float()  # (calls, N, K)
            summed = logits.log_softmax(-1).cumsum(0)  # the "sum" read-out after each call
            for name, scores in (("last", logits), ("sum", summed)):
                hits[name] += (scores.argmax(-1) == y[i : i + 500]).sum(1).cpu()
    return {name: (h / len(x)).tolist() for name, h in hits.items()}


def readouts(cfg, run_dir):
    """{start/grid/calls: accuracy after each call} of the DiffusionBlocks model saved in
    run_dir."""
    device = common.pick_device(cfg.device)
    data = train_vit.load_data(cfg, device)
    _, C, H, _ = data.x_eval.shape
    model = train_vit.build_model(cfg, "diffusionblocks", H, C, data.num_classes).to(device)
    saved = torch.load(
        os.path.join(run_dir, "diffusionblocks", "ckpt.pt"), map_location=device, weights_only=False
    )
    model.load_state_dict(saved["state"]["model"])
    return {
        f"{start}/{grid}/{k * cfg.blocks}": readout_accuracy(
            model,
            data.x_eval,
            data.y_eval,
            start,
            grid,
            k * cfg.blocks,
            torch.Generator(device).manual_seed(cfg.seed),
        )
        for start, grid, k in READOUTS
    }


def plot_readouts(accs, backprop, B, path):
    """Accuracy after each call of every read-out chain of 4B calls, beside backprop's."""
    plt = report.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, start in zip(axes, ("mean", "noise")):
        for grid, color in (("boundaries", "C0"), ("final", "C1")):
            for readout, style in (("last", "-"), ("sum", "--")):
                per_call = accs[f"{start}/{grid}/{4 * B}"][readout]
                ax.plot(
                    range(1, len(per_call) + 1),
                    per_call,
                    style,
                    color=color,
                    marker=".",
                    label=f"{grid}, {readout}",
                )
        ax.axhline(backprop, color="gray", ls=":", label="backprop")
        ax.set_title(
            f"chain from {'z_0 = 0 (prediction)' if start == 'mean' else 'σ_max·ε (a draw)'}"
        )
        ax.set_xlabel(f"network calls ({B} = one pass of L layers)")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("val_acc")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def ablation(cfg):
    """Validation accuracy of every training variant × read-out (start × grid × calls × readout),
    per call."""
    cfg = dataclasses.replace(cfg, validation=True)
    base = train_vit.main(
        dataclasses.replace(cfg, method="backprop", out=os.path.join(cfg.out, "backprop"))
    )
    runs = {"backprop": base["methods"]["backprop"]}
    rows = [f"{'training':<18} {'read-out':<28} {'val_acc after each call'}"]
    for weighting, mislabel in ABLATION:
        name = f"{weighting}-mislabel{mislabel}"
        variant = dataclasses.replace(
            cfg,
            method="diffusionblocks",
            weighting=weighting,
            mislabel=mislabel,
            out=os.path.join(cfg.out, name),
        )
        r = train_vit.main(variant)["methods"]["diffusionblocks"]
        accs = readouts(variant, variant.out)
        plot_readouts(
            accs, runs["backprop"]["val_acc"], cfg.blocks, os.path.join(variant.out, "readouts.png")
        )
        runs[name] = {
            key: r[key]
            for key in (
                "weighting",
                "mislabel",
                "readout",
                "val_acc",
                "train_memory_bytes",
                "seconds_per_iter",
                "iters",
                "train_seconds",
            )
        }
        for chain, per_readout in accs.items():
            for readout, per_call in per_readout.items():
                runs[name].update({f"{chain}/{readout}@{k + 1}": a for k, a in enumerate(per_call)})
                rows.append(
                    f"{name:<18} {chain + '/' + readout:<28} "
                    + " ".join(f"{a:.3f}" for a in per_call)
                )
    table = "\n".join(rows)
    print(f"backprop val_acc {runs['backprop']['val_acc']:.3f}\n{table}")
    table = f"backprop val_acc {runs['backprop']['val_acc']:.4f}\n{table}"
    result = common.write_study(cfg, "study_vit.py", runs, "ablation", table)
    return result


if __name__ == "__main__":
    config = common.parse_config(train_vit.Config, train_vit.PRESETS, ["local"])
    if config.method == "local":
        common.run_seeds(local, config, "val_acc" if config.validation else "test_acc")
    elif config.resume:
        common.fail("study_vit.py's ablation trains its own list of models on validation data; "
                    "drop --resume")
    else:
        common.run_seeds(ablation, config, "val_acc")
