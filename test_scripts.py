"""Smoke tests of the task scripts: each runs as a user would run it, on its `smoke` preset, in seconds.

Run: python -m pytest -q test_scripts.py      (about half a minute on a 2-core CPU)
"""
import json
import math
import os
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
# Tiny models gain nothing from threads, and a second process on a 2-core machine makes OpenMP threads
# spin against each other (a 50x slowdown measured), so the subprocesses run single-threaded.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_script(*args, timeout=120):
    return subprocess.run([sys.executable, *args], cwd=HERE, env=ENV, capture_output=True, text=True, timeout=timeout)


def test_dit_smoke_writes_both_methods_with_finite_metrics(tmp_path):
    out = tmp_path / "run"
    result = run_script("train_dit.py", "--preset", "smoke", "--out", str(out), "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    methods = json.loads((out / "metrics.json").read_text())["methods"]
    assert set(methods) == {"backprop", "diffusionblocks"}
    for r in methods.values():
        for key in ("fid", "test_denoise_loss", "train_memory_bytes", "sample_seconds_per_image"):
            assert math.isfinite(r[key]) and r[key] >= 0, (key, r[key])
    bp, dbk = methods["backprop"], methods["diffusionblocks"]
    assert bp["layer_evals_per_sample"] == dbk["blocks"] * dbk["layer_evals_per_sample"]  # one block per step
    assert dbk["train_memory_bytes"] < bp["train_memory_bytes"]
    assert (out / "samples.png").exists() and (out / "comparison.png").exists()


def test_dit_ablation_runs_every_block_count_and_both_partitions(tmp_path):
    result = run_script("train_dit.py", "--preset", "smoke", "--ablation", "--layers", "6", "--out", str(tmp_path),
                        "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    runs = json.loads((tmp_path / "ablation.json").read_text())["methods"]
    assert {(r["blocks"], r["partition"]) for r in runs.values()} == {
        (1, "equiprob"), (2, "equiprob"), (3, "equiprob"), (4, "equiprob"), (6, "equiprob"), (3, "uniform")}
    for r in runs.values():  # γ = 0; each of the 6 smoke sampling steps runs one block of 6/B layers, twice (guidance)
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
    assert len(lines) == 1 and lines[0].startswith("error:") and "--patch 3" in lines[0], result.stderr


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    """Orthogonal zero-mean columns have a diagonal sample covariance, where FD = ‖Δμ‖² + Σ_k (s_a,k − s_b,k)²."""
    sys.path.insert(0, HERE)
    from train_dit import frechet_distance
    hadamard = torch.tensor([[1.0]], dtype=torch.float64)
    for _ in range(4):
        hadamard = torch.cat([torch.cat([hadamard, hadamard], 1), torch.cat([hadamard, -hadamard], 1)])  # (16, 16)
    columns = hadamard[:, 1:4]  # orthogonal, each with mean 0 and sum of squares 16
    scale_a, scale_b = torch.tensor([1.0, 2.0, 0.5]).double(), torch.tensor([3.0, 1.0, 0.5]).double()
    mean_a, mean_b = torch.tensor([0.0, 1.0, -2.0]).double(), torch.tensor([1.0, 1.0, 0.0]).double()
    a, b = columns * scale_a + mean_a, columns * scale_b + mean_b
    n = len(columns)
    std_a, std_b = scale_a * math.sqrt(n / (n - 1)), scale_b * math.sqrt(n / (n - 1))  # unbiased sample std
    expected = float((mean_a - mean_b).square().sum() + (std_a - std_b).square().sum())
    assert abs(frechet_distance(a, b) - expected) < 1e-9 * max(1.0, expected)
    assert abs(frechet_distance(a, a)) < 1e-9


def test_vit_smoke_trains_all_methods_and_one_block_uses_less_memory(tmp_path):
    out = tmp_path / "run"
    result = run_script("train_vit.py", "--preset", "smoke", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    methods = json.loads((out / "metrics.json").read_text())["methods"]
    assert set(methods) == {"backprop", "diffusionblocks", "local"}
    for r in methods.values():
        assert 0 <= r["test_acc"] <= 1 and r["train_memory_bytes"] > 0 and r["seconds_per_iter"] > 0
    bp, dbk = methods["backprop"], methods["diffusionblocks"]
    assert dbk["iters"] == dbk["blocks"] * bp["iters"]  # compute matching: every block gets N updates
    parts = ("parameters", "gradients", "optimizer_state", "activations")
    assert dbk["train_memory_bytes"] == sum(dbk["train_memory"][p] for p in parts)
    assert dbk["train_memory"]["parameters"] < bp["train_memory"]["parameters"]  # one block of the three


def test_vit_blocks_trained_in_separate_processes_assemble(tmp_path):
    for b in range(3):
        result = run_script("train_vit.py", "--preset", "smoke", "--method", "diffusionblocks", "--block", str(b),
                            "--out", str(tmp_path))
        assert result.returncode == 0, result.stderr[-2000:]
        assert (tmp_path / f"block{b}.pt").exists()
    result = run_script("train_vit.py", "--preset", "smoke", "--method", "diffusionblocks", "--assemble",
                        "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assembled = json.loads((tmp_path / "metrics.json").read_text())["methods"]["assembled"]
    assert 0 <= assembled["test_acc"] <= 1 and assembled["iters"] == 3 * 30


def test_vit_resume_continues_from_the_checkpoint(tmp_path):
    args = ["train_vit.py", "--preset", "smoke", "--method", "backprop", "--out", str(tmp_path)]
    assert run_script(*args, "--steps", "15").returncode == 0
    result = run_script(*args, "--steps", "30", "--resume")
    assert result.returncode == 0 and "resumed" in result.stdout + result.stderr, result.stderr[-2000:]
    curve = json.loads((tmp_path / "metrics.json").read_text())["methods"]["backprop"]["curve"]
    assert [c["iter"] for c in curve] == [15, 30]


def test_vit_more_blocks_than_layers_is_a_one_line_error(tmp_path):
    result = run_script("train_vit.py", "--preset", "smoke", "--blocks", "5", "--out", str(tmp_path))
    assert result.returncode == 2 and result.stderr.strip().startswith("error:") and "layers" in result.stderr
