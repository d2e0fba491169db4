"""The autoregressive block's trade-off (results/README.md, "Layers per block"): next-character
accuracy against training memory for the one-stream block and the paper's two-stream one, at B = 2,
4, 8 blocks of the `cpu` preset's 8 layers (4, 2, 1 layers per block), on the test split, each
against backprop on the same seed.

  python study_lm.py --out runs/ar_blocks     # 3 seeds × 6 runs of train_lm.py, 2.5–4 min each *
  python study_lm.py --out runs/final/lm_ar_tradeoff --blocks 2,4   # how results/lm_ar_cpu_blocks
                                                                    # was made (B = 8 not run)

* one thread beside another run, 2-core CPU. The read-outs need each run's checkpoint: on a folder
of metrics.json alone (results/lm_ar_cpu_blocks) the table has none.

Each run is `train_lm.py --model ar --seed S --stream STREAM --blocks B --method diffusionblocks`
into --out/STREAM_BB/seedS; the preset's own (one stream, B = 4) trains backprop too. A run whose
metrics.json is there is not run again. tradeoff.json and tradeoff.png: per stream and B, the
accuracy gap to backprop and backprop's training memory over the block's, mean ± std over the seeds,
the test accuracy of every read-out of the chain from z_0 = 0 (GRIDS × READOUTS, from each run's
final checkpoint; train_lm.py reads out --grid and --readout only), and block 0 alone at σ_max
(accuracy and cross-entropy of one call on noise: what the rest of the chain adds).
"""

import argparse
import dataclasses
import os
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

import common
import diffusionblocks as db
import report
import train_lm

STREAMS = ("single", "two")
PRESET = ("single", 4)  # the run that also trains backprop
GRIDS, READOUTS = ("boundaries", "final"), ("last", "sum")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, help="where the runs, tradeoff.json and its plot go")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--blocks", default="2,4,8", help="comma-separated B (each divides 8 layers)")
    args = p.parse_args(argv)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
        args.blocks = [int(b) for b in args.blocks.split(",")]
    except ValueError:
        common.fail(
            f"--seeds and --blocks take integers, comma-separated; got {args.seeds!r}, "
            f"{args.blocks!r}"
        )
    if 4 not in args.blocks or any(b < 1 or 8 % b for b in args.blocks):
        common.fail(
            f"--blocks must divide the preset's 8 layers and include its 4, got {args.blocks}"
        )
    return args


def run(out, stream, blocks, seed):
    """One train_lm.py run (a subprocess: only its command line is relied on) → its metrics."""
    folder = os.path.join(out, f"{stream}_B{blocks}", f"seed{seed}")
    path = os.path.join(folder, "metrics.json")
    if not os.path.exists(path):
        command = [
            sys.executable,
            "train_lm.py",
            "--model",
            "ar",
            "--seed",
            str(seed),
            "--stream",
            stream,
            "--blocks",
            str(blocks),
            "--out",
            folder,
        ]
        if (stream, blocks) != PRESET:
            command += ["--method", "diffusionblocks"]
        if subprocess.run(command, cwd=os.path.dirname(os.path.abspath(__file__))).returncode:
            common.fail(f"{' '.join(command[1:])} failed", status=1)
    return common.read_json(path)["methods"]


@torch.no_grad()
def chain_readouts(folder):
    """{grid/readout: test next-character accuracy} of the DiffusionBlocks model in folder (its
    ckpt.pt), each grid's B calls from z_0 = 0 read out both ways (deterministic), and block 0
    alone on z = σ_max·ε (block0/acc, block0/ce in nats; ε seeded by the run's seed); {} without
    a checkpoint (results/ keeps metrics only)."""
    path = os.path.join(folder, "diffusionblocks", "ckpt.pt")
    if not os.path.exists(path):
        return {}
    fields = {f.name for f in dataclasses.fields(train_lm.Config)}
    saved = common.read_json(os.path.join(folder, "metrics.json"))["config"]
    cfg = train_lm.Config(**{k: v for k, v in saved.items() if k in fields})
    corpus = train_lm.load_corpus(cfg, torch.device("cpu"))
    model = train_lm.build_model(cfg, "diffusionblocks", len(corpus.chars))
    model.load_state_dict(
        torch.load(path, map_location="cpu", weights_only=False)["state"]["model"]
    )
    hits, n, gen = {}, cfg.seq_len, torch.Generator().manual_seed(cfg.seed)
    for x in corpus.test_eval.split(cfg.batch_size):
        context, y = x[:, :-1], x[:, 1:]  # (N, n), (N, n)
        for grid in GRIDS:
            sigmas = db.prediction_sigmas(model.sigmas, len(model.blocks), grid)
            calls = model.predict(
                context, (len(x), n, cfg.width), sigmas, "mean", "all", bridge=cfg.bridge
            )  # (B, N, n, V)
            summed = calls.float().log_softmax(-1).sum(0)
            for readout, logits in (("last", calls[-1]), ("sum", summed)):
                key = f"{grid}/{readout}"
                hits[key] = hits.get(key, 0) + int((logits.argmax(-1) == y).sum())
        sigma_max = model.sigmas[-1]
        z = sigma_max * torch.randn(len(x), n, cfg.width, generator=gen)
        logits = model.network(z, sigma_max, context, 0).float()  # (N, n, V)
        ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
        hits["block0/acc"] = hits.get("block0/acc", 0) + int((logits.argmax(-1) == y).sum())
        hits["block0/ce"] = hits.get("block0/ce", 0) + float(ce)
    return {key: value / (len(corpus.test_eval) * n) for key, value in hits.items()}


def main(argv=None):
    args = parse_args(argv)
    rows = []
    for seed in args.seeds:
        backprop = run(args.out, *PRESET, seed)["backprop"]
        for stream in STREAMS:
            for blocks in args.blocks:
                r = run(args.out, stream, blocks, seed)["diffusionblocks"]
                folder = os.path.join(args.out, f"{stream}_B{blocks}", f"seed{seed}")
                rows.append(
                    {
                        "readouts": chain_readouts(folder),
                        "stream": stream,
                        "blocks": blocks,
                        "layers_per_block": 8 // blocks,
                        "seed": seed,
                        "test_next_token_acc": r["test_next_token_acc"],
                        "gap": r["test_next_token_acc"] - backprop["test_next_token_acc"],
                        "memory_ratio": backprop["train_memory_bytes"] / r["train_memory_bytes"],
                    }
                )
    table = []
    for stream in STREAMS:
        for blocks in args.blocks:
            mine = [r for r in rows if r["stream"] == stream and r["blocks"] == blocks]
            entry = {"stream": stream, "blocks": blocks, "layers_per_block": 8 // blocks}
            for key in ("test_next_token_acc", "gap", "memory_ratio"):
                values = [r[key] for r in mine]
                entry.update(
                    {
                        key: float(np.mean(values)),
                        key + "_std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                        key + "_per_seed": values,
                    }
                )
            entry["readouts"] = {
                k: float(np.mean([r["readouts"][k] for r in mine]))
                for k in mine[0]["readouts"]
                if all(k in r["readouts"] for r in mine)
            }
            table.append(entry)
    print(
        f"{'stream':>6} {'B':>2} {'layers':>6} {'accuracy':>15} {'gap (points)':>15} "
        f"{'memory ratio':>13}"
    )
    for e in table:
        print(
            f"{e['stream']:>6} {e['blocks']:>2} {e['layers_per_block']:>6} "
            f"{e['test_next_token_acc']:.3f} ± {e['test_next_token_acc_std']:.3f} "
            f"{100 * e['gap']:+6.1f} ± {100 * e['gap_std']:.1f} "
            f"{e['memory_ratio']:7.2f} ± {e['memory_ratio_std']:.2f}  "
            + ", ".join(f"{k} {v:.3f}" for k, v in e["readouts"].items())
        )
    common.write_json(
        {"seeds": args.seeds, "table": table, "runs": rows}, os.path.join(args.out, "tradeoff.json")
    )
    plot(table, args.out)


def plot(table, out):
    """--out/tradeoff.png: the accuracy gap to backprop against the memory ratio, one line per
    stream through B = 2, 4, 8, each point labelled by its layers per block."""
    plt = report.pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for stream, marker in zip(STREAMS, ("o", "s")):
        mine = [e for e in table if e["stream"] == stream]
        ax.errorbar(
            [e["memory_ratio"] for e in mine],
            [100 * e["gap"] for e in mine],
            yerr=[100 * e["gap_std"] for e in mine],
            marker=marker,
            capsize=3,
            label={"single": "one stream", "two": "two streams (the paper's)"}[stream],
        )
        for e in mine:
            ax.annotate(
                f"B = {e['blocks']}, {e['layers_per_block']} layers",
                (e["memory_ratio"], 100 * e["gap"]),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
            )
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("training memory: backprop's / one block's")
    ax.set_ylabel("next-character accuracy − backprop's (points)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "tradeoff.png"), dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
