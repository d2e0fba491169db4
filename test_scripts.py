"""Smoke tests of the task scripts: each runs as a user would run it, on its `smoke` preset, in
seconds.

Run: python -m pytest -q test_scripts.py      (about 6 of the full suite's 8 minutes, 2-core CPU)
"""

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
# Tiny models gain nothing from threads, and a second process on a 2-core machine makes OpenMP
# threads spin against each other (a 50x slowdown measured), so the subprocesses run
# single-threaded.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_script(*args, timeout=120):
    return subprocess.run(
        [sys.executable, *args], cwd=HERE, env=ENV, capture_output=True, text=True, timeout=timeout
    )


def test_dit_smoke_writes_both_methods_with_finite_metrics(tmp_path):
    out = tmp_path / "run"
    result = run_script(
        "train_dit.py", "--preset", "smoke", "--out", str(out), "--data-dir", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr[-2000:]
    methods = json.loads((out / "metrics.json").read_text())["methods"]
    assert set(methods) == {"backprop", "diffusionblocks"}
    for r in methods.values():
        for key in ("fid", "test_denoise_loss", "train_memory_bytes", "sample_seconds_per_image"):
            assert math.isfinite(r[key]) and r[key] >= 0, (key, r[key])
    bp, dbk = methods["backprop"], methods["diffusionblocks"]
    # one block per step
    assert bp["layer_evals_per_sample"] == dbk["blocks"] * dbk["layer_evals_per_sample"]
    assert dbk["train_memory_bytes"] < bp["train_memory_bytes"]
    assert (out / "samples.png").exists() and (out / "comparison.png").exists()


def test_dit_ablation_runs_every_block_count_and_both_partitions(tmp_path):
    result = run_script(
        "study_dit.py",
        "--preset",
        "smoke",
        "--layers",
        "6",
        "--out",
        str(tmp_path),
        "--data-dir",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    runs = json.loads((tmp_path / "ablation.json").read_text())["methods"]
    assert {(r["blocks"], r["partition"]) for r in runs.values()} == {
        (1, "equiprob"),
        (2, "equiprob"),
        (3, "equiprob"),
        (4, "equiprob"),
        (6, "equiprob"),
        (3, "uniform"),
    }
    # γ = 0; each of the 6 smoke sampling steps runs one block of 6/B layers, twice (guidance)
    for r in runs.values():
        assert r["gamma"] == 0.0 and math.isfinite(r["fid"])
        if 6 % r["blocks"] == 0:  # equal blocks, equal share of the steps
            assert r["layer_evals_per_sample"] == 6 * 2 * (6 // r["blocks"])
        else:  # B = 4: blocks of 2, 2, 1, 1 layers
            assert 6 * 2 * 1 < r["layer_evals_per_sample"] < 6 * 2 * 2
    assert (tmp_path / "ablation.png").exists()


def test_dit_bad_patch_is_a_one_line_error_with_status_2(tmp_path):
    result = run_script("train_dit.py", "--preset", "smoke", "--patch", "3", "--out", str(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--patch 3" in lines[0], (
        result.stderr
    )


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    """Orthogonal zero-mean columns have a diagonal sample covariance, where FD = ‖Δμ‖² + Σ_k (s_a,k
    − s_b,k)²."""
    sys.path.insert(0, HERE)
    from fid import frechet_distance

    hadamard = torch.tensor([[1.0]], dtype=torch.float64)
    for _ in range(4):
        # (16, 16)
        hadamard = torch.cat(
            [torch.cat([hadamard, hadamard], 1), torch.cat([hadamard, -hadamard], 1)]
        )
    columns = hadamard[:, 1:4]  # orthogonal, each with mean 0 and sum of squares 16
    scale_a, scale_b = (
        torch.tensor([1.0, 2.0, 0.5]).double(),
        torch.tensor([3.0, 1.0, 0.5]).double(),
    )
    mean_a, mean_b = torch.tensor([0.0, 1.0, -2.0]).double(), torch.tensor([1.0, 1.0, 0.0]).double()
    a, b = columns * scale_a + mean_a, columns * scale_b + mean_b
    n = len(columns)
    # unbiased sample std
    std_a, std_b = scale_a * math.sqrt(n / (n - 1)), scale_b * math.sqrt(n / (n - 1))
    expected = float((mean_a - mean_b).square().sum() + (std_a - std_b).square().sum())
    assert abs(frechet_distance(a, b) - expected) < 1e-9 * max(1.0, expected)
    assert abs(frechet_distance(a, a)) < 1e-9


def test_vit_smoke_trains_both_methods_and_one_block_uses_less_memory(tmp_path):
    out = tmp_path / "run"
    result = run_script("train_vit.py", "--preset", "smoke", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    methods = json.loads((out / "metrics.json").read_text())["methods"]
    assert set(methods) == {"backprop", "diffusionblocks"}
    for r in methods.values():
        assert 0 <= r["test_acc"] <= 1 and r["train_memory_bytes"] > 0 and r["seconds_per_iter"] > 0
    bp, dbk = methods["backprop"], methods["diffusionblocks"]
    # compute matching: B·N iterations, each block drawn uniformly, so N updates per block in
    # expectation (Binomial(B·N, 1/B), std 4.5 at N = 30), counted by each block's AdamW
    assert dbk["iters"] == dbk["blocks"] * bp["iters"] == 90
    saved = torch.load(out / "diffusionblocks" / "ckpt.pt", weights_only=False)
    updates = [int(opt["state"][0]["step"]) for opt in saved["state"]["opts"]]
    assert sum(updates) == 90 and all(abs(u - 30) < 5 * 4.5 for u in updates), updates
    # memory against the parameter count of what a step trains: fp32 weights, as many gradient
    # bytes, AdamW's two moments and a 4-byte step counter per tensor
    sys.path.insert(0, HERE)
    from train_vit import Config, PRESETS, build_model

    cfg = Config(**PRESETS["smoke"])
    for method, r in methods.items():
        model = build_model(cfg, method, 8, 1, 10)
        block = max(getattr(model, "blocks", [model]), key=lambda b: sum(1 for _ in b.parameters()))
        params = [p for p in block.parameters()]
        nbytes = 4 * sum(p.numel() for p in params)
        memory = r["train_memory"]
        assert memory["parameters"] == memory["gradients"] == nbytes, method
        assert memory["optimizer_state"] == 2 * nbytes + 4 * len(params), method
    # one block of the three
    assert dbk["train_memory"]["parameters"] < bp["train_memory"]["parameters"]
    # the read-out study is study_vit.py's, not the script's
    assert not any("readouts" in key for key in dbk)


def test_vit_local_baseline_trains_piece_after_piece_on_frozen_features(tmp_path):
    """study_vit.py --method local: every piece gets --steps updates, one after another (its
    AdamW's step counts); a piece stays frozen once its turn ended (the same weights in the
    checkpoints at iterations 60 and 90); the memory is one piece's, and the frozen pieces' bytes
    are counted apart."""
    out = tmp_path / "local"
    args = ("--preset", "smoke", "--ckpt-every", "30", "--out", str(out))
    result = run_script("study_vit.py", "--method", "local", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    r = json.loads((out / "metrics.json").read_text())["methods"]["local"]
    assert r["iters"] == 90 and 0 <= r["test_acc"] <= 1
    final = torch.load(out / "local" / "ckpt.pt", weights_only=False)["state"]
    at60 = torch.load(out / "local" / "ckpt.prev.pt", weights_only=False)["state"]["model"]
    assert [int(opt["state"][0]["step"]) for opt in final["opts"]] == [30, 30, 30]
    pieces = [{k: v for k, v in final["model"].items() if k.startswith(f"{b}.")} for b in range(3)]
    for b, piece in enumerate(pieces):
        same = all(torch.equal(at60[k], v) for k, v in piece.items())
        assert same == (b < 2), b  # pieces 0 and 1 were done by iteration 60
        assert r["train_memory_per_block"][b]["parameters"] == 4 * sum(
            v.numel() for v in piece.values())
    assert r["frozen_parameter_bytes"] == 4 * sum(v.numel() for p in pieces[:2] for v in p.values())


def test_vit_study_reads_every_variant_out_on_validation_data(tmp_path):
    result = run_script("study_vit.py", "--preset", "smoke", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    runs = json.loads((tmp_path / "ablation.json").read_text())["methods"]
    assert set(runs) == {
        "backprop",
        "edm-mislabel0.0",
        "uniform-mislabel0.0",
        "uniform-mislabel0.2",
    }
    r = runs["uniform-mislabel0.2"]
    chains = {key.rsplit("/", 1)[0] for key in r if "@" in key}  # start/grid/calls
    assert len(chains) == 12 and sum(key.startswith("mean/boundaries/12/sum@") for key in r) == 12
    # the study reads the saved model out again: its default chain's last call is the script's own
    # val_acc
    assert r["mean/final/3/sum@3"] == pytest.approx(r["val_acc"], abs=1e-6)
    # after one call, sum = last
    assert r["mean/boundaries/3/sum@1"] == r["mean/boundaries/3/last@1"]
    assert (tmp_path / "uniform-mislabel0.2" / "readouts.png").exists()


def test_vit_blocks_trained_in_separate_processes_or_under_torchrun_assemble(tmp_path):
    for b in range(3):
        result = run_script(
            "train_vit.py",
            "--preset",
            "smoke",
            "--method",
            "diffusionblocks",
            "--block",
            str(b),
            "--out",
            str(tmp_path),
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert (tmp_path / f"block{b}.pt").exists()
    result = run_script(
        "train_vit.py",
        "--preset",
        "smoke",
        "--method",
        "diffusionblocks",
        "--assemble",
        "--out",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assembled = json.loads((tmp_path / "metrics.json").read_text())["methods"]["assembled"]
    assert 0 <= assembled["test_acc"] <= 1 and assembled["iters"] == 3 * 30
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "3",
        "train_vit.py",
        "--preset",
        "smoke",
        "--method",
        "diffusionblocks",
        "--out",
        str(tmp_path / "torchrun"),
    ]
    result = subprocess.run(
        torchrun, cwd=HERE, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for b in range(3):  # rank b trained block b, exactly as the plain process with --block b did
        alone, ranked = (
            torch.load(d / f"block{b}.pt", weights_only=False)["block"]
            for d in (tmp_path, tmp_path / "torchrun")
        )
        assert alone.keys() == ranked.keys() and all(
            torch.equal(alone[k], ranked[k]) for k in alone
        )
    result = run_script(
        "train_vit.py",
        "--preset",
        "smoke",
        "--method",
        "diffusionblocks",
        "--assemble",
        "--out",
        str(tmp_path / "torchrun"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        json.loads((tmp_path / "torchrun" / "metrics.json").read_text())["methods"]["assembled"][
            "test_acc"
        ]
        == assembled["test_acc"]
    )
    # one process per block, DiffusionBlocks only
    for wrong in (["--nproc_per_node", "2"], ["--method", "backprop"]):
        args = (
            [*torchrun[:5], "2", *torchrun[6:]]
            if wrong[0] == "--nproc_per_node"
            else [*torchrun[:-4], "backprop", *torchrun[-3:]]
        )
        result = subprocess.run(
            args, cwd=HERE, env=ENV, capture_output=True, text=True, timeout=300
        )
        # (torchrun adds its own report)
        assert result.returncode != 0 and "error: " in result.stderr, result.stderr[-2000:]
    (tmp_path / "metrics.json").unlink()  # the block files themselves refuse a mismatched assembly
    for flag, value in (("--blocks", "2"), ("--seed", "1"), ("--gamma", "0.1")):
        result = run_script(
            "train_vit.py",
            "--preset",
            "smoke",
            "--method",
            "diffusionblocks",
            "--assemble",
            flag,
            value,
            "--out",
            str(tmp_path),
        )
        assert (
            result.returncode == 2
            and flag[2:] in result.stderr
            and "Traceback" not in result.stderr
        ), flag


def test_vit_resume_checks_the_settings_and_the_checkpoint(tmp_path):
    """--resume with the run's settings keeps a method that finished (its metrics.json entry), and
    continues one that did not from its checkpoint (here: the last one, nothing left to do); with
    other settings, from a corrupt checkpoint, or another run's block files: one-line errors,
    exit 2."""
    args = ["train_vit.py", "--preset", "smoke", "--method", "backprop", "--out", str(tmp_path)]
    assert run_script(*args).returncode == 0
    before = (tmp_path / "metrics.json").read_text()
    result = run_script(*args, "--resume")
    assert result.returncode == 0 and "backprop: finished, kept" in result.stdout
    assert (tmp_path / "metrics.json").read_text() == before
    (tmp_path / "metrics.json").unlink()  # as if the run had stopped before writing it
    result = run_script(*args, "--resume")
    assert result.returncode == 0 and "resumed" in result.stdout + result.stderr, result.stderr[
        -2000:
    ]
    after = json.loads((tmp_path / "metrics.json").read_text())["methods"]["backprop"]
    before = json.loads(before)["methods"]["backprop"]
    assert after["curve"] == before["curve"] and after["test_acc"] == before["test_acc"]
    (tmp_path / "metrics.json").unlink()  # the checkpoint itself must also refuse other settings
    # --lr and --min-lr may change (test_long_runs.py)
    result = run_script(*args, "--resume", "--batch-size", "16")
    assert (
        result.returncode == 2
        and "batch_size" in result.stderr
        and "Traceback" not in result.stderr
    ), result.stderr[-500:]
    ckpt = tmp_path / "backprop" / "ckpt.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # truncated
    result = run_script(*args, "--resume")
    assert (
        result.returncode == 2
        and "cannot read" in result.stderr
        and "Traceback" not in result.stderr
    )


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--lr", "nan"),
        ("--lr", "0"),
        ("--weight-decay", "nan"),
        ("--min-lr", "inf"),
        ("--width", "0"),
        ("--heads", "0"),
        ("--patch", "0"),
        ("--seed", "-1"),
        ("--warmup", "-1"),
        ("--warmup", "2"),
        ("--block", "-2"),
        ("--seeds", "0,0"),
        ("--seeds", "0,-1"),
        ("--gamma", "0.5"),
        ("--mislabel", "1"),
        ("--steps", "0"),
        ("--calls", "-1"),
    ],
)
def test_bad_numeric_flags_are_one_line_errors_before_any_work(flag, value, tmp_path):
    """Each out-of-range or non-finite number: exit 2, one `error:` line naming the flag, nothing
    written."""
    result = run_script(
        "train_vit.py", "--preset", "smoke", flag, value, "--out", str(tmp_path / "run")
    )
    assert result.returncode == 2 and result.stderr.startswith("error: " + flag), result.stderr[
        -500:
    ]
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "flags",
    [
        ["--method", "diffusionblocks", "--block", "0", "--seeds", "0,1"],
        ["--method", "diffusionblocks", "--assemble", "--seeds", "0,1"],
        ["--method", "backprop", "--block", "0"],
        ["--block", "3"],
    ],
)
def test_impossible_flag_combinations_are_one_line_errors(flags, tmp_path):
    result = run_script("train_vit.py", "--preset", "smoke", *flags, "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and result.stderr.startswith("error: --block"), result.stderr[
        -500:
    ]
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_mdm_head_of_odd_width_is_a_one_line_error(tmp_path):
    """RoPE rotates channel pairs: --width 36 --heads 12 (heads of 3) stops before any work."""
    result = run_script(
        "train_lm.py",
        "--preset",
        "smoke",
        "--width",
        "36",
        "--heads",
        "12",
        "--out",
        str(tmp_path / "r"),
    )
    assert result.returncode == 2 and result.stderr.startswith("error: --width"), result.stderr[
        -500:
    ]
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_out_that_is_a_file_or_holds_other_settings_is_refused(tmp_path):
    """--out naming a file, or a folder whose metrics.json came from other settings: exit 2 before
    any work; the same settings with another --method merge into it."""
    (tmp_path / "file").write_text("x")
    result = run_script("train_vit.py", "--preset", "smoke", "--out", str(tmp_path / "file"))
    assert result.returncode == 2 and result.stderr.startswith("error: --out"), result.stderr[-500:]
    out = str(tmp_path / "run")
    assert (
        run_script(
            "train_vit.py", "--preset", "smoke", "--method", "backprop", "--out", out
        ).returncode
        == 0
    )
    result = run_script(
        "train_vit.py",
        "--preset",
        "smoke",
        "--method",
        "diffusionblocks",
        "--width",
        "48",
        "--out",
        out,
    )
    assert (
        result.returncode == 2 and "width" in result.stderr and "Traceback" not in result.stderr
    ), result.stderr[-500:]
    assert (
        run_script(
            "train_vit.py", "--preset", "smoke", "--method", "diffusionblocks", "--out", out
        ).returncode
        == 0
    )
    with open(os.path.join(out, "metrics.json")) as f:
        assert set(json.load(f)["methods"]) == {"backprop", "diffusionblocks"}


def _images(n, shape=(8, 8), dtype=np.uint8, high=256):
    rng = np.random.default_rng(0)
    return (rng.random((n, *shape)) * high).astype(dtype)


BAD_NPZ = {  # name: arrays of an npz that must be refused with one line
    "no y": dict(x=_images(40)),
    "x_test without y_test": dict(x=_images(40), y=np.arange(40) % 3, x_test=_images(10)),
    "lengths differ": dict(x=_images(40), y=np.arange(30) % 3),
    "negative label": dict(x=_images(40), y=np.arange(40) % 3 - 1),
    "huge label": dict(x=_images(40), y=np.full(40, 10**9)),
    "one-hot labels": dict(x=_images(40), y=np.eye(3, dtype=np.int64)[np.arange(40) % 3]),
    "float labels": dict(x=_images(40), y=np.arange(40) % 3 * 1.0),
    "two images": dict(x=_images(2), y=np.arange(2)),
    "2-D x": dict(x=_images(40, (64,)), y=np.arange(40) % 3),
    "grey train, RGB test": dict(
        x=_images(40), y=np.arange(40) % 3, x_test=_images(10, (8, 8, 3)), y_test=np.arange(10) % 3
    ),
    "channels first": dict(x=_images(40, (3, 8, 8)), y=np.arange(40) % 3),
    "not square": dict(x=_images(40, (8, 6)), y=np.arange(40) % 3),
    "floats above 1": dict(x=_images(40, dtype=np.float32), y=np.arange(40) % 3),
}


@pytest.mark.parametrize("case", list(BAD_NPZ) + ["not an npz"])
def test_bad_npz_is_a_one_line_error(case, tmp_path):
    """Every malformed npz:PATH: exit 2 with one `error:` line, no traceback, before any
    training."""
    path = tmp_path / "data.npz"
    if case == "not an npz":
        path.write_bytes(b"plain bytes")
    else:
        np.savez(path, **BAD_NPZ[case])
    result = run_script(
        "train_vit.py",
        "--preset",
        "smoke",
        "--dataset",
        f"npz:{path}",
        "--out",
        str(tmp_path / "r"),
    )
    assert result.returncode == 2 and result.stderr.startswith("error:"), (
        case,
        result.stderr[-800:],
    )
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, case


def test_float_npz_images_are_scaled_not_truncated(tmp_path):
    """Float images in [0, 1] train like the same images as uint8 0..255 (not cast to {0, 1})."""
    sys.path.insert(0, HERE)
    import data

    x = _images(40)
    np.savez(tmp_path / "u8.npz", x=x, y=np.arange(40) % 3)
    np.savez(tmp_path / "f.npz", x=x.astype(np.float32) / 255, y=np.arange(40) % 3)
    u8, f = (data.load_images(f"npz:{tmp_path / n}", "data", 0) for n in ("u8.npz", "f.npz"))
    assert torch.equal(u8["x_train"], f["x_train"]) and torch.equal(u8["y_test"], f["y_test"])


@pytest.mark.parametrize("content", [b"\x00\x01binary\x00", "caf\u00e9".encode("latin-1")])
def test_txt_that_is_not_utf8_text_is_refused(content, tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(content * 100)
    result = run_script(
        "train_lm.py", "--preset", "smoke", "--dataset", f"txt:{path}", "--out", str(tmp_path / "r")
    )
    assert (
        result.returncode == 2
        and result.stderr.startswith("error:")
        and "Traceback" not in result.stderr
    )


def test_vit_more_blocks_than_layers_is_a_one_line_error(tmp_path):
    result = run_script(
        "train_vit.py", "--preset", "smoke", "--blocks", "5", "--out", str(tmp_path)
    )
    assert (
        result.returncode == 2
        and result.stderr.strip().startswith("error:")
        and "layers" in result.stderr
    )


# ----------------------------------------------------------------------------------------------
# train_lm.py
# ----------------------------------------------------------------------------------------------


def _lm_smoke(model, out):
    result = run_script("train_lm.py", "--model", model, "--preset", "smoke", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    methods = json.loads((out / "metrics.json").read_text())["methods"]
    assert set(methods) == {"backprop", "diffusionblocks"}
    bp, dbk = methods["backprop"], methods["diffusionblocks"]
    # compute matching: every block gets N updates
    assert dbk["iters"] == dbk["blocks"] * bp["iters"]
    assert dbk["train_memory_bytes"] < bp["train_memory_bytes"]
    for r in methods.values():
        assert math.isfinite(r["gen_ppl"]) and r["gen_ppl"] >= 1 and r["samples"]
    assert (out / "comparison.png").exists()
    return methods


def test_lm_mdm_smoke_writes_both_methods_with_finite_bpc(tmp_path):
    methods = _lm_smoke("mdm", tmp_path)
    # a model no better than uniform scores about log2 V: far below 100 bits
    for r in methods.values():
        assert 0 < r["test_bpc"] < 100 and abs(sum(r["test_bpc_per_block"]) - r["test_bpc"]) < 1e-9
        assert len(r["test_bpc_per_block"]) == 3
    assert (tmp_path / "bpc_per_block.png").exists()


def test_lm_ar_smoke_writes_both_methods_with_finite_metrics(tmp_path):
    methods = _lm_smoke("ar", tmp_path)
    for r in methods.values():
        assert (
            0 <= r["test_next_token_acc"] <= 1 and math.isfinite(r["test_ce"]) and r["test_ce"] > 0
        )
        assert math.isfinite(r["gen_ppl_t1"]) and r["gen_ppl_t1"] >= 1
        assert 0 <= r["test_sample_acc"] <= 1
    # AR's paper values
    assert methods["diffusionblocks"]["blocks"] == 4 and methods["diffusionblocks"]["gamma"] == 0.1
    # study_lm.py reads every read-out out of the checkpoint: the preset's is the headline
    import study_lm

    readouts = study_lm.chain_readouts(tmp_path)
    assert len(readouts) == 6
    assert readouts["final/sum"] == methods["diffusionblocks"]["test_next_token_acc"]
    # block 0 alone: one call of block 0 on σ_max·ε, ε from the run's seed, here computed by hand on
    # the smoke preset's one test batch of 8 windows
    import train_lm

    cfg = train_lm.Config(**train_lm.PRESETS["ar"]["smoke"], model="ar")
    corpus = train_lm.load_corpus(cfg, torch.device("cpu"))
    model = train_lm.build_model(cfg, "diffusionblocks", len(corpus.chars))
    saved = torch.load(tmp_path / "diffusionblocks" / "ckpt.pt", weights_only=False)
    model.load_state_dict(saved["state"]["model"])
    x = corpus.test_eval
    assert len(x) == cfg.batch_size == 8
    eps = torch.randn(8, cfg.seq_len, cfg.width, generator=torch.Generator().manual_seed(0))
    sigma = float(model.sigmas[-1])  # EDM's c_in = 1/√(σ² + σ_data²), c_noise = ln(σ)/4, per token
    c_in, c_noise = (sigma**2 + model.sigma_data**2) ** -0.5, math.log(sigma) / 4
    with torch.no_grad():
        c_noise = torch.full((8, cfg.seq_len), c_noise)
        logits = model.blocks[0](c_in * sigma * eps, c_noise, x[:, :-1])  # (8, n, V)
    count = 8 * cfg.seq_len
    y = x[:, 1:]
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
    assert readouts["block0/ce"] == pytest.approx(float(ce) / count, rel=1e-5)
    assert readouts["block0/acc"] == int((logits.argmax(-1) == x[:, 1:]).sum()) / count
    # greedy, T × top-p, bridge × s, the chain sampled
    _sample_study(tmp_path, frontier=1 + 2 * 2 + 2 * 3 + 2)


def _sample_study(run, frontier):
    """study_samples.py on a smoke run: both protocol points and the frontier; deterministic
    decoders repeat one continuation for each of a prompt's k = 3, so their distinct_4 is ≤ 1/3."""
    out = run / "samples"
    flags = ["--runs", str(run), "--prompts", "4", "--per-prompt", "3", "--judge-steps", "5"]
    flags += ["--bootstrap", "20", "--frontier", "small"]
    command = ["study_samples.py", *flags, "--out", str(out), "--mauve-bootstrap", "2"]
    result = run_script(*command)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((out / "seed0" / "samples.json").read_text())["decoders"]
    assert [r["paper"] for r in rows] == [True, True] + [False] * frontier
    assert (rows[0]["temperature"], rows[0]["top_p"]) == (1.0, 0.95)
    for r in rows:
        assert r["gen_ppl"] >= 1 and 0 < r["distinct_4"] <= 1 and r["entropy"] >= 0
        assert r["gen_ppl_ci"][0] <= r["gen_ppl"] <= r["gen_ppl_ci"][1]
        if r["temperature"] == 0 and ("greedy" in r["decoder"] or "s = 0," in r["decoder"]):
            assert r["distinct_4"] <= 1 / 3 + 1e-9, r
    assert (out / "frontier.png").exists() and (out / "summary.json").exists()
    # run again: every decoder reused, the same numbers
    again = run_script(*command)
    assert again.returncode == 0 and again.stdout.count("reused from") == len(rows), again.stdout
    assert json.loads((out / "seed0" / "samples.json").read_text())["decoders"] == rows
    # without the optional mauve-text: everything else, and a line that says what was skipped
    blocked = "import runpy, sys; sys.modules['mauve'] = None; sys.argv = sys.argv[1:]; "
    blocked += "runpy.run_path('study_samples.py', run_name='__main__')"
    out = run / "no_mauve"
    result = run_script("-c", blocked, "study_samples.py", *flags, "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "MAUVE skipped" in result.stdout
    rows = json.loads((out / "seed0" / "samples.json").read_text())["decoders"]
    assert len(rows) == 2 + frontier and not any(k.startswith("mauve") for k in rows[0])


def test_lm_block_study_reads_each_gap_and_memory_ratio_off_the_runs(tmp_path):
    """study_lm.py over finished runs (metrics.json written here): nothing trains, and each row is
    the hand-computed gap to the same seed's backprop and backprop's memory over the block's."""
    acc = {("single", 2): 0.55, ("single", 4): 0.50, ("two", 2): 0.45, ("two", 4): 0.40}
    for seed in (0, 1):
        for (stream, blocks), a in acc.items():
            methods = {
                "diffusionblocks": {
                    "test_next_token_acc": a + seed / 100,
                    "train_memory_bytes": 1000 * blocks + 100 * seed,
                }
            }
            if (stream, blocks) == ("single", 4):
                methods["backprop"] = {"test_next_token_acc": 0.6, "train_memory_bytes": 8000}
            folder = tmp_path / f"{stream}_B{blocks}" / f"seed{seed}"
            folder.mkdir(parents=True)
            (folder / "metrics.json").write_text(json.dumps({"methods": methods}))
    result = run_script("study_lm.py", "--out", str(tmp_path), "--seeds", "0,1", "--blocks", "2,4")
    assert result.returncode == 0, result.stderr[-2000:]
    table = json.loads((tmp_path / "tradeoff.json").read_text())["table"]
    two_b2 = next(e for e in table if (e["stream"], e["blocks"]) == ("two", 2))
    assert two_b2["gap_per_seed"] == pytest.approx([0.45 - 0.6, 0.46 - 0.6])
    assert two_b2["memory_ratio_per_seed"] == pytest.approx([8000 / 2000, 8000 / 2100])
    assert two_b2["layers_per_block"] == 4 and len(table) == 4
    assert (tmp_path / "tradeoff.png").exists()
    bad = run_script("study_lm.py", "--out", str(tmp_path), "--blocks", "3,4")
    assert bad.returncode == 2 and "divide" in bad.stderr


@pytest.mark.parametrize(
    "args, names",
    [
        (["--runs", "nowhere", "--out", "x"], "--runs"),
        (["--runs", ".", "--out", "x", "--prompts", "0"], "--prompts"),
        (["--runs", ".", "--out", "x", "--mauve-bootstrap", "-1"], "--mauve-bootstrap"),
    ],
)
def test_study_samples_bad_flags_are_one_line_errors_before_any_work(args, names, tmp_path):
    result = run_script("study_samples.py", *args)
    assert result.returncode == 2 and names in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_the_judge_scores_each_continued_character_given_all_before_it():
    """study_samples.judge_text against the judge run on each prefix alone: the summed −log p and
    mean entropy (bits) of the continuation's characters."""
    import study_samples
    import train_lm

    torch.manual_seed(0)
    judge = train_lm.CausalLM(7, 16, 2, 2).eval()
    for p in judge.parameters():  # the final layer starts at zero: make every weight matter
        torch.nn.init.normal_(p, std=0.3)
    prompts, continuations = torch.randint(7, (3, 5)), torch.randint(7, (3, 4))
    nll, entropy, features = study_samples.judge_text(judge, prompts, continuations)
    x = torch.cat([prompts, continuations], 1)
    for r in range(3):
        with torch.no_grad():
            log_p = [
                judge(None, None, x[r : r + 1, : 5 + j])[0, -1].log_softmax(-1) for j in range(4)
            ]
        assert float(nll[r]) == pytest.approx(
            -sum(float(lp[c]) for lp, c in zip(log_p, continuations[r])), rel=1e-5
        )
        bits = [float(-(lp.exp() * lp).sum()) / math.log(2) for lp in log_p]
        assert float(entropy[r]) == pytest.approx(sum(bits) / 4, rel=1e-5)
    assert features.shape == (3, 16)


def test_mauve_of_identical_features_is_one_and_of_disjoint_ones_the_closed_form():
    """Disjoint supports: the divergence curve is ((1 − λ)^c, λ^c), whose area is (c!)²/(2c)!: 1/6 at
    c = 2, 1/252 at c = 5 (Pillutla et al. 2021's curve, integrated by hand)."""
    pytest.importorskip("mauve", reason="optional: pip install mauve-text faiss-cpu")
    import study_samples

    a = np.random.default_rng(0).normal(size=(300, 8))
    same, far = study_samples.mauve_scores(a, a.copy()), study_samples.mauve_scores(a, a + 100)
    assert same == pytest.approx({"mauve_5": 1.0, "mauve_2": 1.0}, abs=0.01)
    assert far == pytest.approx({"mauve_5": 1 / 252, "mauve_2": 1 / 6}, abs=0.005)


def test_lm_ar_two_stream_block_depends_only_on_the_clean_past_and_its_own_slot():
    """Two streams: perturbing clean token j moves the logits of targets p > j only; perturbing slot
    p moves slot p only."""
    net = awake_ar_block("two")
    # slots hold targets 1..6
    x, z, c_noise = torch.randint(11, (1, 6)), torch.randn(1, 6, 8), torch.randn(1, 6)
    out = net(z, c_noise, x)  # (1, 6, 11)
    for j in range(6):
        moved = net(z, c_noise, torch.cat([x[:, :j], (x[:, j : j + 1] + 1) % 11, x[:, j + 1 :]], 1))
        changed = (moved - out).abs().amax(-1)[0] > 1e-6  # (6,) per slot k, target position k + 1
        assert changed.tolist() == [k + 1 > j for k in range(6)], j
        z2 = z.clone()
        z2[:, j] += 1
        changed = (net(z2, c_noise, x) - out).abs().amax(-1)[0] > 1e-6
        assert changed.tolist() == [k == j for k in range(6)], j


def test_lm_ar_single_stream_block_leaks_no_later_character():
    """One stream: the logits at position i (predicting x_{i+1}) move with the tokens x_j and the
    hints z_j (of x_{j+1}) at positions j ≤ i only, so x_{i+1} reaches position i through its own
    hint alone; the gradient of position i's loss agrees (zero on the later tokens' embeddings)."""
    net = awake_ar_block("single")
    x, z, c_noise = torch.randint(11, (1, 6)), torch.randn(1, 6, 8), torch.randn(1, 6)
    out = net(z, c_noise, x)  # (1, 6, 11): position i predicts x_{i+1}
    for j in range(6):
        moved = net(z, c_noise, torch.cat([x[:, :j], (x[:, j : j + 1] + 1) % 11, x[:, j + 1 :]], 1))
        changed = (moved - out).abs().amax(-1)[0] > 1e-6
        assert changed.tolist() == [i >= j for i in range(6)], j
        z2 = z.clone()
        z2[:, j] += 1
        changed = (net(z2, c_noise, x) - out).abs().amax(-1)[0] > 1e-6
        assert changed.tolist() == [i >= j for i in range(6)], j
    for i in range(6):
        z_in = z.clone().requires_grad_()
        net.zero_grad()
        net(z_in, c_noise, x)[0, i].square().sum().backward()
        used = net.tok.weight.grad.abs().sum(-1) > 0  # (V,) the embeddings position i read
        assert set(torch.nonzero(used)[:, 0].tolist()) == set(x[0, : i + 1].tolist()), i
        assert (z_in.grad[0].abs().sum(-1) > 0).tolist() == [j <= i for j in range(6)], i


def awake_ar_block(stream="two"):
    """A small DiffusionBlocks AR block (train_lm.CausalLM with a target) whose zero-initialised
    weights are drawn at random, so that every path carries a signal; seeded."""
    sys.path.insert(0, HERE)
    from train_lm import CausalLM

    torch.manual_seed(0)
    net = CausalLM(vocab=11, width=16, depth=3, heads=2, target_dim=8, stream=stream)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
    return net


def test_lm_ar_two_stream_layers_equal_one_layer_stack_over_the_concatenation():
    """The AR block's two-stream forward (shared clean modulation, slots' outputs only in the last
    layer) gives the slots' logits of the plain AdaLN-Zero layers run over [noisy ; clean] with
    per-token conditions, concat_mask and RoPE positions [n−m+1..n ; 0..n−1]."""
    from diffusionblocks import concat_mask

    net = awake_ar_block()
    x, c_noise = torch.randint(11, (4, 6)), torch.randn(4, 6)
    N, n = x.shape
    for m in (n, 2, 1):  # training (a slot per position) and generation (the last position only)
        z = torch.randn(N, m, 8)
        h = torch.cat([net.z_in(z), net.tok(x)], 1)  # (N, m+n, D)
        c = torch.cat([net.embed_sigma(c_noise[:, :m]), net.cond.expand(N, n, -1)], 1)
        positions = torch.cat([torch.arange(n - m + 1, n + 1), torch.arange(n)])
        for layer in net.layers:
            h = layer(h, c, concat_mask(n, m), positions)
        expected = net.final(h[:, :m], c[:, :m])  # (N, m, V)
        assert torch.allclose(net(z, c_noise[:, :m], x), expected, atol=1e-5), m


def test_lm_ar_checkpointing_gives_the_same_gradients_from_fewer_saved_bytes():
    """checkpoint=True in the AR block (db.checkpoint_layers), one stream or two: its layers are
    recomputed in backward, so a step gives the plain step's gradients while autograd saves fewer
    bytes (db.training_memory); the flag once did nothing for two streams."""
    import diffusionblocks as db

    x, z, c_noise = torch.randint(11, (4, 6)), torch.randn(4, 6, 8), torch.randn(4, 6)
    for stream in ("single", "two"):
        net = awake_ar_block(stream)
        saved, grads = [], []
        for enabled in (False, True):
            db.checkpoint_layers(net, enabled)
            net.zero_grad()
            step = lambda: net(z, c_noise, x).square().mean().backward()  # noqa: E731
            optimizer = torch.optim.SGD(net.parameters())
            saved.append(db.training_memory(step, net.parameters(), optimizer)["activations"])
            grads.append([p.grad.clone() for p in net.parameters() if p.grad is not None])
        assert saved[1] < 0.7 * saved[0], (stream, saved)
        for plain, checkpointed in zip(*grads):
            torch.testing.assert_close(checkpointed, plain)


def test_lm_mdm_elbo_of_the_uniform_model_is_log2_vocabulary():
    """A predictor that outputs the uniform distribution over V characters costs exactly log2 V bits
    per character."""
    sys.path.insert(0, HERE)
    from diffusionblocks import MaskedDiffusionBlocks
    from train_lm import MaskedDenoiser, mdm_elbo_bits

    V, N, n = 37, 16, 24
    x = torch.randint(V, (N, n), generator=torch.Generator().manual_seed(0))
    uniform = lambda z, t: torch.zeros(*z.shape, V)  # noqa: E731
    bits = mdm_elbo_bits(uniform, x, V, 3, 5, torch.Generator().manual_seed(1))
    assert abs(float(bits.sum()) / N - math.log2(V)) < 1e-6  # float32 cross-entropy
    assert (bits > 0).all()  # every t slice gets draws
    # AdaLN-Zero: 0 logits
    fresh = MaskedDiffusionBlocks([MaskedDenoiser(V, 16, 1, 2, n) for _ in range(3)], V)
    bits = mdm_elbo_bits(fresh.logits, x, fresh.mask_id, 3, 5, torch.Generator().manual_seed(1))
    assert abs(float(bits.sum()) / N - math.log2(V)) < 1e-5


def test_lm_mdm_elbo_matches_quadrature_for_a_t_dependent_model():
    """For logits = t·a (the same on every token), the ELBO is ∫₀¹ mean_i −log2 softmax(t·a)[x_i] dt
    (trapezoid rule)."""
    sys.path.insert(0, HERE)
    from train_lm import mdm_elbo_bits

    V, N, n = 20, 64, 32
    a = 4 * torch.randn(V, generator=torch.Generator().manual_seed(0))
    x = torch.randint(V, (N, n), generator=torch.Generator().manual_seed(1))
    model = lambda z, t: (t[:, None, None] * a).expand(*z.shape, V)  # noqa: E731
    estimate = float(mdm_elbo_bits(model, x, V, 3, 32, torch.Generator().manual_seed(2)).sum()) / N
    ts = torch.linspace(0, 1, 4001, dtype=torch.float64)
    per_t = -torch.log_softmax(ts[:, None] * a.double(), -1)[:, x.flatten()].mean(1) / math.log(2)
    assert abs(estimate - float(torch.trapezoid(per_t, ts))) < 0.02 * float(per_t.mean())


def test_lm_ngram_judge_is_a_normalised_distribution():
    """The judge's P(c | context) sums to 1 over the V characters, for seen and unseen contexts."""
    sys.path.insert(0, HERE)
    from lm_eval import CharNgram

    V = 7
    # characters 4..6 unseen
    train = torch.randint(V, (3000,), generator=torch.Generator().manual_seed(0)) % 4
    judge = CharNgram(train, V, order=4)
    # seen, then never seen
    contexts = torch.cat([train[:5].view(1, 5), torch.tensor([[6, 5, 4, 0, 1]])])
    for context in contexts:
        # (V, 6): every next character
        seqs = torch.cat([context.expand(V, 5), torch.arange(V)[:, None]], 1)
        assert abs(float(judge.log_probs(seqs)[:, -1].exp().sum()) - 1) < 1e-12


def test_lm_bad_model_is_an_error_with_status_2(tmp_path):
    result = run_script(
        "train_lm.py", "--preset", "smoke", "--model", "gru", "--out", str(tmp_path)
    )
    assert result.returncode == 2 and "--model" in result.stderr


# ----------------------------------------------------------------------------------------------
# benchmark.py
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, names",
    [
        (["--blocks", "a,b"], "--blocks"),  # not integers
        (["--blocks", "2,7"], "1..6"),  # more blocks than the smoke models' 6 layers
        (["--blocks", "0"], "1..6"),
        (["--out", "."], "--out"),  # a folder, not a file
    ],
)
def test_benchmark_bad_flags_are_one_line_errors_before_any_work(args, names):
    """Bad --blocks or --out: exit 2 with one `error:` line naming the flag and what is allowed, no
    traceback."""
    result = run_script("benchmark.py", "--smoke", "--device", "cpu", *args)
    assert (
        result.returncode == 2 and result.stderr.startswith("error:") and names in result.stderr
    ), result.stderr
    assert "Traceback" not in result.stderr and "measured" not in result.stdout


def test_benchmark_fitted_bytes_equal_a_real_step_and_a_block_holds_its_layers_plus_a_stem(
    tmp_path,
):
    """--memory fit (steps at batches 2 and 3, activations extrapolated) gives exactly the bytes of
    a step at the stated batch; a DiT block of L/2 layers holds half the layers' parameters plus its
    own stem and head; the layer that checkpointing recomputes holds 1/L of what checkpointing saves
    on L identical layers."""
    rows = {}
    for memory in ("fit", "step"):
        out = tmp_path / f"{memory}.json"
        result = run_script(
            "benchmark.py",
            "--smoke",
            "--device",
            "cpu",
            "--memory",
            memory,
            "--repeats",
            "1",
            "--out",
            str(out),
        )
        assert result.returncode == 0, result.stderr[-2000:]
        rows[memory] = json.loads(out.read_text())
    assert (tmp_path / "fit.png").exists()
    required = {
        "arch",
        "blocks",
        "e2e_bytes",
        "block_bytes_max",
        "memory_ratio",
        "time_ratio",
        "device",
    }
    for fit, step in zip(rows["fit"], rows["step"]):
        assert required <= set(fit) and (fit["arch"], fit["blocks"]) == (
            step["arch"],
            step["blocks"],
        )
        for key in ("e2e", "block_max", "ckpt", "both"):
            assert fit[key] == step[key], (fit["arch"], fit["blocks"], key)
        assert len(fit["block_bytes"]) == fit["blocks"] and fit["time_ratio"] > 0
        assert fit["memory_ratio"] == fit["e2e_bytes"] / fit["block_bytes_max"]
        e2e, ckpt = fit["e2e"], fit["ckpt"]
        # AdamW
        assert (
            e2e["gradients"] == e2e["parameters"]
            and e2e["optimizer_state"] >= 2 * e2e["parameters"]
        )
        assert ckpt["parameters"] == e2e["parameters"] and ckpt["activations"] < e2e["activations"]
    sys.path.insert(0, HERE)
    from train_dit import DiT

    # benchmark's smoke DiT, 0 layers
    stem_and_head = 4 * sum(p.numel() for p in DiT(8, 3, 2, 32, 0, 2, 10).parameters())
    dit = {r["blocks"]: r for r in rows["fit"] if r["arch"] == "dit"}
    # 3 of 6 layers
    assert dit[2]["block_max"]["parameters"] == (dit[2]["e2e"]["parameters"] + stem_and_head) / 2
    assert dit[1]["memory_ratio"] == 1.0  # backprop is the one-block container
    # 6 identical layers: checkpointing keeps their inputs, backward recomputes one layer at a time
    for r in rows["fit"]:
        if r["arch"] in ("vit", "dit", "mdm") and r["blocks"] == 1:
            assert (
                6 * r["ckpt"]["recomputed"]
                == r["e2e"]["activations"] - r["ckpt"]["activations"]
                > 0
            ), r["arch"]
    # both: less than either
    assert dit[2]["both_bytes"] < min(dit[2]["ckpt_bytes"], dit[2]["block_bytes_max"])


# ----------------------------------------------------------------------------------------------
# train_huginn.py
# ----------------------------------------------------------------------------------------------


def test_huginn_smoke_trains_both_methods_and_counts_layer_evaluations(tmp_path):
    result = run_script("train_huginn.py", "--preset", "smoke", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    methods = json.loads((tmp_path / "metrics.json").read_text())["methods"]
    assert set(methods) == {"bptt", "diffusionblocks"}
    for r in methods.values():
        assert (
            0 <= r["test_next_token_acc"] <= 1 and math.isfinite(r["test_ce"]) and r["gen_ppl"] >= 1
        )
        assert [q["iters"] for q in r["quality_vs_iters"]] == [1, 2, 4, 8]  # smoke: mean K = 4
    bp, dbk = methods["bptt"], methods["diffusionblocks"]
    assert dbk["train_layer_evals_per_step"] == 2 + 4 + 2  # one pass of prelude, core and coda
    assert bp["train_layer_evals_per_step"] > 8  # 2 + 4K + 2 with a random K ≥ 1 of mean 4
    assert dbk["train_memory_bytes"] < bp["train_memory_bytes"]
    assert (tmp_path / "quality_vs_iters.png").exists() and (tmp_path / "comparison.png").exists()
    _sample_study(tmp_path, frontier=1 + 2 * 2 + 3 + 2)  # greedy, T × top-p, s, sampled


def test_huginn_study_runs_the_validation_variants(tmp_path):
    result = run_script("study_huginn.py", "--preset", "smoke", "--out", str(tmp_path), timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = json.loads((tmp_path / "study.json").read_text())["methods"]
    assert set(runs) == {
        "k1_input_norm",
        "bptt_k16_600",
        "bptt_k32_partial",
        "db_mislabel0.2",
        "db_mislabel0.4",
        "db_mislabel0.6",
        "ar_backprop_reference",
    }
    # 1/2 and 2/3 of --steps (600 and 800 of the cpu preset's 1200, as in results/README.md)
    assert runs["k1_input_norm"]["iters"] == 6 and runs["db_mislabel0.6"]["iters"] == 8
    # ... at the learning rate of results/README.md's runs, 3e-3 (3/5 of the preset's 5e-3)
    lr = json.loads((tmp_path / "db_mislabel0.6" / "metrics.json").read_text())["config"]["lr"]
    assert lr == pytest.approx(3e-3)
    for name, r in runs.items():  # each run on the validation text, as its own metrics.json says
        saved = json.loads((tmp_path / name / "metrics.json").read_text())
        assert saved["config"]["validation"] and 0 <= r["val_next_token_acc"] <= 1
        assert r["curve"][-1] == [r["iters"], r["val_next_token_acc"]]
    assert (
        json.loads((tmp_path / "db_mislabel0.2" / "metrics.json").read_text())["config"]["mislabel"]
        == 0.2
    )
    # every --grid × --readout, read from the saved run; the default read-out is the script's own
    db = runs["db_mislabel0.6"]
    assert {key for key in db if key.startswith("val_next_token_acc_")} == {
        f"val_next_token_acc_{grid}_{readout}"
        for grid in ("boundaries", "final")
        for readout in ("last", "sum")
    }
    assert db["val_next_token_acc_boundaries_last"] == db["val_next_token_acc"]


def test_huginn_layer_counter_iteration_sampler_and_causality():
    """Counted layer calls = 2 + 4K + 2 (baseline) and 2 + 6K (K Euler steps, coda each step), as
    metrics.json's layer_evals_per_forward (prediction_layers) says; K's
    mean = --mean-iters within 5 standard errors of the closed form; the denoiser at position i
    depends on tokens and states ≤ i only."""
    sys.path.insert(0, HERE)
    from train_huginn import (
        Config,
        RecurrentDepthLM,
        build_model,
        huginn_iters,
        next_token_logits,
        prediction_layers,
    )

    torch.manual_seed(0)
    x = torch.randint(11, (2, 6))
    cfg = Config(width=16, heads=2, seq_len=6)
    net = RecurrentDepthLM(vocab=11, width=16, heads=2, seq_len=6)
    container = build_model(cfg, "diffusionblocks", 11)
    for K in (1, 3, 5):
        for model, method, expected in (
            (net, "bptt", 2 + 4 * K + 2),
            (container, "diffusionblocks", 2 + 6 * K),
        ):
            before = (model.blocks[0] if model is container else model).layer_evals
            next_token_logits(model, x, K)
            counted = (model.blocks[0] if model is container else model).layer_evals - before
            assert counted == expected == prediction_layers(cfg, method, K)
    mean, draws = 8, [huginn_iters(8, torch.Generator().manual_seed(s)) for s in range(4000)]
    # K − 1 ~ Poisson(λ), λ = (mean − 1)·LogNormal(−σ²/2, σ): Var K = E λ + Var λ = 7 + 49·(e^{σ²} −
    # 1), σ = 0.5
    std = math.sqrt(7 + 49 * (math.exp(0.25) - 1))
    assert min(draws) >= 1 and abs(sum(draws) / len(draws) - mean) < 5 * std / math.sqrt(len(draws))
    assert {huginn_iters(1, torch.Generator().manual_seed(s)) for s in range(20)} == {1}
    den = container.blocks[0]
    with torch.no_grad():
        # AdaLN-Zero starts as the identity with a zero head: wake every weight
        for p in den.parameters():
            p.normal_(0, 0.3)
        z, c_noise = torch.randn(2, 6, 16), torch.randn(2, 6)
        out = den(z, c_noise, x)
        for j in range(6):
            moved_x = den(
                z, c_noise, torch.cat([x[:, :j], (x[:, j : j + 1] + 1) % 11, x[:, j + 1 :]], 1)
            )
            z2 = z.clone()
            z2[:, j] += 1
            for moved in (moved_x, den(z2, c_noise, x)):
                changed = (moved - out).abs().amax(-1).amax(0) > 1e-6  # (6,) per position
                assert changed.tolist() == [i >= j for i in range(6)], j


def kill_at_checkpoint(args, ckpt):
    """Start a run, kill -9 it as soon as `ckpt` is written (mid-run: the test fails if the run
    ended first)."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=HERE,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    while not ckpt.exists():
        assert proc.poll() is None, (
            f"the run ended before writing {ckpt}: {proc.stderr.read()[-2000:]}"
        )
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    proc.stderr.close()
    stats = torch.load(ckpt, weights_only=False)["stats"]
    return stats["iter"]


def without_timing(value):
    """metrics.json without what a resumed run may legitimately change: wall times, --resume and
    --out."""
    if isinstance(value, dict):
        return {
            k: without_timing(v)
            for k, v in value.items()
            if "seconds" not in k and k not in ("resume", "out", "cuda_peak")
        }
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


@pytest.mark.parametrize(
    "script, flags, methods",
    [
        ("train_vit.py", [], ["backprop", "diffusionblocks"]),
        ("train_dit.py", [], ["backprop", "diffusionblocks"]),
        ("train_lm.py", ["--model", "mdm"], ["backprop", "diffusionblocks"]),
        ("train_lm.py", ["--model", "ar"], ["backprop", "diffusionblocks"]),
        ("train_huginn.py", [], ["bptt", "diffusionblocks"]),
    ],
)
def test_resume_after_kill_9_repeats_the_uninterrupted_run_exactly(
    tmp_path, script, flags, methods
):
    """Default flags (smoke size, longer so that it can be killed): kill -9 right after a checkpoint
    of each method in turn, --resume each time; metrics.json (curves, metrics, memory) equals the
    uninterrupted run's but for wall times."""
    common = [
        script,
        "--preset",
        "smoke",
        *flags,
        "--steps",
        "60",
        "--ckpt-every",
        "5",
        "--eval-every",
        "30",
        "--data-dir",
        str(tmp_path),
    ]
    assert run_script(*common, "--out", str(tmp_path / "whole"), timeout=600).returncode == 0
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    out = tmp_path / "killed"
    for i, method in enumerate(methods):
        killed_at = kill_at_checkpoint(
            [*common, "--out", str(out), *(["--resume"] if i else [])], out / method / "ckpt.pt"
        )
        assert killed_at < whole["methods"][method]["iters"], (method, killed_at)
    result = run_script(*common, "--out", str(out), "--resume", timeout=600)
    assert result.returncode == 0 and "resumed" in result.stdout + result.stderr, result.stderr[
        -2000:
    ]
    resumed = json.loads((out / "metrics.json").read_text())
    assert without_timing(resumed) == without_timing(whole)


@pytest.mark.parametrize(
    "script",
    [
        "train_vit.py",
        "train_dit.py",
        "train_lm.py",
        "train_huginn.py",
        "benchmark.py",
        "study_samples.py",
    ],
)
def test_help_lists_every_flag(script):
    """-h exits 0 (a '%' in a help text once made argparse crash) and names every field of the
    script's Config as a flag; benchmark.py's and study_samples.py's, every flag their source adds."""
    result = run_script(script, "-h")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-500:]
    if script in ("benchmark.py", "study_samples.py"):
        with open(os.path.join(HERE, script)) as f:
            flags = re.findall(r'add_argument\(\s*"(--[a-z-]+)"', f.read())
    else:
        sys.path.insert(0, HERE)
        config = __import__(script[:-3]).Config
        flags = ["--" + f.name.replace("_", "-") for f in dataclasses.fields(config)]
    assert len(flags) > 8 and [flag for flag in flags if flag not in result.stdout] == []
