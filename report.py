"""What the train_*.py scripts print and plot once training is done, all read from the methods'
metrics.json entries: the side-by-side table, learning curves and memory bars, and each task's own
lines and figures. Nothing here trains or evaluates: a reader of the method may skip this file.
"""

import math
import os

import numpy as np
import torch
import torch.nn.functional as F


def mib(n):
    return n / 2**20


def mean_of(v):
    return v["mean"] if isinstance(v, dict) else v  # a mean ± std over seeds, or one run's value


def _fmt(v):
    if isinstance(v, dict):  # mean ± std over seeds
        return f"{v['mean']:.4g}±{v['std']:.2g}"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def print_table(methods, headline, baseline="backprop"):
    """Side-by-side comparison: headline metric, memory per step, seconds per iteration, total time
    (ratios to `baseline`)."""
    base = methods.get(baseline, {})
    rows = [f"{'method':<16} {headline:>14} {'train MiB/step':>15} {'mem ratio':>9} {'s/iter':>9} "
            f"{'time ratio':>10} {'iters':>7} {'train s':>8}"]
    for name, r in methods.items():
        memory = mean_of(r["train_memory_bytes"])
        mem_ratio = mean_of(base.get("train_memory_bytes", math.nan)) / memory
        seconds = mean_of(r["seconds_per_iter"])
        time_ratio = seconds / mean_of(base.get("seconds_per_iter", math.nan))
        mem_ratio = f"{mem_ratio:.2f}x" if base else "-"  # ratios need a baseline run beside
        time_ratio = f"{time_ratio:.3f}" if base else "-"
        rows.append(f"{name:<16} {_fmt(r[headline]):>14} {_fmt(mib(memory)):>15} "
                    f"{mem_ratio:>9} {_fmt(r['seconds_per_iter']):>9} {time_ratio:>10} "
                    f"{_fmt(r['iters']):>7} {_fmt(r['train_seconds']):>8}")
    print("\n".join(rows))


def pyplot():
    """matplotlib's pyplot on the Agg backend: files only, no screen needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_comparison(methods, headline, out, x_key="layer_updates",
                    x_label="layer updates (iterations × layers trained)"):
    """Learning curves of every method on one axis, and stacked bars of the training memory per
    step."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, r in methods.items():
        curve = r.get("curve", [])  # an assembled model has no learning curve
        ax1.plot([c[x_key] for c in curve], [c[headline] for c in curve], marker=".", label=name)
    ax1.set_xlabel(x_label)
    ax1.set_ylabel(headline)
    ax1.legend()
    ax1.grid(alpha=0.3)
    bottom = np.zeros(len(methods))
    for part in ("parameters", "gradients", "optimizer_state", "activations"):
        heights = np.array([mib(r["train_memory"][part]) for r in methods.values()])
        ax2.bar(list(methods), heights, bottom=bottom, label=part)
        bottom += heights
    ax2.set_ylabel("training memory per step (MiB)")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "comparison.png"), dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# train_dit.py
# ----------------------------------------------------------------------------------------------


def dit(methods, out, features):
    """The table on fid, each method's denoising loss, sampling cost and EMA, and the plots."""
    print(f"fid features: {features} (comparable only within this project)")
    print_table(methods, "fid")
    for name, r in methods.items():
        ema = (f"; EMA σ_rel {r['ema_std']}: fid {r['fid_ema']:.4g}, test_denoise_loss "
               f"{r['test_denoise_loss_ema']:.4f}") if "fid_ema" in r else ""
        print(f"{name}: test_denoise_loss {r['test_denoise_loss']:.4f}, sampling "
              f"{r['layer_evals_per_sample']} layer evaluations and "
              f"{r['sample_seconds_per_image'] * 1e3:.3g} ms per image{ema}")
    plot_comparison(methods, "test_denoise_loss", out)
    plot_samples(methods, out)


def plot_samples(methods, out):
    """--out/samples.png: each method's grid (--out/<method>/samples.pt, a row per class) side by
    side."""
    plt = pyplot()
    paths = {name: os.path.join(out, name, "samples.pt") for name in methods}
    grids = {name: torch.load(path) for name, path in paths.items() if os.path.exists(path)}
    fig, axes = plt.subplots(1, len(grids), figsize=(4 * len(grids), 4.5), squeeze=False)
    for ax, (name, grid) in zip(axes[0], grids.items()):
        grid = F.pad(grid, (1, 1, 1, 1), value=0.0)  # a grey frame around every image
        K, n, C, H, W = grid.shape  # the image: (K·H, n·W, C) in [0, 1]
        image = (grid.permute(0, 3, 1, 4, 2).reshape(K * H, n * W, C) + 1) / 2
        ax.imshow(image.squeeze(-1) if C == 1 else image, cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{name}: fid {methods[name]['fid']:.3g}")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "samples.png"), dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# train_lm.py
# ----------------------------------------------------------------------------------------------


def lm(methods, ar, split="test"):
    """The metrics beside the table's headline, the reference models' bpc (and accuracies), and two
    samples per method."""
    first = next(iter(methods.values()))
    print(f"reference, bits per character of the {split} text: training-split unigram "
          f"{first['unigram_bpc']:.3f}, n-gram judge {first['judge_bpc']:.3f}")
    if ar:
        print(f"reference, next-character accuracy of the training split's argmax bigram "
              f"{first[split + '_bigram_acc']:.4f}, trigram {first[split + '_trigram_acc']:.4f}")
    for name, r in methods.items():
        if ar:
            print(f"{name}: {split}_next_token_acc {r[split + '_next_token_acc']:.4f}, {split}_ce "
                  f"{r[split + '_ce']:.4f} nats, {split}_sample_acc "
                  f"{r[split + '_sample_acc']:.4f}; "
                  f"judge on the real continuations: {r['judge_ppl_held_out']:.3f}")
            for decoder, key in (("prediction", ""), ("draw", "_t1")):
                print(f"  {decoder}: gen_ppl {r['gen_ppl' + key]:.3f}, "
                      f"distinct_4 {r['distinct_4' + key]:.3f}")
        else:
            print(f"{name}: {split}_bpc {r[split + '_bpc']:.4f} = "
                  f"{' + '.join(f'{v:.4f}' for v in r[split + '_bpc_per_block'])} "
                  f"(t slices, most masked first), gen_ppl of samples {r['gen_ppl']:.3f} "
                  f"(judge on {split} text: {r['judge_ppl_held_out']:.3f})")
        for text in r["samples"][:2]:
            print(f"  sample: {text!r}")


def plot_bpc_per_block(methods, out, split="test"):
    """--out/bpc_per_block.png: each method's test bpc split by the t slice (block) that scored
    it."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.8 / len(methods)
    for i, (name, r) in enumerate(methods.items()):
        parts = r[f"{split}_bpc_per_block"]
        ax.bar(np.arange(len(parts)) + i * width, parts, width,
               label=f"{name} ({r[split + '_bpc']:.3f} bpc)")
    ax.set_xticks(np.arange(len(parts)) + 0.4 - width / 2,
                  [f"block {b}" for b in range(len(parts))])
    ax.set_xlabel("t slice (block 0 = most masked)")
    ax.set_ylabel(f"contribution to {split} bits per character")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "bpc_per_block.png"), dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# train_huginn.py
# ----------------------------------------------------------------------------------------------


def huginn(methods, split="test"):
    """Quality, generation, and training compute of each method; the compute ratio when both ran."""
    first = next(iter(methods.values()))
    print(f"reference, next-character accuracy on the {split} text: the training split's argmax "
          f"bigram {first[split + '_bigram_acc']:.4f}, trigram {first[split + '_trigram_acc']:.4f}")
    for name, r in methods.items():
        print(f"{name}: {split}_next_token_acc {r[split + '_next_token_acc']:.4f}, {split}_ce "
              f"{r[split + '_ce']:.4f} nats, {split}_sample_acc {r[split + '_sample_acc']:.4f} at "
              f"K = {r['test_iters']}, gen_ppl {r['gen_ppl']:.3f} "
              f"(T = 1 draws: {r['gen_ppl_t1']:.3f}; judge on the real continuations: "
              f"{r['judge_ppl_held_out']:.3f}); {r['train_layer_evals_per_step']:.2f} layer "
              f"evaluations per step × {r['iters']} steps = {r['train_layer_evals']:,}")
        for decoder, key in (("prediction", ""), ("draw", "_t1")):
            print(f"  {decoder}: gen_ppl {r['gen_ppl' + key]:.3f}, "
                  f"distinct_4 {r['distinct_4' + key]:.3f}")
        for text in r["samples"][:2]:
            print(f"  sample: {text!r}")
    if set(methods) == {"bptt", "diffusionblocks"}:
        bp, dbk = methods["bptt"], methods["diffusionblocks"]
        schedule = ("equal data passes" if dbk["iters"] == bp["iters"]
                    else f"{dbk['iters'] / bp['iters']:g}× longer")
        print(f"training compute, bptt / diffusionblocks ({schedule}): layer evaluations "
              f"{bp['train_layer_evals'] / dbk['train_layer_evals']:.2f}×, measured time "
              f"{bp['train_seconds'] / dbk['train_seconds']:.2f}×")


def plot_quality_vs_iters(methods, mean_iters, out, split="test"):
    """--out/quality_vs_iters.png: against test-time K, both methods, like with like: the accuracy
    of predictions (argmax; DiffusionBlocks from z_0 = 0) and of temperature-1 draws
    (DiffusionBlocks from noise); cross-entropy."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, keys in zip(axes, ((f"{split}_next_token_acc", f"{split}_sample_acc"),
                               (f"{split}_ce",))):
        for name, r in methods.items():
            q = r["quality_vs_iters"]
            for key, style in zip(keys, ("-", "--")):
                kind = "draws" if key.endswith("sample_acc") else "predictions"
                label = f"{name}, {kind}" if len(keys) > 1 else name
                ax.plot([p["iters"] for p in q], [p[key] for p in q], style, marker="o",
                        label=label)
        ax.axvline(mean_iters, color="gray", ls=":", label=f"training mean K = {mean_iters}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("test-time iterations K (core passes / Euler steps)")
        ax.set_ylabel(f"{split} next-character accuracy" if len(keys) > 1
                      else f"{split} cross-entropy (nats)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "quality_vs_iters.png"), dpi=120)
    plt.close(fig)
