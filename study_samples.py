"""Text samples under the paper's protocol and under a fair one (results/README.md, "Samples"): the
finished runs of train_lm.py --model ar or train_huginn.py (one folder per seed, each method's
ckpt.pt), their continuations of held-out test prompts judged by an independent character LM.

  python study_samples.py --runs runs/ar --out runs/ar_samples       # runs/ar/seed0, seed1, ...
  pip install mauve-text faiss-cpu     # MAUVE; without them every other metric runs, MAUVE is skipped

The paper's protocol (§4.3, Tables 4 and 5): the baseline draws at T = 1 from the top-p = 0.95
nucleus; DiffusionBlocks runs its chain from noise (z_0 = σ_max·ε) and takes the argmax of the last
call; 5 continuations per prompt. The fair one gives each method its own knob and compares the
frontiers of quality against diversity: the baseline over temperature × top-p, DiffusionBlocks over
the start scale s of z_0 = s·σ_max·ε (s = 0: the deterministic prediction) and the bridge (AR), and
its last call's logits sampled as the baseline's are (CHAIN_SAMPLING).

The judge is train_lm.py's causal transformer of another size and seed (JUDGE), trained here by
backprop on the training split (--out/judge.pt, reused). It scores each set of continuations:
gen_ppl, its perplexity of the continuations given their prompts (lower: text it finds likely);
entropy, the mean entropy (bits) of its next-character distribution along them (low: predictable,
repetitive text, which gen_ppl rewards); distinct_4 of each prompt's continuations pooled; MAUVE
(Pillutla et al. 2021, the mauve-text package) between the features of the continuations (the
judge's last hidden state averaged over them) and those of the real continuations of as many test
windows, at scaling factor 5 (the library's default) and 2 (the paper's). Intervals: 2.5–97.5 %
of a bootstrap over prompts (MAUVE's for the two protocol points only, --mauve-bootstrap).
"""

import argparse
import dataclasses
import glob
import math
import os
import zlib
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import common
import report
import train_huginn
import train_lm
from data import decode
from lm_eval import distinct_ngrams, generate

try:
    import mauve
except ImportError:  # optional: requirements.txt's optional line
    mauve = None

SCRIPTS = {"train_lm.py": train_lm, "train_huginn.py": train_huginn}
# the judge: another size and seed than every model it judges; AdamW, cosine, 5 % warm-up
JUDGE = {"width": 96, "depth": 4, "heads": 4, "seed": 1000, "batch": 32, "lr": 3e-3, "min_lr": 1e-4}
PAPER_T, PAPER_TOP_P = 1.0, 0.95
# the baseline's frontier: greedy, and every temperature × top-p
TEMPERATURES, TOP_PS = (0.5, 0.7, 1.0), (0.8, 0.95, 1.0)
START_SCALES = (0.0, 0.25, 0.5, 1.0)  # DiffusionBlocks' frontier: z_0 = s·σ_max·ε
CHAIN_SAMPLING = ((0.7, 1.0), (1.0, 0.95), (1.0, 1.0))  # and its last call's logits, sampled
MAUVE_SCALES = (5, 2)  # the library's default, the paper's


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--runs",
        required=True,
        help="a run's --out, or a folder of seed*/ runs (each method's ckpt.pt)",
    )
    p.add_argument("--out", required=True, help="where samples.json, summary.json and plots go")
    p.add_argument("--prompts", type=int, default=100, help="test prompts, evenly spaced")
    p.add_argument("--per-prompt", type=int, default=5, help="continuations of each prompt")
    p.add_argument("--judge-steps", type=int, default=1500, help="the judge's training steps")
    p.add_argument(
        "--judges", default="", help="folder of the judges, one per seed's split (default --out)"
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples of the prompts")
    p.add_argument("--mauve-bootstrap", type=int, default=30, help="MAUVE's resamples (slow)")
    p.add_argument(
        "--frontier",
        choices=["full", "small"],
        default="full",
        help="small: fewer frontier points (Huginn's chain costs K calls a character)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    args = p.parse_args(argv)
    for name in ("prompts", "per_prompt", "judge_steps", "bootstrap"):
        if getattr(args, name) < 1:
            common.fail(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.mauve_bootstrap < 0:
        common.fail(f"--mauve-bootstrap must be at least 0, got {args.mauve_bootstrap}")
    seeds = sorted(glob.glob(os.path.join(args.runs, "seed*", "metrics.json")))
    if os.path.exists(os.path.join(args.runs, "metrics.json")):  # one run
        seeds = [os.path.join(args.runs, "metrics.json")]
    if not seeds:
        common.fail(
            f"--runs {args.runs}: no seed*/metrics.json of a train_lm.py or "
            "train_huginn.py run there"
        )
    return args, [os.path.dirname(s) for s in seeds]


# ----------------------------------------------------------------------------------------------
# The runs and their decoders
# ----------------------------------------------------------------------------------------------


def load_run(seed_dir, device):
    """A finished run → (its script, cfg, corpus, {method: model with its final weights})."""
    metrics = common.read_json(os.path.join(seed_dir, "metrics.json"))
    script = SCRIPTS.get(metrics.get("script"))
    if script is None or metrics["config"].get("model", "ar") != "ar":
        common.fail(f"{seed_dir}: not a train_lm.py --model ar or train_huginn.py run")
    fields = {f.name for f in dataclasses.fields(script.Config)}
    cfg = script.Config(**{k: v for k, v in metrics["config"].items() if k in fields})
    corpus = script.load_corpus(cfg, device)
    models = {}
    for method in script.METHODS:
        path = os.path.join(seed_dir, method, "ckpt.pt")
        if not os.path.exists(path):
            common.fail(f"{path} is missing: the study needs each method's final checkpoint")
        model = script.build_model(cfg, method, len(corpus.chars)).to(device)
        model.load_state_dict(
            torch.load(path, map_location=device, weights_only=False)["state"]["model"]
        )
        models[method] = model.eval()
    return script, cfg, corpus, models


def next_logits(script, model, cfg, generator, start=0.0):
    """x (N, n) → logits (N, V) of the next character: the script's own prediction (DiffusionBlocks:
    its chain from z_0 = start·σ_max·ε, with cfg's read-out and bridge)."""
    if script is train_huginn:
        K = train_huginn.test_iters(cfg)
        return partial(train_huginn.last_logits, model, cfg, K, generator, start)
    return partial(train_lm.next_char_logits, model, cfg, generator, start)


def decoders(script, cfg, models, frontier):
    """[(name, method, is the paper's point, next_logits factory, temperature, top_p)]: the two
    protocol points first, then each method's frontier."""
    baseline, chain = script.METHODS
    ar = script is train_lm
    # the paper's chain: argmax of the last call (AR's preset reads out the sum of all)
    paper = dataclasses.replace(cfg, readout="last")
    points = [
        (
            f"the paper's {baseline}: T = 1, top-p 0.95",
            baseline,
            True,
            cfg,
            0.0,
            PAPER_T,
            PAPER_TOP_P,
        ),
        (
            "the paper's DiffusionBlocks: chain from noise, last call",
            chain,
            True,
            paper,
            1.0,
            0.0,
            1.0,
        ),
    ]
    temps, top_ps, scales = TEMPERATURES, TOP_PS, START_SCALES
    if frontier == "small":
        temps, top_ps, scales = (0.7, 1.0), (0.95, 1.0), (0.0, 0.5, 1.0)
    points.append((f"{baseline}, greedy", baseline, False, cfg, 0.0, 0.0, 1.0))
    for t in temps:
        for p in top_ps:
            points.append((f"{baseline}, T = {t:g}, top-p {p:g}", baseline, False, cfg, 0.0, t, p))
    for bridge in ("soft", "hard") if ar else ("soft",):
        for s in scales:
            run = dataclasses.replace(cfg, bridge=bridge) if ar else cfg
            name = f"DiffusionBlocks, s = {s:g}" + (f", {bridge} bridge" if ar else "")
            points.append((name, chain, False, run, s, 0.0, 1.0))
    # the chain's last call as a distribution, sampled like the baseline's (from z_0 = 0)
    for t, p in CHAIN_SAMPLING if frontier == "full" else CHAIN_SAMPLING[1:]:
        name = f"DiffusionBlocks, last call sampled at T = {t:g}, top-p {p:g}"
        points.append((name, chain, False, paper, 0.0, t, p))
    return [
        (name, method, is_paper, partial(next_logits, script, models[method], run, start=s), t, p)
        for name, method, is_paper, run, s, t, p in points
    ]


# ----------------------------------------------------------------------------------------------
# The judge
# ----------------------------------------------------------------------------------------------


def train_judge(corpus, steps, path, device):
    """train_lm.CausalLM of JUDGE's size, by backprop on the training split (loaded from path when
    it holds one trained here before) → (judge, its test next-character accuracy)."""
    torch.manual_seed(JUDGE["seed"])
    judge = train_lm.CausalLM(len(corpus.chars), JUDGE["width"], JUDGE["depth"], JUDGE["heads"])
    judge = judge.to(device)
    if os.path.exists(path):
        saved = torch.load(path, map_location=device)
        if saved["steps"] != steps or not torch.equal(saved["train"], corpus.data["train"]):
            common.fail(f"{path} holds a judge of other steps or text: remove it or pick another")
        judge.load_state_dict(saved["model"])
    else:
        generator = torch.Generator().manual_seed(JUDGE["seed"])
        opt = torch.optim.AdamW(judge.parameters(), lr=JUDGE["lr"], weight_decay=0.03)
        for it in tqdm(range(steps), desc="judge"):
            common.set_lr(opt, common.cosine_lr(it / steps, 0.05, JUDGE["lr"], JUDGE["min_lr"]))
            x = corpus.batch(JUDGE["batch"], generator)  # (N, n + 1)
            logits = judge(None, None, x[:, :-1])  # (N, n, V)
            loss = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(judge.parameters(), 1.0)
            opt.step()
        # its training text beside it: a judge must never have read the test text it judges
        saved = {"model": judge.state_dict(), "steps": steps, "train": corpus.data["train"]}
        common.save_atomic(saved, path)
    judge.eval()
    with torch.no_grad():
        x = corpus.test_eval.to(device)
        accuracy = (judge(None, None, x[:, :-1]).argmax(-1) == x[:, 1:]).float().mean()
    return judge, float(accuracy)


@torch.no_grad()
def judge_text(judge, prompts, continuations):
    """The judge on prompts ‖ continuations (M, P + G) → per row: the continuation's summed −log p
    (nats) and mean entropy (bits) under the judge, and its feature (M, D), the judge's last hidden
    state averaged over the continuation."""
    x = torch.cat([prompts, continuations], 1)
    hidden = {}
    hook = judge.final.register_forward_pre_hook(lambda _, args: hidden.update(h=args[0]))
    logits = judge(None, None, x).float()  # (M, P + G, V): position i predicts x_{i+1}
    hook.remove()
    P = prompts.shape[1]
    log_p = logits[:, P - 1 : -1].log_softmax(-1)  # (M, G, V): predicting the continuation
    nll = -log_p.gather(-1, continuations[..., None])[..., 0].sum(1)
    entropy = -(log_p.exp() * log_p).sum(-1).mean(1) / math.log(2)
    return nll.cpu(), entropy.cpu(), hidden["h"][:, P:].float().mean(1).cpu()


def mauve_scores(reference, generated, seed=25):
    """{mauve_c: MAUVE} of generated features against reference features at each MAUVE_SCALES
    (one quantisation, mauve-text's default settings and seed); {} without mauve-text."""
    if mauve is None:
        return {}
    return {
        f"mauve_{c}": float(
            mauve.compute_mauve(
                p_features=reference, q_features=generated, mauve_scaling_factor=c, seed=seed
            ).mauve
        )
        for c in MAUVE_SCALES
    }


# ----------------------------------------------------------------------------------------------
# One seed: generate, judge, bootstrap
# ----------------------------------------------------------------------------------------------


def held_out(cfg, corpus, count, device):
    """`count` evenly spaced test windows (count, seq_len), split as the AR protocol does: (prompts,
    their real continuations of gen_tokens characters)."""
    rows = torch.linspace(0, len(corpus.test) - 1, count).long()
    windows = corpus.test[rows, : cfg.seq_len].to(device)
    P = cfg.seq_len - cfg.gen_tokens
    return windows[:, :P], windows[:, P:]


def interval(values):
    """2.5 and 97.5 % percentiles of bootstrap values."""
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def score(args, judge, prompts, continuations, reference, rng, bootstrap_mauve):
    """The metrics of continuations (P·k, G) of prompts (P, n), k per prompt, with bootstrap
    intervals over the prompts (and over reference rows for MAUVE)."""
    k, P, G = args.per_prompt, prompts.shape[0], continuations.shape[1]
    nll, entropy, features = judge_text(judge, prompts.repeat_interleave(k, 0), continuations)
    nll, entropy = nll.view(P, k).sum(1).numpy(), entropy.view(P, k).mean(1).numpy()
    distinct = np.array([distinct_ngrams(c.cpu()) for c in continuations.view(P, k, G)])
    per_prompt = {  # statistic of a set of prompts' rows
        "gen_ppl": lambda i: math.exp(nll[i].sum() / (len(i) * k * G)),
        "entropy": lambda i: float(entropy[i].mean()),
        "distinct_4": lambda i: float(distinct[i].mean()),
    }
    everyone = np.arange(P)
    result = {name: f(everyone) for name, f in per_prompt.items()}
    draws = rng.integers(P, size=(args.bootstrap, P))
    for name, f in per_prompt.items():
        result[name + "_ci"] = interval([f(i) for i in draws])
    result.update(mauve_scores(reference, features.numpy()))
    if mauve is not None and bootstrap_mauve:
        boot = [
            mauve_scores(
                reference[rng.integers(len(reference), size=len(reference))],
                features.view(P, k, -1)[i].flatten(0, 1).numpy(),
            )
            for i in rng.integers(P, size=(args.mauve_bootstrap, P))
        ]
        for c in MAUVE_SCALES:
            result[f"mauve_{c}_ci"] = interval([b[f"mauve_{c}"] for b in boot])
    return result


def study_seed(args, seed_dir, device):
    """Every decoder of one seed's run → its samples.json content (under --out/seed<s>, with
    samples.txt). Each decoder draws from its own generator, seeded by the run's seed and its name,
    and samples.json is rewritten after each: a study run again with the same settings reuses the
    decoders it finished."""
    script, cfg, corpus, models = load_run(seed_dir, device)
    out = os.path.join(args.out, f"seed{cfg.seed}")
    os.makedirs(out, exist_ok=True)
    keys = ("prompts", "per_prompt", "judge_steps", "bootstrap", "mauve_bootstrap", "frontier")
    settings = {k: getattr(args, k) for k in keys}
    path = os.path.join(out, "samples.json")
    saved = common.read_json(path) if os.path.exists(path) else {}
    finished = {r["decoder"]: r for r in saved.get("decoders", [])}
    if saved.get("settings") != settings:
        finished = {}  # another study's decoders: none reused
    judges = args.judges or args.out  # one per seed: each seed's run has its own split
    judge_path = os.path.join(judges, f"judge_seed{cfg.seed}.pt")
    judge, judge_acc = train_judge(corpus, args.judge_steps, judge_path, device)
    prompts, _ = held_out(cfg, corpus, args.prompts, device)
    # the real text: as many test windows as continuations
    real_prompts, real = held_out(cfg, corpus, args.prompts * args.per_prompt, device)
    real_nll, real_entropy, reference = judge_text(judge, real_prompts, real)
    reference = reference.numpy()
    real_distinct = [distinct_ngrams(c.cpu()) for c in real.view(args.prompts, args.per_prompt, -1)]
    result = {
        "script": os.path.basename(script.__file__),
        "seed": cfg.seed,
        "judge": {**JUDGE, "steps": args.judge_steps, f"{corpus.split}_next_token_acc": judge_acc},
        "real": {
            "gen_ppl": math.exp(float(real_nll.sum()) / real.numel()),
            "entropy": float(real_entropy.mean()),
            "distinct_4": float(np.mean(real_distinct)),
        },
        "decoders": [],
        "prompts": args.prompts,
        "per_prompt": args.per_prompt,
        "gen_tokens": cfg.gen_tokens,
        "mauve": mauve is not None,
        "settings": settings,
    }
    texts = []
    for name, method, is_paper, factory, t, top_p in tqdm(
        decoders(script, cfg, models, args.frontier), desc=f"seed {cfg.seed}"
    ):
        if name in finished:
            print(f"{name}: reused from {path}")
            result["decoders"].append(finished[name])
            continue
        own = cfg.seed * 2**32 + zlib.crc32(name.encode())  # this decoder's draws, in any order
        generator, rng = torch.Generator(device).manual_seed(own), np.random.default_rng(own)
        with torch.no_grad(), common.autocast(device):
            continuations = generate(
                factory(generator),
                prompts.repeat_interleave(args.per_prompt, 0),
                cfg.gen_tokens,
                t,
                generator,
                top_p,
            )
        result["decoders"].append(
            {
                "decoder": name,
                "method": method,
                "paper": is_paper,
                "temperature": t,
                "top_p": top_p,
                **score(args, judge, prompts, continuations, reference, rng, is_paper),
            }
        )
        common.write_json(result, path)
        shown = continuations.view(args.prompts, args.per_prompt, -1)[:2, :2].flatten(0, 1)
        texts += [f"# {name}"] + [
            decode(p, corpus.chars) + " ‖ " + decode(c, corpus.chars)
            for p, c in zip(prompts[:2].repeat_interleave(2, 0), shown)
        ]
    common.write_json(result, path)
    if texts:  # two continuations of the first two prompts, per decoder generated here
        with open(os.path.join(out, "samples.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(texts) + "\n")
    return result


# ----------------------------------------------------------------------------------------------
# Over the seeds: the tables, the verdicts, the plot
# ----------------------------------------------------------------------------------------------

METRICS = ("mauve_5", "mauve_2", "gen_ppl", "entropy", "distinct_4")


def summarize(seeds):
    """Per decoder, each metric's mean and std over the seeds, and which frontier points another
    method's point dominates (at least as diverse, and at least as good by MAUVE_c, c = 5)."""
    names = [r["decoder"] for r in seeds[0]["decoders"]]
    rows = []
    for i, name in enumerate(names):
        per_seed = [s["decoders"][i] for s in seeds]
        row = {k: per_seed[0][k] for k in ("decoder", "method", "paper", "temperature", "top_p")}
        for key in METRICS:
            if key in per_seed[0]:
                values = [r[key] for r in per_seed]
                row.update(
                    {
                        key: float(np.mean(values)),
                        key + "_std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                        key + "_per_seed": values,
                    }
                )
        rows.append(row)
    quality = "mauve_5" if "mauve_5" in rows[0] else "gen_ppl"
    better = (lambda a, b: a >= b) if quality == "mauve_5" else (lambda a, b: a <= b)
    frontier = [r for r in rows if not r["paper"]]
    for r in frontier:  # Pareto: another method's point at least as good on both, not the same
        r["dominated_by"] = [
            o["decoder"]
            for o in frontier
            if o["method"] != r["method"]
            and o["distinct_4"] >= r["distinct_4"]
            and better(o[quality], r[quality])
            and (o["distinct_4"], o[quality]) != (r["distinct_4"], r[quality])
        ]
    baseline, chain = (r for r in rows if r["paper"])
    verdict = {  # the paper's protocol per seed (chain − baseline), and the frontiers
        "paper_protocol_chain_minus_baseline": {
            k: [c - b for b, c in zip(baseline[k + "_per_seed"], chain[k + "_per_seed"])]
            for k in METRICS
            if k in baseline
        },
        **{
            f"{who}_points_dominated": [
                sum(bool(r["dominated_by"]) for r in frontier if r["method"] == method),
                sum(r["method"] == method for r in frontier),
            ]
            for who, method in (("chain", chain["method"]), ("baseline", baseline["method"]))
        },
    }
    return {
        "decoders": rows,
        "verdict": verdict,
        "quality": quality,
        "real": {k: float(np.mean([s["real"][k] for s in seeds])) for k in seeds[0]["real"]},
        "seeds": [s["seed"] for s in seeds],
        "judge_next_token_acc": [
            next(v for k, v in s["judge"].items() if k.endswith("acc")) for s in seeds
        ],
    }


def print_summary(summary):
    """The protocol table, then the frontier, means ± std over the seeds."""
    keys = [k for k in METRICS if k in summary["decoders"][0]]
    print(
        f"\nseeds {summary['seeds']}; real continuations: "
        + ", ".join(f"{k} {v:.3f}" for k, v in summary["real"].items())
    )
    print(f"{'decoder':58s} " + " ".join(f"{k:>15s}" for k in keys))
    for r in summary["decoders"]:
        mark = "paper" if r["paper"] else ("dominated" if r["dominated_by"] else "")
        print(
            f"{r['decoder']:58s} "
            + " ".join(f"{r[k]:8.3f} ± {r[k + '_std']:.3f}" for k in keys)
            + f"  {mark}"
        )
    verdict = summary["verdict"]
    print(
        "the paper's protocol, DiffusionBlocks − the baseline per seed: "
        + "; ".join(
            f"{k} " + ", ".join(f"{v:+.3f}" for v in values)
            for k, values in verdict["paper_protocol_chain_minus_baseline"].items()
        )
    )
    print(
        "the frontiers (by {}): {} of {} DiffusionBlocks points lie under a baseline point, {} of "
        "{} baseline points under a DiffusionBlocks point".format(
            summary["quality"],
            *verdict["chain_points_dominated"],
            *verdict["baseline_points_dominated"],
        )
    )
    if "mauve_5" not in keys:
        print("MAUVE skipped: pip install mauve-text faiss-cpu")


def families(rows):
    """The frontier's curves: {label: its points in the order of their knob}, the baseline's one
    per top-p through its temperatures (greedy first), DiffusionBlocks' one per bridge through the
    start scale, and its sampled last call through T."""
    baseline = rows[0]["method"]  # the paper's baseline point comes first
    curves = {}
    for r in rows:
        if r["paper"]:
            continue
        if r["method"] == baseline:
            tops = [r["top_p"]] if r["temperature"] else sorted({o["top_p"] for o in rows})
            for p in tops:  # greedy starts every top-p's curve
                curves.setdefault(f"{baseline}, top-p {p:g} over T", []).append(r)
        elif "sampled" in r["decoder"]:
            curves.setdefault("DiffusionBlocks, last call sampled over T", []).append(r)
        else:
            bridge = "hard" if "hard" in r["decoder"] else "soft"
            curves.setdefault(f"DiffusionBlocks, {bridge} bridge over s", []).append(r)
    return curves


def plot(summary, out):
    """--out/frontier.png: quality (MAUVE at c = 5, and gen_ppl) against diversity (distinct_4),
    seed means: each knob's curve, the paper's two points as stars, the real text as a line."""
    plt = report.pyplot()
    rows = summary["decoders"]
    panels = [k for k in ("mauve_5", "gen_ppl") if k in rows[0]]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
    styles = iter(["-o", "--o", ":o", "-s", "--s", "-^", ":^"])
    curves = list(families(rows).items())
    for ax, key in zip(axes[0], panels):
        for (label, points), style in zip(curves, styles):
            colour = "tab:orange" if points[0]["method"] != rows[0]["method"] else "tab:blue"
            ax.plot(
                [r["distinct_4"] for r in points],
                [r[key] for r in points],
                style,
                color=colour,
                ms=4,
                label=label,
            )
        for r, colour in zip(rows[:2], ("tab:blue", "tab:orange")):
            ax.plot(
                r["distinct_4"], r[key], "*", color=colour, ms=14, mec="black", label=r["decoder"]
            )
        ax.plot(
            summary["real"]["distinct_4"],
            summary["real"].get(key, float("nan")),
            "kD",
            label="the real continuations",
        )
        if key == "gen_ppl":
            ax.set_yscale("log")
        ax.set_xlabel("diversity: distinct character 4-grams of a prompt's continuations")
        ax.set_ylabel(
            {
                "mauve_5": "MAUVE (c = 5), higher is better",
                "gen_ppl": "gen_ppl under the judge (log; the real text's: ◆)",
            }[key]
        )
        ax.grid(alpha=0.3)
        styles = iter(["-o", "--o", ":o", "-s", "--s", "-^", ":^"])
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "frontier.png"), dpi=120)
    plt.close(fig)


def main(argv=None):
    args, seed_dirs = parse_args(argv)
    device = common.pick_device(args.device)
    os.makedirs(args.out, exist_ok=True)
    if mauve is None:
        print("mauve-text is not installed: MAUVE is skipped (pip install mauve-text faiss-cpu)")
    seeds = [study_seed(args, d, device) for d in seed_dirs]
    summary = summarize(seeds)
    common.write_json(summary, os.path.join(args.out, "summary.json"))
    print_summary(summary)
    plot(summary, args.out)
    return summary


if __name__ == "__main__":
    main()
