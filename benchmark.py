"""The memory and speed claim of DiffusionBlocks at the paper's model sizes: one training step
end-to-end against one step of each block, B ∈ {1, 2, 3, 4, 6}, for every task script through its
build_model and train_step.

  python benchmark.py --device cuda                     # real peak memory, one GPU
  python benchmark.py --device cpu --archs vit,dit      # the byte counts on a CPU (all: ~10 min)
  python benchmark.py --smoke --out /tmp/bench.json     # tiny models, seconds (the test)

Memory: db.training_memory of a real step after a first one (what the step trains, its gradients and
AdamW state, the activations saved for backward; on CUDA also the peak, with the optimizer state
allocated). --memory fit (the CPU default) steps at batches 2 and 3 and extrapolates, exact because
every saved tensor is affine in the batch. Time: median seconds per step. Checkpointing
(db.checkpoint_layers: every layer recomputed in backward from its saved inputs), end-to-end and
inside each block of DiffusionBlocks: its bytes include the activations of the one layer that
backward recomputes at a time (`recomputed`). Writes --out (JSON rows with every part of the memory)
and a plot beside.
"""

import argparse
import dataclasses
import os
import statistics
import time

import torch

import common
import diffusionblocks as db
import report
import train_dit
import train_huginn
import train_lm
import train_vit

PARTS = ("parameters", "gradients", "optimizer_state", "activations", "recomputed")


@dataclasses.dataclass
class Arch:
    """One architecture: a task script at its paper preset (with `paper` overrides; `smoke`: tiny),
    measured through the scripts' one contract, build_model(cfg, method, *data_args) and
    train_step(model, optimizers, batch, block)."""

    script: object
    baseline: str  # the script's end-to-end method
    paper: dict
    smoke: dict
    data_args: tuple  # build_model's arguments after the method: the data's sizes
    batch: object  # batch(cfg, n, *data_args) -> a random batch of n
    title: str  # formatted with cfg and d, the data_args
    counts: tuple = None  # the B this architecture has (None: --blocks)

    smoke_data_args: tuple = None  # --smoke: smaller data (None: data_args)


@dataclasses.dataclass
class Setup:
    """An architecture at the measured size: its config, data sizes and a random batch of n."""

    arch: Arch
    cfg: object
    data_args: tuple

    @classmethod
    def of(cls, arch, smoke, batch=None):
        presets = arch.script.PRESETS
        # LMs: per --model
        paper = presets[arch.paper["model"]]["paper"] if "model" in arch.paper else presets["paper"]
        cfg = arch.script.Config(**{**paper, **arch.paper, **(arch.smoke if smoke else {})})
        cfg = dataclasses.replace(cfg, batch_size=batch or cfg.batch_size)
        return cls(arch, cfg, (arch.smoke_data_args or arch.data_args) if smoke else arch.data_args)

    def data(self, n, device):
        batch = self.arch.batch(self.cfg, n, *self.data_args)
        return batch.to(device) if torch.is_tensor(batch) else tuple(t.to(device) for t in batch)

    def models(self, B):
        """(model, its separately trained parts, train_step): end-to-end for B = None, else B
        blocks."""
        method = self.arch.baseline if B is None else "diffusionblocks"
        model = self.arch.script.build_model(
            dataclasses.replace(self.cfg, blocks=B or 1), method, *self.data_args
        )
        return model, common.blocks_of(model), self.arch.script.train_step


def images(cfg, n, size, channels, classes):
    """(x, y): n random images and labels (ViT's batch)."""
    return torch.randn(n, channels, size, size), torch.randint(classes, (n,))


def labelled_images(cfg, n, size, channels, classes):
    """(labels, images) with the null class among the labels (DiT's batch)."""
    return torch.randint(classes + 1, (n,)), torch.randn(n, channels, size, size)


def sequences(cfg, n, vocab):
    """n random sequences of seq_len characters (the masked-diffusion LM's batch)."""
    return torch.randint(vocab, (n, cfg.seq_len))


def windows(cfg, n, vocab):
    """n random windows of seq_len context characters and the next one (the autoregressive LMs'
    batch)."""
    return torch.randint(vocab, (n, cfg.seq_len + 1))


SMOKE_TRANSFORMER = dict(layers=6, width=32, heads=2, batch_size=4)
# paper sizes: CIFAR-100 / CIFAR-10 images 3×32×32, text8's 27 characters; batches as the paper or
# for one GPU
ARCHS = {
    "vit": Arch(
        train_vit,
        "backprop",
        {},
        {**SMOKE_TRANSFORMER, "patch": 2},
        (32, 3, 100),
        images,
        "ViT {cfg.layers}×{cfg.width}, patch {cfg.patch}, {d[1]}×{d[0]}×{d[0]}, {d[2]} classes, "
        "batch {cfg.batch_size}",
        smoke_data_args=(8, 3, 100),
    ),
    "dit": Arch(
        train_dit,
        "backprop",
        {"batch_size": 128},
        SMOKE_TRANSFORMER,
        (32, 3, 10),
        labelled_images,
        "DiT {cfg.layers}×{cfg.width}, patch {cfg.patch}, {d[1]}×{d[0]}×{d[0]}, batch "
        "{cfg.batch_size}",
        smoke_data_args=(8, 3, 10),
    ),
    "mdm": Arch(
        train_lm,
        "backprop",
        {"model": "mdm", "batch_size": 8},
        {**SMOKE_TRANSFORMER, "seq_len": 16},
        (27,),
        sequences,
        "MDM LM {cfg.layers}×{cfg.width}, seq {cfg.seq_len}, batch {cfg.batch_size}",
    ),
    "ar": Arch(
        train_lm,
        "backprop",
        {"model": "ar", "batch_size": 8, "stream": "two"},
        {**SMOKE_TRANSFORMER, "seq_len": 16},
        (27,),
        windows,
        "AR LM {cfg.layers}×{cfg.width}, seq {cfg.seq_len}, batch {cfg.batch_size}, "
        "{cfg.stream} stream",
    ),
    "huginn": Arch(
        train_huginn,
        "bptt",
        {"batch_size": 8},
        dict(width=32, heads=2, seq_len=16, mean_iters=4, bptt=2, batch_size=4),
        (27,),
        windows,
        "Huginn {cfg.prelude}+{cfg.core}+{cfg.coda}×{cfg.width}, seq {cfg.seq_len}, batch "
        "{cfg.batch_size}: "
        "BPTT (K = {cfg.mean_iters}, last {cfg.bptt}) vs one σ-conditioned core pass",
        counts=(1,),
    ),
}
# the AR block in one stream (train_lm.py's default) beside the paper's two
ARCHS["ar_single"] = dataclasses.replace(
    ARCHS["ar"], paper={**ARCHS["ar"].paper, "stream": "single"}
)


# ----------------------------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------------------------


def place(model, part, device):
    """`part` and the container's own buffers (the target embedding) on `device`, every other block
    on the CPU."""
    model.cpu()
    for name, buffer in model.named_buffers(recurse=False):
        setattr(model, name, buffer.to(device))
    return part.to(device)


def extrapolate(at2, at3, batch):
    """Bytes at `batch` from steps at batches 2 and 3: the trained state does not depend on the
    batch, the saved activations are affine in it (batch-proportional tensors plus batch-independent
    ones such as masks)."""
    assert all(at2[p] == at3[p] for p in PARTS[:3]), (at2, at3)
    memory = {p: at2[p] for p in PARTS[:3]}
    for p in PARTS[3:]:
        memory[p] = at2[p] + (batch - 2) * (at3[p] - at2[p])
    memory["total"] = sum(memory[p] for p in PARTS)
    return memory


def seconds_per_step(step, warmup, repeats):
    """Median wall seconds of step() over `repeats` calls after `warmup`; float() of the loss waits
    for the device."""
    for _ in range(warmup):
        float(step()[0])
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        float(step()[0])  # the loss
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_batch(batch_size, args):
    """Batch of the timed steps: --time-batch (0: the stated batch), by default 1/16 of the stated
    batch on a CPU."""
    if args.time_batch is None:
        return batch_size if args.device.type == "cuda" else max(1, batch_size // 16)
    return min(args.time_batch or batch_size, batch_size)


def recomputed_bytes(part, step):
    """Bytes that backward recomputes at once under checkpointing: the most that one checkpointed
    function (a layer) saves for backward besides its inputs (checkpointing keeps those) and the
    parameters, measured on one step() with every such function run plainly."""
    params = {p.untyped_storage().data_ptr() for p in part.parameters()}
    largest = [0]
    checkpoint = torch.utils.checkpoint.checkpoint

    def counted(function, *args, use_reentrant=None):
        kept = params | {a.untyped_storage().data_ptr() for a in args if torch.is_tensor(a)}
        saved = {}

        def pack(t):
            if t.untyped_storage().data_ptr() not in kept:
                saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = function(*args)
        largest[0] = max(largest[0], sum(saved.values()))
        return out

    torch.utils.checkpoint.checkpoint = counted  # what the layers call when checkpointed
    try:
        step()
    finally:
        torch.utils.checkpoint.checkpoint = checkpoint
    return largest[0]


def measure(setup, model, parts, step, b, args, checkpointing=False):
    """Training memory (bytes by part) of one step of parts[b] alone at the stated batch, after a
    first step (so that the optimizer state is there), with every layer checkpointed or not; and its
    seconds per step."""
    part = db.checkpoint_layers(place(model, parts[b], args.device), checkpointing)
    optimizers = [None] * len(parts)
    optimizers[b] = torch.optim.AdamW(part.parameters())
    batch_size = setup.cfg.batch_size

    def stepper(n):
        batch = setup.data(n, args.device)
        return lambda: step(model, optimizers, batch, b)

    def memory_at(n):
        memory = db.training_memory(stepper(n), part.parameters(), optimizers[b])
        memory["recomputed"] = recomputed_bytes(part, stepper(n)) if checkpointing else 0
        memory["total"] += memory["recomputed"]
        return memory

    stepper(2 if args.memory == "fit" else batch_size)()  # a first step: AdamW allocates its state
    memory = (
        memory_at(batch_size)
        if args.memory == "step"
        else extrapolate(memory_at(2), memory_at(3), batch_size)
    )
    seconds = seconds_per_step(stepper(time_batch(batch_size, args)), args.warmup, args.repeats)
    part.zero_grad(set_to_none=True)
    db.checkpoint_layers(part, False)
    model.cpu()
    return memory, seconds


def benchmark(name, setup, args):
    """Rows of one architecture: end-to-end (plain and checkpointed) against every block of every B
    (plain and checkpointed)."""
    arch = setup.arch
    model, parts, step = setup.models(None)
    e2e, e2e_seconds = measure(setup, model, parts, step, 0, args)
    ckpt, ckpt_seconds = measure(setup, model, parts, step, 0, args, checkpointing=True)
    rows = []
    for B in arch.counts or args.blocks:
        model, parts, step = setup.models(B)
        memories, seconds = zip(
            *(measure(setup, model, parts, step, b, args) for b in range(len(parts)))
        )
        largest = max(memories, key=lambda m: m["total"])
        ideal = None if arch.counts else B  # huginn: one core pass against BPTT, no partition
        both, both_seconds = (
            zip(
                *(
                    measure(setup, model, parts, step, b, args, checkpointing=True)
                    for b in range(len(parts))
                )
            )
            if ideal
            else ([ckpt], [ckpt_seconds])
        )
        both_largest = max(both, key=lambda m: m["total"])
        # the bound of both together: checkpointing's bytes fall by B, but for the one layer that
        # backward recomputes
        bound = (ckpt["total"] - ckpt["recomputed"]) / (ideal or 1) + ckpt["recomputed"]
        rows.append(
            {
                "arch": name,
                "blocks": B,
                "e2e_bytes": e2e["total"],
                "block_bytes_max": largest["total"],
                "memory_ratio": e2e["total"] / largest["total"],
                "time_ratio": max(seconds) / e2e_seconds,
                "device": str(args.device),
                "ideal_ratio": ideal,
                "time_ratio_mean": statistics.mean(seconds) / e2e_seconds,
                "e2e": e2e,
                "block_max": largest,
                "block_bytes": [m["total"] for m in memories],
                "e2e_seconds": e2e_seconds,
                "block_seconds": list(seconds),
                # the part that keeps the ratio below B: bytes of the largest block above 1/B of
                # end-to-end
                "excess_bytes": {p: largest[p] - e2e[p] / B for p in PARTS} if ideal else None,
                # the ratio of a block whose layers save what end-to-end's save, for each of its
                # token streams
                "streams_memory_ratio": e2e["total"]
                / (sum(largest[p] for p in PARTS[:3]) + 2 * e2e["activations"] / B)
                if ideal and arch.paper.get("stream") == "two"
                else None,
                "ckpt_bytes": ckpt["total"],
                "ckpt": ckpt,
                "ckpt_memory_ratio": e2e["total"] / ckpt["total"],
                "ckpt_time_ratio": ckpt_seconds / e2e_seconds,
                "both_bytes": both_largest["total"],
                "both": both_largest,
                "both_bytes_per_block": [m["total"] for m in both],
                "both_memory_ratio": e2e["total"] / both_largest["total"],
                "both_bound_ratio": e2e["total"] / bound,
                "both_time_ratio": max(both_seconds) / e2e_seconds,
                "both_block_seconds": list(both_seconds),
                "title": arch.title.format(cfg=setup.cfg, d=setup.data_args),
                "batch": setup.cfg.batch_size,
                "time_batch": time_batch(setup.cfg.batch_size, args),
                "memory_method": args.memory,
                "warmup": args.warmup,
                "repeats": args.repeats,
            }
        )
        if "cuda_peak" in e2e:  # --memory step on CUDA: the real peaks
            rows[-1].update(
                e2e_cuda_peak=e2e["cuda_peak"],
                ckpt_cuda_peak=ckpt["cuda_peak"],
                block_cuda_peak_max=max(m["cuda_peak"] for m in memories),
                both_cuda_peak_max=max(m["cuda_peak"] for m in both),
            )
    return rows


# ----------------------------------------------------------------------------------------------
# Report: table, JSON, plot
# ----------------------------------------------------------------------------------------------


def _mib(n):
    return f"{report.mib(n):>9.1f}"


def verdict(r):
    """The memory (≥ 0.85·B) and time (≤ 1.2/B) targets; for a missed memory target, the part most
    above 1/B."""
    B = r["ideal_ratio"]
    if not B:
        return ""
    memory_ok, time_ok = r["memory_ratio"] >= 0.85 * B, r["time_ratio"] <= 1.2 / B
    text = f"{'ok' if memory_ok else 'MISS'}, {'ok' if time_ok else 'MISS'}"
    if not memory_ok:
        part = max(PARTS, key=r["excess_bytes"].get)
        text += f"; {part} +{report.mib(r['excess_bytes'][part]):.1f} MiB over 1/B of end-to-end"
    if r.get("streams_memory_ratio"):
        text += f"; with end-to-end's activations per token stream: {r['streams_memory_ratio']:.2f}"
    if "e2e_cuda_peak" in r:
        e2e, block = report.mib(r["e2e_cuda_peak"]), report.mib(r["block_cuda_peak_max"])
        text += f"; CUDA peak {e2e:.0f} → {block:.0f} MiB"
    return text


def verdict_both(r):
    """DiffusionBlocks and checkpointing together: less memory than either alone, and ≥ 90 % of the
    bound's ratio."""
    less = r["both_bytes"] < min(r["ckpt_bytes"], r["block_bytes_max"])
    near = r["both_memory_ratio"] >= 0.9 * r["both_bound_ratio"]
    return (
        f"{'ok' if less and near else 'MISS'}: {'less' if less else 'NOT less'} than either alone, "
        f"{r['both_memory_ratio'] / r['both_bound_ratio']:.1%} of the bound "
        f"{r['both_bound_ratio']:.2f} "
        f"(checkpointing's bytes ÷ B but the recomputed layer's)"
        + (
            f"; CUDA peak {report.mib(r['both_cuda_peak_max']):.0f} MiB"
            if "both_cuda_peak_max" in r
            else ""
        )
    )


def print_table(rows):
    """One line per (architecture, B), one for activation checkpointing, one per B for both
    together."""
    print(
        f"{'arch':<7} {'B':>4} {'e2e MiB':>9} {'block MiB':>9} {'ratio':>6} {'ideal':>5} "
        f"{'time ratio':>10} "
        f"{'(mean)':>6}  targets (memory, time); what keeps the ratio down"
    )
    for name in dict.fromkeys(r["arch"] for r in rows):
        arch_rows = [r for r in rows if r["arch"] == name]
        print(f"{name}: {arch_rows[0]['title']}; timed at batch {arch_rows[0]['time_batch']}")
        for r in arch_rows:
            print(
                f"{name:<7} {r['blocks']:>4} {_mib(r['e2e_bytes'])} {_mib(r['block_bytes_max'])} "
                f"{r['memory_ratio']:>6.2f} {r['ideal_ratio'] or '-':>5} {r['time_ratio']:>10.3f} "
                f"{r['time_ratio_mean']:>6.3f}  {verdict(r)}"
            )
        r = arch_rows[0]
        print(
            f"{name:<7} {'ckpt':>4} {_mib(r['e2e_bytes'])} {_mib(r['ckpt_bytes'])} "
            f"{r['ckpt_memory_ratio']:>6.2f} "
            f"{'-':>5} {r['ckpt_time_ratio']:>10.3f} {'':>6}  activation checkpointing: "
            "activations "
            f"{report.mib(r['e2e']['activations']):.0f} → "
            f"{report.mib(r['ckpt']['activations']):.0f} MiB"
            + f", recomputed layer {report.mib(r['ckpt']['recomputed']):.0f} MiB"
            + (
                f"; CUDA peak {report.mib(r['ckpt_cuda_peak']):.0f} MiB"
                if "ckpt_cuda_peak" in r
                else ""
            )
        )
        for r in arch_rows:
            if r["ideal_ratio"] and r["blocks"] > 1:
                print(
                    f"{name:<7} {str(r['blocks']) + '+ck':>4} {_mib(r['e2e_bytes'])} "
                    f"{_mib(r['both_bytes'])} "
                    f"{r['both_memory_ratio']:>6.2f} {r['both_bound_ratio']:>5.2f} "
                    f"{r['both_time_ratio']:>10.3f} "
                    f"{'':>6}  "
                    f"{verdict_both(r)}"
                )


def plot(rows, path):
    """Largest block / end-to-end memory against B per architecture, the ideal 1/B, and
    checkpointing at B = 1."""
    plt = report.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    counts = sorted({r["blocks"] for r in rows})
    ax.plot(counts, [1 / B for B in counts], "k--", label="ideal 1/B")
    names = list(dict.fromkeys(r["arch"] for r in rows))
    # ViT, DiT and MDM nearly coincide: own marker, style and a small x shift
    for i, name in enumerate(names):
        arch_rows = [r for r in rows if r["arch"] == name]
        shift = 1 + 0.025 * (i - (len(names) - 1) / 2)
        label = name if arch_rows[0]["ideal_ratio"] else f"{name}: one core pass / BPTT"
        (line,) = ax.plot(
            [r["blocks"] * shift for r in arch_rows],
            [1 / r["memory_ratio"] for r in arch_rows],
            marker="osD^v"[i % 5],
            linestyle=["-", "--", ":", "-.", "-"][i % 5],
            label=label,
            alpha=0.85,
        )
        ax.plot(
            [shift],
            [1 / arch_rows[0]["ckpt_memory_ratio"]],
            "x",
            color=line.get_color(),
            markersize=10,
            markeredgewidth=2,
        )
        both = [r for r in arch_rows if r["ideal_ratio"] and r["blocks"] > 1]
        ax.plot(
            [r["blocks"] * shift for r in both],
            [1 / r["both_memory_ratio"] for r in both],
            marker="+",
            linestyle=":",
            color=line.get_color(),
            markersize=9,
        )
    ax.plot(
        [],
        [],
        "x",
        color="gray",
        markeredgewidth=2,
        label="activation checkpointing (end-to-end), in the colour of its architecture",
    )
    ax.plot([], [], "+:", color="gray", label="DiffusionBlocks with checkpointing in each block")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xticks(counts, [str(B) for B in counts])
    shown = [
        1 / r[k] for r in rows for k in ("memory_ratio", "ckpt_memory_ratio", "both_memory_ratio")
    ]
    shown.append(1 / max(counts))
    ticks = [
        t
        for t in (1 / 16, 1 / 8, 1 / 6, 1 / 4, 1 / 3, 1 / 2, 1, 2, 4)
        if min(shown) / 1.2 <= t <= max(shown) * 1.2
    ]  # fractions, not powers of 2
    ax.set_yticks(ticks, [f"1/{round(1 / t)}" if t < 1 else str(round(t)) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("blocks B")
    ax.set_ylabel("training memory per step, largest block / end-to-end")
    ax.set_title(
        f"measured on {rows[0]['device']}: parameters, gradients, AdamW state, activations\n"
        "(checkpointing: and the layer that backward recomputes)",
        fontsize=9,
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument(
        "--archs", default=",".join(ARCHS), help=f"comma-separated subset of {', '.join(ARCHS)}"
    )
    parser.add_argument(
        "--blocks", default="1,2,3,4,6", help="block counts B (the paper's ablation: 1,2,3,4,6)"
    )
    parser.add_argument(
        "--memory",
        choices=["step", "fit"],
        help="bytes from one step at the stated batch (default "
        "on CUDA), or fitted from steps at batches 2 and 3 (default elsewhere)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        help="batch of every measured architecture (default: the table's, ARCHS)",
    )
    parser.add_argument(
        "--time-batch",
        type=int,
        help="batch of the timed steps; 0 = the stated batch (default "
        "on CUDA; elsewhere 1/16 of it, at least 1: 8 images, 1 sequence)",
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed steps; the median is reported"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny models (6 layers, width 32): seconds, for the test",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        default=os.path.join("runs", f"benchmark-{time.strftime('%Y%m%d-%H%M%S')}.json"),
        help="rows as JSON; the plot goes beside (.png); default under runs/ (results/ holds the "
        "README's run: pass --out results/benchmark.json to regenerate it)",
    )
    args = parser.parse_args()
    args.device = device = common.pick_device(args.device)
    if device.type == "cuda":  # as the scripts (common.start): what bf16 autocast leaves in fp32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    names = args.archs.split(",")
    if not set(names) <= set(ARCHS):
        common.fail(
            f"--archs: unknown {sorted(set(names) - set(ARCHS))}; allowed: {', '.join(ARCHS)}"
        )
    try:
        args.blocks = [int(B) for B in args.blocks.split(",")]
    except ValueError:
        common.fail(f"--blocks {args.blocks!r}: need comma-separated integers, e.g. 1,2,3,4,6")
    args.memory = args.memory or ("step" if device.type == "cuda" else "fit")
    # every architecture with a partition has 12 layers (6 with --smoke)
    layers = 6 if args.smoke else 12
    if not 1 <= min(args.blocks) <= max(args.blocks) <= layers:
        common.fail(
            f"--blocks {','.join(map(str, args.blocks))}: each B must be in 1..{layers} (the "
            "layers to split)"
        )
    if (
        (args.batch is not None and args.batch < 1)
        or (args.time_batch or 0) < 0
        or args.warmup < 0
        or args.repeats < 1
    ):
        common.fail("need --batch >= 1, --time-batch >= 0, --warmup >= 0 and --repeats >= 1")
    try:  # before minutes of measuring: the folder of --out must take the JSON and the plot
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    except OSError as e:
        common.fail(f"--out {args.out}: cannot create its folder ({e.strerror})")
    if os.path.isdir(args.out) or not os.access(os.path.dirname(args.out) or ".", os.W_OK):
        common.fail(f"--out {args.out}: need a file name in a writable folder")
    torch.manual_seed(args.seed)
    memory = (
        "one step at the stated batch"
        if args.memory == "step"
        else "fitted from steps at batches 2 and 3"
    )
    precision = "bf16 autocast, TF32 matmuls" if device.type == "cuda" else "float32"
    print(
        f"device {device}, {precision}; memory: {memory}; time: median of {args.repeats} steps "
        f"after {args.warmup} warm-up"
    )
    rows = []
    for name in names:
        t0 = time.perf_counter()
        rows += benchmark(name, Setup.of(ARCHS[name], args.smoke, args.batch), args)
        print(f"{name}: measured in {time.perf_counter() - t0:.0f} s", flush=True)
    print_table(rows)
    common.write_json(rows, args.out)
    plot(rows, os.path.splitext(args.out)[0] + ".png")
    print(f"wrote {args.out} and {os.path.splitext(args.out)[0]}.png")


if __name__ == "__main__":
    main()
