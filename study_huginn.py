"""The Huginn validation study (results/README.md, "What made it learn"): the runs on the validation
text (5 per cent of the text before the test split, never the test split) that chose
train_huginn.py's model and its first settings (the later iterations, wrong-hint rate and learning
rate: the runs in results/README.md beside their commands).

  python study_huginn.py --seed 1 --out runs/huginn_study    # every flag of train_huginn.py applies

Each run of VARIANTS is train_huginn.py --validation with its flags, at the SHORT or EARLIER part of
--steps and LR of --lr (the preset's values when the study ran), into --out/<name>/ as in
results/huginn_cpu_validation/<name>/; AR_REFERENCE is train_lm.py's autoregressive transformer
trained by backprop on the same text. study.txt and study.json list, per run, the validation metrics
after training, the validation accuracy at each evaluation (the learning curve), and for
DiffusionBlocks the accuracy of each --grid × --readout of its chain. Not reproduced:
k1_without_input_norm(_lr6e-3), made before the model's input_norm existed. Nothing here is needed
to use the method.
"""

import dataclasses
import json
import os
import subprocess
import sys

import torch

import common
import train_huginn

SHORT = 1 / 2  # 600 of the cpu preset's 1200 iterations (--steps 600 in results/README.md)
EARLIER = 2 / 3  # 800: the cpu preset's iterations when this study ran
LR = 3 / 5  # 3e-3 of the cpu preset's 5e-3: its learning rate when this study ran
VARIANTS = {  # name: (train_huginn.py flags beside --validation, fraction of --steps)
    # the plain transformer's depth
    "k1_input_norm": (dict(method="bptt", mean_iters=1, bptt=1), SHORT),
    "bptt_k16_600": (dict(method="bptt", mean_iters=16), SHORT),
    # the committed run was stopped after iteration 400
    "bptt_k32_partial": (dict(method="bptt"), EARLIER),
    # the wrong-hint rate (0.8, 0.9 at 1200 iterations: on the H200, results/README.md)
    "db_mislabel0.2": (dict(method="diffusionblocks", mislabel=0.2), EARLIER),
    "db_mislabel0.4": (dict(method="diffusionblocks", mislabel=0.4), EARLIER),
    "db_mislabel0.6": (dict(method="diffusionblocks", mislabel=0.6), EARLIER),
}
AR_REFERENCE = "ar_backprop_reference"  # train_lm.py --model ar --method backprop, SHORT of --steps
KEPT = (
    "val_next_token_acc",
    "val_ce",
    "val_sample_acc",
    "val_trigram_acc",
    "iters",
    "train_memory_bytes",
    "seconds_per_iter",
    "train_seconds",
)  # of each run's metrics.json, with the read-outs


@torch.no_grad()
def readout_accuracies(cfg, run_dir):
    """The accuracy of DiffusionBlocks' chain (saved in run_dir) at the test K for every --grid ×
    --readout: {split}_next_token_acc_{grid}_{readout}."""
    device = common.pick_device(cfg.device)
    corpus = train_huginn.load_corpus(cfg, device)
    model = train_huginn.build_model(cfg, "diffusionblocks", len(corpus.chars)).to(device)
    path = os.path.join(run_dir, "diffusionblocks", "ckpt.pt")
    saved = torch.load(path, map_location=device, weights_only=False)
    model.load_state_dict(saved["state"]["model"])
    K, hits = train_huginn.test_iters(cfg), {}
    with common.autocast(device):
        for x in corpus.test_eval.split(cfg.batch_size):
            x, y = x[:, :-1].to(device), x[:, 1:].to(device)
            for grid in ("boundaries", "final"):  # every call's logits (K, N, n, V)
                calls = train_huginn.next_token_logits(model, x, K, None, "mean", grid, "all")
                calls = calls.float()
                for readout, logits in (("last", calls[-1]), ("sum", calls.log_softmax(-1).sum(0))):
                    key = f"{corpus.split}_next_token_acc_{grid}_{readout}"
                    hits[key] = hits.get(key, 0) + int((logits.argmax(-1) == y).sum())
    return {key: value / (len(corpus.test_eval) * cfg.seq_len) for key, value in hits.items()}


def variant(cfg, name):
    """train_huginn.py --validation with the flags of VARIANTS[name], into --out/name → its method's
    metrics."""
    flags, fraction = VARIANTS[name]
    run = dataclasses.replace(
        cfg,
        validation=True,
        steps=round(fraction * cfg.steps),
        lr=LR * cfg.lr,
        out=os.path.join(cfg.out, name),
        **flags,
    )
    r = train_huginn.main(run)["methods"][flags["method"]]
    return {**r, **readout_accuracies(run, run.out)} if flags["method"] == "diffusionblocks" else r


def ar_reference(cfg):
    """train_lm.py's AR transformer by backprop on the same validation text, its own preset's sizes
    (a subprocess: only its command line is relied on) → its metrics."""
    out = os.path.join(cfg.out, AR_REFERENCE)
    command = [
        sys.executable,
        "train_lm.py",
        "--model",
        "ar",
        "--method",
        "backprop",
        "--validation",
        "--preset",
        cfg.preset,
        "--dataset",
        cfg.dataset,
        "--data-dir",
        cfg.data_dir,
        "--device",
        cfg.device,
        "--seed",
        str(cfg.seed),
        "--steps",
        str(round(SHORT * cfg.steps)),
        "--eval-every",
        str(cfg.eval_every),
        "--out",
        out,
    ]
    if subprocess.run(command, cwd=os.path.dirname(os.path.abspath(__file__))).returncode:
        common.fail(f"{' '.join(command[1:])} failed", status=1)
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)["methods"]["backprop"]


def study(cfg):
    """Every run of the study on the validation text → {name: its metrics}, also in study.json and
    study.txt."""
    os.makedirs(cfg.out, exist_ok=True)
    runs, rows = (
        {},
        [
            f"{'run':<22} {'iters':>5} {'val_acc':>7} {'val_ce':>6} {'draw acc':>8}  "
            "val_acc at each evaluation; DiffusionBlocks: each read-out (grid_readout)"
        ],
    )
    for name in [*VARIANTS, AR_REFERENCE]:
        r = variant(cfg, name) if name in VARIANTS else ar_reference(cfg)
        readouts = {key: value for key, value in r.items() if key.startswith("val_next_token_acc_")}
        runs[name] = {
            **{key: r[key] for key in KEPT},
            **readouts,
            "curve": [[point["iter"], point["val_next_token_acc"]] for point in r["curve"]],
        }
        rows.append(
            f"{name:<22} {r['iters']:>5} {r['val_next_token_acc']:>7.4f} {r['val_ce']:>6.3f} "
            f"{r['val_sample_acc']:>8.4f}  "
            + " ".join(f"{it}: {acc:.4f}" for it, acc in runs[name]["curve"])
            + "".join(
                f"; {key.removeprefix('val_next_token_acc_')} {value:.4f}"
                for key, value in readouts.items()
            )
        )
    table = f"trigram val_acc {runs[AR_REFERENCE]['val_trigram_acc']:.4f}\n" + "\n".join(rows)
    print(table)
    result = common.write_study(cfg, "study_huginn.py", runs, "study", table)
    return result


if __name__ == "__main__":
    config = common.parse_config(
        train_huginn.Config,
        train_huginn.PRESETS,
        train_huginn.METHODS,
        check=train_huginn.check_config,
    )
    if config.method != "all" or config.resume:
        common.fail(
            "study_huginn.py trains its own list of models on validation text; drop --method and "
            "--resume"
        )
    common.run_seeds(study, config, "val_next_token_acc", baseline="bptt")
