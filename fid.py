"""Fréchet distance between generated and real images: evaluation of train_dit.py only, nothing of
the method.

`fid` in this project is the Fréchet distance of Gaussians fitted to the features of a feature
network (Heusel et al. 2017). Two networks:
  classifier  a small CNN trained here on the training split, cached under --data-dir
              (`feature_network`):
              NOT Inception FID, comparable only between runs of this project on the same data;
  inception   Inception-v3 of torch-fidelity (`inception_network`), the network of standard FID.
Every feature network takes images (N, C, H, W) in [-1, 1].
"""

import hashlib
import math
import os
import re

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import common
from data import random_shift

FID_FEATURES = {
    "classifier": "small CNN, NOT Inception",
    "inception": "Inception-v3 (torch-fidelity)",
}


def to_unit(x):
    """uint8 images -> float in [-1, 1]."""
    return x.float() / 127.5 - 1


class FeatureCNN(nn.Module):
    """Small CNN classifier; its 128 pooled features (before the linear head) are the space of
    `fid`."""

    def __init__(self, channels, num_classes):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(64, 128, 3, stride=2, padding=1),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )  # (N, 128)
        self.head = nn.Linear(128, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


def feature_network(cfg, data, device):
    """The feature CNN of these training images (data: load_images' dict, uint8): loaded from
    --data-dir, or trained on them (--fid-classifier-steps, --seed) and cached there under a name
    that holds a digest of their content (new data under an old name trains a new network)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", cfg.dataset)
    content = data["x_train"].numpy().tobytes() + data["y_train"].numpy().tobytes()
    digest = hashlib.sha256(content).hexdigest()[:16]
    path = os.path.join(
        cfg.data_dir, f"fid-cnn-{name}-{digest}-seed{cfg.seed}-{cfg.fid_classifier_steps}.pt"
    )
    net = FeatureCNN(data["x_train"].shape[1], data["num_classes"]).to(device)
    if os.path.exists(path):
        saved = torch.load(path, map_location=device, weights_only=False)
        net.load_state_dict(saved["model"])
    else:
        gen = torch.Generator().manual_seed(cfg.seed)  # the batches
        shift_gen = torch.Generator(device).manual_seed(cfg.seed)  # their random shifts
        opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
        x_train, y_train = data["x_train"].to(device), data["y_train"].to(device)
        for it in tqdm(range(cfg.fid_classifier_steps), desc="fid feature CNN", mininterval=1.0):
            idx = torch.randint(len(x_train), (128,), generator=gen).to(device)
            # ≤ 1/8 side
            x = random_shift(to_unit(x_train[idx]), max(1, x_train.shape[-1] // 8), shift_gen)
            loss = F.cross_entropy(net(x), y_train[idx])
            common.set_lr(opt, common.cosine_lr(it / cfg.fid_classifier_steps, 0.05, 2e-3, 1e-5))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            logits = torch.cat([net(to_unit(x)) for x in data["x_test"].to(device).split(1000)])
        accuracy = (logits.argmax(-1).cpu() == data["y_test"]).float().mean().item()
        saved = {"model": net.state_dict(), "test_acc": accuracy}
        common.save_atomic(saved, path)
    net.eval().requires_grad_(False)
    print(
        f"fid features: a small CNN (test accuracy {saved['test_acc']:.3f}, {path}); "
        "this `fid` is NOT Inception FID and is comparable only within this project"
    )
    return net.features  # (N, C, H, W) in [-1, 1] -> (N, 128)


def inception_network(device):
    """Inception-v3 pool features (2048) of torch-fidelity, the network of standard FID; weights by
    torch.hub."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as e:
        common.fail(
            f"--fid inception needs torch-fidelity and a working torchvision "
            f"(pip install torch-fidelity): {e}"
        )
    try:
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).to(device)
    except Exception as e:  # the weights download (about 100 MB) failed: no internet, or a proxy
        common.fail(
            f"--fid inception could not load the Inception weights ({e}); use --fid classifier "
            "offline"
        )

    def features(x):
        """(N, C, H, W) in [-1, 1] -> (N, 2048); grey images repeated to RGB, resized to 299
        inside."""
        x = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return net(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x)[0]

    print(
        "fid features: Inception-v3 (torch-fidelity); with few test images this is not comparable "
        "to "
        "published FIDs"
    )
    return features


def reference(cfg, data, device):
    """The feature network of --fid, and the features (M, F) of the --fid-reference split of data
    (load_images' dict), a thousand images at a time."""
    classifier = cfg.fid == "classifier"
    features = feature_network(cfg, data, device) if classifier else inception_network(device)
    images = data["x_train" if cfg.fid_reference == "train" else "x_test"]
    with torch.no_grad():
        reference = torch.cat([features(to_unit(x).to(device)) for x in images.split(1000)])
    return features, reference.cpu()


def fid_of(network, samples, reference, device):
    """`fid` of samples (n, C, H, W) in [-1, 1]: the Fréchet distance of their features to the
    reference features (M, F)."""
    with torch.no_grad():
        features = torch.cat([network(x.to(device)) for x in samples.split(1000)]).cpu()
    return frechet_distance(features, reference)


def frechet_distance(a, b):
    """‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2·(Σ_a^½ Σ_b Σ_a^½)^½), Gaussians fitted to the rows (FID,
    Heusel et al. 2017); NaN when a feature is not a finite number (samples of a diverged model)."""
    a, b = a.double(), b.double()
    if not (a.isfinite().all() and b.isfinite().all()):
        return math.nan
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)  # (K, K)
    eigvals, eigvecs = torch.linalg.eigh(cov_a)
    root_a = eigvecs @ torch.diag(eigvals.clamp(min=0).sqrt()) @ eigvecs.T  # Σ_a^½ (symmetric PSD)
    inner = root_a @ cov_b @ root_a
    # tr((Σ_a Σ_b)^½)
    trace_root = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    return float(
        (a.mean(0) - b.mean(0)).square().sum() + cov_a.trace() + cov_b.trace() - 2 * trace_root
    )
