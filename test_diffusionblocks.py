"""Tests of diffusionblocks.py, each against an independent reference (a formula, a brute force, a
known value).

Run: python -m pytest -q test_diffusionblocks.py      (about a minute on a 2-core CPU)
"""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

import diffusionblocks as db

# Reference boundaries of Eq. 8 for B = 2, 3, 4 (4 significant digits) and the γ = 0.05 slices for B
# = 3 (block 0 first).
REFERENCE_SIGMAS = {
    2: [0.002, 0.3012, 80],
    3: [0.002, 0.1796, 0.5050, 80],
    4: [0.002, 0.1341, 0.3012, 0.6766, 80],
}
REFERENCE_SLICES_B3 = [(0.392, 80), (0.1706, 0.5318), (0.002, 0.2249)]


def lognormal_mass(lo, hi, n=200_001):
    """∫ p_σ(σ) dσ over [lo, hi] by Simpson's rule on the log-normal density (no CDF formula
    involved)."""
    s = np.linspace(math.log(lo), math.log(hi), n)  # integrate in u = ln σ: p_σ dσ = N(u; μ, s²) du
    f = np.exp(-((s - db.P_MEAN) ** 2) / (2 * db.P_STD**2)) / (db.P_STD * math.sqrt(2 * math.pi))
    h = (s[-1] - s[0]) / (n - 1)
    return h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())


# ----------------------------------------------------------------------------------------------
# partition


@pytest.mark.parametrize("B", [2, 3, 4])
def test_equiprob_boundaries_match_reference_and_hold_equal_mass(B):
    sigmas = db.block_sigmas(B)
    assert sigmas.dtype == torch.float64 and torch.all(sigmas[1:] > sigmas[:-1])
    np.testing.assert_allclose(sigmas.numpy(), REFERENCE_SIGMAS[B], rtol=5e-4)
    total = lognormal_mass(db.SIGMA_MIN, db.SIGMA_MAX)
    masses = [
        lognormal_mass(float(lo), float(hi)) / total for lo, hi in zip(sigmas[:-1], sigmas[1:])
    ]
    np.testing.assert_allclose(masses, 1 / B, atol=1e-6)


def test_overlap_slices_match_reference():
    sigmas = db.block_sigmas(3)
    for b, reference in enumerate(REFERENCE_SLICES_B3):
        np.testing.assert_allclose(db.block_slice(sigmas, b, gamma=0.05), reference, rtol=5e-4)


def test_uniform_partition_is_equal_in_log_sigma():
    sigmas = db.block_sigmas(5, partition="uniform")
    widths = np.diff(np.log(sigmas.numpy()))
    np.testing.assert_allclose(widths, math.log(db.SIGMA_MAX / db.SIGMA_MIN) / 5, rtol=1e-12)


def test_split_layers_covers_all_layers():
    for L in range(1, 13):
        for B in range(1, L + 1):
            split = db.split_layers(L, B)
            assert sum(split) == L and len(split) == B and max(split) - min(split) <= 1


@pytest.mark.parametrize("B", [1, 2, 3, 4, 6])
def test_sigma_sampler_stays_in_slice_and_follows_truncated_cdf(B):
    sigmas = db.block_sigmas(B)
    gen = torch.Generator().manual_seed(0)
    n = 20_000
    for b in range(B):
        lo, hi = db.block_slice(sigmas, b, gamma=0.05)
        draws = np.sort(db.sample_sigma((n,), lo, hi, generator=gen).double().numpy())
        assert draws.min() >= lo * (1 - 1e-6) and draws.max() <= hi * (1 + 1e-6)
        # Kolmogorov-Smirnov: reference CDF from math.erf, the 99.9 % critical value is 1.95/√n
        # noqa: E731
        Phi = lambda v: 0.5 * (1 + math.erf((math.log(v) - db.P_MEAN) / (db.P_STD * math.sqrt(2))))
        cdf = (np.array([Phi(v) for v in draws]) - Phi(lo)) / (Phi(hi) - Phi(lo))
        ecdf = np.arange(1, n + 1) / n
        assert np.max(np.abs(ecdf - cdf)) < 1.95 / math.sqrt(n)


@pytest.mark.parametrize("partition", ["equiprob", "uniform"])
def test_routing_agrees_with_boundaries(partition):
    B = 4
    sigmas = db.block_sigmas(B, partition)
    # noqa: E731
    owner = lambda s: next(
        b
        for b in range(B)
        if sigmas[B - 1 - b] < s <= sigmas[B - b] or (b == B - 1 and s <= sigmas[0])
    )
    probes = [float(sigmas[0]), float(sigmas[-1])]
    for s in sigmas.tolist():
        probes += [s, s * (1 + 1e-9), s * (1 - 1e-9), s * 1.01, s / 1.01]
    probes = [p for p in probes if db.SIGMA_MIN <= p <= db.SIGMA_MAX]
    routed = db.block_of(torch.tensor(probes, dtype=torch.float64), sigmas)
    assert routed.tolist() == [owner(p) for p in probes]
    assert (
        int(db.block_of(db.SIGMA_MAX, sigmas)) == 0
        and int(db.block_of(db.SIGMA_MIN, sigmas)) == B - 1
    )


def test_sampling_grid_gives_each_block_an_equal_share_of_steps():
    B, steps = 3, 12
    grid = db.sampling_sigmas(steps)
    assert grid[0] == db.SIGMA_MAX and grid[-1] == db.SIGMA_MIN and torch.all(grid[1:] < grid[:-1])
    counts = torch.bincount(db.block_of(grid[:-1], db.block_sigmas(B)), minlength=B)
    assert counts.tolist() == [steps // B] * B


# ---------------------------------------------------------------------------------------------- EDM


def test_preconditioning_matches_edm_formulas_and_unit_variance():
    sigma = torch.tensor([0.002, 0.05, 0.5, 2.0, 80.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = db.precondition(sigma)
    sd = 0.5
    for i, s in enumerate(sigma.tolist()):  # EDM Table 1, written out by hand
        assert c_skip[i].item() == pytest.approx(sd**2 / (s**2 + sd**2), rel=1e-12)
        assert c_out[i].item() == pytest.approx(s * sd / math.sqrt(s**2 + sd**2), rel=1e-12)
        assert c_in[i].item() == pytest.approx(1 / math.sqrt(s**2 + sd**2), rel=1e-12)
        assert c_noise[i].item() == pytest.approx(math.log(s) / 4, rel=1e-12)
        assert db.loss_weight(sigma[i]).item() == pytest.approx(4 + 1 / s**2, rel=1e-12)
    # EDM's design goals, by Monte Carlo on y ~ N(0, σ_data²): unit-variance input and training
    # target
    gen = torch.Generator().manual_seed(0)
    for s in sigma.tolist():
        y = sd * torch.randn(200_000, generator=gen, dtype=torch.float64)
        z = y + s * torch.randn(200_000, generator=gen, dtype=torch.float64)
        c_skip, c_out, c_in, _ = db.precondition(torch.tensor(s, dtype=torch.float64))
        assert (c_in * z).var().item() == pytest.approx(1, abs=0.01)
        assert ((y - c_skip * z) / c_out).var().item() == pytest.approx(1, abs=0.01)
        assert (
            db.loss_weight(torch.tensor(s, dtype=torch.float64)) * c_out**2
        ).item() == pytest.approx(1, rel=1e-12)


def test_mean_loss_weight_matches_numerical_integration():
    for lo, hi in db.block_slice(db.block_sigmas(3), 2), (0.3, 80.0), (db.SIGMA_MIN, db.SIGMA_MAX):
        u = np.linspace(math.log(lo), math.log(hi), 400_001)
        density = np.exp(-((u - db.P_MEAN) ** 2) / (2 * db.P_STD**2))
        weight = 4 + np.exp(-2 * u)

        def trapezoid(f):  # by hand: np.trapezoid needs numpy 2, requirements.txt allows 1.24
            return float(((f[1:] + f[:-1]) / 2 * np.diff(u)).sum())

        assert db.mean_loss_weight(lo, hi) == pytest.approx(
            trapezoid(weight * density) / trapezoid(density), rel=1e-6
        )


class Oracle(nn.Module):
    """F that makes D exact for y ~ N(mu, s²) per dimension, recovering σ from c_noise and z from
    c_in·z."""

    def __init__(self, mu, s):
        super().__init__()
        self.mu, self.s, self.calls = mu, s, []

    def forward(self, z_in, c_noise, x):
        sigma = torch.exp(4 * c_noise.double())[:, None]
        self.calls.append(sigma[0].item())
        c_skip, c_out, c_in, _ = db.precondition(sigma)
        z = z_in.double() / c_in
        # E[y | z], the exact denoiser
        D = self.mu + self.s**2 / (self.s**2 + sigma**2) * (z - self.mu)
        return ((D - c_skip * z) / c_out).to(z_in.dtype)


def test_denoiser_with_oracle_output_returns_y():
    y = torch.randn(16, 8, dtype=torch.float64)
    sigma = torch.tensor(0.7, dtype=torch.float64)
    z = y + sigma * torch.randn_like(y)
    sd = 0.5
    c_skip = sd**2 / (sigma**2 + sd**2)  # hand-written EDM coefficients
    c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
    model = db.DiffusionBlocks([Echo((y - c_skip * z) / c_out)])
    torch.testing.assert_close(model.denoise(z, sigma, None), y, rtol=1e-12, atol=1e-12)


class Echo(nn.Module):
    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, z_in, c_noise, x):
        return self.out


def test_euler_sampler_reproduces_gaussian_and_routes_each_step():
    mu, s, B, steps = 1.5, 0.8, 3, 300
    model = db.DiffusionBlocks([Oracle(mu, s) for _ in range(B)]).double()
    grid = db.sampling_sigmas(steps)
    gen = torch.Generator().manual_seed(0)
    z = model.sample(None, (20_000, 4), grid.double(), generator=gen).double()
    # the ODE maps N(mu, s²+σ_max²) to N(mu, s²+σ_min²)
    final = math.sqrt(s**2 + db.SIGMA_MIN**2)
    assert z.mean().item() == pytest.approx(mu, abs=0.02)
    assert z.std().item() == pytest.approx(final, rel=0.02)
    for b, block in enumerate(model.blocks):  # every call of block b was at a σ of its own slice
        lo, hi = float(model.sigmas[B - 1 - b]), float(model.sigmas[B - b])
        assert block.calls and all(lo * (1 - 1e-5) <= c <= hi * (1 + 1e-5) for c in block.calls)
    again = model.sample(
        None, (20_000, 4), grid.double(), generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(z, again)


class DiscreteOracle(nn.Module):
    """F returning the exact posterior logits of y ∈ {rows of E} given z: log π_k + z·e_k/σ² (rows
    orthonormal).

    x is the prior π per sample, (N, K); σ and z are recovered from c_noise and c_in·z.
    """

    def __init__(self, E):
        super().__init__()
        self.E = E

    def forward(self, z_in, c_noise, x):
        sigma = torch.exp(4 * c_noise.double())[:, None]
        z = z_in.double() * (sigma**2 + db.SIGMA_DATA**2).sqrt()  # undo c_in
        # p(k | z) ∝ π_k·N(z; e_k, σ²)
        return (x.double().log() + z @ self.E.double().T / sigma**2).float()


def discrete_oracle_model(K=4, dim=6, B=3):
    # (K, dim) orthonormal
    E = torch.linalg.qr(torch.randn(dim, K, generator=torch.Generator().manual_seed(0)))[0].T
    return db.DiffusionBlocks([DiscreteOracle(E) for _ in range(B)], embedding=E)


@pytest.mark.parametrize("grid", ["boundaries", "final"])
def test_mean_start_chain_is_deterministic_and_returns_the_posterior_mode(grid):
    model = discrete_oracle_model()
    # a different posterior per sample
    prior = torch.distributions.Dirichlet(torch.ones(4)).sample((2000,))
    sigmas = db.prediction_sigmas(model.sigmas, 3, grid)
    logits = model.predict(
        prior, (2000, 6), sigmas, "mean", "last", torch.Generator().manual_seed(1)
    )
    again = model.predict(
        prior, (2000, 6), sigmas, "mean", "last", torch.Generator().manual_seed(2)
    )
    assert torch.equal(logits, again)  # no noise is drawn
    assert torch.equal(logits.argmax(-1), prior.argmax(-1))


@pytest.mark.parametrize("bridge", ["soft", "hard"])
def test_the_chains_bridge_is_softmax_or_argmax_of_the_embedding(bridge):
    """From z_0 = 0 the first Euler step gives z_1 = (1 − σ_1/σ_0)·D: the second call sees D =
    softmax(logits) @ E (soft) or E[argmax] (hard) of the first call's logits."""
    model = discrete_oracle_model()
    seen = []
    model.blocks[1].register_forward_hook(lambda m, args, out: seen.append(args[0].double()))
    prior = torch.distributions.Dirichlet(torch.ones(4)).sample((50,))
    sigmas = db.prediction_sigmas(model.sigmas, 3, "boundaries")
    calls = model.predict(prior, (50, 6), sigmas, "mean", "all", bridge=bridge)
    E = model.embedding.double()
    D = E[calls[0].argmax(-1)] if bridge == "hard" else calls[0].double().softmax(-1) @ E
    s0, s1 = float(sigmas[0]), float(sigmas[1])
    c_in = 1 / math.sqrt(s1**2 + db.SIGMA_DATA**2)
    torch.testing.assert_close(seen[0], c_in * (1 - s1 / s0) * D, rtol=1e-5, atol=1e-6)


def test_noise_start_chain_samples_the_posterior():
    """From z_0 = σ_max·ε the probability-flow ODE lands on a draw: class frequencies match π (χ², 3
    dof)."""
    model, n = discrete_oracle_model(), 4000
    prior = torch.tensor([0.1, 0.2, 0.3, 0.4]).expand(n, 4)
    logits = model.predict(
        prior,
        (n, 6),
        db.sampling_sigmas(200),
        start="noise",
        readout="last",
        generator=torch.Generator().manual_seed(0),
    )
    counts = torch.bincount(logits.argmax(-1), minlength=4).double()
    expected = n * prior[0].double()
    assert ((counts - expected) ** 2 / expected).sum() < 16.27  # χ²(3 dof) at p = 0.001


def test_a_start_scale_s_starts_the_chain_at_s_sigma_max_noise():
    """start = s: the chain's first call sees c_in·z_0 with z_0 = s·σ_0·ε, ε from the generator (0:
    the prediction's z_0 = 0; 1: the draw's)."""
    model = discrete_oracle_model()
    seen = []
    model.blocks[0].register_forward_hook(lambda m, args, out: seen.append(args[0].double()))
    prior = torch.distributions.Dirichlet(torch.ones(4)).sample((20,))
    sigmas = db.prediction_sigmas(model.sigmas, 3, "boundaries")
    c_in = 1 / math.sqrt(float(sigmas[0]) ** 2 + db.SIGMA_DATA**2)
    for s in (0.0, 0.3, 1.0, "noise", "mean"):
        scale = {"noise": 1.0, "mean": 0.0}.get(s, s)
        eps = torch.randn((20, 6), generator=torch.Generator().manual_seed(7)).double()
        model.predict(prior, (20, 6), sigmas, s, "last", torch.Generator().manual_seed(7))
        torch.testing.assert_close(seen[-1], c_in * scale * float(sigmas[0]) * eps)
    with pytest.raises(ValueError, match="scale in"):
        model.predict(prior, (20, 6), sigmas, 1.5)


def test_prediction_grids_call_each_block_as_documented():
    sigmas = db.block_sigmas(3)
    # boundaries: k calls per block, equal steps in p_σ mass, starting at each slice's top
    for k in (1, 2, 4):
        grid = db.prediction_sigmas(sigmas, 3 * k, "boundaries")
        assert np.bincount(db.block_of(grid[:-1], sigmas).numpy(), minlength=3).tolist() == [
            k,
            k,
            k,
        ]
        masses = [lognormal_mass(float(lo), float(hi)) for hi, lo in zip(grid[:-1], grid[1:])]
        assert max(masses) == pytest.approx(min(masses), rel=1e-4)
    final = db.prediction_sigmas(sigmas, 3, "final")  # authors: 2 Euler steps, then a call at σ_min
    assert final.tolist() == pytest.approx([80.0, 0.3012, 0.002, 0.002], rel=1e-3)
    assert db.block_of(final[:-1], sigmas).tolist() == [0, 1, 2]


def test_mislabel_corrupts_the_hint_at_its_rate_and_uniformly_over_wrong_classes():
    model = db.DiffusionBlocks(
        [TinyBlock(8, 5) for _ in range(2)], embedding=db.target_embedding(5, 8), mislabel=0.3
    )
    target = torch.randint(5, (40_000,), generator=torch.Generator().manual_seed(0))
    hint = model.noisy_hint(target, torch.Generator().manual_seed(1))
    wrong = hint != target
    assert wrong.float().mean().item() == pytest.approx(0.3, abs=3 * math.sqrt(0.3 * 0.7 / 40_000))
    offset = ((hint - target) % 5)[wrong]  # 1..4, uniform
    counts = torch.bincount(offset, minlength=5)[1:].double()
    assert ((counts - counts.mean()) ** 2 / counts.mean()).sum() < 16.27  # χ²(3 dof) at p = 0.001


@pytest.mark.parametrize("weighting", ["uniform", "edm"])
def test_discrete_loss_weighting(weighting):
    """A block with fixed logits: 'uniform' is plain cross-entropy; 'edm' is λ(σ)·CE over the
    slice's E[λ]."""
    logits = torch.randn(4096, 4, generator=torch.Generator().manual_seed(0))
    target = torch.randint(4, (4096,), generator=torch.Generator().manual_seed(1))
    model = db.DiffusionBlocks(
        [Echo(logits) for _ in range(3)],
        embedding=db.target_embedding(4, 8),
        # no hint draws: σ is the generator's first draw
        weighting=weighting,
        mislabel=0.0,
    )
    ce = nn.functional.cross_entropy(logits, target, reduction="none")
    gen = torch.Generator().manual_seed(2)
    loss = model.loss(None, target, block=1, generator=gen)
    if weighting == "uniform":
        torch.testing.assert_close(loss, ce.mean())
    else:  # redraw the same σ: the first draws of the generator
        lo, hi = model.slices[1]
        sigma = db.sample_sigma((4096,), lo, hi, generator=torch.Generator().manual_seed(2))
        lam = (sigma.double() ** 2 + 0.25) / (sigma.double() * 0.5) ** 2
        torch.testing.assert_close(
            loss.double(), (lam * ce.double()).mean() / model.mean_weights[1], rtol=1e-5, atol=0
        )


def test_euler_is_first_order_and_heun_second_order():
    """Halving the step (geometric grid 2 -> σ_min) halves Euler's error and quarters Heun's."""
    s = 0.5
    # noqa: E731  exact denoiser of N(0, s²)
    D = lambda z, sigma: s**2 / (s**2 + sigma**2) * z
    noise = torch.randn(1000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = noise * 2.0 * math.sqrt(s**2 + db.SIGMA_MIN**2) / math.sqrt(s**2 + 2.0**2)
    # noqa: E731
    grid = lambda n: torch.exp(
        torch.linspace(math.log(2.0), math.log(db.SIGMA_MIN), n + 1, dtype=torch.float64)
    )
    # noqa: E731
    error = lambda sampler, n: (sampler(D, grid(n), noise) - exact).abs().mean().item()
    assert 1.6 < error(db.sample_euler, 32) / error(db.sample_euler, 64) < 2.4
    assert 3.2 < error(db.sample_heun, 32) / error(db.sample_heun, 64) < 4.8


# ----------------------------------------------------------------------------------------------
# layers


def test_adaln_zero_layer_and_final_layer_start_as_identity_and_zero():
    torch.manual_seed(0)
    layer = db.AdaLNZeroLayer(32, heads=4)
    h, c = torch.randn(2, 5, 32), torch.randn(2, 32)
    assert torch.equal(layer(h, c), h)
    assert torch.equal(
        layer(h, torch.randn(2, 5, 32), mask=torch.ones(5, 5, dtype=torch.bool).tril()), h
    )
    assert torch.equal(db.FinalLayer(32, 7)(h, c), torch.zeros(2, 5, 7))


def test_adaln_layer_respects_causal_mask():
    torch.manual_seed(0)
    layer = db.AdaLNZeroLayer(16, heads=2)
    for p in layer.adaLN.parameters():  # leave AdaLN-Zero so attention contributes
        nn.init.normal_(p, std=0.5)
    mask = torch.ones(6, 6, dtype=torch.bool).tril()
    h, c = torch.randn(1, 6, 16), torch.randn(1, 16)
    h2 = h.clone()
    h2[:, 4:] = torch.randn(1, 2, 16)  # changing the future must not change the past
    torch.testing.assert_close(layer(h, c, mask)[:, :4], layer(h2, c, mask)[:, :4])
    assert not torch.allclose(layer(h, c)[:, :4], layer(h2, c)[:, :4])


def test_rotary_is_complex_rotation_and_scores_see_only_relative_position():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 8)  # (N, H, T, d)
    theta = 10_000.0 ** (-torch.arange(0, 8, 2) / 8)  # RoPE's angle per channel pair
    reference = torch.view_as_real(
        torch.view_as_complex(x.unflatten(-1, (4, 2)))
        * torch.polar(torch.ones(7, 4), torch.arange(7.0)[:, None] * theta)
    ).flatten(-2)
    torch.testing.assert_close(db.rotary(x), reference)
    # one query and one key at every position: the score of positions
    q, k = torch.randn(8), torch.randn(8)
    # (p, r)
    scores = db.rotary(q.expand(1, 1, 7, 8)) @ db.rotary(k.expand(1, 1, 7, 8)).transpose(-1, -2)
    for shift in range(-6, 7):  # depends on p − r alone
        torch.testing.assert_close(
            scores[0, 0].diagonal(shift), scores[0, 0].diagonal(shift)[:1].expand(7 - abs(shift))
        )
    assert not torch.allclose(scores[0, 0].diagonal(0)[0], scores[0, 0].diagonal(1)[0])


def test_sigma_embedding_separates_sigmas():
    c_noise = db.precondition(torch.tensor([0.002, 0.0021, 1.0, 80.0]))[3]
    e = db.sigma_embedding(c_noise, 65)
    assert e.shape == (4, 65)
    assert torch.cdist(e, e).fill_diagonal_(float("inf")).min() > 0.5


# ----------------------------------------------------------------------------------------------
# container


class TinyBlock(nn.Module):
    """A stem, `depth` residual MLP layers and a head, conditioned on c_noise and x (a block of a
    toy net)."""

    def __init__(self, dim_in, dim_out, width=64, depth=2, x_dim=4):
        super().__init__()
        self.stem = nn.Linear(dim_in + x_dim + 1, width)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU())
            for _ in range(depth)
        )
        self.head = nn.Linear(width, dim_out)

    def forward(self, z_in, c_noise, x):
        h = self.stem(torch.cat([z_in, x, c_noise[:, None]], dim=-1))
        for layer in self.layers:
            h = h + layer(h)
        return self.head(h)


def make_classifier(B=3, num_classes=4, dim=8, depth=2, seed=0):
    torch.manual_seed(seed)
    blocks = [TinyBlock(dim, num_classes, depth=depth) for _ in range(B)]
    return db.DiffusionBlocks(blocks, embedding=db.target_embedding(num_classes, dim), gamma=0.05)


def test_target_embedding_is_fixed_seeded_and_unit_norm():
    E = db.target_embedding(10, 16, seed=3)
    torch.testing.assert_close(E.norm(dim=-1), torch.ones(10))
    assert torch.equal(E, db.target_embedding(10, 16, seed=3))
    assert not torch.equal(E, db.target_embedding(10, 16, seed=4))


def test_train_step_touches_only_its_block():
    model = make_classifier()
    opts = [torch.optim.AdamW(b.parameters(), lr=1e-2) for b in model.blocks]
    before = [[p.detach().clone() for p in b.parameters()] for b in model.blocks]
    x, target = torch.randn(32, 4), torch.randint(4, (32,))
    block, loss = model.train_step(x, target, opts, block=1)
    assert block == 1 and torch.isfinite(loss)
    for b in (0, 2):
        assert all(torch.equal(p, q) for p, q in zip(model.blocks[b].parameters(), before[b]))
        assert len(opts[b].state) == 0
    assert any(not torch.equal(p, q) for p, q in zip(model.blocks[1].parameters(), before[1]))
    assert len(opts[1].state) == len(list(model.blocks[1].parameters()))


def test_blocks_sharing_a_parameter_are_rejected():
    shared = nn.Linear(4, 4)
    with pytest.raises(ValueError, match="share a trainable parameter"):
        db.DiffusionBlocks([nn.Sequential(shared), nn.Sequential(shared)])


def test_block_choice_is_uniform():
    model = make_classifier(B=4)
    opts = [torch.optim.SGD(b.parameters(), lr=0.0) for b in model.blocks]
    gen = torch.Generator().manual_seed(0)
    x, target = torch.randn(2, 4), torch.randint(4, (2,))
    counts = np.bincount(
        [model.train_step(x, target, opts, generator=gen)[0] for _ in range(800)], minlength=4
    )
    chi2 = ((counts - 200) ** 2 / 200).sum()
    assert chi2 < 16.27  # χ²(3 dof) at p = 0.001


def test_tiny_problem_learns():
    """Four Gaussian clusters in 4-D: a few hundred steps drive the loss down and the chain
    classifies."""
    torch.manual_seed(0)
    centers = 2 * torch.randn(4, 4)
    target = torch.randint(4, (2048,))
    x = centers[target] + 0.3 * torch.randn(2048, 4)
    model = make_classifier(B=3)
    opts = [torch.optim.AdamW(b.parameters(), lr=3e-3) for b in model.blocks]
    gen = torch.Generator().manual_seed(0)
    losses = []
    for step in range(600):
        idx = torch.randint(2048, (64,), generator=gen)
        losses.append(model.train_step(x[idx], target[idx], opts, generator=gen)[1].item())
    assert np.mean(losses[-100:]) < 0.3 * np.mean(losses[:30])
    logits = model.predict(x[:512], (512, 8), db.sampling_sigmas(3), generator=gen)
    assert (logits.argmax(-1) == target[:512]).float().mean() > 0.95


def test_continuous_targets_train_and_sample():
    """Continuous y: the squared-error path learns a conditional mean, and samples land near it."""
    torch.manual_seed(0)
    blocks = [TinyBlock(2, 2, x_dim=4) for _ in range(2)]
    model = db.DiffusionBlocks(blocks)
    opts = [torch.optim.AdamW(b.parameters(), lr=3e-3) for b in model.blocks]
    x = torch.randn(1024, 4)
    y = 0.5 * torch.tanh(x[:, :2])  # a deterministic target given x
    for step in range(600):
        idx = torch.randint(1024, (64,))
        model.train_step(x[idx], y[idx], opts)
    z = model.sample(
        x[:256], (256, 2), db.sampling_sigmas(10), generator=torch.Generator().manual_seed(0)
    )
    assert (z - y[:256]).pow(2).mean() < 0.1 * y.pow(2).mean()


# ----------------------------------------------------------------------------------------------
# memory


def test_one_block_saves_one_bth_of_the_activations():
    """Same stack of 12 identical layers: end-to-end vs one of B blocks of 12/B layers (plus own
    stem/head)."""
    B, L, width, N = 3, 12, 256, 512
    torch.manual_seed(0)
    x, target = torch.randn(N, 4), torch.randint(4, (N,))
    e2e = TinyBlock(8, 4, width=width, depth=L)
    opt = torch.optim.AdamW(e2e.parameters())
    z, c_noise = torch.randn(N, 8), torch.randn(N)
    full = db.training_memory(
        lambda: (nn.functional.cross_entropy(e2e(z, c_noise, x), target).backward(), opt.step()),
        e2e.parameters(),
        opt,
    )
    model = db.DiffusionBlocks(
        [TinyBlock(8, 4, width=width, depth=d) for d in db.split_layers(L, B)],
        embedding=db.target_embedding(4, 8),
    )
    opts = [torch.optim.AdamW(b.parameters()) for b in model.blocks]
    one = db.training_memory(
        lambda: model.train_step(x, target, opts, block=0), model.blocks[0].parameters(), opts[0]
    )
    # brute-force reference for the parameters: count them by hand
    assert full["parameters"] == 4 * sum(p.numel() for p in e2e.parameters())
    assert (
        full["gradients"] == full["parameters"]
        and full["optimizer_state"] >= 2 * full["parameters"]
    )
    assert one["activations"] == pytest.approx(full["activations"] / B, rel=0.1)
    assert one["total"] == pytest.approx(full["total"] / B, rel=0.1)


def test_checkpointed_layers_give_the_same_gradients_and_save_only_their_inputs():
    """checkpoint_layers: gradients equal the plain stack's; the saved activations fall by what the
    layers save beyond their inputs, counted here on each layer run alone (a brute force over the
    layers, not through the container)."""
    torch.manual_seed(0)
    width, N, T, L = 32, 3, 5, 4
    layers = nn.ModuleList(db.AdaLNZeroLayer(width, 2) for _ in range(L))
    # leave AdaLN-Zero's identity start, so that every layer computes something
    for p in layers.parameters():
        nn.init.normal_(p, std=0.1)
    # as in a model
    h0, c = torch.randn(N, T, width, requires_grad=True), torch.randn(N, width, requires_grad=True)
    params = list(layers.parameters())

    def step():
        for p in params:
            p.grad = None
        h = h0
        for layer in layers:
            h = layer(h, c)
        h.square().mean().backward()
        return [p.grad.clone() for p in params]

    def saved_bytes(run):
        storages, skip = {}, {p.untyped_storage().data_ptr() for p in params}

        def pack(t):
            if t.untyped_storage().data_ptr() not in skip:
                storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            run()
        return sum(storages.values())

    plain_grads, plain = step(), saved_bytes(step)
    db.checkpoint_layers(layers)
    ckpt_grads, ckpt = step(), saved_bytes(step)
    for a, b in zip(plain_grads, ckpt_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    beyond_inputs = 0  # each layer alone: what it saves besides h and c
    for layer in db.checkpoint_layers(layers, False):
        h = torch.randn(N, T, width, requires_grad=True)
        inputs, storages = {h.untyped_storage().data_ptr(), c.untyped_storage().data_ptr()}, {}

        def pack(t):
            if t.untyped_storage().data_ptr() not in inputs | {
                p.untyped_storage().data_ptr() for p in params
            }:
                storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            layer(h, c)
        beyond_inputs += sum(storages.values())
    assert 0 < ckpt < plain and plain - ckpt == beyond_inputs
    model = db.DiffusionBlocks([nn.Sequential(db.AdaLNZeroLayer(width, 2))], checkpoint=True)
    assert model.blocks[0][0].checkpoint


# ---------------------------------------------------------------------------------------------- bad
# input


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: db.block_sigmas(0), "num_blocks"),
        (lambda: db.split_layers(4, 5), "blocks <= layers"),
        (lambda: db.block_slice(db.block_sigmas(3), 0, gamma=0.5), "gamma"),
        (lambda: db.block_slice(db.block_sigmas(3), 3), "block must be"),
        (lambda: db.block_sigmas(3, sigma_min=1.0, sigma_max=1.0), "sigma_min < sigma_max"),
        (lambda: db.block_sigmas(3, p_std=0.0), "p_std"),
        (lambda: db.block_sigmas(3, partition="linear"), "equiprob"),
        (lambda: db.sampling_sigmas(0), "num_steps"),
        (lambda: db.AdaLNZeroLayer(30, heads=4), "divisible"),
        (lambda: db.AdaLNZeroLayer(12, heads=4, rope=True), "even width"),
        (lambda: db.prediction_sigmas(db.block_sigmas(3), 4, "boundaries"), "multiple of B"),
        (lambda: db.prediction_sigmas(db.block_sigmas(3), 1, "final"), "calls >= 2"),
        (lambda: db.DiffusionBlocks([nn.Linear(1, 1)], weighting="lambda"), "weighting"),
        (lambda: db.DiffusionBlocks([nn.Linear(1, 1)], mislabel=0.2), "mislabel"),
    ],
)
def test_bad_input_raises_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_target_shape_mismatch_is_reported():
    model = db.DiffusionBlocks(
        [TinyBlock(8, 5) for _ in range(2)], embedding=db.target_embedding(4, 8)
    )
    with pytest.raises(ValueError, match="expected"):
        model.loss(torch.randn(3, 4), torch.randint(4, (3,)), block=0)


# ------------------------------------------------------------------------------------ language
# models


class ConstantLogits(nn.Module):
    """A masked-diffusion block whose logits (V,) are the same for every token, whatever z and t; it
    records every call as (masked fraction of z per sample, t)."""

    def __init__(self, logits, mask_id):
        super().__init__()
        self.logits, self.mask_id, self.calls = logits, mask_id, []
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, z, t):
        self.calls.append(((z == self.mask_id).double().mean(1), t))
        return (self.logits + self.weight).expand(*z.shape, len(self.logits))


class TinyMasked(nn.Module):
    """A masked-diffusion block that reads its input: embedding of z and t → linear logits over
    V."""

    def __init__(self, V, width=8):
        super().__init__()
        self.emb, self.out = nn.Embedding(V + 1, width), nn.Linear(width + 1, V)

    def forward(self, z, t):
        return self.out(torch.cat([self.emb(z), t[:, None, None].expand(*z.shape, 1)], -1))


def concat_mask_brute_force(n, m):
    """[m slots for targets n−m+1..n ; n clean tokens 0..n−1]: a slot sees itself and the clean
    tokens before its target, a clean token the clean tokens up to itself (Block Diffusion with
    block size 1)."""
    tokens = [("noisy", n - m + 1 + k) for k in range(m)] + [("clean", j) for j in range(n)]
    return torch.tensor(
        [
            [
                (q == k)
                if q[0] == "noisy" and k[0] == "noisy"
                else (k[0] == "clean" and k[1] < q[1])
                if q[0] == "noisy"
                else (k[0] == "clean" and k[1] <= q[1])
                for k in tokens
            ]
            for q in tokens
        ]
    )


@pytest.mark.parametrize("B", [1, 2, 3, 5])
def test_masked_block_of_t_is_the_block_whose_slice_holds_it(B):
    """The γ = 0 slices tile [0, 1] in equal widths, block 0 at the top (most masked);
    mdm_block_of(t) is the block whose slice (t_lo, t_hi] holds t (t = 0: the last), found by brute
    force, boundaries included; γ widens each slice by γ/B per side."""
    slices = [db.mdm_slice(b, B) for b in range(B)]
    assert slices[0][1] == 1 and slices[-1][0] == 0
    assert all(abs(hi - lo - 1 / B) < 1e-12 for lo, hi in slices)
    assert all(slices[b][1] == slices[b - 1][0] for b in range(1, B))
    t = torch.cat(
        [
            torch.rand(2000, generator=torch.Generator().manual_seed(B), dtype=torch.float64),
            torch.tensor([edge for s in slices for edge in s], dtype=torch.float64),
        ]
    )
    for ti, got in zip(t.tolist(), db.mdm_block_of(t, B).tolist()):
        assert got == ([b for b, (lo, hi) in enumerate(slices) if lo < ti <= hi] or [B - 1])[0], ti
    for (lo, hi), (lo_g, hi_g) in zip(slices, [db.mdm_slice(b, B, gamma=0.1) for b in range(B)]):
        assert abs(lo_g - max(lo - 0.1 / B, 0)) < 1e-12 and abs(hi_g - min(hi + 0.1 / B, 1)) < 1e-12


def test_masked_loss_masks_each_token_with_probability_t_and_the_uniform_model_scores_log_v():
    """Block b draws t in its slice (≥ T_MIN) and masks each token with probability t (the fraction
    masked of a long sequence is t, the rest left as it was); the ELBO of a predictor uniform over V
    tokens is log V nats per token at every t (E[#masked] = t·n cancels the 1/t), so each block's
    loss estimates log V."""
    V, N, n, B = 7, 64, 2000, 3
    blocks = [ConstantLogits(torch.zeros(V), V) for _ in range(B)]
    model = db.MaskedDiffusionBlocks(blocks, V, gamma=0.1)
    x = torch.randint(V, (N, n), generator=torch.Generator().manual_seed(0))
    for b in range(B):
        loss = float(model.loss(x, b, generator=torch.Generator().manual_seed(1 + b)).detach())
        ((rate, t),) = blocks[b].calls
        lo, hi = model.slices[b]
        assert (t >= max(lo, db.T_MIN)).all() and (t <= hi).all()
        assert (rate - t).abs().max() < 5 * math.sqrt(0.25 / n)
        assert abs(loss - math.log(V)) < 0.05 * math.log(V), (b, loss)


def test_masked_loss_trains_only_its_own_block():
    """A block's loss reaches its own parameters only: every other block's gradient stays None."""
    V, B = 5, 3
    model = db.MaskedDiffusionBlocks([TinyMasked(V) for _ in range(B)], V)
    x = torch.randint(V, (4, 12), generator=torch.Generator().manual_seed(0))
    for b in range(B):
        model.zero_grad(set_to_none=True)
        model.loss(x, b, generator=torch.Generator().manual_seed(b)).backward()
        for other, block in enumerate(model.blocks):
            grads = [p.grad for p in block.parameters()]
            if other == b:
                assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
            else:
                assert all(g is None for g in grads), (b, other)


def test_masked_logits_route_each_t_to_its_block_and_sampling_draws_from_the_model():
    """logits(z, t) runs each sample on the block owning its t. Ancestral sampling from a model that
    predicts the fixed distribution p reveals every token, draws characters with frequencies p, and
    keeps the fraction masked at t equal to t on every call (reveal w.p. (t − s)/t)."""
    V, B = 4, 3
    p = torch.tensor([0.1, 0.2, 0.3, 0.4])
    blocks = [ConstantLogits(10 * torch.eye(V)[b], V) for b in range(B)]  # block b says "b"
    model = db.MaskedDiffusionBlocks(blocks, V)
    t = torch.rand(50, generator=torch.Generator().manual_seed(0))
    owner = [
        [b for b, (lo, hi) in enumerate(model.slices) if lo < ti <= hi][0] for ti in t.tolist()
    ]
    logits = model.logits(torch.zeros(50, 6, dtype=torch.long), t)  # (50, 6, V)
    assert torch.equal(logits.argmax(-1), torch.tensor(owner)[:, None].expand(50, 6))
    blocks = [ConstantLogits(p.log(), V) for _ in range(B)]
    model = db.MaskedDiffusionBlocks(blocks, V)
    z = model.sample((400, 16), 8, torch.Generator().manual_seed(1), "cpu")
    assert (z != V).all()
    assert (torch.bincount(z.flatten(), minlength=V) / z.numel() - p).abs().max() < 0.03
    calls = [call for block in blocks for call in block.calls]
    assert len(calls) == 8
    for rate, t in calls:
        assert (t == t[0]).all() and abs(float(rate.mean()) - float(t[0])) < 0.04, (
            rate.mean(),
            t[0],
        )


def test_concat_mask_matches_brute_force():
    # training (a slot per position), generation (the last one)
    for n, m in [(5, 5), (5, 3), (5, 1), (1, 1)]:
        assert torch.equal(db.concat_mask(n, m), concat_mask_brute_force(n, m)), (n, m)


@pytest.mark.parametrize("m", [5, 2, 1])
def test_two_stream_layer_equals_the_layer_on_the_concatenated_streams(m):
    """The two-stream layer gives the slots' outputs (and, but in the last layer, the clean tokens')
    and the gradients of the plain AdaLN-Zero layer run over [slots ; clean] with per-token
    conditions and the brute force mask (in float64, so that sums in another order agree to
    1e-9)."""
    N, n, D = 3, 5, 16
    torch.manual_seed(0)
    layer = db.AdaLNZeroLayer(D, heads=2).double()
    with torch.no_grad():
        for p in layer.parameters():  # AdaLN-Zero starts as the identity: wake every weight
            p.normal_(0, 0.3)
    hz, cz, hc = (torch.randn(N, k, D, dtype=torch.float64) for k in (m, m, n))
    c_clean = torch.randn(D, dtype=torch.float64)
    mask = concat_mask_brute_force(n, m)
    # (N, m+n, D)
    full = layer(torch.cat([hz, hc], 1), torch.cat([cz, c_clean.expand(N, n, D)], 1), mask)
    out_z, out_c = db.two_stream_layer(layer, hz, cz, hc, c_clean, mask, last=False)
    assert torch.allclose(out_z, full[:, :m], atol=1e-9) and torch.allclose(
        out_c, full[:, m:], atol=1e-9
    )
    expected = torch.autograd.grad(full[:, :m].square().sum(), list(layer.parameters()))
    out_z, out_c = db.two_stream_layer(layer, hz, cz, hc, c_clean, mask, last=True)
    assert out_c is None and torch.allclose(out_z, full[:, :m], atol=1e-9)
    got = torch.autograd.grad(out_z.square().sum(), list(layer.parameters()))
    assert all(torch.allclose(g, e, rtol=1e-9, atol=1e-9) for g, e in zip(got, expected))
