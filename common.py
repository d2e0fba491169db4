"""Run plumbing of the train_*.py scripts. Nothing of the method is here: a reader may skip this
file.

Config and flags (with their one-line errors), device and seed, the `Loop` around each script's own
training loop (timing, losses read back, learning curve, atomic checkpoints, exact --resume,
divergence), memory measurement, --block / --assemble / torchrun, metrics.json, the comparison table
and plots. The method lives in diffusionblocks.py, the datasets in data.py; each script shows its
model, its training step and loop, and its evaluation.
"""

import argparse
import copy
import dataclasses
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from tqdm import tqdm

import diffusionblocks as db
import report

# ----------------------------------------------------------------------------------------------
# Config and flags
# ----------------------------------------------------------------------------------------------


def option(default, help, choices=None):
    """A config field with its help text (and allowed values), turned into a flag by
    `parse_config`."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclasses.dataclass
class BaseConfig:
    """Fields every script has; defaults are the CPU-sized preset unless a comment says
    otherwise."""

    preset: str = option(
        "cpu",
        "smoke: seconds (tests); cpu: the default comparison; paper: the paper's setup, one GPU",
    )
    method: str = option(
        "all", "which method to train; 'all' trains each and prints the comparison"
    )
    dataset: str = option("digits", "dataset name, or npz:PATH / txt:PATH")
    data_dir: str = option("data", "where real datasets are downloaded or looked for")
    blocks: int = option(
        3, "B, the number of blocks (the paper's value for every task but AR text)"
    )
    gamma: float = option(
        0.05, "overlap γ between neighbouring noise slices (paper: 0.05, 0 in ablations)"
    )
    partition: str = option("equiprob", "noise partition", ["equiprob", "uniform"])
    steps: int = option(
        1000, "baseline iterations N; DiffusionBlocks runs B·N one-block iterations"
    )
    batch_size: int = option(64, "batch size")
    lr: float = option(1e-3, "peak learning rate (AdamW)")
    min_lr: float = option(1e-5, "learning rate at the end of the cosine decay")
    warmup: float = option(0.05, "warm-up fraction of the iterations, before the cosine decay")
    weight_decay: float = option(0.0, "AdamW weight decay")
    seed: int = option(0, "seed of weights, data order and noise")
    seeds: str = option(
        "", "comma-separated seeds to run one after another, e.g. 0,1,2 (then mean ± std)"
    )
    device: str = option("auto", "device", ["auto", "cpu", "cuda", "mps"])
    out: str = option("", "output folder (default runs/<script>-<dataset>-<time>)")
    resume: bool = option(
        False,
        "continue from the last checkpoint in --out (ckpt.pt; ckpt.prev.pt holds the one before), "
        "keeping the methods and seeds that finished; --lr and --min-lr may change (recorded in "
        "metrics.json as resumed_with), and so may --method, --compile, --ckpt-every, "
        "--eval-every and --device; every other setting must be the run's",
    )
    overwrite: bool = option(
        False,
        "start over in an --out that holds this run's checkpoints (they are removed); without it "
        "or --resume such a run is refused, so that a forgotten --resume loses nothing",
    )
    block: int = option(
        -1, "train only this block and save it to its own file (-1: all; under torchrun: RANK)"
    )
    assemble: bool = option(False, "evaluate the model assembled from the block files in --out")
    eval_every: int = option(
        250, "iterations between evaluations on the test set (learning curves)"
    )
    ckpt_every: int = option(500, "iterations between checkpoints")
    compile: bool = option(
        False,
        "torch.compile each trained network (opt-in: compiling takes minutes, then steps "
        "run faster on a GPU; the same losses; its time is reported as compile_seconds, apart "
        "from train_seconds)",
    )


@dataclasses.dataclass
class DiscreteConfig(BaseConfig):
    """BaseConfig and the DiffusionBlocks options for a class or token target (ViT, AR LM,
    Huginn)."""

    weighting: str = option(
        "uniform",
        "DiffusionBlocks loss weight over σ (db.DiffusionBlocks): uniform, or EDM's "
        "λ(σ); chosen on validation data (README)",
        ["uniform", "edm"],
    )
    mislabel: float = option(
        0.2,
        "rate of wrong-class hints in DiffusionBlocks training (db.DiffusionBlocks, a "
        "corrupted forward process); chosen on validation data (README)",
    )


def fail(message, status=2):
    """Print a one-line error for a user's mistake and exit (2: bad input, 1: failed mid-run)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


# The allowed values of every numeric flag of the scripts (a script checks its own couplings, e.g.
# width % heads).
AT_LEAST = dict(
    blocks=1,
    steps=1,
    batch_size=1,
    eval_every=1,
    ckpt_every=1,
    layers=1,
    width=1,
    heads=1,
    patch=1,
    seq_len=2,
    elbo_samples=1,
    sample_steps=1,
    gen_samples=1,
    gen_tokens=1,
    judge_order=1,
    core=1,
    mean_iters=1,
    bptt=1,
    db_steps_mult=1,
    fid_samples=2,
    fid_classifier_steps=1,
    seed=0,
    block=-1,
    calls=0,
    eval_sequences=0,
    curve_images=0,
    infer_iters=0,
    prelude=0,
    coda=0,
    min_lr=0,
    weight_decay=0,
    temperature=0,
    guidance=0,
)
# lo <= value < hi
IN_RANGE = dict(
    warmup=(0, 1), gamma=(0, 0.5), mislabel=(0, 1), label_dropout=(0, 1), ema_std=(0, 0.288)
)


def check_numbers(cfg):
    """One-line errors (exit 2) for a numeric flag outside AT_LEAST / IN_RANGE, a non-finite one,
    --lr <= 0, or --seeds that are not distinct integers >= 0."""
    for f in dataclasses.fields(cfg):
        value, flag = getattr(cfg, f.name), "--" + f.name.replace("_", "-")
        if isinstance(value, float) and not math.isfinite(value):
            fail(f"{flag} must be a finite number, got {value}")
        if f.name in AT_LEAST and value < AT_LEAST[f.name]:
            fail(f"{flag} must be >= {AT_LEAST[f.name]}, got {value}")
        if f.name in IN_RANGE and not IN_RANGE[f.name][0] <= value < IN_RANGE[f.name][1]:
            fail(f"{flag} must be in [{IN_RANGE[f.name][0]}, {IN_RANGE[f.name][1]}), got {value}")
    if cfg.lr <= 0:
        fail(f"--lr must be > 0, got {cfg.lr}")
    if cfg.seeds:
        seeds = cfg.seeds.split(",")
        if not all(s.strip().isdigit() for s in seeds) or len(set(map(int, seeds))) < len(seeds):
            fail(
                "--seeds must be distinct comma-separated integers >= 0 like 0,1,2, got "
                f"{cfg.seeds!r}"
            )


def check_shapes(cfg):
    """One-line errors (exit 2) for a network that cannot be built: L layers that do not split into
    B blocks, a width that the heads do not divide."""
    if hasattr(cfg, "layers"):
        try:
            db.split_layers(cfg.layers, cfg.blocks)
        except ValueError as e:
            fail(f"--blocks {cfg.blocks} with --layers {cfg.layers}: {e}")
    if hasattr(cfg, "heads") and cfg.width % cfg.heads:
        fail(f"--width {cfg.width} must be divisible by --heads {cfg.heads}")


def parse_config(config_class, presets, methods, argv=None, check=None):
    """Flags from the dataclass fields; values: dataclass default < --preset < explicit flags.
    check(cfg): the script's own one-line errors, run with the common ones, before --out is
    created."""
    parser = argparse.ArgumentParser(
        description=sys.modules["__main__"].__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # every flag written out: resume_command rewrites the command line
    )
    for f in dataclasses.fields(config_class):
        # argparse formats %
        kwargs = dict(help=f.metadata.get("help", "").replace("%", "%%"), default=argparse.SUPPRESS)
        if f.name == "method":
            kwargs["choices"] = ["all", *methods]
        elif f.name == "preset":
            kwargs["choices"] = list(presets)
        elif f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        if isinstance(f.default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = type(f.default)
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)
    argv = sys.argv[1:] if argv is None else argv
    args = vars(parser.parse_args(argv))
    preset = args.get("preset", "cpu")
    cfg = config_class(**{**presets[preset], **args, "preset": preset})
    check_numbers(cfg)
    check_shapes(cfg)
    if "RANK" in os.environ:  # torchrun: rank r trains block r alone, no collective call needed
        world = int(os.environ.get("WORLD_SIZE", 1))
        if cfg.method != "diffusionblocks" or cfg.assemble or cfg.block >= 0 or cfg.seeds:
            fail(
                "under torchrun each process trains one block: use --method diffusionblocks "
                "without --block, "
                "--assemble or --seeds (then --assemble in one plain process)"
            )
        if world != cfg.blocks:
            fail(
                f"torchrun started {world} processes for --blocks {cfg.blocks}: start one per "
                "block "
                f"(--nproc_per_node {cfg.blocks} on one machine)"
            )
        cfg.block = int(os.environ["RANK"])
    if (cfg.block >= 0 or cfg.assemble) and cfg.method != "diffusionblocks":
        fail("--block and --assemble need --method diffusionblocks")
    if cfg.block >= cfg.blocks:
        fail(
            f"--block must be in 0..{cfg.blocks - 1} (there are {cfg.blocks} blocks), got "
            f"{cfg.block}"
        )
    if (cfg.block >= 0 or cfg.assemble) and cfg.seeds:
        fail("--block and --assemble take one --seed, not --seeds")
    if (cfg.block >= 0 or cfg.assemble or cfg.resume) and not cfg.out:
        fail("--block, --assemble and --resume need --out, the folder that holds the run")
    if check:
        check(cfg)
    script = os.path.splitext(os.path.basename(sys.argv[0]))[0]
    cfg.out = cfg.out or os.path.join(
        "runs",
        f"{script}-{cfg.dataset.replace(':', '_').replace('/', '_')}"
        f"-{time.strftime('%Y%m%d-%H%M%S')}",
    )
    check_out(cfg, script, methods)
    COMMAND.update(script=script + ".py", argv=argv, out=cfg.out)
    return cfg


# may differ within one --out
RUN_FIELDS = ("method", "resume", "overwrite", "block", "assemble", "seed", "seeds", "out")
# May change on --resume, e.g. to continue after a divergence: they scale the remaining updates,
# while --steps or --warmup would move the run along its schedule and break the compute matching of
# the methods.
RESUME_FIELDS = ("lr", "min_lr")
# May change on --resume and --assemble: when and where the run computes, not what it computes.
HARMLESS_FIELDS = ("compile", "ckpt_every", "eval_every", "device")
# the script, its flags and --out, as parsed: resume_command continues the run from them
COMMAND = {}


def resume_command(cfg, method, **changes):
    """The command line that continues `method` at seed cfg.seed from its checkpoint in cfg.out,
    with `changes` (field: value); for a variant of a study, the study's own command with
    --resume."""
    flags = {"--" + key.replace("_", "-"): f"{value:g}" for key, value in changes.items()}
    study = type(cfg).__module__ != "__main__"  # a study runs a task script's Config
    dropped = {"--out", *flags} | (set() if study else {"--seeds", "--seed", "--method", "--block"})
    argv, words = [], iter(COMMAND.get("argv", []))
    for word in words:
        name = word.split("=")[0]
        if name in dropped and "=" not in word:
            next(words, None)  # drop the flag's value too
        if name not in (*dropped, "--resume", "--no-resume", "--overwrite", "--no-overwrite"):
            argv.append(word)
    if not study:  # this method and seed alone, in their own folder
        argv += ["--method", method, "--seed", str(cfg.seed)]
        argv += ["--block", str(cfg.block)] if cfg.block >= 0 else []
    argv += ["--out", COMMAND.get("out", "OUT") if study else cfg.out, "--resume"]
    argv += [w for flag in flags.items() for w in flag]
    return shlex.join(["python", COMMAND.get("script", os.path.basename(sys.argv[0])), *argv])


def checkpoint_paths(run_dir, block=-1):
    """(the checkpoint, the one before it) of a method's run folder; with --block b, block b's."""
    path = os.path.join(run_dir, f"block{block}.ckpt.pt" if block >= 0 else "ckpt.pt")
    return path, path.replace("ckpt.pt", "ckpt.prev.pt")


def refuse_to_overwrite(cfg, paths):
    """One-line error (exit 2) when a run that neither resumes nor overwrites would write over one
    of `paths`; with --overwrite they are removed."""
    for path in paths:
        if os.path.exists(path) and not cfg.resume:
            if not cfg.overwrite:
                fail(
                    f"--out {cfg.out}: {path} holds a run of these settings; add --resume to "
                    "continue it, or --overwrite to start over"
                )
            os.remove(path)


def read_json(path):
    """A JSON file written by this project, or a one-line error (exit 2) when it is not one."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        fail(f"cannot read {path} ({type(e).__name__}); remove it, or move it out of --out")


def check_out(cfg, script, methods):
    """--out must be a writable folder; the metrics.json already there (or in its seed<s> folders)
    must come from this script with the same settings (but RUN_FIELDS; on --resume and --assemble
    also RESUME_FIELDS and HARMLESS_FIELDS): runs are merged there, never mixed; and the
    checkpoints of the methods to train there are kept unless --resume or --overwrite."""
    try:
        os.makedirs(cfg.out, exist_ok=True)
    except OSError as e:
        fail(f"--out {cfg.out}: cannot create this folder ({e.strerror})")
    if not os.access(cfg.out, os.W_OK):
        fail(f"--out {cfg.out}: the folder is not writable")
    if cfg.resume and cfg.overwrite:
        fail("--resume continues the run in --out and --overwrite starts it over: choose one")
    seeds = [int(s) for s in cfg.seeds.split(",")] if cfg.seeds else []
    runs = [os.path.join(cfg.out, f"seed{s}") for s in seeds] or [cfg.out]
    free = RUN_FIELDS + (RESUME_FIELDS + HARMLESS_FIELDS if cfg.resume or cfg.assemble else ())
    for run in runs:
        path = os.path.join(run, "metrics.json")
        if os.path.exists(path):
            old = read_json(path)
            if old.get("script") != script + ".py":
                fail(
                    f"--out {cfg.out}: {path} comes from {old.get('script')}, not {script}.py; "
                    "use another --out"
                )
            refuse_other_settings(
                old.get("config", {}),
                cfg,
                free,
                f"--out {cfg.out}: {path}",
                "; use another --out (or remove the folder) to keep runs of different settings "
                "apart",
            )
        if cfg.assemble or cfg.overwrite:  # nothing trained; or Loop removes them when it starts
            continue
        if cfg.block >= 0:  # this block's checkpoint and its file for --assemble
            block_file = os.path.join(run, f"block{cfg.block}.pt")
            paths = [*checkpoint_paths(os.path.join(run, "diffusionblocks"), cfg.block), block_file]
        else:
            chosen = methods if cfg.method == "all" else [cfg.method]
            paths = [p for m in chosen for p in checkpoint_paths(os.path.join(run, m))]
        refuse_to_overwrite(cfg, paths)


def refuse_other_settings(saved, cfg, free, source, advice=""):
    """One-line error (exit 2) naming the first setting, not in `free`, in which a saved config
    differs from cfg; a setting that a saved config lacks (added to the scripts since) counts as its
    default."""
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    for key, value in dataclasses.asdict(cfg).items():
        if key not in free and saved.get(key, defaults[key]) != value:
            fail(
                f"{source} was run with {key} = {saved.get(key, defaults[key])!r}, here "
                f"{value!r}{advice}"
            )


def load_saved(path, cfg, free, flag, device="cpu"):
    """A checkpoint or block file saved with its config, refused (one line, exit 2) when it cannot
    be read or was saved with other settings than cfg (but `free`)."""
    try:
        saved = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:  # truncated or not a checkpoint: torch raises several kinds
        fail(f"{flag}: cannot read {path} ({type(e).__name__}); remove it, or train it again")
    refuse_other_settings(saved.get("config", {}), cfg, free, f"{flag}: {path}")
    return saved


# ----------------------------------------------------------------------------------------------
# Device, dtype, seed
# ----------------------------------------------------------------------------------------------


def pick_device(name):
    """cuda → mps → cpu for 'auto'; an explicit device that is not there is an error. Under
    torchrun, CUDA is cuda:LOCAL_RANK, so that each process on a machine has its own GPU."""
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
        "cpu": True,
    }
    if name == "auto":
        name = next(d for d in ("cuda", "mps", "cpu") if available[d])
    if not available[name]:
        fail(
            f"--device {name} is not available here; allowed: auto, "
            + ", ".join(d for d, ok in available.items() if ok)
        )
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        rank = int(os.environ["LOCAL_RANK"])
        if rank >= torch.cuda.device_count():
            fail(
                f"torchrun process {rank} on this machine has no GPU of its own "
                f"({torch.cuda.device_count()} "
                "GPUs): start at most one process per GPU"
            )
        torch.cuda.set_device(rank)
        return torch.device("cuda", rank)
    return torch.device(name)


def start(cfg):
    """--device and the seed set up, TF32 matmuls on CUDA, and the one start-up line (device,
    precision) → the device."""
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    # what bf16 autocast leaves in float32 (norms, the loss) runs on tensor cores too
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    print(
        f"device {device}, dtype "
        f"{'bf16 autocast, TF32 matmuls' if device.type == 'cuda' else 'float32'}"
    )
    return device


def autocast(device):
    """bf16 autocast on CUDA only; full precision elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def seed_everything(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)


def count_params(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------------------------
# Training-loop skeleton: timing, NaN check, evaluation cadence, atomic checkpoints, --resume
# ----------------------------------------------------------------------------------------------


def cosine_lr(progress, warmup, lr, min_lr):
    """Linear warm-up over the first `warmup` fraction, then cosine decay from lr to min_lr."""
    if progress < warmup:
        return lr * (progress + 1e-9) / warmup
    t = (progress - warmup) / max(1e-9, 1 - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(t, 1.0)))


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr


def adamw(module, cfg):
    """AdamW on a module's parameters at the config's peak learning rate and weight decay."""
    return torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_at(cfg, progress):
    """The config's schedule at `progress` in [0, 1]: warm-up, then cosine decay from --lr to
    --min-lr."""
    return cosine_lr(progress, cfg.warmup, cfg.lr, cfg.min_lr)


def replace_atomic(path, write):
    """write(tmp) to a temporary file of its own beside `path`, then rename it to `path`: a killed
    run never leaves a half-written file, and processes that write the same path never share one."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=os.path.dirname(path) or ".", prefix=os.path.basename(path) + "."
    )
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # as open() creates a file (mkstemp's are private)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_atomic(obj, path):
    """torch.save, atomically (replace_atomic)."""
    replace_atomic(path, lambda tmp: torch.save(obj, tmp))


def write_json(obj, path):
    """json.dump, atomically (replace_atomic)."""

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)

    replace_atomic(path, write)


def to_device(t, device):
    """A CPU tensor on `device`; to CUDA from pinned memory without blocking, so the host never
    waits for the GPU to fetch a batch."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _get_state(obj):
    return obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()


def _set_state(obj, state):
    obj.set_state(state) if isinstance(obj, torch.Generator) else obj.load_state_dict(state)


def global_rng_state():
    """The global random streams (torch CPU, numpy, and the current CUDA device's: each torchrun
    process has its own GPU) that augmentations draw from, for exact --resume."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "cuda": torch.cuda.get_rng_state() if cuda else None,
    }


def set_global_rng_state(state):
    """Restore what global_rng_state saved."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    if torch.is_tensor(state["cuda"]):
        torch.cuda.set_rng_state(state["cuda"])


# iterations between reading the losses back from an accelerator (on a CPU: every iteration)
SYNC_EVERY = 50


class Loop:
    """The bookkeeping around a script's own training loop; nothing of the method is in it.

        loop = common.Loop(cfg, run_dir, iters, state, desc, layers_per_iter)  # --resume: loaded
        for it in loop:                  # it = 0 .. iters − 1 (from the checkpoint's on --resume)
            ...                          # the script's training step
            loop.record(loss, grad_norm) # the iteration's time ends; both read back now and then
            if loop.every(cfg.eval_every):
                loop.log(evaluate(...))  # a point of the learning curve (and of curve.jsonl)
            if loop.every(cfg.ckpt_every):
                loop.checkpoint()        # atomic; ckpt.prev.pt keeps the one before

    `state` maps names to models, optimizers, EMAs (`Many`) and generators; a checkpoint holds them,
    the global random state, the iteration, the curve, the training time and cfg, which --resume
    must match (but RESUME_FIELDS, whose changes go to stats["resumed_with"], and HARMLESS_FIELDS):
    a resumed run repeats the uninterrupted one exactly. A run that does not resume refuses to
    start over a checkpoint (unless --overwrite). Losses and gradient norms stay on the device and
    are read back every SYNC_EVERY iterations (each one on a CPU), and always before a checkpoint,
    an evaluation or the end, so the host never waits for an accelerator each step; a non-finite
    one, or a non-finite weight, stops the run before anything saves or evaluates it, with the
    command that continues from the last good checkpoint. With --block b the checkpoint is
    block<b>.ckpt.pt, so the blocks of one --out can train in separate processes. With --compile,
    the iterations that compiled a graph count as compile_seconds, not train_seconds.
    """

    def __init__(self, cfg, run_dir, iters, state, desc, layers_per_iter):
        self.cfg, self.iters, self.state, self.layers_per_iter = cfg, iters, state, layers_per_iter
        self.method, self.desc = desc, desc + (str(cfg.block) if cfg.block >= 0 else "")
        self.path, self.prev_path = checkpoint_paths(run_dir, cfg.block)
        self.device = next(state["model"].parameters()).device
        self.stats = {"iter": 0, "train_seconds": 0.0, "curve": [], "losses": []}
        self.saved_iter, self.pending = None, []  # (iteration, loss, gradient norm) on the device
        if cfg.resume and (os.path.exists(self.path) or os.path.exists(self.prev_path)):
            self._resume()
        elif cfg.resume:
            print(f"--resume: no checkpoint at {self.path}, starting from iteration 0")
        else:
            refuse_to_overwrite(cfg, [self.path, self.prev_path])
        self.curve_path = self.path.replace("ckpt.pt", "curve.jsonl")
        os.makedirs(os.path.dirname(self.curve_path) or ".", exist_ok=True)
        with open(self.curve_path, "w") as f:  # the curve up to where this run starts
            f.writelines(json.dumps(point) + "\n" for point in self.stats["curve"])
        if cfg.compile:
            self.stats.setdefault("compile_seconds", 0.0)
            self.graphs = _compiled_graphs() - self.stats.setdefault("compiled_graphs", 0)
            for part in blocks_of(state["model"]):
                # in place: the state dict keeps its names, so checkpoints do not depend on it;
                # the tests set DB_COMPILE_BACKEND=aot_eager (Dynamo's graphs, no code generation)
                part.compile(backend=os.environ.get("DB_COMPILE_BACKEND", "inductor"))

    def _resume(self):
        path = self.path if os.path.exists(self.path) else self.prev_path  # killed mid-rotation
        free = ("resume", "overwrite", "out", "seeds", "method", *RESUME_FIELDS, *HARMLESS_FIELDS)
        saved = load_saved(path, self.cfg, free, "--resume")
        if "rng" not in saved:
            fail(
                f"--resume: {path} holds no random state (an older version wrote it), so the run "
                "could not continue exactly; remove it to start over"
            )
        missing = [name for name in self.state if name not in saved["state"]]
        if missing:
            fail(
                f"--resume: {path} holds no {missing[0]} (an older version wrote it); remove it "
                "to start over"
            )
        if saved.get("device", self.device.type) != self.device.type:
            fail(
                f"--resume: {path} was trained on {saved['device']}, here {self.device.type}: "
                f"its random streams are that device's; resume with --device {saved['device']}"
            )
        for name, obj in self.state.items():
            _set_state(obj, saved["state"][name])
        set_global_rng_state(saved["rng"])
        self.stats = saved["stats"]
        self.saved_iter = self.stats["iter"]
        changed = {
            k: [saved["config"][k], getattr(self.cfg, k)]
            for k in RESUME_FIELDS
            if saved["config"][k] != getattr(self.cfg, k)
        }
        if changed:
            self.stats.setdefault("resumed_with", []).append(
                {"iter": self.stats["iter"], **changed}
            )
        print(
            f"resumed {path} at iteration {self.stats['iter']}"
            + "".join(f", {k} {old:g} → {new:g}" for k, (old, new) in changed.items())
        )

    def __iter__(self):
        self.bar = tqdm(
            range(self.stats["iter"], self.iters),
            desc=self.desc,
            initial=self.stats["iter"],
            total=self.iters,
            mininterval=1.0,
        )
        for it in self.bar:
            self.t0 = time.perf_counter()
            self.graphs_before = _compiled_graphs()
            yield it
        self.read_losses()
        self.bar.close()

    def record(self, loss, grad_norm=None):
        """The iteration's loss and gradient norm (tensors, possibly on the device): ends its
        timing."""
        seconds = time.perf_counter() - self.t0
        if self.cfg.compile and _compiled_graphs() > self.graphs_before:  # it compiled a graph
            self.stats["compile_seconds"] += seconds
        else:
            self.stats["train_seconds"] += seconds
        if self.cfg.compile:
            self.stats["compiled_graphs"] = _compiled_graphs() - self.graphs
        self.stats["iter"] += 1
        self.pending.append((self.stats["iter"] - 1, loss, grad_norm))
        if (
            not torch.is_tensor(loss)
            or loss.device.type == "cpu"
            or self.stats["iter"] % SYNC_EVERY == 0
        ):
            self.read_losses()
        if self.stats["iter"] % SYNC_EVERY == 0:
            self.bar.set_postfix(
                loss=f"{np.mean(self.stats['losses'][-SYNC_EVERY:]):.4f}", refresh=False
            )

    def every(self, n):
        """Whether the iteration just recorded is a multiple of n or the last (losses read back
        first)."""
        due = self.stats["iter"] % n == 0 or self.stats["iter"] == self.iters
        if due:
            self.read_losses()
        return due

    def read_losses(self):
        """Read the pending losses and gradient norms back (waits for the device), and check the
        weights: anything non-finite stops the run, saving nothing."""
        if not self.pending:
            return
        t0 = time.perf_counter()
        pending = [
            (it, float(loss), 0.0 if g is None else float(g)) for it, loss, g in self.pending
        ]
        finite_weights = bool(
            torch.stack([p.isfinite().all() for p in self.state["model"].parameters()]).all()
        )
        self.stats["train_seconds"] += time.perf_counter() - t0
        for it, loss, norm in pending:
            if not math.isfinite(loss):
                self.stop(f"loss became {loss} at iteration {it}")
            if not math.isfinite(norm):
                self.stop(f"the gradient norm became {norm} at iteration {it} (loss {loss:.4g})")
        if not finite_weights:
            self.stop(f"a weight became non-finite by iteration {pending[-1][0]}")
        self.stats["losses"] += [loss for _, loss, _ in pending]
        self.pending.clear()

    def stop(self, what):
        """Exit 1 with one line: what went wrong, and the command that continues this method and
        seed from the last checkpoint (all of whose steps were finite) at a lower learning rate."""
        kept = (
            f"the last checkpoint, {self.path} at iteration {self.saved_iter}, holds finite steps "
            "only"
            if self.saved_iter is not None
            else "no checkpoint was written before it"
        )
        lower = self.cfg.lr / 10
        command = resume_command(
            self.cfg, self.method, lr=lower, min_lr=min(self.cfg.min_lr, lower)
        )
        self.bar.close()
        fail(
            f"{what} ({self.desc}); {kept}. Later, the run's own command with --resume finishes "
            "the other methods and seeds, keeping those that finished. Continue this one with a "
            f"lower learning rate: {command}",
            status=1,
        )

    def log(self, metrics):
        """Append {iter, layer_updates, train_seconds, **metrics} to the learning curve and to
        curve.jsonl."""
        self.read_losses()
        if self.cfg.compile:  # the evaluation's graphs too
            self.stats["compiled_graphs"] = _compiled_graphs() - self.graphs
        n = self.stats["iter"]
        self.stats["curve"].append(
            {
                "iter": n,
                "layer_updates": n * self.layers_per_iter,
                "train_seconds": self.stats["train_seconds"],
                **metrics,
            }
        )
        with open(self.curve_path, "a") as f:
            f.write(json.dumps(self.stats["curve"][-1]) + "\n")
        self.bar.set_postfix(
            loss=f"{np.mean(self.stats['losses'][-self.cfg.eval_every :]):.4f}", **metrics
        )

    def checkpoint(self):
        """Save `state`, the random streams, the stats and cfg atomically to the run's checkpoint;
        the one before becomes ckpt.prev.pt."""
        self.read_losses()
        state = {
            "state": {name: _get_state(obj) for name, obj in self.state.items()},
            "rng": global_rng_state(),
            "stats": self.stats,
            "config": dataclasses.asdict(self.cfg),
            "device": self.device.type,
        }
        if os.path.exists(self.path):
            os.replace(self.path, self.prev_path)
        save_atomic(state, self.path)
        self.saved_iter = self.stats["iter"]


def _compiled_graphs():
    """Graphs torch.compile has made in this process so far (Dynamo's counter)."""
    if "torch._dynamo" not in sys.modules:  # nothing compiled yet
        return 0
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


class Many:
    """A list of optimizers (one per block) checkpointed as one object."""

    def __init__(self, items):
        self.items = items

    def state_dict(self):
        return [item.state_dict() for item in self.items]

    def load_state_dict(self, states):
        for item, state in zip(self.items, states):
            item.load_state_dict(state)


def ema_gamma(std):
    """The exponent γ of a power-function EMA whose profile has relative std σ_rel = `std`: the
    largest root of σ_rel² = (γ+1) / ((γ+2)²(γ+3)) (EDM2, Karras et al. 2024, §3.1)."""
    t = std**-2
    return float(max(r.real for r in np.roots([1, 7, 16 - t, 12 - t]) if abs(r.imag) < 1e-9))


class EMA:
    """Power-function EMA of a module's parameters (EDM2, Karras et al. 2024, §3.1): after its t-th
    update θ_ema ← β_t·θ_ema + (1 − β_t)·θ, β_t = (1 − 1/t)^(γ+1). It weighs the weights after
    update s ∝ s^γ, an average over the last part of the updates so far whose std is σ_rel (`std`)
    of their number, whatever the run's length; the initial weights get no weight."""

    def __init__(self, module, std):
        self.module, self.std, self.gamma, self.updates = module, std, ema_gamma(std), 0
        self.params = [p.detach().clone() for p in module.parameters()]

    @torch.no_grad()
    def update(self):
        self.updates += 1
        beta = (1 - 1 / self.updates) ** (self.gamma + 1)
        torch._foreach_lerp_(self.params, [p.detach() for p in self.module.parameters()], 1 - beta)

    def state_dict(self):
        return {"params": self.params, "updates": self.updates}

    def load_state_dict(self, state):
        for ema, saved in zip(self.params, state["params"]):
            ema.copy_(saved)
        self.updates = state["updates"]


@contextmanager
def averaged(emas):
    """Inside the block, each EMA's module holds the averaged weights; its own weights are restored
    after."""
    own = [[p.detach().clone() for p in ema.module.parameters()] for ema in emas]
    with torch.no_grad():
        for ema in emas:
            torch._foreach_copy_(list(ema.module.parameters()), ema.params)
    try:
        yield
    finally:
        with torch.no_grad():
            for ema, params in zip(emas, own):
                torch._foreach_copy_(list(ema.module.parameters()), params)


def measure_memory(
    module, optimizer, step, trained=lambda module, optimizer: (module.parameters(), optimizer)
):
    """Training memory of step(module, optimizer), on deep copies so the run is untouched
    (db.training_memory).

    `trained(module, optimizer)` picks the parameters and the optimizer that the step trains.
    """
    module, optimizer = copy.deepcopy((module, optimizer))
    return db.training_memory(lambda: step(module, optimizer), *trained(module, optimizer))


def blocks_of(model):
    """The separately trained parts of a model: a container's blocks, or a plain network as one
    block."""
    return list(model.blocks) if hasattr(model, "blocks") else [model]


def measure_blocks(model, optimizers, step, blocks):
    """Training memory of step(model, optimizers, b) for each block b trained; the largest is the
    run's figure."""
    per_block = [
        measure_memory(
            model,
            optimizers,
            lambda m, o, b=b: step(m, o, b),
            trained=lambda m, o, b=b: (blocks_of(m)[b].parameters(), o[b]),
        )
        for b in blocks
    ]
    return max(per_block, key=lambda m: m["total"]), per_block


def describe_blocks(cfg, model, split):
    """One line: blocks, layers, γ and the partition's boundaries σ_0 < ... < σ_B."""
    return (
        f"diffusionblocks: B={cfg.blocks} blocks of {split} layers, γ={cfg.gamma}, {cfg.partition} "
        f"partition σ={[round(s, 4) for s in model.sigmas.tolist()]}"
    )


def save_block(cfg, model, memory, stats, iters, ema=None):
    """--block b: save block b alone to --out/block<b>.pt, with its memory, time and EMA, for
    --assemble."""
    save_atomic(
        {
            "block": model.blocks[cfg.block].state_dict(),
            "memory": memory,
            **({"ema": ema.state_dict()} if ema else {}),
            "seconds_per_iter": stats["train_seconds"] / iters,
            "iters": iters,
            "train_seconds": stats["train_seconds"],
            **{k: stats[k] for k in ("resumed_with",) if k in stats},
            "config": dataclasses.asdict(cfg),
        },
        os.path.join(cfg.out, f"block{cfg.block}.pt"),
    )
    print(
        f"saved block {cfg.block} to {cfg.out}/block{cfg.block}.pt; "
        f"when every block is trained: --method diffusionblocks --assemble --out {cfg.out}"
    )


def assemble(cfg, script, headline, model, evaluate, device, emas=()):
    """--assemble: load block b (and its EMA into emas[b], if given) from --out/block<b>.pt (each
    trained in its own process) and evaluate."""
    paths = [os.path.join(cfg.out, f"block{b}.pt") for b in range(cfg.blocks)]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        fail(
            f"--assemble needs every block file; missing {missing}. Train each with "
            f"--method diffusionblocks --block b --out {cfg.out}"
        )
    saved = [
        load_saved(
            p,
            cfg,
            (
                "block",
                "assemble",
                "resume",
                "overwrite",
                "out",
                "seeds",
                *RESUME_FIELDS,
                *HARMLESS_FIELDS,
            ),
            "--assemble",
            device,
        )
        for p in paths
    ]
    for block, s in zip(model.blocks, saved):
        block.load_state_dict(s["block"])
    for ema, s in zip(emas, saved):
        ema.load_state_dict(s["ema"])
    memory = max((s["memory"] for s in saved), key=lambda m: m["total"])
    result = {
        **evaluate(model),
        "train_memory_bytes": memory["total"],
        "train_memory": memory,
        "seconds_per_iter": sum(s["train_seconds"] for s in saved) / sum(s["iters"] for s in saved),
        "iters": sum(s["iters"] for s in saved),
        "train_seconds": sum(s["train_seconds"] for s in saved),
        "blocks": cfg.blocks,
        "gamma": cfg.gamma,
        "partition": cfg.partition,
    }
    resumed = {f"block{b}": s["resumed_with"] for b, s in enumerate(saved) if "resumed_with" in s}
    if resumed:  # a block resumed at another --lr
        result["resumed_with"] = resumed
    metrics = write_metrics(cfg, script, "assembled", result, device)
    report.print_table(metrics["methods"], headline)
    return metrics


# ----------------------------------------------------------------------------------------------
# Metrics, comparison table, plots
# ----------------------------------------------------------------------------------------------


def write_metrics(cfg, script, method, result, device):
    """Merge one method's result into --out/metrics.json: the run (script, dataset, preset, seed,
    device, torch, python: its bundled pydoc text differs between releases, config) and one entry
    per method."""
    path = os.path.join(cfg.out, "metrics.json")
    metrics = read_metrics(cfg.out) or {"methods": {}}
    config = {k: v for k, v in dataclasses.asdict(cfg).items()}
    metrics.update(
        script=script,
        dataset=cfg.dataset,
        preset=cfg.preset,
        seed=cfg.seed,
        device=str(device),
        torch=torch.__version__,
        python=platform.python_version(),
        config=config,
    )
    metrics["methods"][method] = result
    write_json(metrics, path)
    return metrics


def read_metrics(out):
    """--out/metrics.json's content ({} when there is none)."""
    path = os.path.join(out, "metrics.json")
    return read_json(path) if os.path.exists(path) else {}


def methods_to_run(cfg, methods):
    """The methods --method picks; with --resume, only those that --out/metrics.json does not hold
    yet: the methods that finished are kept, not trained or evaluated again."""
    done = read_metrics(cfg.out).get("methods", {}) if cfg.resume else {}
    for method in methods if cfg.method == "all" else [cfg.method]:
        if method in done:
            print(f"{method}: finished, kept from {cfg.out}/metrics.json")
        else:
            yield method


def method_result(stats, memory, extra):
    """One method's entry of metrics.json: last evaluation, training memory and time, extras,
    learning curve."""
    return {
        **stats["curve"][-1],
        "train_memory_bytes": memory["total"],
        "train_memory": memory,
        "seconds_per_iter": stats["train_seconds"] / stats["iter"],
        "iters": stats["iter"],
        "train_seconds": stats["train_seconds"],
        **extra,
        "curve": stats["curve"],
        **{
            k: stats[k]
            for k in ("resumed_with", "compile_seconds", "compiled_graphs")
            if k in stats
        },
    }


def write_study(cfg, script, runs, name, table, **extra):
    """A study's table to --out/<name>.txt and its runs to <name>.json, laid out like metrics.json
    (so that --seeds can summarise them) → the JSON's content."""
    with open(os.path.join(cfg.out, f"{name}.txt"), "w") as f:
        f.write(table + "\n")
    result = {
        "script": script,
        "dataset": cfg.dataset,
        "preset": cfg.preset,
        "seed": cfg.seed,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "config": dataclasses.asdict(cfg),
        **extra,
        "methods": runs,
    }
    write_json(result, os.path.join(cfg.out, f"{name}.json"))
    return result


def summarize_seeds(runs, out):
    """Mean ± std (sample std) of every numeric per-method value over the seeds' metrics.json
    files; a method that only some seeds ran (e.g. backprop beside a --method diffusionblocks
    seed) over those seeds, listed in its "seeds"."""
    methods = {}
    for name in dict.fromkeys(name for r in runs for name in r["methods"]):
        have = [r for r in runs if name in r["methods"]]
        methods[name] = {} if len(have) == len(runs) else {"seeds": [r["seed"] for r in have]}
        for key, value in have[0]["methods"][name].items():
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if numeric and all(key in r["methods"][name] for r in have):
                values = [r["methods"][name][key] for r in have]
                std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
                methods[name][key] = {"mean": float(np.mean(values)), "std": std, "values": values}
    summary = {k: v for k, v in runs[0].items() if k not in ("methods", "seed")}
    summary.update(seeds=[r["seed"] for r in runs], methods=methods)
    write_json(summary, os.path.join(out, "summary.json"))
    return summary


def run_seeds(main, cfg, headline, baseline="backprop"):
    """--seeds 0,1,2: run main(cfg) per seed into --out/seed<s>, then write and print mean ± std."""
    if not cfg.seeds:
        return main(cfg)
    seeds = [int(s) for s in cfg.seeds.split(",")]  # checked by parse_config
    runs = []
    for seed in seeds:
        runs.append(
            main(
                dataclasses.replace(
                    cfg, seed=seed, seeds="", out=os.path.join(cfg.out, f"seed{seed}")
                )
            )
        )
    summary = summarize_seeds(runs, cfg.out)
    print(f"\nmean ± std over seeds {seeds} ({cfg.out}/summary.json):")
    report.print_table(summary["methods"], headline, baseline)
    return summary
