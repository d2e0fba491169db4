"""Tests of what a run of hours needs: a divergence that loses nothing, the EMA of the weights,
--compile, the learning curve on disk, and the FID feature network's cache. Each runs a script's
smoke preset, as a user would.

Run: python -m pytest -q test_long_runs.py      (about 2 minutes on a 2-core CPU; a few more when
torch.compile has no cache yet)
"""

import json
import math
import os
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

import common
from test_scripts import kill_at_checkpoint, without_timing

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # single-threaded subprocesses (see test_scripts.py)
DIT = ["train_dit.py", "--preset", "smoke", "--method", "backprop"]


def run_script(*args, timeout=300):
    return subprocess.run(
        [sys.executable, *args], cwd=HERE, env=ENV, capture_output=True, text=True, timeout=timeout
    )


def test_a_divergence_loses_nothing_and_the_run_continues_with_another_lr(tmp_path):
    """A healthy run killed after a checkpoint, resumed with --lr 1e6: the loss turns non-finite,
    exit 1 with one line naming a --resume command, and the checkpoint file is byte for byte the
    healthy one. That command, with the run's own --lr, ends exactly as the uninterrupted run
    (metrics.json, and curve.jsonl = its curve); with another --lr, metrics.json records the
    change."""
    flags = [
        *DIT,
        "--steps",
        "60",
        "--ckpt-every",
        "5",
        "--eval-every",
        "30",
        "--data-dir",
        str(tmp_path),
    ]
    assert run_script(*flags, "--out", str(tmp_path / "whole")).returncode == 0
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    out, ckpt = tmp_path / "run", tmp_path / "run" / "backprop" / "ckpt.pt"
    killed_at = kill_at_checkpoint([*flags, "--out", str(out)], ckpt)
    healthy = ckpt.read_bytes()
    result = run_script(*flags, "--out", str(out), "--resume", "--lr", "1e6")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(errors) == 1 and "loss became" in errors[0], (
        result.stderr[-2000:]
    )
    assert ckpt.read_bytes() == healthy and f"at iteration {killed_at}," in errors[0]
    command = shlex.split(errors[0].split("learning rate: ", 1)[1])
    lr = command.index("--lr")
    assert command[:2] == ["python", "train_dit.py"] and command[lr + 1] == "100000", command
    assert command[command.index("--out") + 1] == str(out) and "--resume" in command
    shutil.copytree(out, tmp_path / "other_lr")
    # the run's own lr: as if it had never diverged
    result = run_script(*command[1:lr], "--lr", "1e-3")
    assert result.returncode == 0, result.stderr[-2000:]
    resumed = json.loads((out / "metrics.json").read_text())
    assert without_timing(resumed) == without_timing(whole)
    curve = [
        json.loads(line) for line in (out / "backprop" / "curve.jsonl").read_text().splitlines()
    ]
    assert curve == resumed["methods"]["backprop"]["curve"] and [c["iter"] for c in curve] == [
        30,
        60,
    ]
    command[command.index("--out") + 1] = str(tmp_path / "other_lr")
    result = run_script(*command[1:lr], "--lr", "5e-4")
    assert result.returncode == 0 and "lr 0.001 → 0.0005" in result.stdout, result.stderr[-2000:]
    r = json.loads((tmp_path / "other_lr" / "metrics.json").read_text())["methods"]["backprop"]
    assert r["resumed_with"] == [{"iter": killed_at, "lr": [1e-3, 5e-4]}]
    assert r["fid"] != whole["methods"]["backprop"]["fid"]


def test_ema_follows_its_recurrence_and_restores_the_weights():
    """common.EMA after n updates equals the recurrence θ_ema ← d_k·θ_ema + (1 − d_k)·θ_k, written
    in float64; `averaged` swaps the average in and the weights back; state_dict round-trips."""
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    ema = common.EMA(net, decay=0.9)
    reference = [p.detach().double().clone() for p in net.parameters()]
    for k in range(1, 30):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        ema.update()
        d = min(0.9, (1 + k) / (10 + k))  # the warm-up, then the decay
        reference = [
            d * r + (1 - d) * p.detach().double() for r, p in zip(reference, net.parameters())
        ]
    for e, r in zip(ema.params, reference):
        torch.testing.assert_close(e.double(), r, rtol=1e-5, atol=1e-6)
    weights = [p.detach().clone() for p in net.parameters()]
    with common.averaged([ema]):
        assert all(torch.equal(p, e) for p, e in zip(net.parameters(), ema.params))
    assert all(torch.equal(p, w) for p, w in zip(net.parameters(), weights))
    copy = common.EMA(nn.Linear(3, 2), decay=0.9)
    copy.load_state_dict(ema.state_dict())
    assert copy.updates == 29 and all(torch.equal(a, b) for a, b in zip(copy.params, ema.params))


def test_ema_adds_metrics_leaves_the_raw_run_alone_and_each_block_averages_its_own_steps(
    tmp_path,
):
    """The same run with --ema 0 and --ema 0.9: identical raw-weight metrics and curve; only the
    second reports fid_ema; a DiffusionBlocks block's EMA is updated exactly when that block trains
    (36 steps over 3 blocks)."""
    runs = {}
    for decay in ("0", "0.9"):
        out = tmp_path / decay
        result = run_script(
            "train_dit.py",
            "--preset",
            "smoke",
            "--ema",
            decay,
            "--out",
            str(out),
            "--data-dir",
            str(tmp_path),
        )
        assert result.returncode == 0, result.stderr[-2000:]
        runs[decay] = json.loads((out / "metrics.json").read_text())["methods"]
    for method in ("backprop", "diffusionblocks"):
        plain, averaged = runs["0"][method], runs["0.9"][method]
        for key in ("fid", "test_denoise_loss", "train_memory_bytes"):
            assert plain[key] == averaged[key], (method, key)
        assert [c["test_denoise_loss"] for c in plain["curve"]] == [
            c["test_denoise_loss"] for c in averaged["curve"]
        ]
        assert (
            "fid_ema" not in plain
            and math.isfinite(averaged["fid_ema"])
            and averaged["fid_ema"] != averaged["fid"]
        )
    saved = torch.load(tmp_path / "0.9" / "diffusionblocks" / "ckpt.pt", weights_only=False)
    updates = [state["updates"] for state in saved["state"]["ema"]]
    assert sum(updates) == 36 and min(updates) > 0


def test_compile_gives_the_same_losses_on_a_cpu_smoke_run(tmp_path):
    """--compile (torch.compile of each trained network) repeats the uncompiled run's training
    losses and metrics."""
    runs = {}
    for flag in ("--no-compile", "--compile"):
        out = tmp_path / flag
        result = run_script(
            *DIT,
            flag,
            "--ema",
            "0",
            "--steps",
            "4",
            "--eval-every",
            "4",
            "--fid-samples",
            "20",
            "--sample-steps",
            "2",
            "--out",
            str(out),
            "--data-dir",
            str(tmp_path),
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        losses = torch.load(out / "backprop" / "ckpt.pt", weights_only=False)["stats"]["losses"]
        runs[flag] = losses, json.loads((out / "metrics.json").read_text())["methods"]["backprop"]
    (plain, plain_metrics), (compiled, compiled_metrics) = runs["--no-compile"], runs["--compile"]
    np.testing.assert_allclose(compiled, plain, rtol=1e-4)
    for key in ("test_denoise_loss", "fid"):
        assert compiled_metrics[key] == pytest.approx(plain_metrics[key], rel=1e-3), key


def test_fid_feature_cache_follows_the_data_not_its_name(tmp_path):
    """npz:PATH rewritten with other images and one more class: a new feature network is trained
    (the old cache would crash on the class count or give wrong features), and the first data still
    finds its own."""
    path, rng = tmp_path / "images.npz", np.random.default_rng(0)
    datasets = {
        "first": (rng.integers(0, 256, (200, 8, 8), dtype=np.uint8), 3),
        "second": (rng.integers(0, 256, (200, 8, 8), dtype=np.uint8), 4),
    }
    cached = []
    for name in ("first", "second", "first"):
        x, classes = datasets[name]
        np.savez(path, x=x, y=np.arange(200) % classes)
        result = run_script(
            *DIT,
            "--ema",
            "0",
            "--steps",
            "2",
            "--eval-every",
            "2",
            "--fid-samples",
            "20",
            "--fid-classifier-steps",
            "5",
            "--sample-steps",
            "2",
            "--dataset",
            f"npz:{path}",
            "--out",
            str(tmp_path / f"run{len(cached)}"),
            "--data-dir",
            str(tmp_path / "data"),
        )
        assert result.returncode == 0, result.stderr[-2000:]
        cached.append(sorted(p.name for p in (tmp_path / "data").glob("fid-cnn-*")))
    assert len(cached[0]) == 1 and len(cached[1]) == 2 and cached[2] == cached[1]
