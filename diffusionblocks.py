"""DiffusionBlocks: train a network one block at a time, each block a denoiser of its noise slice.

A residual stack is read as Euler steps of a variance-exploding diffusion's probability-flow ODE;
its L layers are split into B blocks, block b owns the b-th highest slice of the noise range and
trains alone as an EDM denoiser D_b(z_σ, σ, x) ≈ y, so a step holds one block's parameters,
gradients, optimizer state and activations. Blocks share no trainable parameter, so each can train
in its own process. Shing, Koyama, Akiba, ICLR 2026, https://arxiv.org/abs/2506.14202; EDM: Karras
et al. 2022; DiT: Peebles & Xie 2023. Needs torch only.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

__all__ = [  # in paper order
    # 1. the noise partition
    "SIGMA_MIN", "SIGMA_MAX", "P_MEAN", "P_STD", "SIGMA_DATA", "split_layers", "block_sigmas",
    "block_slice", "block_of", "sample_sigma", "sampling_sigmas", "prediction_sigmas",
    # 2. EDM
    "precondition", "loss_weight", "mean_loss_weight",
    # 3. the layers
    "sigma_embedding", "SigmaEmbedder", "modulate", "rotary", "AdaLNZeroLayer",
    "checkpoint_layers", "FinalLayer",
    # 4. the blocks
    "target_embedding", "pick_block", "DiffusionBlocks",
    # 5. samplers; 6. memory
    "sample_euler", "sample_heun", "training_memory",
    # 7. the language-model settings
    "T_MIN", "mdm_block_of", "mdm_slice", "MaskedDiffusionBlocks", "concat_mask",
    "two_stream_layer",
]

# 1. Noise partition (DiffusionBlocks §3.3) --------------------------------------------------------

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0  # EDM's noise range
P_MEAN, P_STD = -1.2, 1.2  # training noise: ln σ ~ N(P_MEAN, P_STD²), EDM Table 1
SIGMA_DATA = 0.5  # EDM's data standard deviation


def _check_noise(sigma_min, sigma_max, p_std):
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    if not p_std > 0:
        raise ValueError(f"p_std must be > 0, got {p_std}")


def _check_blocks(num_blocks):
    if not (isinstance(num_blocks, int) and num_blocks >= 1):
        raise ValueError(f"num_blocks must be an integer >= 1, got {num_blocks!r}")


def split_layers(num_layers, num_blocks):
    """Layers per block of L layers in B contiguous blocks (§3), the first L mod B one more."""
    _check_blocks(num_blocks)
    if num_blocks > num_layers:
        raise ValueError(f"cannot split {num_layers} layers into {num_blocks} blocks: "
                         f"allowed 1 <= blocks <= layers ({num_layers})")
    base, extra = divmod(num_layers, num_blocks)
    return [base + (b < extra) for b in range(num_blocks)]


def block_sigmas(num_blocks, partition="equiprob", sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX,
                 p_mean=P_MEAN, p_std=P_STD):
    """B+1 ascending bounds: equal mass under p_σ (§3.3, Eq. 8), or equal in log σ ("uniform")."""
    _check_blocks(num_blocks)
    _check_noise(sigma_min, sigma_max, p_std)
    fraction = torch.linspace(0, 1, num_blocks + 1, dtype=torch.float64)
    lo, hi = math.log(sigma_min), math.log(sigma_max)
    if partition == "uniform":
        sigmas = torch.exp(lo + fraction * (hi - lo))
    elif partition == "equiprob":
        q_min, q_max = (torch.special.ndtr(torch.tensor((v - p_mean) / p_std, dtype=torch.float64))
                        for v in (lo, hi))
        sigmas = torch.exp(p_mean + p_std * torch.special.ndtri(q_min + fraction * (q_max - q_min)))
    else:
        raise ValueError(f"partition must be 'equiprob' or 'uniform', got {partition!r}")
    sigmas[0], sigmas[-1] = sigma_min, sigma_max  # exact ends despite round-off
    return sigmas


def block_slice(sigmas, block, gamma=0.0):
    """(σ_lo, σ_hi) of block b (0: the highest), widened by γ·ln(σ_hi/σ_lo) per side (§3.3)."""
    num_blocks = len(sigmas) - 1
    if not 0 <= block < num_blocks:
        raise ValueError(f"block must be in 0..{num_blocks - 1}, got {block}")
    if not 0 <= gamma < 0.5:
        raise ValueError(f"gamma (overlap) must be in [0, 0.5), got {gamma}")
    lo, hi = float(sigmas[num_blocks - 1 - block]), float(sigmas[num_blocks - block])
    widen = math.exp(gamma * math.log(hi / lo))
    return max(lo / widen, float(sigmas[0])), min(hi * widen, float(sigmas[-1]))


def block_of(sigma, sigmas):
    """The block owning σ: b owns (σ_lo, σ_hi] of its slice, block 0 the highest; σ_min the last."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    below = torch.searchsorted(sigmas[1:-1].to(sigma.device), sigma.contiguous())  # inner bounds
    return len(sigmas) - 2 - below


def _std_normal_cdf(sigma, p_mean, p_std):
    return torch.special.ndtr((torch.as_tensor(sigma, dtype=torch.float64).log() - p_mean) / p_std)


def sample_sigma(shape, lo, hi, p_mean=P_MEAN, p_std=P_STD, generator=None, device=None):
    """σ ~ log-normal(P_mean, P_std) truncated to [lo, hi], by inverting the CDF (EDM §5, §3.3)."""
    mps = torch.device(device or "cpu").type == "mps"
    dtype = torch.float32 if mps else torch.float64  # mps has no fp64
    u_lo, u_hi = (float(_std_normal_cdf(v, p_mean, p_std)) for v in (lo, hi))
    u = u_lo + (u_hi - u_lo) * torch.rand(shape, generator=generator, device=device, dtype=dtype)
    sigma = torch.exp(p_mean + p_std * torch.special.ndtri(u))
    return sigma.clamp(lo, hi).float()


def sampling_sigmas(num_steps, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, p_mean=P_MEAN,
                    p_std=P_STD):
    """Descending σ_max = σ_0 > … > σ_N = σ_min, equal steps in the truncated p_σ's CDF (§4)."""
    if not (isinstance(num_steps, int) and num_steps >= 1):
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")
    _check_noise(sigma_min, sigma_max, p_std)
    q_min, q_max = (_std_normal_cdf(v, p_mean, p_std) for v in (sigma_min, sigma_max))
    fraction = torch.linspace(1, 0, num_steps + 1, dtype=torch.float64)
    sigmas = torch.exp(p_mean + p_std * torch.special.ndtri(q_min + fraction * (q_max - q_min)))
    sigmas[0], sigmas[-1] = sigma_max, sigma_min
    return sigmas


def prediction_sigmas(sigmas, calls, grid="final", p_mean=P_MEAN, p_std=P_STD):
    """Descending σ grid (float64, CPU) of a read-out chain of `calls` calls, one per σ but the last
    (§4), from the B + 1 block boundaries `sigmas`. "boundaries": calls/B equal-CDF steps inside
    each slice from its top, so each block is called equally often (B calls: once each). "final"
    (the authors'): calls − 1 Euler steps on `sampling_sigmas` and a last call at σ_min (a step of
    length zero)."""
    num_blocks = len(sigmas) - 1
    if grid == "boundaries":
        if not (isinstance(calls, int) and calls >= 1 and calls % num_blocks == 0):
            raise ValueError(f"grid 'boundaries' needs calls to be a multiple of B = {num_blocks}, "
                             f"got {calls!r}")
        sigmas = sigmas.detach().to("cpu", torch.float64)  # a model's buffer may live on the GPU
        q = _std_normal_cdf(sigmas, p_mean, p_std)  # (B+1,) ascending
        steps = torch.arange(calls // num_blocks, dtype=torch.float64) / (calls // num_blocks)
        points = torch.cat([(q[:-1, None] + steps * (q[1:] - q[:-1])[:, None]).flatten(), q[-1:]])
        grid_sigmas = torch.exp(p_mean + p_std * torch.special.ndtri(points)).flip(0)
        grid_sigmas[:: calls // num_blocks] = sigmas.flip(0)  # exact boundaries
        return grid_sigmas
    if grid == "final":
        if not (isinstance(calls, int) and calls >= 2):
            raise ValueError("grid 'final' needs calls >= 2 (Euler steps, then the call at "
                             f"σ_min), got {calls!r}")
        steps = sampling_sigmas(calls - 1, float(sigmas[0]), float(sigmas[-1]), p_mean, p_std)
        return torch.cat([steps, steps[-1:]])
    raise ValueError(f"grid must be 'boundaries' or 'final', got {grid!r}")


# 2. EDM preconditioning and loss weighting (EDM Table 1, Eq. 7-8) ---------------------------------


def precondition(sigma, sigma_data=SIGMA_DATA):
    """(c_skip, c_out, c_in, c_noise), EDM Table 1: D(z, σ) = c_skip·z + c_out·F(c_in·z, c_noise)"""
    sigma = torch.as_tensor(sigma)
    var = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / var
    c_out = sigma * sigma_data / var.sqrt()
    c_in = 1 / var.sqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


def loss_weight(sigma, sigma_data=SIGMA_DATA):
    """λ(σ) = (σ² + σ_data²) / (σ·σ_data)² = 1/c_out² (EDM Table 1)."""
    sigma = torch.as_tensor(sigma)
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def mean_loss_weight(lo, hi, sigma_data=SIGMA_DATA, p_mean=P_MEAN, p_std=P_STD):
    """E[λ(σ)], σ ~ p_σ truncated to [lo, hi], closed form: λ = 1/σ_data² + 1/σ², σ⁻² log-normal."""
    a, b = ((math.log(v) - p_mean) / p_std for v in (lo, hi))
    ndtr = lambda t: float(torch.special.ndtr(torch.tensor(t, dtype=torch.float64)))  # noqa: E731
    mass = ndtr(b) - ndtr(a)
    # E[exp(-2 ln σ)] over the truncated normal: exp(-2μ + 2s²)·(Φ(b+2s) - Φ(a+2s)) / (Φ(b) - Φ(a))
    inv_sigma2 = math.exp(-2 * p_mean + 2 * p_std**2) * (ndtr(b + 2 * p_std) - ndtr(a + 2 * p_std))
    return 1 / sigma_data**2 + inv_sigma2 / mass


# 3. The AdaLN-Zero transformer layer (DiT §3.2) and the σ embedding -------------------------------


def sigma_embedding(c_noise, dim, max_period=10_000, scale=1000.0):
    """DiT's sinusoidal timestep embedding of scale·c_noise, c_noise = ¼ ln σ: (...) → (..., dim)"""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=c_noise.device) / half)
    args = scale * c_noise.float()[..., None] * freqs  # (..., half)
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(embedding, (0, dim % 2))


class SigmaEmbedder(nn.Module):
    """DiT's timestep embedder: MLP(sigma_embedding(c_noise)), (...) → (..., width)."""

    FREQUENCY_DIM = 256  # the sinusoidal embedding's size (DiT's frequency_embedding_size)

    def __init__(self, width):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(self.FREQUENCY_DIM, width), nn.SiLU(),
                                 nn.Linear(width, width))

    def forward(self, c_noise):
        return self.mlp(sigma_embedding(c_noise, self.FREQUENCY_DIM))


def modulate(h, shift, scale):
    """AdaLN: h·(1 + scale) + shift (DiT Eq. in §3.2)."""
    return h * (1 + scale) + shift


def _per_token(c):
    return c[:, None] if c.dim() == 2 else c  # (N, D) -> (N, 1, D); (N, T, D) stays per token


def rotary(x, positions=None, base=10_000.0):
    """RoPE (Su et al. 2021): pair i at position p rotated by p·base^(−2i/d); x (N, H, T, d)."""
    T, d = x.shape[-2:]
    positions = torch.arange(T, device=x.device) if positions is None else positions  # (T,)
    freqs = base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)  # (d/2,)
    angles = positions.float()[:, None] * freqs  # (T, d/2)
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # (N, H, T, d/2): the pairs (x_2i, x_2i+1)
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2).type_as(x)


class AdaLNZeroLayer(nn.Module):
    """Pre-norm transformer layer, norms modulated by c, gates 0 at init: it starts as the identity
    (DiT). rope: queries and keys rotated by position (RoPE); checkpoint: backward recomputes it."""

    def __init__(self, width, heads, mlp_ratio=4.0, cond_dim=None, rope=False, checkpoint=False):
        super().__init__()
        if width % heads or (rope and (width // heads) % 2):
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})"
                             + (", into heads of even width (rope)" if rope else ""))
        self.heads, self.rope, self.checkpoint = heads, rope, checkpoint
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"),
                                 nn.Linear(hidden, width))
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim or width, 6 * width))
        for p in self.adaLN[-1].parameters():  # AdaLN-Zero: every gate 0, the layer the identity
            nn.init.zeros_(p)

    def attention(self, h, mask, positions=None):
        N, T, D = h.shape
        q, k, v = self.qkv(h).view(N, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        if self.rope:
            q, k = rotary(q, positions), rotary(k, positions)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (N, H, T, D/H)
        return self.proj(out.transpose(1, 2).reshape(N, T, D))

    def forward(self, h, c, mask=None, positions=None):
        """h (N, T, D), c (N, C) or per token (N, T, C), mask bool (True: may attend)."""
        if self.checkpoint and torch.is_grad_enabled():  # activation checkpointing (Chen et al.)
            return torch.utils.checkpoint.checkpoint(self.residual, h, c, mask, positions,
                                                     use_reentrant=False)
        return self.residual(h, c, mask, positions)

    def residual(self, h, c, mask=None, positions=None):
        """h + gate·attention(…) + gate·MLP(…), the layer's computation (DiT §3.2)."""
        modulation = _per_token(self.adaLN(c)).chunk(6, dim=-1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = modulation
        if c.dim() == 3:  # per token: copy the gates out, so backward keeps (N, T, 2D), not 6D
            gate_msa, gate_mlp = gate_msa.contiguous(), gate_mlp.contiguous()
        h = h + gate_msa * self.attention(modulate(self.norm1(h), shift_msa, scale_msa), mask,
                                          positions)
        h = h + gate_mlp * self.mlp(modulate(self.norm2(h), shift_mlp, scale_mlp))
        return h  # (N, T, D)


def checkpoint_layers(module, enabled=True):
    """Activation checkpointing on (or off) in every AdaLNZeroLayer of `module`: backward recomputes
    one layer at a time from its inputs; inside a block, the two savings multiply."""
    for layer in module.modules():
        if isinstance(layer, AdaLNZeroLayer):
            layer.checkpoint = enabled
    return module


class FinalLayer(nn.Module):
    """AdaLN-modulated norm and a zero-initialised linear head (DiT's final layer)."""

    def __init__(self, width, out_dim, cond_dim=None):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim or width, 2 * width))
        self.linear = nn.Linear(width, out_dim)
        for p in (*self.adaLN[-1].parameters(), *self.linear.parameters()):
            nn.init.zeros_(p)

    def forward(self, h, c):
        shift, scale = _per_token(self.adaLN(c)).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(h), shift, scale))  # (N, T, out_dim)


# 4. The block container and its training step (§3, Fig. 3) ----------------------------------------


def target_embedding(num_classes, dim, seed=0):
    """Fixed, seeded, L2-normalised table (num_classes, dim): the space of discrete y (§3.4)."""
    table = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(seed))
    return F.normalize(table, dim=-1)


def pick_block(num_blocks, generator=None):
    """Fig. 3: the block that an iteration trains, drawn uniformly from 0, ..., B − 1."""
    device = None if generator is None else generator.device
    return int(torch.randint(num_blocks, (1,), generator=generator, device=device))


class DiffusionBlocks(nn.Module):
    """B independent EDM denoisers D_b, block b owning the b-th highest noise slice (§3).

    Block b is called as F_b(c_in·z, c_noise, x) → y's shape, or logits over the classes (discrete
    targets: y lives in the rows of the fixed `embedding`, the only object blocks share); one σ per
    sample (token). `weighting` of the loss ℓ (D's squared error; discrete: the cross-entropy):
    "edm", λ(σ)·ℓ over the slice's mean E[λ] (EDM's inside a slice, unit mean across slices: one
    learning rate serves all blocks; the continuous default), or "uniform", ℓ alone (the discrete
    default: λ would weight a slice's bottom, where the hint gives the answer away, while the
    read-out queries its top). `mislabel` r (discrete): w.p. r per sample (token), z is built from a
    uniformly drawn wrong class k ≠ y, target still y: a block must check the hint against x.
    Default 0.2 (discrete), 0 (continuous)."""

    def __init__(self, blocks, embedding=None, gamma=0.0, partition="equiprob", weighting=None,
                 mislabel=None, sigma_data=SIGMA_DATA, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX,
                 p_mean=P_MEAN, p_std=P_STD, checkpoint=False):
        super().__init__()
        self.blocks = checkpoint_layers(nn.ModuleList(blocks), checkpoint) if checkpoint else (
            nn.ModuleList(blocks))
        seen = {}
        for b, block in enumerate(self.blocks):
            for p in block.parameters():
                if p.requires_grad and seen.setdefault(id(p), b) != b:
                    raise ValueError(f"blocks {seen[id(p)]} and {b} share a trainable parameter; "
                                     "each block must own its own (build a fresh module per block)")
        weighting = weighting or ("uniform" if embedding is not None else "edm")
        mislabel = (0.2 if embedding is not None else 0.0) if mislabel is None else mislabel
        if weighting not in ("edm", "uniform"):
            raise ValueError(f"weighting must be 'edm' or 'uniform', got {weighting!r}")
        if not 0 <= mislabel < 1 or (mislabel and embedding is None):
            raise ValueError("mislabel must be in [0, 1) and needs discrete targets (an "
                             f"embedding), got {mislabel}")
        sigmas = block_sigmas(len(self.blocks), partition, sigma_min, sigma_max, p_mean, p_std)
        self.register_buffer("sigmas", sigmas)
        self.register_buffer("embedding", embedding)
        self.slices = [block_slice(self.sigmas, b, gamma) for b in range(len(self.blocks))]
        self.gamma, self.partition, self.sigma_data = gamma, partition, sigma_data
        self.weighting, self.mislabel, self.p_mean, self.p_std = weighting, mislabel, p_mean, p_std
        self.mean_weights = [mean_loss_weight(lo, hi, sigma_data, p_mean, p_std)
                             for lo, hi in self.slices]

    @property
    def discrete(self):
        return self.embedding is not None

    def network(self, z, sigma, x, block):
        """F_b(c_in·z, c_noise, x), σ broadcast to each sample (token): y's shape, or logits."""
        sigma = torch.as_tensor(sigma, dtype=z.dtype, device=z.device)
        sigma = sigma.expand(z.shape[:-1] if self.discrete else z.shape[:1])
        _, _, c_in, c_noise = precondition(sigma, self.sigma_data)
        out = self.blocks[block](_append_dims(c_in, z) * z, c_noise, x)
        expected = (*z.shape[:-1], len(self.embedding)) if self.discrete else z.shape
        if out.shape != expected:
            what = "logits over the classes" if self.discrete else "the shape of y"
            raise ValueError(f"block {block} returned shape {tuple(out.shape)}, expected "
                             f"{tuple(expected)} ({what})")
        return out

    def denoise(self, z, sigma, x, block=None):
        """D_b(z, σ, x) ≈ E[y | z] (EDM Eq. 7; discrete: softmax(F) @ E); b from σ if None."""
        if block is None:
            block = int(block_of(float(sigma), self.sigmas))
        out = self.network(z, sigma, x, block)
        if self.discrete:  # the one place discrete and continuous targets differ in D
            return out.softmax(-1) @ self.embedding
        sigma = torch.as_tensor(sigma, dtype=z.dtype, device=z.device)
        c_skip, c_out, _, _ = precondition(sigma, self.sigma_data)
        return _append_dims(c_skip, z) * z + _append_dims(c_out, z) * out

    def noisy_hint(self, target, generator=None):
        """Discrete y: the class z is built from, a uniformly drawn wrong one w.p. `mislabel`."""
        if not self.mislabel:
            return target
        K, device = len(self.embedding), target.device
        wrong = (target + torch.randint(1, K, target.shape, generator=generator, device=device)) % K
        flip = torch.rand(target.shape, generator=generator, device=device) < self.mislabel
        return torch.where(flip, wrong, target)

    def loss(self, x, target, block, generator=None):
        """Weighted ℓ(D_b(y + σε, σ, x), y), σ ~ p_σ on block b's slice (§3, Eq. 6; `weighting`)."""
        y = self.embedding[self.noisy_hint(target, generator)] if self.discrete else target
        lo, hi = self.slices[block]
        sigma_shape = target.shape if self.discrete else target.shape[:1]
        sigma = sample_sigma(sigma_shape, lo, hi, self.p_mean, self.p_std, generator, y.device)
        noise = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        z = y + _append_dims(sigma, y) * noise
        if self.discrete:  # the cross-entropy of the logits behind D
            logits = self.network(z, sigma, x, block)
            ell = F.cross_entropy(logits.flatten(0, -2).float(), target.flatten(), reduction="none")
            ell = ell.view(target.shape)
        else:
            ell = (self.denoise(z, sigma, x, block).float() - y.float()).pow(2).flatten(1).mean(1)
        if self.weighting == "uniform":
            return ell.mean()
        return (loss_weight(sigma, self.sigma_data) * ell).mean() / self.mean_weights[block]

    def train_step(self, x, target, optimizers, block=None, generator=None, clip_grad=1.0):
        """One iteration of Fig. 3: pick b uniformly, its loss, step only optimizer b."""
        if block is None:
            block = pick_block(len(self.blocks), generator)
        loss = self.loss(x, target, block, generator)
        optimizers[block].zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad:
            nn.utils.clip_grad_norm_(self.blocks[block].parameters(), clip_grad)
        optimizers[block].step()
        return block, loss.detach()

    @torch.no_grad()
    def sample(self, x, shape, sigmas, sampler=None, generator=None, device=None):
        """z_N from z_0 = σ_max·ε by the reverse ODE, each step by σ_i's block (§3, Fig. 3)."""
        noise = torch.randn(shape, generator=generator, device=device or self.sigmas.device)
        return (sampler or sample_euler)(lambda z, sigma: self.denoise(z, sigma, x), sigmas, noise)

    @torch.no_grad()
    def predict(self, x, shape, sigmas, start="mean", readout="sum", generator=None, device=None,
                bridge="soft"):
        """Discrete y: logits read out of the Euler chain on `sigmas` (§4, `prediction_sigmas`).
        start "mean": z_0 = 0; for an exact denoiser the chain lands on the posterior's mode, a
        *prediction* (compare with an argmax). "noise": z_0 = σ_0·ε; the ODE lands on a *draw*
        (compare with T = 1 sampling). s in [0, 1]: z_0 = s·σ_0·ε, between the two. readout "sum":
        the calls' log-softmax summed (each block's vote), "last": the last call's logits, "all":
        every call's (calls, *shape[:-1], K). bridge "soft": D = softmax @ E, "hard": E[argmax]."""
        scale = {"mean": 0.0, "noise": 1.0}.get(start, start)
        if not isinstance(scale, (int, float)) or not 0 <= scale <= 1:
            raise ValueError(f"start must be 'mean', 'noise' or a scale in [0, 1], got {start!r}")
        if readout not in ("last", "sum", "all") or bridge not in ("soft", "hard"):
            raise ValueError("readout must be 'last', 'sum' or 'all' and bridge 'soft' or 'hard', "
                             f"got {readout!r}, {bridge!r}")
        calls = []

        def D(z, sigma):
            calls.append(self.network(z, sigma, x, int(block_of(float(sigma), self.sigmas))))
            if bridge == "hard":
                return self.embedding[calls[-1].argmax(-1)]
            return calls[-1].softmax(-1) @ self.embedding

        device = device or self.sigmas.device  # default: where the model is
        z0 = scale * torch.randn(shape, generator=generator, device=device) if scale else (
            torch.zeros(shape, device=device))
        sample_euler(D, sigmas, z0)
        if readout == "last":
            return calls[-1]
        if readout == "sum":
            return sum(logits.float().log_softmax(-1) for logits in calls)
        return torch.stack(calls)


def _append_dims(t, like):
    """(N,) or (N, T) → broadcastable against `like` by trailing 1s (k-diffusion's append_dims)."""
    return t.reshape(*t.shape, *([1] * (like.dim() - t.dim())))


# 5. Samplers (EDM Alg. 1 without churn; DiffusionBlocks Eq. 3-5 with the sign corrected) ----------


@torch.no_grad()
def sample_euler(D, sigmas, noise):
    """Euler on dz/dσ = (z - D(z, σ))/σ from z_0 = σ_0·noise down the descending grid `sigmas`."""
    z = noise * float(sigmas[0])
    for sigma_cur, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        d_cur = (z - D(z, sigma_cur)) / sigma_cur
        z = z + (sigma_next - sigma_cur) * d_cur  # σ decreases, so this removes noise
    return z


@torch.no_grad()
def sample_heun(D, sigmas, noise):
    """Heun's 2nd-order method (EDM Alg. 1, S_churn = 0), no correction on a step to σ = 0."""
    z = noise * float(sigmas[0])
    for sigma_cur, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        d_cur = (z - D(z, sigma_cur)) / sigma_cur
        z_next = z + (sigma_next - sigma_cur) * d_cur
        if sigma_next > 0:
            d_next = (z_next - D(z_next, sigma_next)) / sigma_next
            z_next = z + (sigma_next - sigma_cur) * (d_cur + d_next) / 2
        z = z_next
    return z


# 6. Training-memory accounting (the B-fold claim, measured) ---------------------------------------


def training_memory(step, params, optimizer):
    """Bytes of one training step `step()` of `params`: parameters, gradients, optimizer state and
    activations, the tensors autograd saves for backward (each storage once, parameters excluded);
    on CUDA also `cuda_peak`, max_memory_allocated over the step. It runs the step: it trains."""
    params = [p for p in params if p.requires_grad]
    param_storages = {p.untyped_storage().data_ptr() for p in params}
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in param_storages:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    cuda = params[0].is_cuda
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    state = [v for p in params for v in optimizer.state.get(p, {}).values() if torch.is_tensor(v)]
    parts = {
        "parameters": sum(p.nbytes for p in params),
        "gradients": sum(p.grad.nbytes for p in params if p.grad is not None),
        "optimizer_state": sum(v.nbytes for v in state),
        "activations": sum(saved.values()),
    }
    parts["total"] = sum(parts.values())
    if cuda:
        parts["cuda_peak"] = torch.cuda.max_memory_allocated()
    return parts


# 7. Masked diffusion and block diffusion: the language-model settings (§4.3) ----------------------
# Masked diffusion (MD4, Shi et al. 2024; MDLM, Sahoo et al. 2024), α(t) = 1 − t: blocks split t,
# not σ. Block diffusion (Arriola et al. 2025) of block size 1: an AR block denoises the next token
# beside the clean context it reads.

# masked-diffusion training draws t ≥ T_MIN (MDLM's sampling_eps): the 1/t weight stays bounded
T_MIN = 1e-3


def mdm_block_of(t, num_blocks):
    """Block owning masking rate t: b owns ((B−1−b)/B, (B−b)/B], equal drops of α = 1 − t."""
    return (num_blocks - torch.ceil(t * num_blocks).long()).clamp(0, num_blocks - 1)


def mdm_slice(block, num_blocks, gamma=0.0):
    """(t_lo, t_hi) of block b, widened by γ·(t_hi − t_lo) per side within [0, 1] (§3.3)."""
    lo, hi = (num_blocks - 1 - block) / num_blocks, (num_blocks - block) / num_blocks
    return max(lo - gamma * (hi - lo), 0.0), min(hi + gamma * (hi - lo), 1.0)


class MaskedDiffusionBlocks(nn.Module):
    """B masked-diffusion denoisers x_θ(z_t, t), block b trained on its t slice only (§3 with MD4's
    process for EDM's); B = 1 is end-to-end training. block(z, t): z (N, n) ids, `mask_id` where
    masked, t (N,) → logits (N, n, V)."""

    def __init__(self, blocks, mask_id, gamma=0.0):
        super().__init__()
        self.blocks, self.mask_id = nn.ModuleList(blocks), mask_id
        self.slices = [mdm_slice(b, len(self.blocks), gamma) for b in range(len(self.blocks))]

    def logits(self, z, t):
        """x_θ(z_t, t) logits (N, n, V), each sample's t routed to the block that owns it."""
        owner, out = mdm_block_of(t, len(self.blocks)), None
        for b in owner.unique().tolist():
            idx = (owner == b).nonzero()[:, 0]
            logits = self.blocks[b](z[idx], t[idx])
            out = logits.new_empty(len(z), *logits.shape[1:]) if out is None else out
            out[idx] = logits
        return out

    def loss(self, x, block, generator=None):
        """MD4's and MDLM's NELBO with α = 1 − t on block b's slice, per token: (1/t)·Σ_{masked i}
        −log p(x_i | z_t, t) / n, t ~ U(slice ∩ [T_MIN, 1]), each token masked w.p. t."""
        N, n = x.shape
        lo, hi = self.slices[block]
        lo = max(lo, T_MIN)
        t = lo + (hi - lo) * torch.rand(N, generator=generator, device=x.device)  # (N,)
        masked = torch.rand(N, n, generator=generator, device=x.device) < t[:, None]  # (N, n)
        logits = self.blocks[block](torch.where(masked, self.mask_id, x), t)
        ce = F.cross_entropy(logits.float().transpose(1, 2), x, reduction="none")  # (N, n)
        return ((ce * masked).sum(1) / (t * n)).mean()

    @torch.no_grad()
    def sample(self, shape, steps, generator, device):
        """Ancestral unmasking (MD4, MDLM) from all-mask on t_i = 1 − i/steps: a masked token is
        revealed w.p. (t − s)/t, drawn from p(x | z_t, t) of t's block → (N, n) ids."""
        z = torch.full(shape, self.mask_id, device=device)
        for i in range(steps):
            t, s = 1 - i / steps, 1 - (i + 1) / steps
            probs = self.logits(z, torch.full(shape[:1], t, device=device)).float().softmax(-1)
            draw = torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(shape)
            u = torch.rand(shape, generator=generator, device=device)
            reveal = (z == self.mask_id) & (u < (t - s) / t)
            z = torch.where(reveal, draw, z)
        return z


def concat_mask(n, m, device=None):
    """Block Diffusion's mask (block size 1) of [m noisy slots ; n clean tokens], True = may attend:
    the slot of target p = n−m+1..n sees itself and clean j < p; clean j sees clean j' ≤ j."""
    clean = torch.arange(n, device=device)
    target = torch.arange(n - m + 1, n + 1, device=device)
    slots = torch.eye(m, dtype=torch.bool, device=device)  # a slot sees itself, no other slot
    noisy_rows = torch.cat([slots, clean[None] < target[:, None]], 1)
    no_slot = torch.zeros(n, m, dtype=torch.bool, device=device)
    clean_rows = torch.cat([no_slot, clean[None] <= clean[:, None]], 1)
    return torch.cat([noisy_rows, clean_rows], 0)


def two_stream_layer(layer, hz, cz, hc, c_clean, mask, last):
    """AdaLNZeroLayer `layer` over [slots hz (N, m, D) ; clean tokens hc (N, n, D)]: layer(cat([hz,
    hc]), cat([cz, c_clean]), mask) at the memory the math needs → (hz, hc; None when `last`: the
    clean tokens then give keys and values only). Clean tokens share c_clean (D,); the slots' own
    modulation (cz (N, m, D)) is copied out of AdaLN's output. RoPE: slot p at clean token p's
    position (Block Diffusion)."""
    if layer.checkpoint and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(_two_stream_layer, layer, hz, cz, hc, c_clean,
                                                 mask, last, use_reentrant=False)
    return _two_stream_layer(layer, hz, cz, hc, c_clean, mask, last)


def _two_stream_layer(layer, hz, cz, hc, c_clean, mask, last):
    N, m, D = hz.shape
    modulation_z = (v.contiguous() for v in layer.adaLN(cz).chunk(6, -1))  # 6 × (N, m, D), copied
    shift_z, scale_z, gate_z, shift2_z, scale2_z, gate2_z = modulation_z
    # 6 × (D,)
    shift_c, scale_c, gate_c, shift2_c, scale2_c, gate2_c = layer.adaLN(c_clean).chunk(6, -1)
    a = torch.cat([modulate(layer.norm1(hz), shift_z, scale_z),
                   modulate(layer.norm1(hc), shift_c, scale_c)], 1)  # (N, m+n, D)
    qkv = layer.qkv(a).view(N, a.shape[1], 3, layer.heads, D // layer.heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 × (N, H, m+n, D/H)
    if layer.rope:
        n = hc.shape[1]
        positions = torch.cat([torch.arange(n - m + 1, n + 1), torch.arange(n)]).to(a.device)
        q, k = rotary(q, positions), rotary(k, positions)
    rows = slice(0, m) if last else slice(None)  # the last layer needs the slots' queries only
    out = F.scaled_dot_product_attention(q[:, :, rows], k, v, attn_mask=mask[rows])
    out = layer.proj(out.transpose(1, 2).reshape(N, -1, D))  # (N, rows, D)
    hz = hz + gate_z * out[:, :m]
    hz = hz + gate2_z * layer.mlp(modulate(layer.norm2(hz), shift2_z, scale2_z))
    if last:
        return hz, None
    hc = hc + gate_c * out[:, m:]
    return hz, hc + gate2_c * layer.mlp(modulate(layer.norm2(hc), shift2_c, scale2_c))
