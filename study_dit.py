"""The DiT ablations of §4.2 (results/README.md): the partition of the σ range (uniform vs equiprob,
γ = 0, B = 3) and the number of blocks (B ∈ {1, 2, 3, 4, 6}, γ = 0, equiprob), beside the paper's
CIFAR-10 FIDs.

  python study_dit.py --seeds 0,1,2 --out runs/dit_ablation   # every flag of train_dit.py applies
  python study_dit.py --preset smoke --layers 6 --out /tmp/dit_ablation

It trains DiffusionBlocks once per row of ABLATION through train_dit.py (--out/ablation/<run>/) and
writes ablation.txt, ablation.json (laid out like metrics.json, so --seeds summarises it) and
ablation.png (fid against B and per partition, ours and the paper's each divided by its value at B =
1). Nothing here is needed to use the method.
"""

import dataclasses
import os

import numpy as np

import common
import report
import train_dit
from fid import FID_FEATURES

ABLATION = [
    (1, "equiprob"),
    (2, "equiprob"),
    (3, "equiprob"),
    (4, "equiprob"),
    (6, "equiprob"),
    (3, "uniform"),
]  # (B, partition), all at γ = 0
PAPER_FID = {
    "blocks": {1: 39.83, 2: 35.47, 3: 38.03, 4: 45.43, 6: 53.32},  # CIFAR-10, γ = 0
    "partition": {"uniform": 43.53, "equiprob": 38.03},
}  # B = 3, γ = 0


def check_config(cfg):
    """train_dit.py's checks, and the ablation's: its own list of models, up to 6 blocks of the
    layers."""
    train_dit.check_config(cfg)
    if cfg.method != "all" or cfg.block >= 0 or cfg.assemble:
        common.fail(
            "study_dit.py trains its own list of models; drop --method, --block and --assemble"
        )
    if cfg.layers < max(b for b, _ in ABLATION):
        common.fail(
            f"study_dit.py splits the layers into up to 6 blocks; --layers must be >= 6, got "
            f"{cfg.layers}"
        )


def relative_fid(fid, base):
    """(mean, std) of a run's fid ÷ base; fid is one run's value or a --seeds summary's {"mean",
    "std", ...}."""
    return (fid["mean"] / base, fid["std"] / base) if isinstance(fid, dict) else (fid / base, 0.0)


def plot_ablation(runs, out, features):
    """--out/ablation.png: fid against B, and uniform vs equiprob; ours and the paper's FID each
    divided by its own value at B = 1, on one axis per panel (error bars: std over seeds when `runs`
    is a --seeds summary)."""
    plt = report.pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.8))
    base = report.mean_of(runs["B1-equiprob"]["fid"])
    sweep = [b for b, p in ABLATION if p == "equiprob"]
    ours = np.array([relative_fid(runs[f"B{b}-equiprob"]["fid"], base) for b in sweep])  # (runs, 2)
    ax1.errorbar(
        sweep,
        ours[:, 0],
        ours[:, 1],
        marker="o",
        capsize=3,
        label=f"ours: digits, fid of {features} features, ÷ its B = 1 value {base:.3g}",
    )
    ax1.plot(
        sweep,
        [PAPER_FID["blocks"][b] / PAPER_FID["blocks"][1] for b in sweep],
        marker="s",
        linestyle="--",
        color="tab:red",
        label=f"paper: CIFAR-10, Inception FID, ÷ its B = 1 value {PAPER_FID['blocks'][1]}",
    )
    ax1.set_xticks(sweep)
    ax1.set_xlabel("blocks B (γ = 0, equiprob)")
    ax1.set_ylabel("FID ÷ FID at B = 1 (lower is better)")
    x = np.arange(2)
    ours = np.array([relative_fid(runs[f"B3-{p}"]["fid"], base) for p in ("uniform", "equiprob")])
    ax2.bar(x - 0.2, ours[:, 0], 0.4, yerr=ours[:, 1], capsize=3)
    paper = [PAPER_FID["partition"][p] / PAPER_FID["blocks"][1] for p in ("uniform", "equiprob")]
    ax2.bar(x + 0.2, paper, 0.4, color="tab:red", alpha=0.6)
    ax2.set_xticks(x, ["uniform", "equiprob"])
    ax2.set_xlabel("partition (B = 3, γ = 0)")
    ax2.set_ylabel("FID ÷ FID at B = 1")
    for ax in (ax1, ax2):
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.grid(alpha=0.3)
    # below the axes
    fig.legend(*ax1.get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(os.path.join(out, "ablation.png"), dpi=120)
    plt.close(fig)


def ablation(cfg):
    """Ablations of §4.2: partition (uniform vs equiprob, γ=0, B=3) and block count (B ∈ 1,2,3,4,6,
    γ=0)."""
    device = common.start(cfg)
    data = train_dit.load_data(cfg, device)
    runs, run_out = {}, os.path.join(cfg.out, "ablation")
    for blocks, partition in ABLATION:  # each trained and evaluated as train_dit.main does
        name = f"B{blocks}-{partition}"
        run_cfg = dataclasses.replace(
            cfg, blocks=blocks, gamma=0.0, partition=partition, out=run_out
        )
        runs[name] = train_dit.run_method(
            run_cfg, data, "diffusionblocks", os.path.join(run_out, name), desc=name
        )
    rows = [
        f"{'run':<14} {'B':>2} {'partition':>9} {'fid':>9} {'paper FID':>9} "
        f"{'test_denoise_loss':>17} "
        f"{'layer evals':>11} {'ms/sample':>9}"
    ]
    for name, r in runs.items():
        paper = (
            PAPER_FID["partition"]["uniform"]
            if r["partition"] == "uniform"
            else PAPER_FID["blocks"][r["blocks"]]
        )
        rows.append(
            f"{name:<14} {r['blocks']:>2} {r['partition']:>9} {r['fid']:>9.4g} {paper:>9.2f} "
            f"{r['test_denoise_loss']:>17.4f} {r['layer_evals_per_sample']:>11} "
            f"{r['sample_seconds_per_image'] * 1e3:>9.3g}"
        )
    table = "\n".join(rows)
    print(f"fid features: {FID_FEATURES[cfg.fid]}; paper FID: CIFAR-10, Inception\n" + table)
    result = common.write_study(
        cfg, "study_dit.py", runs, "ablation", table, paper_fid_cifar10=PAPER_FID
    )
    plot_ablation(runs, cfg.out, FID_FEATURES[cfg.fid])
    report.plot_comparison(runs, "test_denoise_loss", run_out)
    report.plot_samples(runs, run_out)
    return result


if __name__ == "__main__":
    config = common.parse_config(
        train_dit.Config, train_dit.PRESETS, train_dit.METHODS, check=check_config
    )
    summary = common.run_seeds(ablation, config, "fid")
    if config.seeds:  # the ablation plot of the means over seeds
        plot_ablation(summary["methods"], config.out, FID_FEATURES[config.fid])
