"""Tests of what a run of hours needs: nothing lost (a divergence, a non-finite step, a forgotten
--resume, a kill mid-write), resume that names and keeps what it should, the EMA of the weights,
--compile, the learning curve on disk, and the FID feature network's cache. Each runs a script's
smoke preset, as a user would.

Run: python -m pytest -q test_long_runs.py      (about 2 minutes on a 2-core CPU; a few more when
torch.compile has no cache yet)
"""

import dataclasses
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
import lm_eval
import train_lm
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


def test_ema_is_edm2_power_function_average_and_takes_effect_at_the_preset_length():
    """common.EMA after n updates = Σ_t w_t·θ_t with EDM2's closed-form weights w_t = (t^(γ+1) −
    (t−1)^(γ+1)) / n^(γ+1) (no weight on the initial θ_0); their std over t/n is σ_rel; at the cpu
    preset's 1,500 updates per block each σ_rel the help offers gives its own average (the old
    warm-up, min(d, (1+n)/(10+n)), made every decay ≥ 0.995 the same); `averaged` swaps the average
    in and the weights back; state_dict round-trips."""
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    ema = common.EMA(net, std=0.1)
    thetas = []
    for _ in range(40):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        ema.update()
        thetas.append([p.detach().double().clone() for p in net.parameters()])
    n, g = len(thetas), ema.gamma
    w = [(t ** (g + 1) - (t - 1) ** (g + 1)) / n ** (g + 1) for t in range(1, n + 1)]
    for i, e in enumerate(ema.params):
        reference = sum(wt * theta[i] for wt, theta in zip(w, thetas))
        torch.testing.assert_close(e.double(), reference, rtol=1e-5, atol=1e-5)
    n = 1500
    t = np.arange(1, n + 1)
    for std in (0.05, 0.1, 0.2):  # the --ema-std values chosen among (train_dit.py)
        g = common.ema_gamma(std)
        w = (t ** (g + 1) - (t - 1) ** (g + 1)) / n ** (g + 1)
        mean = (w * t / n).sum()
        assert math.sqrt((w * (t / n - mean) ** 2).sum()) == pytest.approx(std, rel=0.01)
    finals = []
    for std in (0.05, 0.1, 0.2):
        torch.manual_seed(0)
        net = nn.Linear(3, 2)
        ema = common.EMA(net, std=std)
        for _ in range(n):
            with torch.no_grad():
                net.weight.add_(0.01)  # a drift: every averaging window sees other weights
            ema.update()
        finals.append(float(ema.params[0][0, 0]))
    assert finals[0] > finals[1] > finals[2], finals  # shorter averages lag less behind the drift
    weights = [p.detach().clone() for p in net.parameters()]
    with common.averaged([ema]):
        assert all(torch.equal(p, e) for p, e in zip(net.parameters(), ema.params))
    assert all(torch.equal(p, w) for p, w in zip(net.parameters(), weights))
    copy = common.EMA(nn.Linear(3, 2), std=0.2)
    copy.load_state_dict(ema.state_dict())
    assert copy.updates == n and all(torch.equal(a, b) for a, b in zip(copy.params, ema.params))


def test_ema_adds_metrics_leaves_the_raw_run_alone_and_each_block_averages_its_own_steps(
    tmp_path,
):
    """The same run with --ema-std 0 and 0.1: identical raw-weight metrics and curve; only the
    second reports fid_ema; a DiffusionBlocks block's EMA is updated exactly when that block trains
    (36 steps over 3 blocks)."""
    runs = {}
    for decay in ("0", "0.1"):
        out = tmp_path / decay
        result = run_script(
            "train_dit.py",
            "--preset",
            "smoke",
            "--ema-std",
            decay,
            "--out",
            str(out),
            "--data-dir",
            str(tmp_path),
        )
        assert result.returncode == 0, result.stderr[-2000:]
        runs[decay] = json.loads((out / "metrics.json").read_text())["methods"]
    for method in ("backprop", "diffusionblocks"):
        plain, averaged = runs["0"][method], runs["0.1"][method]
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
    saved = torch.load(tmp_path / "0.1" / "diffusionblocks" / "ckpt.pt", weights_only=False)
    updates = [state["updates"] for state in saved["state"]["ema"]]
    assert sum(updates) == 36 and min(updates) > 0


def test_compile_gives_the_same_losses_on_a_cpu_smoke_run(tmp_path):
    """--compile (torch.compile of each trained network, inductor) repeats the uncompiled run's
    training losses and metrics, and reports the compiling iterations' time apart."""
    runs = {}
    for flag in ("--no-compile", "--compile"):
        out = tmp_path / flag
        result = run_script(
            *DIT,
            flag,
            "--ema-std",
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
    # compiling takes seconds; the compiled steps a few milliseconds
    assert compiled_metrics["compile_seconds"] > 10 * compiled_metrics["train_seconds"]
    assert "compile_seconds" not in plain_metrics


@pytest.mark.parametrize(
    "script, flags",
    [
        ("train_vit.py", []),
        ("train_dit.py", ["--ema-std", "0", "--fid-samples", "20", "--sample-steps", "2"]),
        ("train_lm.py", ["--model", "mdm"]),
        ("train_lm.py", ["--model", "ar"]),
        ("train_huginn.py", []),
    ],
)
def test_compile_traces_every_script_and_method_once(tmp_path, script, flags):
    """--compile on every script's smoke preset, every method, Dynamo's graphs run without code
    generation (DB_COMPILE_BACKEND=aot_eager): the uncompiled run's losses, and a few graphs per
    method for the whole run, evaluations included (Huginn's varying K and its layer counter once
    recompiled at every call)."""
    args = [script, "--preset", "smoke", *flags, "--steps", "6", "--eval-every", "3"]
    losses, graphs = {}, {}
    for flag in ("--no-compile", "--compile"):
        out = tmp_path / flag
        result = subprocess.run(
            [sys.executable, *args, flag, "--out", str(out), "--data-dir", str(tmp_path)],
            cwd=HERE,
            env={**ENV, "DB_COMPILE_BACKEND": "aot_eager"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        methods = json.loads((out / "metrics.json").read_text())["methods"]
        for method, r in methods.items():
            saved = torch.load(out / method / "ckpt.pt", weights_only=False)
            losses[flag, method] = saved["stats"]["losses"]
            graphs[flag, method] = r.get("compiled_graphs")
    for method in methods:
        np.testing.assert_allclose(
            losses["--compile", method], losses["--no-compile", method], rtol=1e-4, err_msg=method
        )
        assert graphs["--no-compile", method] is None
        assert 1 <= graphs["--compile", method] <= 6, (method, graphs["--compile", method])


def test_a_run_never_starts_over_its_own_checkpoints(tmp_path):
    """A run that crashed before its metrics.json, then the same command again without --resume:
    exit 2 with one line naming --resume and --overwrite, the checkpoints and the learning curve
    byte for byte as they were; ckpt.prev.pt holds the checkpoint before the last, from which
    --resume continues when ckpt.pt is gone; --overwrite starts over, to the same result."""
    args = ["train_vit.py", "--preset", "smoke", "--method", "backprop", "--steps", "20"]
    args += ["--ckpt-every", "5", "--eval-every", "10", "--out", str(tmp_path)]
    assert run_script(*args).returncode == 0
    (tmp_path / "metrics.json").unlink()  # as if it had crashed before writing it
    ckpt, prev = tmp_path / "backprop" / "ckpt.pt", tmp_path / "backprop" / "ckpt.prev.pt"
    files = {p: p.read_bytes() for p in (ckpt, prev, tmp_path / "backprop" / "curve.jsonl")}
    assert [torch.load(p, weights_only=False)["stats"]["iter"] for p in (ckpt, prev)] == [20, 15]
    result = run_script(*args)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(result.stderr.splitlines()) == 1 and "--resume" in result.stderr
    assert "--overwrite" in result.stderr
    assert all(path.read_bytes() == content for path, content in files.items())
    ckpt.unlink()  # as if killed between the two renames of a checkpoint
    result = run_script(*args, "--resume")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resumed {prev} at iteration 15" in result.stdout, result.stdout[-2000:]
    resumed = json.loads((tmp_path / "metrics.json").read_text())
    result = run_script(*args, "--overwrite")
    assert result.returncode == 0 and "resumed" not in result.stdout, result.stderr[-2000:]
    overwritten = json.loads((tmp_path / "metrics.json").read_text())
    assert overwritten["config"]["overwrite"] and not resumed["config"]["overwrite"]
    overwritten["config"]["overwrite"] = False
    assert without_timing(overwritten) == without_timing(resumed)
    result = run_script(*args, "--resume", "--overwrite")
    assert result.returncode == 2 and "choose one" in result.stderr


@pytest.mark.parametrize("what", ["gradient", "weight"])
def test_a_nonfinite_gradient_or_weight_behind_a_finite_loss_is_never_saved(tmp_path, what):
    """A step whose loss is finite but whose gradient is infinite (clipping then writes NaN into the
    weights), or after which a weight is NaN: the run stops with exit 1 before any checkpoint holds
    that step, and the checkpoint it names holds finite weights only."""
    cfg = common.BaseConfig(out=str(tmp_path), ckpt_every=1, eval_every=100, steps=10)
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    state = {"model": model, "opt": optimizer}
    loop = common.Loop(cfg, str(tmp_path / "run"), 10, state, "backprop", 1)
    with pytest.raises(SystemExit) as stop:
        for it in loop:
            loss = model(torch.ones(8, 4)).square().mean()
            optimizer.zero_grad()
            loss.backward()
            if it == 3 and what == "gradient":
                model.weight.grad[0, 0] = math.inf
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if it == 3 and what == "weight":
                with torch.no_grad():
                    model.bias.fill_(math.nan)
            loop.record(loss.detach(), grad_norm)
            if loop.every(cfg.ckpt_every):
                loop.checkpoint()
    assert stop.value.code == 1
    saved = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=False)
    assert saved["stats"]["iter"] == 3  # iterations 0, 1 and 2
    assert all(v.isfinite().all() for v in saved["state"]["model"].values())


def test_metrics_json_survives_a_kill_during_its_write_and_a_broken_one_is_a_one_line_error(
    tmp_path, monkeypatch
):
    """A write of metrics.json interrupted half-way leaves the previous file whole (and no
    temporary file); a metrics.json that is not JSON stops a run on that --out with one line."""
    cfg = common.BaseConfig(out=str(tmp_path))
    common.write_metrics(cfg, "train_vit.py", "backprop", {"test_acc": 0.5}, "cpu")
    before = (tmp_path / "metrics.json").read_text()

    def killed(obj, f, **kwargs):
        f.write(json.dumps(obj)[:20])
        raise KeyboardInterrupt  # as a kill during the write

    monkeypatch.setattr(json, "dump", killed)
    with pytest.raises(KeyboardInterrupt):
        common.write_metrics(cfg, "train_vit.py", "diffusionblocks", {"test_acc": 0.6}, "cpu")
    monkeypatch.undo()
    assert (tmp_path / "metrics.json").read_text() == before
    assert os.listdir(tmp_path) == ["metrics.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o666 & ~umask  # as open() makes
    (tmp_path / "metrics.json").write_text(before[:20])
    result = run_script("train_vit.py", "--preset", "smoke", "--out", str(tmp_path))
    assert result.returncode == 2 and "cannot read" in result.stderr, result.stderr[-2000:]
    assert len(result.stderr.splitlines()) == 1


def test_processes_saving_the_same_file_at_once_never_share_a_temporary_file(tmp_path):
    """Two processes each saving to one path 200 times at once (as torchrun ranks building a shared
    cache): no error, and the file reads back whole."""
    code = (
        "import sys, torch, common\n"
        "for i in range(200):\n"
        "    common.save_atomic({'x': torch.full((2000,), float(sys.argv[2]))}, sys.argv[1])\n"
    )
    path = str(tmp_path / "cache.pt")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, path, str(k)],
            cwd=HERE,
            env=ENV,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in (1, 2)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    x = torch.load(path)["x"]
    assert x.shape == (2000,) and len(set(x.tolist())) == 1
    assert os.listdir(tmp_path) == ["cache.pt"]


def test_a_block_process_builds_no_evaluation(tmp_path):
    """--block b (a torchrun rank) only trains: DiT trains no FID feature network (its cache under
    --data-dir), and the language models build no n-gram judge."""
    args = [*DIT[:3], "--ema-std", "0", "--data-dir", str(tmp_path / "data")]
    result = run_script(
        *args, "--method", "diffusionblocks", "--block", "0", "--out", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert not (tmp_path / "data").exists() and (tmp_path / "block0.pt").exists()
    cfg = train_lm.Config(**{**train_lm.PRESETS["ar"]["smoke"], "model": "ar"})
    assert lm_eval.text_corpus(cfg, 33, "cpu").judge is not None
    block = dataclasses.replace(cfg, method="diffusionblocks", block=0)
    assert lm_eval.text_corpus(block, 33, "cpu").judge is None


def test_the_divergence_command_names_its_method_and_seed_and_resumes_only_them(tmp_path):
    """--seeds 0,1 --method all killed in seed 0's first method and resumed at a diverging --lr:
    the one-line error's command continues that method and seed alone in its seed folder (no
    --seeds, no --method all); run with a sane --lr it finishes it, recording the change; the run's
    own command with --resume then keeps it and trains the rest."""
    out = tmp_path / "run"
    args = ["train_vit.py", "--preset", "smoke", "--seeds", "0,1", "--ckpt-every", "5"]
    kill_at_checkpoint([*args, "--out", str(out)], out / "seed0" / "backprop" / "ckpt.pt")
    result = run_script(*args, "--out", str(out), "--resume", "--lr", "1e6")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(errors) == 1, result.stderr[-2000:]
    command = shlex.split(errors[0].split("learning rate: ", 1)[1])
    assert "--seeds" not in command and command.count("--method") == 1, command
    assert command[command.index("--method") + 1] == "backprop"
    assert command[command.index("--seed") + 1] == "0"
    assert command[command.index("--out") + 1] == str(out / "seed0") and "--resume" in command
    lr = command.index("--lr")
    result = run_script(*command[1:lr], "--lr", "1e-3")
    assert result.returncode == 0, result.stderr[-2000:]
    first = json.loads((out / "seed0" / "metrics.json").read_text())["methods"]
    assert list(first) == ["backprop"] and first["backprop"]["resumed_with"][0]["lr"] == [
        2e-3,
        1e-3,
    ]
    result = run_script(*args, "--out", str(out), "--resume")
    assert result.returncode == 0 and "backprop: finished, kept" in result.stdout
    summary = json.loads((out / "summary.json").read_text())["methods"]
    assert summary["backprop"]["test_acc"]["values"][0] == first["backprop"]["test_acc"]
    assert set(summary) == {"backprop", "diffusionblocks"}


def test_harmless_settings_may_change_on_resume_and_a_resumed_block_says_so(tmp_path):
    """Killed at a checkpoint and resumed with another --eval-every, --ckpt-every, --device and
    --method (one of 'all'): the same final metrics as the uninterrupted run; a --block file resumed
    at another --lr carries resumed_with into --assemble."""
    args = ["train_vit.py", "--preset", "smoke", "--steps", "40", "--ckpt-every", "5"]
    args += ["--eval-every", "20"]
    assert (
        run_script(*args, "--method", "backprop", "--out", str(tmp_path / "whole")).returncode == 0
    )
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())["methods"]["backprop"]
    out = tmp_path / "killed"
    kill_at_checkpoint([*args, "--out", str(out)], out / "backprop" / "ckpt.pt")
    result = run_script(
        *args[:-2],
        "--eval-every",
        "15",
        "--ckpt-every",
        "7",
        "--device",
        "cpu",
        "--method",
        "backprop",
        "--out",
        str(out),
        "--resume",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    resumed = json.loads((out / "metrics.json").read_text())["methods"]["backprop"]
    for key in ("test_acc", "train_memory_bytes", "iters"):
        assert resumed[key] == whole[key], key
    assert resumed["curve"][-1]["iter"] == 40 and any(c["iter"] == 15 for c in resumed["curve"])
    blocks = tmp_path / "blocks"
    block = [*args, "--method", "diffusionblocks", "--out", str(blocks)]
    kill_at_checkpoint([*block, "--block", "0"], blocks / "diffusionblocks" / "block0.ckpt.pt")
    assert run_script(*block, "--block", "0", "--resume", "--lr", "1e-3").returncode == 0
    for b in (1, 2):
        assert run_script(*block, "--block", str(b)).returncode == 0
    result = run_script(*block, "--assemble", "--eval-every", "10")
    assert result.returncode == 0, result.stderr[-2000:]
    assembled = json.loads((blocks / "metrics.json").read_text())["methods"]["assembled"]
    assert list(assembled["resumed_with"]) == ["block0"]
    assert assembled["resumed_with"]["block0"][0]["lr"] == [2e-3, 1e-3]


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
            "--ema-std",
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


def test_seed_summary_keeps_a_method_that_only_some_seeds_ran(tmp_path):
    """--seeds over runs where backprop trained on seed 0 only (the others --method
    diffusionblocks): each method summarised over its own seeds, never a crash at the end."""
    runs = [{"seed": 0, "methods": {"backprop": {"acc": 0.5, "iters": 10},
                                    "diffusionblocks": {"acc": 0.4, "iters": 30}}},
            {"seed": 1, "methods": {"diffusionblocks": {"acc": 0.6, "iters": 30}}}]
    summary = common.summarize_seeds(runs, str(tmp_path))
    bp, dbk = summary["methods"]["backprop"], summary["methods"]["diffusionblocks"]
    assert bp["seeds"] == [0] and bp["acc"] == {"mean": 0.5, "std": 0.0, "values": [0.5]}
    assert "seeds" not in dbk and dbk["acc"]["mean"] == pytest.approx(0.5)
    assert dbk["acc"]["std"] == pytest.approx(math.sqrt(0.02))  # sample std of 0.4, 0.6
    assert json.loads((tmp_path / "summary.json").read_text())["seeds"] == [0, 1]
